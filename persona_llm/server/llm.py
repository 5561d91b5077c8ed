"""The one model behind the server's chat and briefs, and the queue in front of it.

Given open (`chat=`: tests, an app that embeds the server) it is used as is and never stopped here. Given
as settings it is opened in a background thread when the app starts, so `/healthz` answers at once and
`/readyz` says "starting" until the model answers (the embedded llama.cpp server loads ~1 GB first); it is
stopped when the app stops. Every LLM call is bounded by the settings' `timeout_s` (the server sets it
from `ServerSettings.llm_timeout_s`).
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator
from typing import Any

from persona_llm.errors import BackendError
from persona_llm.llm.base import LLMSettings, http_status
from persona_llm.llm.chat_model import ChatModel
from persona_llm.server.limits import SlotQueue

log = logging.getLogger(__name__)


class ModelUnavailable(BackendError):
    """The model is still starting, failed to start, or is busy with more requests than may wait: a 503."""


class ServerModel:
    """The server's ChatModel: `get()` it for a request, `check()` it for /readyz."""

    def __init__(self, settings: LLMSettings | None = None, *, chat: ChatModel | None = None, slots: int = 1,
                 queue: int = 16) -> None:  # fmt: skip
        if settings is None and chat is None:
            raise ValueError("ServerModel needs LLM settings or an open ChatModel")
        self.settings = settings
        self.queue = SlotQueue(slots, queue)
        self._chat = chat
        self._error: str | None = None
        self._stack = contextlib.ExitStack()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Open the model from its settings in the background (nothing to do for a model given open)."""
        if self._chat is not None or self._thread is not None:
            return
        self._thread = threading.Thread(target=self._open, name="persona-llm-model", daemon=True)
        self._thread.start()

    def _open(self) -> None:
        from persona_llm.llm.client import open_chat_model

        assert self.settings is not None
        try:
            self._chat = self._stack.enter_context(open_chat_model(self.settings))
            log.info("model ready: %s", self._chat.model_id)
        except Exception as exc:  # noqa: BLE001 - reported by /readyz and every request that needs it
            self._error = f"the model did not start: {str(exc)[:300]}"
            log.error("%s", self._error)

    def close(self) -> None:
        if self._thread is not None:
            self._thread.join(timeout=600)
        self._stack.close()

    def get(self) -> ChatModel:
        if self._chat is not None:
            return self._chat
        raise ModelUnavailable(self._error or "the model is still starting; try again shortly (see /readyz)")

    @contextlib.contextmanager
    def slot(self, wait_s: float) -> Iterator[ChatModel]:
        """The model, for one request, once it is this request's turn (first come, first served); waits at
        most `wait_s` seconds, and refuses at once when the queue is full."""
        chat = self.get()
        if not self.queue.try_admit():
            raise ModelUnavailable("the model is busy: too many requests are waiting; try again shortly")
        try:
            if not self.queue.acquire(timeout=wait_s):
                raise ModelUnavailable(f"waited {wait_s:g}s for the model; try again")
            try:
                yield chat
            finally:
                self.queue.release_slot()
        finally:
            self.queue.leave()

    def check(self) -> dict[str, Any]:
        """For /readyz: does the model's server answer?"""
        if self._chat is None:
            return {"ok": False, "detail": self._error or "starting"}
        chat = self._chat
        status = http_status(f"{chat.server_root}/health", timeout=2.0)
        if status != 200:  # an OpenAI-style server without /health: any answer but a server error will do
            status = http_status(f"{chat.base_url}/models", timeout=2.0)
        if status is not None and status < 500:
            return {"ok": True, "detail": f"{chat.model_id}; {self.queue.admitted} request(s) running or queued"}
        return {"ok": False, "detail": f"{chat.model_id} at {chat.base_url} does not answer (HTTP {status})"}
