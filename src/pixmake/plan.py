"""Decide, per target, what a build will do and why.

PURE: ``make_plan(targets, lock, disk)`` reads values only. Each target gets one :class:`Action`
with the reasons behind it, so ``plan``, ``build`` and ``--json`` all explain themselves (ninja's
``-d explain``, doit's ``DependencyStatus.reasons``).
"""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from functools import cache
from typing import TYPE_CHECKING, Any, Final

from pixmake import invocation

if TYPE_CHECKING:
    from pixmake.journal import PendingSubmit
    from pixmake.lockfile import Lock, LockedInput, LockedOutput, LockEntry
    from pixmake.manifest import Target
    from pixmake.scan import DiskState

# The planner's helpers (manifest.output_paths, fingerprint.target_key) are imported inside
# make_plan, not here: a plan answered from the no-op memo (pixmake.memo) needs only the types
# below, and must not pay for importing the manifest parser (yaml, jsonschema).

__all__ = [
    "LFS_POINTER",
    "PLACEHOLDER",
    "PROVIDER_MADE",
    "AbandonedTask",
    "Action",
    "ActionKind",
    "Builder",
    "Plan",
    "Reason",
    "Resaved",
    "make_plan",
    "resaved_inputs",
]


class ActionKind(Enum):
    """What a build does with one target."""

    CREATE = "create"  # paid: never built
    REGENERATE = "regenerate"  # paid: inputs changed, or outputs lost for good
    RESTORE = "restore"  # free: locked bytes put back from the object cache
    RESUME = "resume"  # already paid: collect a journaled task of an interrupted build
    EDITED = "edited"  # an output differs from the lock; left alone
    ORPHAN = "orphan"  # in the lock, not in the manifest
    UNCHANGED = "unchanged"

    @property
    def paid(self) -> bool:
        """Whether this action submits (and pays for) a generation."""
        return self in (ActionKind.CREATE, ActionKind.REGENERATE)

    @property
    def generates(self) -> bool:
        """Whether this action writes images from the provider (paid now, or paid by an interrupted build)."""
        return self in (ActionKind.CREATE, ActionKind.REGENERATE, ActionKind.RESUME)


@dataclass(frozen=True, slots=True)
class Reason:
    """Why an action was chosen: a short code for machines and a sentence for people."""

    code: str
    text: str
    details: Mapping[str, Any] | None = None

    def __str__(self) -> str:
        return self.text


EarlierCounts = Callable[["Target"], frozenset[int]]
"""The values of ``n`` of the entries earlier builds replaced or kept that have a target's model, size and
prompt (``make_plan``'s ``earlier_counts``): which lower or higher ``n`` of its inputs may be remembered."""

_NEW: Final = (Reason("new", "not in the lockfile"),)  # shared: a first build has one per target
# Restored from another entry's images (the last: from a target generated in the same build).
_BUILT_BEFORE: Final = frozenset({"renamed", "same-inputs", "built-before", "same-inputs-in-build"})
PLACEHOLDER: Final = "emulator-placeholder"
"""The reason code of a target whose locked images the bundled emulator made (``build --emulator``)."""
LFS_POINTER: Final = "output-lfs-pointer"
"""The reason code of an output that is a Git LFS pointer file: ``api.plan`` refuses to pay for it."""
PROVIDER_MADE: Final = "provider-images"
"""The reason code of a paid action that ``build --emulator`` refuses: it would replace the provider's images."""
_PLACEHOLDERS: Final = Reason(PLACEHOLDER, "its locked images are placeholders from build --emulator")
_PLACEHOLDERS_KEPT: Final = Reason(
    PLACEHOLDER, "its locked images are placeholders from build --emulator; a build without --emulator regenerates it"
)

_PROVIDER_IMAGES: Final = Reason(
    PROVIDER_MADE,
    "its locked images come from the provider for these inputs; build --emulator does not replace them "
    "with placeholders: build without --emulator",
)


def _placeholders_kept(remembered: int, paid: int) -> Reason:
    """The note of placeholders whose target a build without ``--emulator`` gives ``remembered`` images of
    the provider's it made for these inputs before (with a lower ``n`` when ``paid``), paying for ``paid``."""
    some = f"{remembered} image{'s' * (remembered != 1)} the provider made for these inputs before"
    does = f"keeps the {some} and generates {paid} more" if paid else f"puts back the {some}, free"
    text = f"its locked images are placeholders from build --emulator; a build without --emulator {does}"
    return Reason(PLACEHOLDER, text, {"provider_images": paid})


class Builder(Enum):
    """Which server a plan is for: who would make the images."""

    EITHER = "either"  # `pixmake plan`: the emulator's placeholders are kept, with a note; the rest as the provider
    PROVIDER = "provider"  # a build without --emulator: placeholders are generated
    EMULATOR = "emulator"  # build --emulator: placeholders are kept; the provider's images are never replaced


@dataclass(frozen=True, slots=True)
class Action:
    """One target's planned action, its reasons, and the key it will be locked under.

    ``target`` is None for an orphan, and for the actions of a plan answered by the no-op memo
    (:meth:`Plan.all_unchanged`), where only the name and key are known. ``stale`` lists locked
    outputs the target no longer writes (``out`` renamed, ``n`` lowered) whose files are still there:
    ``build --prune`` deletes them, so they count as changes whatever the action's kind.
    A RESUME names in ``fallback`` what the build does instead when the journaled task turns out
    not to exist (it never arrived, or failed and was refunded): the action planned without it.
    ``kept`` lists the outputs a RESTORE leaves as they are: edited by hand, beside missing ones it puts back.
    ``after`` names the target generated in the same build whose images a RESTORE copies (same inputs):
    its ``source`` is known only once that target is built. A paid action with a ``source`` keeps that
    entry's images as its first ones and pays only for the rest (``n`` raised: :attr:`images`).
    """

    kind: ActionKind
    name: str
    reasons: tuple[Reason, ...]
    target: Target | None = None
    key: str | None = None
    source: LockEntry | None = None  # the lock entry whose bytes a restore uses (or a paid action keeps)
    stale: tuple[LockedOutput, ...] = ()
    fallback: Action | None = None
    kept: tuple[str, ...] = ()
    after: str | None = None

    @property
    def images(self) -> int:
        """Images this action pays for: ``n``, less the locked ones a paid action keeps (``n`` raised)."""
        if not self.kind.paid or self.target is None:
            return 0
        return self.target.n - (len(self.source.outputs) if self.source is not None else 0)


@dataclass(frozen=True, slots=True)
class AbandonedTask:
    """A journaled task of an interrupted build that a build drops instead of collecting.

    Its target's inputs changed since it was paid for (or the target left the manifest): its images
    are not what the manifest asks for now, so they are not written anywhere.
    """

    name: str
    key: str
    reason: Reason


_QUIET: Final = frozenset({ActionKind.UNCHANGED, ActionKind.EDITED})
_WORDS: Final = {
    ActionKind.CREATE: "to create",
    ActionKind.REGENERATE: "to regenerate",
    ActionKind.RESTORE: "to restore",
    ActionKind.RESUME: "to resume (already paid)",
    ActionKind.EDITED: "edited",
    ActionKind.ORPHAN: "orphaned",
    ActionKind.UNCHANGED: "unchanged",
}


