"""The executor's contract against the emulator: failures are values, fatal errors stop everything at once,
references are uploaded once, one build at a time.

Every test talks HTTP to the session emulator; its knobs stage the awkward cases (``p_short_result``: a task
completed with fewer images than ``n``; ``upload_ttl`` and unknown upload URLs: a reference that vanished).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
import yaml
from PIL import Image

from conftest import TEST_KEY, git, journal_submit, run_cli, write_png
from pixmake import api
from pixmake.cli import ExitCode
from pixmake.emulator import EmulatorConfig, EmulatorServer
from pixmake.emulator.config import ExpiredResult
from pixmake.execute import (
    BuildResult,
    BuildStarted,
    ConcurrencyChanged,
    RetryScheduled,
    TargetFailed,
    TargetFinished,
    TargetPolled,
    TargetSubmitted,
    _Recorder,
)
from pixmake.journal import Journal
from pixmake.lockfile import Lock, LockedOutput, LockEntry, lock_pieces, parse_lock
from pixmake.memo import file_stat
from pixmake.plan import ActionKind, Builder
from pixmake.report import RecordingReporter
from pixmake.settings import Secret, resolve
from pixmake.store import project_lock, sha256_bytes
from pixmake.uploads import UploadCache
from test_execute_faults import (
    assert_paid_once_and_complete,
    fast_settings,
    make_manifest,
    paid_by_a_killed_build,
    write_manifest,
)


def _manifest(root: Path, targets: dict[str, dict[str, Any]], *, concurrency: int = 4) -> Path:
    return write_manifest(root, targets, concurrency=concurrency)


@pytest.fixture
def fast_env(monkeypatch: pytest.MonkeyPatch, provider_env: EmulatorServer) -> EmulatorServer:
    """provider_env plus no real waiting on retries."""
    monkeypatch.setenv("PIXMAKE_BACKOFF_BASE", "0.001")
    monkeypatch.setenv("PIXMAKE_LOOKUP_GRACE", "0")
    monkeypatch.setenv("PIXMAKE_RETRY_WINDOW", "0")  # give up after the attempts, as the tests count them
    monkeypatch.setenv("PIXMAKE_MAX_RETRY_AFTER", "0.01")
    monkeypatch.setenv("PIXMAKE_QUERY_RATE", "5000")
    return provider_env


def plan_lines(root: Path) -> list[str]:
    return run_cli("-C", str(root), "plan").stdout.splitlines()


def _error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("pixmake: error:")]


# --- fatal: stop everything at once, in one line ---------------------------------------------------------


def test_a_refused_key_cancels_the_build_at_once_with_one_line(fast_env: EmulatorServer, tmp_path: Path) -> None:
    fast_env.emulator.reset(EmulatorConfig(latency=0.02, submit_rps=None, query_rps=None, api_key="sk-another-key"))
    root = make_manifest(tmp_path / "p", 40, concurrency=4, every_ref=0)
    outcome = run_cli("-C", str(root), "build")
    assert outcome.exit_code == 3
    assert _error_lines(outcome.stderr) == ["pixmake: error: HTTP 401: API key refused: Invalid API key"]
    assert "Traceback" not in outcome.stderr
    assert len(fast_env.emulator.submits()) <= 4  # only what was already in flight
    assert fast_env.emulator.ledger.charged_images == 0


@pytest.mark.parametrize("knobs", [{"api_key": "sk-another-key"}, {"quota_images": 0}], ids=["401", "402"])
def test_a_refused_submit_leaves_nothing_to_resume(
    knobs: dict[str, Any], fast_env: EmulatorServer, tmp_path: Path
) -> None:
    """The provider answered "no": nothing was created, so the next plan must not count it as paid."""
    fast_env.emulator.reset(EmulatorConfig(latency=0.02, submit_rps=None, query_rps=None, **knobs))
    root = _manifest(tmp_path / "p", {"hero": {"prompt": "a blue mug", "out": "hero.png"}})
    assert run_cli("-C", str(root), "build").exit_code == (3 if "api_key" in knobs else 1)
    plan = run_cli("-C", str(root), "plan")
    assert "Plan: 1 to create; 1 image to generate" in plan.stdout and "resume" not in plan.stdout, plan.stdout


def test_submits_in_flight_when_the_key_is_refused_are_looked_up_not_paid_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 401 for one submit says nothing of the others in flight: a gateway may have passed them on, and
    charged, before the key was revoked (or an edge filter answered 403 to one). They stay journaled."""
    import http.server
    import threading
    import time

    answered, first_come = threading.Event(), threading.Lock()
    in_flight: list[str] = []  # prompts of the submits answered late

    class Refusing(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
            with first_come:
                later = answered.is_set()
                answered.set()
            if later:
                in_flight.append(body["prompt"])
            time.sleep(1.5 if later else 0.3)  # the others are sent meanwhile, and in flight at the refusal
            body = b'{"error": {"code": "invalid_api_key", "message": "Invalid API key"}}'
            self.send_response(401)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Refusing)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.setenv("PIXMAKE_BASE_URL", f"http://127.0.0.1:{server.server_address[1]}")
        monkeypatch.setenv("TOAPIS_API_KEY", "sk-revoked")
        targets = {f"t{i}": {"prompt": f"poster {i}", "out": f"t{i}.png"} for i in range(4)}
        root = _manifest(tmp_path / "p", targets, concurrency=4)
        assert run_cli("-C", str(root), "build").exit_code == ExitCode.USER_ERROR
    finally:
        server.shutdown()
        server.server_close()
    plan = run_cli("-C", str(root), "plan").stdout.splitlines()
    assert in_flight, "no submit was in flight when the key was refused"
    for line in plan[:4]:
        name = line.split()[2].rstrip(":")
        sent = f"poster {name[1:]}" in in_flight  # else its 401 said no task was made, or it was never sent
        assert line.startswith("> resume ") if sent else line == f"+ create     {name}: not in the lockfile", plan


def test_a_submit_the_plan_could_not_count_is_not_sent_past_max_images(
    fast_env: EmulatorServer, tmp_path: Path
) -> None:
    """A build killed after journaling a submit the provider never received: the next plan resumes it
    (0 images to pay), but collecting it means paying again. --max-images caps that, and a target the
    plan counted (poster, later in the manifest) is never the one refused for it."""
    targets: dict[str, dict[str, Any]] = {
        "hero": {"prompt": "a blue mug", "out": "hero.png"},
        "poster": {"prompt": "a poster", "n": 2, "out": "poster.png"},
    }
    root = _manifest(tmp_path / "p", targets, concurrency=1)
    journal_submit(root, "hero", "pixmake-never-sent-0")
    planned = run_cli("-C", str(root), "plan")
    assert "1 to resume" in planned.stdout and "a build is running" not in planned.stderr
    if os.name == "posix":
        with subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]) as build:
            (root / ".pixmake" / "build.pid").write_text(f"{build.pid}\n")  # as a build running now leaves it
            running = run_cli("-C", str(root), "plan")
            explained = run_cli("-C", str(root), "explain", "hero")
            build.kill()
        note = (
            f"pixmake: note: a build is running in this project (pid {build.pid}): "
            "the tasks shown as 'resume' are its own, in flight"
        )
        assert running.stderr.splitlines() == [note] and explained.stderr.splitlines() == [note]
        (root / ".pixmake" / "build.pid").unlink()
    capped = run_cli("-C", str(root), "build", "--max-images", "2")  # the plan: 1 to resume, poster's 2 images
    assert capped.exit_code == 1, capped.stderr
    failed = [line for line in capped.stderr.splitlines() if line.startswith("  failed: ")]
    why = (
        "not submitted: its interrupted build's task was not found, and paying for 1 image again would pass "
        "--max-images 2 with what the plan pays for"
    )
    assert failed == [f"  failed: hero: {why}"]
    assert fast_env.emulator.ledger.charged_images == 2 and (root / "poster-2.png").is_file()
    assert run_cli("-C", str(root), "build", "--max-images", "1").exit_code == 0  # now a plain create
    assert fast_env.emulator.ledger.charged_images == 3 and (root / "hero.png").is_file()


def test_an_emulator_build_leaves_a_task_paid_at_the_provider_for_a_real_build(
    fast_env: EmulatorServer, tmp_path: Path
) -> None:
    """`build --emulator` would look the provider's task up on the emulator, find nothing and drop it."""
    targets = {"hero": {"prompt": "a blue mug", "out": "hero.png"}, "logo": {"prompt": "a logo", "out": "logo.png"}}
    root = _manifest(tmp_path / "p", targets)
    journal_submit(root, "hero", "pixmake-paid-at-the-provider")
    emulated = run_cli("-C", str(root), "build", "--emulator")
    assert emulated.exit_code == 1, emulated.stderr
    failed = [line for line in emulated.stderr.splitlines() if line.startswith("  failed: ")]
    why = (
        "a task an interrupted build paid for at the provider is journaled for it; the emulator cannot "
        "collect it: build without --emulator"
    )
    assert failed == [f"  failed: hero: {why}"] and (root / "logo.png").is_file()
    _, pending = api.load_lock(api.open_project(root))
    assert pending["hero"].client_business_id == "pixmake-paid-at-the-provider"  # still there to collect
    real = api.build(api.open_project(root), fast_settings(api.open_project(root), fast_env))
    assert real.ok and real.statistics.lookups == 1  # the real build looks it up before paying


def test_an_interrupted_emulator_builds_task_is_never_looked_up_at_the_provider(
    fast_env: EmulatorServer, tmp_path: Path
) -> None:
    root = _manifest(tmp_path / "p", {"hero": {"prompt": "a blue mug", "out": "hero.png"}})
    journal_submit(root, "hero", "pixmake-on-the-emulator", emulator=True)
    planned = run_cli("-C", str(root), "plan").stdout.splitlines()  # not "1 to resume (already paid)"
    assert planned == [
        "+ create     hero: not in the lockfile",
        "x drop       hero: task pixmake-on-the-emulator of an interrupted build --emulator is dropped: "
        "the emulator that ran it stopped with it",
        "Plan: 1 to create, 1 interrupted task to drop (emulator stopped); 1 image to generate",
    ]
    capped = run_cli("-C", str(root), "build", "--max-images", "0")
    assert (
        capped.exit_code == ExitCode.USER_ERROR
        and "would pay for 1 image (hero 1), more than its cap of 0" in capped.stderr
    )
    real = api.build(api.open_project(root), fast_settings(api.open_project(root), fast_env))
    assert real.ok and real.statistics.lookups == 0 and real.statistics.polls >= 1
    assert not [r for r in fast_env.emulator.requests if "pixmake-on-the-emulator" in r.path]
    journal_submit(root, "hero", "pixmake-on-the-emulator-2", emulator=True)  # nor at the emulator of a new build
    (root / "hero.png").unlink()
    emulated = run_cli("-C", str(root), "build", "--emulator")
    assert emulated.exit_code == ExitCode.OK and "1 interrupted task dropped" in emulated.stderr


def test_a_real_build_replaces_the_emulators_placeholders_and_an_emulator_build_keeps_real_images(
    fast_env: EmulatorServer, tmp_path: Path
) -> None:
    """Trying a real project with `build --emulator` first must not leave placeholders locked as its images."""
    targets: dict[str, dict[str, Any]] = {
        "hero": {"prompt": "a blue mug", "n": 2, "out": "hero.png"},
        "logo": {"prompt": "a logo", "out": "logo.png"},
        "poster": {"prompt": "a poster", "out": "poster.png"},
    }
    root = _manifest(tmp_path / "p", targets)
    project = api.open_project(root)
    assert run_cli("-C", str(root), "build", "--emulator").exit_code == ExitCode.OK
    assert all(entry.emulator for entry in parse_lock((root / "pixmake.lock").read_text()).entries.values())
    assert run_cli("-C", str(root), "build", "--emulator").exit_code == ExitCode.OK  # nothing to do there
    write_png(root / "poster.png", (32, 32), (0, 200, 0))  # someone's own file over a placeholder
    planned = run_cli("-C", str(root), "plan", "--check")  # as --emulator builds it: kept, and said so
    assert planned.exit_code == ExitCode.OK  # what `build --emulator` would do: nothing
    assert planned.stdout.splitlines()[-1] == (
        "Plan: 1 edited, 2 unchanged; 0 images to generate; 2 targets hold placeholder images from "
        "build --emulator (plan -v lists them), which a build without --emulator regenerates (3 images)"
    )
    provider = run_cli("-C", str(root), "plan", "--provider", "--check")  # what the build below will do
    assert provider.exit_code == ExitCode.CHANGES and provider.stdout.splitlines()[:2] == [
        "~ regenerate hero: its locked images are placeholders from build --emulator",
        "~ regenerate logo: its locked images are placeholders from build --emulator",
    ]
    assert provider.stdout.splitlines()[-1] == "Plan: 2 to regenerate, 1 edited; 3 images to generate"
    real = api.build(project, fast_settings(project, fast_env))
    assert real.ok and sorted(real.generated) == ["hero", "logo"] and fast_env.emulator.ledger.charged_images == 3
    lock = parse_lock((root / "pixmake.lock").read_text())
    assert [name for name, entry in sorted(lock.entries.items()) if entry.emulator] == ["poster"]  # edited: kept
    hero = (root / "hero-1.png").read_bytes()
    assert lock.entries["hero"].outputs[0].sha256 == sha256_bytes(hero)
    assert run_cli("-C", str(root), "accept", "poster").exit_code == ExitCode.OK  # the user's file: theirs now
    assert not parse_lock((root / "pixmake.lock").read_text()).entries["poster"].emulator
    assert run_cli("-C", str(root), "plan", "--check").exit_code == ExitCode.OK
    (root / "hero-1.png").unlink()
    edit_manifest = yaml.safe_load((root / "pixmake.yaml").read_text())
    edit_manifest["targets"]["logo"]["prompt"] = "a new logo"
    (root / "pixmake.yaml").write_text(yaml.safe_dump(edit_manifest))
    assert run_cli("-C", str(root), "build", "--emulator").exit_code == ExitCode.OK
    lock = parse_lock((root / "pixmake.lock").read_text())
    assert (root / "hero-1.png").read_bytes() == hero and not lock.entries["hero"].emulator  # restored, still real
    assert lock.entries["logo"].emulator  # what the emulator made is marked as such
    again = api.build(project, fast_settings(project, fast_env))
    assert again.generated == ("logo",) and fast_env.emulator.ledger.charged_images == 4


