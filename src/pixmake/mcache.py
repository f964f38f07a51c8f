"""A cache of the expanded manifest in ``.pixmake/manifest.cache``, so an unchanged YAML is not parsed again.

Shell. Parsing, validating and expanding a 10,000-target manifest takes seconds; loading its cached
result takes milliseconds. ninja keeps ``.ninja_deps`` for the same reason. The parser is a black box
here (:func:`load_manifest` takes it as a callable); the entry is valid while all of these hold:

* the cache format, the pixmake version (and the size and mtime of each of its modules, for a
  development checkout) and the manifest's display name are the same;
* the manifest file has the same stat (size, mtime_ns, inode, ctime_ns) and is not *racy* (its mtime
  is older than the cache file's, git's rule), or else its bytes still hash to the recorded sha256;
* every catalog file the manifest read (``Manifest.catalogs``) has the same stat and is not racy.

A catalog's stat is taken after the parse, which has no handle on it: a catalog modified less than
:data:`_SETTLE_NS` before the parse began may have changed after it was read, so its stat is recorded
as unknown (None): the cache, and the no-op memo that takes the stat from here, miss until it settles.

The value is stored with :mod:`marshal` (fast to load; the format is private and versioned by the
pixmake version in the key). A cache that cannot be read or written is ignored: it only saves work.
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final

from pixmake import __version__
from pixmake.errors import Diagnostic
from pixmake.manifest import Manifest, ProviderConfig, Target
from pixmake.memo import FileStat, code_identity, file_stat
from pixmake.recordfile import paused_gc, read_record, write_record

__all__ = ["MCACHE_VERSION", "FileStat", "file_stat", "load_manifest"]

MCACHE_VERSION: Final = 2
_SETTLE_NS: Final = 2 * 10**9  # more than the coarsest mtime granularity in use (FAT's 2 s)

# Dataclasses a Manifest is made of. Encoded values: a plain value (str, int, float, bool, None, and
# tuples, lists and dicts of plain values) stays as it is; a dataclass is (_DC, class index, fields...);
# a MappingProxyType of plain values is (_PROXY, dict); a tuple holding any of those is (_SEQ, items...).
# So decoding walks only into dataclasses and such tuples: 10,000 targets decode in tens of ms.
_CLASSES: Final[tuple[type[Any], ...]] = (Manifest, ProviderConfig, Target, Diagnostic)
_DC: Final = b"dataclass"
_PROXY: Final = b"mappingproxy"
_SEQ: Final = b"tuple"
_PLAIN: Final = (str, int, float, bool, type(None))


def _plain(value: Any) -> Any:
    """A plain copy of JSON-like data (dict subclasses become dicts); raises TypeError for anything else."""
    kind = type(value)
    if kind in _PLAIN:
        return value
    if isinstance(value, tuple):
        return tuple(_plain(v) for v in value)
    if isinstance(value, list):  # the YAML loader's MarkedList too
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {_plain(k): _plain(v) for k, v in value.items()}
    for base in (str, int, float):  # a subclass of one (bool itself is exact, above)
        if isinstance(value, base):
            return base(value)
    raise TypeError(f"cannot cache a {kind.__name__}")


def _encode(value: Any) -> Any:
    kind = type(value)
    if kind in _CLASSES:
        return (_DC, _CLASSES.index(kind), *(_encode(getattr(value, f.name)) for f in dataclasses.fields(value)))
    if kind is MappingProxyType:
        return (_PROXY, _plain(value))
    if kind is tuple:
        items = tuple(_encode(v) for v in value)
        special = any(type(v) is tuple and v and type(v[0]) is bytes for v in items)
        return (_SEQ, *items) if special else items
    return _plain(value)


def _decode(value: Any) -> Any:
    if type(value) is tuple and value and type(value[0]) is bytes:
        tag = value[0]
        if tag == _DC:
            return _CLASSES[value[1]](*map(_decode, value[2:]))
        if tag == _PROXY:
            return MappingProxyType(value[1])
        if tag == _SEQ:
            return tuple(map(_decode, value[1:]))
        raise ValueError(f"unknown tag {tag!r}")
    return value


def _shape() -> tuple[Any, ...]:
    """The code's identity and the cached classes' field names: a cache never outlives the code."""
    return (code_identity(), tuple(tuple(f.name for f in dataclasses.fields(cls)) for cls in _CLASSES))


def _format() -> tuple[Any, ...]:
    return (MCACHE_VERSION, __version__, _shape())


def _fresh(stat: FileStat | None, recorded: Any, written_ns: int) -> bool:
    return stat is not None and stat == recorded and stat[1] < written_ns


def _catalogs_fresh(root: Path, record: Mapping[str, Any], written_ns: int) -> bool:
    catalogs = record.get("catalogs", ())
    return all(_fresh(file_stat(root / rel), stat, written_ns) for rel, stat in catalogs)


def load_manifest(
    manifest: Path, cache: Path, *, file: str, parse: Callable[[], Manifest]
) -> tuple[Manifest, tuple[FileStat | None, tuple[tuple[str, FileStat | None], ...]]]:
    """The manifest from the cache when still valid, else ``parse()`` (and the cache is rewritten).

    Returns the manifest and what it was read from: the manifest's stat and each catalog's stat,
    for the no-op memo (:mod:`pixmake.memo`). ``parse`` raises as it would without a cache.
    """
    stat = file_stat(manifest)
    loaded = read_record(cache, _format())
    root = manifest.parent
    if loaded is not None and stat is not None:
        record, written_ns, items = loaded
        if record["file"] == file and _catalogs_fresh(root, record, written_ns):
            same = _fresh(stat, record["stat"], written_ns)
            touched = not same and stat[0] == record["stat"][0] and _sha256(manifest) == record["sha256"]
            if same or touched:
                value = _decoded(record["manifest"], items)
                if value is not None:
                    if touched:  # not changed: re-key on the new stat
                        _write(cache, {**record, "stat": stat}, value)
                    return value, (stat, tuple(record["catalogs"]))
    digest = _sha256(manifest) if stat is not None else ""
    settled_before = time.time_ns() - _SETTLE_NS
    value = parse()
    catalogs = tuple((rel, _settled(file_stat(root / rel), settled_before)) for rel in getattr(value, "catalogs", ()))
    if stat is not None and file_stat(manifest) == stat:  # not edited while we parsed it
        record = {"format": _format(), "file": file, "stat": stat, "sha256": digest, "catalogs": catalogs}
        _write(cache, record, value)
    return value, (stat, catalogs)


def _write(cache: Path, record: dict[str, Any], manifest: Manifest) -> None:
    """Write the cache: ``record`` with the manifest but its targets, then each target, encoded one at a time."""
    try:
        head = _encode(dataclasses.replace(manifest, targets=()))
    except TypeError:
        return
    write_record(cache, {**record, "manifest": head}, (_encode(target) for target in manifest.targets))


def _decoded(head: Any, items: Iterator[Any]) -> Manifest | None:
    """The manifest :func:`_write` wrote as ``head`` and ``items``; None when they are not one."""
    try:
        manifest = _decode(head)
        with paused_gc():  # the items are unmarshalled here, as they are taken: many objects, no cycles
            targets = tuple(map(_decode, items))
    except (TypeError, ValueError, IndexError, EOFError):
        return None
    if not isinstance(manifest, Manifest) or not all(type(t) is Target for t in targets):
        return None
    return dataclasses.replace(manifest, targets=targets)


def _settled(stat: FileStat | None, before_ns: int) -> FileStat | None:
    """``stat`` when its file was last modified before ``before_ns``, else None: it may have changed while read."""
    return stat if stat is not None and stat[1] < before_ns else None


def _sha256(path: Path) -> str:
    try:
        with open(path, "rb") as handle:
            return hashlib.file_digest(handle, "sha256").hexdigest()
    except OSError:
        return ""