class Plan:
    """All actions, in manifest order, then orphans by name.

    A plan in which every target is unchanged can be made from (name, key) pairs with
    :meth:`all_unchanged`; its actions are then built only when someone asks for them, so the no-op
    ``plan --check`` of 100,000 targets does not build 100,000 objects to print one line.

    ``abandoned`` lists journaled tasks of an interrupted build that no longer match their target;
    ``unwritten`` the targets whose finished entries only the journal holds (a build that could not write
    the lockfile, or one running): a build writes them into ``pixmake.lock``, and until then a clone of the
    repository pays for them again.
    """

    __slots__ = ("_actions", "_unchanged", "abandoned", "unwritten")

    def __init__(
        self, actions: Iterable[Action], abandoned: Iterable[AbandonedTask] = (), unwritten: Iterable[str] = ()
    ) -> None:
        self._actions: tuple[Action, ...] | None = tuple(actions)
        self._unchanged: Sequence[tuple[str, str]] = ()
        self.abandoned = tuple(abandoned)
        self.unwritten = tuple(unwritten)

    @classmethod
    def all_unchanged(cls, targets: Sequence[tuple[str, str]]) -> Plan:
        """A plan of UNCHANGED actions for these (name, key) pairs, built lazily."""
        plan = cls(())
        plan._actions, plan._unchanged = None, targets
        return plan

    @property
    def actions(self) -> tuple[Action, ...]:
        """Every action."""
        if self._actions is None:
            kind = ActionKind.UNCHANGED
            self._actions = tuple(Action(kind, name, (), None, key) for name, key in self._unchanged)
        return self._actions

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Plan)
            and self.actions == other.actions
            and self.abandoned == other.abandoned
            and self.unwritten == other.unwritten
        )

    __hash__ = None  # type: ignore[assignment]  # mutable cache inside; equality is by actions

    def __repr__(self) -> str:
        return f"Plan({self.summary()})"

    def counts(self) -> Counter[ActionKind]:
        """How many actions of each kind."""
        if self._actions is None:
            return Counter({ActionKind.UNCHANGED: len(self._unchanged)})
        return Counter(action.kind for action in self._actions)

    @property
    def images_to_generate(self) -> int:
        """Images that a build would pay for."""
        if self._actions is None:
            return 0
        return sum(a.images for a in self._actions)

    @property
    def changes(self) -> tuple[Action, ...]:
        """Actions that would pay for or write something (``build --prune`` deleting stale outputs included)."""
        if self._actions is None:
            return ()
        return tuple(a for a in self._actions if a.kind not in _QUIET or a.stale)

    @property
    def up_to_date(self) -> bool:
        """Whether a build would do nothing: no change, no journaled task to resume or drop, and no finished
        entry to write into the lockfile (``plan --check``)."""
        return not self.changes and not self.abandoned and not self.unwritten

    @property
    def listed(self) -> tuple[Action, ...]:
        """Actions a plan shows by default: every one but the unchanged (unless it has stale outputs, or a
        reason other than keeping placeholders, which the summary counts: listed one by one, they buried the
        changes of a project built with ``--emulator``)."""
        if self._actions is None:
            return ()
        return tuple(
            a
            for a in self._actions
            if a.kind is not ActionKind.UNCHANGED or a.stale or any(r.code != PLACEHOLDER for r in a.reasons)
        )

    @property
    def placeholders(self) -> tuple[Action, ...]:
        """Actions that keep the bundled emulator's placeholder images, which a build without ``--emulator``
        generates (an edited one it leaves alone, and says so in its own reasons)."""
        if self._actions is None:
            return ()
        kept = (ActionKind.UNCHANGED, ActionKind.RESTORE)
        return tuple(a for a in self._actions if a.kind in kept and any(r.code == PLACEHOLDER for r in a.reasons))

    @property
    def replaced_accepted(self) -> tuple[str, ...]:
        """Output files ``pixmake accept`` recorded that this plan's build would replace (their bytes are kept)."""
        return tuple(
            r.details["path"]
            for a in self._actions or ()
            for r in a.reasons
            if r.code == "replaces-file" and r.details is not None and r.details.get("accepted")
        )

    def summary(self) -> str:
        """One line: ``2 to create, 1 to regenerate, 40 unchanged; 3 images to generate``.

        Targets holding the emulator's placeholders (in a plan that keeps them) are counted after it.
        """
        counts = self.counts()
        parts = [f"{counts[kind]} {word}" for kind, word in _WORDS.items() if counts[kind]]
        stale = sum(len(a.stale) for a in self._actions or ())
        if stale:
            parts.append(f"{stale} stale output{'s' * (stale != 1)} to prune")
        if self.abandoned:
            many = len(self.abandoned) != 1
            why = sorted({_dropped_why(task.reason) for task in self.abandoned})
            parts.append(f"{len(self.abandoned)} interrupted task{'s' * many} to drop ({', '.join(why)})")
        if self.unwritten:
            many = len(self.unwritten) != 1
            parts.append(f"{len(self.unwritten)} finished target{'s' * many} to write into pixmake.lock")
        images = self.images_to_generate
        line = f"{', '.join(parts) or 'nothing to do'}; {images} image{'s' * (images != 1)} to generate"
        accepted = self.replaced_accepted
        if accepted:
            line += (
                f"; {len(accepted)} file{'s' * (len(accepted) != 1)} recorded by pixmake accept (retouches?) "
                "would be replaced"
            )
        kept = self.placeholders
        if kept:
            per_key = {a.key: _provider_images(a) for a in kept}  # twins are paid for once
            count = sum(per_key.values())
            line += (
                f"; {len(kept)} target{'s' * (len(kept) != 1)} hold{'s' * (len(kept) == 1)} placeholder images "
                f"from build --emulator (plan -v lists them), which a build without --emulator "
                + (
                    f"regenerates ({count} image{'s' * (count != 1)})"
                    if count
                    else "replaces with the provider's, free"
                )
            )
            if count and images:  # one figure for the bill, not two to add up
                line += f": {images + count} images to pay for without --emulator"
        return line


def _provider_images(action: Action) -> int:
    """Images a build without ``--emulator`` pays for a target whose placeholders ``action`` keeps."""
    for reason in action.reasons:
        if reason.code == PLACEHOLDER and reason.details is not None:
            return int(reason.details["provider_images"])
    return action.target.n if action.target is not None else 0


def _printable(text: str) -> str:
    """``text`` with each character a terminal would act on (an escape code, a bidi override) escaped: a
    prompt or a value read from the lock (a pull request's) must not rewrite the lines a reviewer reads."""
    return text if text.isprintable() else "".join(c if c.isprintable() else ascii(c)[1:-1] for c in text)


def _prompt_diff(old: str, new: str, *, limit: int = 80) -> str:
    import difflib

    a, b = [_printable(w) for w in old.split()], [_printable(w) for w in new.split()]  # a line end splits too
    pieces: list[str] = []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(a=a, b=b, autojunk=False).get_opcodes():
        if op in ("delete", "replace"):
            pieces.append("-[" + " ".join(a[i1:i2]) + "]")
        if op in ("insert", "replace"):
            pieces.append("+[" + " ".join(b[j1:j2]) + "]")
    text = " ".join(pieces) or "whitespace only"
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _json(value: object) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)


def _short(sha: str) -> str:
    return sha.removeprefix("url:")[:8]


def _input_reasons(target: Target, entry: LockEntry, hashes: Mapping[str, str]) -> list[Reason]:
    from pixmake.fingerprint import input_hash

    reasons: list[Reason] = []
    now = [input_hash(ref, hashes) for ref in target.references]
    was = [r.sha256 for r in entry.references]
    if now != was and sorted(now) == sorted(was):  # the same images, listed in another order (the order is sent)
        text = f"references reordered: {', '.join(target.references)}"
        reasons.append(Reason("references-reordered", text, {"paths": list(target.references)}))
    else:
        for index in range(max(len(target.references), len(entry.references))):
            if index >= len(target.references):
                path = entry.references[index].path
                reasons.append(Reason("reference-removed", f"reference {path} removed", {"path": path}))
                continue
            path, new = target.references[index], now[index]
            if index >= len(entry.references):
                reasons.append(Reason("reference-added", f"reference {path} added", {"path": path, "new": new}))
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
        if new_mask is None:
            text = f"mask {entry.mask.path if entry.mask else ''} removed"
        elif old_mask is None:
            text = f"mask {target.mask} added"
        else:
            text = f"mask {target.mask} changed ({_short(old_mask)} → {_short(new_mask)})"
        reasons.append(Reason("mask-changed", text, {"path": target.mask, "old": old_mask, "new": new_mask}))
    return reasons


