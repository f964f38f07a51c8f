"""Files on disk: atomic writes, the project-root guard, the object cache and the project lock.

Shell. Every write pixmake makes goes through :func:`atomic_write` (temp file in the same
directory, fsync, ``os.replace``), so a crash leaves the old bytes or the new ones, never half.
Build outputs skip the fsyncs (``durable=False``): their bytes are durable in the object cache.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Final

from pixmake.errors import ProjectBusyError, UnsafePathError

__all__ = [
    "STATE_DIR",
    "ObjectCache",
    "RootGuard",
    "atomic_write",
    "binary",
    "describe_os_error",
    "disk_wide",
    "fsync_dir",
    "hash_file",
    "holds_state",
    "make_state_dir",
    "project_lock",
    "remove_leftover_temps",
    "running_build",
    "safe_path",
    "sha256_bytes",
]

STATE_DIR: Final = ".pixmake"
_IOV_MAX: Final = 1024  # pieces per writev call (POSIX guarantees at least 16; Linux and macOS take 1024)
_HAS_WRITEV: Final = hasattr(os, "writev")  # not on Windows: there, one write per piece
# Bytes of pieces gathered for one writev at most: 1024 chunks of a file read back 64 KB at a time held the
# whole lock in memory at each fold of a build (0.7 KB a target); this holds a few hundred KB at most.
_GROUP_BYTES: Final = 1 << 18
# A temp file is created as open() creates files (mode 0o666 less the umask), never through a symlink.
_CREATE: Final = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)


def binary(flags: int) -> int:
    """``os.open`` flags that open a file in binary mode: Windows' C runtime opens a descriptor in text mode
    unless told otherwise, and writes every ``\\n`` byte of an image as ``\\r\\n`` (a no-op elsewhere)."""
    return flags | getattr(os, "O_BINARY", 0)


_TEMP_NAME: Final = re.compile(r"\.(?P<name>.+)\.[0-9a-f]{12}\.tmp")  # what _temp_beside names a file
# A write that fails with one of these fails for every other file too: the disk is full or read-only,
# it failed, or the process is out of file handles.
_DISK_WIDE: Final = frozenset(
    getattr(errno, name) for name in ("ENOSPC", "EDQUOT", "EROFS", "EIO", "EMFILE", "ENFILE") if hasattr(errno, name)
)


def disk_wide(error: OSError) -> bool:
    """Whether a failed write means that no other write can succeed either (disk full or read-only, …)."""
    return error.errno in _DISK_WIDE


def describe_os_error(error: OSError, root: str | os.PathLike[str] | None = None) -> str:
    """``why: path`` in one line: the path relative to ``root`` when inside it, a temp file named as its file."""
    why = error.strerror or str(error) or type(error).__name__
    if error.filename is None:
        return why
    path = os.fsdecode(error.filename)
    directory, name = os.path.split(path)
    if temp := _TEMP_NAME.fullmatch(name):
        path = os.path.join(directory, temp["name"])
    if root is not None and os.path.isabs(path):
        with contextlib.suppress(OSError, ValueError):  # no such root, or another drive (Windows): keep it absolute
            base = os.path.realpath(root)
            if os.path.commonpath([base, path]) == base:
                path = os.path.relpath(path, base)
    return f"{why}: {path}"


def sha256_bytes(data: bytes) -> str:
    """Hex sha256 of bytes."""
    return hashlib.sha256(data).hexdigest()


def hash_file(path: Path | str) -> str:
    """Hex sha256 of a file's bytes."""
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def read_json(path: Path) -> object:
    """The JSON document in a state file that only saves work (a cache, a record); None when it is missing,
    unreadable, not JSON, or nested past what the parser takes: such a file counts as empty."""
    try:
        return json.loads(path.read_bytes())
    except (OSError, ValueError, RecursionError):
        return None


def fsync_dir(directory: str) -> None:
    with contextlib.suppress(OSError):  # not every file system lets a directory be opened and synced
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


_NAME_MAX: Final = 255  # bytes in a file name, on every file system pixmake expects
_TEMP_EXTRA: Final = len(".") + len(".") + 12 + len(".tmp")


