"""`pixmake gc`: a cached image goes once no lock has referred to it for --keep-days; everything a lock
(this one, or git's at any ref, HEAD, stash entry or the index) refers to stays, so a build still
restores it for free; anything gc cannot read stops it before it deletes anything."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from conftest import git, run_cli
from pixmake.cli import ExitCode
from pixmake.lockfile import parse_lock
from pixmake.sweep import sweep

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


def _recolour_hero(root: Path, prompt: str = RED) -> None:
    manifest = yaml.safe_load((root / "pixmake.yaml").read_text())
    manifest["targets"]["hero"]["prompt"] = prompt
    (root / "pixmake.yaml").write_text(yaml.safe_dump(manifest, sort_keys=False))


def _repository(root: Path) -> None:
    git(root, "init", "-q")
    git(root, "symbolic-ref", "HEAD", "refs/heads/main")  # whatever init.defaultBranch says
    git(root, "add", "pixmake.yaml", "pixmake.lock")
    git(root, "commit", "-q", "-m", "blue hero")


@needs_git
def test_git_add_all_never_commits_the_local_state(examples_copy: Path) -> None:
    git(examples_copy, "init", "-q")
    _build(examples_copy)
    assert (examples_copy / ".pixmake" / "objects").is_dir()
    git(examples_copy, "add", "-A")
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    staged = subprocess.run(
        ["git", "diff", "--cached", "--name-only"],
        cwd=examples_copy,
        check=True,
        capture_output=True,
        text=True,
        env=env,
    ).stdout.split()
    assert "pixmake.lock" in staged and "assets/hero-1.png" in staged
    assert [name for name in staged if name.startswith(".pixmake")] == []


def test_gc_deletes_only_images_no_lock_refers_to_and_only_once_they_are_old(examples_copy: Path) -> None:
    _build(examples_copy)
    blue = _objects(examples_copy)
    _recolour_hero(examples_copy)
    _build(examples_copy)
    unreferenced = _objects(examples_copy) - _locked(examples_copy)
    assert len(unreferenced) == 2 and unreferenced <= blue  # the blue hero's two images

    young = run_cli("-C", str(examples_copy), "gc")
    assert young.stdout.startswith("deleted 0 cached images")
    assert "2 unreferenced for less than 14 days" in young.stdout
    dry = run_cli("-C", str(examples_copy), "gc", "--keep-days", "0", "--dry-run")
    assert dry.stdout.startswith("would delete 2 cached images") and unreferenced <= _objects(examples_copy)
    swept = run_cli("-C", str(examples_copy), "gc", "--keep-days", "0")
    assert swept.exit_code == ExitCode.OK and swept.stdout.startswith("deleted 2 cached images")
    assert _objects(examples_copy) == _locked(examples_copy)

    (examples_copy / "assets/hero-1.png").unlink()  # what a lock refers to still restores for free
    restored = run_cli("-C", str(examples_copy), "build", "--emulator")
    assert restored.exit_code == ExitCode.OK and "1 restored from cache" in restored.stderr


def test_the_grace_runs_from_when_an_image_was_first_found_unreferenced_not_from_when_it_was_cached(
    examples_copy: Path,
) -> None:
    _build(examples_copy)
    _recolour_hero(examples_copy)
    _build(examples_copy)
    objects = examples_copy / ".pixmake" / "objects"
    for path in objects.glob("*/*"):
        os.utime(path, (0, 0))  # cached long ago: that does not count
    lock = parse_lock((examples_copy / "pixmake.lock").read_text())
    first = time.time()
    assert sweep(objects, lock, root=examples_copy, keep_days=14, now=first).deleted == 0
    assert sweep(objects, lock, root=examples_copy, keep_days=14, now=first + 13.9 * 86400).waiting == 2
    later = sweep(objects, lock, root=examples_copy, keep_days=14, now=first + 14 * 86400)
    assert (later.deleted, later.waiting) == (2, 0) and _objects(examples_copy) == _locked(examples_copy)


def test_a_damaged_record_of_when_images_were_found_unreferenced_restarts_their_grace(examples_copy: Path) -> None:
    """gc.json is nested past the JSON parser's depth (damage): gc counts from now, never a traceback."""
    _build(examples_copy)
    _recolour_hero(examples_copy)
    _build(examples_copy)
    objects = examples_copy / ".pixmake" / "objects"
    (objects.parent / "gc.json").write_bytes(b"[" * 100_000)
    lock = parse_lock((examples_copy / "pixmake.lock").read_text())
    swept = sweep(objects, lock, root=examples_copy, keep_days=14, now=time.time())
    assert (swept.deleted, swept.waiting) == (0, 2)