def _change_reasons(target: Target, entry: LockEntry, hashes: Mapping[str, str]) -> tuple[Reason, ...]:
    from pixmake.fingerprint import keyed_params, keyed_prompt

    reasons: list[Reason] = []
    if keyed_prompt(entry.prompt) != keyed_prompt(target.prompt):  # not a prompt only rewrapped: the same prompt
        reasons.append(
            Reason(
                "prompt-changed",
                f"prompt changed: {_prompt_diff(entry.prompt, target.prompt)}",
                {"old": entry.prompt, "new": target.prompt},
            )
        )
    scalar: tuple[tuple[str, object, object], ...] = (
        ("model", entry.model, target.model),
        ("size", entry.size, target.size),
        ("n", entry.n, target.n),
    )
    for name, was, now in scalar:
        if was != now:
            text = f"{name} {_printable(str(was))} → {_printable(str(now))}"
            reasons.append(Reason(f"{name}-changed", text, {"old": was, "new": now}))
    old_params, new_params = keyed_params(entry.params), keyed_params(target.params)
    for param in sorted(set(old_params) | set(new_params)):
        old, new = old_params.get(param), new_params.get(param)
        if _json(old) != _json(new):  # as the key sees them: 1, 1.0 and true are three values
            text = _printable(f"param {param} {_json(old)} → {_json(new)}")
            reasons.append(Reason("param-changed", text, {"param": param, "old": old, "new": new}))
    reasons.extend(_input_reasons(target, entry, hashes))
    return tuple(reasons) or (Reason("key-changed", "fingerprint format or provider changed"),)


def _output_action(
    target: Target, key: str, wanted: tuple[str, ...], entry: LockEntry, disk: DiskState, *, restore: bool
) -> Action:
    """The action for a target whose key matches its lock entry (``wanted``: its output paths).

    An output's locked bytes can be put back when they are in the object cache, or still at the path they
    were locked at (its ``out`` renamed or swapped, in a fresh clone whose cache is empty): the build
    caches them from there before it writes anything.
    """
    if len(entry.outputs) != len(wanted):
        reason = Reason("outputs-incomplete", f"lock has {len(entry.outputs)} outputs, the target wants {len(wanted)}")
        return Action(ActionKind.REGENERATE, target.name, (reason,), target, key)
    missing: list[Reason] = []
    edited: list[Reason] = []
    cached = True  # every output not in place can be put back (from the object cache, or where it was locked)
    missing_cached = True  # every missing or damaged output can
    for path, locked in zip(wanted, entry.outputs, strict=True):
        actual = disk.file_hashes.get(path)
        if actual == locked.sha256:
            continue
        in_reach = _in_reach(locked, disk)
        cached = cached and in_reach
        if actual is None or path in disk.damaged:
            missing_cached = missing_cached and in_reach
        if actual is None and (twin := disk.case_twins.get((path, locked.sha256))) is not None:
            text = (
                f"output {path} is missing, its locked bytes are at {twin} (git on macOS and Windows keeps a "
                f"file's old letter case: {invocation.git('mv', '-f', twin, path)})"
            )
            missing.append(Reason("output-missing", text, {"path": path, "twin": twin}))
        elif actual is None and locked.sha256 in disk.in_lfs and not in_reach:
            text = (
                f"output {path} is missing; git holds it in Git LFS "
                f"({invocation.git('checkout', '--', path)}, with git lfs installed, brings it back)"
            )
            missing.append(Reason(LFS_POINTER, text, {"path": path, "missing": True}))
        elif actual is None:
            from_git = locked.sha256 in disk.in_git and locked.sha256 not in disk.cached_objects
            text = f"output {path} is missing" + (" (git has its locked bytes)" if from_git else "")
            missing.append(Reason("output-missing", text, {"path": path}))
        elif path in disk.lfs_pointers:  # not a hand edit: the image is in Git LFS, not fetched
            text = f"output {path} is a Git LFS pointer, not the image (git lfs pull fetches it)"
            missing.append(Reason(LFS_POINTER, text, {"path": path}))
        elif path in disk.damaged:  # not a hand edit: what a crash leaves of an unsynced write
            text = f"output {path} is empty or not a whole image (cut short by a crash?)"
            missing.append(Reason("output-damaged", text, {"path": path}))
        elif actual in disk.made_by_pixmake and in_reach:
            text = (
                f"output {path} holds another image pixmake made (outs moved or swapped? a branch switch?); "
                f"{invocation.pixmake('accept', target.name)} keeps it instead"
            )
            missing.append(Reason("output-replaced", text, {"path": path, "locked": locked.sha256, "actual": actual}))
        else:
            edited.append(
                Reason(
                    "output-edited",
                    f"output {path} differs from the lock (edited by hand?)",
                    {"path": path, "locked": locked.sha256, "actual": actual},
                )
            )
    if edited and not (restore and cached):
        hint = "build --restore puts the locked bytes back" if cached else "locked bytes are not in the object cache"
        hint += f"; {invocation.pixmake('accept', target.name)} keeps it"
        kept = Reason("edited-hint", f"kept as is; {hint}", {"cached": cached})
        if missing and missing_cached and not entry.emulator:  # put back what is gone, leave the edits alone
            paths = tuple(str(r.details["path"]) for r in edited if r.details is not None)
            return Action(ActionKind.RESTORE, target.name, (*missing, *edited, kept), target, key, entry, kept=paths)
        return Action(ActionKind.EDITED, target.name, (*edited, *missing, kept), target, key, entry)
    if (missing or edited) and not cached:
        text = "locked bytes are not in the object cache"
        if disk.git_refused:  # a committed copy may be there: say how to let git look (CI as another user)
            text += f"; git refused to read this repository, so git's copy was not looked for ({disk.git_refused})"
        reasons = (*missing, Reason("not-cached", text))
        return Action(ActionKind.REGENERATE, target.name, reasons, target, key)
    moved = tuple(o.path for o in entry.outputs) != wanted  # out renamed: the locked bytes are the same
    if missing or edited or moved:
        moved_only = Reason("output-moved", "out path changed; locked bytes are already in place")
        put_back = (*missing, *edited) or (moved_only,)
        return Action(ActionKind.RESTORE, target.name, put_back, target, key, entry)
    return Action(ActionKind.UNCHANGED, target.name, (), target, key, entry)


def _built_before(
    target: Target,
    key: str,
    lock: Lock,
    by_key: Mapping[str, str],
    disk: DiskState,
    earlier: Callable[[str], LockEntry | None],
    counts: frozenset[int] = frozenset(),
    earlier_counts: EarlierCounts | None = None,
) -> tuple[LockEntry, Reason] | None:
    """An entry built from exactly these inputs whose images can be put in place for free, with the reason:
    another target's in the lock, or one an earlier build replaced (``earlier``; it returns only entries
    whose images are all in the object cache or in place), or else the first images of another target's
    with these inputs but a higher n (``counts``: the lock's values of n), or of a remembered entry's
    (``earlier_counts``: a short result's, say)."""
    twin = by_key.get(key)
    if twin is not None and twin != target.name:
        source = lock.entries[twin]
        if all(_in_reach(o, disk) for o in source.outputs):
            code = "renamed" if target.name not in lock.entries else "same-inputs"
            return source, Reason(code, f"same inputs as locked target {twin!r}", {"from": twin})
    entry = earlier(key)
    if entry is not None:
        where = "git holds" if all(o.sha256 in disk.in_git for o in entry.outputs) else "are in .pixmake/objects"
        return entry, Reason("built-before", f"same inputs as an earlier build, whose images {where}")
    return _first_images_of_more(target, lock, by_key, disk, counts) or _first_images_of_earlier(
        target, disk, earlier, earlier_counts, own=lock.entries.get(target.name)
    )


