"""Garbage collection of the object cache: delete the cached images no lock refers to.

Every image pixmake was paid for stays in ``.pixmake/objects/``, so a build restores an output for free
after a branch switch, a revert or a deleted file. Left alone the cache only grows: each prompt edit adds
the new images and keeps the old. :func:`sweep` deletes an object only when nothing that could bring it
back refers to it and it is older than a grace period:

* the lockfile with its journal folded in (outputs and stale outputs alike);
* ``pixmake.lock`` at the tip of every local branch, remote-tracking branch and tag, when the project is
  in a git work tree (a teammate's branch or an old release restores for free, as it did before);
* anything younger than ``keep_days`` (git's gc keeps unreachable objects two weeks for the same reason:
  a commit not yet made, a file kept before a build overwrote it).

A lock that cannot be read at some ref stops the sweep before anything is deleted: its images are unknown.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from pixmake.errors import ConfigError, LockfileError
from pixmake.lockfile import Lock, parse_lock

__all__ = ["SweepResult", "git_locks", "referenced", "sweep"]

_DAY = 86_400.0


@dataclass(frozen=True, slots=True)
class SweepResult:
    """What a sweep deleted (or, with ``dry_run``, would delete) and what it kept, in files and bytes."""

    deleted: int = 0
    deleted_bytes: int = 0
    referenced: int = 0
    referenced_bytes: int = 0
    recent: int = 0
    recent_bytes: int = 0
    locks: int = 1  # locks read: the working tree's and each distinct one at a git ref
    dry_run: bool = False


def referenced(locks: Iterable[Lock]) -> set[str]:
    """The sha256 of every output and stale output the locks record."""
    return {o.sha256 for lock in locks for entry in lock.entries.values() for o in (*entry.outputs, *entry.stale)}


def _git(git: str, root: Path, *args: str, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([git, *args], cwd=root, input=stdin, capture_output=True, check=False)


def git_locks(root: Path, lockfile: Path) -> Iterator[tuple[str, str]]:
    """``(ref, text)`` of the lockfile at the tip of every branch, remote-tracking branch and tag, each distinct
    version once; nothing when git is missing or ``root`` is not in a work tree.

    Raises ConfigError when git lists refs but cannot show them.
    """
    git = shutil.which("git")
    if git is None:
        return
    top = _git(git, root, "rev-parse", "--show-toplevel")
    if top.returncode != 0:
        return
    path = Path(os.path.relpath(lockfile.resolve(), Path(os.fsdecode(top.stdout.strip())).resolve())).as_posix()
    refs = _git(git, root, "for-each-ref", "--format=%(refname)", "refs/heads", "refs/remotes", "refs/tags")
    names = [name for name in refs.stdout.decode(errors="replace").splitlines() if not name.endswith("/HEAD")]
    if not names:
        return
    batch = _git(git, root, "cat-file", "--batch", stdin="".join(f"{name}:{path}\n" for name in names).encode())
    if batch.returncode != 0:
        raise ConfigError(f"git cat-file failed: {batch.stderr.decode(errors='replace').strip()}")
    seen: set[str] = set()
    out, at = batch.stdout, 0
    for name in names:
        end = out.index(b"\n", at)
        header = out[at:end]
        at = end + 1
        if header.endswith((b" missing", b" ambiguous")):  # that ref has no lockfile there
            continue
        sha, _, size = header.decode().split(" ")
        blob = out[at : at + int(size)]
        at += int(size) + 1
        if sha not in seen:
            seen.add(sha)
            yield name, blob.decode("utf-8", errors="replace")


def _objects(directory: Path) -> Iterator[os.DirEntry[str]]:
    """Every file under ``objects/``: the objects and any temporary file a crash left behind."""
    try:
        shards = list(os.scandir(directory))
    except FileNotFoundError:
        return
    for shard in shards:
        if shard.is_dir(follow_symlinks=False):
            with os.scandir(shard.path) as files:
                yield from (f for f in files if f.is_file(follow_symlinks=False))


def sweep(
    objects: Path,
    lock: Lock,
    *,
    root: Path,
    lockfile: Path,
    keep_days: float,
    dry_run: bool = False,
    now: float | None = None,
) -> SweepResult:
    """Delete the files in ``objects`` no lock refers to that are older than ``keep_days`` (see the module)."""
    locks = [lock]
    for ref, text in git_locks(root, lockfile):
        try:
            locks.append(parse_lock(text, file=f"{ref}:pixmake.lock"))
        except LockfileError as error:
            raise ConfigError(f"{error}; nothing was deleted (the images it records are unknown)") from error
    keep = referenced(locks)
    cutoff = (time.time() if now is None else now) - keep_days * _DAY
    counts = {"deleted": 0, "referenced": 0, "recent": 0}
    sizes = dict.fromkeys(counts, 0)
    for entry in _objects(objects):
        info = entry.stat(follow_symlinks=False)
        kind = "referenced" if entry.name in keep else "recent" if info.st_mtime > cutoff else "deleted"
        if kind == "deleted" and not dry_run:
            os.unlink(entry.path)
        counts[kind] += 1
        sizes[kind] += info.st_size
    return SweepResult(
        counts["deleted"], sizes["deleted"], counts["referenced"], sizes["referenced"], counts["recent"],
        sizes["recent"], len(locks), dry_run,
    )  # fmt: skip