def test_an_emulator_build_never_replaces_the_providers_images_for_the_current_inputs(
    fast_env: EmulatorServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A fresh clone (a lock, no images) or an explicit --replace: placeholders would cost the next real build."""
    targets = {"hero": {"prompt": "a blue mug", "out": "hero.png"}, "logo": {"prompt": "a logo", "out": "logo.png"}}
    root = _manifest(tmp_path / "p", targets)
    project = api.open_project(root)
    assert api.build(project, fast_settings(project, fast_env)).ok
    locked = (root / "pixmake.lock").read_bytes()
    (root / "hero.png").unlink()
    shutil.rmtree(root / ".pixmake")  # as in a fresh clone: the lock, not the images
    emulated = run_cli("-C", str(root), "build", "--emulator", "--replace", "logo")
    assert emulated.exit_code == ExitCode.FAILED
    why = (
        "its locked images come from the provider for these inputs; build --emulator does not replace them "
        "with placeholders: build without --emulator"
    )
    failed = [line for line in emulated.stderr.splitlines() if line.startswith("  failed: ")]
    assert failed == [f"  failed: hero: {why}", f"  failed: logo: {why}"]
    assert (root / "pixmake.lock").read_bytes() == locked and not (root / "hero.png").exists()
    monkeypatch.setenv("PIXMAKE_MAX_IMAGES", "0")  # a spend cap: the emulator spends nothing
    edited = yaml.safe_load((root / "pixmake.yaml").read_text())
    edited["targets"]["logo"]["prompt"] = "a new logo"
    (root / "pixmake.yaml").write_text(yaml.safe_dump(edited))
    assert run_cli("-C", str(root), "build", "--emulator", "logo").exit_code == ExitCode.OK  # new inputs: fine
    assert parse_lock((root / "pixmake.lock").read_text()).entries["logo"].emulator
    assert run_cli("-C", str(root), "build", "--emulator", "--max-images", "0", "--replace", "logo").exit_code == 3


def test_no_balance_stops_the_build_keeps_what_was_paid_and_a_top_up_resumes(
    fast_env: EmulatorServer, tmp_path: Path
) -> None:
    fast_env.emulator.reset(EmulatorConfig(latency=0.05, submit_rps=None, query_rps=None, quota_images=6))
    root = make_manifest(tmp_path / "p", 30, concurrency=3, every_ref=0)
    outcome = run_cli("-C", str(root), "build")
    assert outcome.exit_code == 1
    [line] = _error_lines(outcome.stderr)
    assert line.startswith("pixmake: error: HTTP 402: insufficient balance:")
    refused = [r for r in fast_env.emulator.submits() if r.status == 402]
    assert len(refused) <= 3  # the build stopped at the first 402 (others were already in flight)
    charged = fast_env.emulator.ledger.charged_images
    assert 0 < charged <= 6
    fast_env.emulator.reconfigure(EmulatorConfig(latency=0.05, submit_rps=None, query_rps=None))  # topped up
    assert run_cli("-C", str(root), "build").exit_code == 0
    assert_paid_once_and_complete(root, fast_env, 30)


def test_no_balance_said_in_a_failed_task_stops_the_build_as_a_402_does(
    fast_env: EmulatorServer, tmp_path: Path
) -> None:
    fast_env.emulator.reset(EmulatorConfig(latency=0.05, submit_rps=None, query_rps=None, p_task_no_balance=1.0))
    root = make_manifest(tmp_path / "p", 30, concurrency=3, every_ref=0)
    outcome = run_cli("-C", str(root), "build")
    assert outcome.exit_code == 1 and "Traceback" not in outcome.stderr
    [line] = _error_lines(outcome.stderr)
    assert line.startswith("pixmake: error: insufficient balance: task ") and "(insufficient_quota)" in line
    assert len(fast_env.emulator.submits()) <= 6  # not 30 submits each failing the same way
    fast_env.emulator.reconfigure(EmulatorConfig(latency=0.05, submit_rps=None, query_rps=None))  # topped up
    assert run_cli("-C", str(root), "build").exit_code == 0
    assert_paid_once_and_complete(root, fast_env, 30)


# --- per-target failures are values ------------------------------------------------------------------------


def test_failed_tasks_fail_their_targets_with_the_servers_message_and_the_rest_go_on(
    fast_env: EmulatorServer, tmp_path: Path
) -> None:
    fast_env.emulator.reset(EmulatorConfig(latency=0.02, submit_rps=None, query_rps=None, p_task_failed=0.4, seed=5))
    root = make_manifest(tmp_path / "p", 12, every_ref=0)
    outcome = run_cli("-C", str(root), "build")
    assert outcome.exit_code == 1
    failed_lines = [line for line in outcome.stderr.splitlines() if line.startswith("  failed: ")]
    refunded = [e for e in fast_env.emulator.ledger.entries if e.refunded]
    assert len(failed_lines) == len(refunded) > 0
    for line in failed_lines:
        assert "(generation_failed): call upstream API failed: upstream returned status 422" in line
    assert len(parse_lock((root / "pixmake.lock").read_text()).entries) == 12 - len(refunded)
    assert f"{len(refunded)} failed" in outcome.stderr
    fast_env.emulator.reconfigure(EmulatorConfig(latency=0.02, submit_rps=None, query_rps=None))
    assert run_cli("-C", str(root), "build").exit_code == 0
    assert_paid_once_and_complete(root, fast_env, 12)


def test_a_400_fails_that_target_with_the_servers_message(fast_env: EmulatorServer, tmp_path: Path) -> None:
    root = _manifest(
        tmp_path / "p",
        {
            "good": {"prompt": "a mug", "out": "good.png"},
            "bad": {"prompt": "a cup", "out": "bad.png", "params": {"metadata": "not an object"}},
        },
    )
    outcome = run_cli("-C", str(root), "build")
    assert outcome.exit_code == 1, outcome.stderr
    assert "  failed: bad: HTTP 400: The 'metadata' field must be an object." in outcome.stderr.splitlines()
    assert (root / "good.png").is_file() and not (root / "bad.png").exists()
    assert fast_env.emulator.ledger.charged_images == 1
    assert len(fast_env.emulator.submits()) == 2  # a 400 is not retried
    assert not (root / ".pixmake" / "journal.jsonl").read_text().strip()  # nothing left pending


def test_a_task_with_no_image_says_it_was_paid_for(emulator: EmulatorServer, tmp_path: Path) -> None:
    emulator.emulator.reset(EmulatorConfig(latency=0.01, submit_rps=None, query_rps=None, p_short_result=1.0))
    root = _manifest(tmp_path / "p", {"hero": {"prompt": "a mug", "out": "hero.png"}})
    project = api.open_project(root)
    [failure] = api.build(project, fast_settings(project, emulator)).failed
    assert failure.error.endswith("returned 0 images, expected 1; paid for all the same, and the next build pays again")
    assert emulator.emulator.ledger.net_images == 1


def test_a_task_with_more_images_than_asked_for_is_collected_with_its_first_n(
    emulator: EmulatorServer, tmp_path: Path
) -> None:
    """The review (the API's facts): nothing documents that a result holds exactly n images; a task with one
    more failed as "returned 2 images, expected 1", was dropped, and every build paid again."""
    emulator.emulator.reset(EmulatorConfig(latency=0.01, submit_rps=None, query_rps=None, p_long_result=1.0))
    root = _manifest(tmp_path / "p", {"pair": {"prompt": "two mugs", "n": 2, "out": "pair.png"}})
    project = api.open_project(root)
    result = api.build(project, fast_settings(project, emulator))
    assert result.ok, result.failed
    assert (root / "pair-1.png").is_file() and (root / "pair-2.png").is_file() and not (root / "pair-3.png").exists()
    assert len(parse_lock((root / "pixmake.lock").read_text()).entries["pair"].outputs) == 2
    assert emulator.emulator.ledger.charged_images == 2 and api.plan(project).plan.up_to_date


@pytest.mark.parametrize("killed_before_the_drop", [False, True], ids=["dropped", "killed-before-the-drop"])
def test_a_task_with_fewer_images_than_n_is_a_failed_attempt_whose_images_the_next_build_keeps(
    emulator: EmulatorServer, tmp_path: Path, killed_before_the_drop: bool
) -> None:
    """The short task was charged its n: its image is kept, and the next build pays for the other one only
    (a build killed after keeping it, with the task still journaled, collects it again and fails again)."""
    emulator.emulator.reset(EmulatorConfig(latency=0.01, submit_rps=None, query_rps=None, p_short_result=1.0))
    root = _manifest(tmp_path / "p", {"pair": {"prompt": "two mugs", "n": 2, "out": "pair.png"}})
    project = api.open_project(root)
    result = api.build(project, fast_settings(project, emulator))
    [failure] = result.failed
    assert failure.target == "pair" and failure.error.endswith(
        "returned 1 images, expected 2; the 1 image is kept: the next build pays for the other 1 only"
    )
    assert not (root / "pair-1.png").exists() and "pair" not in parse_lock((root / "pixmake.lock").read_text()).entries
    assert not (root / ".pixmake" / "journal.jsonl").read_text().strip()  # dropped: the next build submits again
    assert emulator.emulator.ledger.net_images == 2  # the short task was charged its n and not refunded
    [short] = emulator.emulator.ledger.entries
    emulator.emulator.reconfigure(EmulatorConfig(latency=0.01, submit_rps=None, query_rps=None))
    if killed_before_the_drop:  # the short task still journaled: collected again, never locked with its own image
        journal_submit(root, "pair", short.client_business_id or "")
        again = api.build(project, fast_settings(project, emulator))
        assert [f.error.split(" returned ")[1] for f in again.failed] == [
            "1 images, expected 2; the 1 image is kept: the next build pays for the other 1 only"
        ]
    (action,) = api.plan(project).plan.actions
    assert (action.kind.value, action.images) == ("create", 1)
    assert api.build(project, fast_settings(project, emulator)).ok
    assert [e.n for e in emulator.emulator.ledger.entries] == [2, 1]
    entry = parse_lock((root / "pixmake.lock").read_text()).entries["pair"]
    assert (entry.n, entry.task_id != short.task_id) == (2, True) and (root / "pair-2.png").is_file()


# --- the disk refuses a write: nothing paid is lost, no traceback --------------------------------------------


def test_an_output_that_cannot_be_written_fails_its_target_but_is_locked_and_restored_unpaid(
    fast_env: EmulatorServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The paid bytes are in the object cache before the write fails: the entry is locked all the same, so
    the next build restores the file for free, even once the result's link has expired."""
    import pixmake.execute
    import pixmake.store

    targets = {f"t{i}": {"prompt": f"mug {i}", "out": f"out/t{i}.png"} for i in range(6)}
    targets["t1"]["out"] = "blocked/t1.png"
    root = _manifest(tmp_path / "p", targets, concurrency=3)
    write = pixmake.store.atomic_write

    def blocked_meanwhile(path: Any, data: Any, **options: Any) -> None:
        if str(path).endswith("t1.png") and not (root / "blocked").exists():  # after validate said it was fine
            (root / "blocked").write_text("a file where t1's directory goes")
        write(path, data, **options)

    monkeypatch.setattr(pixmake.execute, "atomic_write", blocked_meanwhile)
    outcome = run_cli("-C", str(root), "build")
    assert outcome.exit_code == 1, outcome.stderr
    assert "Traceback" not in outcome.stderr
    failed = [line for line in outcome.stderr.splitlines() if line.startswith("  failed: ")]
    why = (
        "cannot write blocked/t1.png: Not a directory; the paid image is kept in .pixmake/objects and locked: "
        "the next build restores it"
    )
    assert failed == [f"  failed: t1: {why}"]
    assert sorted(parse_lock((root / "pixmake.lock").read_text()).entries) == [f"t{i}" for i in range(6)]
    assert fast_env.emulator.ledger.charged_images == 6
    monkeypatch.setattr(pixmake.execute, "atomic_write", write)
    (root / "blocked").unlink()
    config = fast_env.emulator.config
    fast_env.emulator.reconfigure(dataclasses.replace(config, result_ttl=0.0))  # its link has expired meanwhile
    again = run_cli("-C", str(root), "build")
    assert again.exit_code == 0, again.stderr
    assert "1 restored from cache" in again.stderr
    assert fast_env.emulator.ledger.charged_images == 6 and len(fast_env.emulator.submits()) == 6  # not paid again
    for target in targets.values():
        with Image.open(root / target["out"]) as image:
            image.verify()


def test_a_regenerated_output_that_cannot_be_written_leaves_no_older_image_behind(
    fast_env: EmulatorServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Locked with the new bytes, the path must not keep the old image (the plan would take it for an edit)."""
    import pixmake.execute
    import pixmake.store

    root = _manifest(tmp_path / "p", {"hero": {"prompt": "a blue mug", "n": 2, "out": "hero.png"}})
    project = api.open_project(root)
    assert api.build(project, fast_settings(project, fast_env)).ok
    edited = yaml.safe_load((root / "pixmake.yaml").read_text())
    edited["targets"]["hero"]["prompt"] = "a red mug"
    (root / "pixmake.yaml").write_text(yaml.safe_dump(edited))
    write = pixmake.store.atomic_write

    def refuse_hero_1(path: Any, data: Any, **options: Any) -> None:
        if str(path).endswith("hero-1.png"):
            raise PermissionError(13, "Permission denied")
        write(path, data, **options)

    monkeypatch.setattr(pixmake.execute, "atomic_write", refuse_hero_1)
    result = api.build(project, fast_settings(project, fast_env))
    [failure] = result.failed
    assert failure.error == (
        "cannot write hero-1.png: Permission denied; the paid image is kept in .pixmake/objects and locked: "
        "the next build restores it"
    )
    assert not (root / "hero-1.png").exists() and (root / "hero-2.png").is_file()
    monkeypatch.setattr(pixmake.execute, "atomic_write", write)
    assert plan_lines(root)[0] == "< restore    hero: output hero-1.png is missing"
    charged = fast_env.emulator.ledger.charged_images
    again = api.build(project, fast_settings(project, fast_env))
    assert again.ok and again.restored == ("hero",) and fast_env.emulator.ledger.charged_images == charged

    edited["targets"]["hero"]["prompt"] = "a green mug"  # and where the older file cannot be removed either
    (root / "pixmake.yaml").write_text(yaml.safe_dump(edited))
    unlink = os.unlink

    def keep_hero_1(path: Any, *args: Any, **options: Any) -> None:
        if str(path).endswith("hero-1.png"):
            raise PermissionError(13, "Permission denied")
        unlink(path, *args, **options)

    monkeypatch.setattr(pixmake.execute, "atomic_write", refuse_hero_1)
    monkeypatch.setattr(os, "unlink", keep_hero_1)
    third = api.build(project, fast_settings(project, fast_env))
    monkeypatch.setattr(os, "unlink", unlink)
    monkeypatch.setattr(pixmake.execute, "atomic_write", write)
    [failure] = third.failed
    assert failure.error == (
        "cannot write hero-1.png: Permission denied; the paid image is kept in .pixmake/objects and locked; "
        "an older file is still at hero-1.png: build --restore puts it in place"
    )
    assert api.load_lock(project)[1] == {}  # locked, not left to a task whose link may expire
    restored = api.build(project, fast_settings(project, fast_env), restore=True)
    assert restored.ok and restored.restored == ("hero",) and fast_env.emulator.ledger.charged_images == charged + 2


@pytest.mark.parametrize("expired_status", [410, 403, 404])
def test_a_result_that_expired_before_it_was_fetched_fails_only_its_target_and_is_submitted_again(
    expired_status: ExpiredResult, fast_env: EmulatorServer, tmp_path: Path
) -> None:
    """Signed result links often answer 403 once expired: that is the link, not the API key."""
    targets = {f"t{i}": {"prompt": f"mug {i}", "out": f"out/t{i}.png"} for i in range(3)}
    root = _manifest(tmp_path / "p", targets, concurrency=3)
    project = api.open_project(root)
    assert run_cli("-C", str(root), "build", "t0", "t2").exit_code == 0
    paid_by_a_killed_build(project, fast_settings(project, fast_env), "t1", "pixmake-t1-killed")
    config = fast_env.emulator.config
    fast_env.emulator.reconfigure(dataclasses.replace(config, result_ttl=0.0, expired_result_status=expired_status))
    again = run_cli("-C", str(root), "build")
    assert again.exit_code == 1, again.stderr
    assert _error_lines(again.stderr) == [] and "Traceback" not in again.stderr
    failed = [line for line in again.stderr.splitlines() if line.startswith("  failed: ")]
    gone = f"HTTP {expired_status}: result no longer available; the next build submits the target again"
    assert failed == [f"  failed: t1: {gone}"]
    assert fast_env.emulator.ledger.charged_images == 3
    asked = [r for r in fast_env.emulator.requests if r.path.startswith("/files/") and r.status == expired_status]
    assert len(asked) == 1  # a link past its end is not asked again (a 404 before it is: a CDN catching up)
    fast_env.emulator.reconfigure(config)
    third = run_cli("-C", str(root), "build")
    assert third.exit_code == 0, third.stderr
    assert fast_env.emulator.ledger.charged_images == 4  # t1 once more: its first result is gone for good
    with Image.open(root / "out" / "t1.png") as image:
        image.verify()


@pytest.mark.parametrize(
    ("knob", "answer"), [("p_403_download", "403: result refused: Forbidden"), ("p_404_download", "404: Not Found")]
)
def test_a_result_link_refused_before_it_expired_stays_journaled_and_the_next_build_collects_it_unpaid(
    knob: str, answer: str, fast_env: EmulatorServer, tmp_path: Path
) -> None:
    """A refusal (403) or a "not found" (404: a CDN not caught up yet) before the link's end is not its end."""
    fault: dict[str, Any] = {knob: 1.0}
    fast_env.emulator.reset(EmulatorConfig(latency=0.02, submit_rps=None, query_rps=None, **fault))
    root = _manifest(tmp_path / "p", {"hero": {"prompt": "a blue mug", "out": "hero.png"}})
    refused = run_cli("-C", str(root), "build")
    assert refused.exit_code == 1 and _error_lines(refused.stderr) == []
    failed = [line for line in refused.stderr.splitlines() if line.startswith("  failed: ")]
    why = f"HTTP {answer}; its task stays journaled and the next build fetches it again"
    way_out = f" (if that lasts: pixmake -C {root} forget hero, and the next build pays again)"
    assert failed == [f"  failed: hero: {why}{way_out}"]
    fast_env.emulator.reconfigure(EmulatorConfig(latency=0.02, submit_rps=None, query_rps=None))
    again = run_cli("-C", str(root), "build")
    assert again.exit_code == 0 and "1 resumed (already paid)" in again.stderr
    assert fast_env.emulator.ledger.charged_images == 1 and (root / "hero.png").is_file()


def test_an_unknown_submit_is_not_paid_again_where_lookups_by_business_id_find_nothing_at_all(
    emulator: EmulatorServer, tmp_path: Path
) -> None:
    """The review (the API's facts): only the Chinese docs document lookups by client_business_id. On a gateway
    that answers them all "not found", a submit answered 504 after it created its task was paid for again;
    a lookup of a task the build saw created tells it apart from a task that never was."""
    healthy = EmulatorConfig(latency=0.01, submit_rps=None, query_rps=None, lookup_by_business_id=False)
    emulator.emulator.reset(healthy)
    targets = {name: {"prompt": f"a {name} mug", "out": f"{name}.png"} for name in ("a", "b")}
    root = _manifest(tmp_path / "p", targets, concurrency=1)
    project = api.open_project(root)

    class GatewayDown(RecordingReporter):
        def emit(self, event: Any) -> None:
            super().emit(event)
            if isinstance(event, TargetSubmitted) and event.target == "a":  # b's submit creates a task, then 504s
                emulator.emulator.reconfigure(dataclasses.replace(healthy, p_504_after_submit=1.0))

    result = api.build(project, fast_settings(project, emulator), reporter=GatewayDown())
    [failure] = result.failed
    assert failure.target == "b" and "not paid for again, and stays journaled" in failure.error, failure.error
    assert emulator.emulator.ledger.charged_images == 2  # a's, and b's one submit
    assert (root / "a.png").is_file() and api.plan(project).plan.counts()[ActionKind.RESUME] == 1
    emulator.emulator.reconfigure(healthy)  # the next build has no task of its own to ask about: it remembers
    [again] = api.build(project, fast_settings(project, emulator)).failed
    assert again.target == "b" and "not paid for again" in again.error
    assert emulator.emulator.ledger.charged_images == 2
    assert run_cli("-C", str(root), "forget", "b").exit_code == 0  # the user checked: the way out pays once
    assert api.build(project, fast_settings(project, emulator)).ok
    assert emulator.emulator.ledger.charged_images == 3


def test_a_target_collects_the_task_its_inputs_were_paid_for_under_another_name_and_its_own_is_dropped(
    emulator: EmulatorServer, tmp_path: Path
) -> None:
    """The review: a (a green mug) and c (a red mug) were killed mid-build, paid; then a became a red mug and
    c a blue one. a collects c's task, a's own (a green mug: no target has it) is dropped, and c pays."""
    emulator.emulator.reset(EmulatorConfig(latency=0.01, submit_rps=None, query_rps=None))
    before = {"a": {"prompt": "a green mug", "out": "a.png"}, "c": {"prompt": "a red mug", "out": "c.png"}}
    root = _manifest(tmp_path / "p", before)
    project = api.open_project(root)
    for name in before:
        paid_by_a_killed_build(project, fast_settings(project, emulator), name, f"pixmake-{name}-killed")
    _manifest(root, {"a": {"prompt": "a red mug", "out": "a.png"}, "c": {"prompt": "a blue mug", "out": "c.png"}})
    lines = run_cli("-C", str(root), "plan").stdout.splitlines()
    dropped = "1 interrupted task to drop (inputs changed)"
    assert lines[-1] == f"Plan: 1 to create, 1 to resume (already paid), {dropped}; 1 image to generate", lines
    ambiguous = run_cli("-C", str(root), "forget", "a")  # the review: it dropped c's task, the one a collects
    assert ambiguous.exit_code == 3 and "has two journaled tasks" in ambiguous.stderr, ambiguous.stderr
    result = api.build(project, fast_settings(project, emulator))
    assert result.ok and result.resumed == ("a",) and result.generated == ("c",), result
    assert emulator.emulator.ledger.charged_images == 3  # the two killed submits, and c's blue mug
    assert api.load_lock(project)[1] == {} and api.plan(project).plan.up_to_date


def test_a_thumbnail_beside_its_variants_gets_their_first_image_and_only_the_variants_are_paid_for(
    emulator: EmulatorServer, tmp_path: Path
) -> None:
    emulator.emulator.reset(EmulatorConfig(latency=0.01, submit_rps=None, query_rps=None))
    targets: dict[str, dict[str, Any]] = {
        "thumb": {"prompt": "a red mug", "out": "thumb.png"},
        "variants": {"prompt": "a red mug", "n": 4, "out": "v.png"},
    }
    root = _manifest(tmp_path / "p", targets)
    project = api.open_project(root)
    result = api.build(project, fast_settings(project, emulator))
    assert result.ok and result.restored == ("thumb",) and emulator.emulator.ledger.charged_images == 4
    assert (root / "thumb.png").read_bytes() == (root / "v-1.png").read_bytes()
    lock = parse_lock((root / "pixmake.lock").read_text())
    assert lock.entries["thumb"].n == 1 and lock.entries["thumb"].outputs[0].path == "thumb.png"
    assert api.plan(project).plan.up_to_date


def _lookup_verdicts(root: Path) -> list[bool | None]:
    """What .pixmake/lookups.json says of each provider (and account) it knows: do lookups find a witness?"""
    return [said.get("work") for said in json.loads((root / ".pixmake" / "lookups.json").read_text()).values()]


def test_a_witness_of_another_account_is_not_asked_about(emulator: EmulatorServer, tmp_path: Path) -> None:
    """The review: a task created with another key is "not found" to this one (lookups are per account), and a
    killed build's submit that never arrived was failed as if lookups never found anything, again and again."""
    emulator.emulator.reset(EmulatorConfig(latency=0.01, submit_rps=None, query_rps=None))
    targets = {name: {"prompt": f"a {name} mug", "out": f"{name}.png"} for name in ("a", "b")}
    root = _manifest(tmp_path / "p", {"a": targets["a"]}, concurrency=1)
    project = api.open_project(root)
    assert api.build(project, fast_settings(project, emulator)).ok  # a's task: this key's witness
    _manifest(root, targets, concurrency=1)
    journal_submit(root, "b", "pixmake-never-arrived", sent_at=time.time() - 3600)
    other = dataclasses.replace(fast_settings(project, emulator), api_key=Secret("sk-another-account-key"))
    result = api.build(project, other)
    assert result.ok, result.failed
    assert emulator.emulator.ledger.charged_images == 2 and False not in _lookup_verdicts(root)


def test_a_killed_builds_submit_is_not_paid_again_where_lookups_find_nothing_though_nothing_was_created_yet(
    emulator: EmulatorServer, tmp_path: Path
) -> None:
    """The review: a build that starts by resuming a killed build's submit has created nothing to ask about;
    it asks about the task an earlier build kept as its witness (.pixmake/lookups.json)."""
    emulator.emulator.reset(EmulatorConfig(latency=0.01, submit_rps=None, query_rps=None, lookup_by_business_id=False))
    targets = {name: {"prompt": f"a {name} mug", "out": f"{name}.png"} for name in ("a", "b")}
    root = _manifest(tmp_path / "p", {"a": targets["a"]}, concurrency=1)
    project = api.open_project(root)
    assert api.build(project, fast_settings(project, emulator)).ok  # a's task is the witness
    _manifest(root, targets, concurrency=1)
    paid_by_a_killed_build(project, fast_settings(project, emulator), "b", "pixmake-b-killed")
    [failure] = api.build(project, fast_settings(project, emulator)).failed
    assert failure.target == "b" and "not paid for again, and stays journaled" in failure.error, failure.error
    assert emulator.emulator.ledger.charged_images == 2  # a's, and the killed build's b
    assert _lookup_verdicts(root) == [False]


def test_the_lookup_that_vouches_for_not_found_waits_out_a_gateway_that_stores_tasks_late(
    emulator: EmulatorServer, tmp_path: Path
) -> None:
    """b's submit of a killed build never arrived; a, built first, was created a moment ago and is not yet
    visible to a lookup (lookup_lag). Asked at once, a provider whose lookups work looked like one whose
    lookups never find anything, and b was never paid for: the check waits lookup_grace after a's submit."""
    emulator.emulator.reset(EmulatorConfig(latency=0.01, submit_rps=None, query_rps=None, lookup_lag=0.3))
    targets = {name: {"prompt": f"a {name} mug", "out": f"{name}.png"} for name in ("a", "b")}
    root = _manifest(tmp_path / "p", targets, concurrency=1)
    journal_submit(root, "b", "pixmake-never-arrived", sent_at=time.time() - 3600)
    project = api.open_project(root)
    result = api.build(project, fast_settings(project, emulator, lookup_grace=0.6))
    assert result.ok, result.failed
    assert emulator.emulator.ledger.charged_images == 2
    assert _lookup_verdicts(root) == [True]


def test_a_result_link_not_found_at_first_is_fetched_again_within_the_build(
    emulator: EmulatorServer, tmp_path: Path
) -> None:
    """The review (the API's facts): one 404 from a CDN edge not caught up yet failed the target at once."""
    emulator.emulator.reset(EmulatorConfig(latency=0.01, submit_rps=None, query_rps=None, p_404_download=0.4, seed=5))
    targets = {f"t{i}": {"prompt": f"mug {i}", "out": f"t{i}.png"} for i in range(4)}
    root = _manifest(tmp_path / "p", targets, concurrency=1)
    project = api.open_project(root)
    result = api.build(project, fast_settings(project, emulator))
    assert result.ok, result.failed
    downloads = [r for r in emulator.emulator.requests if r.path.startswith("/files/generated/")]
    assert len(downloads) > 4 and emulator.emulator.ledger.charged_images == 4


def test_a_result_link_not_found_at_first_is_fetched_again_for_a_task_an_older_pixmake_journaled(
    emulator: EmulatorServer, tmp_path: Path
) -> None:
    """The review: with no send time in the journal and no expiry in the status, one 404 from a CDN edge not
    caught up dropped the paid task at once; it is asked again first, as any 404 before the links' end."""
    emulator.emulator.reset(EmulatorConfig(latency=0.01, submit_rps=None, query_rps=None, result_times=False))
    root = _manifest(tmp_path / "p", {"hero": {"prompt": "a blue mug", "out": "hero.png"}})
    project = api.open_project(root)
    paid_by_a_killed_build(project, fast_settings(project, emulator), "hero", "pixmake-hero-older", timed=False)
    config = emulator.emulator.config
    emulator.emulator.reconfigure(dataclasses.replace(config, p_404_download=0.5, seed=1))
    result = api.build(project, fast_settings(project, emulator))
    assert result.ok and result.resumed == ("hero",), result.failed
    assert emulator.emulator.ledger.charged_images == 1


def test_a_result_link_not_found_with_no_expiry_said_stays_journaled_and_is_collected_unpaid(
    fast_env: EmulatorServer, tmp_path: Path
) -> None:
    """The review (the API's facts): with no expires_at in the status (the docs' top-level url shape), a 404
    dropped the paid task at once, and the next build paid again; the links last 24 hours from the submit."""
    faulty = EmulatorConfig(latency=0.02, submit_rps=None, query_rps=None, p_404_download=1.0, result_times=False)
    fast_env.emulator.reset(faulty)
    root = _manifest(tmp_path / "p", {"hero": {"prompt": "a blue mug", "out": "hero.png"}})
    refused = run_cli("-C", str(root), "build")
    assert refused.exit_code == 1 and "its task stays journaled and the next build fetches it again" in refused.stderr
    fast_env.emulator.reconfigure(dataclasses.replace(faulty, p_404_download=0.0))
    again = run_cli("-C", str(root), "build")
    assert again.exit_code == 0 and "1 resumed (already paid)" in again.stderr, again.stderr
    assert fast_env.emulator.ledger.charged_images == 1 and (root / "hero.png").is_file()


@pytest.mark.parametrize("window", [0.0, 30.0])
def test_a_paid_tasks_polls_ride_out_an_outage_longer_than_the_attempts_within_the_retry_window(
    window: float, emulator: EmulatorServer, tmp_path: Path
) -> None:
    """Every request fails for a second once the task is polled (a network down while a laptop wakes): with
    no window the poll gives up after its attempts (the task stays journaled), within one it goes on."""
    emulator.emulator.reset(EmulatorConfig(latency=1.0, submit_rps=None, query_rps=None))
    healthy = emulator.emulator.config
    root = _manifest(tmp_path / "p", {"hero": {"prompt": "a blue mug", "out": "hero.png"}})

    class Outage(RecordingReporter):
        def emit(self, event: Any) -> None:
            super().emit(event)
            if isinstance(event, TargetPolled) and not hasattr(self, "timer"):
                emulator.emulator.reconfigure(dataclasses.replace(healthy, p_500=1.0))
                self.timer = threading.Timer(1.0, emulator.emulator.reconfigure, (healthy,))
                self.timer.start()

    project = api.open_project(root)
    reporter = Outage()
    result = api.build(
        project, fast_settings(project, emulator, max_attempts=3, retry_window=window), reporter=reporter
    )
    reporter.timer.join()
    assert emulator.emulator.ledger.charged_images == 1
    if window:
        assert result.ok and (root / "hero.png").is_file()
    else:
        [failure] = result.failed
        assert "HTTP 500" in failure.error and api.plan(project).plan.counts()[ActionKind.RESUME] == 1


def test_an_outage_of_the_whole_provider_holds_the_build_for_one_retry_window_not_one_per_target(
    emulator: EmulatorServer, tmp_path: Path
) -> None:
    """Every request fails from a's first poll on, for good: a rides the outage out for the window and fails;
    b, after it, does not wait a window of its own (its lookup gives up after its attempts)."""
    emulator.emulator.reset(EmulatorConfig(latency=1.0, submit_rps=None, query_rps=None))
    healthy = emulator.emulator.config
    targets = {name: {"prompt": f"a {name} mug", "out": f"{name}.png"} for name in ("a", "b")}
    root = _manifest(tmp_path / "p", targets, concurrency=1)

    class Outage(RecordingReporter):
        def emit(self, event: Any) -> None:
            super().emit(event)
            if isinstance(event, TargetPolled) and event.target == "a":
                emulator.emulator.reconfigure(dataclasses.replace(healthy, p_500=1.0))

    project = api.open_project(root)
    reporter = Outage()
    result = api.build(project, fast_settings(project, emulator, max_attempts=2, retry_window=1.0), reporter=reporter)
    assert sorted(f.target for f in result.failed) == ["a", "b"]
    retries = [(e.target, e.operation) for e in reporter.events if isinstance(e, RetryScheduled)]
    assert retries.count(("a", "query")) > 2  # past its attempts, within the window
    assert retries.count(("b", "query")) == 1  # its attempts only: the outage had lasted the window already


def test_a_task_past_max_wait_fails_with_the_status_last_polled(emulator: EmulatorServer, tmp_path: Path) -> None:
    emulator.emulator.reset(EmulatorConfig(latency=5.0, queued_fraction=0.05, submit_rps=None, query_rps=None))
    root = _manifest(tmp_path / "p", {"hero": {"prompt": "a blue mug", "out": "hero.png"}})
    project = api.open_project(root)
    reporter = RecordingReporter()
    result = api.build(project, fast_settings(project, emulator, max_wait=1.0), reporter=reporter)
    [failure] = result.failed
    last = [e for e in reporter.events if isinstance(e, TargetPolled)][-1]
    assert last.status == "in_progress" and last.progress > 0  # not the submit's "queued"
    seen = f"{last.status} ({last.progress} %)"
    assert failure.error.endswith(f" still {seen} after 1 s; it stays journaled and the next build resumes it")


def _on_first_poll(then: Callable[[], None]) -> RecordingReporter:
    """A reporter that runs ``then`` once, on a build's first status poll (a pause, a server's fault)."""

    class FirstPoll(RecordingReporter):
        def emit(self, event: Any) -> None:
            super().emit(event)
            if isinstance(event, TargetPolled) and sum(isinstance(e, TargetPolled) for e in self.events) == 1:
                then()

    return FirstPoll()


def test_a_build_paused_past_max_wait_polls_once_more_before_failing(emulator: EmulatorServer, tmp_path: Path) -> None:
    """The review (a long build): SIGSTOPped (or a VM paused) past max_wait, a build failed tasks finished
    long before with "still queued", the status seen before the pause, without asking again."""
    emulator.emulator.reset(EmulatorConfig(latency=0.5, submit_rps=None, query_rps=None))
    root = _manifest(tmp_path / "p", {"hero": {"prompt": "a blue mug", "out": "hero.png"}})
    project = api.open_project(root)

    paused = _on_first_poll(lambda: time.sleep(1.5))  # the whole process stopped: no poll, no clock check
    result = api.build(project, fast_settings(project, emulator, max_wait=1.0), reporter=paused)
    assert result.ok, result.failed
    assert (root / "hero.png").exists()


def test_a_task_the_provider_loses_mid_build_says_the_next_build_pays_again_by_itself(
    emulator: EmulatorServer, tmp_path: Path
) -> None:
    """The review (a long build): an emulator restarted mid-build answered 404 to the polls, and the failure
    said "if that lasts: pixmake forget hero, and the next build pays again", as if nothing paid until then."""
    config = EmulatorConfig(latency=0.3, submit_rps=None, query_rps=None)
    emulator.emulator.reset(config)
    root = _manifest(tmp_path / "p", {"hero": {"prompt": "a blue mug", "out": "hero.png"}})
    project = api.open_project(root)

    class Restarted(RecordingReporter):
        def emit(self, event: Any) -> None:
            super().emit(event)
            if isinstance(event, TargetSubmitted):
                emulator.emulator.reset(config)  # every task forgotten

    result = api.build(project, fast_settings(project, emulator), reporter=Restarted())
    [failure] = result.failed
    assert "the provider no longer has task" in failure.error and "forget" not in failure.error
    assert [a.kind for a in api.plan(project).plan.actions] == [ActionKind.RESUME]  # still journaled
    again = api.build(project, fast_settings(project, emulator))
    assert again.ok and again.images_unplanned == 1 and (root / "hero.png").exists()


def test_a_task_id_reissued_to_another_request_mid_build_is_never_collected_nor_paid_again(tmp_path: Path) -> None:
    """The server restarts mid-build and hands hero's task id to another request: hero's next poll shows that
    request's client_business_id. The build locks none of its images, and the next build, finding no task by
    hero's own id, fails it for `forget` rather than paying on a mismatch alone."""
    config = EmulatorConfig(latency=0.3, submit_rps=None, query_rps=None)
    root = _manifest(tmp_path / "p", {"hero": {"prompt": "a blue mug", "out": "hero.png"}})
    project = api.open_project(root)
    body = {"model": "gpt-4o-image", "prompt": "another project's mug", "client_business_id": "someone-else"}
    servers = [EmulatorServer(config).__enter__()]

    class Restarted(RecordingReporter):
        def emit(self, event: Any) -> None:
            super().emit(event)
            if isinstance(event, TargetSubmitted):  # the same seed, started afresh: its ids start over
                servers[0].__exit__(None, None, None)
                servers.append(EmulatorServer(config, port=servers[0].port).__enter__())
                headers = {"Authorization": f"Bearer {TEST_KEY}"}
                answer = httpx.post(f"{servers[1].url}/v1/images/generations", json=body, headers=headers, timeout=5)
                assert answer.json()["id"] == event.task_id

    try:
        result = api.build(project, fast_settings(project, servers[0]), reporter=Restarted())
        [failure] = result.failed
        assert "now names another request's task" in failure.error, failure.error
        assert not (root / "hero.png").exists() and "hero" not in api.plan(project).lock.entries
        assert [a.kind for a in api.plan(project).plan.actions] == [ActionKind.RESUME]  # still journaled
        again = api.build(project, fast_settings(project, servers[1]))
        [failure] = again.failed
        assert "forget" in failure.error and servers[1].emulator.ledger.charged_images == 1  # the other's only
        assert not (root / "hero.png").exists()
    finally:
        servers[-1].__exit__(None, None, None)


def test_a_last_poll_past_max_wait_that_fails_keeps_the_timeout_message(
    emulator: EmulatorServer, tmp_path: Path
) -> None:
    """The review: the poll after the deadline replaced "still queued …; it stays journaled" with a bare
    "HTTP 500", and could hold its slot through every retry; it is bounded, and said beside the timeout."""
    healthy = EmulatorConfig(latency=5.0, submit_rps=None, query_rps=None)
    emulator.emulator.reset(healthy)
    root = _manifest(tmp_path / "p", {"hero": {"prompt": "a blue mug", "out": "hero.png"}})
    project = api.open_project(root)

    def broken() -> None:
        emulator.emulator.reconfigure(dataclasses.replace(healthy, p_500=1.0))
        time.sleep(1.2)  # paused past max_wait

    settings = fast_settings(project, emulator, max_wait=1.0, max_attempts=2, retry_window=0.0)
    result = api.build(project, settings, reporter=_on_first_poll(broken))
    [failure] = result.failed
    assert " after 1 s; a last poll: HTTP 500" in failure.error
    assert failure.error.endswith("; it stays journaled and the next build resumes it")

    def lost_task() -> None:  # what the last poll learns is said as it is: the task is gone
        emulator.emulator.reset(healthy)
        time.sleep(1.2)

    emulator.emulator.reconfigure(healthy)
    [lost] = api.build(project, settings, reporter=_on_first_poll(lost_task)).failed
    assert "the provider no longer has task" in lost.error and "still" not in lost.error


class _FastClock:
    """The ``time`` module of a machine whose wall clock is a day and an hour ahead."""

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)

    def time(self) -> float:
        return time.time() + 25 * 3600


def test_a_fast_clock_does_not_take_a_refused_link_for_an_expired_one(
    fast_env: EmulatorServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Expiry is judged on the provider's clock (its Date): by this machine's, the link has expired and the
    task would be dropped, and paid for again by the next build."""
    import pixmake.execute
    import pixmake.providers.toapis

    monkeypatch.setattr(pixmake.execute, "time", _FastClock())
    monkeypatch.setattr(pixmake.providers.toapis, "time", _FastClock())
    fast_env.emulator.reset(EmulatorConfig(latency=0.02, submit_rps=None, query_rps=None, p_404_download=1.0))
    root = _manifest(tmp_path / "p", {"hero": {"prompt": "a blue mug", "out": "hero.png"}})
    refused = run_cli("-C", str(root), "build")
    assert refused.exit_code == 1
    assert "its task stays journaled and the next build fetches it again" in refused.stderr, refused.stderr
    fast_env.emulator.reconfigure(EmulatorConfig(latency=0.02, submit_rps=None, query_rps=None))
    again = run_cli("-C", str(root), "build")
    assert again.exit_code == 0 and "1 resumed (already paid)" in again.stderr
    assert fast_env.emulator.ledger.charged_images == 1


def test_an_unusable_object_cache_stops_paying_in_one_line_and_the_next_build_collects_every_paid_task(
    fast_env: EmulatorServer, tmp_path: Path
) -> None:
    root = make_manifest(tmp_path / "p", 20, concurrency=2, every_ref=0)
    (root / ".pixmake").mkdir()
    (root / ".pixmake" / "objects").write_text("not a directory")  # as a full or read-only disk would, every copy fails
    outcome = run_cli("-C", str(root), "build")
    assert outcome.exit_code == 1, outcome.stderr
    assert "Traceback" not in outcome.stderr
    [line] = _error_lines(outcome.stderr)
    assert line.startswith("pixmake: error: cannot keep a paid image in .pixmake/objects (Not a directory: .pixmake/")
    assert line.endswith("; its task stays journaled and the next build collects it")
    assert len(fast_env.emulator.submits()) <= 2 * 2  # it stopped submitting: only what was already in flight
    paid_tasks = len(fast_env.emulator.ledger.entries)
    assert paid_tasks > 0
    charged = fast_env.emulator.ledger.charged_images
    s = "s" * (charged != 1)
    assert f"0 generated (0 images paid), {charged} image{s} paid for targets not finished" in outcome.stderr
    (root / ".pixmake" / "objects").unlink()
    again = run_cli("-C", str(root), "build")
    assert again.exit_code == 0, again.stderr
    assert f"{paid_tasks} resumed (already paid)" in again.stderr  # every paid task collected, none paid again
    assert_paid_once_and_complete(root, fast_env, 20)


def test_a_fold_publishes_the_lock_without_holding_all_of_it_in_memory(tmp_path: Path) -> None:
    """A fold copies the build's copy of the lock to pixmake.lock; that copy, read back in 64 KB chunks and
    written 1024 chunks per writev, was in memory whole at every fold (0.7 KB a target)."""
    output = (LockedOutput("out/a.png", "0" * 64, 9, 1, 1),)
    entries = {f"t{i:05}": LockEntry(sha256_bytes(b"%d" % i), "m", f"shot {i}", "1:1", 1, output) for i in range(8000)}
    lock_path = tmp_path / "pixmake.lock"
    lock_path.write_bytes(b"".join(lock_pieces(Lock(entries))))
    journal = Journal(tmp_path / ".pixmake" / "journal.jsonl")
    recorder = _Recorder(lock_path, Lock(entries), journal, {}, emulator=False, lock_stat=file_stat(lock_path))
    recorder._write_lock({}, final=False)  # the first fold writes the build's copy
    changed = {"t00000": dataclasses.replace(entries["t00000"], prompt="again")}
    tracemalloc.start()
    try:
        recorder._write_lock(changed, final=False)  # merges into the copy, then publishes it
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    size = lock_path.stat().st_size
    assert parse_lock(lock_path.read_text()).entries == {**entries, **changed}
    assert peak < size / 2, (peak, size)


def test_a_lock_rewritten_by_something_else_during_the_build_loses_no_entry(
    emulator: EmulatorServer, tmp_path: Path
) -> None:
    """A git checkout of pixmake.lock mid-build: the next fold writes every entry again, none is dropped."""
    emulator.emulator.reset(EmulatorConfig(latency=0.01, submit_rps=None, query_rps=None))
    root = make_manifest(tmp_path / "p", 200, concurrency=8, every_ref=0)
    lock_path = root / "pixmake.lock"
    lock_path.write_text('{"generator": "pixmake", "version": 2}\n')  # as committed: empty

    class Checkout(RecordingReporter):
        def emit(self, event: Any) -> None:
            super().emit(event)
            if isinstance(event, TargetFinished) and event.target == "t0150":  # folds ran before it
                lock_path.write_text('{"generator": "pixmake", "version": 2}\n')

    project = api.open_project(root)
    result = api.build(project, fast_settings(project, emulator), reporter=Checkout())
    assert result.ok and len(result.generated) == 200
    assert len(parse_lock(lock_path.read_text()).entries) == 200
    assert not (root / ".pixmake" / "pixmake.lock.build").exists()  # the build's own copy is gone
    assert_paid_once_and_complete(root, emulator, 200)


def at_build_start(act: Callable[[], None]) -> RecordingReporter:
    """A reporter that calls ``act`` once the build has planned and before it sends anything: a user's
    move (an edit, a save, a pull) in the middle of a build."""

    class Acting(RecordingReporter):
        def emit(self, event: Any) -> None:
            super().emit(event)
            if isinstance(event, BuildStarted):
                act()

    return Acting()


def built_then_edited(root: Path, server: EmulatorServer, count: int) -> api.Project:
    """A project of ``count`` generated targets, built, then t0001's prompt edited: a build with work to do."""
    make_manifest(root, count, every_ref=0)
    project = api.open_project(root)
    assert api.build(project, fast_settings(project, server)).ok
    manifest = root / "pixmake.yaml"
    manifest.write_text(manifest.read_text().replace("product shot 1", "product shot 1, in blue"))
    return project


def test_a_lock_pulled_in_mid_build_keeps_the_teammates_entries_and_gains_the_builds(
    emulator: EmulatorServer, tmp_path: Path
) -> None:
    """A git pull during a build brought a teammate's entry into pixmake.lock: the build's folds dropped it,
    so the next build paid for the teammate's committed image again."""
    emulator.emulator.reset(EmulatorConfig(latency=0.01, submit_rps=None, query_rps=None))
    root = make_manifest(tmp_path / "p", 200, concurrency=8, every_ref=0)
    lock_path = root / "pixmake.lock"

    class Pull(RecordingReporter):
        def emit(self, event: Any) -> None:
            super().emit(event)
            if isinstance(event, TargetFinished) and event.target == "t0150":  # folds ran before it
                pulled = parse_lock(lock_path.read_text())
                banner = dataclasses.replace(pulled.entries["t0000"], prompt="the teammate's banner")
                lock_path.write_bytes(b"".join(lock_pieces(pulled.without({"t0000"}).with_entry("banner", banner))))

    project = api.open_project(root)
    result = api.build(project, fast_settings(project, emulator), reporter=Pull())
    assert result.ok and len(result.generated) == 200
    entries = parse_lock(lock_path.read_text()).entries
    assert len(entries) == 201 and entries["banner"].prompt == "the teammate's banner"
    assert entries["t0000"].prompt == "product shot 0"  # the build's own entry wins over what the pull said
    ours = [entry for name, entry in entries.items() if name != "banner"]
    assert emulator.emulator.ledger.net_images == sum(entry.n for entry in ours)  # paid once each
    assert api.plan(api.open_project(root)).plan.images_to_generate == 0  # nothing is paid for again


def test_a_lock_pulled_in_mid_build_keeps_the_entries_the_build_recovered_from_its_journal(
    fast_env: EmulatorServer, tmp_path: Path
) -> None:
    root = tmp_path / "p"
    project = built_then_edited(root, fast_env, 3)
    lock_path = root / "pixmake.lock"
    built = parse_lock(lock_path.read_text())
    lock_path.write_bytes(b"".join(lock_pieces(built.without({"t0000"}))))  # killed before its fold:
    journal = Journal(root / ".pixmake" / "journal.jsonl")  # t0000's entry is in the journal only
    journal.open()
    journal.finished("t0000", built.entries["t0000"])
    journal.close()

    def _pull() -> None:  # the pulled lock has the teammate's banner, not t0000
        pulled = built.without({"t0000"}).with_entry("banner", built.entries["t0002"])
        lock_path.write_bytes(b"".join(lock_pieces(pulled)))

    result = api.build(project, fast_settings(project, fast_env), reporter=at_build_start(_pull))
    assert result.ok and result.generated == ("t0001",)
    entries = parse_lock(lock_path.read_text()).entries
    assert sorted(entries) == ["banner", "t0000", "t0001", "t0002"]
    assert entries["t0000"] == built.entries["t0000"]


def test_a_killed_builds_temporary_files_are_removed_by_the_next_build_and_nothing_else(
    fast_env: EmulatorServer, tmp_path: Path
) -> None:
    """A build killed mid-write leaves `.<out>.<hex>.tmp` beside the output: git add -A would commit it."""
    root = tmp_path / "p"
    project = built_then_edited(root, fast_env, 2)  # t0001 is built again
    out = root / "out"
    leftovers = [".t0001.png.0123456789ab.tmp"]
    kept = [
        ".t0000.png.0123456789ab.tmp",
        ".notes.txt.0123456789ab.tmp",
        ".t0001.png.tmp",
        "t0001.png.0123456789ab.tmp",
    ]
    for name in leftovers + kept:  # t0000 is not written by this build: its file is not touched
        (out / name).write_bytes(b"half an image")
    assert api.build(project, fast_settings(project, fast_env)).ok
    assert sorted(p.name for p in out.iterdir() if p.name.endswith(".tmp")) == sorted(kept)


def test_a_file_saved_at_an_output_path_during_the_build_is_left_as_it_is(
    fast_env: EmulatorServer, tmp_path: Path
) -> None:
    """Else the image arriving later overwrote it, and its bytes were kept nowhere."""
    root = tmp_path / "p"
    project = built_then_edited(root, fast_env, 2)
    manifest = root / "pixmake.yaml"
    manifest.write_text(manifest.read_text() + "  t0002:\n    prompt: a new one\n    out: out/t0002.png\n")
    manifest.write_text(manifest.read_text().replace("product shot 0", "product shot 0, in red"))
    saved = {"out/t0001.png": b"a designer's own version", "out/t0002.png": b"a sketch saved there meanwhile"}
    touched = root / "out" / "t0000.png"

    def _designer() -> None:  # planned: t0001 regenerates over its file, t0002 is new
        for rel, data in saved.items():
            (root / rel).write_bytes(data)
        os.chmod(touched, 0o600)  # a new ctime, the same bytes (as Finder or Spotlight do): no save

    result = api.build(project, fast_settings(project, fast_env), reporter=at_build_start(_designer))
    why = {f.target: f.error for f in result.failed}
    assert sorted(why) == ["t0001", "t0002"] and result.generated == ("t0000",)
    assert why["t0002"].startswith(
        "out/t0002.png changed during the build (an editor? a git checkout?), so it was left"
    )
    assert {rel: (root / rel).read_bytes() for rel in saved} == saved
    after = api.plan(api.open_project(root)).plan
    assert after.images_to_generate == 0  # both paid images are locked and kept: nothing is paid for again
    assert run_cli("-C", str(root), "build", "--restore").exit_code == 0
    assert all((root / rel).read_bytes().startswith(b"\x89PNG") for rel in saved)  # the paid images, free


def test_a_lock_pulled_in_while_the_build_plans_is_merged_too(
    fast_env: EmulatorServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The stat the merge compares with is taken before the plan reads the lock, not after it (a cold
    scan of a large project takes seconds)."""
    root = tmp_path / "p"
    project = built_then_edited(root, fast_env, 3)
    lock_path = root / "pixmake.lock"
    built = parse_lock(lock_path.read_text())
    scan = api._scan

    def scan_during_a_pull(*args: Any, **kwargs: Any) -> Any:
        found = scan(*args, **kwargs)
        lock_path.write_bytes(b"".join(lock_pieces(built.with_entry("banner", built.entries["t0002"]))))
        return found

    monkeypatch.setattr(api, "_scan", scan_during_a_pull)
    assert api.build(project, fast_settings(project, fast_env)).ok
    assert sorted(parse_lock(lock_path.read_text()).entries) == ["banner", "t0000", "t0001", "t0002"]


def test_a_pulled_provider_image_is_never_replaced_by_a_placeholder_in_the_lock(
    fast_env: EmulatorServer, tmp_path: Path
) -> None:
    """build --emulator in a clone while a pull brings the teammate's paid image of the same target."""
    root = make_manifest(tmp_path / "p", 2, every_ref=0)
    project = api.open_project(root)
    assert api.build(project, fast_settings(project, fast_env)).ok  # the teammate's build, paid
    lock_path, image = root / "pixmake.lock", root / "out" / "t0000.png"
    teammates = parse_lock(lock_path.read_text()).without({"t0001"})  # they pushed t0000 only
    teammates_lock, teammates_image = b"".join(lock_pieces(teammates)), image.read_bytes()
    lock_path.unlink()  # this clone, before the pull: no lock, no images, no local state
    for png in (root / "out").iterdir():
        png.unlink()
    shutil.rmtree(root / ".pixmake")

    def _pull() -> None:
        lock_path.write_bytes(teammates_lock)
        image.write_bytes(teammates_image)

    result = api.build(project, fast_settings(project, fast_env), emulator=True, reporter=at_build_start(_pull))
    assert [f.target for f in result.failed] == ["t0000"]  # its file arrived meanwhile: left as it is
    entries = parse_lock(lock_path.read_text()).entries
    assert not entries["t0000"].emulator and entries["t0001"].emulator
    assert image.read_bytes() == teammates_image
    assert api.plan(project, builder=Builder.PROVIDER).plan.images_to_generate == 1  # t0001 only


# --- uploads once --------------------------------------------------------------------------------------------


def test_hundreds_of_targets_sharing_one_reference_upload_it_once(fast_env: EmulatorServer, tmp_path: Path) -> None:
    fast_env.emulator.reset(EmulatorConfig(latency=0.01, submit_rps=None, query_rps=None))
    root = make_manifest(tmp_path / "p", 200, concurrency=32, every_ref=1)  # every target uses refs/brand.png
    result = api.build(api.open_project(root), fast_settings(api.open_project(root), fast_env))
    assert result.ok and result.statistics.uploads == 1 and result.statistics.distinct_uploads == 1
    uploads = [r for r in fast_env.emulator.requests if r.path == "/v1/uploads/images"]
    assert len(uploads) == 1
    [brand] = json.loads((root / ".pixmake" / "uploads.json").read_text())["uploads"][fast_env.url].values()
    submits = fast_env.emulator.submits()
    assert len(submits) == 200 and all(isinstance(r.json, dict) and r.json["image_urls"] == [brand["url"]]
                                       for r in submits)  # fmt: skip
    # The next build remembers the URL: changed prompts are paid for, the reference is not uploaded again.
    manifest = root / "pixmake.yaml"
    document = yaml.safe_load(manifest.read_text())
    for index, target in enumerate(document["targets"].values()):
        if index % 8 == 0:
            target["prompt"] = target["prompt"].replace("shot", "photo")
    manifest.write_text(yaml.safe_dump(document, sort_keys=False))
    again = api.build(api.open_project(root), fast_settings(api.open_project(root), fast_env))
    assert again.ok and len(again.generated) == 25 and again.statistics.uploads == 0


def test_a_failed_task_has_its_remembered_uploads_sent_again_next_time(
    fast_env: EmulatorServer, tmp_path: Path
) -> None:
    """A provider may report an expired reference URL by failing the task, not with a 400 at submit (§7 q5)."""
    knobs: dict[str, Any] = {"latency": 0.01, "submit_rps": None, "query_rps": None}
    fast_env.emulator.reset(EmulatorConfig(**knobs))
    root = make_manifest(tmp_path / "p", 2, concurrency=1, every_ref=1)
    project = api.open_project(root)
    assert api.build(project, fast_settings(project, fast_env)).statistics.uploads == 1
    manifest = root / "pixmake.yaml"
    fast_env.emulator.reconfigure(EmulatorConfig(**knobs, p_task_failed=1.0))  # the emulator keeps the upload

    def fail_both(prompt: str) -> BuildResult:
        manifest.write_text(re.sub(r"product \w+", prompt, manifest.read_text()))
        result = api.build(project, fast_settings(project, fast_env))
        assert len(result.failed) == 2
        return result

    assert fail_both("product photo").statistics.uploads == 0  # a URL an hour old or less is surely good
    cache = root / ".pixmake/uploads.json"
    cache.write_text(re.sub(r'"at": ([0-9.]+)', lambda m: f'"at": {float(m[1]) - 7200}', cache.read_text()))
    assert fail_both("product still").statistics.uploads == 1  # two hours old: doubted after the first failure
    fast_env.emulator.reconfigure(EmulatorConfig(**knobs))
    again = api.build(project, fast_settings(project, fast_env))
    assert again.ok and again.statistics.uploads == 0


def _sharing_a_reference(root: Path, server: EmulatorServer) -> tuple[Path, Path]:
    """Four targets, t0000 and t0002 using refs/brand.png; the project root and that reference."""
    server.emulator.reset(EmulatorConfig(latency=0.01, submit_rps=None, query_rps=None))
    make_manifest(root, 4, concurrency=4, every_ref=2)
    return root, root / "refs" / "brand.png"


def test_a_reference_edited_during_the_build_is_not_sent_as_the_planned_bytes(
    fast_env: EmulatorServer, tmp_path: Path
) -> None:
    """Else its upload was cached under the planned hash and its targets locked as made from the old file."""
    root, brand = _sharing_a_reference(tmp_path / "p", fast_env)

    def _recolour() -> None:  # planned, nothing uploaded yet
        write_png(brand, (32, 32), (200, 30, 30))

    project = api.open_project(root)
    result = api.build(project, fast_settings(project, fast_env), reporter=at_build_start(_recolour))
    why = "refs/brand.png changed during the build; nothing was submitted for it: the next build uses the new file"
    assert sorted((f.target, f.error) for f in result.failed) == [("t0000", why), ("t0002", why)]
    assert sorted(r.json["prompt"] for r in fast_env.emulator.submits() if isinstance(r.json, dict)) == [
        "product shot 1",
        "product shot 3",
    ]  # the two targets without it were paid for, the others not
    assert [r for r in fast_env.emulator.requests if r.path == "/v1/uploads/images"] == []
    again = api.build(project, fast_settings(project, fast_env))
    assert again.ok and sorted(again.generated) == ["t0000", "t0002"] and again.statistics.uploads == 1
    assert len([r for r in fast_env.emulator.requests if r.path == "/v1/uploads/images"]) == 1
    [known] = json.loads((root / ".pixmake" / "uploads.json").read_text())["uploads"].values()
    assert list(known) == [sha256_bytes(brand.read_bytes())]  # the URL is cached under the bytes it holds
    locked = parse_lock((root / "pixmake.lock").read_text()).entries["t0000"]
    assert [r.sha256 for r in locked.references] == [sha256_bytes(brand.read_bytes())]


def test_a_reference_that_cannot_be_read_fails_its_targets_not_the_build(
    fast_env: EmulatorServer, tmp_path: Path
) -> None:
    root, brand = _sharing_a_reference(tmp_path / "p", fast_env)

    def _unreadable() -> None:  # as a permission change would (the suite may run as root)
        brand.unlink()
        brand.mkdir()

    project = api.open_project(root)
    result = api.build(project, fast_settings(project, fast_env), reporter=at_build_start(_unreadable))
    assert result.fatal is None and sorted(result.generated) == ["t0001", "t0003"]
    assert {f.target: f.error for f in result.failed} == dict.fromkeys(
        ["t0000", "t0002"], "cannot read refs/brand.png (Is a directory); nothing was submitted for it"
    )


def test_a_reference_that_is_no_whole_image_fails_its_targets_before_any_submit(
    fast_env: EmulatorServer, tmp_path: Path
) -> None:
    """The last fuzz: a reference cut short passed validate (headers only) and was paid for (2 images):
    the provider took it and charged for what it made of it. It is decoded once, as it is read for upload."""
    root, brand = _sharing_a_reference(tmp_path / "p", fast_env)
    whole = brand.read_bytes()
    brand.write_bytes(whole[: len(whole) // 2])
    project = api.open_project(root)
    result = api.build(project, fast_settings(project, fast_env))
    assert result.fatal is None and sorted(result.generated) == ["t0001", "t0003"]
    assert {f.target: f.error for f in result.failed} == dict.fromkeys(
        ["t0000", "t0002"], "refs/brand.png is not a whole image (cut short? damaged?); nothing was submitted for it"
    )
    locked = parse_lock((root / "pixmake.lock").read_text()).entries
    assert fast_env.emulator.ledger.charged_images == sum(len(locked[n].outputs) for n in ("t0001", "t0003"))
    assert [r for r in fast_env.emulator.requests if r.path == "/v1/uploads/images"] == []


def test_an_expired_upload_is_uploaded_again(tmp_path: Path) -> None:
    now = [1000.0]
    path = tmp_path / "uploads.json"
    cache = UploadCache.load(path, "https://api", ttl=60.0, clock=lambda: now[0])
    cache.put("abc", "https://files/abc.png")
    cache.save()
    now[0] += 59.0
    assert UploadCache.load(path, "https://api", ttl=60.0, clock=lambda: now[0]).get("abc") == "https://files/abc.png"
    assert UploadCache.load(path, "https://other", ttl=60.0, clock=lambda: now[0]).get("abc") is None
    now[0] += 1.0
    assert UploadCache.load(path, "https://api", ttl=60.0, clock=lambda: now[0]).get("abc") is None
    now[0] = 1000.0 - 14 * 3600  # the clock set back: an upload "from the future" is of unknown age
    assert UploadCache.load(path, "https://api", ttl=60.0, clock=lambda: now[0]).get("abc") is None
    path.write_text("{not json")
    assert UploadCache.load(path, "https://api").get("abc") is None  # a corrupt cache is an empty cache
    path.write_text("[" * 100_000)  # nested past json's depth: a traceback at build start before
    assert UploadCache.load(path, "https://api").get("abc") is None


@pytest.mark.parametrize("how", ["unknown", "expired"])
def test_a_4xx_about_a_remembered_upload_uploads_it_again(how: str, emulator: EmulatorServer, tmp_path: Path) -> None:
    """The emulator refuses a submit naming an upload it does not know (or no longer keeps) with a 400."""
    emulator.emulator.reset(EmulatorConfig(latency=0.01, submit_rps=None, query_rps=None, upload_ttl=3600.0))
    ref = write_png(tmp_path / "p" / "ref.png")
    root = _manifest(tmp_path / "p", {"mug": {"prompt": "a mug", "references": ["ref.png"], "out": "mug.png"}})
    project = api.open_project(root)
    if how == "unknown":
        stale = UploadCache.load(root / ".pixmake" / "uploads.json", emulator.url)
        stale.put(sha256_bytes(ref.read_bytes()), f"{emulator.url}/files/uploads/upload_gone.png")
        stale.save()
    else:
        assert api.build(project, fast_settings(project, emulator)).ok  # uploads ref.png, pays for one image
        emulator.emulator.advance(3600.0)  # the provider forgets it; pixmake's cache still holds the URL
        manifest = root / "pixmake.yaml"
        manifest.write_text(manifest.read_text().replace("a mug", "a blue mug"))
    paid_before = emulator.emulator.ledger.charged_images
    result = api.build(project, fast_settings(project, emulator))
    assert result.ok, result.failed
    refused = [r for r in emulator.emulator.submits() if r.status == 400]
    assert len(refused) == 1 and isinstance(refused[0].json, dict)
    [stale_url] = refused[0].json["image_urls"]
    uploads = [r for r in emulator.emulator.requests if r.path == "/v1/uploads/images"]
    assert len(uploads) == (1 if how == "unknown" else 2) and result.statistics.uploads == 1
    fresh = emulator.emulator.submits()[-1]
    assert fresh.status == 200 and isinstance(fresh.json, dict) and fresh.json["image_urls"] != [stale_url]
    assert emulator.emulator.ledger.charged_images == paid_before + 1


@pytest.mark.parametrize("alive", [True, False], ids=["still-served", "gone"])
def test_a_remembered_upload_over_an_hour_old_is_fetched_once_before_a_submit_names_it(
    alive: bool, emulator: EmulatorServer, tmp_path: Path
) -> None:
    """The review (the API's facts): an upload's lifetime is undocumented, and pixmake reused URLs for 12 hours.
    A provider that skipped a dead reference rather than refusing the submit would charge for an image made
    without it: a URL over an hour old is checked first (once per build), and a dead one uploaded again."""
    emulator.emulator.reset(EmulatorConfig(latency=0.01, submit_rps=None, query_rps=None, upload_ttl=3600.0))
    write_png(tmp_path / "p" / "ref.png")
    targets = {f"m{i}": {"prompt": f"mug {i}", "references": ["ref.png"], "out": f"m{i}.png"} for i in range(3)}
    root = _manifest(tmp_path / "p", targets)
    project = api.open_project(root)
    assert api.build(project, fast_settings(project, emulator)).ok
    cache = root / ".pixmake" / "uploads.json"
    document = json.loads(cache.read_text())
    for entry in document["uploads"][emulator.url].values():
        entry["at"] -= 2 * 3600  # remembered two hours ago
    cache.write_text(json.dumps(document))
    if not alive:
        emulator.emulator.advance(3600.0)  # the provider let it go
    for name in targets:
        manifest = root / "pixmake.yaml"
        manifest.write_text(manifest.read_text().replace(f"mug {name[1:]}", f"blue mug {name[1:]}"))
    before = len(emulator.emulator.requests)
    result = api.build(project, fast_settings(project, emulator))
    assert result.ok, result.failed
    later = emulator.emulator.requests[before:]
    fetched = [r for r in later if r.method == "GET" and r.path.startswith("/files/uploads/")]
    uploaded = [r for r in later if r.path == "/v1/uploads/images"]
    assert (len(fetched), len(uploaded)) == (1, 0 if alive else 1)
    assert all(r.status == 200 for r in later if r.path == "/v1/images/generations")  # none refused, none paid blind


def test_a_4xx_about_an_upload_on_the_last_attempt_fails_the_target_in_one_line(
    emulator: EmulatorServer, tmp_path: Path
) -> None:
    """No attempt left to upload again with: the refusal is the target's failure (it was an internal error)."""
    emulator.emulator.reset(EmulatorConfig(latency=0.01, submit_rps=None, query_rps=None))
    ref = write_png(tmp_path / "p" / "ref.png")
    root = _manifest(tmp_path / "p", {"mug": {"prompt": "a mug", "references": ["ref.png"], "out": "mug.png"}})
    stale = UploadCache.load(root / ".pixmake" / "uploads.json", emulator.url)
    stale.put(sha256_bytes(ref.read_bytes()), f"{emulator.url}/files/uploads/upload_gone.png")
    stale.save()
    project = api.open_project(root)
    result = api.build(project, fast_settings(project, emulator, max_attempts=1))
    [failure] = result.failed
    assert failure.target == "mug" and failure.error.startswith("HTTP 400") and result.fatal is None
    assert emulator.emulator.ledger.charged_images == 0 and api.load_lock(project)[1] == {}


def test_credentials_in_the_base_url_are_not_written_to_the_upload_cache(
    emulator: EmulatorServer, tmp_path: Path
) -> None:
    emulator.emulator.reset(EmulatorConfig(latency=0.01, submit_rps=None, query_rps=None))
    write_png(tmp_path / "p" / "ref.png")
    root = _manifest(tmp_path / "p", {"mug": {"prompt": "a mug", "references": ["ref.png"], "out": "mug.png"}})
    project = api.open_project(root)
    older = {"version": 1, "uploads": {"https://me:OLD-SECRET@proxy.example/v1?token=OLD-SECRET": {}}}
    (root / ".pixmake").mkdir()
    (root / ".pixmake" / "uploads.json").write_text(json.dumps(older))  # as an older pixmake wrote it
    proxy = emulator.url.replace("http://", "http://proxyuser:PROXY-SECRET@")
    assert api.build(project, dataclasses.replace(fast_settings(project, emulator), base_url=proxy)).ok
    written = [p for p in root.rglob("*") if p.is_file() and re.search(rb"(PROXY|OLD)-SECRET", p.read_bytes())]
    assert written == [] and (root / ".pixmake" / "uploads.json").is_file()


# --- one build at a time -------------------------------------------------------------------------------------


def _build_state(root: Path) -> dict[str, bytes]:
    """Every file of the project but the manifest parse cache (any command may refresh it, as plan does)."""
    files = {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}
    return {name: data for name, data in files.items() if name != ".pixmake/manifest.cache"}


def test_a_build_with_prune_holds_the_project_from_its_plan_to_its_last_deletion(
    fast_env: EmulatorServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Between paying and pruning, another command (gc, accept) taking the lock made the build exit 3
    ("nothing ran") after it had paid, with no summary."""
    from filelock import FileLock, Timeout

    root = make_manifest(tmp_path / "p", 2, every_ref=0)
    project = api.open_project(root)
    prune = api._prune
    free_before_prune: list[bool] = []

    def probing_prune(project: api.Project) -> Any:
        other = FileLock(str(root / ".pixmake" / "build.lock"), timeout=0)  # as another process would try
        try:
            other.acquire()
        except Timeout:
            free_before_prune.append(False)
        else:
            other.release()
            free_before_prune.append(True)
        return prune(project)

    monkeypatch.setattr(api, "_prune", probing_prune)
    result = api.build(project, fast_settings(project, fast_env), prune=True)
    assert result.ok and free_before_prune == [False]
    assert not (root / ".pixmake" / "build.pid").exists()  # released at the end
    with project_lock(root / ".pixmake"):
        pass


def test_a_second_build_fails_fast_naming_the_holder(fast_env: EmulatorServer, tmp_path: Path) -> None:
    # It fails *at once* because the lock is held (no waiting for it): it names the holder, sends nothing and
    # leaves the holder's state byte for byte as it was. A wait would be caught by the per-test timeout.
    root = make_manifest(tmp_path / "p", 2, every_ref=0)
    assert run_cli("-C", str(root), "build").exit_code == 0  # the holder's state: a lock, outputs, a journal
    manifest = root / "pixmake.yaml"
    manifest.write_text(manifest.read_text().replace("product shot 1", "product shot 1, in blue"))  # work to do
    sent = len(fast_env.emulator.requests)
    with project_lock(root / ".pixmake"):
        holders_state = _build_state(root)
        assert {"pixmake.lock", "out/t0000.png", "out/t0001.png", ".pixmake/journal.jsonl"} <= holders_state.keys()
        assert holders_state[".pixmake/build.pid"] == f"{os.getpid()} build\n".encode()
        outcome = run_cli("-C", str(root), "build")
        assert _build_state(root) == holders_state  # not even build.pid was touched
    assert outcome.exit_code == 3
    assert _error_lines(outcome.stderr) == [
        f"pixmake: error: another pixmake build is running in this project (pid {os.getpid()}); wait for it or stop it"
    ]
    assert fast_env.emulator.requests[sent:] == []
    assert run_cli("-C", str(root), "build").exit_code == 0  # released: now the edited target is built
    assert len(fast_env.emulator.submits()) == 3


# --- pacing events -------------------------------------------------------------------------------------------


def test_a_429_storm_halves_concurrency_then_it_recovers(emulator: EmulatorServer, tmp_path: Path) -> None:
    emulator.emulator.reset(EmulatorConfig(latency=0.01, submit_rps=None, query_rps=None, p_429=0.6, seed=1))
    root = make_manifest(tmp_path / "p", 60, concurrency=16, every_ref=0)
    reporter = RecordingReporter()
    project = api.open_project(root)
    result = api.build(project, fast_settings(project, emulator, max_attempts=30), reporter=reporter)
    assert result.ok, result.failed
    limits = [e.limit for e in reporter.events if isinstance(e, ConcurrencyChanged)]
    assert limits and min(limits) < 16
    stats = result.statistics.concurrency
    assert stats is not None and stats.decreases > 0 and stats.lowest == min(limits)
    assert any(isinstance(e, RetryScheduled) for e in reporter.events)
    assert isinstance(reporter.events[0], BuildStarted)
    assert len([e for e in reporter.events if isinstance(e, TargetFinished)]) == 60
    assert not [e for e in reporter.events if isinstance(e, TargetFailed)]


def test_targets_with_the_same_inputs_are_paid_for_once_in_one_build(fast_env: EmulatorServer, tmp_path: Path) -> None:
    """As when the twin is added after the first is built: one set of images for one set of inputs."""
    twin = {"prompt": "the same poster", "n": 2}
    targets = {name: {**twin, "out": f"{name}.png"} for name in ("a", "b", "c")}
    root = _manifest(tmp_path / "p", targets)
    project = api.open_project(root)
    result = api.build(project, fast_settings(project, fast_env))
    assert result.ok and result.generated == ("a",) and sorted(result.restored) == ["b", "c"]
    assert fast_env.emulator.ledger.charged_images == 2
    images = {name: [(root / f"{name}-{i}.png").read_bytes() for i in (1, 2)] for name in targets}
    assert images["a"] == images["b"] == images["c"]
    assert run_cli("-C", str(root), "plan", "--check").exit_code == ExitCode.OK


def test_a_target_that_shares_images_with_a_failed_one_fails_with_it(fast_env: EmulatorServer, tmp_path: Path) -> None:
    fast_env.emulator.reset(EmulatorConfig(latency=0.02, submit_rps=None, query_rps=None, p_task_failed=1.0))
    root = _manifest(tmp_path / "p", {name: {"prompt": "the same poster", "out": f"{name}.png"} for name in "ab"})
    project = api.open_project(root)
    result = api.build(project, fast_settings(project, fast_env))
    assert [f.target for f in result.failed] == ["a", "b"]
    assert result.failed[1].error == "target 'a', whose images it shares (the same inputs), was not built"
    assert fast_env.emulator.ledger.charged_images == 1  # one submit: b was never sent


def test_a_twin_with_a_paid_task_of_an_interrupted_build_is_the_one_the_others_copy(
    fast_env: EmulatorServer, tmp_path: Path
) -> None:
    root = _manifest(tmp_path / "p", {name: {"prompt": "the same poster", "out": f"{name}.png"} for name in "ab"})
    project = api.open_project(root)
    journal_submit(root, "b", "pixmake-b-gone")  # b was paid for by a killed build; the provider lost it
    planned = api.plan(project).plan
    assert [(a.name, a.kind, a.after) for a in planned.actions] == [
        ("a", ActionKind.RESTORE, "b"),
        ("b", ActionKind.RESUME, None),
    ]
    assert planned.images_to_generate == 0  # b's task was paid for already
    result = api.build(project, fast_settings(project, fast_env))
    assert result.ok and fast_env.emulator.ledger.charged_images == 1  # b's task never arrived: paid once, copied
    assert (root / "a.png").read_bytes() == (root / "b.png").read_bytes()


def test_twins_of_a_target_a_fatal_error_stopped_get_no_event(fast_env: EmulatorServer, tmp_path: Path) -> None:
    """README ("Events"): after a fatal error, targets in flight get no event; a twin never started."""
    fast_env.emulator.reset(EmulatorConfig(latency=0.05, submit_rps=None, query_rps=None, p_task_no_balance=1.0))
    root = _manifest(tmp_path / "p", {name: {"prompt": "the same poster", "out": f"{name}.png"} for name in "ab"})
    project = api.open_project(root)
    reporter = RecordingReporter()
    result = api.build(project, fast_settings(project, fast_env), reporter=reporter)
    assert result.fatal is not None and not result.failed
    assert {getattr(e, "target", None) for e in reporter.events} - {None} == {"a"}


def test_a_task_whose_result_is_refused_for_good_is_given_up_only_by_forget(
    fast_env: EmulatorServer, tmp_path: Path
) -> None:
    """A refusal may be the CDN's mood, so the task stays journaled (maybe paid); `forget` is the way out."""
    fast_env.emulator.reset(EmulatorConfig(latency=0.02, submit_rps=None, query_rps=None, p_403_download=1.0))
    root = _manifest(
        tmp_path / "p",
        {"hero": {"prompt": "a blue mug", "out": "hero.png"}, "cup": {"prompt": "a cup", "out": "cup.png"}},
    )
    for _ in range(2):  # stuck: each build asks again, pays nothing, and fails the same way
        assert run_cli("-C", str(root), "build", "hero").exit_code == 1
    assert fast_env.emulator.ledger.charged_images == 1
    unknown = run_cli("-C", str(root), "forget", "hero", "cup")
    assert unknown.exit_code == ExitCode.USER_ERROR and "journaled for 'cup'" in unknown.stderr
    assert "resume" in run_cli("-C", str(root), "plan").stdout  # nothing was dropped
    forgot = run_cli("-C", str(root), "forget", "hero")
    assert forgot.exit_code == 0 and forgot.stdout.startswith("forgot hero's interrupted submit (client_business_id ")
    assert forgot.stdout.rstrip().endswith("; the next build submits it again, and pays again")  # it has a task id
    fast_env.emulator.reconfigure(EmulatorConfig(latency=0.02, submit_rps=None, query_rps=None))
    again = run_cli("-C", str(root), "build", "hero")
    assert again.exit_code == 0, again.stderr
    assert fast_env.emulator.ledger.charged_images == 2 and (root / "hero.png").is_file()


def test_a_task_an_earlier_version_journaled_under_the_verbatim_key_is_collected_not_paid_again(
    fast_env: EmulatorServer, tmp_path: Path
) -> None:
    """Killed mid-build before an upgrade: its journal holds the key of the prompt as written (a block's newline)."""
    from pixmake.fingerprint import current_keys, target_key, verbatim_key
    from pixmake.providers.base import GenerationRequest
    from pixmake.providers.toapis import ToapisProvider

    root = _manifest(tmp_path / "p", {"hero": {"prompt": "a blue mug\n", "out": "hero.png"}})
    project = api.open_project(root)
    [target] = api.validate(project).targets
    assert verbatim_key(target, {}) != target_key(target, {})  # what this test is about
    journal = Journal(project.journal)
    journal.open()
    journal.submitting("hero", verbatim_key(target, {}), "pixmake-hero-earlier", sent_at=0.0)
    journal.close()
    request = GenerationRequest(target.model, target.prompt, target.size, target.n, "pixmake-hero-earlier")

    async def send() -> None:
        provider = ToapisProvider(fast_settings(project, fast_env))
        try:
            await provider.submit(request)
        finally:
            await provider.aclose()

    anyio.run(send)
    assert run_cli("-C", str(root), "plan").stdout.startswith("> resume")
    again = run_cli("-C", str(root), "build")
    assert again.exit_code == 0, again.stderr
    assert fast_env.emulator.ledger.charged_images == 1 and (root / "hero.png").is_file()
    written = parse_lock((root / "pixmake.lock").read_text())
    assert written.entries["hero"].key == verbatim_key(target, {})  # as an earlier version reads it: built
    assert current_keys(written).entries["hero"].key == target_key(target, {})


def test_an_old_state_folder_restored_from_a_cache_does_not_roll_the_lock_back_or_pay_again(
    fast_env: EmulatorServer, tmp_path: Path
) -> None:
    """A CI cache of .pixmake saved while a build's finished entries were still only journaled is restored
    after the lock moved on (t0001 rebuilt and committed): its old record took t0001 back to the old prompt,
    and the build paid for the committed one again."""
    root = tmp_path / "p"
    make_manifest(root, 2, every_ref=0)
    project = api.open_project(root)
    lock_path = root / "pixmake.lock"
    assert api.build(project, fast_settings(project, fast_env)).ok
    first = parse_lock(lock_path.read_text()).entries["t0001"]
    cached_journal = Journal(root / ".pixmake" / "journal-cache.jsonl")
    cached_journal.open()
    cached_journal.finished("t0001", first, None)  # as the first build journaled it: a new target
    cached_journal.close()
    manifest = root / "pixmake.yaml"
    manifest.write_text(manifest.read_text().replace("product shot 1", "product shot 1, in blue"))
    assert api.build(project, fast_settings(project, fast_env)).ok
    committed = lock_path.read_bytes()
    os.replace(cached_journal.path, root / ".pixmake" / "journal.jsonl")  # the cache restored
    charged = fast_env.emulator.ledger.charged_images
    assert api.plan(project).plan.images_to_generate == 0
    assert api.build(project, fast_settings(project, fast_env)).ok
    assert fast_env.emulator.ledger.charged_images == charged and lock_path.read_bytes() == committed
    manifest.write_text(manifest.read_text().replace("product shot 1, in blue", "product shot 1"))
    result = api.build(project, fast_settings(project, fast_env))  # the old prompt back: its images, free
    assert result.restored == ("t0001",) and fast_env.emulator.ledger.charged_images == charged


def test_a_branch_checked_out_mid_build_keeps_its_entries_and_the_builds_go_to_the_history(
    fast_env: EmulatorServer, tmp_path: Path
) -> None:
    """The fold took the build's entry over the checked-out branch's own entry for that target: that branch
    then paid for its committed image again, and the build's was in no lock or history."""
    root = tmp_path / "p"
    project = built_then_edited(root, fast_env, 3)  # t0001 regenerates
    lock_path = root / "pixmake.lock"
    built = parse_lock(lock_path.read_text())
    other = dataclasses.replace(built.entries["t0001"], key="f" * 64, prompt="the other branch's prompt")

    def _checkout() -> None:
        lock_path.write_bytes(b"".join(lock_pieces(built.with_entry("t0001", other))))

    result = api.build(project, fast_settings(project, fast_env), reporter=at_build_start(_checkout))
    assert result.generated == ("t0001",)
    assert parse_lock(lock_path.read_text()).entries["t0001"] == other  # the branch's own entry stands
    charged = fast_env.emulator.ledger.charged_images
    lock_path.write_bytes(b"".join(lock_pieces(built)))  # back on the branch the build ran for
    again = api.build(project, fast_settings(project, fast_env))
    assert again.restored == ("t0001",) and fast_env.emulator.ledger.charged_images == charged


def test_a_lock_left_in_conflict_mid_build_is_not_overwritten_and_the_builds_entries_wait_in_the_journal(
    fast_env: EmulatorServer, tmp_path: Path
) -> None:
    """A git merge without pixmake's driver during a build left conflict markers in pixmake.lock: the fold
    overwrote it with the build's lock, silently dropping the other side's entries."""
    root = tmp_path / "p"
    project = built_then_edited(root, fast_env, 3)
    lock_path = root / "pixmake.lock"
    before = lock_path.read_text()
    conflicted = before.replace('"t0002"', '<<<<<<< HEAD\n"t0002"', 1) + "=======\n>>>>>>> mate\n"

    def _merge() -> None:
        lock_path.write_text(conflicted)

    result = api.build(project, fast_settings(project, fast_env), reporter=at_build_start(_merge))
    assert result.generated == ("t0001",) and result.fatal is not None
    assert "pixmake.lock changed during the build and cannot be read" in str(result.fatal)
    assert "this build's finished targets stay in .pixmake/journal.jsonl" in str(result.fatal)
    assert lock_path.read_text() == conflicted  # the other side's entries are still there to resolve
    charged = fast_env.emulator.ledger.charged_images
    lock_path.write_text(before)  # resolved
    again = api.build(project, fast_settings(project, fast_env))
    assert again.ok and fast_env.emulator.ledger.charged_images == charged
    assert parse_lock(lock_path.read_text()).entries["t0001"].prompt == "product shot 1, in blue"


def test_a_state_folder_deleted_mid_build_gets_a_new_journal_of_what_is_in_flight(
    fast_env: EmulatorServer, tmp_path: Path
) -> None:
    """`git clean -fdx` during a build: the journal went on in a deleted file, so a crash from then on lost
    every paid task in flight, and the next build paid for them again."""
    root = make_manifest(tmp_path / "p", 4, concurrency=1, every_ref=0)
    project = api.open_project(root)
    journal = root / ".pixmake" / "journal.jsonl"
    seen: dict[str, str] = {}

    class Clean(RecordingReporter):
        def emit(self, event: Any) -> None:
            super().emit(event)
            if isinstance(event, TargetFinished) and event.target == "t0001":
                shutil.rmtree(root / ".pixmake")
            if isinstance(event, TargetSubmitted) and event.target == "t0002":
                seen["journal"] = journal.read_text() if journal.exists() else ""

    result = api.build(project, fast_settings(project, fast_env), reporter=Clean())
    assert result.ok and len(result.generated) == 4
    assert '"target":"t0002"' in seen["journal"]  # journaled anew, before it was sent
    assert (root / ".pixmake" / ".gitignore").exists()  # still out of git
    assert set(parse_lock((root / "pixmake.lock").read_text()).entries) == {f"t000{i}" for i in range(4)}
    assert_paid_once_and_complete(root, fast_env, 4)


def test_a_state_folder_deleted_after_a_fold_does_not_stop_the_build(fast_env: EmulatorServer, tmp_path: Path) -> None:
    """Later folds merge into the build's copy of the lock in .pixmake: deleted, the build stopped with
    'No such file or directory' and a claim that its paid tasks stayed journaled."""
    root = make_manifest(tmp_path / "p", 150, concurrency=8, every_ref=0)
    project = api.open_project(root)

    class Clean(RecordingReporter):
        def emit(self, event: Any) -> None:
            super().emit(event)
            if isinstance(event, TargetFinished) and event.target == "t0100":  # folds ran before it
                shutil.rmtree(root / ".pixmake", ignore_errors=True)  # worker threads may be writing objects
                assert not (root / ".pixmake" / "journal.jsonl").exists()

    result = api.build(project, fast_settings(project, fast_env), reporter=Clean())
    assert result.ok and len(result.generated) == 150, result.fatal
    assert len(parse_lock((root / "pixmake.lock").read_text()).entries) == 150
    assert_paid_once_and_complete(root, fast_env, 150)


@pytest.mark.parametrize("saved", ["without t0002", "invalid"])
def test_build_prune_leaves_alone_a_manifest_saved_during_the_build(
    fast_env: EmulatorServer, tmp_path: Path, saved: str
) -> None:
    """--prune planned again from the manifest on disk: a target dropped mid-build was paid for and then
    pruned; a manifest saved half-typed failed the whole command with no summary."""
    from pixmake.report import summary_lines

    root = tmp_path / "p"
    project = built_then_edited(root, fast_env, 3)
    manifest = root / "pixmake.yaml"
    text = manifest.read_text()

    def _save() -> None:
        if saved == "invalid":
            manifest.write_text(text + "  broken: [\n")  # half typed
        else:
            document = yaml.safe_load(text)
            del document["targets"]["t0002"]
            manifest.write_text(yaml.safe_dump(document, sort_keys=False))

    result = api.build(project, fast_settings(project, fast_env), reporter=at_build_start(_save), prune=True)
    assert result.ok and result.generated == ("t0001",)
    assert result.pruned is not None and result.pruned.deleted == () and result.pruned.pruned == ()
    assert (root / "out/t0002.png").exists()
    assert f"pixmake: note: nothing pruned: {manifest} changed during the build; " in "\n".join(summary_lines(result))


def test_a_lock_pulled_in_while_a_fold_writes_is_merged_not_overwritten(
    fast_env: EmulatorServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fold read pixmake.lock, then wrote the new one over it: a pull landing in between (about the
    last tenth of a second of a big build) lost the teammate's entries, paid for again by the next build."""
    from pixmake import execute, store

    root = tmp_path / "p"
    project = built_then_edited(root, fast_env, 3)
    lock_path = root / "pixmake.lock"
    built = parse_lock(lock_path.read_text())
    pulled = built.with_entry("banner", dataclasses.replace(built.entries["t0002"], prompt="the teammate's"))
    real = store.atomic_write

    def pull_while_writing(path: Any, data: Any, **options: Any) -> None:
        if os.path.basename(path) == "pixmake.lock" and "banner" not in lock_path.read_text():
            store.atomic_write(path.with_name("pulled.lock"), lock_pieces(pulled))
            os.replace(path.with_name("pulled.lock"), path)  # git pull: after the fold read the lock
        real(path, data, **options)

    monkeypatch.setattr(execute, "atomic_write", pull_while_writing)
    result = api.build(project, fast_settings(project, fast_env))
    assert result.ok and result.generated == ("t0001",)
    entries = parse_lock(lock_path.read_text()).entries
    assert entries["banner"].prompt == "the teammate's"
    assert entries["t0001"].prompt == "product shot 1, in blue"


def test_a_build_with_nothing_to_do_leaves_the_lock_and_journal_untouched(
    fast_env: EmulatorServer, tmp_path: Path
) -> None:
    """It rewrote both, so the next `plan --check` missed the no-op memo (0.9 s instead of 0.07 at 10,000
    targets) and git saw a new file time."""
    root = make_manifest(tmp_path / "p", 3, every_ref=0)
    project = api.open_project(root)
    assert api.build(project, fast_settings(project, fast_env)).ok
    files = [root / "pixmake.lock", root / ".pixmake" / "journal.jsonl"]
    before = [file_stat(path) for path in files]
    result = api.build(project, fast_settings(project, fast_env))
    assert result.ok and len(result.unchanged) == 3
    assert [file_stat(path) for path in files] == before


def test_build_with_the_bundled_emulator_is_not_rate_limited(tmp_path: Path) -> None:
    """Its rate limits are the provider's, for tests: a trial build of thousands of targets met 429 after
    429 and its concurrency halved again and again."""
    root = make_manifest(tmp_path / "p", 100, concurrency=32, every_ref=0)
    project = api.open_project(root)
    manifest = root / "pixmake.yaml"
    manifest.write_text(manifest.read_text().replace("rate: 1000/s", "rate: 6000/min"))
    reporter = RecordingReporter()
    settings = resolve(api.validate(project).provider, {})  # as build --emulator resolves them
    result = api.build(project, settings, reporter=reporter, emulator=True)
    assert result.ok and len(result.generated) == 100
    assert result.statistics.retries == 0
    assert not [e for e in reporter.events if isinstance(e, ConcurrencyChanged)]


def _touch(path: Path) -> Callable[[], None]:
    """Rewrite ``path`` with its own bytes, as `git checkout -- pixmake.lock` or an editor's save does."""

    def touch() -> None:
        data = path.read_bytes()
        time.sleep(0.01)  # a new mtime
        path.write_bytes(data)

    return touch


def _crash_after_the_record(project: api.Project, server: EmulatorServer) -> Path:
    """Build (t0001 edited), then leave what a crash after t0001's journal record and before the fold leaves:
    the lock as before the build, the entry in the journal only. Returns the lock's path."""
    lock_path = project.root / "pixmake.lock"
    before = lock_path.read_bytes()
    replaced = parse_lock(before.decode()).entries["t0001"].key
    assert api.build(project, fast_settings(project, server)).ok
    built = parse_lock(lock_path.read_text()).entries["t0001"]
    lock_path.write_bytes(before)
    journal = Journal(project.journal)
    journal.open()
    journal.finished("t0001", built, replaced)
    journal.close()
    return lock_path


def test_a_lock_rewritten_as_it_was_mid_build_keeps_the_builds_entries(
    fast_env: EmulatorServer, tmp_path: Path
) -> None:
    """A prompt with a line end (any `prompt: |`) is locked under the key earlier versions computed: the
    fold compared the lock as read back with today's keys, took the build's fresh entry for one another
    branch made, and kept the old one (the next clone paid again)."""
    root = make_manifest(tmp_path / "p", 3, every_ref=0)
    manifest = root / "pixmake.yaml"
    document = yaml.safe_load(manifest.read_text())
    for target in document["targets"].values():
        target["prompt"] += "\n"
    manifest.write_text(yaml.safe_dump(document))
    project = api.open_project(root)
    assert api.build(project, fast_settings(project, fast_env)).ok
    manifest.write_text(manifest.read_text().replace("product shot 1", "product shot 1, in blue"))
    lock_path = root / "pixmake.lock"
    result = api.build(project, fast_settings(project, fast_env), reporter=at_build_start(_touch(lock_path)))
    assert result.generated == ("t0001",)
    assert parse_lock(lock_path.read_text()).entries["t0001"].prompt == "product shot 1, in blue\n"


def test_a_build_after_a_crash_keeps_its_entry_over_the_chain_it_replaced(
    fast_env: EmulatorServer, tmp_path: Path
) -> None:
    """The journal held t0001 (K0 → K1) from a crash; the build made K2 while the lock was rewritten as it
    was (K0): the build's entry was taken for one from another branch, and the lock went back to K0."""
    project = built_then_edited(tmp_path / "p", fast_env, 3)
    lock_path = _crash_after_the_record(project, fast_env)
    manifest = project.root / "pixmake.yaml"
    manifest.write_text(manifest.read_text().replace("product shot 1, in blue", "product shot 1, in red"))
    result = api.build(project, fast_settings(project, fast_env), reporter=at_build_start(_touch(lock_path)))
    assert result.generated == ("t0001",)
    assert parse_lock(lock_path.read_text()).entries["t0001"].prompt == "product shot 1, in red"


def test_a_state_folder_deleted_mid_build_keeps_the_entries_recovered_from_a_crash(
    fast_env: EmulatorServer, tmp_path: Path
) -> None:
    """The new journal held what was in flight, not t0001's entry recovered from the crash before: a crash
    from then on paid for t0001 again."""
    project = built_then_edited(tmp_path / "p", fast_env, 3)
    _crash_after_the_record(project, fast_env)
    manifest = project.root / "pixmake.yaml"
    manifest.write_text(manifest.read_text().replace("product shot 2", "product shot 2, in red"))
    seen: dict[str, str] = {}

    class Clean(RecordingReporter):
        def emit(self, event: Any) -> None:
            super().emit(event)
            if isinstance(event, BuildStarted):
                shutil.rmtree(project.state_dir)
            if isinstance(event, TargetSubmitted):
                seen["journal"] = project.journal.read_text()

    assert api.build(project, fast_settings(project, fast_env), reporter=Clean()).ok
    assert '"target":"t0001"' in seen["journal"] and '"target":"t0002"' in seen["journal"]


def test_a_lock_in_conflict_with_stale_outputs_still_tells_the_builds_outcome(
    fast_env: EmulatorServer, tmp_path: Path
) -> None:
    """Recording the stale outputs read the conflicted lock and raised: the outcome and the way out were lost."""
    project = built_then_edited(tmp_path / "p", fast_env, 3)
    manifest = project.root / "pixmake.yaml"
    manifest.write_text(manifest.read_text().replace("out/t0001.png", "out/t0001-blue.png"))
    lock_path = project.root / "pixmake.lock"
    conflicted = lock_path.read_text().replace('"t0002"', '<<<<<<< HEAD\n"t0002"', 1) + "=======\n>>>>>>> mate\n"

    def _merge() -> None:
        lock_path.write_text(conflicted)

    result = api.build(project, fast_settings(project, fast_env), reporter=at_build_start(_merge))
    assert result.generated == ("t0001",)
    assert "pixmake.lock changed during the build and cannot be read" in str(result.fatal)


def test_a_build_with_nothing_to_do_makes_no_journal_so_the_next_plan_is_answered_by_its_memo(
    fast_env: EmulatorServer, tmp_path: Path
) -> None:
    """A no-op build created an empty journal where there was none: the memo's proof failed on it, and the
    next plan --check at 10,000 targets took 0.98 s instead of 0.09."""
    root = make_manifest(tmp_path / "p", 3, every_ref=0)
    project = api.open_project(root)
    assert api.build(project, fast_settings(project, fast_env)).ok
    project.journal.unlink()  # as a fresh clone has it
    assert api.plan(project).plan.up_to_date  # writes the memo
    assert api.build(project, fast_settings(project, fast_env)).ok
    assert not project.journal.exists()
    assert api.memo_plan(project) is not None  # the memo still proves the plan


def test_a_build_the_memo_proves_a_no_op_sends_nothing_and_tells_its_outcome(
    fast_env: EmulatorServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """plan --check answers a no-op from stats alone; the build planned everything again (0.9 s at 10,000)."""
    import pixmake.plan

    root = make_manifest(tmp_path / "p", 3, every_ref=0)
    project = api.open_project(root)
    assert api.build(project, fast_settings(project, fast_env)).ok
    assert api.plan(project).plan.up_to_date  # writes the memo
    requests = len(fast_env.emulator.requests)
    reporter = RecordingReporter()
    with monkeypatch.context() as patch:
        patch.setattr(pixmake.plan, "make_plan", None)  # planning again would fail
        manifest = api.load_manifest(project)  # as the command line has it, for the build's settings
        result = api.build(project, fast_settings(project, fast_env), reporter=reporter, manifest=manifest)
    assert result.ok and sorted(result.unchanged) == ["t0000", "t0001", "t0002"]
    assert [type(e).__name__ for e in reporter.events] == ["BuildStarted", "BuildFinished"]
    assert len(fast_env.emulator.requests) == requests
    (project.state_dir / "noop.memo").unlink()
    planned = api.build(project, fast_settings(project, fast_env), manifest=manifest)  # a no-op planned again
    assert planned.statistics == result.statistics  # build --json tells both alike
    (root / "out" / "t0001.png").unlink()  # the memo no longer holds: a real plan
    assert api.build(project, fast_settings(project, fast_env)).restored == ("t0001",)


def test_a_build_that_finds_nothing_to_do_leaves_a_memo_for_the_next(fast_env: EmulatorServer, tmp_path: Path) -> None:
    root = make_manifest(tmp_path / "p", 3, every_ref=0)
    project = api.open_project(root)
    manifest = api.load_manifest(project)
    assert api.build(project, fast_settings(project, fast_env), manifest=manifest).ok
    assert api.memo_plan(project) is None  # a build with work writes none: its plan was not a no-op
    assert api.build(project, fast_settings(project, fast_env), manifest=manifest).ok
    assert api.memo_plan(project) is not None


def test_a_state_folder_deleted_mid_build_after_a_superseded_record_is_no_traceback(
    fast_env: EmulatorServer, tmp_path: Path
) -> None:
    """A journal record whose target the lock no longer has (a checkout after a crash) is superseded, not in
    the build's lock: writing the new journal looked it up there and raised KeyError."""
    project = built_then_edited(tmp_path / "p", fast_env, 3)
    ghost = parse_lock((project.root / "pixmake.lock").read_text()).entries["t0000"]
    journal = Journal(project.journal)
    journal.open()
    journal.finished("ghost", ghost, "ab" * 32)
    journal.close()

    def _clean() -> None:
        shutil.rmtree(project.state_dir)

    assert api.build(project, fast_settings(project, fast_env), reporter=at_build_start(_clean)).generated == ("t0001",)


def test_replace_given_as_any_iterable_is_honoured(fast_env: EmulatorServer, tmp_path: Path) -> None:
    root = make_manifest(tmp_path / "p", 2, every_ref=0)
    project = api.open_project(root)
    assert api.build(project, fast_settings(project, fast_env)).ok
    result = api.build(project, fast_settings(project, fast_env), replace=iter(["t0000"]))
    assert result.generated == ("t0000",)


# --- outputs git still holds ---------------------------------------------------------------------------------


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_a_committed_output_deleted_in_a_teammates_clone_is_put_back_from_git_unpaid(
    fast_env: EmulatorServer, tmp_path: Path
) -> None:
    """A fresh clone has no object cache: a deleted (or retouched) committed output was planned as a
    regenerate, paid again, while ``git checkout`` had its bytes."""
    root = make_manifest(tmp_path / "p", 3, every_ref=0)
    project = api.open_project(root)
    assert api.build(project, fast_settings(project, fast_env)).ok
    (root / ".gitignore").write_text(".pixmake/\n")
    git(root, "init", "-q")
    git(root, "add", "-A")
    git(root, "commit", "-qm", "assets")
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", str(root), str(clone))
    deleted, retouched = clone / "out" / "t0000.png", clone / "out" / "t0001.png"
    committed = {path: path.read_bytes() for path in (deleted, retouched)}
    deleted.unlink()
    write_png(retouched, size=(8, 8), color=(9, 9, 9))  # a hand edit, then regretted: build --restore
    charged = fast_env.emulator.ledger.charged_images
    mate = api.open_project(clone)
    planned = api.plan(mate, restore=True)
    assert {a.name: a.kind for a in planned.plan.actions if a.kind is not ActionKind.UNCHANGED} == {
        "t0000": ActionKind.RESTORE, "t0001": ActionKind.RESTORE
    }  # fmt: skip
    assert "output out/t0000.png is missing (git has its locked bytes)" in plan_lines(clone)[0]
    outcome = run_cli("-C", str(clone), "build", "--restore")
    assert outcome.exit_code == ExitCode.OK, outcome.stderr
    assert fast_env.emulator.ledger.charged_images == charged  # nothing paid
    assert {path: path.read_bytes() for path in committed} == committed
    assert api.plan(api.open_project(clone)).plan.up_to_date


@pytest.mark.parametrize("ci", [True, False])
def test_a_ci_build_leaving_paid_tasks_journaled_says_to_save_its_state(
    fast_env: EmulatorServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ci: bool
) -> None:
    """The CI review: "it stays journaled and the next build resumes it" is false on a runner whose
    .pixmake/ is not saved after a failed job (CI caches save after success only, by default)."""
    fast_env.emulator.reset(EmulatorConfig(latency=5.0, submit_rps=None, query_rps=None))
    root = _manifest(tmp_path / "p", {"hero": {"prompt": "a blue mug", "out": "hero.png"}})
    monkeypatch.setenv("PIXMAKE_MAX_WAIT", "0.5")
    monkeypatch.setenv("CI", "true" if ci else "")
    outcome = run_cli("-C", str(root), "build")
    assert outcome.exit_code == ExitCode.FAILED
    note = (
        "pixmake: note: paid tasks of targets not finished are journaled in .pixmake/: save it for the next job "
        "whatever this one's outcome (README: In CI), or the next runner pays for them again"
    )
    assert (note in outcome.stderr.splitlines()) is ci


def test_the_entry_a_submit_was_sent_over_survives_its_task_id_and_a_rewritten_journal(tmp_path: Path) -> None:
    """The second diff review: `accepted` rebuilt the pending submit without `over`, so every fold's or a
    Ctrl-C's rewrite journaled it as an earlier pixmake's: a stale task was then collected over a lock."""
    from pixmake.journal import read_journal

    output = (LockedOutput("out/a.png", "0" * 64, 9, 1, 1),)
    entries = {"a": LockEntry("k-old", "m", "a", "1:1", 1, output)}
    lock_path = tmp_path / "pixmake.lock"
    lock_path.write_bytes(b"".join(lock_pieces(Lock(entries))))
    journal = Journal(tmp_path / ".pixmake" / "journal.jsonl")
    recorder = _Recorder(lock_path, Lock(entries), journal, {}, emulator=False, lock_stat=file_stat(lock_path))
    journal.open()
    recorder.submitting("a", "k-new", "cbid-a")
    recorder.submitting("b", "k-b", "cbid-b")
    recorder.accepted("a", "k-new", "cbid-a", "task-a")
    recorder.accepted("b", "k-b", "cbid-b", "task-b")
    assert {name: p.over for name, p in recorder.pending.items()} == {"a": "k-old", "b": None}
    journal.rewrite(recorder.pending)
    journal.close()
    _, pending = read_journal(journal.path, Lock())
    assert {name: (p.over, p.task_id) for name, p in pending.items()} == {
        "a": ("k-old", "task-a"), "b": (None, "task-b")
    }  # fmt: skip
