"""Where the versioned prompt templates and agent definitions are read from, and where caches live.

Prompts and agents are edited at the repository root (`prompts/`, `agents/`) and ship inside the wheel
as `persona_llm/resources/{prompts,agents}`; an environment variable points at a user's own copy.
Caches (embeddings, ONNX exports, the joined GGUF model, LLM responses) share one root.
"""

from __future__ import annotations

import os
from pathlib import Path

from persona_llm.errors import ConfigError

CACHE_ENV = "PERSONA_LLM_CACHE_DIR"

#: Environment variables that override the bundled folders, by kind.
RESOURCE_ENV = {"prompts": "PERSONA_LLM_PROMPTS", "agents": "PERSONA_LLM_AGENTS"}


def resource_root(kind: str) -> Path:
    """The folder holding `kind` ("prompts" or "agents"): $PERSONA_LLM_<KIND>, else the installed
    package's resources, else the source checkout's top-level folder."""
    if kind not in RESOURCE_ENV:
        raise ConfigError(f"unknown resource kind {kind!r}; expected one of {sorted(RESOURCE_ENV)}")
    env = os.environ.get(RESOURCE_ENV[kind])
    candidates = [Path(env)] if env else []
    here = Path(__file__).resolve().parent
    candidates += [here / "resources" / kind, here.parent / kind]
    for path in candidates:
        if path.is_dir():
            return path
    raise ConfigError(f"{kind} not found (looked in {', '.join(map(str, candidates))})")


def default_cache_dir() -> Path:
    """The one cache root: ``$PERSONA_LLM_CACHE_DIR``, else ``$XDG_CACHE_HOME/persona_llm``, else
    ``~/.cache/persona_llm``; subfolders ``embeddings/``, ``models/``, ``llm-responses/``."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "persona_llm"
