"""Three-way merge of ``pixmake.lock`` by target name: what ``pixmake merge-lock``, git's merge driver, decides.

PURE. A lock is a set of blocks keyed by target name, so a merge by name is exact where git's line merge
is not (two branches that each add a neighbouring target conflict line by line). For each name, with
BASE the common ancestor::

    ours == theirs            → that (unchanged, removed on both, or the same change on both)
    ours == base              → theirs (changed, added or removed on their side only)
    theirs == base            → ours
    otherwise                 → both changed it:
        same image, other leftovers   → one entry, the ``stale`` lists merged three ways (clean)
        changed and removed           → a conflict; the changed entry is kept (unless the change
                                        only dropped leftovers: then removed, cleanly)
        changed differently (or added
        on both, differently)         → a conflict; ours is kept, theirs' output paths recorded as stale

Every entry of the result is one a side locked (its inputs, key and images together), so the merged
lock never claims an image a build did not make from those inputs, and the plan checks every entry
against the manifest and the files anyway. A conflicted target keeps an entry rather than none: with
none, the plan creates it (paid) whatever the manifest says, while ours' entry is free when the
manifest resolves to ours' inputs, ours' images being the ones here (built here, and git leaves ours'
side of a conflicted binary file in the work tree), and costs what none would otherwise (the plan's
restore rules look for a twin or an earlier build either way).

The command around it reads the three files and writes only OURS: git runs merge drivers where there
is no work tree too (``git merge-tree``), so the merge never looks at ``.pixmake/`` or the images.
"""

from __future__ import annotations

import posixpath
import shlex
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from enum import Enum
from types import MappingProxyType
from typing import Final

from pixmake.errors import LockfileError
from pixmake.fingerprint import current_keys
from pixmake.lockfile import Lock, LockedInput, LockedOutput, LockEntry, parse_lock

__all__ = ["Conflict", "ConflictKind", "LockMerge", "Side", "merge_lock_bytes", "merge_locks", "read_side"]


class Side(Enum):
    """A side of a merge, as git names them (``%A`` is ours, ``%B`` theirs)."""

    OURS = "ours"
    THEIRS = "theirs"


class ConflictKind(Enum):
    """How both sides changed one target."""

    CHANGED_ON_BOTH = "changed on both sides"
    ADDED_ON_BOTH = "added on both sides, differently"
    REMOVED_BY_OURS = "removed on our side and changed on theirs"
    REMOVED_BY_THEIRS = "removed on their side and changed on ours"


@dataclass(frozen=True, slots=True)
class Conflict:
    """A target both sides changed differently, and the side whose entry the merged lock keeps."""

    name: str
    kind: ConflictKind
    kept: Side
    set_aside: LockEntry | None = field(default=None, compare=False)  # the other side's entry, if any

    def advice(self, file: str = "pixmake.lock") -> str:
        """One line for the person resolving the merge: the target, what was kept, what to do next."""
        folder = posixpath.dirname(file)
        pixmake = f"pixmake -C {shlex.quote(folder)}" if folder else "pixmake"
        what = f"target {self.name!r} {self.kind.value}: {file} keeps {self.kept.value}"
        if self.kind in (ConflictKind.REMOVED_BY_OURS, ConflictKind.REMOVED_BY_THEIRS):
            then = f"if the manifest drops it, {pixmake} build --prune removes it"
        else:
            theirs = ""
            if self.kept is Side.OURS and self.set_aside is not None:  # git leaves our images in the working tree
                paths = " ".join(shlex.quote(posixpath.join(folder, o.path)) for o in self.set_aside.outputs)
                theirs = f"git checkout --theirs -- {paths}, then "
            then = (
                f"resolve the manifest and its images, then {pixmake} plan says what a build does (free when "
                f"either side's images for the inputs you keep were built here; to keep theirs as they are: "
                f"{theirs}{pixmake} accept {shlex.quote(self.name)})"
            )
        rebase = " (in a rebase, ours is the branch rebased onto)" if self.kept is Side.OURS else ""
        return f"{what}{rebase}; {then}; then git add {shlex.quote(file)}"


@dataclass(frozen=True, slots=True)
class LockMerge:
    """The merged lock (always a whole, valid lock) and the targets that conflicted, by name."""

    lock: Lock
    conflicts: tuple[Conflict, ...] = ()

    @property
    def clean(self) -> bool:
        """Whether no target conflicted."""
        return not self.conflicts


def _core(entry: LockEntry) -> LockEntry:
    """The entry without its leftovers (``stale``) nor the pixel digests of its inputs (``accept`` or a
    build may add them to an entry an older pixmake wrote): the image and what it was made from."""
    core = replace(entry, stale=()) if entry.stale else entry
    if all(i.pixels is None for i in (*core.references, core.mask) if i is not None):
        return core
    unseen = [replace(i, pixels=None) for i in core.references]
    return replace(core, references=tuple(unseen), mask=None if core.mask is None else replace(core.mask, pixels=None))


def _with_pixels(kept: LockEntry, other: LockEntry) -> LockEntry:
    """``kept`` with the pixel digests ``other`` records for the same input files, where it records none."""
    known = {(i.path, i.sha256): i.pixels for i in (*other.references, other.mask) if i is not None and i.pixels}
    if not known:
        return kept

    def noted(i: LockedInput) -> LockedInput:
        return (
            replace(i, pixels=known.get((i.path, i.sha256))) if i.pixels is None and (i.path, i.sha256) in known else i
        )

    return replace(
        kept, references=tuple(map(noted, kept.references)), mask=None if kept.mask is None else noted(kept.mask)
    )


