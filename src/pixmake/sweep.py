"""Garbage collection of the object cache: delete the cached images no lock has referred to for a while.

Every image pixmake was paid for stays in ``.pixmake/objects/``, so a build restores an output for free
after a branch switch, a stash pop or a deleted file. Left alone the cache only grows: each prompt edit
adds the new images and keeps the old. :func:`sweep` deletes an object only when no lock it can read
refers to it, and has not for ``keep_days``:

* the lockfile with its journal folded in (outputs and stale outputs alike);
* in a git work tree, ``pixmake.lock`` at every ref (branches, remote-tracking branches, tags, the
  stash and its entries), at ``HEAD`` and every worktree's ``HEAD``, and in the index. Commits that are
  no ref's tip are not read: an image only older history refers to goes once it has been unreferenced
  for ``keep_days`` (tag a version to keep its images);
* the grace runs from the first sweep that found the object unreferenced (``.pixmake/gc.json``), not from
  when it was cached: an image the lock dropped a year after it was made still gets its ``keep_days``,
  and so does a file a build kept before it overwrote it (the plan said so).

Anything gc cannot read stops it before it deletes anything: a lock that does not parse at some ref,
git missing or failing in what looks like a git work tree, an object cache outside the project.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from pixmake.errors import ConfigError, LockfileError
from pixmake.gitblobs import git_env, in_git_work_tree
from pixmake.lockfile import Lock, parse_lock
from pixmake.store import atomic_write, holds_state, read_json

__all__ = ["SweepResult", "git_locks", "ref_revisions", "referenced", "sweep"]

_DAY = 86_400.0
_NOTHING_DELETED = "nothing was deleted"


@dataclass(frozen=True, slots=True)
class SweepResult:
    """What a sweep deleted (or, with ``dry_run``, would delete) and what it kept, in files and bytes."""

    deleted: int = 0
    deleted_bytes: int = 0
    referenced: int = 0
    referenced_bytes: int = 0
    waiting: int = 0  # unreferenced, within their keep_days
    waiting_bytes: int = 0
    locks: int = 1  # distinct locks read: the working tree's and each distinct version git holds
    dry_run: bool = False


def referenced(locks: Iterable[Lock]) -> set[str]:
    """The sha256 of every output and stale output the locks record."""
    return {o.sha256 for lock in locks for entry in lock.entries.values() for o in (*entry.outputs, *entry.stale)}


def _git(git: str, root: Path, *args: str, stdin: bytes = b"", check: bool = True, fetch: bool = True) -> bytes:
    """Run git; ``fetch=False``: a partial clone's missing objects are not fetched (git 2.44 and later)."""
    env = None if fetch else git_env()
    done = subprocess.run([git, *args], cwd=root, input=stdin, capture_output=True, check=False, env=env)
    if check and done.returncode != 0:
        why = done.stderr.decode(errors="replace").strip().splitlines()
        raise ConfigError(f"git {args[0]} failed ({why[0] if why else done.returncode}); {_NOTHING_DELETED}")
    return done.stdout


def ref_revisions(git: str, root: Path, *, fetch: bool = True) -> dict[str, str]:
    """Every revision whose lock gc must keep (each ref's, each stash entry's, each worktree's HEAD), by
    object id, each with a name for messages. Raises ConfigError when git fails."""
    revs: dict[str, str] = {}
    refs = _git(git, root, "for-each-ref", "--format=%(objectname) %(refname)", fetch=fetch)
    for line in refs.decode(errors="replace").splitlines():
        sha, _, name = line.partition(" ")
        revs.setdefault(sha, name)
        if name == "refs/stash":  # every stash entry, not only the newest
            for entry in _git(git, root, "log", "-g", "--format=%H", "refs/stash", fetch=fetch).decode().split():
                revs.setdefault(entry, "a stash entry")
    for line in _git(git, root, "worktree", "list", "--porcelain", fetch=fetch).decode(errors="replace").splitlines():
        if line.startswith("HEAD "):
            revs.setdefault(line[5:], "a worktree's HEAD")
    head = _git(git, root, "rev-parse", "--verify", "-q", "HEAD", check=False, fetch=fetch).decode().strip()
    if head:  # none before the first commit
        revs.setdefault(head, "HEAD")
    return revs


