"""A cache of the parsed lockfile in ``.pixmake/lock.cache``, so an unchanged ``pixmake.lock`` is not parsed again.

Shell. Parsing a 10,000-target lockfile (one JSON document per target, then a dataclass per entry,
output and input) takes about a quarter of a second; loading the same entries as :mod:`marshal`'d
tuples takes a fraction of that. The cache holds :func:`~pixmake.lockfile.parse_lock`'s result only:
the journal is folded in afterwards, as without a cache (``api.load_lock``). The entry is valid while
all of these hold (the rules of :mod:`pixmake.mcache`):

* the cache format, the pixmake version, the code identity (:func:`~pixmake.memo.code_identity`)
  and the lockfile dataclasses' field names are the same;
* the lockfile has the same stat (size, mtime_ns, inode, ctime_ns) and is not *racy* (its mtime is
  older than the cache file's, git's rule), or else its bytes still hash to the recorded sha256.

A lockfile that does not parse is never cached (``parse_lock`` raises, as without a cache). A cache
that cannot be read, decoded or written is ignored: it only saves work.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import stat as stat_module
from itertools import starmap
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final

from pixmake import __version__
from pixmake.errors import LockfileError
from pixmake.fingerprint import current_keys
from pixmake.lockfile import (
    NO_PARAMS,
    Lock,
    LockedInput,
    LockedOutput,
    LockEntry,
    SharedInputs,
    lock_text,
    parse_lock,
    shared_input,
)
from pixmake.memo import FileStat, code_identity
from pixmake.recordfile import paused_gc, read_record, write_record

__all__ = ["LCACHE_VERSION", "load_lock_file"]

LCACHE_VERSION: Final = 6
_CLASSES: Final = (LockEntry, LockedOutput, LockedInput)


def _shape() -> tuple[Any, ...]:
    """The code's identity and the cached classes' field names: a cache never outlives the code."""
    return (code_identity(), tuple(tuple(f.name for f in dataclasses.fields(cls)) for cls in _CLASSES))


def _output(o: LockedOutput) -> tuple[str, str, int, int, int]:
    return (o.path, o.sha256, o.bytes, o.width, o.height)


def _input(i: LockedInput) -> tuple[str, str, str | None]:
    return (i.path, i.sha256, i.pixels)


def _encode(lock: Lock) -> tuple[Any, ...]:
    """Each entry as a tuple of marshal-able values, in ``LockEntry`` field order after its name."""
    return tuple(
        (
            name,
            e.key,
            e.model,
            e.prompt,
            e.size,
            e.n,
            tuple(map(_output, e.outputs)),
            tuple(map(_input, e.references)),
            None if e.mask is None else _input(e.mask),
            dict(e.params),
            e.task_id,
            tuple(map(_output, e.stale)),
            e.emulator,
            e.accepted_images or e.accepted,  # some of its images, or all (or none)
        )
        for name, e in lock.entries.items()
    )


def _decode(entries: Any) -> Lock:
    """The inverse of :func:`_encode`; raises TypeError or ValueError for anything else."""
    decoded: dict[str, LockEntry] = {}
    shared: SharedInputs = {}  # an input many entries name is kept once
    for (
        name,
        key,
        model,
        prompt,
        size,
        n,
        outputs,
        references,
        mask,
        params,
        task_id,
        stale,
        emulator,
        accepted,
    ) in entries:
        if type(name) is not str or type(params) is not dict:
            raise TypeError("not a lock cache entry")
        decoded[name] = LockEntry(
            key,
            model,
            prompt,
            size,
            n,
            tuple(starmap(LockedOutput, outputs)),
            tuple(shared_input(path, sha256, shared, pixels) for path, sha256, pixels in references),
            None if mask is None else shared_input(mask[0], mask[1], shared, mask[2]),
            MappingProxyType(params) if params else NO_PARAMS,
            task_id,
            tuple(starmap(LockedOutput, stale)),
            emulator is True,
            accepted is True or type(accepted) is tuple,
            accepted if type(accepted) is tuple else (),
        )
    if len(decoded) != len(entries):
        raise ValueError("a target appears twice")
    return Lock(MappingProxyType(decoded))


def _stat(handle: Any) -> FileStat:
    st = os.fstat(handle.fileno())
    return (st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns)


def _format() -> tuple[Any, ...]:
    return (LCACHE_VERSION, __version__, _shape())


def _decoded(record: dict[str, Any]) -> Lock | None:
    try:
        with paused_gc():
            return _decode(record["entries"])
    except (KeyError, TypeError, ValueError, AttributeError):
        return None


def _read_record(cache: Path) -> tuple[dict[str, Any], int] | None:
    """The cache's record and the file's mtime_ns; not its items (it has none), which would keep the file's
    bytes in memory while the lock is decoded or parsed."""
    found = read_record(cache, _format())
    return None if found is None else (found[0], found[1])


def load_lock_file(lockfile: Path, cache: Path) -> Lock:
    """``parse_lock`` of ``lockfile``'s text, from the cache when still valid (else parsed and cached), with an
    earlier version's entries under today's keys (:func:`~pixmake.fingerprint.current_keys`).

    Raises FileNotFoundError when there is no lockfile, LockfileError (never cached) when it is corrupt, or
    no file (a FIFO would be waited on for good, ``/dev/zero`` read without end).
    """
    if not stat_module.S_ISREG(os.stat(lockfile).st_mode):
        raise LockfileError(f"{lockfile.name} is not a file (a FIFO, a socket or a device): put the lockfile back")
    with open(lockfile, "rb") as handle:
        stat = _stat(handle)
        loaded = _read_record(cache)
        if loaded is not None:
            record, written_ns = loaded
            if stat == record.get("stat") and stat[1] < written_ns:
                lock = _decoded(record)
                if lock is not None:
                    return lock
                loaded = None
        data = handle.read()
    if loaded is not None and isinstance(loaded[0].get("stat"), tuple) and loaded[0]["stat"][:1] == stat[:1]:
        record = loaded[0]
        if hashlib.sha256(data).hexdigest() == record.get("sha256"):  # touched, not changed: re-key on the new stat
            lock = _decoded(record)
            if lock is not None:
                if _unchanged(lockfile, stat):
                    write_record(cache, {**record, "stat": stat})
                return lock
    lock = current_keys(
        parse_lock(lock_text(data, file=lockfile.name), file=lockfile.name)
    )  # cached as read: under today's keys
    try:
        entries = _encode(lock)
    except (TypeError, ValueError):
        return lock
    if _unchanged(lockfile, stat):
        digest = hashlib.sha256(data).hexdigest()
        write_record(cache, {"format": _format(), "stat": stat, "sha256": digest, "entries": entries})
    return lock


def _unchanged(path: Path, stat: FileStat) -> bool:
    """Whether ``path`` still has ``stat`` (not edited while we read it)."""
    try:
        st = os.stat(path)
    except OSError:
        return False
    return (st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns) == stat
