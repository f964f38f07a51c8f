"""``pixmake.lock``: what each target's outputs were built from. Parse and render, nothing else.

PURE. The format is JSON with sorted keys and one block per target, so that adding, changing or
removing a target changes only its own block and most git merges are clean. No field changes unless
its target changed (no timestamps). A lockfile from a newer pixmake, or a corrupt one, raises
:class:`~pixmake.errors.LockfileError`: a silent rebuild would spend money.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Final

from pixmake.errors import LockfileError

__all__ = [
    "LOCK_VERSION",
    "Lock",
    "LockEntry",
    "LockedInput",
    "LockedOutput",
    "entry_from_json",
    "entry_to_json",
    "parse_lock",
    "render_lock",
]

LOCK_VERSION: Final = 1


@dataclass(frozen=True, slots=True)
class LockedInput:
    """A reference or mask as it was when the target was built."""

    path: str
    sha256: str


@dataclass(frozen=True, slots=True)
class LockedOutput:
    """One generated image file."""

    path: str
    sha256: str
    bytes: int
    width: int
    height: int


@dataclass(frozen=True, slots=True)
class LockEntry:
    """One target's block: its key, the inputs that made it, and its outputs."""

    key: str
    model: str
    prompt: str
    size: str
    n: int
    outputs: tuple[LockedOutput, ...]
    references: tuple[LockedInput, ...] = ()
    mask: LockedInput | None = None
    params: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    task_id: str | None = None


@dataclass(frozen=True, slots=True)
class Lock:
    """All locked targets, by name."""

    entries: Mapping[str, LockEntry] = field(default_factory=lambda: MappingProxyType({}))

    def with_entry(self, name: str, entry: LockEntry) -> Lock:
        """A copy with ``name`` set to ``entry``."""
        return Lock(MappingProxyType({**self.entries, name: entry}))

    def without(self, names: set[str] | frozenset[str]) -> Lock:
        """A copy without the given targets."""
        return Lock(MappingProxyType({k: v for k, v in self.entries.items() if k not in names}))


def entry_to_json(entry: LockEntry) -> dict[str, Any]:
    block: dict[str, Any] = {
        "key": entry.key,
        "model": entry.model,
        "prompt": entry.prompt,
        "size": entry.size,
        "n": entry.n,
        "outputs": [
            {"path": o.path, "sha256": o.sha256, "bytes": o.bytes, "width": o.width, "height": o.height}
            for o in entry.outputs
        ],
    }
    if entry.references:
        block["references"] = [{"path": r.path, "sha256": r.sha256} for r in entry.references]
    if entry.mask is not None:
        block["mask"] = {"path": entry.mask.path, "sha256": entry.mask.sha256}
    if entry.params:
        block["params"] = dict(entry.params)
    if entry.task_id is not None:
        block["task_id"] = entry.task_id
    return block


def entry_from_json(block: Mapping[str, Any]) -> LockEntry:
    return LockEntry(
        key=str(block["key"]),
        model=str(block["model"]),
        prompt=str(block["prompt"]),
        size=str(block["size"]),
        n=int(block["n"]),
        outputs=tuple(
            LockedOutput(str(o["path"]), str(o["sha256"]), int(o["bytes"]), int(o["width"]), int(o["height"]))
            for o in block["outputs"]
        ),
        references=tuple(LockedInput(str(r["path"]), str(r["sha256"])) for r in block.get("references", ())),
        mask=LockedInput(str(block["mask"]["path"]), str(block["mask"]["sha256"])) if "mask" in block else None,
        params=MappingProxyType(dict(block.get("params", {}))),
        task_id=block.get("task_id"),
    )


def render_lock(lock: Lock) -> str:
    """Deterministic text of a lock: same lock, same bytes."""
    document = {
        "version": LOCK_VERSION,
        "generator": "pixmake",
        "targets": {name: entry_to_json(lock.entries[name]) for name in sorted(lock.entries)},
    }
    return json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def parse_lock(text: str, *, file: str = "pixmake.lock") -> Lock:
    """Parse lockfile text; raises LockfileError when corrupt or newer than this pixmake."""
    try:
        document = json.loads(text)
    except json.JSONDecodeError as error:
        raise LockfileError(
            f"{file}:{error.lineno}:{error.colno}: lockfile is corrupt ({error.msg}); "
            "restore it from git (git checkout -- pixmake.lock) or delete it to rebuild everything"
        ) from None
    if not isinstance(document, dict) or "version" not in document:
        raise LockfileError(f"{file}: not a pixmake lockfile (no 'version' field)")
    version = document["version"]
    if not isinstance(version, int) or version > LOCK_VERSION:
        raise LockfileError(
            f"{file}: lockfile format version {version!r} is newer than this pixmake understands "
            f"(version {LOCK_VERSION}); upgrade pixmake"
        )
    try:
        entries = {str(name): entry_from_json(block) for name, block in document.get("targets", {}).items()}
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        raise LockfileError(f"{file}: lockfile is corrupt (bad target block: {error!r})") from None
    return Lock(MappingProxyType(entries))
