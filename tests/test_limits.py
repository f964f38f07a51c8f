"""Pacing: the token bucket (with a fake clock, so nothing really waits) and the AIMD capacity limiter."""

from __future__ import annotations

import json

import anyio
import anyio.lowlevel
import pytest

from pixmake.limits import AdaptiveLimiter, RateLimiter

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    """Run each async test on both backends."""
    return str(request.param)


class FakeClock:
    """A clock that only moves when something sleeps on it."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds
        await anyio.lowlevel.checkpoint()


async def test_bucket_allows_a_burst_then_paces_at_the_rate() -> None:
    clock = FakeClock()
    bucket = RateLimiter(5.0, burst=10, clock=clock, sleep=clock.sleep)
    for _ in range(10):
        await bucket.acquire()
    assert clock.now == 1000.0  # the burst is free
    for _ in range(20):
        await bucket.acquire()
    assert clock.now - 1000.0 == pytest.approx(20 / 5.0)
    stats = bucket.statistics()
    assert stats.acquired == 30 and stats.waited_seconds == pytest.approx(4.0)


async def test_bucket_rate_over_a_long_run_never_exceeds_rate_plus_burst() -> None:
    clock = FakeClock()
    bucket = RateLimiter(2.0, burst=3, clock=clock, sleep=clock.sleep)
    stamps = []
    for _ in range(100):
        await bucket.acquire()
        stamps.append(clock.now)
    for i, stamp in enumerate(stamps):
        window = [s for s in stamps[i:] if s < stamp + 10.0]
        assert len(window) <= 2.0 * 10.0 + 3


async def test_hold_pauses_everyone_until_it_passes() -> None:
    clock = FakeClock()
    bucket = RateLimiter(100.0, burst=100, clock=clock, sleep=clock.sleep)
    bucket.hold(2.5)
    bucket.hold(1.0)  # a shorter hold never shortens the longer one
    await bucket.acquire()
    assert clock.now == pytest.approx(1002.5)
    assert bucket.statistics().holds == 1


async def test_concurrent_acquirers_are_served_in_order() -> None:
    clock = FakeClock()
    bucket = RateLimiter(1.0, burst=1, clock=clock, sleep=clock.sleep)
    order: list[int] = []

    async def take(i: int) -> None:
        await bucket.acquire()
        order.append(i)

    async with anyio.create_task_group() as group:
        for i in range(5):
            group.start_soon(take, i)
            await anyio.lowlevel.checkpoint()
    assert order == [0, 1, 2, 3, 4]
    assert clock.now == pytest.approx(1004.0)


def test_rate_must_be_positive() -> None:
    with pytest.raises(ValueError):
        RateLimiter(0.0)


# --- AIMD --------------------------------------------------------------------------------------------


def test_a_run_of_429s_halves_the_limit_and_successes_bring_it_back_one_by_one() -> None:
    changes: list[int] = []
    limiter = AdaptiveLimiter(16, run=3, on_change=changes.append)
    limiter.rate_limited()
    limiter.rate_limited()
    assert limiter.limit == 16  # two in a row is not yet a run
    limiter.rate_limited()
    assert limiter.limit == 8
    for _ in range(3):
        limiter.rate_limited()
    assert limiter.limit == 4
    for _ in range(4):  # one window = the current limit's worth of successes
        limiter.succeeded()
    assert limiter.limit == 5
    for _ in range(5 + 6 + 7 + 8 + 9 + 10 + 11 + 12 + 13 + 14 + 15):
        limiter.succeeded()
    assert limiter.limit == 16
    for _ in range(100):
        limiter.succeeded()
    assert limiter.limit == 16  # never above the configured maximum
    assert changes[:3] == [8, 4, 5] and changes[-1] == 16
    stats = limiter.statistics()
    assert (stats.decreases, stats.increases, stats.lowest, stats.maximum) == (2, 12, 4, 16)


def test_a_success_breaks_a_run() -> None:
    limiter = AdaptiveLimiter(8, run=3)
    for _ in range(10):
        limiter.rate_limited()
        limiter.rate_limited()
        limiter.succeeded()
    assert limiter.limit == 8


def test_scattered_429s_do_not_keep_the_limit_from_coming_back() -> None:
    """The review (a long build): under a steady 30 % of 429s, a window needed its successes in a row, so
    40 slots stayed at 2 to 5 and throughput collapsed. Successes count since the limit last moved."""
    limiter = AdaptiveLimiter(16, run=3)
    for _ in range(3):
        limiter.rate_limited()
    assert limiter.limit == 8
    for _ in range(10):  # 30 successes, a 429 after every first one of three: never a run
        limiter.succeeded()
        limiter.rate_limited()
        limiter.succeeded()
        limiter.succeeded()
    assert limiter.limit == 11  # windows of 8, 9 and 10 successes
    for _ in range(3):
        limiter.rate_limited()
    assert limiter.limit == 5  # a new window
    for _ in range(1000):  # a bucket answered at twice its rate: as many 429s as successes, never three in a row
        limiter.succeeded()
        limiter.rate_limited()
    assert limiter.limit == 5  # no window earned a slot


def test_the_limit_never_drops_below_one() -> None:
    limiter = AdaptiveLimiter(4, run=1)
    for _ in range(20):
        limiter.rate_limited()
    assert limiter.limit == 1 and limiter.statistics().decreases == 2


async def test_the_limit_bounds_holders_at_once() -> None:
    limiter = AdaptiveLimiter(4, run=1)
    limiter.rate_limited()  # 4 -> 2
    inside = 0
    peak = 0

    async def hold() -> None:
        nonlocal inside, peak
        async with limiter:
            inside += 1
            peak = max(peak, inside)
            await anyio.sleep(0.001)
            inside -= 1

    async with anyio.create_task_group() as group:
        for _ in range(10):
            group.start_soon(hold)
    assert peak == 2
    stats = limiter.statistics()
    assert stats.borrowed == 0 and stats.waiting == 0


def test_statistics_are_floats_whatever_the_rate_and_burst_were_given_as() -> None:
    """``build --json`` prints them: a typed reader (Go, serde) must see one type, not 500 here and 10.0 there."""
    stats = RateLimiter(1000, burst=500).statistics()
    assert json.dumps([stats.rate, stats.burst]) == "[1000.0, 500.0]"
