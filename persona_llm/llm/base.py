"""What every LLM backend and the chat client share: settings, capability flags, structured-output
modes, the doctor's findings, and small stdlib HTTP helpers for the endpoints the `openai` package
does not cover.

The backends and the client build on this module; it imports neither.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError

from persona_llm.errors import BackendError, ConfigError
from persona_llm.resource_paths import default_cache_dir

StructuredMode = Literal["auto", "json_schema", "json_object", "prompt"]
NgramSpeculation = Literal["off", "simple", "map-k", "map-k4v", "mod"]

DEFAULT_OPENAI_URL = "https://api.openai.com/v1"


class LLMSettings(BaseModel):
    """Everything that chooses and tunes the generative backend; `backend` is the one switch.

    `backend` names a registered backend (`persona_llm.llm.registry`), checked when it is opened.
    Built in:
    embedded: we start llama.cpp (xllamacpp) on a free loopback port, serving `model` (a key of
              `persona_llm.llm.embedded.EMBEDDED_MODELS`; default the 1.5B Qwen2.5-Coder GGUF).
    vllm:     `base_url` of a running `vllm serve`, or, without one, we start vLLM on `model`.
    openai:   any OpenAI-compatible URL (OpenAI, Ollama, LM Studio, TGI); the key is read from the
              environment variable named by `api_key_env`, never stored.
    """

    backend: str = Field(default="embedded", min_length=1)
    base_url: str | None = None
    model: str | None = None
    api_key_env: str = "OPENAI_API_KEY"
    timeout_s: float = Field(default=600.0, gt=0, description="one request; CPU generation is slow")
    connect_timeout_s: float = Field(default=10.0, gt=0)
    max_retries: int = Field(default=3, ge=0, description="transport retries per call (timeouts, 5xx, 429)")
    retry_wait_s: float = Field(default=1.0, ge=0, description="first backoff; doubles, capped at 30 s")
    max_reasks: int = Field(default=2, ge=0, description="re-asks after invalid output, per generation")
    concurrency: int = Field(default=1, ge=1, description="segments generated at the same time")
    temperature: float = Field(default=0.2, ge=0, le=2)
    seed: int | None = 0
    max_tokens: int = Field(default=1500, gt=0, description="completion token limit per call")
    structured: StructuredMode = "auto"
    max_context: int | None = Field(default=None, description="override the context length the backend reports")
    n_threads: int | None = Field(
        default=None, ge=1, description="embedded: llama.cpp threads; None = the cores not busy now (max 8)"
    )
    n_ctx: int = Field(default=6144, ge=1024, description="embedded: context per parallel slot")
    draft_model: str | None = Field(
        default=None,
        description=(
            "embedded: speculative decoding with this smaller GGUF drafting tokens that `model` verifies "
            "(a key or alias of EMBEDDED_MODELS, e.g. 'qwen-0.5b'); it must share `model`'s tokenizer. "
            "With greedy or seeded sampling the text is the target model's own; only the speed changes. "
            "None = no draft model"
        ),
    )
    ngram_speculation: NgramSpeculation = Field(
        default="off",
        description=(
            "embedded: speculative decoding without a draft model, proposing tokens that followed the same "
            "n-gram earlier in the prompt or reply (llama.cpp spec types ngram-simple, ngram-map-k, "
            "ngram-map-k4v, ngram-mod); 'off' = none. With `draft_model` too, llama.cpp tries the n-gram first"
        ),
    )
    draft_max: int = Field(default=8, ge=1, le=64, description="embedded: most tokens proposed per speculative step")
    draft_min: int = Field(default=0, ge=0, description="embedded: fewest tokens in a draft-model proposal worth verifying")
    draft_p_min: float = Field(
        default=0.75, ge=0, le=1, description="embedded: the draft model stops proposing below this token probability"
    )
    ngram_size: int = Field(
        default=4, ge=1, le=64, description="embedded: n-gram speculation looks up the last this many tokens"
    )
    startup_timeout_s: float = Field(default=300.0, gt=0, description="embedded/vllm: wait for the server")
    cache_dir: Path | None = Field(default=None, description="response cache; default <cache root>/llm-responses")
    use_cache: bool = True

    @classmethod
    def from_env(cls, **overrides: Any) -> LLMSettings:
        """Settings from PERSONA_LLM_* environment variables, then explicit overrides (None ignored)."""
        env_map = {
            "backend": "PERSONA_LLM_BACKEND",
            "base_url": "PERSONA_LLM_BASE_URL",
            "model": "PERSONA_LLM_MODEL",
            "api_key_env": "PERSONA_LLM_API_KEY_ENV",
            "concurrency": "PERSONA_LLM_CONCURRENCY",
            "n_threads": "PERSONA_LLM_THREADS",
            "draft_model": "PERSONA_LLM_DRAFT_MODEL",
            "ngram_speculation": "PERSONA_LLM_NGRAM_SPECULATION",
            "timeout_s": "PERSONA_LLM_TIMEOUT",
        }
        values: dict[str, Any] = {k: os.environ[v] for k, v in env_map.items() if os.environ.get(v)}
        values.update({k: v for k, v in overrides.items() if v is not None})
        try:
            return cls(**values)
        except ValidationError as exc:
            raise ConfigError(f"invalid LLM settings: {exc}") from exc

    def api_key(self) -> str:
        key = os.environ.get(self.api_key_env)
        if self.backend == "openai" and not key and (self.base_url or DEFAULT_OPENAI_URL) == DEFAULT_OPENAI_URL:
            raise ConfigError(f"backend 'openai' needs an API key in environment variable {self.api_key_env}")
        # Local servers (Ollama, LM Studio, vLLM, llama.cpp) accept any key; the client insists on one.
        return key or "not-needed"

    def response_cache_dir(self) -> Path:
        return self.cache_dir or default_cache_dir() / "llm-responses"


@dataclass(frozen=True)
class Capabilities:
    """What a backend supports; the writer adapts instead of failing (JSON mode if no schema decoding)."""

    json_schema: bool = False
    json_object: bool = False
    tokenize: bool = False
    max_context: int = 4096
    #: The server keeps a prompt's KV cache for the next request when asked (llama.cpp `cache_prompt`):
    #: the persona prompts share their system prompt, so only what follows it is processed again.
    prompt_cache: bool = False
    #: The server turns the model's tool calls into OpenAI `tool_calls` reliably enough for an agent loop
    #: (segment chat's "tools" strategy); without it chat routes with schema-constrained JSON instead.
    tool_calls: bool = False

    def structured_mode(self, requested: StructuredMode = "auto") -> Literal["json_schema", "json_object", "prompt"]:
        """The structured-output mode to use for `requested`; BackendError if the backend lacks it."""
        if requested == "auto":
            if self.json_schema:
                return "json_schema"
            return "json_object" if self.json_object else "prompt"
        if requested == "json_schema" and not self.json_schema:
            raise BackendError("the backend lacks JSON-schema decoding (response_format json_schema)")
        if requested == "json_object" and not self.json_object:
            raise BackendError("the backend does not support JSON mode (response_format json_object)")
        return requested


@dataclass
class Check:
    """One finding of `persona-llm doctor`: what was checked, what was found, and the fix if it failed."""

    name: str
    ok: bool
    detail: str
    fix: str = ""


def http_json(method: str, url: str, body: Any = None, timeout: float = 10.0, api_key: str | None = None) -> Any:
    """A small stdlib JSON request for the non-OpenAI endpoints (/health, /tokenize, /v1/models).

    Raises `OSError` (URLError, HTTPError, timeouts) or `ValueError` (a body that is not JSON).
    """
    data = None if body is None else json.dumps(body).encode("utf-8")
    request = urllib.request.Request(url, data=data, method=method)
    request.add_header("Content-Type", "application/json")
    if api_key:
        request.add_header("Authorization", f"Bearer {api_key}")
    with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 (our own URLs)
        return json.loads(response.read().decode("utf-8") or "null")


def http_status(url: str, timeout: float = 2.0) -> int | None:
    """The HTTP status of GET `url`, or None when nothing answers (refused, timed out)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 (our own URLs)
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except OSError:
        return None
