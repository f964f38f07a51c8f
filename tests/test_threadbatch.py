"""ThreadBatcher: blocking work in a worker thread, requests close in time sharing one trip."""

from __future__ import annotations

import threading

import anyio
import pytest

from pixmake.threadbatch import ThreadBatcher


def test_requests_within_the_window_share_one_trip_and_each_gets_its_own_answer() -> None:
    batcher = ThreadBatcher(window=0.05)
    results: dict[int, object] = {}
    loop_thread = threading.get_ident()

    def work(i: int) -> tuple[int, bool]:
        if i == 3:
            raise ValueError("three")
        return i * i, threading.get_ident() != loop_thread

    async def call(i: int) -> None:
        try:
            results[i] = await batcher.run(lambda: work(i))
        except ValueError as error:
            results[i] = error

    async def main() -> None:
        async with anyio.create_task_group() as group:
            for i in range(6):
                group.start_soon(call, i)

    anyio.run(main)
    assert batcher.trips == 1
    assert {i: r for i, r in results.items() if i != 3} == {i: (i * i, True) for i in (0, 1, 2, 4, 5)}
    assert isinstance(results[3], ValueError) and str(results[3]) == "three"


def test_a_request_after_the_trip_left_gets_a_trip_of_its_own() -> None:
    batcher = ThreadBatcher(window=0.01)

    async def main() -> list[int]:
        first = await batcher.run(lambda: 1)
        second = await batcher.run(lambda: 2)
        return [first, second]

    assert anyio.run(main) == [1, 2]
    assert batcher.trips == 2


def test_the_work_runs_even_when_its_caller_is_cancelled_while_waiting() -> None:
    batcher = ThreadBatcher(window=0.05)
    ran = threading.Event()

    async def main() -> None:
        with anyio.move_on_after(0.01):
            await batcher.run(ran.set)
        empty: dict[str, int] = {}
        with pytest.raises(KeyError):
            await batcher.run(lambda: empty["missing"])  # the next caller is served normally

    anyio.run(main)
    assert ran.is_set()
