"""Bring the lock and the files back in line by the user's choice: accept an edited output, prune orphans.

Shell. Neither spends money. ``pixmake accept TARGET`` records the files now at a target's output
paths as its outputs (a retouched image becomes the locked one; the bytes go to the object cache
too). ``pixmake build --prune`` deletes the outputs of orphans (lock entries whose target left the
manifest) and drops their entries, and deletes targets' stale outputs (files written before their
``out`` or ``n`` changed, see ``LockEntry.stale``). Prune never deletes a file outside the project
root, one that a current target writes, or one whose bytes differ from the lock (someone edited it); a deleted
output's bytes stay in the object cache, so nothing paid for is lost. The caller holds the project
lock; the lockfile is rewritten atomically and the journal compacted, as a build's fold does.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Final

from pixmake.errors import ConfigError, UnsafePathError
from pixmake.fingerprint import lock_entry
from pixmake.journal import PendingSubmit
from pixmake.lockfile import Lock, LockedOutput, LockEntry, lock_pieces
from pixmake.manifest import Target, output_paths
from pixmake.store import ObjectCache, atomic_write, hash_file, safe_path

if TYPE_CHECKING:
    from pixmake.pixelcache import PixelDigests

__all__ = ["CLAIMED", "PruneResult", "accept_outputs", "prune_orphans", "prune_stale", "write_lock_and_compact"]

CLAIMED: Final = "a current target writes or reads it"
"""Why prune keeps a file: expected, not a warning (a renamed target's output is its new one's)."""


@dataclass(frozen=True, slots=True)
class PruneResult:
    """What ``--prune`` did: orphans dropped from the lock, files deleted, files kept and why."""

    pruned: tuple[str, ...] = ()
    deleted: tuple[str, ...] = ()
    kept: tuple[tuple[str, str], ...] = ()  # (path, reason)
    skipped: str = ""  # why nothing was pruned, when the build's manifest is no longer the one on disk


def write_lock_and_compact(lock_path: Path, journal_path: Path, lock: Lock, pending: dict[str, PendingSubmit]) -> None:
    """Write the lockfile, then drop from the journal everything the lockfile now holds."""
    from pixmake.journal import Journal

    atomic_write(lock_path, lock_pieces(lock))
    Journal(journal_path).rewrite(dict(pending))


def accept_outputs(
    root: Path, target: Target, hashes: Mapping[str, str], lock: Lock, objects: ObjectCache, digests: PixelDigests
) -> LockEntry:
    """The lock entry that records the files now at ``target``'s output paths as its outputs.

    ``hashes`` holds the current hashes of the target's inputs. The bytes are stored in the object
    cache. Raises ConfigError when an output file is missing or is not an image.
    """
    from pixmake.fingerprint import target_key
    from pixmake.inputs import read_header

    outputs = []
    for rel in output_paths(target):
        path = safe_path(root, rel, field=f"targets.{target.name}.out")
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise ConfigError(f"accept {target.name}: {rel} does not exist; build or restore it first") from None
        info = read_header(path)
        if info.format is None:
            raise ConfigError(f"accept {target.name}: {rel} is not an image pixmake can read")
        sha = objects.put(data, users=True)
        outputs.append(LockedOutput(rel, sha, len(data), info.width, info.height))
    key = target_key(target, hashes)
    old = lock.entries.get(target.name)
    task_id = old.task_id if old is not None and old.key == key else None
    files = [rel for rel in target.inputs if rel in hashes]
    pixels = {hashes[rel]: digests.of(root / rel, hashes[rel]) for rel in files}  # a re-save is not paid for
    entry = lock_entry(target, key, hashes, tuple(outputs), task_id=task_id, pixels=pixels)  # the user's now
    entry = replace(entry, accepted=True)  # a build that would replace them says so
    # Outputs it wrote before (another out, a higher n) stay recorded as stale until build --prune.
    return entry if old is None else with_stale(entry, (*old.stale, *old.outputs))


def with_stale(entry: LockEntry, earlier: Iterable[LockedOutput]) -> LockEntry:
    """``entry`` also recording as stale those of the ``earlier`` outputs it no longer writes (see
    ``LockEntry.stale``), with the stale outputs it already records."""
    current = {o.path for o in entry.outputs}
    stale = tuple({o.path: o for o in (*earlier, *entry.stale) if o.path not in current}.values())
    return entry if stale == entry.stale else replace(entry, stale=stale)


def _delete_outputs(
    root: Path,
    name: str,
    outputs: tuple[LockedOutput, ...],
    claimed: frozenset[str],
    objects: ObjectCache,
    result: tuple[list[str], list[tuple[str, str]]],
    leads_to_claimed: Callable[[Path], bool],
) -> None:
    """Delete the locked ``outputs`` that are safe to delete, noting each deleted and each kept path in ``result``."""
    deleted, kept = result
    for output in outputs:
        if output.path in claimed:
            kept.append((output.path, CLAIMED))
            continue
        try:
            path = safe_path(root, output.path, field=f"pixmake.lock: {name}")
        except UnsafePathError:
            kept.append((output.path, "outside the project root"))
            continue
        if leads_to_claimed(path):  # the same file, reached another way
            kept.append((output.path, CLAIMED))
            continue
        try:
            if not stat.S_ISREG(os.stat(path).st_mode):  # a FIFO would be waited on for good: not pixmake's output
                kept.append((output.path, "not a file (a FIFO, a socket or a device)"))
                continue
            actual = hash_file(path)
        except (FileNotFoundError, NotADirectoryError):
            continue  # already gone
        if actual != output.sha256:
            kept.append((output.path, "differs from the lock (edited?)"))
            continue
        if not objects.has(actual):
            objects.put(path.read_bytes())
        os.unlink(path)
        deleted.append(output.path)
        base = root.resolve()
        if (base / output.path).parent == path.parent:  # not through a symlinked folder: a link would dangle
            _remove_emptied_folders(base, path.parent)


def _remove_emptied_folders(root: Path, folder: Path) -> None:
    """Remove ``folder`` and its parents up to ``root`` (never it) while the prune left them empty: an old
    output layout leaves no tree of empty folders (git keeps none either)."""
    while folder != root and folder.is_relative_to(root):
        try:
            os.rmdir(folder)  # only an empty folder: anything in it stays, and so does it
        except OSError:
            return
        folder = folder.parent


def _claimed_files(root: Path, claimed: frozenset[str]) -> Callable[[Path], bool]:
    """Whether a path is the very file of a claimed path, however it is reached (a symlinked folder, another
    letter case on macOS or Windows): compared by device and inode, found on first use (a prune with
    something to delete) and once."""
    files: set[tuple[int, int]] | None = None

    def check(path: Path) -> bool:
        nonlocal files
        if files is None:
            files = set()
            for rel in claimed:
                with contextlib.suppress(OSError):
                    st = os.stat(root / rel)
                    files.add((st.st_dev, st.st_ino))
        try:
            st = os.stat(path)
        except OSError:
            return False
        return (st.st_dev, st.st_ino) in files

    return check


def prune_orphans(
    root: Path, orphans: Mapping[str, LockEntry], claimed: frozenset[str], objects: ObjectCache
) -> PruneResult:
    """Delete the orphans' outputs that are safe to delete; the caller then drops the entries from the lock.

    ``claimed`` holds every output path a current target writes; those files are kept.
    """
    result: tuple[list[str], list[tuple[str, str]]] = ([], [])
    leads_to_claimed = _claimed_files(root, claimed)
    for name in sorted(orphans):
        _delete_outputs(root, name, orphans[name].outputs, claimed, objects, result, leads_to_claimed)
    return PruneResult(tuple(sorted(orphans)), tuple(result[0]), tuple(result[1]))


def prune_stale(
    root: Path, stale: Mapping[str, tuple[LockedOutput, ...]], claimed: frozenset[str], objects: ObjectCache
) -> PruneResult:
    """Delete targets' stale outputs (written before ``out`` or ``n`` changed) by the rules orphans follow.

    The caller then clears ``LockEntry.stale`` of each target; a kept file is reported, and no longer tracked.
    """
    result: tuple[list[str], list[tuple[str, str]]] = ([], [])
    leads_to_claimed = _claimed_files(root, claimed)
    for name in sorted(stale):
        _delete_outputs(root, name, stale[name], claimed, objects, result, leads_to_claimed)
    return PruneResult((), tuple(result[0]), tuple(result[1]))