def _temp_beside(directory: str, name: str) -> tuple[int, str]:
    """A new, empty ``.<name>.<random>.tmp`` in ``directory``, open for writing (``<name>`` cut short where
    the whole would pass the file system's 255 bytes: a long output name must still be writable)."""
    encoded = os.fsencode(name)
    if len(encoded) + _TEMP_EXTRA > _NAME_MAX:
        name = encoded[: _NAME_MAX - _TEMP_EXTRA].decode("utf-8", "ignore")  # whole characters only
    while True:
        tmp = os.path.join(directory, f".{name}.{os.urandom(6).hex()}.tmp")
        try:
            return os.open(tmp, binary(_CREATE), 0o666), tmp
        except FileExistsError:
            continue  # a name already taken: draw another


def remove_leftover_temps(root: Path, outputs: Iterable[str]) -> list[str]:
    """Delete the temporary files (``.<name>.<12 hex>.tmp``) that a killed build left beside these outputs
    (project paths); the project paths of those deleted. Call it holding the project lock: no other
    build is writing. Only a temporary file of one of ``outputs`` is touched; ``git add -A`` would
    otherwise commit the half-written image."""
    names: dict[str, set[str]] = {}
    for rel in outputs:
        folder, _, name = rel.rpartition("/")
        names.setdefault(folder, set()).add(name)
    removed = []
    for folder, wanted in names.items():
        try:
            entries = os.scandir(os.path.join(root, folder) if folder else root)
        except OSError:
            continue
        with entries:
            for entry in entries:
                found = _TEMP_NAME.fullmatch(entry.name) if entry.name.endswith(".tmp") else None
                if found is not None and found["name"] in wanted:
                    with contextlib.suppress(OSError):
                        os.unlink(entry.path)
                        removed.append(f"{folder}/{entry.name}" if folder else entry.name)
    return removed


def _groups(pieces: Iterable[bytes]) -> Iterator[list[bytes]]:
    """The pieces in groups of at most :data:`_IOV_MAX` pieces and about :data:`_GROUP_BYTES` bytes."""
    group: list[bytes] = []
    size = 0
    for piece in pieces:
        group.append(piece)
        size += len(piece)
        if len(group) >= _IOV_MAX or size >= _GROUP_BYTES:
            yield group
            group, size = [], 0
    if group:
        yield group


def _write_all(fd: int, pieces: Iterable[bytes]) -> None:
    """Write every piece, in order, with raw writes (a buffered file would add seek, tty and stat calls),
    holding one group of pieces at a time (see :func:`_groups`)."""
    for group in _groups(pieces):
        written = os.writev(fd, group) if len(group) > 1 and _HAS_WRITEV else 0  # one call for many pieces
        for piece in group:
            if written >= len(piece):
                written -= len(piece)
                continue
            view = memoryview(piece)[written:]  # the rest of a short write, or a single piece
            written = 0
            while view:
                view = view[os.write(fd, view) :]


# Windows refuses to replace a file another process holds open (a virus scanner, a search indexer or an
# image viewer that just opened the new output): a few short waits outlast them, as git for Windows does.
_BUSY_WAITS: Final = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0)


def _replace(tmp: str, path: str) -> None:
    """``os.replace``, retried on Windows while the target is held open by another process."""
    for wait in (*_BUSY_WAITS, None) if os.name == "nt" else (None,):
        try:
            os.replace(tmp, path)
            return
        except PermissionError:
            if wait is None:
                raise
            time.sleep(wait)


