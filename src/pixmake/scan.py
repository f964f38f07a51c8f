"""Turn the project's files into a :class:`DiskState` value for the planner.

Shell. Stats every reference, mask and output the plan needs and trusts a file's hash from the
**stat cache** (``.pixmake/statcache``: path → size, mtime_ns, inode, ctime_ns, sha256) when its stat
is unchanged, as git's index and DVC's state DB do. Git's *racy* rule applies: an entry whose mtime
is not older than the cache file's own mtime may have been rewritten within the same clock tick
after it was recorded, so it is hashed again. Everything else is hashed in threads (hashlib releases
the GIL). Each path is checked to stay inside the project root (symlinks followed). Finally it notes
which locked outputs the object cache can restore, and which outputs are damaged: present, not
their locked bytes, and either a strict prefix of them or not a whole image (what a power cut leaves
of an output written without fsync; see :func:`pixmake.store.atomic_write`).

Cache file format: ``marshal`` of ``(STAT_CACHE_VERSION, {path: 64 bytes})`` and its CRC-32
(:func:`pixmake.recordfile.sealed`), each value the stat
packed as four little-endian int64 (size, mtime_ns, ino, ctime_ns) then the raw sha256 digest.
``bench/noop.py --formats`` chose it: at 10,000 entries it loads in about 1 ms, against 4 ms for
marshal or pickle of tuples and 8 ms for JSON. Not pickle for any file in ``.pixmake/``: loading a
pickle runs code, and a state directory can come from someone else (an archive, a careless commit);
``marshal`` of plain values cannot. Anything unreadable is treated as an empty cache: it only saves work.
"""

from __future__ import annotations

import contextlib
import hashlib
import marshal
import os
import stat as _stat
import struct
from collections.abc import Container, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from pixmake.decode import is_whole_image
from pixmake.errors import Diagnostic, ManifestError, UnsafePathError
from pixmake.gitblobs import committed_images
from pixmake.lockfile import Lock
from pixmake.manifest import Target, is_url, output_paths, portable_path
from pixmake.recordfile import sealed, unsealed
from pixmake.store import ObjectCache, RootGuard, atomic_write, hash_file, safe_path

__all__ = [
    "STAT_CACHE_VERSION",
    "DiskState",
    "FileStat",
    "ScanStatistics",
    "StatCache",
    "hash_file",
    "hash_files",
    "scan_project",
]

STAT_CACHE_VERSION: Final = 2
_STAT: Final = struct.Struct("<qqqq")
_WHOLE: Final = 16 << 20

FileStat = tuple[int, int, int, int]
"""What the stat cache compares: ``(size, mtime_ns, ino, ctime_ns)``."""


@dataclass(frozen=True, slots=True)
class ScanStatistics:
    """What a scan cost: files stat'ed, files hashed (cache misses and racy entries) and their bytes."""

    stated: int = 0
    hashed: int = 0
    hashed_bytes: int = 0
    racy: int = 0


