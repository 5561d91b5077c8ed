"""A real `chroma run` server for tests: a fresh store folder, a free loopback port, stopped with SIGTERM.

    with ChromaServer(tmp_path / "chroma") as server:
        ChromaStore(url=server.url)

The server is the venv's own `chroma` command (installed with chromadb), so it is the same Chroma as the
embedded store's. Starting takes about a second; tests share one per session (the `chroma_server`
fixture in the test modules that need it).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def chroma_command() -> Path:
    """The `chroma` command beside this Python (the venv's)."""
    path = Path(sys.executable).parent / "chroma"
    if not path.is_file():
        raise FileNotFoundError(f"no chroma command at {path}: chromadb is not installed in this environment")
    return path


class ChromaServer:
    """`chroma run --path PATH --host 127.0.0.1 --port FREE`; `url` once it answers its heartbeat."""

    def __init__(self, path: str | Path, *, startup_timeout_s: float = 60.0) -> None:
        self.path = Path(path)
        self.startup_timeout_s = startup_timeout_s
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def heartbeat(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/api/v2/heartbeat", timeout=2) as reply:  # noqa: S310
                return "nanosecond heartbeat" in json.loads(reply.read().decode())
        except (OSError, ValueError):
            return False

    def start(self) -> ChromaServer:
        self.path.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        log = (self.path.parent / f"{self.path.name}.log").open("wb")
        self.process = subprocess.Popen(
            [str(chroma_command()), "run", "--path", str(self.path), "--host", "127.0.0.1", "--port", str(self.port)],
            stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "ANONYMIZED_TELEMETRY": "False"},
        )  # fmt: skip
        log.close()
        deadline = time.monotonic() + self.startup_timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"chroma run exited with {self.process.returncode}; see {log.name}")
            if self.heartbeat():
                return self
            time.sleep(0.2)
        self.stop()
        raise TimeoutError(f"chroma run did not answer on port {self.port} within {self.startup_timeout_s} s")

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def __enter__(self) -> ChromaServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
