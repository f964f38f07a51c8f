"""Images an earlier lock committed to git: a fresh clone going back to earlier inputs restores them free.

I/O (runs git). The history of lock entries (:mod:`pixmake.history`) is local: a fresh clone or a CI
runner that reverts an art-direction change (a shared variable edited back) would pay for every image
again, while git holds the lock that recorded those inputs (at a tag, a branch, a stash entry) and,
when images are committed, their bytes at that revision. :func:`committed_entries` finds, for the keys
a plan would pay for, the entries of the locks at git's refs (those ``pixmake gc`` reads) whose images
git holds at the same revision, checked byte for byte against the lock.

Cost: ``git grep`` tells which distinct lock versions name a wanted key (in C, however many tags there
are), and only those are read, one at a time. Nothing is fetched: not in a partial clone.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import tempfile
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from pixmake.errors import PixmakeError
from pixmake.fingerprint import current_keys
from pixmake.gitblobs import askable, blobs_at, git_env, in_git_work_tree, read_blobs
from pixmake.lockfile import LockEntry, parse_lock

__all__ = ["CommittedEntries", "committed_entries"]

_INDEX = ""  # the revision ``REVISION:./PATH`` names the index by


@dataclass(frozen=True, slots=True)
class CommittedEntries:
    """Lock entries git holds, by key, and the blob id of each of their images, by sha256."""

    entries: Mapping[str, LockEntry] = field(default_factory=dict)
    blobs: Mapping[str, str] = field(default_factory=dict)


def committed_entries(root: Path, keys: Collection[str], written: Collection[str] = ()) -> CommittedEntries:
    """Of the entries recorded under ``keys`` by the locks git holds at its refs, HEADs and index (not the
    bundled emulator's placeholders), for each key the first whose every image git holds at that same
    revision, at the path the entry locked it at. ``written``: the keys as a lock may record them
    (:func:`~pixmake.fingerprint.written_key`), searched for too. Nothing outside a git work tree, in a
    partial clone, or when git fails."""
    wanted = set(keys)
    git = shutil.which("git") if wanted and in_git_work_tree(root) else None
    if git is None:
        return CommittedEntries()
    if not askable(git, root):
        return CommittedEntries()
    try:
        candidates = _candidates(git, root, wanted, wanted | set(written))
    except (PixmakeError, OSError, subprocess.CalledProcessError, ValueError):
        return CommittedEntries()
    return _with_images(root, candidates)


def _candidates(git: str, root: Path, wanted: set[str], patterns: set[str]) -> dict[str, list[tuple[str, LockEntry]]]:
    """For each wanted key, every (revision, entry) of the distinct lock versions git holds that records it."""
    from pixmake.sweep import ref_revisions

    revisions = [*ref_revisions(git, root, fetch=False), _INDEX]
    held = blobs_at(root, [f"{revision}:./pixmake.lock" for revision in revisions])
    versions: dict[str, list[str]] = {}  # lock blob id -> the revisions holding it (their images may differ)
    for revision, blob in zip(revisions, held, strict=True):
        if blob is not None:
            versions.setdefault(blob[0], []).append(revision)
    naming = _naming(git, root, {holding[0] for holding in versions.values()}, patterns)
    found: dict[str, list[tuple[str, LockEntry]]] = {}
    at = {blob: holding for blob, holding in versions.items() if holding[0] in naming}
    for version, data in read_blobs(root, at):  # one lock in memory at a time
        try:
            lock = current_keys(parse_lock(data.decode("utf-8", errors="replace")))
        except PixmakeError:
            continue  # a lock git could not merge, a Git LFS pointer: nothing to find there
        for entry in lock.entries.values():
            if entry.key in wanted and not entry.emulator and entry.outputs:
                found.setdefault(entry.key, []).extend((revision, entry) for revision in at[version])
    return found


def _naming(git: str, root: Path, revisions: set[str], patterns: set[str]) -> set[str]:
    """Those of ``revisions`` whose ``pixmake.lock`` holds one of the ``patterns``, by ``git grep``."""
    named: set[str] = set()
    commits = sorted(revisions - {_INDEX})
    with tempfile.NamedTemporaryFile("w", suffix=".keys") as listed:
        listed.write("".join(f"{pattern}\n" for pattern in sorted(patterns)))
        listed.flush()
        grep = [git, "grep", "-l", "-F", "-f", listed.name]
        searches = [([*grep, *commits, "--", "pixmake.lock"], False)] if commits else []
        if _INDEX in revisions:
            searches.append(([*grep, "--cached", "--", "pixmake.lock"], True))
        for args, cached in searches:
            done = subprocess.run(args, cwd=root, capture_output=True, check=False, env=git_env())
            if done.returncode not in (0, 1):  # 1: no match
                raise subprocess.CalledProcessError(done.returncode, args)
            for line in done.stdout.decode(errors="replace").splitlines():  # "REVISION:pixmake.lock"
                named.add(_INDEX if cached else line.split(":", 1)[0])
    return named


def _with_images(root: Path, candidates: Mapping[str, list[tuple[str, LockEntry]]]) -> CommittedEntries:
    """Of each key's candidates, the first whose every image git holds, checked against its sha256."""
    outputs = [(revision, o) for entries in candidates.values() for revision, entry in entries for o in entry.outputs]
    at = blobs_at(root, [f"{revision}:./{o.path}" for revision, o in outputs])
    expected: dict[str, set[str]] = {}  # blob id -> the sha256s it should hold
    for (_, output), blob in zip(outputs, at, strict=True):
        if blob is not None and blob[1] == output.bytes:
            expected.setdefault(blob[0], set()).add(output.sha256)
    blobs: dict[str, str] = {}
    for blob_id, data in read_blobs(root, expected):
        digest = hashlib.sha256(data).hexdigest()
        if digest in expected[blob_id]:
            blobs[digest] = blob_id
    entries: dict[str, LockEntry] = {}
    for key, found in candidates.items():
        whole = [entry for _, entry in found if all(o.sha256 in blobs for o in entry.outputs)]
        if whole:
            entries[key] = whole[0]
    used = {o.sha256 for entry in entries.values() for o in entry.outputs}
    return CommittedEntries(entries, {sha: blob for sha, blob in blobs.items() if sha in used})
