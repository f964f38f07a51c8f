"""Paid tasks of an interrupted build: planned as RESUME (already paid), collected by the next build, never paid twice.

A build is stopped with Ctrl-C (SIGINT to a subprocess) right after the provider accepted its submit, so the
task is journaled and paid; then ``plan`` and ``build`` run in-process against the same emulator.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from conftest import PACKAGE_ROOT, TEST_KEY, journal_submit, run_cli
from pixmake.emulator import EmulatorConfig, EmulatorServer
from pixmake.journal import read_journal
from pixmake.lockfile import Lock, parse_lock


def _journaled_tasks(root: Path) -> dict[str, str]:
    path = root / ".pixmake" / "journal.jsonl"
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []
    return {r["target"]: r["task_id"] for r in records if r.get("op") == "task"}


def _build_env(server: EmulatorServer) -> dict[str, str]:
    """A user's environment pointed at the test emulator, running the pixmake under test."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIXMAKE_", "TOAPIS_"))}
    return env | {
        "PIXMAKE_BASE_URL": server.url,
        "TOAPIS_API_KEY": TEST_KEY,
        "PIXMAKE_POLL_INTERVAL": "0.01",
        "PYTHONPATH": os.pathsep.join([str(PACKAGE_ROOT), os.environ.get("PYTHONPATH", "")]),
    }


def _building(
    root: Path, server: EmulatorServer, log: Path, *args: str, until: Callable[[], bool] | None = None
) -> subprocess.Popen[bytes]:
    """``pixmake build ARGS`` running in a subprocess, returned once ``until()`` holds (by default: hero's task
    is paid, its task id journaled); the build must not end before."""
    command = [sys.executable, "-m", "pixmake", "-C", str(root), "build", *args]
    with log.open("ab") as out:
        process = subprocess.Popen(command, env=_build_env(server), stdout=out, stderr=out)
    deadline = time.monotonic() + 30
    while not (until() if until is not None else "hero" in _journaled_tasks(root)):
        assert time.monotonic() < deadline and process.poll() is None, log.read_text()
        time.sleep(0.01)
    return process


def _interrupted_build(
    root: Path, server: EmulatorServer, log: Path, *args: str, stop: signal.Signals = signal.SIGINT
) -> str:
    """Run ``pixmake build ARGS`` in a subprocess, Ctrl-C it (or send ``stop``) once hero's task is paid.

    Returns hero's task id. SIGTERM (a CI runner cancelling the job) stops it as gracefully as Ctrl-C.
    """
    server.emulator.reset(EmulatorConfig(latency=1.0, submit_rps=None, query_rps=None))
    process = _building(root, server, log, *args)
    process.send_signal(stop)
    code, word = (143, "terminated") if stop is signal.SIGTERM else (130, "interrupted")
    assert process.wait(timeout=30) == code, log.read_text()
    lines = log.read_text().splitlines()
    assert lines[-1] == f"pixmake: {word}; finished targets are locked, in-flight tasks resume next build"
    assert lines[-2].strip(), "no empty line before the interrupt message"
    assert server.emulator.ledger.charged_images == 1
    return _journaled_tasks(root)["hero"]


def test_a_key_refused_after_a_submit_was_paid_exits_1_not_the_nothing_ran_3(
    hero: Path, provider_env: EmulatorServer, tmp_path: Path
) -> None:
    """The review (the contract): exit 3 means "nothing ran"; a key revoked mid-build, its polls answered 401
    after hero's submit was charged, exited 3, and a CI job reading 3 as "nothing spent" may drop .pixmake/."""
    provider_env.emulator.reset(EmulatorConfig(latency=1.0, submit_rps=None, query_rps=None))
    log = tmp_path / "build.log"
    process = _building(hero, provider_env, log)
    config = provider_env.emulator.config
    provider_env.emulator.reconfigure(dataclasses.replace(config, api_key="sk-revoked-meanwhile"))
    assert process.wait(timeout=30) == 1, log.read_text()
    assert "pixmake: error: HTTP 401: API key refused" in log.read_text()
    assert provider_env.emulator.ledger.charged_images == 1 and "hero" in _journaled_tasks(hero)


def test_a_key_refused_while_collecting_a_paid_task_exits_1_and_the_task_stays_journaled(
    hero: Path, provider_env: EmulatorServer, tmp_path: Path
) -> None:
    """Nothing paid by this build, but a paid task is still journaled: "nothing ran" (exit 3) would tell a CI
    job it may drop .pixmake/; --json's result names the target whose task waits there."""
    _interrupted_build(hero, provider_env, tmp_path / "build.log")
    config = provider_env.emulator.config
    provider_env.emulator.reconfigure(dataclasses.replace(config, api_key="sk-revoked-meanwhile"))
    outcome = run_cli("-C", str(hero), "build", "--json")
    assert outcome.exit_code == 1, outcome.stderr
    assert json.loads(outcome.stdout.splitlines()[-1])["result"]["journaled"] == ["hero"]
    assert "hero" in _journaled_tasks(hero) and provider_env.emulator.ledger.charged_images == 1


def _edit_manifest(root: Path, old: str, new: str) -> None:
    """The manifest with ``old`` written as ``new`` (a rename, an edited prompt) while a build is interrupted."""
    manifest = root / "pixmake.yaml"
    manifest.write_text(manifest.read_text().replace(old, new))


@pytest.fixture
def hero(make_project: Callable[..., Path]) -> Path:
    return make_project({"version": 1, "targets": {"hero": {"prompt": "a red mug", "out": "hero.png"}}})


@pytest.mark.parametrize(
    ("args", "stop"),
    [((), signal.SIGINT), (("--replace", "hero"), signal.SIGINT), ((), signal.SIGTERM)],
    ids=["interrupted-create", "interrupted-replace", "terminated-create"],
)
def test_a_paid_task_of_an_interrupted_build_is_planned_as_resume_and_collected_without_paying_again(
    hero: Path, provider_env: EmulatorServer, tmp_path: Path, args: tuple[str, ...], stop: signal.Signals
) -> None:
    if args:
        assert run_cli("-C", str(hero), "build").exit_code == 0  # locked: a plain plan would say unchanged
    task_id = _interrupted_build(hero, provider_env, tmp_path / "build.log", *args, stop=stop)

    plan = run_cli("-C", str(hero), "plan")
    assert plan.stdout.splitlines() == [
        f"> resume     hero: collecting paid task {task_id} from an interrupted build",
        "Plan: 1 to resume (already paid); 0 images to generate",
    ]
    assert run_cli("-C", str(hero), "plan", "--check").exit_code == 2
    document = json.loads(run_cli("-C", str(hero), "plan", "--json").stdout)
    assert document["images"] == 0 and document["actions"][0]["action"] == "resume"

    outcome = run_cli("-C", str(hero), "build", "--json")
    assert outcome.exit_code == 0, outcome.stderr
    events = [json.loads(line) for line in outcome.stdout.splitlines()]
    assert events[0]["event"] == "build_started" and events[0]["images"] == 0
    assert events[-1]["result"]["resumed"] == ["hero"] and events[-1]["result"]["images_generated"] == 0
    summary = outcome.stderr.strip().splitlines()
    assert summary[-1].startswith("build finished in ") and "1 resumed (already paid)" in summary[-1]
    assert "0 generated (0 images paid)" in summary[-1]
    assert provider_env.emulator.ledger.charged_images == 1  # no second charge
    assert len(provider_env.emulator.submits()) == 1
    assert parse_lock((hero / "pixmake.lock").read_text()).entries["hero"].task_id == task_id
    assert _journaled_tasks(hero) == {}
    assert run_cli("-C", str(hero), "plan", "--check").exit_code == 0


def test_a_paid_task_of_a_target_renamed_while_its_build_was_interrupted_is_collected_for_the_new_name(
    hero: Path, provider_env: EmulatorServer, tmp_path: Path
) -> None:
    """Renaming a target changes nothing, not even while its task is in flight: the task is collected."""
    task_id = _interrupted_build(hero, provider_env, tmp_path / "build.log")
    _edit_manifest(hero, "hero:", "hero-v2:")
    assert run_cli("-C", str(hero), "plan").stdout.splitlines() == [
        f"> resume     hero-v2: collecting paid task {task_id} from an interrupted build (for target 'hero', "
        "renamed since: same inputs)",
        "Plan: 1 to resume (already paid); 0 images to generate",
    ]
    outcome = run_cli("-C", str(hero), "build")
    assert outcome.exit_code == 0, outcome.stderr
    assert provider_env.emulator.ledger.charged_images == 1 and len(provider_env.emulator.submits()) == 1
    lock = parse_lock((hero / "pixmake.lock").read_text())
    assert list(lock.entries) == ["hero-v2"] and lock.entries["hero-v2"].task_id == task_id
    assert _journaled_tasks(hero) == {} and run_cli("-C", str(hero), "plan", "--check").exit_code == 0


def test_a_paid_task_for_inputs_its_target_no_longer_has_is_collected_by_the_target_that_has_them(
    hero: Path, provider_env: EmulatorServer, tmp_path: Path
) -> None:
    """hero copied to hero-alt, then hero's prompt edited, while hero's task was in flight: hero-alt collects the
    paid task (hero pays for its new prompt), and a crash right after hero's new submit loses neither task."""
    task_id = _interrupted_build(hero, provider_env, tmp_path / "build.log")
    manifest = hero / "pixmake.yaml"
    document = yaml.safe_load(manifest.read_text())
    document["targets"]["hero-alt"] = {"prompt": "a red mug", "out": "hero-alt.png"}
    document["targets"]["hero"]["prompt"] = "a blue mug"
    manifest.write_text(yaml.safe_dump(document, sort_keys=False))
    assert run_cli("-C", str(hero), "plan").stdout.splitlines() == [
        "+ create     hero: not in the lockfile",
        f"> resume     hero-alt: collecting paid task {task_id} from an interrupted build (for target 'hero', "
        "whose inputs these were)",
        "Plan: 1 to create, 1 to resume (already paid); 1 image to generate",
    ]
    # Killed once hero's new task is journaled (hero-alt's download held up): the journal still has both.
    config = provider_env.emulator.config
    provider_env.emulator.reconfigure(dataclasses.replace(config, p_slow_download=1.0, slow_download_seconds=30))

    def renewed() -> bool:  # hero's new task is journaled
        return _journaled_tasks(hero).get("hero", task_id) != task_id

    process = _building(hero, provider_env, tmp_path / "killed.log", until=renewed)
    process.kill()
    process.wait(timeout=30)
    _, pending = read_journal(hero / ".pixmake" / "journal.jsonl", Lock({}))
    assert pending["hero-alt"].task_id == task_id and pending["hero"].task_id not in (None, task_id)
    provider_env.emulator.reconfigure(config)
    outcome = run_cli("-C", str(hero), "build")
    assert outcome.exit_code == 0, outcome.stderr
    assert provider_env.emulator.ledger.charged_images == 2 and len(provider_env.emulator.submits()) == 2
    lock = parse_lock((hero / "pixmake.lock").read_text())
    assert lock.entries["hero-alt"].task_id == task_id and lock.entries["hero"].task_id != task_id
    assert _journaled_tasks(hero) == {} and run_cli("-C", str(hero), "plan", "--check").exit_code == 0


def test_forget_takes_the_name_the_plan_gives_a_moved_task_before_any_build_rewrote_the_journal(
    hero: Path, provider_env: EmulatorServer, tmp_path: Path
) -> None:
    """The review: `plan` said "resume hero-v2 … (for target 'hero', renamed since)", and `forget hero-v2`
    answered that no task was journaled for it (the journal names it hero until a build rewrites it)."""
    _interrupted_build(hero, provider_env, tmp_path / "build.log")
    _edit_manifest(hero, "hero:", "hero-v2:")
    outcome = run_cli("-C", str(hero), "forget", "hero-v2")
    assert outcome.exit_code == 0, outcome.stderr
    assert run_cli("-C", str(hero), "plan").stdout.splitlines()[-1] == "Plan: 1 to create; 1 image to generate"
    assert run_cli("-C", str(hero), "forget", "hero").exit_code == 3  # not the plan's name of any task


def test_a_refused_result_of_a_renamed_targets_task_names_the_journaled_name_for_forget(
    hero: Path, provider_env: EmulatorServer, tmp_path: Path
) -> None:
    """`forget` takes the name the journal knows, which the build's last fold makes the new one: the hint's."""
    _interrupted_build(hero, provider_env, tmp_path / "build.log")
    _edit_manifest(hero, "hero:", "hero-v2:")
    config = provider_env.emulator.config
    provider_env.emulator.reconfigure(dataclasses.replace(config, p_403_download=1.0))
    refused = run_cli("-C", str(hero), "build")
    assert refused.exit_code == 1
    way_out = f"(if that lasts: pixmake -C {hero} forget hero-v2, and the next build pays again)"
    assert way_out in refused.stderr, refused.stderr
    assert run_cli("-C", str(hero), "forget", "hero-v2").exit_code == 0


def test_a_deleted_targets_task_is_collected_for_a_twin_that_holds_placeholders(
    make_project: Callable[..., Path], provider_env: EmulatorServer, tmp_path: Path
) -> None:
    """Placeholders are no images to keep: the twin's real build would pay, so it collects hero's paid task."""
    targets = {name: {"prompt": "a red mug", "out": f"{name}.png"} for name in ("hero", "twin")}
    root = make_project({"version": 1, "targets": targets})
    assert run_cli("-C", str(root), "build", "--emulator").exit_code == 0
    _interrupted_build(root, provider_env, tmp_path / "build.log")  # charged for hero's one image; twin copies it
    (root / "pixmake.yaml").write_text(yaml.safe_dump({"version": 1, "targets": {"twin": targets["twin"]}}))
    outcome = run_cli("-C", str(root), "build", "--prune")
    assert outcome.exit_code == 0, outcome.stderr
    assert provider_env.emulator.ledger.charged_images == 1 and "1 resumed (already paid)" in outcome.stderr


def test_a_paid_task_of_a_deleted_target_never_replaces_its_locked_twins_images(
    make_project: Callable[..., Path], provider_env: EmulatorServer, tmp_path: Path
) -> None:
    """hero re-rolled (build --replace), interrupted, then deleted: twin, locked for the same inputs, keeps its
    images; hero's task is dropped as any task of a target gone from the manifest."""
    targets = {name: {"prompt": "a red mug", "out": f"{name}.png"} for name in ("hero", "twin")}
    root = make_project({"version": 1, "targets": targets})
    assert run_cli("-C", str(root), "build").exit_code == 0
    before = (root / "twin.png").read_bytes()
    _interrupted_build(root, provider_env, tmp_path / "build.log", "--replace", "hero")
    manifest = root / "pixmake.yaml"
    manifest.write_text(yaml.safe_dump({"version": 1, "targets": {"twin": targets["twin"]}}))
    lines = run_cli("-C", str(root), "plan").stdout.splitlines()
    assert any(line.startswith("x drop       hero: paid task ") for line in lines), lines
    assert not any("twin" in line for line in lines), lines  # unchanged
    assert (
        lines[-1] == "Plan: 1 orphaned, 1 unchanged, 1 interrupted task to drop (target removed); 0 images to generate"
    )
    assert run_cli("-C", str(root), "build").exit_code == 0
    assert (root / "twin.png").read_bytes() == before


@pytest.mark.parametrize("journaled", [True, False], ids=["keep-journaled", "journal-rewritten-by-an-older-pixmake"])
def test_a_paid_task_for_more_images_of_a_target_is_collected_with_the_images_it_keeps(
    hero: Path, provider_env: EmulatorServer, tmp_path: Path, journaled: bool
) -> None:
    """n 1 → 2 pays for one image; interrupted after that submit, the next build collects it after the kept one
    (the plan's, when an older pixmake rewrote the journal without the images the submit keeps)."""
    assert run_cli("-C", str(hero), "build").exit_code == 0
    first = (hero / "hero.png").read_bytes()
    _edit_manifest(hero, "a red mug", "a red mug\n    n: 2")
    task_id = _interrupted_build(hero, provider_env, tmp_path / "build.log")  # charged for one image (it resets)
    journal = hero / ".pixmake" / "journal.jsonl"
    records = [json.loads(line) for line in journal.read_text().splitlines()]
    assert [len(r["keep"]) for r in records if r["op"] == "submit"] == [1]
    if not journaled:
        journal.write_text("".join(json.dumps({k: v for k, v in r.items() if k != "keep"}) + "\n" for r in records))
    assert run_cli("-C", str(hero), "plan").stdout.splitlines()[-1] == (
        "Plan: 1 to resume (already paid), 1 stale output to prune; 0 images to generate"  # hero.png
    )
    outcome = run_cli("-C", str(hero), "build", "--prune")
    assert outcome.exit_code == 0, outcome.stderr
    assert provider_env.emulator.ledger.charged_images == 1  # nothing paid again
    entry = parse_lock((hero / "pixmake.lock").read_text()).entries["hero"]
    assert (entry.n, entry.task_id, [o.path for o in entry.outputs]) == (2, task_id, ["hero-1.png", "hero-2.png"])
    assert (hero / "hero-1.png").read_bytes() == first
    assert run_cli("-C", str(hero), "plan", "--check").exit_code == 0


def test_a_paid_task_for_inputs_changed_since_is_dropped_with_a_warning(
    hero: Path, provider_env: EmulatorServer, tmp_path: Path
) -> None:
    task_id = _interrupted_build(hero, provider_env, tmp_path / "build.log")
    _edit_manifest(hero, "a red mug", "a green mug")

    plan = run_cli("-C", str(hero), "plan")
    assert plan.stdout.splitlines() == [
        "+ create     hero: not in the lockfile",
        f"x drop       hero: paid task {task_id} from an interrupted build is dropped, not collected: "
        "it was paid for earlier inputs of this target",
        "Plan: 1 to create, 1 interrupted task to drop (inputs changed); 1 image to generate",
    ]
    outcome = run_cli("-C", str(hero), "build")
    assert outcome.exit_code == 0, outcome.stderr
    assert (
        "1 interrupted task dropped (for inputs since changed or built by another build, targets removed, or an "
        "emulator's)" in outcome.stderr
    )
    assert [r.json["prompt"] for r in provider_env.emulator.submits() if isinstance(r.json, dict)][-1] == "a green mug"
    assert provider_env.emulator.ledger.charged_images == 2  # the announced image, once
    assert _journaled_tasks(hero) == {}
    assert run_cli("-C", str(hero), "plan", "--check").exit_code == 0


def test_building_a_twin_alone_collects_the_other_twins_paid_task_instead_of_paying_again(
    make_project: Callable[..., Path], provider_env: EmulatorServer, tmp_path: Path
) -> None:
    root = make_project(
        {"version": 1, "targets": {name: {"prompt": "a red mug", "out": f"{name}.png"} for name in ("hero", "twin")}}
    )
    task_id = _interrupted_build(root, provider_env, tmp_path / "build.log", "hero")

    plan = run_cli("-C", str(root), "plan", "twin")
    assert plan.stdout.splitlines() == [
        "< restore    twin: same inputs as target 'hero', whose paid task this build collects",
        f"> resume     hero: collecting paid task {task_id} from an interrupted build; "
        "not selected, but target 'twin' has its inputs and copies its images",
        "Plan: 1 to restore, 1 to resume (already paid); 0 images to generate",
    ]
    outcome = run_cli("-C", str(root), "build", "twin")
    assert outcome.exit_code == 0, outcome.stderr
    assert provider_env.emulator.ledger.charged_images == 1  # hero's task, once
    assert (root / "twin.png").read_bytes() == (root / "hero.png").read_bytes()
    assert _journaled_tasks(root) == {}
    assert run_cli("-C", str(root), "plan", "--check").exit_code == 0


def test_a_symlink_swapped_in_during_a_build_cannot_lead_a_write_outside_the_root(
    make_project: Callable[..., Path], provider_env: EmulatorServer, tmp_path: Path
) -> None:
    """The out directory becomes a symlink to outside after the submit: the write is refused, the paid
    result is locked from the object cache, and once the directory is back the next build restores it."""
    root = make_project({"version": 1, "targets": {"hero": {"prompt": "a red mug", "out": "assets/hero.png"}}})
    (root / "assets").mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    provider_env.emulator.reset(EmulatorConfig(latency=1.0, submit_rps=None, query_rps=None))
    command = [sys.executable, "-m", "pixmake", "-C", str(root), "build"]
    process = subprocess.Popen(
        command, env=_build_env(provider_env), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 30
    while "hero" not in _journaled_tasks(root):
        assert time.monotonic() < deadline and process.poll() is None
        time.sleep(0.01)
    (root / "assets").rmdir()
    (root / "assets").symlink_to(outside, target_is_directory=True)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 1, stderr
    assert "leaves the project root" in stderr
    assert list(outside.iterdir()) == []
    assert provider_env.emulator.ledger.charged_images == 1

    (root / "assets").unlink()
    (root / "assets").mkdir()
    outcome = run_cli("-C", str(root), "build")
    assert outcome.exit_code == 0, outcome.stderr
    assert (root / "assets" / "hero.png").is_file()
    assert provider_env.emulator.ledger.charged_images == 1


def test_a_stale_state_folders_task_for_inputs_built_since_is_dropped_not_collected_over_them(
    examples_copy: Path, provider_env: EmulatorServer
) -> None:
    """The CI review: job X was killed with logo-tile's task journaled; job Y built logo-tile and pushed;
    job Z restored X's .pixmake/: it collected X's task over Y's committed image (a new image in the next
    commit for an unchanged target). Now the task is dropped: the committed image stays."""
    assert run_cli("-C", str(examples_copy), "build").exit_code == 0  # job Y's build, committed
    logo = examples_copy / "assets/logo-tile.png"
    committed, charged = logo.read_bytes(), provider_env.emulator.ledger.charged_images
    journal_submit(examples_copy, "logo-tile", "pixmake-x-1", over=None)  # job X's, sent before Y's lock
    planned = run_cli("-C", str(examples_copy), "plan")
    assert planned.stdout.splitlines()[-1] == (
        "Plan: 4 unchanged, 1 interrupted task to drop (built already); 0 images to generate"
    )
    assert run_cli("-C", str(examples_copy), "build").exit_code == 0
    assert logo.read_bytes() == committed and provider_env.emulator.ledger.charged_images == charged
    assert run_cli("-C", str(examples_copy), "plan", "--check").exit_code == 0  # dropped from the journal


def test_a_journaled_task_id_the_provider_now_gives_another_request_is_not_collected(
    hero: Path, provider_env: EmulatorServer, tmp_path: Path
) -> None:
    """The review (a long build): an emulator restarted handed out the same task ids again, and a resumed
    build locked another project's image as its own, silently. The status echoes the client_business_id
    the task was sent with: an id naming another request's task is looked up by our own id instead."""
    from pixmake import api
    from pixmake.journal import Journal

    other = tmp_path / "other"
    other.mkdir()
    (other / "pixmake.yaml").write_text("version: 1\ntargets:\n  shot: {prompt: a blue teapot, out: shot.png}\n")
    assert run_cli("-C", str(other), "build").exit_code == 0
    reissued = parse_lock((other / "pixmake.lock").read_text()).entries["shot"].task_id
    assert reissued is not None
    journal_submit(hero, "hero", "pixmake-hero-0")  # then its task id came back: the one now another's
    project = api.open_project(hero)
    [action] = api.plan(project).plan.actions
    journal = Journal(project.journal)
    journal.open()
    journal.accepted("hero", action.key or "", "pixmake-hero-0", reissued)
    journal.close()
    charged = provider_env.emulator.ledger.charged_images
    outcome = run_cli("-C", str(hero), "build")
    assert outcome.exit_code == 1 and not (hero / "hero.png").exists()  # not the other's image
    assert f"task {reissued} now names another request's task, and none was found by the id it was sent with" in (
        outcome.stderr
    )
    assert provider_env.emulator.ledger.charged_images == charged  # a mismatch alone never pays (an echo reworded?)
    assert run_cli("-C", str(hero), "forget", "hero").exit_code == 0  # the way out it names
    assert run_cli("-C", str(hero), "build").exit_code == 0
    assert (hero / "hero.png").read_bytes() != (other / "shot.png").read_bytes()
    assert parse_lock((hero / "pixmake.lock").read_text()).entries["hero"].task_id != reissued
    assert provider_env.emulator.ledger.charged_images == charged + 1


def test_a_planned_resume_the_provider_lost_is_paid_again_out_loud(
    hero: Path, provider_env: EmulatorServer, tmp_path: Path
) -> None:
    """The review (a long build): the plan said "1 to resume (already paid); 0 images to generate", the build
    paid for the lost task again and no line said why; the bill passed the plan's in silence."""
    task_id = _interrupted_build(hero, provider_env, tmp_path / "build.log")
    provider_env.emulator.reset()  # the provider lost its tasks (a restarted emulator, say)
    assert run_cli("-C", str(hero), "plan").stdout.splitlines()[-1] == (
        "Plan: 1 to resume (already paid); 0 images to generate"
    )
    outcome = run_cli("-C", str(hero), "build")
    assert outcome.exit_code == 0, outcome.stderr
    [paid_again] = [line for line in outcome.stderr.splitlines() if "paid again" in line]
    assert paid_again.endswith(
        "its interrupted build's task was unknown to the provider, so it was submitted again (not in the plan)"
    )
    assert task_id not in paid_again  # the new task's id
    assert (
        "1 image paid beyond the plan (interrupted builds' tasks the provider no longer had, submitted again)"
        in (outcome.stderr.splitlines()[-1])
    )
    assert provider_env.emulator.ledger.charged_images == 1  # the reset ledger: this build's one image


def test_a_paid_task_is_collected_though_its_reference_was_saved_again_with_the_same_pixels_meanwhile(
    make_project: Callable[..., Path], provider_env: EmulatorServer, tmp_path: Path
) -> None:
    """The diff review: an optimiser run over the repository while a build was interrupted had the next
    build drop the paid task (paid for the reference's old bytes) and pay again."""
    from PIL import Image

    image = Image.new("RGB", (64, 64), (200, 30, 30))
    image.putpixel((3, 4), (1, 2, 3))
    encoded = io.BytesIO()
    image.save(encoded, "PNG", compress_level=9)
    root = make_project(
        {"version": 1, "targets": {"hero": {"prompt": "a red mug", "references": ["ref.png"], "out": "hero.png"}}},
        {"ref.png": encoded.getvalue()},
    )
    assert run_cli("-C", str(root), "build").exit_code == 0  # the lock records what ref.png shows
    _edit_manifest(root, "a red mug", "a blue mug")
    task_id = _interrupted_build(root, provider_env, tmp_path / "build.log")
    image.save(root / "ref.png", "PNG", compress_level=0)  # other bytes, the same pixels
    assert run_cli("-C", str(root), "plan").stdout.splitlines()[0] == (
        f"> resume     hero: collecting paid task {task_id} from an interrupted build"
    )
    submits = len(provider_env.emulator.submits())
    built = run_cli("-C", str(root), "build")
    assert built.exit_code == 0, built.stderr
    assert provider_env.emulator.ledger.charged_images == 1 and len(provider_env.emulator.submits()) == submits
    entry = parse_lock((root / "pixmake.lock").read_text()).entries["hero"]
    assert entry.task_id == task_id and entry.prompt == "a blue mug"
    assert entry.references[0].sha256 == hashlib.sha256((root / "ref.png").read_bytes()).hexdigest()
    assert run_cli("-C", str(root), "plan", "--check").exit_code == 0
