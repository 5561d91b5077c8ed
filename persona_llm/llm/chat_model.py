"""The chat model every backend hands out: one client layer over the `openai` package.

Style follows simonw/llm (a model object with capability flags, a content-hash response cache) and
instructor (Pydantic response models; on a validation error the model is re-asked with the error).
Transport failures (timeouts, connection errors, 5xx, 429) are retried with exponential backoff by
tenacity; the openai client's own retries are switched off so the count is ours and is logged.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar, cast

import openai
from pydantic import BaseModel, ValidationError
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential,
)

from persona_llm.errors import BackendError
from persona_llm.llm.base import Capabilities, LLMSettings, StructuredMode, http_json

log = logging.getLogger(__name__)

Message = dict[str, str]
T = TypeVar("T", bound=BaseModel)

REASK_SUFFIX = "Reply again with the complete corrected JSON object only."
#: Re-asks sample at least this warm: near-greedy sampling repeats the reply a re-ask is about.
REASK_TEMPERATURE = 0.7


@dataclass(frozen=True)
class _Problem:
    """Why a structured reply was refused; `rewrite`: ask again without showing the reply (see
    `ChatModel.generate_structured`)."""

    text: str
    rewrite: bool = False


def _with_note(convo: Sequence[Message], note: str) -> list[Message]:
    """`convo` with `note` added to its last user message (or as one, after an assistant turn); once."""
    out = list(convo)
    if out and out[-1]["role"] == "user":
        if note not in out[-1]["content"]:
            out[-1] = {**out[-1], "content": out[-1]["content"] + "\n\n" + note}
        return out
    return out + [{"role": "user", "content": note}]


@dataclass
class Completion:
    text: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    seconds: float
    cached: bool
    prompt_sha256: str


@dataclass
class CallRecord:
    """One line of the per-call log (`llm_calls.jsonl`)."""

    tag: str
    model: str
    prompt_sha256: str
    attempt: int
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0
    finish_reason: str = ""
    cached: bool = False
    transport_retries: int = 0
    # llama.cpp reports its own timings (prompt processing vs generation); 0 when the server does not.
    server_prompt_ms: float = 0.0
    server_prompt_tokens: int = 0  # processed now, not taken from the server's prefix cache
    server_generation_ms: float = 0.0
    # Speculative decoding (llama.cpp with a draft model or n-gram lookup): tokens proposed and accepted.
    server_draft_tokens: int = 0
    server_draft_accepted: int = 0
    outcome: str = "ok"
    error: str = ""
    at: float = field(default_factory=time.time)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class StructuredResult(Generic[T]):
    value: T
    attempts: int
    records: list[CallRecord]
    messages: list[Message]

    @property
    def prompt_tokens(self) -> int:
        return sum(r.prompt_tokens for r in self.records)

    @property
    def completion_tokens(self) -> int:
        return sum(r.completion_tokens for r in self.records)

    @property
    def seconds(self) -> float:
        return sum(r.seconds for r in self.records)

    @property
    def from_cache(self) -> bool:
        return all(r.cached for r in self.records)


class StructuredOutputError(BackendError):
    """The model did not produce valid output within the allowed re-asks."""

    def __init__(self, message: str, records: list[CallRecord]) -> None:
        super().__init__(message)
        self.records = records


def canonical_sha256(obj: Any) -> str:
    data = json.dumps(obj, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)
    return hashlib.sha256(data.encode("utf-8")).hexdigest()


class ResponseCache:
    """Content-hash cache: key = hash of everything that determines the reply (model, messages, format).

    One JSON file per key, written atomically, so concurrent writers and interrupted runs are safe.
    """

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)

    def _path(self, key: str) -> Path:
        return self.directory / key[:2] / f"{key}.json"

    def get(self, key: str) -> dict[str, Any] | None:
        path = self._path(key)
        try:
            return cast(dict[str, Any], json.loads(path.read_text(encoding="utf-8")))
        except (FileNotFoundError, json.JSONDecodeError):
            return None

    def put(self, key: str, value: dict[str, Any]) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.{threading.get_ident()}.tmp")
        tmp.write_text(json.dumps(value, ensure_ascii=False), encoding="utf-8")
        os.replace(tmp, path)


def _is_transient(exc: BaseException) -> bool:
    if isinstance(exc, openai.APIStatusError):
        return exc.status_code in (408, 409, 429) or exc.status_code >= 500
    return isinstance(exc, (openai.APITimeoutError, openai.APIConnectionError))


_FENCE = re.compile(r"^```(?:json)?\s*|\s*```$", re.IGNORECASE)


def extract_json(text: str) -> Any:
    """Parse a JSON object from a reply, tolerating code fences and prose around it (JSON/prompt modes)."""
    stripped = _FENCE.sub("", text.strip()).strip()
    try:
        return json.loads(stripped)
    except json.JSONDecodeError:
        start, end = stripped.find("{"), stripped.rfind("}")
        if start == -1 or end <= start:
            raise
        return json.loads(stripped[start : end + 1])


def _format_validation_error(exc: ValidationError, limit: int = 12) -> str:
    lines = []
    for err in exc.errors()[:limit]:
        loc = ".".join(str(p) for p in err["loc"]) or "(root)"
        lines.append(f"- {loc}: {err['msg']}")
    if len(exc.errors()) > limit:
        lines.append(f"- ... and {len(exc.errors()) - limit} more")
    return "\n".join(lines)


class ChatModel:
    """A chat model behind an OpenAI-compatible API, with capability flags, retries, re-ask and cache.

    Thread-safe: the writer calls it from several threads (one per segment, up to `concurrency`).
    """

    def __init__(
        self,
        *,
        base_url: str,
        model: str,
        api_key: str = "not-needed",
        capabilities: Capabilities | None = None,
        backend: str = "openai",
        timeout_s: float = 600.0,
        connect_timeout_s: float = 10.0,
        max_retries: int = 3,
        retry_wait_s: float = 1.0,
        temperature: float = 0.2,
        seed: int | None = 0,
        max_tokens: int = 1500,
        structured: StructuredMode = "auto",
        cache: ResponseCache | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.backend = backend
        self.capabilities = capabilities or Capabilities()
        self.max_retries = max_retries
        self.retry_wait_s = retry_wait_s
        self.temperature = temperature
        self.seed = seed
        self.max_tokens = max_tokens
        self.structured = structured
        self.cache = cache
        self.timeout_s = timeout_s
        self.api_key = api_key
        self._client = openai.OpenAI(
            base_url=self.base_url,
            api_key=api_key,
            timeout=openai.Timeout(timeout_s, connect=connect_timeout_s),
            max_retries=0,
        )
        self._lock = threading.Lock()
        self._token_cache: dict[str, int] = {}
        self.records: list[CallRecord] = []
        self.info: dict[str, Any] = {}  # what the backend told us (threads, start-up seconds, ...)
        # Set by a backend that can adapt between tasks (the embedded server re-checks free cores).
        self.before_task: Callable[[], None] | None = None

    def prepare_for_task(self) -> None:
        """Called by callers between independent tasks (one persona, one brief): a backend may retune here."""
        if self.before_task is not None:
            self.before_task()

    def rebase(self, base_url: str) -> None:
        """Point this model at a restarted server (same model, new address)."""
        with self._lock:
            self.base_url = base_url.rstrip("/")
            self._client = openai.OpenAI(
                base_url=self.base_url,
                api_key=self.api_key,
                timeout=self._client.timeout,
                max_retries=0,
            )

    @classmethod
    def from_settings(
        cls, settings: LLMSettings, *, base_url: str, model: str, capabilities: Capabilities
    ) -> ChatModel:
        if settings.max_context:
            capabilities = Capabilities(**{**asdict(capabilities), "max_context": settings.max_context})
        return cls(
            base_url=base_url,
            model=model,
            api_key=settings.api_key(),
            capabilities=capabilities,
            backend=settings.backend,
            timeout_s=settings.timeout_s,
            connect_timeout_s=settings.connect_timeout_s,
            max_retries=settings.max_retries,
            retry_wait_s=settings.retry_wait_s,
            temperature=settings.temperature,
            seed=settings.seed,
            max_tokens=settings.max_tokens,
            structured=settings.structured,
            cache=ResponseCache(settings.response_cache_dir()) if settings.use_cache else None,
        )

    @property
    def model_id(self) -> str:
        return f"{self.backend}:{self.model}"

    @property
    def server_root(self) -> str:
        """The server URL without the OpenAI `/v1` prefix (llama.cpp and vLLM put /tokenize there)."""
        return self.base_url[: -len("/v1")] if self.base_url.endswith("/v1") else self.base_url

    # -- tokens -------------------------------------------------------------------------------------

    def count_tokens(self, text: str) -> int:
        """Tokens of `text` by the served model's own tokenizer (/tokenize), else a safe estimate.

        The estimate (UTF-8 bytes / 3) over-counts English (~4 bytes/token) and Chinese (~3 bytes per
        character, ~1.5 characters per token), so truncation errs on the short side.
        """
        if text in self._token_cache:
            return self._token_cache[text]
        n: int | None = None
        if self.capabilities.tokenize:
            try:
                # llama.cpp reads "content", vLLM reads "prompt" and "model"; each ignores the rest.
                body = {"content": text, "prompt": text, "model": self.model, "add_special": False}
                reply = http_json("POST", f"{self.server_root}/tokenize", body, timeout=self.timeout_s)
                n = len(reply["tokens"])
            except (OSError, KeyError, TypeError, ValueError) as exc:
                log.debug("tokenize failed (%s); estimating", exc)
        if n is None:
            n = len(text.encode("utf-8")) // 3 + 1
        with self._lock:
            self._token_cache[text] = n
        return n

    # -- one call -----------------------------------------------------------------------------------

    def _request(
        self,
        messages: Sequence[Message],
        response_format: dict[str, Any] | None,
        max_tokens: int,
        sampling: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.model,
            "messages": list(messages),
            "temperature": self.temperature,
            "max_tokens": max_tokens,
        }
        if self.seed is not None:
            body["seed"] = self.seed
        body.update(sampling or {})
        if response_format is not None:
            body["response_format"] = response_format
        if self.capabilities.prompt_cache:
            body["extra_body"] = {"cache_prompt": True}
        return body

    def complete(
        self,
        messages: Sequence[Message],
        *,
        response_format: dict[str, Any] | None = None,
        max_tokens: int | None = None,
        tag: str = "",
        attempt: int = 1,
    ) -> Completion:
        """One chat completion, retried on transient errors, answered from the cache when possible."""
        return self._complete(messages, response_format, max_tokens, tag, attempt)[0]

    def _complete(
        self,
        messages: Sequence[Message],
        response_format: dict[str, Any] | None,
        max_tokens: int | None,
        tag: str,
        attempt: int,
        sampling: Mapping[str, Any] | None = None,
    ) -> tuple[Completion, CallRecord]:
        body = self._request(messages, response_format, max_tokens or self.max_tokens, sampling)
        # The cache flag does not change the answer: a reply cached without it still counts.
        key = canonical_sha256({"base": "chat/v1", **{k: v for k, v in body.items() if k != "extra_body"}})
        prompt_sha = canonical_sha256(body["messages"])
        record = CallRecord(tag=tag, model=self.model_id, prompt_sha256=prompt_sha, attempt=attempt)
        cached = self.cache.get(key) if self.cache else None
        if cached is not None:
            completion = Completion(**{**cached, "cached": True, "seconds": 0.0, "prompt_sha256": prompt_sha})
            record.cached, record.finish_reason = True, completion.finish_reason
            record.prompt_tokens, record.completion_tokens = (
                completion.prompt_tokens,
                completion.completion_tokens,
            )
            self._log(record)
            return completion, record

        retries = 0

        def _before_sleep(state: RetryCallState) -> None:
            nonlocal retries
            retries += 1
            exc = state.outcome.exception() if state.outcome else None
            log.warning("%s %s: transient error (%s); retry %d/%d", self.model_id, tag, exc, retries, self.max_retries)

        retrying = Retrying(
            retry=retry_if_exception(_is_transient),
            stop=stop_after_attempt(self.max_retries + 1),
            wait=wait_exponential(multiplier=self.retry_wait_s, max=30),
            before_sleep=_before_sleep,
            reraise=True,
        )
        started = time.perf_counter()
        try:
            response = retrying(self._client.chat.completions.create, **body)
        except openai.OpenAIError as exc:
            record.transport_retries, record.outcome = retries, "error"
            record.error = f"{type(exc).__name__}: {exc}"
            record.seconds = time.perf_counter() - started
            self._log(record)
            raise BackendError(
                f"{self.model_id} at {self.base_url}: {type(exc).__name__}: {exc} (after {retries} retries)"
            ) from exc
        seconds = time.perf_counter() - started
        choice = response.choices[0] if response.choices else None
        usage = response.usage
        completion = Completion(
            text=(choice.message.content or "") if choice else "",
            finish_reason=(choice.finish_reason or "") if choice else "",
            prompt_tokens=usage.prompt_tokens if usage else 0,
            completion_tokens=usage.completion_tokens if usage else 0,
            seconds=seconds,
            cached=False,
            prompt_sha256=prompt_sha,
        )
        record.transport_retries, record.seconds, record.finish_reason = (
            retries,
            seconds,
            completion.finish_reason,
        )
        record.prompt_tokens, record.completion_tokens = (
            completion.prompt_tokens,
            completion.completion_tokens,
        )
        timings = (getattr(response, "model_extra", None) or {}).get("timings") or {}
        if isinstance(timings, dict):
            record.server_prompt_ms = float(timings.get("prompt_ms") or 0.0)
            record.server_prompt_tokens = int(timings.get("prompt_n") or 0)
            record.server_generation_ms = float(timings.get("predicted_ms") or 0.0)
            record.server_draft_tokens = int(timings.get("draft_n") or 0)
            record.server_draft_accepted = int(timings.get("draft_n_accepted") or 0)
        self._log(record)
        # A truncated reply is never cached: it is an accident of max_tokens, not the model's answer.
        if self.cache is not None and completion.finish_reason != "length":
            payload = asdict(completion)
            for transient in ("cached", "seconds", "prompt_sha256"):
                payload.pop(transient)
            self.cache.put(key, payload)
        return completion, record

    def _log(self, record: CallRecord) -> None:
        with self._lock:
            self.records.append(record)
        log.info(
            "llm call %s attempt=%d prompt=%s tokens=%d+%d %.1fs finish=%s cached=%s",
            record.tag,
            record.attempt,
            record.prompt_sha256[:12],
            record.prompt_tokens,
            record.completion_tokens,
            record.seconds,
            record.finish_reason,
            record.cached,
        )

    # -- structured generation ----------------------------------------------------------------------

    def response_format_for(self, response_model: type[BaseModel]) -> dict[str, Any] | None:
        mode = self.capabilities.structured_mode(self.structured)
        if mode == "json_schema":
            return {
                "type": "json_schema",
                "json_schema": {
                    "name": response_model.__name__,
                    "schema": response_model.model_json_schema(),
                },
            }
        if mode == "json_object":
            return {"type": "json_object"}
        return None

    def generate_structured(
        self,
        messages: Sequence[Message],
        response_model: type[T],
        *,
        max_reasks: int = 2,
        check: Callable[[T], list[str]] | None = None,
        tag: str = "",
        max_tokens: int | None = None,
        sampling: Mapping[str, Any] | None = None,
    ) -> StructuredResult[T]:
        """Generate a `response_model`; on bad JSON, a validation error, a truncated reply or a failed
        `check` (returns problems), re-ask with the problem, at most `max_reasks` times.
        `sampling` overrides request fields such as temperature and seed for these calls.

        Returns the value and the conversation so far (for callers that re-ask on their own grounds).
        """
        convo: list[Message] = list(messages)
        response_format = self.response_format_for(response_model)
        records: list[CallRecord] = []
        last_problem = ""
        attempt_sampling = sampling
        for attempt in range(1, max_reasks + 2):
            completion, record = self._complete(convo, response_format, max_tokens, tag, attempt, attempt_sampling)
            records.append(record)
            outcome = self._problem_with(completion, response_model, check)
            if not isinstance(outcome, _Problem):
                convo = convo + [{"role": "assistant", "content": completion.text}]
                return StructuredResult(value=outcome, attempts=attempt, records=records, messages=convo)
            last_problem = outcome.text
            record.outcome, record.error = "invalid", outcome.text[:500]
            log.warning("%s %s attempt %d invalid: %s", self.model_id, tag, attempt, outcome.text.splitlines()[0])
            # Each re-ask samples on another seed and at REASK_TEMPERATURE at least: at 0.2 the 1.5B model
            # answered re-asks about its business voice ("Our students rely on our app") with the very
            # same reply three times, on seeds 0, 1 and 2 alike.
            attempt_sampling = self._reseeded(sampling, attempt)
            if outcome.rewrite:
                # The reply is not shown again: a runaway cut off at the limit (seen: a 14-sentence
                # Chinese summary until 1,500 tokens) primes another and costs its length again as
                # prompt, and a reply to be rewritten rather than mended (its wording: the voice, the
                # summary's length) is copied back word for word by a small model even at 0.7. The next
                # attempt starts from the conversation before it, with the problem as a note.
                convo = _with_note(convo, outcome.text + "\n" + REASK_SUFFIX)
                continue
            convo = convo + [
                {"role": "assistant", "content": completion.text[:4000]},
                {"role": "user", "content": outcome.text + "\n" + REASK_SUFFIX},
            ]
        raise StructuredOutputError(
            f"{self.model_id}: no valid {response_model.__name__} after {max_reasks + 1} attempts; "
            f"last problem: {last_problem[:300]}",
            records,
        )

    def _reseeded(self, sampling: Mapping[str, Any] | None, attempt: int) -> dict[str, Any]:
        """The sampling of re-ask `attempt` + 1: `sampling` with the seed moved by `attempt` (unseeded
        sampling differs call to call anyway) and the temperature raised to REASK_TEMPERATURE."""
        out = dict(sampling or {})
        base = out.get("seed", self.seed)
        if base is not None:
            out["seed"] = int(base) + attempt
        out["temperature"] = max(float(out.get("temperature", self.temperature)), REASK_TEMPERATURE)
        return out

    @staticmethod
    def _problem_with(
        completion: Completion, response_model: type[T], check: Callable[[T], list[str]] | None
    ) -> T | _Problem:
        if completion.finish_reason == "length":
            return _Problem(
                "Your reply was cut off at the length limit, so the JSON is incomplete. "
                "Write shorter values: fewer list items and shorter sentences.",
                rewrite=True,
            )
        try:
            data = extract_json(completion.text)
        except json.JSONDecodeError as exc:
            return _Problem(f"Your reply was not valid JSON ({exc.msg} at position {exc.pos}).")
        try:
            value = response_model.model_validate(data)
        except ValidationError as exc:
            # Only the models' own rules on wording (value_error: the voice, the summary's length, ...)
            # failed: the text is to be written again, not a field mended.
            rewrite = all(e["type"] == "value_error" for e in exc.errors())
            return _Problem("Your JSON does not match the required schema:\n" + _format_validation_error(exc), rewrite)
        if check is not None:
            problems = check(value)
            if problems:
                return _Problem("Your JSON has these problems:\n" + "\n".join(f"- {p}" for p in problems))
        return value
