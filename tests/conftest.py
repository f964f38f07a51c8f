"""Shared fixtures: a clean environment, a real emulator on 127.0.0.1, and a project factory; for the
emulator's own tests, a module-scoped emulator on a controllable clock (``env``)."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from click.testing import CliRunner
from PIL import Image

import pixmake
from pixmake.emulator import EmulatorConfig, EmulatorServer

REPO = Path(__file__).resolve().parent.parent
PACKAGE_ROOT = Path(pixmake.__path__[0]).resolve().parent
"""Where the pixmake under test lives (src/ in a checkout, site-packages after ``pip install .``):
subprocesses get it on PYTHONPATH so that they run the very same code as the test process."""
EXAMPLES = REPO / "examples"
TEST_KEY = "sk-test-0123456789abcdef-SECRET"


@pytest.fixture(autouse=True)
def clean_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    """A developer's own key, proxy or pixmake settings must not change any result; nor a CI system's
    ``CI`` variable (what pixmake says when a build stops depends on it)."""
    import os

    for name in list(os.environ):
        if name.startswith(("PIXMAKE_", "TOAPIS_")) or name.lower().endswith("_proxy") or name == "CI":
            monkeypatch.delenv(name)


@pytest.fixture(scope="session", autouse=True)
def key_never_written(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """After the session: the test API key is in no file any test left behind (outputs, logs, journals, locks)."""
    yield
    leaks = [
        path
        for path in tmp_path_factory.getbasetemp().rglob("*")
        if path.is_file() and not path.is_symlink() and TEST_KEY.encode() in path.read_bytes()
    ]
    assert leaks == [], f"the API key was written to {leaks[:5]}"


@pytest.fixture(scope="session")
def emulator_server() -> Iterator[EmulatorServer]:
    """One real emulator for the session, on a free port."""
    with EmulatorServer() as server:
        yield server


@pytest.fixture
def emulator(emulator_server: EmulatorServer) -> Iterator[EmulatorServer]:
    """The session emulator, reset (state and knobs) for this test; rate limits off unless a test sets them."""
    emulator_server.emulator.reset(EmulatorConfig(latency=0.02, submit_rps=None, query_rps=None))
    yield emulator_server


@pytest.fixture
def provider_env(monkeypatch: pytest.MonkeyPatch, emulator: EmulatorServer) -> EmulatorServer:
    """Point pixmake at the session emulator through the documented environment variables."""
    monkeypatch.setenv("PIXMAKE_BASE_URL", emulator.url)
    monkeypatch.setenv("TOAPIS_API_KEY", TEST_KEY)
    monkeypatch.setenv("PIXMAKE_POLL_INTERVAL", "0.01")
    return emulator


@pytest.fixture
def closed_port() -> int:
    """A port on 127.0.0.1 that was just bound and closed: nothing listens there (a connection is refused)."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def git(root: Path, *args: str) -> None:
    """Run git in ``root`` as a test's own: an identity, no signing, no outer repository's GIT_ variables."""
    identity = ["-c", "user.name=pixmake tests", "-c", "user.email=tests@pixmake.invalid", "-c", "commit.gpgsign=false"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}  # never an outer repository's
    subprocess.run(["git", *identity, *args], cwd=root, check=True, capture_output=True, env=env)


def png_of_size(width: int, height: int) -> bytes:
    """A PNG whose header says ``width`` × ``height`` RGBA pixels but holds none: a decompression bomb in
    a few bytes (only decoding it fails)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


def write_png(
    path: Path, size: tuple[int, int] = (64, 64), color: tuple[int, ...] = (200, 30, 30), mode: str = "RGB"
) -> Path:
    """A small real PNG."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, color).save(path)
    return path


@pytest.fixture
def make_project(tmp_path: Path) -> Callable[..., Path]:
    """Write a project into tmp_path: a manifest from a dict (or text) plus named files."""

    def make(manifest: Mapping[str, Any] | str, files: Mapping[str, bytes] | None = None) -> Path:
        root = tmp_path / "project"
        root.mkdir(exist_ok=True)
        text = manifest if isinstance(manifest, str) else yaml.safe_dump(dict(manifest), sort_keys=False)
        (root / "pixmake.yaml").write_text(text)
        for name, data in (files or {}).items():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).write_bytes(data)
        return root

    return make


@pytest.fixture
def examples_copy(tmp_path: Path) -> Path:
    """A private copy of examples/ without any earlier build's outputs."""
    target = tmp_path / "examples"
    shutil.copytree(EXAMPLES, target, ignore=shutil.ignore_patterns("assets", "pixmake.lock", ".pixmake"))
    return target


@dataclass(frozen=True)
class CliOutcome:
    """What one CLI run printed and returned."""

    exit_code: int
    stdout: str
    stderr: str


def run_cli(*args: str) -> CliOutcome:
    """Run ``pixmake ARGS`` in-process through the same funnel (``cli.main``) as the console script."""
    from pixmake.cli import main

    code = 0
    with CliRunner().isolation() as (out, err, _):
        try:
            main(list(args))
        except SystemExit as done:
            code = done.code if isinstance(done.code, int) else 1
    return CliOutcome(code, out.getvalue().decode(), err.getvalue().decode())


# --- the emulator's own tests: one server per module on a fake clock -------------------------------------

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


__all__ = [
    "EXAMPLES",
    "KEY",
    "PACKAGE_ROOT",
    "REPO",
    "TEST_KEY",
    "CliOutcome",
    "Env",
    "FakeClock",
    "png_bytes",
    "png_size",
    "run_cli",
    "serve_env",
    "write_png",
]


def journal_submit(
    root: Path, target: str, cbid: str, *, emulator: bool = False, sent_at: float | None = None, over: str | None = "*"
) -> None:
    """What a build killed right after journaling a submit for ``target``'s current inputs leaves (``over``:
    the key of its lock entry then, None for none; by default unsaid, as an earlier pixmake's journal)."""
    from pixmake import api
    from pixmake.journal import Journal

    project = api.open_project(root)
    [action] = [a for a in api.plan(project).plan.actions if a.name == target]
    assert action.key is not None
    journal = Journal(project.journal)
    journal.open()
    journal.submitting(target, action.key, cbid, emulator=emulator, sent_at=sent_at, over=over)
    journal.close()
