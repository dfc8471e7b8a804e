"""Request rates per caller: a token bucket per signed-in user and per API key, in each server process.

A caller may send `burst` requests at once and `rate` per second after that; the next request past it gets
429 with `Retry-After`. Anonymous callers are not limited here (they are refused outright once
`auth_required` is on). With N server processes behind one port a caller may get up to N times the rate.
"""

from __future__ import annotations

import math
import time

from citybrain.core.errors import TooManyRequests

MAX_CALLERS = 100_000  # buckets kept; beyond it, the full (idle) ones are forgotten


class RateLimiter:
    def __init__(self, rate: float, burst: float) -> None:
        self.rate = rate
        self.burst = max(burst, 1.0)
        self._buckets: dict[str, tuple[float, float]] = {}  # caller -> (tokens, when counted)

    def take(self, caller: str, now: float | None = None) -> None:
        """Count one request of `caller`, or refuse it."""
        if self.rate <= 0:
            return
        now = time.monotonic() if now is None else now
        tokens, then = self._buckets.get(caller, (self.burst, now))
        tokens = min(self.burst, tokens + (now - then) * self.rate)
        if tokens < 1.0:
            self._buckets[caller] = (tokens, now)
            wait = math.ceil((1.0 - tokens) / self.rate)
            raise TooManyRequests(f"{caller} is over {self.rate:g} requests/s (bursts of {self.burst:g}); "
                                  f"retry in {wait} s", retry_after=wait)
        self._buckets[caller] = (tokens - 1.0, now)
        if len(self._buckets) > MAX_CALLERS:
            self._forget_idle(now)

    def _forget_idle(self, now: float) -> None:
        full = [caller for caller, (tokens, then) in self._buckets.items()
                if tokens + (now - then) * self.rate >= self.burst]
        for caller in full:
            del self._buckets[caller]
