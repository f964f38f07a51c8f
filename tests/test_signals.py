"""Ctrl-C, and SIGTERM (a CI runner cancelling the job, ``kill PID``) whatever SIGINT's disposition, stop a build
cleanly: finished targets locked, in-flight paid tasks journaled for the next build, which pays for nothing twice.

A background job of a non-interactive shell, and some CI runners, start pixmake with SIGINT ignored. Then
asyncio installs no Ctrl-C handler of its own for the build, and SIGTERM must still cancel the build as
Ctrl-C would: finished targets locked, in-flight paid tasks journaled for the next build, one line on
stderr, exit 143, no traceback.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from conftest import run_cli
from pixmake.emulator import EmulatorConfig, EmulatorServer
from pixmake.lockfile import parse_lock
from test_crash import _environ, _journal_records, _paid_and_unlocked, _resume_until_done
from test_execute_faults import assert_paid_once_and_complete, make_manifest

TERMINATED = "pixmake: terminated; finished targets are locked, in-flight tasks resume next build"
INTERRUPTED = "pixmake: interrupted; finished targets are locked, in-flight tasks resume next build"


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # as `pixmake build &` in a non-interactive shell starts it


def _start(
    root: Path, server: EmulatorServer, log: Path, setup: Callable[[], None] | None, *, ci: bool = False
) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "pixmake", "-C", str(root), "build"]
    env = {**_environ(server), **({"CI": "true"} if ci else {})}
    with log.open("ab") as out:
        return subprocess.Popen(command, env=env, stdout=out, stderr=out, preexec_fn=setup)


@pytest.mark.parametrize(
    ("sent", "setup", "code", "last_line"),
    [
        (signal.SIGINT, None, 130, INTERRUPTED),
        (signal.SIGTERM, None, 143, TERMINATED),
        (signal.SIGTERM, _ignore_sigint, 143, TERMINATED),
        # A CI runner cancelling the job: the journal of what was paid must outlive the runner (the CI review).
        (signal.SIGTERM, None, 143, TERMINATED + " if .pixmake/ is saved for it (README: In CI)"),
    ],
    ids=["ctrl-c", "sigterm", "sigterm-sigint-ignored", "sigterm-in-ci"],
)
def test_a_signal_mid_build_keeps_finished_targets_and_resume_pays_nothing_twice(
    sent: signal.Signals,
    setup: Callable[[], None] | None,
    code: int,
    last_line: str,
    emulator: EmulatorServer,
    tmp_path: Path,
) -> None:
    emulator.emulator.reset(EmulatorConfig(latency=0.2, submit_rps=None, query_rps=None))
    root = make_manifest(tmp_path / "p", 16, concurrency=4)
    log = tmp_path / "stopped.log"
    process = _start(root, emulator, log, setup, ci=last_line.endswith("(README: In CI)"))
    deadline = time.monotonic() + 30
    while len(list((root / "out").glob("*.png"))) < 3:  # some targets done
        assert time.monotonic() < deadline and process.poll() is None, log.read_text()
        time.sleep(0.01)
    accepted_earlier = {r["target"] for r in _journal_records(root) if r["op"] == "task"}
    while not (fresh := _paid_and_unlocked(root) - accepted_earlier):  # a task accepted just now: 0.2 s to go
        assert time.monotonic() < deadline and process.poll() is None, log.read_text()
        time.sleep(0.002)
    process.send_signal(sent)
    assert process.wait(timeout=30) == code, log.read_text()
    text = log.read_text()
    assert "traceback" not in text.lower() and "exception" not in text.lower(), text
    lines = [line for line in text.splitlines() if line.strip()]
    assert lines[-1] == last_line and lines.count(last_line) == 1, text
    lock = parse_lock((root / "pixmake.lock").read_text())
    written = {p.stem.rsplit("-", 1)[0] if p.stem.count("-") else p.stem for p in (root / "out").glob("*.png")}
    assert set(lock.entries) == written and len(written) < 16
    assert fresh <= _paid_and_unlocked(root)  # the task in flight at the signal stays journaled, unlocked
    assert not fresh & set(lock.entries)
    paid_before = {e.task_id for e in emulator.emulator.ledger.entries}
    journaled = {r["task_id"] for r in _journal_records(root) if r["op"] == "task" and r["target"] in fresh}
    assert journaled and journaled <= paid_before
    _resume_until_done(root, emulator, log)
    assert_paid_once_and_complete(root, emulator, 16)
    assert paid_before <= {e.task_id for e in emulator.emulator.ledger.entries}


@pytest.mark.parametrize(
    ("command", "said"),
    [
        (("plan",), "pixmake: interrupted"),
        (("build", "--emulator"), "pixmake: interrupted; finished targets are locked"),
    ],
)
def test_an_interrupt_says_what_it_leaves_only_where_there_is_something(
    command: tuple[str, ...], said: str, examples_copy: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A plan has no tasks in flight, and the tasks of build --emulator die with its emulator."""
    from pixmake import api

    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(api, command[0], interrupted)
    outcome = run_cli("-C", str(examples_copy), *command)
    assert outcome.exit_code == 130 and outcome.stderr.splitlines()[-1] == said
