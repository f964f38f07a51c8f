"""``.pixmake/history.jsonl``: lock entries that builds made or replaced, so that going back to earlier inputs (a
prompt edited back, ``n`` lowered and raised again, a target deleted and restored, a lock change discarded
with ``git checkout``, the same edit on another branch) restores their images from the object cache
instead of paying for new ones: DVC's run cache, Bazel's action cache.

Shell. One compact JSON line per entry (the lockfile's form of an entry), appended before the build or
prune that replaces it (a crash leaves at worst a line for an entry still locked), and by each lock fold
of a build, for the entries it made. Read only when a plan
has a target whose inputs are not locked for it, or that keeps ``build --emulator``'s placeholders (to
say what a build without it pays: the provider's images may be remembered). A line that does not parse
is skipped. Local, like the
object cache it points into: a fresh clone has none. ``pixmake gc`` keeps only the entries whose images
it keeps (:func:`compact`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from pixmake.fingerprint import current_key
from pixmake.lockfile import LockEntry, SharedInputs, entry_from_json, entry_to_json
from pixmake.store import append_lines, atomic_write

__all__ = ["compact", "placeholder_images", "recall", "remember"]


def _line(entry: LockEntry) -> bytes:
    return (json.dumps(entry_to_json(entry), separators=(",", ":"), ensure_ascii=False) + "\n").encode()


def remember(path: Path, entries: Iterable[LockEntry], *, made: bool = False) -> None:
    """Append ``entries`` durably: the lock entries they were are gone once the build writes the lock. Those
    remembered already are left out (a prompt toggled back and forth, or a build retried after a refused
    key, adds nothing new), except with ``made``: entries of images a build just generated, new by nature,
    appended without reading the history (a lock change discarded with git, or another branch's build,
    still finds their images)."""
    lines = dict.fromkeys(map(_line, entries))
    if not lines:
        return
    try:
        known = set() if made else set(path.read_bytes().splitlines(keepends=True))
    except FileNotFoundError:
        known = set()
    data = b"".join(line for line in lines if line not in known)
    if data:
        append_lines(path, data)


def _remembered(path: Path) -> Iterator[LockEntry]:
    """Every remembered entry, oldest first (none without a history)."""
    try:
        lines = path.read_bytes().splitlines()
    except FileNotFoundError:
        return
    shared: SharedInputs = {}
    for line in lines:
        try:
            yield current_key(entry_from_json(json.loads(line), shared))  # an earlier version's: today's key
        except (ValueError, KeyError, TypeError, AttributeError, RecursionError):
            continue  # torn or foreign: it only saves money, never decides anything alone


def recall(path: Path) -> dict[str, LockEntry]:
    """The remembered entries by key (of several with one key, the last, but the provider's images over
    ``build --emulator``'s placeholders); empty without a history."""
    entries: dict[str, LockEntry] = {}
    for entry in _remembered(path):
        earlier = entries.get(entry.key)
        if not entry.emulator or earlier is None or earlier.emulator:
            entries[entry.key] = entry
    return entries


def placeholder_images(path: Path) -> frozenset[str]:
    """The sha256 of every image remembered as ``build --emulator``'s placeholder (whatever replaced it since)."""
    return frozenset(o.sha256 for entry in _remembered(path) if entry.emulator for o in entry.outputs)


def compact(path: Path, keep: Callable[[LockEntry], bool]) -> None:
    """Rewrite the history with one entry per key, only those ``keep`` accepts (whose images are still cached)."""
    entries = [entry for entry in recall(path).values() if keep(entry)]
    if entries or path.exists():
        atomic_write(path, b"".join(map(_line, entries)))
