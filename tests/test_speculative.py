"""Speculative decoding on the embedded backend: LLMSettings -> xllamacpp CommonParams, refusal of a
draft/model pair that cannot work, and the draft counts llama.cpp reports. The CommonParams are built,
never started, except in the one slow test, which starts a draft-model server of its own (a different
configuration from the session's `embedded_chat`)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from persona_llm.errors import BackendError, ConfigError
from persona_llm.llm.base import LLMSettings, http_json
from persona_llm.llm.chat_model import ChatModel
from tests.fake_openai import FakeOpenAIServer

xllamacpp = pytest.importorskip("xllamacpp")
from persona_llm.llm import embedded  # noqa: E402

KINDS = xllamacpp.common_speculative_type
MODEL, DRAFT = Path("/models/target.gguf"), Path("/models/draft.gguf")


def params_for(settings: LLMSettings, *, draft_gguf: Path | None = None) -> object:
    return embedded.common_params(
        MODEL, "target", port=8123, n_ctx=2048, n_parallel=settings.concurrency, threads=2,
        speculation=embedded.Speculation.from_settings(settings), draft_gguf=draft_gguf,
    )  # fmt: skip


def test_default_settings_start_without_speculation() -> None:
    params = params_for(LLMSettings())
    assert list(params.speculative.types) == [KINDS.COMMON_SPECULATIVE_TYPE_NONE]  # type: ignore[attr-defined]
    assert params.speculative.draft.mparams.path == ""  # type: ignore[attr-defined]
    assert embedded.Speculation.from_settings(LLMSettings()).describe(None) == {"speculative": "off"}


def test_a_draft_model_reaches_llama_cpp_with_its_limits_and_threads() -> None:
    settings = LLMSettings(draft_model="qwen-0.5b", draft_max=6, draft_min=2, draft_p_min=0.6, concurrency=2)
    params = params_for(settings, draft_gguf=DRAFT)
    spec = params.speculative  # type: ignore[attr-defined]
    assert list(spec.types) == [KINDS.COMMON_SPECULATIVE_TYPE_DRAFT_SIMPLE]
    assert spec.draft.mparams.path == str(DRAFT) and params.model.path == str(MODEL)  # type: ignore[attr-defined]
    assert (spec.draft.n_max, spec.draft.n_min) == (6, 2) and spec.draft.p_min == pytest.approx(0.6)
    assert spec.draft.cpuparams.n_threads == 2 and spec.draft.cpuparams_batch.n_threads == 2
    assert params.n_parallel == 2 and params.n_ctx == 4096  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match="give both or neither"):
        params_for(settings)  # a draft model named, its file not joined


@pytest.mark.parametrize(
    ("mode", "kind"),
    [("simple", "NGRAM_SIMPLE"), ("map-k", "NGRAM_MAP_K"), ("map-k4v", "NGRAM_MAP_K4V"), ("mod", "NGRAM_MOD")],
)
def test_ngram_speculation_sets_llama_cpps_spec_type(mode: str, kind: str) -> None:
    params = params_for(LLMSettings(ngram_speculation=mode, ngram_size=5, draft_max=10))  # type: ignore[arg-type]
    spec = params.speculative  # type: ignore[attr-defined]
    assert list(spec.types) == [getattr(KINDS, f"COMMON_SPECULATIVE_TYPE_{kind}")]
    assert spec.draft.mparams.path == "" and spec.draft.n_max == 10
    assert (spec.ngram_simple.size_n, spec.ngram_simple.size_m) == (5, 10)
    assert (spec.ngram_mod.n_match, spec.ngram_mod.n_max) == (5, 10)


def test_draft_model_and_ngram_together() -> None:
    settings = LLMSettings(draft_model="qwen-0.5b", ngram_speculation="simple")
    spec = params_for(settings, draft_gguf=DRAFT).speculative  # type: ignore[attr-defined]
    assert list(spec.types) == [KINDS.COMMON_SPECULATIVE_TYPE_DRAFT_SIMPLE, KINDS.COMMON_SPECULATIVE_TYPE_NGRAM_SIMPLE]
    info = embedded.Speculation.from_settings(settings).describe(embedded.resolve_model("qwen-0.5b"))
    assert info["speculative"]["draft_model"] == "qwen2.5-coder-0.5b-instruct-q4_k_m"
    assert info["speculative"]["ngram"] == "simple"


def test_a_draft_of_another_tokenizer_family_is_refused_in_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    other = embedded.GGUFModel(
        name="other-0.3b", package_prefix="other-part", version="1", n_parts=1, size=300, sha256="0" * 64,
        upstream="-", license="-", tokenizer="llama3",
    )  # fmt: skip
    monkeypatch.setitem(embedded.EMBEDDED_MODELS, other.name, other)
    target = embedded.resolve_model(None)
    with pytest.raises(BackendError, match="llama3 tokenizer.*cannot draft for.*qwen2.5 tokenizer") as exc:
        embedded.resolve_draft(target, "other-0.3b")
    assert "\n" not in str(exc.value)
    unknown = embedded.GGUFModel(**{**other.__dict__, "name": "unknown-0.3b", "tokenizer": ""})
    monkeypatch.setitem(embedded.EMBEDDED_MODELS, unknown.name, unknown)
    with pytest.raises(BackendError, match="unknown tokenizer"):
        embedded.resolve_draft(target, "unknown-0.3b")
    with pytest.raises(BackendError, match="is the model itself"):
        embedded.resolve_draft(target, "qwen-1.5b")
    with pytest.raises(BackendError, match="not smaller"):
        embedded.resolve_draft(embedded.resolve_model("qwen-0.5b"), "qwen-1.5b")
    with pytest.raises(BackendError, match="unknown embedded model 'nope'"):
        embedded.resolve_draft(target, "nope")
    assert embedded.resolve_draft(target, "qwen-0.5b") is embedded.EMBEDDED_MODELS["qwen2.5-coder-0.5b-instruct-q4_k_m"]
    assert embedded.resolve_draft(target, None) is None


def test_the_server_refuses_a_bad_pair_before_joining_any_weights(monkeypatch: pytest.MonkeyPatch) -> None:
    joined: list[str] = []
    monkeypatch.setattr(embedded, "ensure_gguf", lambda model, cache_dir=None: joined.append(model.name))
    server = embedded.EmbeddedServer("qwen-0.5b", speculation=embedded.Speculation(draft_model="qwen-1.5b"))
    with pytest.raises(BackendError, match="not smaller"):
        server.start()
    assert joined == [] and server.port_ is None


def test_preflight_checks_the_draft_pair_and_its_weights(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(embedded, "part_paths", lambda model: [])
    checks = {c.name: c for c in embedded.preflight(LLMSettings(draft_model="qwen-0.5b"))}
    assert checks["draft weights"].ok and "0.5b" in checks["draft weights"].detail
    bad = {c.name: c for c in embedded.preflight(LLMSettings(model="qwen-0.5b", draft_model="qwen-1.5b"))}
    assert not bad["weights"].ok and "not smaller" in bad["weights"].detail


def test_speculation_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PERSONA_LLM_DRAFT_MODEL", "qwen-0.5b")
    monkeypatch.setenv("PERSONA_LLM_NGRAM_SPECULATION", "mod")
    settings = LLMSettings.from_env()
    assert settings.draft_model == "qwen-0.5b" and settings.ngram_speculation == "mod"
    monkeypatch.setenv("PERSONA_LLM_NGRAM_SPECULATION", "lookahead")
    with pytest.raises(ConfigError, match="ngram_speculation"):
        LLMSettings.from_env()


def test_draft_counts_from_llama_cpp_timings_are_recorded(tmp_path: Path) -> None:
    timings = {"prompt_n": 40, "prompt_ms": 100.0, "predicted_ms": 900.0, "draft_n": 30, "draft_n_accepted": 24}
    with FakeOpenAIServer([{"content": "hello", "timings": timings}, {"content": "plain"}]) as server:
        chat = ChatModel(base_url=server.base_url, model="m")
        chat.complete([{"role": "user", "content": "hi"}])
        chat.complete([{"role": "user", "content": "again"}])
    drafted, plain = chat.records
    assert (drafted.server_draft_tokens, drafted.server_draft_accepted) == (30, 24)
    assert (plain.server_draft_tokens, plain.server_draft_accepted) == (0, 0)


@pytest.mark.slow
def test_a_draft_model_server_writes_what_the_model_writes_alone(embedded_chat: ChatModel, tmp_path: Path) -> None:
    """The real path: llama.cpp loads the 0.5B draft beside the 1.5B model, drafts tokens (it reports them
    in `timings`) and, greedy, replies with exactly the text the session's server (no draft) writes."""
    if embedded_chat.model != embedded.resolve_model(None).name:
        pytest.skip("the session server runs another model (PERSONA_LLM_MODEL)")
    try:
        embedded.part_paths(embedded.resolve_model("qwen-0.5b"))
    except BackendError as exc:
        pytest.skip(str(exc).splitlines()[0])
    body = {
        "messages": [{"role": "user", "content": "Name the four seasons, comma separated, lower case."}],
        "max_tokens": 16, "temperature": 0, "seed": 0,
    }  # fmt: skip
    alone = http_json("POST", f"{embedded_chat.base_url}/chat/completions", {**body, "model": embedded_chat.model}, 120)
    threads = int(os.environ["PERSONA_LLM_THREADS"]) if os.environ.get("PERSONA_LLM_THREADS") else None
    server = embedded.EmbeddedServer(
        n_ctx=1024, n_threads=threads, speculation=embedded.Speculation(draft_model="qwen-0.5b", draft_max=4)
    )
    with server:
        assert server.speculation_info()["speculative"]["draft_model"] == "qwen2.5-coder-0.5b-instruct-q4_k_m"
        drafted = http_json("POST", f"{server.base_url}/chat/completions", {**body, "model": server.alias}, 120)
    assert drafted["timings"].get("draft_n", 0) > 0, drafted["timings"]
    assert drafted["choices"][0]["message"]["content"] == alone["choices"][0]["message"]["content"]
