"""The no-op memo: ``.pixmake/noop.memo`` proves that nothing changed since the last all-unchanged plan.

Shell. ``make_plan`` is a pure function of the manifest (and its catalogs), the lockfile (and the
journal) and the hashes of the files the targets name. After a plan in which every target was
unchanged, :func:`write_memo` records the stat (size, mtime_ns, inode, ctime_ns) of each of those
files and each target's key. :func:`check_memo` then answers the next plan by stat'ing the same
files, as ninja answers a no-op build from its log, without parsing YAML, reading the lockfile or
hashing anything. Any difference, a missing file, another pixmake or memo format, or git's *racy*
case (a file whose mtime is not older than the memo's own) means "plan normally". A memo that
cannot be read or written is ignored: it only saves work.

The memo is written only for a plan over the whole manifest with no ``--replace`` or ``--restore``.
This module imports nothing of the manifest parser. Format (``marshal``, then its CRC-32:
:func:`pixmake.recordfile.sealed`)::

    (MEMO_VERSION, (pixmake version, code identity), (root, manifest), ((source path, stat | None), ...),
     paths: b"\\0"-joined, the paths' stats packed as int64 (mtime_ns, size, ino, ctime_ns),
     newest mtime_ns among them, names: b"\\0"-joined UTF-8, keys: 32-byte digests concatenated,
     whether the manifest has warnings, the folders those paths lie in: b"\\0"-joined, and their lstat
     identity packed as int64 (ino, mode): a folder swapped for a symlink (which may lead outside the
     project, where the plan's root check would refuse it) is a change, though every file's stat holds)

Packed bytes rather than tuples: loading 100,000 stat tuples would cost more than stat'ing the
files, while bytes load as one copy, and the check runs as C-level ``map`` calls and one ``==``.
"""

from __future__ import annotations

import marshal
import os
import stat
from array import array
from collections.abc import Iterable, Sequence
from functools import partial
from itertools import chain
from operator import attrgetter
from pathlib import Path
from typing import Any, Final, NamedTuple, overload

from pixmake import __version__
from pixmake.recordfile import sealed, unsealed

__all__ = ["MEMO_VERSION", "FileStat", "Remembered", "check_memo", "code_identity", "file_stat", "write_memo"]

MEMO_VERSION: Final = 5
FileStat = tuple[int, int, int, int]
"""``(size, mtime_ns, ino, ctime_ns)``: a file's identity for every cache in ``.pixmake/``."""

_IDENTITY: Final = attrgetter("st_mtime_ns", "st_size", "st_ino", "st_ctime_ns")


class Remembered(NamedTuple):
    """What the memo proves: each target's (name, key), all unchanged; and whether the manifest has warnings."""

    targets: Sequence[tuple[str, str]]
    warned: bool


def code_identity() -> tuple[tuple[str, int, int], ...]:
    """Name, size and mtime of each module of this pixmake: cached results never outlive the code.

    The version alone is not enough for a development checkout, where the code changes under one
    version number. About 30 ``stat`` calls.
    """
    package = os.path.dirname(os.path.abspath(__file__))
    identity = []
    with os.scandir(package) as entries:
        for entry in entries:
            if entry.name.endswith((".py", ".json")) and entry.is_file():
                st = entry.stat()
                identity.append((entry.name, st.st_size, st.st_mtime_ns))
    return tuple(sorted(identity))


def memo_file(root: Path) -> Path:
    """Where a project's memo lives."""
    return root / ".pixmake" / "noop.memo"


def file_stat(path: str | Path) -> FileStat | None:
    """The stat identity of a file, or None when it does not exist."""
    try:
        st = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    return (st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns)


def _packed(identities: Iterable[tuple[int, int, int, int]]) -> bytes:
    return array("q", chain.from_iterable(identities)).tobytes()


