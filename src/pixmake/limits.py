"""Pacing for provider calls: a token-bucket rate limiter over anyio.

Shell. Submits and queries get separate buckets, as the provider meters them separately
(``shared/toapis-api.md`` §4.2). The clock and sleep are injectable so tests need not wait.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import anyio

__all__ = ["RateLimiter", "RateLimiterStatistics"]


@dataclass(frozen=True, slots=True)
class RateLimiterStatistics:
    """How a rate limiter has been used."""

    rate: float
    burst: float
    acquired: int
    waited_seconds: float


class RateLimiter:
    """At most ``rate`` acquisitions per second on average, with bursts of up to ``burst``."""

    def __init__(
        self,
        rate: float,
        *,
        burst: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
    ) -> None:
        self.rate = rate
        self.burst = max(1.0, burst)
        self._clock = clock
        self._sleep = sleep
        self._tokens = self.burst
        self._stamp = clock()
        self._lock = anyio.Lock()
        self._acquired = 0
        self._waited = 0.0

    async def acquire(self) -> None:
        """Wait until a token is available, then take it (first come, first served)."""
        async with self._lock:
            now = self._clock()
            self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
            self._stamp = now
            if self._tokens < 1.0:
                wait = (1.0 - self._tokens) / self.rate
                self._waited += wait
                await self._sleep(wait)
                self._tokens = 1.0
                self._stamp = self._clock()
            self._tokens -= 1.0
            self._acquired += 1

    def statistics(self) -> RateLimiterStatistics:
        """Usage figures."""
        return RateLimiterStatistics(self.rate, self.burst, self._acquired, self._waited)