def _in_reach(output: LockedOutput, disk: DiskState) -> bool:
    """Whether a locked image can be put in place: cached, still at the path it was locked at, under that
    name in another letter case (see ``DiskState.case_twins``), or in git (``DiskState.in_git``)."""
    return (
        output.sha256 in disk.cached_objects
        or disk.file_hashes.get(output.path) == output.sha256
        or (output.path, output.sha256) in disk.case_twins
        or output.sha256 in disk.in_git
    )


def _first_images_of_more(
    target: Target, lock: Lock, by_key: Mapping[str, str], disk: DiskState, counts: frozenset[int]
) -> tuple[LockEntry, Reason] | None:
    """Another locked target's entry cut to its first ``target.n`` images, when its inputs are this target's
    but for a higher n and those images are in reach; with the reason."""
    from pixmake.fingerprint import target_key

    for n in sorted(c for c in counts if c > target.n):
        twin = by_key.get(target_key(dataclasses.replace(target, n=n), disk.file_hashes))
        if twin is None or twin == target.name:
            continue
        first = _first_images(lock.entries[twin], target.n, disk)
        if first is not None:
            images = "its first image" if target.n == 1 else f"its first {target.n} images"
            text = f"same inputs as locked target {twin!r} but n {n}: {images}"
            return first, Reason("same-inputs", text, {"from": twin})
    return None


def _first_images_of_earlier(
    target: Target,
    disk: DiskState,
    earlier: Callable[[str], LockEntry | None],
    earlier_counts: EarlierCounts | None,
    *,
    own: LockEntry | None = None,
) -> tuple[LockEntry, Reason] | None:
    """A remembered entry cut to its first ``target.n`` images, when its inputs are this target's but for a
    higher n (``n`` lowered after a short result, say) and it holds the provider's images; with the reason.
    Not the target's ``own`` lock entry, remembered when it was made: the plan says "n lowered" of that one."""
    from pixmake.fingerprint import target_key

    for n in sorted(c for c in (earlier_counts(target) if earlier_counts else ()) if c > target.n):
        entry = earlier(target_key(dataclasses.replace(target, n=n), disk.file_hashes))
        if entry is not None and own is not None and entry.key == own.key:
            continue
        if entry is None or entry.emulator:
            continue
        # earlier() returns only entries whose images are all cached or in place: the plan's scan looked for
        # the lock's images alone (disk.cached_objects), so _first_images would miss those the cache holds.
        first = dataclasses.replace(entry, n=target.n, outputs=entry.outputs[: target.n])
        images = "its first image" if target.n == 1 else f"its first {target.n} images"
        text = f"same inputs as an earlier build but n {n}: {images}, in .pixmake/objects"
        return first, Reason("built-before", text)
    return None


def _first_images(entry: LockEntry, n: int, disk: DiskState) -> LockEntry | None:
    """``entry`` cut to its first ``n`` images, when they are all in reach."""
    kept = entry.outputs[:n]
    return dataclasses.replace(entry, n=n, outputs=kept) if all(_in_reach(o, disk) for o in kept) else None


def _target_action(
    target: Target,
    key: str,
    wanted: tuple[str, ...],
    lock: Lock,
    by_key: Mapping[str, str],
    disk: DiskState,
    *,
    replace: frozenset[str],
    restore: bool,
    earlier: Callable[[str], LockEntry | None],
    counts: frozenset[int] = frozenset(),
    earlier_counts: EarlierCounts | None = None,
    pixels: Callable[[str], str | None] | None = None,
) -> Action:
    entry = lock.entries.get(target.name)
    if target.name in replace:
        return Action(ActionKind.REGENERATE, target.name, (Reason("replace", "replacement requested"),), target, key)
    if entry is None or entry.key != key:
        before = _built_before(target, key, lock, by_key, disk, earlier, counts, earlier_counts)
        if before is not None:
            return Action(ActionKind.RESTORE, target.name, (before[1],), target, key, before[0])
    if entry is None:
        raised = _more_of_an_earlier(target, disk, earlier, earlier_counts)  # a short result of its first build
        if raised is not None:
            return _keeping(ActionKind.CREATE, target, key, wanted, raised, disk, restore=restore, current=None)
        return Action(ActionKind.CREATE, target.name, _NEW, target, key)
    if entry.key != key and (resaved := _resaved(target, key, entry, disk, pixels)) is not None:
        action = _output_action(target, key, wanted, resaved[0], disk, restore=restore)
        if action.kind not in (ActionKind.UNCHANGED, ActionKind.RESTORE):
            return action  # an output edited by hand stays EDITED (its entry keeps the old inputs meanwhile)
        # A RESTORE even with every file in place: the lock entry is rewritten with the files' new hashes.
        return dataclasses.replace(action, kind=ActionKind.RESTORE, reasons=(resaved[1], *action.reasons))
    if entry.key != key:
        fewer = _fewer_of_the_same(target, entry, disk)
        if fewer is not None:
            # Planned as that entry: an output edited by hand (or a file already at a new path) stays EDITED.
            action = _output_action(target, key, wanted, fewer, disk, restore=restore)
            if action.kind not in (ActionKind.UNCHANGED, ActionKind.RESTORE):
                return action
            first = "its first locked image is" if target.n == 1 else f"its first {target.n} locked images are"
            reason = Reason("n-lowered", f"n {entry.n} → {target.n}: {first} kept", {"old": entry.n, "new": target.n})
            # A RESTORE even with every file in place: the lock entry is rewritten under the new key.
            return dataclasses.replace(action, kind=ActionKind.RESTORE, reasons=(reason, *action.reasons))
        # n raised; or lowered, then raised past; or a short result remembered: whichever keeps most
        candidates = (
            _more_of_the_same(target, entry, disk),
            _more_of_an_earlier(target, disk, earlier, earlier_counts),
        )
        raised = max((r for r in candidates if r is not None), key=lambda r: r[0].n, default=None)
        if raised is not None:
            return _keeping(ActionKind.REGENERATE, target, key, wanted, raised, disk, restore=restore, current=entry)
        return Action(ActionKind.REGENERATE, target.name, _change_reasons(target, entry, disk.file_hashes), target, key)
    return _output_action(target, key, wanted, entry, disk, restore=restore)


def _fewer_of_the_same(target: Target, entry: LockEntry, disk: DiskState) -> LockEntry | None:
    """``entry`` cut to its first ``target.n`` images, when the target differs from it only in asking for fewer
    (``n`` lowered) and those images can be put in place: what a build would otherwise pay for again."""
    from pixmake.fingerprint import target_key

    if not 0 < target.n < entry.n or target_key(dataclasses.replace(target, n=entry.n), disk.file_hashes) != entry.key:
        return None
    return _first_images(entry, target.n, disk)


@dataclass(frozen=True, slots=True)
class Resaved:
    """The inputs of a target that may be its lock entry's saved again (see :func:`resaved_inputs`)."""

    then: Mapping[str, str]  # path → the sha256 the entry records for it
    pixels: Mapping[str, str]  # path → the digest of what it showed then
    inputs: tuple[LockedInput, ...]  # the entry's inputs with today's paths and hashes, references then mask


