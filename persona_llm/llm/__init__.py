"""Generative model access: one OpenAI-compatible client layer over embedded llama.cpp, vLLM or any URL."""

from persona_llm.llm.client import (
    CallRecord,
    Capabilities,
    ChatModel,
    LLMSettings,
    ResponseCache,
    StructuredOutputError,
    StructuredResult,
)

__all__ = [
    "Capabilities",
    "CallRecord",
    "ChatModel",
    "LLMSettings",
    "ResponseCache",
    "StructuredOutputError",
    "StructuredResult",
]
