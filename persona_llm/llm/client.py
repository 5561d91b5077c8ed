"""The LLM layer's front door: `open_chat_model` opens the configured backend.

The names other packages import from here live where they belong and are handed on: settings,
capabilities and the HTTP helper in `base`, the chat model and its records in `chat_model`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from persona_llm.errors import ConfigError
from persona_llm.llm.base import DEFAULT_OPENAI_URL, Capabilities, LLMSettings, StructuredMode, http_json
from persona_llm.llm.chat_model import (
    CallRecord,
    ChatModel,
    Completion,
    ResponseCache,
    StructuredOutputError,
    StructuredResult,
    extract_json,
)

__all__ = [
    "DEFAULT_OPENAI_URL",
    "CallRecord",
    "Capabilities",
    "ChatModel",
    "Completion",
    "LLMSettings",
    "ResponseCache",
    "StructuredMode",
    "StructuredOutputError",
    "StructuredResult",
    "extract_json",
    "http_json",
    "open_chat_model",
]


@contextmanager
def open_chat_model(settings: LLMSettings) -> Iterator[ChatModel]:
    """The configured backend as a ChatModel; servers we start are stopped when the block exits."""
    if settings.backend == "embedded":
        from persona_llm.llm.embedded import EmbeddedServer

        server = EmbeddedServer(
            settings.model,
            n_threads=settings.n_threads,
            n_ctx=settings.n_ctx,
            n_parallel=settings.concurrency,
            startup_timeout_s=settings.startup_timeout_s,
        )
        with server:
            caps = Capabilities(json_schema=True, json_object=True, tokenize=True, max_context=settings.n_ctx)
            chat = ChatModel.from_settings(settings, base_url=server.base_url, model=server.alias, capabilities=caps)
            chat.info = {"threads": server.threads_, "startup_seconds": round(server.startup_seconds_ or 0.0, 2)}
            yield chat
        return
    if settings.backend == "vllm":
        from persona_llm.llm.vllm import VLLMServer, vllm_capabilities

        if settings.base_url:
            model, caps = vllm_capabilities(settings.base_url, settings.api_key())
            yield ChatModel.from_settings(
                settings, base_url=settings.base_url, model=settings.model or model, capabilities=caps
            )
            return
        if not settings.model:
            raise ConfigError("backend 'vllm' needs base_url (a running server) or model (to start one)")
        with VLLMServer(settings.model, startup_timeout_s=settings.startup_timeout_s) as vllm_server:
            model, caps = vllm_capabilities(vllm_server.base_url)
            yield ChatModel.from_settings(settings, base_url=vllm_server.base_url, model=model, capabilities=caps)
        return
    base_url = settings.base_url or DEFAULT_OPENAI_URL
    if not settings.model:
        raise ConfigError("backend 'openai' needs a model name (--llm-model or PERSONA_LLM_MODEL)")
    caps = Capabilities(
        # OpenAI, Ollama (>= 0.5), LM Studio and vLLM accept json_schema; set structured="json_object"
        # (or "prompt") for servers that do not.
        json_schema=True,
        json_object=True,
        tokenize=False,
        max_context=settings.max_context or 8192,
    )
    yield ChatModel.from_settings(settings, base_url=base_url, model=settings.model, capabilities=caps)