def resaved_inputs(target: Target, entry: LockEntry, hashes: Mapping[str, str]) -> Resaved | None:
    """Which of the target's input files hold other bytes than ``entry`` records for them, each with a digest
    of what it showed then; None when one of them has no digest there (or one file stands for two contents).
    PURE: nothing is decoded; whether they show those pixels now, and whether nothing else changed, is the
    caller's to ask."""
    from pixmake.manifest import is_url

    if len(target.references) != len(entry.references) or (target.mask is None) != (entry.mask is None):
        return None
    pairs = list(zip(target.references, entry.references, strict=True))
    if target.mask is not None and entry.mask is not None:
        pairs.append((target.mask, entry.mask))
    then: dict[str, str] = {}
    shown: dict[str, str] = {}
    inputs: list[LockedInput] = []
    for path, locked in pairs:
        now = None if is_url(path) else hashes.get(path)
        if now is None or now == locked.sha256:
            inputs.append(locked if now is None or locked.path == path else dataclasses.replace(locked, path=path))
            continue
        if locked.pixels is None or then.get(path, locked.sha256) != locked.sha256:
            return None
        then[path], shown[path] = locked.sha256, locked.pixels
        inputs.append(dataclasses.replace(locked, path=path, sha256=now))
    return Resaved(then, shown, tuple(inputs))


def _resaved(
    target: Target, key: str, entry: LockEntry, disk: DiskState, pixels: Callable[[str], str | None] | None
) -> tuple[LockEntry, Reason] | None:
    """``entry`` under ``key``, with the inputs the target has now, when the target differs from it only in
    the bytes of references or a mask that show the same pixels as those it was built from (``pixels``: the
    digest of a project file as it is now; the lock records the digests it knows): a re-save, in an editor
    or an optimiser, that would otherwise pay for every target naming the file. With the reason."""
    from pixmake.fingerprint import target_key

    found = None if pixels is None else resaved_inputs(target, entry, disk.file_hashes)
    # Nothing else changed (the key says so), and only then each file is decoded: the costly part, last.
    if pixels is None or found is None or not found.then:
        return None
    if target_key(target, {**disk.file_hashes, **found.then}) != entry.key:
        return None
    if any(pixels(path) != shown for path, shown in found.pixels.items()):
        return None
    then = found.then
    paths = [p for p in dict.fromkeys(target.inputs) if p in then]  # as the manifest names them
    files = [f"{'reference' if p in target.references else 'mask'} {p}" for p in paths]
    text = f"{' and '.join(files)} saved again with the same pixels: nothing to generate"
    details = {"paths": paths, "old": [then[p] for p in paths], "new": [disk.file_hashes[p] for p in paths]}
    references = found.inputs[: len(target.references)]
    mask = found.inputs[-1] if target.mask is not None else None
    return dataclasses.replace(entry, key=key, references=references, mask=mask), Reason("same-pixels", text, details)


def _more_of_the_same(target: Target, entry: LockEntry, disk: DiskState) -> tuple[LockEntry, bool] | None:
    """``entry``, when the target differs from it only in asking for more images (``n`` raised), its images
    are the provider's and in reach, and the model takes the difference as an ``n`` of its own: a build
    keeps them and pays for the rest alone. Not for placeholders (a provider's images would join them)."""
    from pixmake.fingerprint import target_key
    from pixmake.models import MODELS

    spec = MODELS.get(target.model)
    if (
        spec is None
        or target.n - entry.n not in spec.n_allowed
        or entry.emulator
        or len(entry.outputs) != entry.n
        or target_key(dataclasses.replace(target, n=entry.n), disk.file_hashes) != entry.key
    ):
        return None
    return (entry, True) if all(_in_reach(o, disk) for o in entry.outputs) else None


def _more_of_an_earlier(
    target: Target, disk: DiskState, earlier: Callable[[str], LockEntry | None], earlier_counts: EarlierCounts | None
) -> tuple[LockEntry, bool] | None:
    """An entry an earlier build replaced or kept (``earlier``) made from the target's inputs but a lower ``n``
    whose images are the provider's and in reach, the model taking the difference as an ``n``: a build keeps
    them and pays for the rest alone (``n`` lowered and raised past it, placeholders over the provider's
    images, the images of a short result)."""
    from pixmake.fingerprint import target_key
    from pixmake.models import MODELS

    spec = MODELS.get(target.model)
    remembered = earlier_counts(target) if earlier_counts is not None else None  # None: try each lower n
    for more in sorted(spec.n_allowed if spec is not None else ()):  # the fewest new images first
        if more >= target.n:
            break
        if remembered is not None and target.n - more not in remembered:  # spares a key (8 µs) for nothing
            continue
        entry = earlier(target_key(dataclasses.replace(target, n=target.n - more), disk.file_hashes))
        if entry is not None and not entry.emulator and len(entry.outputs) == entry.n == target.n - more:
            return entry, False
    return None


def _keeping(
    kind: ActionKind,
    target: Target,
    key: str,
    wanted: tuple[str, ...],
    raised: tuple[LockEntry, bool],
    disk: DiskState,
    *,
    restore: bool,
    current: LockEntry | None,
) -> Action:
    """The paid action of a target that keeps the images of ``raised`` (an entry with a lower ``n``, and
    whether it is the target's locked one) as its first outputs and pays for the rest.

    A kept output edited by hand stays as it is (as when ``n`` is lowered), unless ``restore``: a file that
    differs from what the target's ``current`` lock entry has at that path (an output, or a stale one), and
    is no image pixmake made. Any other file there is no output of this target's (another target's, one a
    lock checked out since does not know): the build keeps its bytes in the object cache and writes over
    it, as a create does (:func:`_replaced_files`)."""
    entry, locked = raised
    # The target's own images by path: its outputs, and those it wrote before its out or n changed.
    now = {o.path: o.sha256 for o in (*current.stale, *current.outputs)} if current is not None else {}
    more = target.n - entry.n
    details = {"old": entry.n, "new": target.n}
    if locked:
        images = "its locked image" if entry.n == 1 else f"its {entry.n} locked images"
        reasons = [Reason("n-raised", f"n {entry.n} → {target.n}: keeps {images}, generates {more} more", details)]
    else:  # what changed since the lock (a prompt, n), then what is kept
        changed = _change_reasons(target, current, disk.file_hashes) if current and current.key != key else ()
        images = "the image" if entry.n == 1 else f"the {entry.n} images"
        text = f"keeps {images} an earlier build got for these inputs (in .pixmake/objects), generates {more} more"
        reasons = [*changed, Reason("keeps-earlier", text, details)]
    edited: list[str] = []
    for path, output in zip(wanted, entry.outputs, strict=False):
        actual = disk.file_hashes.get(path)
        if restore or actual is None or actual == output.sha256 or path in disk.damaged or path in disk.lfs_pointers:
            continue
        if path not in now or now[path] == actual or actual in disk.made_by_pixmake:
            continue  # not the target's output, or an image pixmake made: cached, then replaced
        edited.append(path)
        accept = invocation.pixmake("accept", target.name)
        text = f"output {path} differs from the lock (edited by hand?); kept as is; {accept} keeps it"
        reasons.append(Reason("output-edited", text, {"path": path, "locked": output.sha256, "actual": actual}))
    return Action(kind, target.name, tuple(reasons), target, key, entry, kept=tuple(edited))


