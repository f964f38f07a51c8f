"""Record files in ``.pixmake/``: one marshal'd dict tagged with its format, and optionally a run of
items after it, read and written fail-safe.

Shell. The manifest cache (:mod:`pixmake.mcache`) and the lock cache (:mod:`pixmake.lcache`) keep
their records this way. A record that cannot be read, or carries another format tag, reads as
None (the caller recomputes); a record that cannot be written is skipped: a cache only saves time.

Each value is marshal'd on its own, behind its length: a writer passes the items as it makes them and a
reader takes them one at a time, so neither holds all of them encoded at once (a 10,000-target manifest
would otherwise be in memory three times over while its cache is written).

Every cache file in ``.pixmake/`` ends in a CRC-32 of what precedes it (:func:`sealed`), as git's index
ends in a checksum: a flipped bit would otherwise be read as a wrong hash or stat, and give a wrong plan.
"""

from __future__ import annotations

import gc
import itertools
import marshal
import os
import struct
import zlib
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

__all__ = ["paused_gc", "read_record", "sealed", "unsealed", "write_record"]

_CRC = struct.Struct("<I")
_LENGTH = struct.Struct("<I")  # before each marshal'd value


def sealed(data: bytes) -> bytes:
    """``data`` followed by its CRC-32 (read back with :func:`unsealed`)."""
    return data + _CRC.pack(zlib.crc32(data))


def unsealed(data: bytes) -> memoryview:
    """What :func:`sealed` sealed (a view of ``data``, not a copy); ValueError when the file was cut short or a bit
    changed."""
    view = memoryview(data)
    body, trailer = view[: -_CRC.size], view[-_CRC.size :]
    if len(data) < _CRC.size or _CRC.pack(zlib.crc32(body)) != trailer:
        raise ValueError("cache file damaged")
    return body


@contextmanager
def paused_gc() -> Iterator[None]:
    """Pause the cyclic garbage collector: loading a large record creates many objects and no cycles,
    and each collection it would trigger walks every live object (a third of the load time at 10,000 targets)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _values(body: memoryview) -> Iterator[Any]:
    """The marshal'd values in ``body``, one at a time; ValueError where a length runs past the end."""
    at = 0
    while at < len(body):
        if at + _LENGTH.size > len(body):
            raise ValueError("cache file damaged")
        (size,) = _LENGTH.unpack_from(body, at)
        at += _LENGTH.size
        if at + size > len(body):
            raise ValueError("cache file damaged")
        yield marshal.loads(body[at : at + size])
        at += size


def read_record(path: Path, fmt: tuple[Any, ...]) -> tuple[dict[str, Any], int, Iterator[Any]] | None:
    """The record at ``path``, the file's mtime_ns and the items written after it (decoded as they are taken: a
    damaged one raises ValueError there, a rare case a cache's caller treats as a miss); None when missing,
    unreadable or not of ``fmt``."""
    try:
        with open(path, "rb") as handle, paused_gc():
            written_ns = os.fstat(handle.fileno()).st_mtime_ns
            values = _values(unsealed(handle.read()))
            record = next(values)
    except (OSError, EOFError, ValueError, TypeError, StopIteration):
        return None
    if not isinstance(record, dict) or record.get("format") != fmt:
        return None
    return record, written_ns, values


def _framed(values: Iterable[Any]) -> Iterator[bytes]:
    """Each value marshal'd behind its length, then the CRC-32 of all of it (as :func:`sealed` ends a file)."""
    crc = 0
    for value in values:
        data = marshal.dumps(value)
        length = _LENGTH.pack(len(data))
        crc = zlib.crc32(data, zlib.crc32(length, crc))
        yield length
        yield data
    yield _CRC.pack(crc)


def write_record(path: Path, record: dict[str, Any], items: Iterable[Any] = ()) -> None:
    """Write ``record`` and then ``items`` (each encoded as it is taken) atomically; silently skipped on a
    read-only checkout or a value marshal cannot store."""
    from pixmake.store import atomic_write

    try:
        atomic_write(path, _framed(itertools.chain((record,), items)))
    except (OSError, ValueError, TypeError):
        return