def atomic_write(
    path: str | os.PathLike[str],
    data: bytes | Iterable[bytes],
    *,
    durable: bool = True,
    before_replace: Callable[[], None] | None = None,
) -> None:
    """Replace ``path`` with ``data`` atomically and (unless ``durable=False``) durably, creating parent directories.

    ``data`` may come in pieces (bytes written one after another, from a list or as they are made), so a
    large file is never joined in memory first.

    Atomic either way: a killed process leaves the old bytes or the new ones, since the page cache
    outlives it. ``durable=False`` skips the fsyncs that only a power cut needs, so the file may come
    back empty or missing after one. It is for files whose bytes are kept durably elsewhere and whose
    damage is detected and repaired: build outputs (the object cache holds them; the plan restores an
    output it finds empty, cut short or undecodable). Replacing an existing file still syncs the directory, so
    a power cut cannot bring back the old, valid-looking bytes.

    Paths are handled as strings: pathlib interns every component it parses, so a Path per object or
    output would keep 10,000 names in the interpreter's intern table for the rest of the process.

    ``before_replace`` runs once the new bytes are written, just before they replace ``path``; an exception
    from it leaves ``path`` as it was (a check that it did not change meanwhile: a compare-and-swap).
    """
    path = os.fspath(path)
    directory, name = os.path.split(path)
    directory = directory or os.curdir
    try:
        fd, tmp = _temp_beside(directory, name)
    except FileNotFoundError:  # create the directories only when missing: most writes go to existing ones
        os.makedirs(directory, exist_ok=True)
        fd, tmp = _temp_beside(directory, name)
    sync_directory = durable or os.path.lexists(path)  # see the docstring: old bytes must not come back
    try:
        try:
            _write_all(fd, [data] if isinstance(data, bytes) else data)
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        if before_replace is not None:
            before_replace()
        _replace(tmp, path)
    except BaseException as error:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(error, OSError) and error.filename is None:  # a write or fsync: name the file (the disk full?)
            error.filename = tmp
        raise
    if sync_directory:
        fsync_dir(directory)


def safe_path(root: Path, relative: str, *, field: str) -> Path:
    """``root / relative`` after following symlinks; raises UnsafePathError when it leaves ``root``."""
    base = root.resolve()
    candidate = (base / relative).resolve()
    if candidate != base and base not in candidate.parents:
        raise UnsafePathError(field, relative)
    return candidate


class RootGuard:
    """The project-root check of :func:`safe_path` on plain strings, memoised per directory (for many paths)."""

    def __init__(self, root: Path) -> None:
        self.base = os.path.realpath(root)
        self.prefix = self.base.rstrip(os.sep) + os.sep
        self._dirs: dict[str, bool] = {}
        self._real: dict[str, str] = {}  # directory → where it leads, symlinks followed

    def real(self, rel: str) -> str | None:
        """The project path ``rel`` names once its folders' symlinks are followed (the file itself is not
        followed), memoised per folder; None when that leaves the root."""
        directory, name = os.path.split(os.path.join(self.prefix, rel))
        real = self._real_dir(directory)
        if real == self.base:
            return name
        return real[len(self.prefix) :].replace(os.sep, "/") + "/" + name if real.startswith(self.prefix) else None

    def _real_dir(self, directory: str) -> str:
        real = self._real.get(directory)
        if real is None:
            real = self._real[directory] = os.path.realpath(directory)
        return real

    def _inside(self, real: str) -> bool:
        return real == self.base or real.startswith(self.prefix)

    def absolute(self, rel: str, field: str) -> str:
        """The absolute path of ``rel``; raises UnsafePathError when it (or its directory) leaves the root."""
        return self._checked(rel, field, memoised=True)

    def fresh(self, rel: str, field: str) -> str:
        """Like :meth:`absolute`, but the directory is resolved now, not memoised: for a write, where a
        symlink swapped in since the plan must not lead it out of the root. The file itself may be a
        symlink: :func:`atomic_write` replaces it rather than writing through it."""
        return self._checked(rel, field, memoised=False)

    def _checked(self, rel: str, field: str, *, memoised: bool) -> str:
        if os.path.isabs(rel):
            raise UnsafePathError(field, rel)
        path = os.path.join(self.prefix, rel)
        directory = os.path.dirname(path)
        ok = self._dirs.get(directory) if memoised else None
        if ok is None:
            ok = self._inside(self._real_dir(directory) if memoised else os.path.realpath(directory))
            if memoised:
                self._dirs[directory] = ok
        if not ok:
            raise UnsafePathError(field, rel)
        return path

    def check_link(self, rel: str, path: str, field: str) -> None:
        """A symlink is followed; its target must stay inside the root."""
        if not self._inside(os.path.realpath(path)):
            raise UnsafePathError(field, rel)