def _replaced_files(
    wanted: tuple[str, ...], entry: LockEntry | None, disk: DiskState, writes: LockEntry | None = None
) -> list[Reason]:
    """A paid action overwrites whatever is at its output paths: say so for files that are not its locked bytes
    (nor damaged: a crash's leftovers are not worth keeping), nor the bytes a restore of ``writes`` puts there.

    The build keeps the bytes of exactly these in the object cache first (``api._keep_replaced_files``); a RESUME
    writes too, and so does a RESTORE of another entry's images.
    """
    locked = {o.path: o.sha256 for o in entry.outputs} if entry is not None else {}
    written: list[str | None] = [o.sha256 for o in writes.outputs] if writes is not None else []
    written += [None] * (len(wanted) - len(written))  # a paid action keeping locked images writes new ones after
    reasons = []
    for path, coming in zip(wanted, written, strict=False):
        actual = disk.file_hashes.get(path)
        if actual is None or actual == coming or path in disk.damaged:
            continue
        kept = f"kept as .pixmake/objects/{actual[:2]}/{actual}"
        if actual != locked.get(path):
            reasons.append(
                Reason("replaces-file", f"will replace existing file {path} ({kept})", {"path": path, "sha256": actual})
            )
        elif entry is not None and entry.accepted_image(actual):  # a retouch the artist asked to keep: never
            # replaced unsaid among hundreds of lines
            text = f"will replace {path}, which pixmake accept recorded (a retouch?); {kept}"
            reasons.append(Reason("replaces-file", text, {"path": path, "sha256": actual, "accepted": True}))
    return reasons


def _stale(
    wanted: tuple[str, ...], entry: LockEntry, disk: DiskState, claimed: Callable[[], frozenset[str]]
) -> tuple[LockedOutput, ...]:
    """Locked outputs the target writes no longer (``wanted``: what it writes now) whose files are still there."""
    found: dict[str, LockedOutput] = {}
    for output in (*entry.stale, *entry.outputs):
        if output.path not in wanted and output.path in disk.file_hashes:
            found.setdefault(output.path, output)
    if found:
        taken = claimed()  # a path another target writes (or any target reads) now is not stale
        return tuple(o for path, o in found.items() if path not in taken)
    return ()


def _from_another(action: Action) -> bool:
    """Whether a RESTORE writes the images of another entry (a twin, an earlier build), not the target's own."""
    return action.kind is ActionKind.RESTORE and bool(action.reasons) and action.reasons[0].code in _BUILT_BEFORE


def _with_side_effects(
    action: Action, wanted: tuple[str, ...], lock: Lock, disk: DiskState, claimed: Callable[[], frozenset[str]]
) -> Action:
    """Add what a build would do besides the action itself (``wanted``: the target's output paths).

    A paid action replaces files that are not its locked bytes; outputs it writes no longer are stale.
    """
    entry = lock.entries.get(action.name)
    if action.kind.generates or _from_another(action):  # a paid action's source: images it keeps (n raised)
        extra = [
            r
            for r in _replaced_files(wanted, entry, disk, writes=action.source)
            if r.details is None or r.details["path"] not in action.kept  # edited by hand, left as it is
        ]
    else:
        extra = []
    stale = _stale(wanted, entry, disk, claimed) if entry is not None else ()
    if stale:
        paths = [o.path for o in stale]
        many = len(paths) > 1
        text = (
            f"output{'s' * many} {', '.join(paths)} left over from an earlier out or n; "
            f"build --prune deletes {'them' if many else 'it'}"
        )
        extra.append(Reason("output-stale", text, {"paths": paths}))
    if not extra:
        return action
    return dataclasses.replace(action, reasons=(*action.reasons, *extra), stale=stale)


def _edited_placeholder(reason: Reason, name: str) -> Reason:
    """An edited output's hint, for a target whose locked images are placeholders: putting them back
    without ``--emulator`` means generating them, and paying."""
    if reason.code != "edited-hint":
        return reason
    cached = reason.details and reason.details.get("cached")
    placeholders = (
        f"{invocation.pixmake('build', '--emulator', name, '--restore')} puts the placeholders back"
        if cached
        else f"{invocation.pixmake('build', '--emulator', name, '--replace', name)} makes new placeholders"
    )
    text = (
        f"kept as is; its locked images are placeholders from build --emulator: {placeholders} (free), "
        f"{invocation.pixmake('build', name, '--replace', name)} generates real ones (paid), "
        f"{invocation.pixmake('accept', name)} records your files as real"
    )
    return Reason(PLACEHOLDER, text, reason.details)


def _for_builder(action: Action, lock: Lock, builder: Builder) -> Action:
    """``action`` for the server that will make the images (see :class:`Builder`).

    A build without ``--emulator`` generates placeholders it would keep or put back (an edited one is
    the user's file, and stays); other plans keep them, with a note. ``build --emulator`` marks a paid
    action that would replace the provider's images for the current inputs (the executor fails it).
    """
    entry = lock.entries.get(action.name)
    provider_made = entry is not None and not entry.emulator and entry.key == action.key
    if builder is Builder.EMULATOR and action.kind.paid and provider_made:
        return dataclasses.replace(action, reasons=(*action.reasons, _PROVIDER_IMAGES))
    if builder is Builder.EMULATOR and action.kind.paid and action.source is not None:
        # Placeholders are not added to the provider's images: a whole set of them is made
        why = tuple(r for r in action.reasons if r.code not in ("n-raised", "keeps-earlier", "output-edited"))
        if any(r.code == "n-raised" for r in action.reasons):  # the locked entry's images: only n changed
            old, new = action.source.n, action.images + action.source.n
            why = (Reason("n-changed", f"n {old} → {new}", {"old": old, "new": new}), *why)
        return dataclasses.replace(action, reasons=why or _NEW, source=None, kept=())
    source = action.source
    if source is None or not source.emulator:
        return action
    if action.kind is ActionKind.EDITED:
        return dataclasses.replace(action, reasons=tuple(_edited_placeholder(r, action.name) for r in action.reasons))
    if action.kind not in (ActionKind.UNCHANGED, ActionKind.RESTORE):
        return action
    if builder is not Builder.PROVIDER:
        return dataclasses.replace(action, reasons=(*action.reasons, _PLACEHOLDERS_KEPT))
    kind = ActionKind.REGENERATE if entry is not None else ActionKind.CREATE  # CREATE: a renamed twin's
    return Action(kind, action.name, (_PLACEHOLDERS,), action.target, action.key)


def _first_of_each_key(actions: Sequence[Action], replaced: frozenset[str], builder: Builder) -> dict[str, str]:
    """The target whose images the others with the same inputs copy, by key: one collecting a paid task
    (RESUME), else one named by ``--replace``, else the one paying least (it keeps locked images), the first
    in manifest order.
    Never, for ``build --emulator``, one it refuses: a provider's task, or the provider's images replaced."""

    def rank(action: Action) -> tuple[int, int]:  # then the one paying least: it keeps locked images (n raised)
        return (0 if action.kind is ActionKind.RESUME else 1 if action.name in replaced else 2), action.images

    def refused(action: Action) -> bool:
        return action.kind is ActionKind.RESUME or any(r.code == PROVIDER_MADE for r in action.reasons)

    firsts: dict[str, str] = {}
    candidates = [
        a
        for a in actions
        if a.key is not None
        and (a.kind.paid or a.kind is ActionKind.RESUME)
        and not (builder is Builder.EMULATOR and refused(a))
    ]
    for action in sorted(candidates, key=rank):  # stable: in manifest order within a rank
        assert action.key is not None
        firsts.setdefault(action.key, action.name)
    return firsts


