"""Locked images git still holds: found only when git has exactly the locked bytes at the output path."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import pytest

from conftest import git
from pixmake.gitblobs import Committed, committed_images, read_blobs

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="needs git")


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_only_the_locked_bytes_at_their_path_in_the_index_or_head_are_found(tmp_path: Path) -> None:
    root = tmp_path / "repo" / "project"  # a project in a folder of the repository: paths are the project's
    (root / "out").mkdir(parents=True)
    committed, staged, other = b"committed image", b"staged image", b"other image!!!!"  # the same length
    (root / "out" / "a.png").write_bytes(committed)
    git(root.parent, "init", "-q")
    git(root.parent, "add", "-A")
    git(root.parent, "commit", "-qm", "a")
    (root / "out" / "b.png").write_bytes(staged)
    git(root, "add", "out/b.png")
    for name in ("a.png", "b.png"):
        (root / "out" / name).unlink()
    wanted = [
        ("out/a.png", _sha(committed), len(committed)),
        ("out/b.png", _sha(staged), len(staged)),
        ("out/a.png", _sha(other), len(other)),  # another image locked at a committed path: not found
        ("out/c.png", _sha(b"c"), 1),  # never committed
    ]
    found = committed_images(root, wanted).blobs
    assert set(found) == {_sha(committed), _sha(staged)}
    assert {_sha(data) for _, data in read_blobs(root, found.values())} == set(found)


def test_outside_a_work_tree_or_without_git_nothing_is_found_and_nothing_raised(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "a.png").write_bytes(b"x")
    assert committed_images(tmp_path, [("a.png", _sha(b"x"), 1)]) == Committed()
    git(tmp_path, "init", "-q")
    git(tmp_path, "add", "-A")
    monkeypatch.setenv("PATH", "")  # git is gone
    assert committed_images(tmp_path, [("a.png", _sha(b"x"), 1)]) == Committed()
    assert list(read_blobs(tmp_path, ["0" * 40])) == []


def test_a_path_whose_answer_reads_like_a_blobs_is_not_taken_for_one(tmp_path: Path) -> None:
    """The diff review's repro: an untracked reference named `my blob` made git answer `:my blob missing`,
    read as a blob of size "missing": a traceback after a build that had succeeded."""
    from pixmake.gitblobs import untracked

    git(tmp_path, "init", "-q")
    for name in ("my blob", "x blob 12", "kept.png"):
        (tmp_path / name).write_bytes(b"png")
    git(tmp_path, "add", "kept.png")
    assert untracked(tmp_path, ["my blob", "x blob 12", "kept.png"]) == ["my blob", "x blob 12"]
    assert committed_images(tmp_path, [("my blob", _sha(b"png"), 3)]) == Committed()  # untracked: nothing


def test_a_partial_clone_is_not_asked_since_git_would_fetch_each_missing_blob(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The diff review's repro: `git clone --filter=blob:none` then `pixmake plan` ran one `git fetch` per
    missing output: a plan needs no network (and 10,000 of them would be 10,000 round trips)."""
    origin, clone = tmp_path / "origin", tmp_path / "clone"
    origin.mkdir()
    (origin / "a.png").write_bytes(b"committed image")
    git(origin, "init", "-q")
    git(origin, "config", "uploadpack.allowFilter", "true")
    git(origin, "add", "-A")
    git(origin, "commit", "-qm", "a")
    git(tmp_path, "clone", "-q", "--no-checkout", "--filter=blob:none", f"file://{origin}", str(clone))
    fetched = tmp_path / "trace"
    monkeypatch.setenv("GIT_TRACE", str(fetched))
    assert committed_images(clone, [("a.png", _sha(b"committed image"), 15)]) == Committed()
    assert not fetched.exists() or "fetch" not in fetched.read_text()


def test_a_git_lfs_pointer_to_the_locked_bytes_is_found_as_such(tmp_path: Path) -> None:
    """The diff review: a deleted output kept in Git LFS was planned as a paid regenerate (the index holds
    a 130-byte pointer, not the image), while `git checkout` and `git lfs pull` bring it back free."""
    image = b"an image kept in LFS" * 100
    pointer = f"version https://git-lfs.github.com/spec/v1\noid sha256:{_sha(image)}\nsize {len(image)}\n"
    (tmp_path / "a.png").write_text(pointer)
    (tmp_path / "b.png").write_text(pointer.replace(_sha(image)[:8], "0" * 8))  # another image's pointer
    git(tmp_path, "init", "-q")
    git(tmp_path, "add", "-A")
    git(tmp_path, "commit", "-qm", "lfs")
    for name in ("a.png", "b.png"):
        (tmp_path / name).unlink()
    found = committed_images(tmp_path, [("a.png", _sha(image), len(image)), ("b.png", _sha(image), len(image))])
    assert found == Committed({}, frozenset({_sha(image)}))


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="needs root to give the folder away")
def test_a_repository_git_refuses_to_read_says_how_to_let_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The diff review: a CI checkout owned by another user made git refuse every lookup, silently: a
    deleted committed output was planned as a paid regenerate with no word of git's copy."""
    repo = tmp_path / "the repo"  # a space: the command must paste as one argument
    project = repo / "sub"  # a project in a folder of it: git wants the work tree's top, not the project's
    project.mkdir(parents=True)
    (project / "a.png").write_bytes(b"x")
    git(repo, "init", "-q")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "a")
    for folder, _, files in os.walk(tmp_path):
        for name in [folder, *(os.path.join(folder, f) for f in files)]:
            os.chown(name, 65534, 65534)
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", os.devnull)  # no safe.directory of the machine's
    found = committed_images(project, [("a.png", _sha(b"x"), 1)])
    assert found == Committed(refused=f"git config --global --add safe.directory '{repo.resolve()}'")
