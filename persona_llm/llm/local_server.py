"""A model server that we start ourselves on 127.0.0.1 and stop again (embedded llama.cpp, vLLM).

The subclass says how to launch and shut down its server; this class owns the rest: a free loopback
port (with a retry, since the port can be taken between our probe and the server's bind), waiting
until /health answers, giving up after a timeout, stopping at interpreter exit, and `with` support.
"""

from __future__ import annotations

import atexit
import logging
import socket
import threading
import time
from abc import ABC, abstractmethod
from types import TracebackType
from typing import ClassVar, Self

from persona_llm.errors import BackendError
from persona_llm.llm.base import http_status

log = logging.getLogger(__name__)


def free_loopback_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class LocalServer(ABC):
    """An OpenAI-compatible server on a free loopback port; `start()` returns its `/v1` base URL.

    Subclasses implement `_launch(port)` and `_shutdown()`, and may override `_prepare()` (once per
    start, before the clock runs), `_check_alive()` (raise when the server died while loading) and
    `_ready()` (default: GET /health answers 200).
    """

    kind: ClassVar[str] = "local"
    poll_interval_s: ClassVar[float] = 0.25
    launch_attempts: ClassVar[int] = 3

    def __init__(self, *, startup_timeout_s: float) -> None:
        self.startup_timeout_s = startup_timeout_s
        self.port_: int | None = None
        self.startup_seconds_: float | None = None
        self._lock = threading.Lock()

    @property
    def root_url(self) -> str:
        """The server without the OpenAI `/v1` prefix (where /health and /tokenize live)."""
        if self.port_ is None:
            raise BackendError(f"the {self.kind} server is not running")
        return f"http://127.0.0.1:{self.port_}"

    @property
    def base_url(self) -> str:
        return f"{self.root_url}/v1"

    def start(self) -> str:
        """Launch the server and wait until it is ready; returns the `/v1` base URL."""
        with self._lock:
            if self.port_ is not None:
                return self.base_url
            self._prepare()
            started = time.perf_counter()
            last_error: Exception | None = None
            for _ in range(self.launch_attempts):
                port = free_loopback_port()
                try:
                    self._launch(port)
                except Exception as exc:  # whatever the server raises when it cannot bind
                    last_error = exc
                    continue
                self.port_ = port
                break
            else:
                raise BackendError(f"could not start the {self.kind} server: {last_error}")
            atexit.register(self.stop)
        self._wait_ready(started)
        self.startup_seconds_ = time.perf_counter() - started
        log.info("%s on %s (%.1fs)", self.description(), self.base_url, self.startup_seconds_)
        return self.base_url

    def _wait_ready(self, started: float) -> None:
        while time.perf_counter() - started < self.startup_timeout_s:
            try:
                self._check_alive()
            except BackendError:
                self.stop()
                raise
            if self._ready():
                return
            time.sleep(self.poll_interval_s)
        self.stop()
        raise BackendError(f"the {self.kind} server did not become ready within {self.startup_timeout_s:.0f}s")

    def stop(self) -> None:
        """Shut the server down; a no-op when it is not running."""
        with self._lock:
            if self.port_ is None:
                return
            try:
                self._shutdown()
            finally:
                self.port_ = None
                atexit.unregister(self.stop)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- what a subclass says -------------------------------------------------------------------------

    def description(self) -> str:
        """What is served, for the start-up log line."""
        return f"{self.kind} server"

    def _prepare(self) -> None:
        """Work before launching that does not count as start-up time (checks, fetching weights)."""
        return None

    @abstractmethod
    def _launch(self, port: int) -> None:
        """Start serving on 127.0.0.1:`port`; raise if that fails (the start is retried on a new port)."""

    @abstractmethod
    def _shutdown(self) -> None:
        """Stop serving and free what the server holds."""

    def _check_alive(self) -> None:
        """Raise BackendError if the server has died while we wait for it."""
        return None

    def _ready(self) -> bool:
        # llama.cpp answers 503 while the model loads, vLLM does not listen yet; both answer 200 once they serve.
        return http_status(f"{self.root_url}/health") == 200
