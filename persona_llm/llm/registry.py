"""Backends by name: what `LLMSettings.backend` may say, and how each opens a ChatModel.

A backend is one module with a factory (settings -> a `with` block that hands out a ChatModel and
stops whatever it started), the capability flags it declares (simonw/llm style) and the doctor's
checks that need no server. Built-in backends are listed at the bottom of this file; others call
`register_backend` when they are imported.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass

from persona_llm.errors import ConfigError
from persona_llm.llm import embedded, openai_compatible, vllm
from persona_llm.llm.base import Capabilities, Check, LLMSettings
from persona_llm.llm.chat_model import ChatModel

BackendFactory = Callable[[LLMSettings], AbstractContextManager[ChatModel]]
Preflight = Callable[[LLMSettings], list[Check]]


def _no_checks(settings: LLMSettings) -> list[Check]:
    return []


@dataclass(frozen=True)
class Backend:
    """A registered backend. `capabilities` holds the flags every server of it has; the context
    length is left to the ChatModel that `open` hands out, since only a running server knows it."""

    name: str
    open: BackendFactory
    capabilities: Capabilities
    preflight: Preflight = _no_checks


_backends: dict[str, Backend] = {}


def register_backend(
    name: str,
    factory: BackendFactory,
    *,
    capabilities: Capabilities,
    preflight: Preflight | None = None,
    replace: bool = False,
) -> Backend:
    """Make `name` a valid `LLMSettings.backend`; ConfigError if the name is taken (unless `replace`)."""
    if name in _backends and not replace:
        raise ConfigError(f"LLM backend {name!r} is already registered")
    backend = Backend(name, factory, capabilities, preflight or _no_checks)
    _backends[name] = backend
    return backend


def backend_names() -> list[str]:
    return sorted(_backends)


def get_backend(name: str) -> Backend:
    """The backend registered as `name`; ConfigError naming the registered ones if there is none."""
    try:
        return _backends[name]
    except KeyError:
        raise ConfigError(f"unknown LLM backend {name!r}; registered: {', '.join(backend_names())}") from None


register_backend("embedded", embedded.open_embedded, capabilities=embedded.CAPABILITIES, preflight=embedded.preflight)
register_backend("vllm", vllm.open_vllm, capabilities=vllm.CAPABILITIES, preflight=vllm.preflight)
register_backend(
    "openai",
    openai_compatible.open_openai,
    capabilities=openai_compatible.CAPABILITIES,
    preflight=openai_compatible.preflight,
)
