"""Rate limits per API token and per webhook source: an in-process token bucket.

Settings ``rate_limits.per_token_per_minute`` and ``rate_limits.per_source_per_minute``
(0 = off). A bucket holds up to ``per_minute`` requests and refills continuously at
``per_minute / 60`` per second, so a client may burst up to the limit, then goes at the
average rate. Over the limit, the answer is 429 with ``Retry-After`` (whole seconds).

The buckets live in the process: under gunicorn with N workers each worker has its own,
so a client may get up to N times the limit. That is a guard against a runaway client,
not a quota; put a shared limiter at the proxy if you need an exact one.

This module knows no Flask: the HTTP layer keeps one :class:`RateLimiter` per app and asks
it per token and per source (``publisher/api/limits.py``).
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable

from publisher.errors import TooManyRequests

MAX_KEYS = 10_000  # least recently used buckets are dropped beyond this (a full bucket)


class RateLimiter:
    """Token buckets by key; thread-safe; bounded in memory."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self._lock = threading.Lock()

    def take(self, key: str, per_minute: int) -> float:
        """Take one request from ``key``'s bucket: 0 if allowed, else seconds to wait."""
        now = self.clock()
        rate = per_minute / 60.0
        with self._lock:
            tokens, last = self._buckets.pop(key, (float(per_minute), now))
            tokens = min(float(per_minute), tokens + (now - last) * rate)
            wait = 0.0 if tokens >= 1 else (1 - tokens) / rate
            self._buckets[key] = (tokens - 1 if wait == 0 else tokens, now)
            while len(self._buckets) > MAX_KEYS:
                self._buckets.popitem(last=False)
        return wait


def check_rate(limiter: RateLimiter, key: str, per_minute: int) -> None:
    """Raise 429 (with ``Retry-After``) if ``key`` is over ``per_minute``; 0 = no limit."""
    if not per_minute or per_minute <= 0:
        return
    wait = limiter.take(key, int(per_minute))
    if wait > 0:
        seconds = max(1, math.ceil(wait))
        raise TooManyRequests(
            f"too many requests; retry in {seconds} s",
            errors={"_rate": [f"at most {per_minute} requests per minute"]},
            headers={"Retry-After": str(seconds)},
        )
