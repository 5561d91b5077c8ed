"""The LLM layer's front door: `open_chat_model` opens the backend that the settings name.

The names other packages import from here live where they belong and are handed on: settings,
capabilities and the HTTP helper in `base`, the chat model and its records in `chat_model`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

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
from persona_llm.llm.registry import get_backend

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
    """The configured backend as a ChatModel; servers it starts are stopped when the block exits."""
    backend = get_backend(settings.backend)
    # Checked against the backend's declared flags before it starts: a server can load for minutes
    # only to refuse the structured-output mode that was asked for.
    backend.capabilities.structured_mode(settings.structured)
    with backend.open(settings) as chat:
        yield chat
