"""`persona-llm doctor`: does the chosen backend answer, and does it support what persona writing needs?

Each check says what it found and, when it fails, exactly what to do. The checks run in order and stop
at the first one the rest depend on (no point asking for JSON from a server that is not there).
"""

from __future__ import annotations

import json
import time

from pydantic import BaseModel, Field

from persona_llm.errors import BackendError, ConfigError
from persona_llm.llm.base import Check, LLMSettings
from persona_llm.llm.chat_model import ChatModel
from persona_llm.llm.client import open_chat_model
from persona_llm.llm.registry import backend_names, get_backend

# Instructions + texts + reply of a persona prompt need about this much context (see PersonaWriter).
REQUIRED_CONTEXT = 3500


class _Probe(BaseModel):
    ok: bool
    colour: str = Field(max_length=12)


def _static_checks(settings: LLMSettings) -> list[Check]:
    try:
        backend = get_backend(settings.backend)
    except ConfigError as exc:
        return [Check("backend", False, str(exc), f"choose one of: {', '.join(backend_names())}")]
    return backend.preflight(settings)


def _live_checks(chat: ChatModel, settings: LLMSettings) -> list[Check]:
    checks: list[Check] = []
    started = time.perf_counter()
    try:
        reply = chat.complete([{"role": "user", "content": "Say OK."}], max_tokens=8, tag="doctor")
    except BackendError as exc:
        return [Check("chat", False, str(exc)[:300], "check the URL, the model name and that the server is up")]
    checks.append(Check("chat", bool(reply.text.strip()), f"answered {reply.text.strip()[:30]!r} in "
                        f"{time.perf_counter() - started:.1f}s"))  # fmt: skip
    mode = chat.capabilities.structured_mode(chat.structured)
    try:
        result = chat.generate_structured(
            [{"role": "user", "content": 'Reply with JSON: {"ok": true, "colour": "<a colour>"}.'}],
            _Probe,
            max_reasks=1,
            tag="doctor",
            max_tokens=60,
        )
        checks.append(Check(f"structured output ({mode})", True, f"valid JSON in {result.attempts} attempt(s)"))
    except BackendError as exc:
        fix = (
            "set structured='json_object' (JSON mode) or 'prompt' for servers without JSON-schema decoding"
            if mode == "json_schema"
            else "use a model that follows JSON instructions"
        )
        checks.append(Check(f"structured output ({mode})", False, str(exc)[:300], fix))
    if chat.capabilities.tokenize:
        n = chat.count_tokens("How many tokens is this?")
        checks.append(Check("tokenizer", n < 15, f"/tokenize counted {n} tokens for a 5-word sentence"))
    else:
        checks.append(Check("tokenizer", True, "no /tokenize endpoint: prompt budgets use a safe over-estimate"))
    ctx = chat.capabilities.max_context
    checks.append(Check("context", ctx >= REQUIRED_CONTEXT, f"{ctx} tokens (persona prompts need ~{REQUIRED_CONTEXT})",
                        "" if ctx >= REQUIRED_CONTEXT else "raise n_ctx / max_model_len, or set max_context"))  # fmt: skip
    return checks


def diagnose(settings: LLMSettings) -> list[Check]:
    """Run the checks for `settings`; the backend is started (embedded, vLLM) and stopped again."""
    checks = _static_checks(settings)
    if not all(c.ok for c in checks):
        return checks
    where = f" at {settings.base_url}" if settings.base_url else ""
    started = time.perf_counter()
    # The doctor must say what is wrong, not answer from a cache of earlier replies.
    live_settings = settings.model_copy(update={"use_cache": False, "max_retries": 0})
    try:
        with open_chat_model(live_settings) as chat:
            checks.append(Check("server", True, f"{chat.model_id} at {chat.base_url} up in "
                                f"{time.perf_counter() - started:.1f}s"))  # fmt: skip
            checks += _live_checks(chat, live_settings)
    except (BackendError, ConfigError) as exc:
        checks.append(Check("server", False, f"{settings.backend}{where}: {str(exc)[:300]}",
                            "see the message; `persona-llm doctor --help` lists the backend options"))  # fmt: skip
    return checks


def checks_as_json(checks: list[Check]) -> str:
    return json.dumps([c.__dict__ for c in checks], ensure_ascii=False, indent=2)
