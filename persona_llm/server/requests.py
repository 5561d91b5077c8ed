"""Request ids and the access log.

Each request gets an id: the client's `X-Request-ID` when it is a short token, else a new random one. The
id is returned in the `X-Request-ID` header and in every error body, and every log line written while
the request is handled carries it (`RequestIdFilter` puts it on each record), so one grep finds all of a
request's lines. One access line per request: method, path, status, milliseconds, the key's name.
"""

from __future__ import annotations

import contextvars
import logging
import re
import time
import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

HEADER = "x-request-id"
_CLIENT_ID_OK = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")

request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("persona_llm_request_id", default="-")
access_log = logging.getLogger("persona_llm.server.access")


class RequestIdFilter(logging.Filter):
    """Adds `request_id` to every record (a log format may then use %(request_id)s)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id_var.get()
        return True


LOG_FORMAT = "%(asctime)s %(levelname)s [%(request_id)s] %(name)s: %(message)s"


def configure_logging(level: int = logging.INFO) -> None:
    """Log lines with request ids on stderr (the `serve` command calls this; an embedding app need not)."""
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    handler.addFilter(RequestIdFilter())
    root = logging.getLogger("persona_llm")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False


class RequestIdMiddleware:
    """Pure ASGI (no BaseHTTPMiddleware): it must not buffer a streamed chat answer."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = dict(scope.get("headers") or []).get(HEADER.encode(), b"").decode("latin-1")
        rid = given if _CLIENT_ID_OK.match(given) else uuid.uuid4().hex
        token = request_id_var.set(rid)
        scope.setdefault("state", {})["request_id"] = rid
        started = time.perf_counter()
        status = 0

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                headers = list(message.get("headers") or [])
                headers.append((HEADER.encode(), rid.encode()))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            principal = scope.get("state", {}).get("principal")
            access_log.info(
                "%s %s %d %.1fms key=%s", scope.get("method", "?"), scope.get("path", "?"), status,
                (time.perf_counter() - started) * 1000, principal.name if principal is not None else "-",
            )  # fmt: skip
            request_id_var.reset(token)
