"""What an operator tunes about the server: where it listens and how much one request or one key may ask.

Every limit lives here, once; the app reads them from one `ServerSettings`. Defaults suit one strategist's
laptop and a small team behind one process.
"""

from __future__ import annotations

import ipaddress
import os
from typing import Any

from pydantic import BaseModel, Field, ValidationError

from persona_llm.errors import ConfigError

#: Environment variables read by `ServerSettings.from_env` (explicit arguments win).
SETTINGS_ENV = {
    "host": "PERSONA_LLM_SERVER_HOST",
    "port": "PERSONA_LLM_SERVER_PORT",
    "rate_per_minute": "PERSONA_LLM_SERVER_RATE",
    "llm_timeout_s": "PERSONA_LLM_SERVER_LLM_TIMEOUT",
}


class ServerSettings(BaseModel):
    """Listening address and request limits.

    Without API keys the server is open to anyone who can reach it, so it may then only listen on a
    loopback address (`check_bind`); with keys it may listen anywhere.
    """

    host: str = "127.0.0.1"
    port: int = Field(default=8321, ge=0, le=65535)
    max_body_bytes: int = Field(default=64 * 1024, ge=1024, description="largest request body (413 above)")
    max_upload_bytes: int = Field(
        default=256 * 1024 * 1024, ge=1024, description="largest data file a refresh request may send (413 above)"
    )
    max_question_chars: int = Field(default=2000, ge=1, description="longest chat question or brief goal (422)")
    max_search_chars: int = Field(default=200, ge=1, description="longest search query (422)")
    max_results: int = Field(default=50, ge=1, description="most texts one search returns")
    rate_per_minute: float = Field(default=120.0, gt=0, description="requests per minute per key (429 above)")
    rate_burst: int = Field(default=30, ge=1, description="requests a key may send at once before the rate applies")
    llm_timeout_s: float = Field(default=300.0, gt=0, description="one LLM call; a chat or brief gives up after it")
    llm_slots: int = Field(default=1, ge=1, description="chat answers and briefs generated at the same time")
    llm_queue: int = Field(default=16, ge=0, description="requests waiting for a slot (503 beyond)")
    llm_queue_wait_s: float = Field(default=1800.0, gt=0, description="how long a request waits for a slot")
    run_cache: int = Field(default=3, ge=1, description="runs whose files stay loaded (published, previous...)")
    page_poll_s: float = Field(default=10.0, gt=0, description="how often the web page checks for a newly published run")

    @classmethod
    def from_env(cls, **overrides: Any) -> ServerSettings:
        """Settings from PERSONA_LLM_SERVER_* variables, then explicit overrides (None ignored)."""
        values: dict[str, Any] = {k: os.environ[v] for k, v in SETTINGS_ENV.items() if os.environ.get(v)}
        values.update({k: v for k, v in overrides.items() if v is not None})
        try:
            return cls(**values)
        except ValidationError as exc:
            err = exc.errors()[0]
            field = ".".join(str(x) for x in err.get("loc", ()))
            raise ConfigError(f"invalid server setting {field}: {err.get('msg', '')}") from exc

    def check_bind(self, *, has_keys: bool) -> None:
        """Refuse to listen beyond this machine without API keys: everything would be open to the network."""
        if not has_keys and not is_loopback(self.host):
            raise ConfigError(
                f"refusing to listen on {self.host} without API keys: anyone who can reach it could read every "
                "segment and publish runs; configure keys (--keys FILE or PERSONA_LLM_API_KEYS) or listen on "
                "127.0.0.1"
            )


def is_loopback(host: str) -> bool:
    """Is `host` an address (or the name localhost) that only this machine can reach?"""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything
