"""`pixmake gc`: cached images no lock refers to are deleted once old enough; everything a lock (this one,
or the one at any git branch or tag) refers to stays, so a build still restores it for free."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from conftest import run_cli
from pixmake.cli import ExitCode
from pixmake.lockfile import parse_lock

RED = "Premium ad of a red ceramic mug on a wooden table, ${style}"
needs_git = pytest.mark.skipif(shutil.which("git") is None, reason="git is not on PATH")


def _objects(root: Path) -> set[str]:
    return {p.name for p in (root / ".pixmake" / "objects").glob("*/*")}


def _locked(root: Path) -> set[str]:
    lock = parse_lock((root / "pixmake.lock").read_text())
    return {o.sha256 for entry in lock.entries.values() for o in (*entry.outputs, *entry.stale)}


def _build(root: Path) -> None:
    outcome = run_cli("-C", str(root), "build", "--emulator")
    assert outcome.exit_code == ExitCode.OK, outcome.stderr


def _recolour_hero(root: Path) -> None:
    manifest = yaml.safe_load((root / "pixmake.yaml").read_text())
    manifest["targets"]["hero"]["prompt"] = RED
    (root / "pixmake.yaml").write_text(yaml.safe_dump(manifest, sort_keys=False))


def _git(root: Path, *args: str) -> None:
    identity = ["-c", "user.name=pixmake tests", "-c", "user.email=tests@pixmake.invalid", "-c", "commit.gpgsign=false"]
    subprocess.run(["git", *identity, *args], cwd=root, check=True, capture_output=True)


def test_gc_deletes_only_images_no_lock_refers_to_and_only_once_they_are_old(examples_copy: Path) -> None:
    _build(examples_copy)
    blue = _objects(examples_copy)
    _recolour_hero(examples_copy)
    _build(examples_copy)
    unreferenced = _objects(examples_copy) - _locked(examples_copy)
    assert len(unreferenced) == 2 and unreferenced <= blue  # the blue hero's two images

    young = run_cli("-C", str(examples_copy), "gc")
    assert young.stdout.startswith("deleted 0 cached images") and "2 younger than 14 days" in young.stdout
    dry = run_cli("-C", str(examples_copy), "gc", "--keep-days", "0", "--dry-run")
    assert dry.stdout.startswith("would delete 2 cached images") and unreferenced <= _objects(examples_copy)
    swept = run_cli("-C", str(examples_copy), "gc", "--keep-days", "0")
    assert swept.exit_code == ExitCode.OK and swept.stdout.startswith("deleted 2 cached images")
    assert _objects(examples_copy) == _locked(examples_copy)

    (examples_copy / "assets/hero-1.png").unlink()  # what a lock refers to still restores for free
    restored = run_cli("-C", str(examples_copy), "build")  # no key, no emulator: restoring pays nothing
    assert restored.exit_code == ExitCode.OK and "1 restored from cache" in restored.stderr


@needs_git
@pytest.mark.parametrize("keeper", ["branch", "tag"])
def test_gc_keeps_what_the_lock_at_a_git_branch_or_tag_refers_to(keeper: str, examples_copy: Path) -> None:
    _build(examples_copy)
    _git(examples_copy, "init", "-q")
    _git(examples_copy, "symbolic-ref", "HEAD", "refs/heads/main")  # whatever init.defaultBranch says
    _git(examples_copy, "add", "pixmake.yaml", "pixmake.lock")
    _git(examples_copy, "commit", "-q", "-m", "blue hero")
    _git(examples_copy, *(["branch", "release-1"] if keeper == "branch" else ["tag", "v1"]))
    _recolour_hero(examples_copy)
    _build(examples_copy)
    _git(examples_copy, "commit", "-q", "-am", "red hero")
    kept = run_cli("-C", str(examples_copy), "gc", "--keep-days", "0")
    assert kept.stdout.startswith("deleted 0 cached images") and "3 locks read" in kept.stdout  # + main, + keeper
    _git(examples_copy, *(["branch", "-D", "release-1"] if keeper == "branch" else ["tag", "-d", "v1"]))
    swept = run_cli("-C", str(examples_copy), "gc", "--keep-days", "0")
    assert swept.stdout.startswith("deleted 2 cached images") and "2 locks read" in swept.stdout


@needs_git
def test_a_lock_gc_cannot_read_at_some_ref_stops_it_before_anything_is_deleted(examples_copy: Path) -> None:
    _build(examples_copy)
    _git(examples_copy, "init", "-q")
    _git(examples_copy, "symbolic-ref", "HEAD", "refs/heads/main")  # whatever init.defaultBranch says
    _git(examples_copy, "add", "pixmake.yaml", "pixmake.lock")
    _git(examples_copy, "commit", "-q", "-m", "built")
    _git(examples_copy, "checkout", "-q", "-b", "broken")
    (examples_copy / "pixmake.lock").write_text('{"version": 1, "targets": {')
    _git(examples_copy, "commit", "-q", "-am", "a bad merge")
    _git(examples_copy, "checkout", "-q", "main")
    _recolour_hero(examples_copy)
    _build(examples_copy)
    before = _objects(examples_copy)
    outcome = run_cli("-C", str(examples_copy), "gc", "--keep-days", "0")
    assert outcome.exit_code == ExitCode.USER_ERROR and "Traceback" not in outcome.stderr
    [line] = outcome.stderr.splitlines()
    assert "refs/heads/broken:pixmake.lock" in line and line.endswith(
        "nothing was deleted (the images it records are unknown)"
    )
    assert _objects(examples_copy) == before


def test_gc_waits_for_no_build_it_refuses_while_one_holds_the_project(examples_copy: Path) -> None:
    from filelock import FileLock

    _build(examples_copy)
    with FileLock(str(examples_copy / ".pixmake" / "build.lock")):
        (examples_copy / ".pixmake" / "build.pid").write_text(f"{os.getpid()}\n")
        outcome = run_cli("-C", str(examples_copy), "gc", "--keep-days", "0")
    assert outcome.exit_code == ExitCode.USER_ERROR and "another pixmake build is running" in outcome.stderr