def _merged_stale(
    base: LockEntry | None, kept: LockEntry, other: LockEntry, extra: Iterable[LockedOutput] = ()
) -> LockEntry:
    """``kept`` with the stale outputs of ``kept`` and ``other`` merged three ways against ``base``.

    A leftover one side dropped (``build --prune`` deleted it) stays dropped; one either side added is
    recorded; ``extra`` (the other side's outputs, for a conflict) is recorded too, so that no file a
    side wrote goes untracked. A path the entry writes is never stale.
    """
    before = {o.path for o in base.stale} if base is not None else set()
    mine = {o.path for o in kept.stale}
    theirs = {o.path for o in other.stale}
    writes = {o.path for o in kept.outputs}
    stale: dict[str, LockedOutput] = {}
    for output in (*kept.stale, *other.stale):
        path = output.path
        if (path in mine and path in theirs) or path not in before:
            stale.setdefault(path, output)
    for output in extra:
        stale.setdefault(output.path, output)
    merged = tuple(o for path, o in stale.items() if path not in writes)
    return kept if merged == kept.stale else replace(kept, stale=merged)


def _merge_target(
    base: LockEntry | None, ours: LockEntry | None, theirs: LockEntry | None
) -> tuple[LockEntry | None, ConflictKind | None]:
    """The merged entry of one target (None: not in the lock) and the conflict, if any."""
    if ours == theirs:
        return ours, None
    if ours == base:
        return theirs, None
    if theirs == base:
        return ours, None
    core_base = _core(base) if base is not None else None
    if ours is None or theirs is None:  # removed on one side, changed on the other
        changed = theirs if ours is None else ours
        assert changed is not None  # ours == theirs is handled above
        if _core(changed) == core_base:  # its only change dropped leftovers (build --prune): the removal stands
            return None, None
        return changed, ConflictKind.REMOVED_BY_OURS if ours is None else ConflictKind.REMOVED_BY_THEIRS
    core_ours, core_theirs = _core(ours), _core(theirs)
    if core_ours == core_theirs or core_theirs == core_base:
        return _with_pixels(_merged_stale(base, ours, theirs), theirs), None
    if core_ours == core_base:
        return _with_pixels(_merged_stale(base, theirs, ours), ours), None
    kind = ConflictKind.CHANGED_ON_BOTH if base is not None else ConflictKind.ADDED_ON_BOTH
    return _merged_stale(base, ours, theirs, theirs.outputs), kind


def merge_locks(base: Lock, ours: Lock, theirs: Lock) -> LockMerge:
    """Merge ``ours`` and ``theirs`` target by target against their common ancestor ``base``.

    The result is always a whole lock; see the module docstring for the rule per target.
    """
    entries: dict[str, LockEntry] = {}
    conflicts: list[Conflict] = []
    for name in sorted(ours.entries.keys() | theirs.entries.keys() | base.entries.keys()):
        mine, other = ours.entries.get(name), theirs.entries.get(name)
        entry, kind = _merge_target(base.entries.get(name), mine, other)
        if entry is not None:
            entries[name] = entry
        if kind is not None:
            kept = Side.THEIRS if kind is ConflictKind.REMOVED_BY_OURS else Side.OURS
            both = kind in (ConflictKind.CHANGED_ON_BOTH, ConflictKind.ADDED_ON_BOTH)
            conflicts.append(Conflict(name, kind, kept, other if both else None))  # ours kept, theirs set aside
    return LockMerge(Lock(MappingProxyType(entries)), tuple(conflicts))


_RESTORE_HINT: Final = "; restore it from git"
"""Where parse_lock's advice for a damaged lock starts: "restore it from git ... or delete it" is wrong advice
in the middle of a merge (deleting the lock pays for every target again), so it is replaced."""


def read_side(data: bytes, *, side: str, file: str = "pixmake.lock", empty_ok: bool = False) -> Lock:
    """The lock in ``data``, one side of a merge (``side``: "base", "ours" or "theirs", for messages).

    ``empty_ok`` reads empty text as an empty lock: git passes an empty file as the base when the two
    sides have no common ancestor (both added the lock). Raises LockfileError, naming the side, for
    anything ``parse_lock`` refuses (a corrupt lock, one from a newer pixmake) and for text that is not UTF-8.
    """
    label = f"{file} ({side})"
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise LockfileError(f"{label}: lockfile is corrupt (not UTF-8 text); {file} is left as ours") from None
    if empty_ok and not text.strip():
        return Lock()
    try:
        return current_keys(parse_lock(text, file=label))  # each side under today's keys, as a plan reads it
    except LockfileError as error:
        message = str(error).partition(_RESTORE_HINT)[0]
        raise LockfileError(f"{message}; {file} is left as ours") from None


def merge_lock_bytes(base: bytes, ours: bytes, theirs: bytes, *, file: str = "pixmake.lock") -> LockMerge:
    """Merge three locks given as the bytes of git's ``%O %A %B`` files (``base`` may be empty).

    Raises LockfileError, naming the side, when a side is not a lock this pixmake reads.
    """
    return merge_locks(
        read_side(base, side="base", file=file, empty_ok=True),
        read_side(ours, side="ours", file=file),
        read_side(theirs, side="theirs", file=file),
    )
