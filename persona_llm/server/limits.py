"""Per-key rate limits (a token bucket each) and the queue in front of the model.

A small token bucket rather than a library: the rule is ten lines, is easy to test with a fake clock,
and the server runs as one process (see the module docstring of `persona_llm.server.app`), so an
in-memory bucket per key is the whole state.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    """`rate_per_minute` requests per key on average, up to `burst` at once.

    `take(key)` returns 0 when the request may go ahead, else the seconds until it may (for Retry-After).
    """

    def __init__(self, rate_per_minute: float, burst: int, *, clock: Callable[[], float] = time.monotonic,
                 max_keys: int = 10_000) -> None:  # fmt: skip
        self.rate_per_minute = rate_per_minute
        self.burst = burst
        self.clock = clock
        self.max_keys = max_keys
        self._buckets: dict[str, _Bucket] = {}
        self._lock = threading.Lock()

    def take(self, key: str) -> float:
        per_second = self.rate_per_minute / 60.0
        now = self.clock()
        with self._lock:
            bucket = self._buckets.get(key)
            if bucket is None:
                if len(self._buckets) >= self.max_keys:  # many client addresses: forget the full buckets
                    self._forget_full(now, per_second)
                bucket = self._buckets[key] = _Bucket(float(self.burst), now)
            bucket.tokens = min(float(self.burst), bucket.tokens + (now - bucket.updated) * per_second)
            bucket.updated = now
            if bucket.tokens >= 1.0:
                bucket.tokens -= 1.0
                return 0.0
            return (1.0 - bucket.tokens) / per_second

    def _forget_full(self, now: float, per_second: float) -> None:
        full = [k for k, b in self._buckets.items() if b.tokens + (now - b.updated) * per_second >= self.burst]
        for k in full:
            del self._buckets[k]


class SlotQueue:
    """At most `slots` model calls at once and `queue` more waiting; beyond that, `try_enter` says no.

    The embedded llama.cpp server answers one request at a time on this CPU: more at once only share the
    same cores, so requests wait here in order instead of timing out together.
    """

    def __init__(self, slots: int, queue: int) -> None:
        self.slots = slots
        self.queue = queue
        self._semaphore = threading.BoundedSemaphore(slots)
        self._lock = threading.Lock()
        self._admitted = 0

    @property
    def admitted(self) -> int:
        """Requests running or waiting."""
        return self._admitted

    def try_admit(self) -> bool:
        with self._lock:
            if self._admitted >= self.slots + self.queue:
                return False
            self._admitted += 1
            return True

    def acquire(self, timeout: float) -> bool:
        """Wait for a slot (after `try_admit`); False when none came within `timeout`."""
        return self._semaphore.acquire(timeout=timeout)

    def release_slot(self) -> None:
        self._semaphore.release()

    def leave(self) -> None:
        with self._lock:
            self._admitted -= 1
