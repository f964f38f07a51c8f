"""Images an earlier lock committed to git: a fresh clone going back to earlier inputs restores them free.

I/O (runs git). The history of replaced lock entries (:mod:`pixmake.history`) is local: a fresh clone
or a CI runner that reverts an art-direction change (a shared variable edited back) would pay for every
image again, while git holds the lock that recorded those inputs (at a tag, a branch, a stash entry)
and, when images are committed, their bytes at that revision. :func:`committed_entries` finds, for
the keys a plan would pay for, the entries of the locks at git's refs (those ``pixmake gc`` reads)
whose images git holds at the same revision, checked byte for byte against the lock.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from pixmake.errors import PixmakeError
from pixmake.fingerprint import current_keys
from pixmake.gitblobs import blobs_at, in_git_work_tree, read_blobs
from pixmake.lockfile import LockEntry, parse_lock

__all__ = ["CommittedEntries", "committed_entries"]

_WRITTEN_KEY: Final = re.compile(r'"key": "([0-9a-f]{64})"')


@dataclass(frozen=True, slots=True)
class CommittedEntries:
    """Lock entries git holds, by key, and the blob id of each of their images, by sha256."""

    entries: Mapping[str, LockEntry] = field(default_factory=dict)
    blobs: Mapping[str, str] = field(default_factory=dict)


def committed_entries(root: Path, keys: Collection[str]) -> CommittedEntries:
    """Of the entries recorded under ``keys`` by the locks git holds at its refs, HEADs and index (not the
    bundled emulator's placeholders), those whose every image git holds at that revision, at the path
    the entry locked it at. Nothing outside a git work tree, in a partial clone, or when git fails."""
    wanted = set(keys)
    if not wanted or not in_git_work_tree(root):
        return CommittedEntries()
    from pixmake.sweep import git_locks

    found: dict[str, tuple[str, LockEntry]] = {}  # key -> (revision, entry): the first lock that has it
    try:
        for _, revision, text in git_locks(root):
            if wanted.isdisjoint(_WRITTEN_KEY.findall(text)):  # most locks: no parse (an earlier version's
                continue  # key form is not matched: such an entry is paid for, as before)
            try:
                lock = current_keys(parse_lock(text))
            except PixmakeError:
                continue
            for entry in lock.entries.values():
                if entry.key in wanted and entry.key not in found and not entry.emulator and entry.outputs:
                    found[entry.key] = (revision, entry)
    except (PixmakeError, OSError, ValueError):
        return CommittedEntries()
    if not found:
        return CommittedEntries()
    outputs = [(revision, o) for revision, entry in found.values() for o in entry.outputs]
    at = blobs_at(root, [f"{revision}:./{o.path}" for revision, o in outputs])
    candidates: dict[str, set[str]] = {}  # blob id -> the sha256s it should hold
    for (_, output), blob in zip(outputs, at, strict=True):
        if blob is not None and blob[1] == output.bytes:
            candidates.setdefault(blob[0], set()).add(output.sha256)
    blobs: dict[str, str] = {}
    for blob_id, data in read_blobs(root, candidates):
        digest = hashlib.sha256(data).hexdigest()
        if digest in candidates[blob_id]:
            blobs[digest] = blob_id
    entries = {key: entry for key, (_, entry) in found.items() if all(o.sha256 in blobs for o in entry.outputs)}
    used = {o.sha256 for entry in entries.values() for o in entry.outputs}
    return CommittedEntries(entries, {sha: blob for sha, blob in blobs.items() if sha in used})