@needs_git
@pytest.mark.parametrize("keeper", ["branch", "tag", "stash", "detached-head", "index"])
def test_gc_keeps_what_git_holds_a_lock_for(keeper: str, examples_copy: Path) -> None:
    """Only git holds one of the two locks (blue or red): a branch, a tag, a stash entry, a detached HEAD
    or the index. gc keeps the images of both."""
    _build(examples_copy)
    _repository(examples_copy)
    if keeper in ("branch", "tag"):
        git(examples_copy, *(["branch", "release-1"] if keeper == "branch" else ["tag", "v1"]))
        git(examples_copy, "checkout", "-q", "-b", "red")
        git(examples_copy, "branch", "-q", "-D", "main")
    elif keeper == "detached-head":
        git(examples_copy, "checkout", "-q", "--detach")
        git(examples_copy, "branch", "-q", "-D", "main")
    elif keeper == "index":
        git(examples_copy, "checkout", "-q", "--orphan", "fresh")  # no commit keeps blue; the index does
        git(examples_copy, "branch", "-q", "-D", "main")
    _recolour_hero(examples_copy)
    _build(examples_copy)
    if keeper == "stash":
        git(examples_copy, "stash", "-q")  # red only in the stash now; blue back in the work tree
        _recolour_hero(examples_copy, RED.replace("red", "green"))
        _build(examples_copy)
        git(examples_copy, "stash", "-q")  # green is stash@{0}; red, an older entry, is stash@{1}
    kept = run_cli("-C", str(examples_copy), "gc", "--keep-days", "0")
    assert kept.exit_code == ExitCode.OK, kept.stderr
    assert kept.stdout.startswith("deleted 0 cached images"), kept.stdout


@needs_git
def test_once_git_no_longer_holds_a_lock_its_images_go(examples_copy: Path) -> None:
    _build(examples_copy)
    _repository(examples_copy)
    git(examples_copy, "tag", "v1")
    _recolour_hero(examples_copy)
    _build(examples_copy)
    git(examples_copy, "commit", "-q", "-am", "red hero")
    assert run_cli("-C", str(examples_copy), "gc", "--keep-days", "0").stdout.startswith("deleted 0 cached images")
    git(examples_copy, "tag", "-d", "v1")
    swept = run_cli("-C", str(examples_copy), "gc", "--keep-days", "0")
    assert swept.stdout.startswith("deleted 2 cached images") and _objects(examples_copy) == _locked(examples_copy)


@needs_git
def test_a_lock_gc_cannot_read_at_some_ref_stops_it_before_anything_is_deleted(examples_copy: Path) -> None:
    _build(examples_copy)
    _repository(examples_copy)
    git(examples_copy, "checkout", "-q", "-b", "broken")
    (examples_copy / "pixmake.lock").write_text('{"version": 1, "targets": {')
    git(examples_copy, "commit", "-q", "-am", "a bad merge")
    git(examples_copy, "checkout", "-q", "main")
    _recolour_hero(examples_copy)
    _build(examples_copy)
    before = _objects(examples_copy)
    outcome = run_cli("-C", str(examples_copy), "gc", "--keep-days", "0")
    assert outcome.exit_code == ExitCode.USER_ERROR and "Traceback" not in outcome.stderr
    [line] = outcome.stderr.splitlines()
    assert line.startswith("pixmake: error: pixmake.lock at refs/heads/broken cannot be read (")
    assert line.endswith(  # the way out is on that branch, not in the working tree the inner advice speaks of
        "; mend it on branch refs/heads/broken and commit, or delete that branch if it is done with; "
        "nothing was deleted"
    )
    assert _objects(examples_copy) == before