def _resume_reason(pending: PendingSubmit, now: float | None, n: int, names: Callable[[], frozenset[str]]) -> Reason:
    """Why a RESUME collects ``pending`` for a target of ``n`` images; ``names``: the manifest's targets."""
    from pixmake.models import RESULT_LIFETIME

    details: dict[str, Any] = {"task_id": pending.task_id, "client_business_id": pending.client_business_id}
    if pending.task_id is not None:
        text = f"collecting paid task {pending.task_id} from an interrupted build"
    else:
        text = (
            f"looking up submit {pending.client_business_id} of an interrupted build: collected if the provider "
            "has it, paid for again only if it never arrived"
        )
    if pending.was is not None:
        since = "whose inputs these were" if pending.was in names() else "renamed since: same inputs"
        text += f" (for target {pending.was!r}, {since})"
        details["was"] = pending.was
    if pending.images is not None:  # n lowered since it was paid for
        first = "its first image" if n == 1 else f"its first {n} images"
        text += f" (n {pending.images} → {n} since: keeps {first}, caches the rest)"
        details["images"] = pending.images
    age = None if now is None or pending.sent_at is None else now - pending.sent_at
    if age is not None and age > RESULT_LIFETIME:  # its result may be gone, and paid for again
        days = age / RESULT_LIFETIME
        text += (
            f"; sent {days:.0f} day{'s' * (round(days) != 1)} ago, and result links last 24 hours: should its images "
            "be gone, they are paid for again (--max-images 0 stops that)"
        )
        details["age"] = round(age)
    return Reason("resume", text, details)


_DROPPED_WHY: Final = {"task-dropped": "inputs changed", "emulator-task-dropped": "emulator stopped"}


def _dropped_why(reason: Reason) -> str:
    """A dropped task's cause, in a word for the summary."""
    if reason.details is not None and reason.details.get("removed"):
        return "target removed"
    if reason.details is not None and reason.details.get("built"):
        return "built already"
    return _DROPPED_WHY[reason.code]


def common_reasons(actions: Iterable[Action], limit: int = 3) -> list[tuple[str, int]]:
    """The reasons most actions share, as (text, how many actions), most shared first: those of at least two
    actions, ``limit`` at most (one changed reference behind 10,000 regenerations)."""
    counts = Counter(text for action in actions for text in dict.fromkeys(r.text for r in action.reasons))
    return [(text, n) for text, n in counts.most_common(limit) if n > 1]


def _locked_since(task: PendingSubmit, action: Action, lock: Lock) -> bool:
    """Whether the target's own lock entry holds images of the action's inputs (it is unchanged, or its
    outputs are put back from that entry, or kept edited), and is not the entry the task was sent over: a
    killed ``build --replace`` left that one, and its task is what the user asked for."""
    from pixmake.journal import ANY

    entry = lock.entries.get(action.name)
    if entry is None or task.over == ANY or task.over == entry.key:  # ANY: an earlier pixmake's journal
        return False
    if entry.emulator and not task.emulator:  # placeholders since: they hold nothing the paid task made
        return False
    if action.kind in (ActionKind.UNCHANGED, ActionKind.EDITED):
        return True
    return action.kind is ActionKind.RESTORE and action.source is entry


def _abandoned(pending: PendingSubmit, why: str = "", *, removed: bool = False, built: bool = False) -> AbandonedTask:
    """The task to drop, and ``why`` (what changed; not needed for the emulator's tasks, which no build can collect)."""
    task = pending.task_id or pending.client_business_id
    if pending.emulator:
        text = f"task {task} of an interrupted build --emulator is dropped: the emulator that ran it stopped with it"
        return AbandonedTask(pending.target, pending.key, Reason("emulator-task-dropped", text, {"task": task}))
    text = f"paid task {task} from an interrupted build is dropped, not collected: {why}"
    details: dict[str, Any] = {"task": task}
    if removed:
        details["removed"] = True
    if built:
        details["built"] = True
    return AbandonedTask(pending.target, pending.key, Reason("task-dropped", text, details))