@dataclass(frozen=True, slots=True)
class DiskState:
    """What is on disk: sha256 of each present file the plan asks about, and the cached objects."""

    file_hashes: Mapping[str, str] = field(default_factory=dict)
    cached_objects: frozenset[str] = frozenset()
    statistics: ScanStatistics = ScanStatistics()
    stats: Mapping[str, FileStat] = field(default_factory=dict)  # the stat each hash was trusted or taken at
    # Outputs that differ from their locked bytes as a power cut leaves an unsynced write (a strict
    # prefix of those bytes, or not a whole image), never as a hand edit does. The plan restores them.
    damaged: frozenset[str] = frozenset()
    # The hashes of outputs that differ from their locked bytes but are images pixmake made: another
    # target's (outs moved or swapped) or other inputs' (a branch switch, with outputs not committed).
    # Not a hand edit: the plan puts the locked bytes back when they are cached.
    made_by_pixmake: frozenset[str] = frozenset()
    # Damaged outputs that are Git LFS pointer files: the image is in LFS, not fetched (a CI checkout).
    lfs_pointers: frozenset[str] = frozenset()
    # Missing outputs whose locked bytes are under a name differing only in letter case or Unicode form
    # (git on macOS and Windows keeps a file's old name when only its case changes): that name, by output
    # path and locked sha256. A build caches those bytes before it restores from them.
    case_twins: Mapping[tuple[str, str], str] = field(default_factory=dict)
    # Locked images neither in place nor cached whose bytes git's index or HEAD holds at their output
    # path (a committed output deleted or edited): blob id by sha256. A build caches them before it
    # restores from them.
    in_git: Mapping[str, str] = field(default_factory=dict)
    # Locked images neither in place nor cached that git holds at their output path as a Git LFS pointer
    # (a committed output deleted, in a checkout without LFS): their sha256. Not a reason to pay.
    in_lfs: frozenset[str] = frozenset()
    # Git refused to read the repository (another user's: safe.directory), so no committed copy of a
    # missing output was looked for: the command that lets it.
    git_refused: str = ""


def _digest(path: str) -> bytes | None:
    # One read and one update for a file up to _WHOLE (an image): hashlib drops the GIL for the
    # update, and this measured faster than chunked reads (bench/noop.py). Larger files stream. Not
    # mmap: a file truncated while mapped would kill the process with SIGBUS.
    try:
        with open(path, "rb", buffering=0) as handle:
            if os.fstat(handle.fileno()).st_size <= _WHOLE:
                return hashlib.sha256(handle.read()).digest()
            return hashlib.file_digest(handle, "sha256").digest()
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        return None


def hash_files(paths: Sequence[str], *, threads: int | None = None) -> list[bytes | None]:
    """Raw sha256 digests of files (None for a file that vanished), hashed in ``threads`` threads.

    Each thread takes a contiguous share of the list: one future per thread, not per file, so that
    thousands of small files cost no more scheduling than a few large ones.
    """
    workers = max(1, min(threads or (os.cpu_count() or 2), len(paths)))
    if workers == 1:
        return [_digest(p) for p in paths]
    from concurrent.futures import ThreadPoolExecutor  # only a cold scan pays for this import

    # Interleave shares so that large and small files spread evenly across threads.
    shares = [paths[i::workers] for i in range(workers)]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = list(pool.map(lambda share: [_digest(p) for p in share], shares))
    out: list[bytes | None] = [None] * len(paths)
    for i, share_result in enumerate(results):
        out[i::workers] = share_result
    return out


