"""Record files in ``.pixmake/``: one marshal'd dict tagged with its format, read and written fail-safe.

Shell. The manifest cache (:mod:`pixmake.mcache`) and the lock cache (:mod:`pixmake.lcache`) keep
their records this way. A record that cannot be read, or carries another format tag, reads as
None (the caller recomputes); a record that cannot be written is skipped: a cache only saves time.

Every cache file in ``.pixmake/`` ends in a CRC-32 of what precedes it (:func:`sealed`), as git's index
ends in a checksum: a flipped bit would otherwise be read as a wrong hash or stat, and give a wrong plan.
"""

from __future__ import annotations

import gc
import marshal
import os
import struct
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

__all__ = ["paused_gc", "read_record", "sealed", "unsealed", "write_record"]

_CRC = struct.Struct("<I")


def sealed(data: bytes) -> bytes:
    """``data`` followed by its CRC-32 (read back with :func:`unsealed`)."""
    return data + _CRC.pack(zlib.crc32(data))


def unsealed(data: bytes) -> bytes:
    """What :func:`sealed` sealed; ValueError when the file was cut short or a bit changed."""
    body, trailer = data[: -_CRC.size], data[-_CRC.size :]
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


def read_record(path: Path, fmt: tuple[Any, ...]) -> tuple[dict[str, Any], int] | None:
    """The record at ``path`` and the file's mtime_ns, or None when missing, unreadable or not of ``fmt``."""
    try:
        with open(path, "rb") as handle, paused_gc():
            written_ns = os.fstat(handle.fileno()).st_mtime_ns
            record = marshal.loads(unsealed(handle.read()))
    except (OSError, EOFError, ValueError, TypeError):
        return None
    if not isinstance(record, dict) or record.get("format") != fmt:
        return None
    return record, written_ns


def write_record(path: Path, record: dict[str, Any]) -> None:
    """Write ``record`` atomically; silently skipped on a read-only checkout or a value marshal cannot store."""
    from pixmake.store import atomic_write

    try:
        atomic_write(path, sealed(marshal.dumps(record)))
    except (OSError, ValueError, TypeError):
        return