def git_locks(root: Path) -> Iterator[tuple[str, str]]:
    """``(where, text)`` of each distinct version of ``root/pixmake.lock`` that git holds at a ref, a HEAD or
    in the index (see the module); nothing when ``root`` is in no git work tree.

    Raises ConfigError when it is in one but git is missing or fails: then what the locks there refer to
    is unknown.
    """
    if not in_git_work_tree(root):
        return
    git = shutil.which("git")
    if git is None:
        raise ConfigError(
            f"{root} is in a git work tree but git is not on PATH, so the locks of its branches and tags "
            f"cannot be read; {_NOTHING_DELETED}"
        )
    named = {f"{sha}:./pixmake.lock": name for sha, name in ref_revisions(git, root).items()}
    named[":./pixmake.lock"] = "the index"
    queries = list(named)
    checked = _git(git, root, "cat-file", "--batch-check", stdin="".join(f"{q}\n" for q in queries).encode())
    blobs: dict[str, str] = {}  # blob id -> where it was first found
    for query, line in zip(queries, checked.decode(errors="replace").splitlines(), strict=True):
        fields = line.split(" ")
        if len(fields) == 3 and fields[1] == "blob":
            blobs.setdefault(fields[0], named[query])
    if not blobs:
        return
    out = _git(git, root, "cat-file", "--batch", stdin="".join(f"{blob}\n" for blob in blobs).encode())
    at = 0
    for where in blobs.values():
        end = out.index(b"\n", at)
        size = int(out[at:end].split(b" ")[2])
        yield where, out[end + 1 : end + 1 + size].decode("utf-8", errors="replace")
        at = end + 1 + size + 1


def _load_waiting(path: Path) -> dict[str, float]:
    data = read_json(path)
    return {k: float(v) for k, v in data.items() if isinstance(v, int | float)} if isinstance(data, dict) else {}


def _files(directory: Path) -> Iterator[os.DirEntry[str]]:
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
    keep_days: float,
    dry_run: bool = False,
    now: float | None = None,
    state: Path | None = None,
) -> SweepResult:
    """Delete the files in ``objects`` no lock has referred to for ``keep_days`` (see the module).

    ``objects`` must lie in the project, or be the ``objects`` folder of its ``state`` (``.pixmake``, which
    may be a link to a CI cache holding pixmake's state): a folder elsewhere may be other projects' too.
    """
    if math.isnan(keep_days) or keep_days < 0:
        raise ConfigError(f"--keep-days must be a number of days, at least 0, not {keep_days}")
    own = state is not None and holds_state(state) and objects.resolve() == state.resolve() / "objects"
    if not own and not objects.resolve().is_relative_to(root.resolve()):
        raise ConfigError(
            f"the object cache {objects} leads outside the project (a symlink?): other projects' locks may "
            f"refer to its images; {_NOTHING_DELETED}"
        )
    keep = referenced([lock])
    locks = 1
    for where, text in git_locks(root):
        if text.startswith("version https://git-lfs"):
            raise ConfigError(f"pixmake.lock at {where} is a Git LFS pointer, which gc cannot read; {_NOTHING_DELETED}")
        try:
            keep |= referenced([parse_lock(text)])
        except LockfileError as error:
            if where == "the index":
                way_out = "mend it where it is staged (or git reset it)"
            elif where.startswith(("refs/heads/", "refs/remotes/")):
                way_out = f"mend it on branch {where} and commit, or delete that branch if it is done with"
            else:  # a tag, a stash, a detached HEAD: git holds it as it is
                way_out = f"gc reads every lock git holds: mend what {where} points at, or drop it if it is done with"
            raise ConfigError(
                f"pixmake.lock at {where} cannot be read ({error}); {way_out}; {_NOTHING_DELETED}"
            ) from None
        locks += 1
    clock = time.time() if now is None else now
    ledger = objects.parent / "gc.json"
    since = _load_waiting(ledger)
    waiting: dict[str, float] = {}
    counts = {"deleted": 0, "referenced": 0, "waiting": 0}
    sizes = dict.fromkeys(counts, 0)
    for entry in _files(objects):
        size = entry.stat(follow_symlinks=False).st_size
        if entry.name in keep:
            kind = "referenced"
        elif clock - since.get(entry.name, clock) >= keep_days * _DAY:
            kind = "deleted"
            if not dry_run:
                os.unlink(entry.path)
        else:
            kind = "waiting"
            waiting[entry.name] = since.get(entry.name, clock)
        counts[kind] += 1
        sizes[kind] += size
    if not dry_run:
        atomic_write(ledger, json.dumps(waiting, sort_keys=True).encode())
    return SweepResult(
        counts["deleted"], sizes["deleted"], counts["referenced"], sizes["referenced"], counts["waiting"],
        sizes["waiting"], locks, dry_run,
    )  # fmt: skip
