"""A scripted OpenAI-compatible server for tests (stdlib http.server on a loopback port).

Each POST /v1/chat/completions takes the next step of the script:
    {"content": "...", "finish_reason": "stop"}   a normal reply (usage counts are made up)
    {"status": 500}                                 an HTTP error with an OpenAI-style error body
    {"sleep": 2.0, ...}                             wait first (to trigger client timeouts), then reply
    {"timings": {...}, ...}                         llama.cpp's extra `timings` object in the reply
A request with "stream": true gets the content as server-sent events, a few characters per chunk.
    callable(request_json) -> step                  decide from the request (e.g. echo a schema)
When the script runs out, `default` (a step or callable) answers, else HTTP 500 "script exhausted".
Every request body is kept in `requests` so tests can assert what the client sent (re-ask messages...).

Also answers GET /health, GET /v1/models and POST /tokenize (one token per whitespace-separated word),
like llama.cpp's server, so the doctor and truncation code paths can be tested.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Step = dict[str, Any] | Callable[[dict[str, Any]], dict[str, Any]]


class FakeOpenAIServer:
    def __init__(self, script: list[Step] | None = None, *, model: str = "fake-model", default: Step | None = None):
        self.script: list[Step] = list(script or [])
        self.default = default
        self.model = model
        self.requests: list[dict[str, Any]] = []
        self.tokenize_calls = 0
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle --
    def __enter__(self) -> FakeOpenAIServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:  # keep pytest output clean
                pass

            def _send(self, status: int, payload: Any) -> None:
                data = json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout test)

            def _send_stream(self, content: str, finish_reason: str) -> None:
                """Server-sent events as OpenAI streams them: the content in pieces of a few characters."""
                pieces = [content[i : i + 7] for i in range(0, len(content), 7)] or [""]
                try:
                    self.send_response(200)
                    self.send_header("Content-Type", "text/event-stream")
                    self.end_headers()
                    for i, piece in enumerate(pieces):
                        last = i == len(pieces) - 1
                        chunk = {
                            "id": "chatcmpl-fake",
                            "object": "chat.completion.chunk",
                            "created": int(time.time()),
                            "model": server.model,
                            "choices": [
                                {
                                    "index": 0,
                                    "delta": {"role": "assistant", "content": piece} if i == 0 else {"content": piece},
                                    "finish_reason": finish_reason if last else None,
                                }
                            ],
                        }
                        self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
                    self.wfile.write(b"data: [DONE]\n\n")
                    self.wfile.flush()
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def do_GET(self) -> None:
                if self.path in ("/health", "/v1/health"):
                    self._send(200, {"status": "ok"})
                elif self.path in ("/v1/models", "/models"):
                    self._send(200, {"object": "list", "data": [{"id": server.model, "object": "model"}]})
                else:
                    self._send(404, {"error": {"message": "not found"}})

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                if self.path == "/tokenize":
                    server.tokenize_calls += 1
                    text = body.get("content") or body.get("prompt") or ""
                    self._send(200, {"tokens": list(range(len(text.split())))})
                    return
                if self.path != "/v1/chat/completions":
                    self._send(404, {"error": {"message": "not found"}})
                    return
                with server._lock:
                    server.requests.append(body)
                    step = server.script.pop(0) if server.script else server.default
                if step is None:
                    self._send(500, {"error": {"message": "script exhausted", "type": "server_error"}})
                    return
                if callable(step):
                    step = step(body)
                if step.get("sleep"):
                    time.sleep(float(step["sleep"]))
                if "status" in step:
                    message = step.get("message", "scripted error")
                    self._send(int(step["status"]), {"error": {"message": message, "type": "server_error"}})
                    return
                content = step["content"]
                if not isinstance(content, str):
                    content = json.dumps(content, ensure_ascii=False)
                if body.get("stream"):
                    self._send_stream(content, step.get("finish_reason", "stop"))
                    return
                self._send(
                    200,
                    {
                        "id": "chatcmpl-fake",
                        "object": "chat.completion",
                        "created": int(time.time()),
                        "model": server.model,
                        "choices": [
                            {
                                "index": 0,
                                "message": {"role": "assistant", "content": content},
                                "finish_reason": step.get("finish_reason", "stop"),
                            }
                        ],
                        "usage": {
                            "prompt_tokens": step.get("prompt_tokens", 100),
                            "completion_tokens": step.get("completion_tokens", 50),
                            "total_tokens": step.get("prompt_tokens", 100) + step.get("completion_tokens", 50),
                        },
                        **({"timings": step["timings"]} if "timings" in step else {}),
                    },
                )

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    @property
    def base_url(self) -> str:
        assert self._httpd is not None
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}/v1"

    def add(self, *steps: Step) -> None:
        with self._lock:
            self.script.extend(steps)