class StatCache:
    """``.pixmake/statcache``: remembered hashes of files, valid while their stat is unchanged."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.entries: dict[str, bytes] = {}
        self.written_ns = 0  # the cache file's mtime: entries not older than it are racy
        self.dirty = False
        self._stored: set[str] = set()  # entries hashed by this process
        if path is not None:
            self._load(path)

    def _load(self, path: Path) -> None:
        try:
            with open(path, "rb") as handle:
                self.written_ns = os.fstat(handle.fileno()).st_mtime_ns
                data = marshal.loads(unsealed(handle.read()))
        except (OSError, EOFError, ValueError, TypeError):
            return
        if isinstance(data, tuple) and len(data) == 2 and data[0] == STAT_CACHE_VERSION and isinstance(data[1], dict):
            entries = data[1]
            if all(type(k) is str and type(v) is bytes and len(v) == 64 for k, v in entries.items()):
                self.entries = entries

    def lookup(self, rel: str, st: FileStat) -> bytes | None:
        """The cached digest when the stat is unchanged and not racy, else None."""
        entry = self.entries.get(rel)
        if entry is None or entry[:32] != _STAT.pack(*st):
            return None
        if st[1] >= self.written_ns:
            return None  # racy: rewritten in the same tick as the cache write? hash again
        return entry[32:]

    def is_racy(self, rel: str, st: FileStat) -> bool:
        """Whether an otherwise matching entry is distrusted only by the racy rule."""
        entry = self.entries.get(rel)
        return entry is not None and entry[:32] == _STAT.pack(*st) and st[1] >= self.written_ns

    def store(self, rel: str, st: FileStat, digest: bytes) -> None:
        """Remember a freshly computed digest."""
        self.entries[rel] = _STAT.pack(*st) + digest
        self._stored.add(rel)
        self.dirty = True

    def forget(self, rel: str) -> None:
        """Drop a path whose file is gone."""
        if self.entries.pop(rel, None) is not None:
            self.dirty = True

    def save(self) -> None:
        """Write the cache atomically when anything changed (a no-op scan writes nothing)."""
        if self.path is None or not self.dirty:
            return
        # An entry still racy and not hashed again now would look safe beside the newer cache file: a file
        # rewritten in the tick it was hashed would keep its old hash for good. Drop it (git smudges it).
        racy = [
            rel
            for rel, entry in self.entries.items()
            if rel not in self._stored and _STAT.unpack_from(entry)[1] >= self.written_ns
        ]
        for rel in racy:
            del self.entries[rel]
        try:
            atomic_write(self.path, sealed(marshal.dumps((STAT_CACHE_VERSION, self.entries))))
        except OSError:
            return  # a read-only checkout (CI) still plans; the cache only saves work
        self.dirty = False


def _wanted(targets: Iterable[Target], lock: Lock) -> tuple[dict[str, str], dict[str, str]]:
    """Paths to look at (relative → the field that named it) and, among them, the inputs."""
    inputs: dict[str, str] = {}
    paths: dict[str, str] = {}
    for target in targets:
        for i, ref in enumerate(target.references):
            if ref not in paths and not is_url(ref):
                paths[ref] = inputs[ref] = f"targets.{target.name}.references[{i}]"
        mask = target.mask
        if mask is not None and mask not in paths and not is_url(mask):
            paths[mask] = inputs[mask] = f"targets.{target.name}.mask"
        for rel in output_paths(target):
            if rel not in paths:
                paths[rel] = f"targets.{target.name}.out"
    for name, entry in lock.entries.items():
        for output in entry.outputs:
            if output.path not in paths:
                paths[output.path] = f"pixmake.lock: {name}"
    return paths, inputs


def _stat_all(guard: RootGuard, paths: Mapping[str, str]) -> dict[str, tuple[str, FileStat]]:
    """rel → (absolute path, stat) for every present regular file; raises UnsafePathError."""
    found: dict[str, tuple[str, FileStat]] = {}
    lstat, is_reg, is_lnk = os.lstat, _stat.S_ISREG, _stat.S_ISLNK
    for rel, where in paths.items():
        path = guard.absolute(rel, where)
        try:
            st = lstat(path)
            if is_lnk(st.st_mode):
                guard.check_link(rel, path, where)
                st = os.stat(path)
        except (FileNotFoundError, NotADirectoryError):
            continue
        if is_reg(st.st_mode):
            found[rel] = (path, (st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns))
    return found


def _hash_with_cache(
    found: Mapping[str, tuple[str, FileStat]], cache: StatCache, threads: int | None
) -> tuple[dict[str, str], ScanStatistics]:
    hashes: dict[str, str] = {}
    todo: list[str] = []
    racy = 0
    for rel, (_, st) in found.items():
        digest = cache.lookup(rel, st)
        if digest is None:
            todo.append(rel)
            racy += cache.is_racy(rel, st)
        else:
            hashes[rel] = digest.hex()
    hashed_bytes = 0
    if todo:
        digests = hash_files([found[rel][0] for rel in todo], threads=threads)
        for rel, digest in zip(todo, digests, strict=True):
            if digest is None:
                cache.forget(rel)
                continue
            st = found[rel][1]
            hashes[rel] = digest.hex()
            hashed_bytes += st[0]
            cache.store(rel, st, digest)
    return hashes, ScanStatistics(len(found), len(todo), hashed_bytes, racy)


def _is_debris(path: str, locked: Iterable[str], objects: ObjectCache) -> bool:
    """Whether an output that differs from the lock is what a crash leaves of an unsynced write.

    That is a strict prefix of the locked bytes (empty, or cut short: Pillow alone would pass a PNG
    cut inside its last chunk), or bytes that are not a whole image (zeros). A file that cannot be
    read cannot be judged, and is left to the user.
    """
    try:
        with open(path, "rb") as handle:
            blob = handle.read()
    except OSError:
        return False
    for sha in locked:
        with contextlib.suppress(OSError, ValueError):  # not cached, or corrupt: the decode check decides
            whole = objects.get(sha)
            if len(blob) < len(whole) and whole.startswith(blob):
                return True
    return not is_whole_image(blob)


_LFS_POINTER: Final = b"version https://git-lfs.github.com/spec/"


def _is_lfs_pointer(path: str) -> bool:
    """Whether the file is a Git LFS pointer (what a checkout without ``git lfs pull`` leaves)."""
    try:
        with open(path, "rb") as handle:
            return handle.read(len(_LFS_POINTER)) == _LFS_POINTER
    except OSError:
        return False


def _portable_twin(root: Path, rel: str, listings: dict[str, dict[str, list[str]]]) -> str | None:
    """The one path under ``root`` that names ``rel`` in another letter case or Unicode form, folder by
    folder (None when there is none, or more than one). ``listings`` keeps each folder's names by their
    portable form, so that thousands of missing outputs in one folder list it once."""
    folder, found = str(root), []
    for part in rel.split("/"):
        listing = listings.get(folder)
        if listing is None:
            listing = listings[folder] = {}
            with contextlib.suppress(OSError):
                for name in os.listdir(folder):
                    listing.setdefault(portable_path(name), []).append(name)
        same = listing.get(portable_path(part), [])
        names = [part] if part in same else same
        if len(names) != 1:
            return None
        found.append(names[0])
        folder = os.path.join(folder, names[0])
    twin = "/".join(found)
    return twin if twin != rel else None


def _case_twins(root: Path, missing: Sequence[tuple[str, str]]) -> dict[tuple[str, str], str]:
    """Of the ``missing`` outputs (path, locked sha256), those whose locked bytes are under a name differing
    only in letter case or Unicode form (renamed by case on macOS or Windows, where git keeps the old name;
    typed in another Unicode form): that name, by (path, sha256)."""
    twins: dict[tuple[str, str], str] = {}
    listings: dict[str, dict[str, list[str]]] = {}
    for path, sha in missing:
        twin = _portable_twin(root, path, listings)
        if twin is None:
            continue
        with contextlib.suppress(OSError, UnsafePathError):
            if hash_file(safe_path(root, twin, field="out")) == sha:
                twins[path, sha] = twin
    return twins


def _refuse_missing_inputs(
    targets: tuple[Target, ...],
    inputs: Mapping[str, str],
    hashes: Mapping[str, str],
    file: str,
    required: Container[str] | None,
) -> None:
    """Raise ManifestError naming each input of a ``required`` target that is not in ``hashes``."""
    if required is not None:  # name each missing file by a target that needs it
        inputs = {}
        for target in targets:
            if target.name in required:
                fields = [(ref, f"references[{i}]") for i, ref in enumerate(target.references)]
                for rel, field_name in [*fields, (target.mask, "mask")]:
                    if rel is not None and rel not in hashes and not is_url(rel):
                        inputs.setdefault(rel, f"targets.{target.name}.{field_name}")
    lines = {f"targets.{t.name}": t.line for t in targets}
    missing = [
        Diagnostic(file, lines.get(name.rsplit(".", 1)[0].split("[")[0], 1), 1, name, f"file not found: {rel}")
        for rel, name in inputs.items()
        if rel not in hashes
    ]
    if missing:
        raise ManifestError(missing)


def scan_project(
    root: Path,
    targets: tuple[Target, ...],
    lock: Lock,
    objects: ObjectCache,
    *,
    file: str,
    stat_cache: Path | None = None,
    threads: int | None = None,
    required: Container[str] | None = None,
) -> DiskState:
    """Hash what the plan needs; raises ManifestError naming each missing reference or mask of the
    ``required`` targets (by name; None: all). Another target's missing input is left out of the hashes.

    With ``stat_cache`` (``.pixmake/statcache``), unchanged files are not read, and the cache is
    updated (atomically) when anything had to be hashed. Raises UnsafePathError for a path that
    leaves the project root.
    """
    paths, inputs = _wanted(targets, lock)
    found = _stat_all(RootGuard(root), paths)
    cache = StatCache(stat_cache)
    for rel in paths.keys() - found.keys():
        cache.forget(rel)
    hashes, statistics = _hash_with_cache(found, cache, threads)
    if stat_cache is not None:
        cache.save()
    if inputs.keys() - hashes.keys():
        _refuse_missing_inputs(targets, inputs, hashes, file, required)
    # Only outputs that are not in place need the object cache; a no-op plan asks it nothing.
    locked = [(o.path, o.sha256, o.bytes) for entry in lock.entries.values() for o in entry.outputs]
    for target in targets:
        entry = lock.entries.get(target.name)
        if entry is not None:
            outputs = zip(output_paths(target), entry.outputs, strict=False)
            locked.extend((path, o.sha256, o.bytes) for path, o in outputs)
    unplaced_sized = [(path, sha, size) for path, sha, size in locked if hashes.get(path) != sha]
    unplaced = [(path, sha) for path, sha, _ in unplaced_sized]
    cached = frozenset(sha for sha in {sha for _, sha in unplaced} if objects.has(sha))
    twins = _case_twins(root, [(path, sha) for path, sha in unplaced if path not in hashes])
    twin_shas = {sha for _, sha in twins}
    committed = committed_images(
        root, ((path, sha, size) for path, sha, size in unplaced_sized if sha not in cached and sha not in twin_shas)
    )
    differing: dict[str, set[str]] = {}  # present, but not the locked bytes: path → the locked sha256s
    for path, sha in unplaced:
        if path in hashes:
            differing.setdefault(path, set()).add(sha)
    damaged = frozenset(path for path, shas in differing.items() if _is_debris(found[path][0], shas, objects))
    present = {hashes[path] for path in differing.keys() - damaged}
    if present:
        locked_at = {(o.path, o.sha256) for entry in lock.entries.values() for o in (*entry.outputs, *entry.stale)}
        locked_anywhere = {sha for _, sha in locked_at}
        # Cached, or (a fresh clone) locked at that very path: outs swapped or moved, not a copy someone made.
        # A build caches such a file before a restore overwrites it (another target's only copy, say).
        at_its_path = {hashes[path] for path in differing.keys() - damaged if (path, hashes[path]) in locked_at}
        made = frozenset(
            sha
            for sha in present
            if sha in at_its_path or objects.made_by_pixmake(sha) or (sha in locked_anywhere and objects.has(sha))
        )
    else:
        made = frozenset()
    stats = {rel: found[rel][1] for rel in hashes}
    return DiskState(
        file_hashes=hashes, cached_objects=cached, statistics=statistics, stats=stats, damaged=damaged,
        made_by_pixmake=made, lfs_pointers=frozenset(p for p in damaged if _is_lfs_pointer(found[p][0])),
        case_twins=twins, in_git=committed.blobs, in_lfs=committed.in_lfs, git_refused=committed.refused,
    )  # fmt: skip
