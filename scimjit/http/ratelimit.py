"""Per-token rate limits: a token bucket per principal, in process memory.

Why a token bucket: an IdP syncs in bursts (Entra's provisioning cycle sends up to about 25 requests/s per
tenant), so a client may spend `burst` requests at once and then `rate` per second; a steady client never
sees a 429. Why in memory: the check is a dict lookup and a little arithmetic on the hot path, with no
database round trip. The price is that the limit is **per process**: `scimjit serve --workers N` lets a
token make up to N times the rate in total (set the rate to the per-token total divided by N if that
matters; see docs/configuration.md). A refused request gets 429 with `Retry-After` in whole seconds.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from scimjit.metrics import RATE_LIMITED
from scimjit.scim.errors import ScimError


class RateLimiter:
    """`rate` requests per second with bursts of up to `burst`, per key; `rate <= 0` disables the limit.

    `clock` returns monotonic seconds; tests pass a fake one instead of sleeping.
    """

    def __init__(self, rate: float, burst: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = float(rate)
        self.burst = max(float(burst), 1.0)
        self.clock = clock
        self._buckets: dict[str, list[float]] = {}  # key -> [tokens left, time of last refill]

    def wait_time(self, key: str) -> float:
        """Take one request from `key`'s bucket: 0.0 when allowed, else the seconds until one is free."""
        if self.rate <= 0:
            return 0.0
        now = self.clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            self._buckets[key] = [self.burst - 1.0, now]
            return 0.0
        tokens = min(self.burst, bucket[0] + (now - bucket[1]) * self.rate)
        bucket[1] = now
        if tokens >= 1.0:
            bucket[0] = tokens - 1.0
            return 0.0
        bucket[0] = tokens
        return (1.0 - tokens) / self.rate

    def enforce(self, key: str) -> None:
        """Raise the SCIM 429 error when `key` is over its rate."""
        wait = self.wait_time(key)
        if wait > 0:
            RATE_LIMITED.inc()
            raise ScimError(
                429,
                f"Too many requests for this token: the limit is {self.rate:g}/s (bursts of {self.burst:g})",
                headers={"Retry-After": str(max(1, math.ceil(wait)))},
            )
