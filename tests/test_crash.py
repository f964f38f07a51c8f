"""Crash safety: ``python -m pixmake build`` killed with SIGKILL at random moments, or stopped with Ctrl-C.

A kill moment is an event, not a stretch of wall time: the build is killed once its journal holds ``k`` new
records (``k`` drawn from the seeded rng; 0 lands in interpreter start-up, before any submit; small ``k``
mid-submits, larger ones mid-downloads and after some targets are locked), plus a random delay of at most
0.15 s so that kills also fall between records: mid-request, mid-download, mid-write.

After every kill the lockfile parses; after resuming, all images are present and the emulator's ledger
shows that nothing was paid twice: the journal lets the next build resume paid tasks instead of paying
again. The subprocess output is kept in log files under the test's tmp_path, where the session-wide key
scan (``conftest.py``) looks for the API key.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from conftest import PACKAGE_ROOT, TEST_KEY
from pixmake.emulator import EmulatorConfig, EmulatorServer
from pixmake.lockfile import parse_lock
from test_execute_faults import assert_paid_once_and_complete, make_manifest

TARGETS = 40


def _environ(server: EmulatorServer) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIXMAKE_", "TOAPIS_"))}
    env |= {
        "PIXMAKE_BASE_URL": server.url,
        "TOAPIS_API_KEY": TEST_KEY,
        "PIXMAKE_POLL_INTERVAL": "0.01",
        "PIXMAKE_BACKOFF_BASE": "0.001",
        "PIXMAKE_LOOKUP_GRACE": "0",
        "PIXMAKE_RETRY_WINDOW": "0",  # give up after the attempts, as the tests count them
        "PIXMAKE_MAX_RETRY_AFTER": "0.01",
        "PIXMAKE_QUERY_RATE": "5000",
        "PYTHONPATH": os.pathsep.join([str(PACKAGE_ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    return env


def _start(root: Path, server: EmulatorServer, log: Path) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "pixmake", "-C", str(root), "build"]
    with log.open("ab") as out:
        return subprocess.Popen(command, env=_environ(server), stdout=out, stderr=out)


def _journal_lines(root: Path) -> list[bytes]:
    """The journal's complete lines, in order (a line being appended right now is left out)."""
    try:
        data = (root / ".pixmake" / "journal.jsonl").read_bytes()
    except FileNotFoundError:
        return []
    return [line for line in data.split(b"\n")[:-1] if line.strip()]


def _journal_records(root: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in _journal_lines(root)]


def _wait_for_records(root: Path, process: subprocess.Popen[bytes], k: int, log: Path) -> None:
    """Return once this build appended ``k`` journal records, or it exited.

    Records are counted as distinct lines seen, so the journal's rewrite at a fold (down to the pending
    submits, which keeps their lines as they were) neither adds to nor takes from the count.
    """
    seen = set(_journal_lines(root))
    before = len(seen)
    deadline = time.monotonic() + 60
    while len(seen) - before < k and process.poll() is None:
        assert time.monotonic() < deadline, log.read_text()[-3000:]
        time.sleep(0.002)
        seen.update(_journal_lines(root))


def _locked(root: Path) -> int:
    """How many targets are locked so far, in pixmake.lock and in the journal's records."""
    lock = root / "pixmake.lock"
    entries = set(parse_lock(lock.read_text(encoding="utf-8")).entries) if lock.exists() else set()
    return len(entries | {r["target"] for r in _journal_records(root) if r["op"] == "lock"})


def _assert_lock_parses(root: Path) -> None:
    lock = root / "pixmake.lock"
    if lock.exists():
        parse_lock(lock.read_text(encoding="utf-8"))


def _resume_until_done(root: Path, server: EmulatorServer, log: Path, *, max_builds: int = 6) -> None:
    for _ in range(max_builds):
        process = _start(root, server, log)
        assert process.wait(timeout=120) in (0, 1), log.read_text()
        _assert_lock_parses(root)
        if process.returncode == 0:
            return
    raise AssertionError(f"not done after {max_builds} builds:\n{log.read_text()[-3000:]}")


CASES = [pytest.param(seed, marks=[pytest.mark.slow] if seed >= 3 else []) for seed in range(20)]


