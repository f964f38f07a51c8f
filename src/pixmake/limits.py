"""Pacing for provider calls: token buckets for rate, an adaptive (AIMD) limiter for concurrency.

Shell. Submits and queries get separate buckets, as the provider meters them separately
(``shared/toapis-api.md`` §4.2). Concurrency is a capacity limiter whose size follows AIMD, as TCP's
congestion window does: a run of 429s halves it, and each window of successes adds one back, up to
the configured ``concurrency``. Clocks and sleeps are injectable so tests need not wait.
"""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from types import TracebackType

import anyio

__all__ = ["AdaptiveLimiter", "AdaptiveLimiterStatistics", "RateLimiter", "RateLimiterStatistics"]


@dataclass(frozen=True, slots=True)
class RateLimiterStatistics:
    """How a rate limiter has been used."""

    rate: float
    burst: float
    acquired: int
    waited_seconds: float
    holds: int


class RateLimiter:
    """At most ``rate`` acquisitions per second on average, with bursts of up to ``burst``.

    Callers are served first come, first served. :meth:`hold` pauses every caller until a moment (a
    ``Retry-After`` the provider sent applies to the whole key, not just the request that got it).
    """

    def __init__(
        self,
        rate: float,
        *,
        burst: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
    ) -> None:
        if not rate > 0:
            raise ValueError(f"rate must be positive, not {rate!r}")
        self.rate = float(rate)  # floats in JSON statistics whatever was passed: one type for typed readers
        self.burst = float(max(1.0, burst))
        self._clock = clock
        self._sleep = sleep
        self._tokens = self.burst
        self._stamp = clock()
        self._lock = anyio.Lock()
        self._acquired = 0
        self._waited = 0.0
        self._holds = 0
        self._held_until = -math.inf

    def hold(self, seconds: float) -> None:
        """Give no token to anyone for ``seconds`` from now (extends, never shortens, a hold)."""
        until = self._clock() + max(0.0, seconds)
        if until > self._held_until:
            self._held_until = until
            self._holds += 1

    async def acquire(self) -> None:
        """Wait until a token is available, then take it (first come, first served)."""
        async with self._lock:
            while (now := self._clock()) < self._held_until:
                wait = self._held_until - now
                self._waited += wait
                await self._sleep(wait)
            self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
            self._stamp = now
            if self._tokens < 1.0:
                # Sleep exactly until the token is due, then take it (re-reading a clock coarser than the
                # wait could otherwise spin forever).
                wait = (1.0 - self._tokens) / self.rate
                self._waited += wait
                await self._sleep(wait)
                self._tokens, self._stamp = 1.0, max(self._clock(), now + wait)
            self._tokens -= 1.0
            self._acquired += 1

    def statistics(self) -> RateLimiterStatistics:
        """Usage figures."""
        return RateLimiterStatistics(self.rate, self.burst, self._acquired, self._waited, self._holds)


@dataclass(frozen=True, slots=True)
class AdaptiveLimiterStatistics:
    """The adaptive limiter's current size and history."""

    limit: int
    maximum: int
    borrowed: int
    waiting: int
    decreases: int
    increases: int
    lowest: int


class AdaptiveLimiter:
    """A capacity limiter whose size moves by AIMD: halved by a run of 429s, +1 per success window.

    ``run`` consecutive rate-limit signals (with no success between) halve the limit, never below 1;
    the run then starts over. ``window`` successes (default: the current limit, i.e. about one round of
    every slot) make a window, which adds one slot back, never above ``maximum``, when at most a third
    of its calls were rate limited: scattered 429s do not reset the count (a steady 30 % of 429s held
    40 slots at 2 to 5: ten successes in a row were too rare), and a window of as many 429s as
    successes (a bucket answered at twice its rate) earns nothing. ``on_change`` is called with the
    new limit whenever it moves (the executor turns it into an event).
    """

    def __init__(
        self,
        maximum: int,
        *,
        run: int = 3,
        window: int | None = None,
        on_change: Callable[[int], None] | None = None,
    ) -> None:
        if maximum < 1 or run < 1:
            raise ValueError("maximum and run must be at least 1")
        self.maximum = maximum
        self._run_length = run
        self._window = window
        self._on_change = on_change
        self._limiter = anyio.CapacityLimiter(maximum)
        self._rate_limited_run = 0
        self._successes = 0
        self._limited = 0  # rate-limit signals in the current window
        self._decreases = 0
        self._increases = 0
        self._lowest = maximum

    @property
    def limit(self) -> int:
        """How many holders are allowed at once right now."""
        return int(self._limiter.total_tokens)

    def _set(self, limit: int) -> None:
        if limit != self.limit:
            self._limiter.total_tokens = limit
            self._lowest = min(self._lowest, limit)
            if self._on_change is not None:
                self._on_change(limit)

    def rate_limited(self) -> None:
        """The provider said "slow down" (429 or 503 rate_limit_unavailable)."""
        self._rate_limited_run += 1
        self._limited += 1
        if self._rate_limited_run >= self._run_length:
            self._rate_limited_run = 0
            if self.limit > 1:
                self._decreases += 1
                self._successes = self._limited = 0  # a new window at the new limit
                self._set(max(1, self.limit // 2))

    def succeeded(self) -> None:
        """A provider call went through without being rate limited."""
        self._rate_limited_run = 0
        self._successes += 1
        if self._successes >= (self._window or self.limit):
            earned = 2 * self._limited <= self._successes and self.limit < self.maximum
            self._successes = self._limited = 0
            if earned:
                self._increases += 1
                self._set(self.limit + 1)

    async def __aenter__(self) -> None:
        await self._limiter.acquire()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._limiter.release()

    def statistics(self) -> AdaptiveLimiterStatistics:
        """Current limit, holders, waiters and how often the limit moved."""
        stats = self._limiter.statistics()
        return AdaptiveLimiterStatistics(
            limit=self.limit,
            maximum=self.maximum,
            borrowed=stats.borrowed_tokens,
            waiting=stats.tasks_waiting,
            decreases=self._decreases,
            increases=self._increases,
            lowest=self._lowest,
        )
