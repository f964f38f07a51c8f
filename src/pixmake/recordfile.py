"""Record files in ``.pixmake/``: one marshal'd dict tagged with its format, read and written fail-safe.

Shell. The manifest cache (:mod:`pixmake.mcache`) and the lock cache (:mod:`pixmake.lcache`) keep
their records this way. A record that cannot be read, or carries another format tag, reads as
None (the caller recomputes); a record that cannot be written is skipped: a cache only saves time.
"""

from __future__ import annotations

import gc
import marshal
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

__all__ = ["paused_gc", "read_record", "write_record"]


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
            record = marshal.loads(handle.read())
    except (OSError, EOFError, ValueError, TypeError):
        return None
    if not isinstance(record, dict) or record.get("format") != fmt:
        return None
    return record, written_ns


def write_record(path: Path, record: dict[str, Any]) -> None:
    """Write ``record`` atomically; silently skipped on a read-only checkout or a value marshal cannot store."""
    from pixmake.store import atomic_write

    try:
        atomic_write(path, marshal.dumps(record))
    except (OSError, ValueError, TypeError):
        return