@pytest.mark.parametrize("seed", CASES)
def test_sigkill_at_random_moments_then_resume(
    seed: int, emulator: EmulatorServer, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    if request.node.get_closest_marker("slow") and "slow" not in (request.config.option.markexpr or ""):
        pytest.skip("soak case: run with -m slow")
    rng = random.Random(seed)
    knobs: dict[str, Any] = {"p_drop_after_submit": 0.1, "p_500": 0.05}
    knobs |= {"p_truncated_download": 0.1, "p_task_failed": 0.05}
    emulator.emulator.reset(
        EmulatorConfig(latency=0.03, latency_jitter=0.07, submit_rps=None, query_rps=None, seed=seed, **knobs)
    )
    root = make_manifest(tmp_path / "p", TARGETS, concurrency=8, twins=6)  # twins: one key, two targets
    log = tmp_path / "build.log"
    _kill_at_random_moments(root, emulator, log, rng, TARGETS)
    _resume_until_done(root, emulator, log)
    assert_paid_once_and_complete(root, emulator, TARGETS)


def _kill_at_random_moments(root: Path, server: EmulatorServer, log: Path, rng: random.Random, left: int) -> None:
    """Start and SIGKILL a build one to three times, at moments drawn from ``rng`` (``left``: targets to build)."""
    for _ in range(rng.choice((1, 2, 3))):
        # Each target left appends about three records (submit, task, lock), plus retries' own.
        k = 0 if rng.random() < 0.25 else rng.randint(1, 3 * max(1, left - _locked(root)))
        delay = rng.uniform(0.0, 0.15)  # with k=0: still in interpreter start-up (~0.4 s), before any work
        process = _start(root, server, log)
        _wait_for_records(root, process, k, log)
        time.sleep(delay)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
        _assert_lock_parses(root)


RAISED_CASES = [pytest.param(seed, marks=[pytest.mark.slow] if seed >= 1 else []) for seed in range(6)]


@pytest.mark.parametrize("seed", RAISED_CASES)
def test_sigkill_while_raising_n_then_resume_pays_once_for_each_new_image(
    seed: int, emulator: EmulatorServer, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Built with n 1 (two targets with n 2), then n doubled: killed at random, every target ends with its
    earlier images first and one paid submit for the rest, never two."""
    if request.node.get_closest_marker("slow") and "slow" not in (request.config.option.markexpr or ""):
        pytest.skip("soak case: run with -m slow")
    rng = random.Random(seed)
    emulator.emulator.reset(EmulatorConfig(latency=0.03, submit_rps=None, query_rps=None, seed=seed))
    root = make_manifest(tmp_path / "p", TARGETS, concurrency=8, every_ref=0)
    log = tmp_path / "build.log"
    _resume_until_done(root, emulator, log)
    before = parse_lock((root / "pixmake.lock").read_text(encoding="utf-8")).entries
    manifest = root / "pixmake.yaml"
    document = yaml.safe_load(manifest.read_text())
    for target in document["targets"].values():
        target["n"] = 2 * target.get("n", 1)
    manifest.write_text(yaml.safe_dump(document, sort_keys=False))
    knobs: dict[str, Any] = {"p_drop_after_submit": 0.1, "p_500": 0.05, "p_truncated_download": 0.1}
    emulator.emulator.reset(EmulatorConfig(latency=0.03, latency_jitter=0.07, submit_rps=None, query_rps=None, **knobs))
    _kill_at_random_moments(root, emulator, log, rng, TARGETS)
    _resume_until_done(root, emulator, log)
    ledger = emulator.emulator.ledger
    assert sorted(e.client_business_id or "" for e in ledger.entries) == sorted(
        {e.client_business_id or "" for e in ledger.entries}
    )
    assert ledger.net_images == sum(entry.n for entry in before.values())  # the new images, each paid once
    after = parse_lock((root / "pixmake.lock").read_text(encoding="utf-8")).entries
    for name, entry in after.items():
        kept = [o.sha256 for o in entry.outputs[: before[name].n]]
        assert (entry.n, kept) == (2 * before[name].n, [o.sha256 for o in before[name].outputs]), name
        assert not {o.sha256 for o in entry.outputs[before[name].n :]} & set(kept), name  # new ones, not copies
        assert [e.n for e in ledger.entries if e.task_id == entry.task_id] == [before[name].n], name


def _paid_and_unlocked(root: Path) -> set[str]:
    """Targets whose journaled task was accepted (paid) and that are not locked yet: in flight."""
    in_flight: set[str] = set()
    for record in _journal_records(root):
        if record["op"] == "task":
            in_flight.add(record["target"])
        elif record["op"] in ("lock", "drop"):
            in_flight.discard(record["target"])
    return in_flight
