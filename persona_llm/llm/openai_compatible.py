"""The openai backend: any OpenAI-compatible URL that someone else runs (OpenAI, Ollama, LM Studio,
TGI, a `vllm serve` without its /tokenize). Nothing is started or stopped here."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace

from persona_llm.errors import ConfigError
from persona_llm.llm.base import DEFAULT_OPENAI_URL, Capabilities, Check, LLMSettings
from persona_llm.llm.chat_model import ChatModel

#: OpenAI, Ollama (>= 0.5), LM Studio and vLLM accept json_schema; for servers that do not, set
#: structured="json_object" (or "prompt"). No /tokenize: prompt budgets use a safe over-estimate.
#: Tool calls: OpenAI's API and servers that copy it parse them; a small local model behind such a URL
#: may not emit them (segment chat then needs strategy="router").
CAPABILITIES = Capabilities(json_schema=True, json_object=True, tokenize=False, tool_calls=True)
#: The context assumed when the settings give none (the API does not report it).
DEFAULT_CONTEXT = 8192


@contextmanager
def open_openai(settings: LLMSettings) -> Iterator[ChatModel]:
    """A ChatModel on `base_url` (default OpenAI's API) for the named model."""
    if not settings.model:
        raise ConfigError("backend 'openai' needs a model name (--llm-model or PERSONA_LLM_MODEL)")
    capabilities = replace(CAPABILITIES, max_context=settings.max_context or DEFAULT_CONTEXT)
    yield ChatModel.from_settings(
        settings, base_url=settings.base_url or DEFAULT_OPENAI_URL, model=settings.model, capabilities=capabilities
    )


def preflight(settings: LLMSettings) -> list[Check]:
    """Before connecting: is there a key where one is needed, and a model name?"""
    checks: list[Check] = []
    try:
        settings.api_key()
        checks.append(Check("api key", True, f"{settings.api_key_env} set or not needed"))
    except ConfigError as exc:
        checks.append(Check("api key", False, str(exc), f"export {settings.api_key_env}=..."))
    if not settings.model:
        checks.append(Check("model", False, "no model name", "pass --llm-model or set PERSONA_LLM_MODEL"))
    return checks
