"""Decide, per target, what a build will do and why.

PURE: ``make_plan(targets, lock, disk)`` reads values only. Each target gets one :class:`Action`
with the reasons behind it, so ``plan``, ``build`` and ``--json`` all explain themselves (ninja's
``-d explain``, doit's ``DependencyStatus.reasons``).
"""

from __future__ import annotations

import difflib
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Any

from pixmake.fingerprint import input_hash, target_key
from pixmake.lockfile import Lock, LockEntry
from pixmake.manifest import Target, output_paths

if TYPE_CHECKING:
    from pixmake.scan import DiskState

__all__ = ["Action", "ActionKind", "Plan", "Reason", "make_plan"]


class ActionKind(Enum):
    """What a build does with one target."""

    CREATE = "create"  # paid: never built
    REGENERATE = "regenerate"  # paid: inputs changed, or outputs lost for good
    RESTORE = "restore"  # free: locked bytes put back from the object cache
    EDITED = "edited"  # an output differs from the lock; left alone
    ORPHAN = "orphan"  # in the lock, not in the manifest
    UNCHANGED = "unchanged"

    @property
    def paid(self) -> bool:
        """Whether this action submits (and pays for) a generation."""
        return self in (ActionKind.CREATE, ActionKind.REGENERATE)


@dataclass(frozen=True, slots=True)
class Reason:
    """Why an action was chosen: a short code for machines and a sentence for people."""

    code: str
    text: str
    details: Mapping[str, Any] | None = None

    def __str__(self) -> str:
        return self.text


@dataclass(frozen=True, slots=True)
class Action:
    """One target's planned action, its reasons, and the key it will be locked under."""

    kind: ActionKind
    name: str
    reasons: tuple[Reason, ...]
    target: Target | None = None
    key: str | None = None
    source: LockEntry | None = None  # the lock entry whose bytes a restore uses


@dataclass(frozen=True, slots=True)
class Plan:
    """All actions, in manifest order, then orphans by name."""

    actions: tuple[Action, ...]

    def counts(self) -> Counter[ActionKind]:
        """How many actions of each kind."""
        return Counter(action.kind for action in self.actions)

    @property
    def images_to_generate(self) -> int:
        """Images that a build would pay for."""
        return sum(a.target.n for a in self.actions if a.kind.paid and a.target is not None)

    @property
    def changes(self) -> tuple[Action, ...]:
        """Actions that would pay for or write something."""
        return tuple(a for a in self.actions if a.kind not in (ActionKind.UNCHANGED, ActionKind.EDITED))

    def summary(self) -> str:
        """One line: ``2 to create, 1 to regenerate, 40 unchanged; 3 images to generate``."""
        counts = self.counts()
        words = {
            ActionKind.CREATE: "to create",
            ActionKind.REGENERATE: "to regenerate",
            ActionKind.RESTORE: "to restore",
            ActionKind.EDITED: "edited",
            ActionKind.ORPHAN: "orphaned",
            ActionKind.UNCHANGED: "unchanged",
        }
        parts = [f"{counts[kind]} {word}" for kind, word in words.items() if counts[kind]]
        images = self.images_to_generate
        return f"{', '.join(parts) or 'nothing to do'}; {images} image{'s' * (images != 1)} to generate"


def _prompt_diff(old: str, new: str, *, limit: int = 80) -> str:
    a, b = old.split(), new.split()
    pieces: list[str] = []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(a=a, b=b, autojunk=False).get_opcodes():
        if op in ("delete", "replace"):
            pieces.append("-[" + " ".join(a[i1:i2]) + "]")
        if op in ("insert", "replace"):
            pieces.append("+[" + " ".join(b[j1:j2]) + "]")
    text = " ".join(pieces) or "whitespace only"
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _short(sha: str) -> str:
    return sha.removeprefix("url:")[:8]


def _input_reasons(target: Target, entry: LockEntry, hashes: Mapping[str, str]) -> list[Reason]:
    reasons: list[Reason] = []
    for index in range(max(len(target.references), len(entry.references))):
        if index >= len(target.references):
            reasons.append(Reason("reference-removed", f"reference {entry.references[index].path} removed"))
            continue
        path, new = target.references[index], input_hash(target.references[index], hashes)
        if index >= len(entry.references):
            reasons.append(Reason("reference-added", f"reference {path} added"))
        elif entry.references[index].sha256 != new:
            old = entry.references[index].sha256
            reasons.append(
                Reason(
                    "reference-changed",
                    f"reference {path} changed ({_short(old)} → {_short(new)})",
                    {"path": path, "old": old, "new": new},
                )
            )
    new_mask = None if target.mask is None else input_hash(target.mask, hashes)
    old_mask = None if entry.mask is None else entry.mask.sha256
    if new_mask != old_mask:
        reasons.append(Reason("mask-changed", f"mask {target.mask or 'removed'} changed"))
    return reasons