def open_for_append(path: str | os.PathLike[str]) -> int:
    """A descriptor appending to the line file ``path`` (created as needed), whose last line, when a crash
    or a full disk left it torn, is ended first: else the next line would be glued onto it, and lost with it."""
    flags = os.O_RDWR | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(path, binary(flags), 0o666)  # never through a symlink: see api._refuse_links_in_state
    try:
        size = os.lseek(fd, 0, os.SEEK_END)
        if size and os.lseek(fd, size - 1, os.SEEK_SET) >= 0 and os.read(fd, 1) != b"\n":
            os.write(fd, b"\n")  # O_APPEND: at the end, wherever the offset stands
    except BaseException:
        os.close(fd)
        raise
    return fd


def append_lines(path: str | os.PathLike[str], data: bytes) -> None:
    """Append ``data`` (whole lines) to ``path`` durably: written in full, then fsync'd."""
    fd = open_for_append(path)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)


_USERS: Final = "users"  # in objects/: the sha256 of each stored file someone made, one per line


class ObjectCache:
    """Content-addressed store of every image pixmake was paid for: ``objects/ab/abcdef…``."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._prefix = os.fspath(directory)
        self._users: frozenset[str] | None = None

    def path(self, sha256: str) -> Path:
        """Where the object with this hash lives (whether or not it exists)."""
        return Path(self._file(sha256))

    def _file(self, sha256: str) -> str:  # a string, not a Path: see atomic_write
        return os.path.join(self._prefix, sha256[:2], sha256)

    def has(self, sha256: str) -> bool:
        """Whether the object is stored."""
        return os.path.isfile(self._file(sha256))

    def put(self, data: bytes, *, users: bool = False) -> str:
        """Store bytes (idempotent); returns their sha256.

        ``users``: the bytes of a file someone made (kept before a build overwrote it, or accepted).
        Unless pixmake stored the same bytes before, they are listed in ``objects/users``, so that
        :meth:`made_by_pixmake` never takes them for an image it generated.
        """
        digest = sha256_bytes(data)
        target = self._file(digest)
        try:
            # A copy cut short (a power cut) or rotted in place (a bit flipped) is written again.
            intact = os.stat(target).st_size == len(data) and hash_file(target) == digest
        except FileNotFoundError:
            intact = False
        if not intact:
            if users:
                self._note_users(digest)  # first: a crash between the two leaves a user's file listed, never unlisted
            try:
                atomic_write(target, data)
            except FileNotFoundError:  # its folder deleted as it was written (git clean -fdx mid-build): again, once
                atomic_write(target, data)
        return digest

    def _note_users(self, digest: str) -> None:
        os.makedirs(self._prefix, exist_ok=True)
        append_lines(os.path.join(self._prefix, _USERS), f"{digest}\n".encode())
        self._users = None

    def made_by_pixmake(self, sha256: str) -> bool:
        """Whether the object is an image a build generated: stored, and not listed as someone's file."""
        if not self.has(sha256):
            return False
        if self._users is None:
            try:
                with open(os.path.join(self._prefix, _USERS), "rb") as listed:
                    self._users = frozenset(line.decode("ascii", "replace").strip() for line in listed)
            except FileNotFoundError:
                self._users = frozenset()
        return sha256 not in self._users

    def get(self, sha256: str) -> bytes:
        """The stored bytes, verified against their hash; raises FileNotFoundError or ValueError.

        A corrupt object is removed: no plan counts on it again (it would fail every build), and the next
        copy of those bytes (a build, an accept) stores them anew."""
        with open(self._file(sha256), "rb") as stored:
            data = stored.read()
        if sha256_bytes(data) != sha256:
            with contextlib.suppress(OSError):
                os.unlink(self._file(sha256))
            raise ValueError(f"object {sha256[:12]} was corrupt (removed)")
        return data


_PID_FILE: Final = "build.pid"  # in .pixmake/: the pid of the build holding the project lock


