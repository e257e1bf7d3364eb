"""Per-key rate limiting: a token bucket per API key id, in this process.

Each key may make `rate` requests a second on average and `burst` at once; a request beyond that
is answered 429 with `Retry-After` (whole seconds until a token is back). The buckets live in the
worker process's memory: with `serve --workers N` a key gets up to N times the rate in all. That is
a guard against a runaway client, not an accounting of quota, and keeps the hot path free of a
database round trip; a shared limit would need a table (or PostgreSQL advisory counters).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    """`rate` tokens a second up to `burst`; `rate <= 0` turns limiting off."""

    def __init__(self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate, self.burst, self.clock = rate, max(int(burst), 1), clock
        self._buckets: dict[int, _Bucket] = {}
        self._lock = threading.Lock()  # sync routes check keys from the thread pool

    @property
    def enabled(self) -> bool:
        return self.rate > 0

    def acquire(self, key_id: int) -> float | None:
        """None when the request may go ahead (a token is taken), else the seconds to wait."""
        if not self.enabled:
            return None
        now = self.clock()
        with self._lock:
            bucket = self._buckets.get(key_id)
            if bucket is None:
                bucket = self._buckets[key_id] = _Bucket(float(self.burst), now)
            bucket.tokens = min(float(self.burst), bucket.tokens + (now - bucket.updated) * self.rate)
            bucket.updated = now
            if bucket.tokens >= 1:
                bucket.tokens -= 1
                return None
            return (1 - bucket.tokens) / self.rate

    @staticmethod
    def retry_after(wait: float) -> str:
        return str(max(1, math.ceil(wait)))
