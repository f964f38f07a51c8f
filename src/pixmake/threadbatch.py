"""Blocking disk work in a worker thread, several requests per trip.

Shell. A trip to a worker thread costs far more CPU than a small write (thread wake-ups and GIL
hand-offs: about 0.8 ms per trip on the CI machine, measured with ``bench/throughput.py``), so
requests that arrive within ``window`` seconds of each other share one trip, run one after another.
Each caller gets its own result or exception. Use it for work that can wait ``window`` seconds: a
submit's journal fsync cannot (it holds a provider slot), a finished target's files can.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar

import anyio

__all__ = ["ThreadBatcher"]

T = TypeVar("T")


class _Request(Generic[T]):
    __slots__ = ("done", "error", "fn", "ran", "value")

    def __init__(self, fn: Callable[[], T]) -> None:
        self.fn = fn
        self.done = anyio.Event()
        self.ran = False
        self.value: T | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.value = self.fn()
        except Exception as error:  # handed to its caller
            self.error = error
        self.ran = True


def _run_all(batch: list[_Request[Any]]) -> None:
    for request in batch:
        request.run()


class ThreadBatcher:
    """Runs callables in a worker thread, batching those that arrive within ``window`` seconds."""

    def __init__(self, window: float, limiter: anyio.CapacityLimiter | None = None) -> None:
        self.window = window
        self.limiter = limiter
        self.trips = 0  # for tests and benchmarks
        self._waiting: list[_Request[Any]] = []
        self._gathering = False

    async def run(self, fn: Callable[[], T]) -> T:
        """``fn()`` in a worker thread; its result, or its exception raised here.

        ``fn`` runs even if the caller is cancelled while it waits (the trip is shielded), so callers
        whose work must not be half done shield themselves as well.
        """
        request = _Request(fn)
        self._waiting.append(request)
        if not self._gathering:  # nobody is gathering a trip: lead one
            with anyio.CancelScope(shield=True):
                await self._lead()
        await request.done.wait()
        if request.error is not None:
            raise request.error
        return request.value  # type: ignore[return-value]

    async def _lead(self) -> None:
        self._gathering = True
        try:
            await anyio.sleep(self.window)
        finally:
            batch, self._waiting, self._gathering = self._waiting, [], False
        await self._trip(batch)

    async def _trip(self, batch: list[_Request[Any]]) -> None:
        self.trips += 1
        try:
            await anyio.to_thread.run_sync(_run_all, batch, limiter=self.limiter)
        except BaseException as error:
            for request in batch:
                if not request.ran:
                    request.error = error
            raise
        finally:
            for request in batch:
                request.done.set()
