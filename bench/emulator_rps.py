"""How many requests per second the emulator sustains for a submit + poll (+ download) mix.

Starts an :class:`EmulatorServer` (rate limits off, 50 ms tasks), then runs 64 concurrent
``httpx.AsyncClient`` workers for a few seconds. Each worker submits a task, polls it every 10 ms until it
completes, and downloads its first image (one of 16 prompts, so the render cache is exercised as in a
real build that re-fetches). Prints requests/s and the share of wall time spent rendering PNGs.

Usage: ``PYTHONPATH=src python bench/emulator_rps.py [--seconds 5] [--workers 64] [--no-download]``.
The server runs in a thread of this process, so client and server share one GIL: the figure is a floor.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field

import httpx

from pixmake.emulator import EmulatorConfig, EmulatorServer
from pixmake.emulator.render import render_stats

__all__ = ["BenchResult", "main", "run"]

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


async def _worker(client: httpx.AsyncClient, index: int, deadline: float, result: BenchResult, download: bool) -> None:
    count = 0
    while time.perf_counter() < deadline:
        prompt = _PROMPTS[(index + count) % len(_PROMPTS)]
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


async def run(url: str, *, workers: int, seconds: float, download: bool) -> BenchResult:
    """Drive the server at ``url`` with ``workers`` concurrent clients for ``seconds``."""
    result = BenchResult()
    limits = httpx.Limits(max_connections=workers, max_keepalive_connections=workers)
    headers = {"Authorization": "Bearer sk-bench"}
    before = render_stats()
    async with httpx.AsyncClient(base_url=url, headers=headers, limits=limits, timeout=30) as client:
        started = time.perf_counter()
        deadline = started + seconds
        await asyncio.gather(*(_worker(client, i, deadline, result, download) for i in range(workers)))
        result.seconds = time.perf_counter() - started
    after = render_stats()
    result.render_seconds = after.seconds - before.seconds
    result.renders = after.renders - before.renders
    return result


def main() -> None:
    """Parse arguments, run the benchmark and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--workers", type=int, default=64)
    parser.add_argument("--no-download", dest="download", action="store_false")
    args = parser.parse_args()
    config = EmulatorConfig(submit_rps=None, query_rps=None, latency=0.05)
    with EmulatorServer(config) as server:
        result = asyncio.run(run(server.url, workers=args.workers, seconds=args.seconds, download=args.download))
        ledger_images = server.emulator.ledger.charged_images
    rps = result.requests / result.seconds
    print(f"emulator: {result.requests} requests in {result.seconds:.2f} s = {rps:,.0f} req/s")
    print(f"  mix: {dict(result.by_kind)}; tasks charged: {ledger_images}")
    share = result.render_seconds / result.seconds
    print(f"  PNG rendering: {result.renders} renders, {result.render_seconds:.3f} s = {share:.1%} of wall time")


if __name__ == "__main__":
    main()
