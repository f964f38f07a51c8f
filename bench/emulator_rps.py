"""How many requests per second the emulator sustains for a submit + poll (+ download) mix.

Starts an :class:`EmulatorServer` (rate limits off, 50 ms tasks) in this process, then runs 64 concurrent
workers, each with its own ``httpx.AsyncClient``, for a few seconds. Each worker submits a task, polls it
every 10 ms until it completes, and downloads its first image (one of 16 prompts, so the render cache is
exercised as in a real build that re-fetches; ``--distinct-prompts`` gives every task its own prompt, so
every download is a fresh 1024² render). Prints requests/s and the share of the server's wall time spent
rendering PNGs.

The workers run in a child process: sharing the server's GIL would measure the client (httpx needs more CPU
per request than the emulator does) and the convoy between two busy threads, not the server. Each worker
has its own client because httpcore's pool scans all its connections for every request, which is
quadratic at 64 concurrent requests on one client.

Usage: ``PYTHONPATH=src python bench/emulator_rps.py [--seconds 5] [--workers 64] [--no-download]
[--distinct-prompts]``.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import ssl
import time
from collections import Counter
from dataclasses import dataclass, field
from multiprocessing.queues import Queue

import httpx

from pixmake.emulator import EmulatorConfig, EmulatorServer
from pixmake.emulator.render import render_stats

__all__ = ["BenchResult", "main", "run"]

_SSL = ssl.create_default_context()  # one context for all clients: building one per client costs ~20 ms
_PROMPTS = tuple(f"benchmark prompt {i}: a lighthouse on a cliff at dusk" for i in range(16))


@dataclass(slots=True)
class BenchResult:
    """Counts from one benchmark run."""

    seconds: float = 0.0
    by_kind: Counter[str] = field(default_factory=Counter)
    render_seconds: float = 0.0
    renders: int = 0

    @property
    def requests(self) -> int:
        """All requests made."""
        return sum(self.by_kind.values())


async def _worker(url: str, index: int, deadline: float, result: BenchResult, download: bool, distinct: bool) -> None:
    headers = {"Authorization": "Bearer sk-bench"}
    async with httpx.AsyncClient(base_url=url, headers=headers, verify=_SSL, timeout=30) as client:
        await _loop(client, index, deadline, result, download, distinct)


async def _loop(
    client: httpx.AsyncClient, index: int, deadline: float, result: BenchResult, download: bool, distinct: bool
) -> None:
    count = 0
    while time.perf_counter() < deadline:
        prompt = _PROMPTS[(index + count) % len(_PROMPTS)]
        if distinct:
            prompt = f"{prompt} (worker {index}, task {count}, {time.perf_counter_ns()})"
        count += 1
        submitted = await client.post("/v1/images/generations", json={"model": "gpt-4o-image", "prompt": prompt})
        submitted.raise_for_status()
        result.by_kind["submit"] += 1
        task_id = submitted.json()["id"]
        while True:
            await asyncio.sleep(0.01)
            status = (await client.get(f"/v1/images/generations/{task_id}")).json()
            result.by_kind["poll"] += 1
            if status["status"] == "completed":
                break
        if download:
            (await client.get(status["result"]["data"][0]["url"])).raise_for_status()
            result.by_kind["download"] += 1


async def run(url: str, *, workers: int, seconds: float, download: bool, distinct: bool = False) -> BenchResult:
    """Drive the server at ``url`` with ``workers`` concurrent clients for ``seconds``."""
    result = BenchResult()
    started = time.perf_counter()
    deadline = started + seconds
    await asyncio.gather(*(_worker(url, i, deadline, result, download, distinct) for i in range(workers)))
    result.seconds = time.perf_counter() - started
    return result


def _child(url: str, workers: int, seconds: float, download: bool, distinct: bool, queue: Queue[BenchResult]) -> None:
    queue.put(asyncio.run(run(url, workers=workers, seconds=seconds, download=download, distinct=distinct)))


def _run_in_children(
    url: str, workers: int, processes: int, seconds: float, download: bool, distinct: bool
) -> BenchResult:
    context = multiprocessing.get_context("spawn")
    queue: Queue[BenchResult] = context.Queue()
    shares = [workers // processes + (1 if i < workers % processes else 0) for i in range(processes)]
    args = [(url, share, seconds, download, distinct, queue) for share in shares]
    children = [context.Process(target=_child, args=arguments) for arguments in args]
    for child in children:
        child.start()
    parts = [queue.get(timeout=seconds + 120) for _ in children]
    for child in children:
        child.join()
    total = BenchResult(seconds=max(part.seconds for part in parts))
    for part in parts:
        total.by_kind.update(part.by_kind)
    return total


def main() -> None:
    """Parse arguments, run the benchmark and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--workers", type=int, default=64)
    parser.add_argument("--processes", type=int, default=2, help="client processes sharing the workers")
    parser.add_argument("--no-download", dest="download", action="store_false")
    parser.add_argument("--distinct-prompts", action="store_true", help="a new prompt per task: every download renders")
    args = parser.parse_args()
    config = EmulatorConfig(submit_rps=None, query_rps=None, latency=0.05)
    with EmulatorServer(config) as server:
        before = render_stats()
        result = _run_in_children(
            server.url, args.workers, args.processes, args.seconds, args.download, args.distinct_prompts
        )
        after = render_stats()
        ledger_images = server.emulator.ledger.charged_images
    result.render_seconds = after.seconds - before.seconds
    result.renders = after.renders - before.renders
    rps = result.requests / result.seconds
    print(f"emulator: {result.requests} requests in {result.seconds:.2f} s = {rps:,.0f} req/s")
    print(f"  mix: {dict(result.by_kind)}; tasks charged: {ledger_images}")
    share = result.render_seconds / result.seconds
    print(f"  PNG rendering: {result.renders} renders, {result.render_seconds:.3f} s = {share:.1%} of wall time")


if __name__ == "__main__":
    main()