def _change_reasons(target: Target, entry: LockEntry, hashes: Mapping[str, str]) -> tuple[Reason, ...]:
    reasons: list[Reason] = []
    if entry.prompt != target.prompt:
        reasons.append(Reason("prompt-changed", f"prompt changed: {_prompt_diff(entry.prompt, target.prompt)}"))
    scalar: tuple[tuple[str, object, object], ...] = (
        ("model", entry.model, target.model),
        ("size", entry.size, target.size),
        ("n", entry.n, target.n),
    )
    for name, was, now in scalar:
        if was != now:
            reasons.append(Reason(f"{name}-changed", f"{name} {was} → {now}", {"old": was, "new": now}))
    for param in sorted(set(entry.params) | set(target.params)):
        old, new = entry.params.get(param), target.params.get(param)
        if old != new:
            reasons.append(Reason("param-changed", f"param {param} {old!r} → {new!r}", {"param": param}))
    reasons.extend(_input_reasons(target, entry, hashes))
    return tuple(reasons) or (Reason("key-changed", "fingerprint format or provider changed"),)


def _output_action(target: Target, key: str, entry: LockEntry, disk: DiskState, *, moved: bool) -> Action:
    wanted = output_paths(target)
    missing: list[Reason] = []
    edited: list[Reason] = []
    restorable = True
    for path, locked in zip(wanted, entry.outputs, strict=False):
        actual = disk.file_hashes.get(path)
        if actual == locked.sha256:
            continue
        if actual is None:
            missing.append(Reason("output-missing", f"output {path} is missing", {"path": path}))
            restorable = restorable and locked.sha256 in disk.cached_objects
        else:
            edited.append(
                Reason("output-edited", f"output {path} differs from the lock (edited by hand?)", {"path": path})
            )
    if len(entry.outputs) != len(wanted):
        return Action(
            ActionKind.REGENERATE, target.name, (Reason("outputs-incomplete", "lock has too few outputs"),), target, key
        )
    if edited:
        return Action(ActionKind.EDITED, target.name, tuple(edited + missing), target, key, entry)
    if missing and not restorable:
        reasons = (*missing, Reason("not-cached", "locked bytes are not in the object cache"))
        return Action(ActionKind.REGENERATE, target.name, reasons, target, key)
    if missing or moved:
        why = missing or [Reason("output-moved", "out path changed; locked bytes are already in place")]
        return Action(ActionKind.RESTORE, target.name, tuple(why), target, key, entry)
    return Action(ActionKind.UNCHANGED, target.name, (), target, key, entry)


def _target_action(
    target: Target, lock: Lock, by_key: Mapping[str, str], disk: DiskState, replace: frozenset[str]
) -> Action:
    key = target_key(target, disk.file_hashes)
    entry = lock.entries.get(target.name)
    if target.name in replace:
        return Action(ActionKind.REGENERATE, target.name, (Reason("replace", "replacement requested"),), target, key)
    if entry is None:
        twin = by_key.get(key)
        if twin is not None:
            source = lock.entries[twin]
            renamed = Reason("renamed", f"same inputs as locked target {twin!r}", {"from": twin})
            if all(o.sha256 in disk.cached_objects or disk.file_hashes.get(o.path) == o.sha256 for o in source.outputs):
                return Action(ActionKind.RESTORE, target.name, (renamed,), target, key, source)
        return Action(ActionKind.CREATE, target.name, (Reason("new", "not in the lockfile"),), target, key)
    if entry.key != key:
        return Action(ActionKind.REGENERATE, target.name, _change_reasons(target, entry, disk.file_hashes), target, key)
    moved = tuple(o.path for o in entry.outputs) != output_paths(target)
    return _output_action(target, key, entry, disk, moved=moved)


def make_plan(targets: Iterable[Target], lock: Lock, disk: DiskState, *, replace: Iterable[str] = ()) -> Plan:
    """One action per target (manifest order), then one ORPHAN per lock entry no target claims."""
    targets = tuple(targets)
    replaced = frozenset(replace)
    by_key = {entry.key: name for name, entry in sorted(lock.entries.items())}
    actions = [_target_action(t, lock, by_key, disk, replaced) for t in targets]
    names = {t.name for t in targets}
    for name in sorted(set(lock.entries) - names):
        actions.append(
            Action(ActionKind.ORPHAN, name, (Reason("orphan", "no longer in the manifest"),), source=lock.entries[name])
        )
    return Plan(tuple(actions))