def make_plan(
    targets: Iterable[Target],
    lock: Lock,
    disk: DiskState,
    *,
    replace: Iterable[str] = (),
    restore: bool = False,
    orphans: bool = True,
    pending: Mapping[str, PendingSubmit] | None = None,
    displaced: Iterable[PendingSubmit] = (),
    builder: Builder = Builder.EITHER,
    earlier: Callable[[str], LockEntry | None] = lambda key: None,
    earlier_counts: EarlierCounts | None = None,
    unselected: Iterable[Target] = (),
    now: float | None = None,
    unwritten: Iterable[str] = (),
    pixels: Callable[[str], str | None] | None = None,
) -> Plan:
    """One action per target (in the given order), then one ORPHAN per lock entry no target claims.

    ``replace`` names targets to regenerate on purpose; ``restore`` turns an edited output whose
    locked bytes are cached into a RESTORE (``build --restore``); ``orphans=False`` leaves lock
    entries without a target out of the plan (a selection of targets is not the whole manifest).
    A paid action names the files it would replace; any action names its stale outputs.

    ``unwritten``: targets whose finished entries only the journal holds (:attr:`Plan.unwritten`).
    ``pending`` holds the journal's submits of interrupted builds, by target (``now``, the wall clock, tells
    which were sent too long ago to be sure of their images). A target whose pending
    task was paid for exactly its current inputs gets a RESUME (collected, never submitted again),
    whatever it would get otherwise (even UNCHANGED: a killed ``build --replace``); a pending task for
    other inputs (the prompt changed since), or of a target no longer in the manifest (only when
    ``orphans``), is listed in ``Plan.abandoned``: a build drops it from the journal. So is any task
    of an interrupted ``build --emulator``: its emulator ran in that build's process. ``displaced`` holds
    tasks paid for earlier inputs of their targets that made room for another's task, moved to them (see
    ``pixmake.api``): listed there too.

    ``builder`` says which server the plan is for: the provider generates the bundled emulator's
    placeholders instead of keeping them, and the emulator never replaces the provider's images (see
    :func:`_for_builder`).

    A target whose inputs are not locked for it, but were built before (another target of the lock
    has exactly these inputs, or ``earlier(key)``, an entry an earlier build replaced, has them) is
    restored from those images when every one is in the object cache or in place (``earlier`` returns
    only such entries): a renamed target, two targets that swapped names, a prompt edited back.
    Of targets with the same inputs that the plan would pay for, only the first is paid: the others
    are RESTOREs ``after`` it. ``--replace`` asks for new images.

    A target whose ``n`` grew keeps the images of its locked entry, or of a remembered one with a lower
    ``n`` (a short result, ``n`` lowered then raised past it), and pays for the rest; one whose ``n``
    shrank takes the first images of a remembered entry with a higher ``n``. ``earlier_counts`` names the
    values of ``n`` remembered for a target's model, size and prompt, so that only those keys are computed
    (None: each lower ``n`` the model takes is tried).

    ``unselected`` holds the manifest's targets outside a selection: one of them whose paid task of an
    interrupted build has the inputs of a target the plan would pay for is collected (a RESUME) for
    that target to copy, rather than paying for the same images twice.

    ``pixels`` gives the digest of what a project file shows now (:func:`pixmake.decode.pixel_digest`): a
    target whose references or mask were saved again with the pixels its lock entry records is a RESTORE
    that rewrites the entry, not a regeneration. It is asked only of such a changed file.
    """
    from pixmake.fingerprint import target_key
    from pixmake.manifest import claimed_paths, output_paths

    targets = tuple(targets)
    replaced = frozenset(replace)
    pending = pending or {}
    by_key: dict[str, str] = {}  # a locked target of each key: the last by name, the provider's over the emulator's
    for name, entry in sorted(lock.entries.items()):
        twin = by_key.get(entry.key)
        if twin is None or not entry.emulator or lock.entries[twin].emulator:
            by_key[entry.key] = name

    @cache
    def claimed() -> frozenset[str]:
        """Paths a current target writes or reads: never stale, whatever an old lock entry says."""
        return claimed_paths(targets)

    @cache
    def target_names() -> frozenset[str]:
        return frozenset(t.name for t in targets)

    actions: list[Action] = []
    abandoned: list[AbandonedTask] = []
    hashes = disk.file_hashes
    counts = frozenset(entry.n for entry in lock.entries.values())  # a target may take the first images of a higher n

    def from_provider(target: Target, action: Action, wanted: tuple[str, ...]) -> Action:
        """What a build without ``--emulator`` does to a target whose locked images are placeholders: it
        puts back the provider's images for these inputs, keeps those of a lower ``n``, or pays for all."""
        before = _built_before(target, action.key or "", lock, by_key, disk, earlier, counts, earlier_counts)
        if before is not None and not before[0].emulator:  # the provider's images for these inputs
            return Action(ActionKind.RESTORE, target.name, (before[1],), target, action.key, before[0])
        if (raised := _more_of_an_earlier(target, disk, earlier, earlier_counts)) is not None:  # for a lower n
            now = lock.entries.get(target.name)
            keeping = _keeping(
                action.kind, target, action.key or "", wanted, raised, disk, restore=restore, current=now
            )
            return dataclasses.replace(keeping, reasons=(_PLACEHOLDERS, *keeping.reasons))
        return action

    def act(target: Target) -> Action:
        wanted = output_paths(target)

        planned = _target_action(
            target,
            target_key(target, hashes),
            wanted,
            lock,
            by_key,
            disk,
            replace=replaced,
            restore=restore,
            earlier=earlier,
            counts=counts,
            earlier_counts=earlier_counts,
            pixels=pixels,
        )
        action = _for_builder(planned, lock, builder)
        if builder is Builder.PROVIDER and action.kind.paid and action.reasons[:1] == (_PLACEHOLDERS,):
            action = from_provider(target, action, wanted)
        elif builder is Builder.EITHER and _PLACEHOLDERS_KEPT in action.reasons:  # say what the provider would pay
            paid = from_provider(target, _for_builder(planned, lock, Builder.PROVIDER), wanted).images
            if paid != target.n:
                kept = _placeholders_kept(target.n - paid, paid)
                action = dataclasses.replace(
                    action, reasons=tuple(kept if r == _PLACEHOLDERS_KEPT else r for r in action.reasons)
                )
        action = _with_side_effects(action, wanted, lock, disk, claimed)
        task = pending.get(target.name)
        if task is not None and task.emulator:  # the bundled emulator's tasks died with its build
            abandoned.append(_abandoned(task))
        elif task is not None and task.key == action.key and _locked_since(task, action, lock):
            # Another build locked these inputs since this task was journaled (a CI cache older than the
            # lock): collecting it would replace the committed images with others of the same inputs.
            built = "its inputs are built and locked already (a .pixmake/ older than pixmake.lock?)"
            abandoned.append(_abandoned(task, built, built=True))
        elif task is not None and (task.key == action.key or (task.images is not None and action.kind.paid)):
            # (A task of a higher n, lowered since, replaces only what would be paid for: not images at hand.)
            why = (_resume_reason(task, now, target.n, target_names),)
            resume = Action(ActionKind.RESUME, target.name, why, target, action.key, fallback=action)
            action = _with_side_effects(resume, wanted, lock, disk, claimed)
        elif task is not None and task.images is not None:  # its images at hand: the task waits, journaled
            text = (
                f"a paid task of an interrupted build for n {task.images} stays journaled: raising n to "
                f"{task.images} collects it (free while its result links last, 24 hours)"
            )
            action = dataclasses.replace(
                action, reasons=(*action.reasons, Reason("task-kept", text, {"n": task.images}))
            )
        elif task is not None:
            abandoned.append(_abandoned(task, "it was paid for earlier inputs of this target"))
        return action

    actions.extend(act(target) for target in targets)
    paying = {a.key: a.name for a in actions if a.kind.paid and a.name not in replaced}
    for target in unselected:
        task = pending.get(target.name)
        if task is None or task.emulator or builder is Builder.EMULATOR or task.key not in paying:
            continue
        try:
            key = target_key(target, hashes)
        except KeyError:  # an input of it is missing (not selected, so not required)
            continue
        if key == task.key:  # paid for the inputs it has now: a RESUME
            action = act(target)
            text = f"not selected, but target {paying[task.key]!r} has its inputs and copies its images"
            actions.append(dataclasses.replace(action, reasons=(*action.reasons, Reason("resume-for-twin", text))))
    firsts = _first_of_each_key(actions, replaced, builder)
    resumed = {a.name for a in actions if a.kind is ActionKind.RESUME}
    for i, action in enumerate(actions):  # one image set for one set of inputs, as when a twin is added later
        first = firsts.get(action.key or "", action.name)
        if action.kind.paid and action.name not in replaced and first != action.name:
            made = action.target
            assert made is not None
            does = "paid task this build collects" if first in resumed else "images this build generates"
            text = f"same inputs as target {first!r}, whose {does}"
            why = (Reason("same-inputs-in-build", text, {"from": first}),)
            copy = Action(ActionKind.RESTORE, action.name, why, made, action.key, after=first)
            actions[i] = _with_side_effects(copy, output_paths(made), lock, disk, claimed)
    # A target paid for whose inputs another this build pays for (or collects) has with a higher n takes that
    # one's first images (a thumbnail beside its variants): the lower n is not paid for as well.
    higher = {a.key: a for a in actions if a.key and a.after is None and (a.kind.paid or a.kind is ActionKind.RESUME)}
    most: dict[str, int] = {}  # the highest n of each prompt among them: most targets have none higher (no key)
    for made in (a.target for a in higher.values()):
        if made is not None:
            most[made.prompt] = max(most.get(made.prompt, 0), made.n)
    counts_here = sorted({a.target.n for a in higher.values() if a.target is not None}, reverse=True)
    for i, action in enumerate(actions):
        made = action.target
        if not action.kind.paid or action.name in replaced or made is None or most.get(made.prompt, 0) <= made.n:
            continue
        for n in (c for c in counts_here if c > made.n):  # the highest first: it is never a copy itself
            source = higher.get(target_key(dataclasses.replace(made, n=n), hashes))
            if source is None or (builder is Builder.EMULATOR and source.kind is ActionKind.RESUME):
                continue
            images = "its first image" if made.n == 1 else f"its first {made.n} images"
            text = f"same inputs as target {source.name!r} but n {n}, whose images this build gets: {images}"
            why = (Reason("same-inputs-in-build", text, {"from": source.name, "n": n}),)
            for j, copying in enumerate(actions):  # it, and its twins (same inputs and n), which copied it
                if j == i or copying.after == action.name:
                    assert copying.target is not None
                    copy = Action(ActionKind.RESTORE, copying.name, why, copying.target, copying.key, after=source.name)
                    actions[j] = _with_side_effects(copy, output_paths(copying.target), lock, disk, claimed)
            break
    if orphans:
        names = {t.name for t in targets}
        for name in sorted(set(lock.entries) - names):
            entry = lock.entries[name]
            taken = claimed()  # build --prune keeps what a current target writes or reads
            paths = [o.path for o in entry.outputs if o.path not in taken]
            kept = [o.path for o in entry.outputs if o.path in taken]
            text = "no longer in the manifest; build --prune " + (
                f"deletes {', '.join(paths)}" if paths else "drops it from the lock"
            )
            if kept:
                text += f" and keeps {', '.join(kept)} (a current target's)"
            reason = Reason("orphan", text, {"paths": paths, "kept": kept})
            actions.append(Action(ActionKind.ORPHAN, name, (reason,), source=entry))
        for name in sorted(set(pending) - names):
            abandoned.append(_abandoned(pending[name], "its target is no longer in the manifest", removed=True))
    abandoned.extend(_abandoned(task, "it was paid for earlier inputs of this target") for task in displaced)
    return Plan(tuple(actions), abandoned, unwritten)
