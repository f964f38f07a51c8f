"""Locked images git still holds: a committed output deleted from the work tree is put back free.

I/O (runs ``git cat-file``). A teammate who deletes a committed output (or a ``git rm`` not yet
committed) has the locked bytes in git's index or at ``HEAD``, while a fresh clone's object cache is
empty: without this, the plan would pay for the image again. :func:`committed_images` tells the scan
which locked images git holds; :func:`read_blobs` gives the build their bytes, which it checks
against the lock and caches before it restores. Outside a git work tree, without git, or when git
fails, nothing is found: the outputs are planned as before.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shlex
import shutil
import subprocess
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

__all__ = [
    "Committed",
    "askable",
    "blobs_at",
    "committed_images",
    "git_env",
    "in_git_work_tree",
    "partial_clone",
    "read_blobs",
    "run_git",
    "tracked",
    "untracked",
]

_OBJECT_ID: Final = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")  # SHA-1 or SHA-256 repositories


def in_git_work_tree(root: Path) -> bool:
    """Whether ``root`` is inside a git work tree (a ``.git`` in it or above)."""
    return any((directory / ".git").exists() for directory in (root.resolve(), *root.resolve().parents))


class _CatFile:
    """One ``git cat-file --batch`` process, asked one blob at a time (so neither pipe ever fills)."""

    def __init__(self, git: str, root: Path) -> None:
        self._process = subprocess.Popen(
            [git, "cat-file", "--batch"], cwd=root, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL, env=git_env(),
        )  # fmt: skip

    def blob(self, blob: str) -> bytes | None:
        """The bytes of one blob; None when git has no such blob."""
        stdin, stdout = self._process.stdin, self._process.stdout
        assert stdin is not None and stdout is not None
        stdin.write(blob.encode() + b"\n")
        stdin.flush()
        fields = stdout.readline().decode(errors="replace").split()
        if len(fields) != 3 or fields[1] == "missing":
            return None
        data = stdout.read(int(fields[2]))
        stdout.read(1)  # the newline after the contents
        return data if fields[1] == "blob" else None

    def close(self) -> None:
        """Close both pipes (git ends at the end of its input) and wait for git."""
        with self._process:
            pass


def _git(root: Path) -> str | None:
    return shutil.which("git") if in_git_work_tree(root) else None


class _Refused(Exception):
    """Git refuses to read the repository (owned by another user: ``safe.directory``); its own words."""


def git_env() -> dict[str, str]:
    """The environment git runs in for a plan: never fetching a blob a partial clone lacks (git 2.44 and
    later; earlier ones are not asked at all, see :func:`partial_clone`) — a plan needs no network."""
    return {**os.environ, "GIT_NO_LAZY_FETCH": "1"}


def partial_clone(git: str, root: Path) -> bool:
    """Whether the repository is a partial clone (``--filter``), whose missing blobs git would fetch one by
    one; git sets ``extensions.partialClone``, or (before 2.40 or so) only a remote's ``promisor``. Raises
    what :func:`run_git` raises."""
    if run_git(git, root, "config", "--get", "extensions.partialClone").strip():
        return True
    promisors = run_git(git, root, "config", "--get-regexp", r"^remote\..*\.promisor$")
    return any(line.split()[-1:] == ["true"] for line in promisors.splitlines())


def askable(git: str, root: Path) -> bool:
    """Whether git may be asked about the repository's history without fetching or failing: not a partial
    clone, and git reads it (not another user's: ``safe.directory``)."""
    try:
        return not partial_clone(git, root)
    except (OSError, subprocess.CalledProcessError, _Refused):
        return False


def run_git(git: str, root: Path, *args: str) -> str:
    """Git's output (never fetching: :func:`git_env`); raises CalledProcessError when it fails (exit 1,
    ``rev-parse --verify -q`` or ``grep`` finding nothing, is no failure), ``_Refused`` when git refuses to
    read the repository."""
    done = subprocess.run([git, *args], cwd=root, capture_output=True, check=False, env=git_env())
    if done.returncode not in (0, 1):  # 1: `rev-parse --verify -q` found nothing
        said = done.stderr.decode(errors="replace")
        if "safe.directory" in said:  # the folder git names (the work tree's top), quoted to paste
            named = re.search(r"safe\.directory '?([^'\n]+?)'?\s*$", said, re.MULTILINE)
            folder = named.group(1).strip() if named else str(root.resolve())
            raise _Refused(f"git config --global --add safe.directory {shlex.quote(folder)}")
        raise subprocess.CalledProcessError(done.returncode, args)
    return done.stdout.decode(errors="replace")


def _blobs_at(git: str, root: Path, paths: list[str], *, head: bool) -> list[list[tuple[str, int] | None]] | None:
    """For each project-relative path: (blob id, size) of what git's index holds there, then (``head``, once
    there is a commit) ``HEAD``'s, each None when it holds nothing; None when git fails (a repository it
    refuses to read), and in a partial clone, whose missing blobs git would fetch one by one (a plan needs
    no network)."""
    try:
        if partial_clone(git, root):  # a lookup would fetch
            return None
        prefix = run_git(git, root, "rev-parse", "--show-prefix").strip()  # the project's folder in the repository
        tree = run_git(git, root, "rev-parse", "-q", "--verify", "HEAD^{tree}").strip() if head else ""  # once
    except (OSError, subprocess.CalledProcessError):
        return None
    revisions = ("", tree) if tree else ("",)  # no HEAD before the first commit
    found = _batch_check(git, root, [f"{revision}:{prefix}{path}" for path in paths for revision in revisions])
    if found is None:
        return None
    per = len(revisions)
    return [found[i : i + per] for i in range(0, len(found), per)]


def blobs_at(root: Path, queries: list[str]) -> list[tuple[str, int] | None]:
    """(blob id, size) of what each ``REVISION:./PATH`` query names (a file of a commit, relative to
    ``root``), None where git holds nothing there; all None outside a git work tree, in a partial clone
    (a lookup would fetch), or when git fails."""
    git = _git(root) if queries else None
    if git is None or not askable(git, root):
        return [None] * len(queries)
    return _batch_check(git, root, queries) or [None] * len(queries)


def _batch_check(git: str, root: Path, queries: list[str]) -> list[tuple[str, int] | None] | None:
    """``git cat-file --batch-check`` of each query: (blob id, size) or None; None when git fails."""
    # All at once, through files: git writes each "missing" line on its own, so through pipes 10,000
    # missing outputs took 1.2 s of polling.
    try:
        with tempfile.TemporaryFile() as asked, tempfile.TemporaryFile() as told:
            asked.write("".join(f"{q}\n" for q in queries).encode())
            asked.seek(0)
            done = subprocess.run(
                [git, "cat-file", "--batch-check"], cwd=root, stdin=asked, stdout=told, stderr=subprocess.DEVNULL,
                check=False, env=git_env(),
            )  # fmt: skip
            told.seek(0)
            answers = told.read().decode(errors="replace").splitlines()
    except OSError:
        return None
    if done.returncode != 0 or len(answers) != len(queries):
        return None
    found: list[tuple[str, int] | None] = []
    for answer in answers:  # "<id> blob <size>", or "<query> missing" where the query may hold spaces
        fields = answer.split(" ")
        whole = len(fields) == 3 and _OBJECT_ID.fullmatch(fields[0]) and fields[1] == "blob" and fields[2].isdigit()
        found.append((fields[0], int(fields[2])) if whole else None)
    return found


@dataclass(frozen=True, slots=True)
class Committed:
    """Locked images git holds at their output paths: as bytes (``blobs``: blob id by sha256) or as Git LFS
    pointers to them (``in_lfs``: their sha256, whose bytes ``git checkout`` and ``git lfs pull`` bring)."""

    blobs: Mapping[str, str] = field(default_factory=dict)
    in_lfs: frozenset[str] = frozenset()
    refused: str = ""  # git refused to read the repository: the command that makes it read it


_LFS_POINTER: Final = re.compile(rb"version https://git-lfs\S*\noid sha256:([0-9a-f]{64})\n")
_POINTER_MAX: Final = 1024  # a Git LFS pointer file is about 130 bytes


def committed_images(root: Path, wanted: Iterable[tuple[str, str, int]]) -> Committed:
    """For each ``(path, sha256, size)`` of a locked image: whether git's index or ``HEAD`` holds exactly
    those bytes at that project-relative path, or a Git LFS pointer to them. Only blobs of the locked size
    (or a pointer's) are read."""
    wanted = list(wanted)
    git = _git(root) if wanted else None
    try:
        found_at = _blobs_at(git, root, [path for path, _, _ in wanted], head=True) if git is not None else None
    except _Refused as refused:
        return Committed(refused=str(refused))
    if found_at is None:
        return Committed()
    candidates: dict[str, set[str]] = {}  # blob id → the locked sha256s it may hold (or point to)
    for (_, sha256, size), blobs in zip(wanted, found_at, strict=True):
        for blob in blobs:  # the index first: a `git rm` not committed is still there
            if blob is not None and (blob[1] == size or blob[1] <= _POINTER_MAX):
                candidates.setdefault(blob[0], set()).add(sha256)
    found: dict[str, str] = {}
    in_lfs: set[str] = set()
    for blob_id, data in read_blobs(root, candidates):
        digest = hashlib.sha256(data).hexdigest()
        if digest in candidates[blob_id]:
            found[digest] = blob_id
        elif (pointer := _LFS_POINTER.match(data)) is not None and pointer[1].decode() in candidates[blob_id]:
            in_lfs.add(pointer[1].decode())
    return Committed(found, frozenset(in_lfs - found.keys()))


def tracked(root: Path, folder: str) -> list[str]:
    """The files under the project-relative ``folder`` that git tracks (in its index), in any letter case (on
    macOS and Windows, ``.PIXMAKE`` is ``.pixmake``). Empty outside a git work tree, without git, or when git
    fails."""
    git = _git(root)
    if git is None:
        return []
    try:
        listed = run_git(git, root, "ls-files", "-z", "--", f":(icase){folder}")
    except (OSError, subprocess.CalledProcessError, _Refused):
        return []
    return [path for path in listed.split("\0") if path]


def untracked(root: Path, paths: Iterable[str]) -> list[str]:
    """Of these project-relative files, those not in git's index (new, or ignored): a clone will lack them.
    Empty outside a git work tree, without git, or when git fails."""
    paths = sorted(set(paths))
    git = _git(root) if paths else None
    try:
        found_at = _blobs_at(git, root, paths, head=False) if git is not None else None
    except _Refused:
        return []
    if found_at is None:
        return []
    return [path for path, (indexed,) in zip(paths, found_at, strict=True) if indexed is None]


def read_blobs(root: Path, blobs: Iterable[str]) -> Iterator[tuple[str, bytes]]:
    """``(blob id, bytes)`` of each blob git has (one at a time: a few images in memory, never all); when
    git fails, the ones read so far."""
    blobs = list(blobs)
    git = _git(root) if blobs else None
    if git is None:
        return
    try:
        cat = _CatFile(git, root)
    except OSError:
        return
    try:
        for blob in blobs:
            try:
                data = cat.blob(blob)
            except OSError:  # git ended (a repository it refuses to read): what it gave is all there is
                return
            if data is not None:
                yield blob, data
    finally:
        with contextlib.suppress(OSError):
            cat.close()