def _holder(state_dir: Path) -> tuple[int, str] | None:
    """(pid, command) of the process holding the project lock, from its pid file (an older pixmake's
    holds only the pid: a build); None without one, or when it cannot be read."""
    try:
        pid, *command = (state_dir / _PID_FILE).read_text().split()
        return int(pid), command[0] if command else "build"
    except (OSError, ValueError):
        return None


def running_build(state_dir: Path) -> int | None:
    """The pid of a build running in this project now, if any (read, never locked: a plan must not make a
    starting build fail). A build killed without cleaning up leaves its pid file: a dead pid is no build,
    and neither is this process's own (a container's pid 1 again). None on Windows, where ``os.kill``
    cannot probe a process without signalling it."""
    if os.name != "posix":
        return None
    holder = _holder(state_dir)
    if holder is None or holder[1] != "build":  # gc, accept, prune: no tasks of theirs are in flight
        return None
    pid = holder[0]
    if pid <= 0 or pid == os.getpid():
        return None
    try:
        os.kill(pid, 0)
    except PermissionError:  # alive, another user's
        return pid
    except (OSError, OverflowError):
        return None
    return pid


_GITIGNORE: Final = b"# pixmake's local state (journal, object cache, caches): never committed\n*\n"


def make_state_dir(state_dir: Path) -> None:
    """Create ``.pixmake/`` as needed, with a ``.gitignore`` that keeps all of it out of git (as pytest and
    ruff do with their caches): ``git add -A`` would otherwise commit every cached image. A read-only
    checkout is left as it is."""
    ignore = os.path.join(state_dir, ".gitignore")
    if not os.path.lexists(ignore):
        with contextlib.suppress(OSError):
            atomic_write(ignore, _GITIGNORE, durable=False)


def holds_state(folder: Path) -> bool:
    """Whether ``folder`` is pixmake's state: it has the ``.gitignore`` :func:`make_state_dir` writes."""
    try:
        return (folder / ".gitignore").read_bytes() == _GITIGNORE
    except OSError:
        return False


@contextlib.contextmanager
def _folder_lock(folder: Path) -> Iterator[bool]:
    """An exclusive ``flock`` on the project folder itself, for as long as the context lasts; yields False
    when another process holds it.

    ``git clean -fdx`` or ``rm -rf .pixmake`` under a running build deletes the lock file in ``.pixmake/``:
    a second build then took a new one and paid for everything again. The folder holding the manifest
    stays. Where a folder cannot be locked (Windows, where an open file cannot be deleted anyway; some
    network file systems) it yields True, and the lock file alone decides.
    """
    held, fd = True, None
    try:
        import fcntl

        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_CLOEXEC", 0))
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        held = False
    except (ImportError, OSError):
        pass
    try:
        yield held
    finally:
        if fd is not None:
            os.close(fd)  # releases the lock


def _busy(state_dir: Path) -> ProjectBusyError:
    pid, other = _holder(state_dir) or ("unknown", "build")
    return ProjectBusyError(f"another pixmake {other} is running in this project (pid {pid}); wait for it or stop it")


@contextlib.contextmanager
def project_lock(state_dir: Path, command: str = "build") -> Iterator[None]:
    """Hold the project's lock for ``command`` (one word: build, prune, accept, gc); raises ProjectBusyError
    at once, naming the holder's command and pid, if another process holds it."""
    from filelock import FileLock, Timeout

    with _folder_lock(state_dir.parent) as free:
        if not free:
            raise _busy(state_dir)
        state_dir.mkdir(parents=True, exist_ok=True)
        make_state_dir(state_dir)
        holder = state_dir / _PID_FILE
        lock = FileLock(str(state_dir / "build.lock"), timeout=0)
        try:
            lock.acquire()
        except Timeout:
            raise _busy(state_dir) from None
        try:
            # Best effort: it only names the holder to a command refused meanwhile, and `gc`, which frees a
            # full disk, must start on one. Atomic: a refused command never reads it half written.
            with contextlib.suppress(OSError):
                atomic_write(holder, f"{os.getpid()} {command}\n".encode())
            yield
        finally:
            with contextlib.suppress(OSError):
                holder.unlink()
            lock.release()
