"""Helpers for the emulator's own tests: a controllable clock and a module-scoped server on it."""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
from PIL import Image

from pixmake.emulator import EmulatorConfig, EmulatorServer

__all__ = ["KEY", "Env", "FakeClock", "png_bytes", "png_size", "serve_env"]

KEY = "sk-emulator-test-SECRET-0123456789"
START = 1760000000.0


class FakeClock:
    """A clock that only moves when told to."""

    def __init__(self, now: float = START) -> None:
        """Start at ``now`` (Unix seconds)."""
        self.now = now

    def __call__(self) -> float:
        """The current fake time."""
        return self.now

    def advance(self, seconds: float) -> None:
        """Move forward."""
        self.now += seconds


@dataclass
class Env:
    """One test's view: the server, its fake clock and a client authenticated with :data:`KEY`."""

    server: EmulatorServer
    clock: FakeClock
    client: httpx.Client

    def configure(self, **knobs: object) -> Env:
        """Reset state and set knobs (on top of 40 s tasks and no rate limits); returns self."""
        base: dict[str, object] = {"latency": 40.0, "submit_rps": None, "query_rps": None}
        self.server.emulator.reset(EmulatorConfig(**(base | knobs)))  # type: ignore[arg-type]
        self.clock.now = START
        return self

    def submit(self, **body: object) -> httpx.Response:
        """POST a gpt-4o-image submit with ``body`` over the defaults."""
        payload: dict[str, object] = {"model": "gpt-4o-image", "prompt": "a lighthouse at dusk"} | body
        return self.client.post("/v1/images/generations", json=payload)

    def status(self, task_id: str) -> httpx.Response:
        """GET a task's status."""
        return self.client.get(f"/v1/images/generations/{task_id}")


def serve_env() -> Iterator[tuple[EmulatorServer, FakeClock]]:
    """Run one server on a fake clock (wrap in a module-scoped fixture)."""
    clock = FakeClock()
    with EmulatorServer(clock=clock) as server:
        yield server, clock


def png_bytes(size: tuple[int, int] = (8, 8), fmt: str = "PNG") -> bytes:
    """A small real image in ``fmt``."""
    buffer = io.BytesIO()
    Image.new("RGB", size, (10, 20, 30)).save(buffer, format=fmt)
    return buffer.getvalue()


def png_size(data: bytes) -> tuple[int, int]:
    """Pixel size of an encoded image."""
    with Image.open(io.BytesIO(data)) as image:
        return image.size


@pytest.fixture(scope="module")
def _served() -> Iterator[tuple[EmulatorServer, FakeClock]]:
    yield from serve_env()


@pytest.fixture
def env(_served: tuple[EmulatorServer, FakeClock]) -> Iterator[Env]:
    """A reset emulator (40 s tasks, no rate limits) on a frozen clock, with a client."""
    server, clock = _served
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {KEY}"}, timeout=5) as client:
        environment = Env(server, clock, client)
        environment.configure()
        yield environment