def write_memo(
    memo: Path,
    *,
    root: Path,
    manifest: Path,
    sources: Sequence[tuple[str, FileStat | None]],
    files: Sequence[tuple[str, FileStat]],
    targets: Sequence[tuple[str, str]],
    warned: bool = False,
) -> None:
    """Record an all-unchanged plan.

    ``sources`` are absolute paths and stats of what the plan's values came from (manifest,
    catalogs, lockfile, journal; None for a file that does not exist), ``files`` the project-relative
    paths and stats of every file the plan hashed, ``targets`` each target's (name, key) in order,
    ``warned`` whether the manifest has warnings (a plan answered by the memo must print them too).
    """
    from pixmake.store import atomic_write

    try:
        record = (
            MEMO_VERSION,
            (__version__, code_identity()),
            (str(root), str(manifest)),
            tuple(sources),
            b"\0".join(os.fsencode(rel) for rel, _ in files),
            _packed((st[1], st[0], st[2], st[3]) for _, st in files),
            max((st[1] for _, st in files), default=0),
            "\0".join(name for name, _ in targets).encode(),
            b"".join(bytes.fromhex(key) for _, key in targets),
            warned,
            *_folders(root, (rel for rel, _ in files)),
        )
        data = sealed(marshal.dumps(record))
        found = _read_memo(memo)
        if found is not None and found[0] == data and found[1] > record[6]:
            return  # the same memo, and not racy: do not rewrite it on every plan
        atomic_write(memo, data)
    except (OSError, ValueError):
        return


def _read_memo(memo: Path) -> tuple[bytes, int] | None:
    """The memo's bytes and mtime_ns; None when it is missing, unreadable or no regular file (a FIFO would be
    waited on for good, ``/dev/zero`` read without end: the memo only saves work)."""
    try:
        fd = os.open(memo, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return None
        with open(fd, "rb", closefd=False) as handle:
            return handle.read(), st.st_mtime_ns
    except OSError:
        return None
    finally:
        os.close(fd)


def check_memo(memo: Path, *, root: Path, manifest: Path) -> Remembered | None:
    """What the memo remembers when it still holds for this manifest, else None (plan normally)."""
    found = _read_memo(memo)
    if found is None:
        return None
    try:
        record: Any = marshal.loads(unsealed(found[0]))
        written_ns = found[1]
        version, pixmake, recorded_root, sources, paths, packed, newest, names, keys, warned, folders, folder_ids = (
            record
        )
    except (OSError, EOFError, ValueError, TypeError):
        return None
    if version != MEMO_VERSION or recorded_root != (str(root), str(manifest)) or newest >= written_ns:
        return None
    if pixmake != (__version__, code_identity()):
        return None
    for path, recorded in sources:
        st = file_stat(path)
        if st != recorded or (st is not None and st[1] >= written_ns):
            return None
    try:
        directory = os.open(root, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return None
    try:
        identities = map(_IDENTITY, map(partial(os.stat, dir_fd=directory), paths.split(b"\0") if paths else ()))
        if _packed(identities) != packed or _folder_identities(directory, folders) != folder_ids:
            return None
    except (OSError, ValueError):
        return None
    finally:
        os.close(directory)
    return Remembered(_Targets(names.decode().split("\0") if names else [], keys), bool(warned))


def _folder_identities(directory: int, folders: bytes) -> bytes:
    """(ino, mode) of each of the b"\\0"-joined project-relative ``folders``, not following a last symlink."""
    stats = map(partial(os.lstat, dir_fd=directory), folders.split(b"\0") if folders else ())
    return array("q", chain.from_iterable((st.st_ino, st.st_mode) for st in stats)).tobytes()


def _folders(root: Path, paths: Iterable[str]) -> tuple[bytes, bytes]:
    """The folders ``paths`` lie in (every level), b"\\0"-joined, and their identities (:func:`_folder_identities`)."""
    folders: set[str] = set()
    for rel in paths:
        parent = os.path.dirname(rel)
        while parent and parent not in folders:
            folders.add(parent)
            parent = os.path.dirname(parent)
    joined = b"\0".join(os.fsencode(folder) for folder in sorted(folders))
    directory = os.open(root, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        return joined, _folder_identities(directory, joined)
    finally:
        os.close(directory)


class _Targets(Sequence[tuple[str, str]]):
    """(name, key) pairs decoded on access: a no-op ``plan --check`` only needs their number."""

    def __init__(self, names: list[str], keys: bytes) -> None:
        self._names, self._keys = names, keys

    def __len__(self) -> int:
        return len(self._names)

    @overload
    def __getitem__(self, index: int) -> tuple[str, str]: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[tuple[str, str]]: ...
    def __getitem__(self, index: int | slice) -> tuple[str, str] | Sequence[tuple[str, str]]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        name = self._names[index]  # raises IndexError, which ends iteration
        index %= len(self._names)
        return name, self._keys[32 * index : 32 * index + 32].hex()