@needs_git
def test_in_a_git_work_tree_without_git_on_path_gc_deletes_nothing(
    examples_copy: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _build(examples_copy)
    _repository(examples_copy)
    _recolour_hero(examples_copy)
    _build(examples_copy)
    before = _objects(examples_copy)
    monkeypatch.setenv("PATH", str(tmp_path / "no-git-here"))
    outcome = run_cli("-C", str(examples_copy), "gc", "--keep-days", "0")
    assert outcome.exit_code == ExitCode.USER_ERROR and "git is not on PATH" in outcome.stderr
    assert _objects(examples_copy) == before


@pytest.mark.parametrize("problem", ["nan-days", "cache-outside-the-project"])
def test_gc_refuses_what_it_cannot_judge(problem: str, examples_copy: Path, tmp_path: Path) -> None:
    _build(examples_copy)
    _recolour_hero(examples_copy)
    _build(examples_copy)
    days = "0"
    if problem == "nan-days":
        days = "nan"
    else:
        shared = tmp_path / "shared-objects"
        (examples_copy / ".pixmake" / "objects").rename(shared)
        (examples_copy / ".pixmake" / "objects").symlink_to(shared)
    before = _objects(examples_copy)
    outcome = run_cli("-C", str(examples_copy), "gc", "--keep-days", days)
    assert outcome.exit_code == ExitCode.USER_ERROR and "Traceback" not in outcome.stderr
    assert _objects(examples_copy) == before


def test_gc_waits_for_no_build_it_refuses_while_one_holds_the_project(examples_copy: Path) -> None:
    from filelock import FileLock

    _build(examples_copy)
    with FileLock(str(examples_copy / ".pixmake" / "build.lock")):
        (examples_copy / ".pixmake" / "build.pid").write_text(f"{os.getpid()}\n")
        outcome = run_cli("-C", str(examples_copy), "gc", "--keep-days", "0")
    assert outcome.exit_code == ExitCode.USER_ERROR and "another pixmake build is running" in outcome.stderr


def test_a_command_refused_while_another_holds_the_project_names_that_command(examples_copy: Path) -> None:
    from pixmake.store import project_lock

    _build(examples_copy)
    with project_lock(examples_copy / ".pixmake", "gc"):
        outcome = run_cli("-C", str(examples_copy), "build", "--emulator")
    assert outcome.exit_code == ExitCode.USER_ERROR
    assert f"another pixmake gc is running in this project (pid {os.getpid()})" in outcome.stderr


def test_gc_sweeps_a_state_folder_linked_to_a_ci_cache_but_not_an_object_cache_shared_elsewhere(
    examples_copy: Path, tmp_path: Path
) -> None:
    """``.pixmake`` linked to a CI cache is the project's own state (README, In CI); ``.pixmake/objects``
    linked to a folder outside may be other projects' cache too, and is left alone."""
    cache = tmp_path / "ci-cache"
    cache.mkdir()
    os.symlink(cache, examples_copy / ".pixmake")
    _build(examples_copy)
    _recolour_hero(examples_copy)
    _build(examples_copy)
    assert len(_objects(examples_copy) - _locked(examples_copy)) == 2
    swept = run_cli("-C", str(examples_copy), "gc", "--keep-days", "0")
    assert swept.exit_code == ExitCode.OK and swept.stdout.startswith("deleted 2 cached images"), swept.stderr
    assert _objects(examples_copy) == _locked(examples_copy)

    shared = tmp_path / "shared-objects"
    (cache / "objects").rename(shared)
    os.symlink(shared, cache / "objects")
    refused = run_cli("-C", str(examples_copy), "gc", "--keep-days", "0")
    assert refused.exit_code == ExitCode.USER_ERROR and "leads outside the project (a symlink?)" in refused.stderr
    assert _objects(examples_copy) == _locked(examples_copy)  # read through the link: nothing of it deleted
