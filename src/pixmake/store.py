"""Files on disk: atomic writes, the project-root guard, the object cache and the project lock.

Shell. Every write pixmake makes goes through :func:`atomic_write` (temp file in the same
directory, fsync, ``os.replace``), so a crash leaves the old bytes or the new ones, never half.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Final

from pixmake.errors import ProjectBusyError, UnsafePathError

__all__ = ["STATE_DIR", "ObjectCache", "atomic_write", "project_lock", "safe_path", "sha256_bytes"]

STATE_DIR: Final = ".pixmake"
_UMASK: Final = os.umask(0o022)
os.umask(_UMASK)  # read once at import (single-threaded then); mkstemp's 0600 is widened to what umask allows


def sha256_bytes(data: bytes) -> str:
    """Hex sha256 of bytes."""
    return hashlib.sha256(data).hexdigest()


def _fsync_dir(directory: Path) -> None:
    with contextlib.suppress(OSError):  # not every file system lets a directory be opened and synced
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_write(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` atomically and durably, creating parent directories."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), 0o666 & ~_UMASK)
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def safe_path(root: Path, relative: str, *, field: str) -> Path:
    """``root / relative`` after following symlinks; raises UnsafePathError when it leaves ``root``."""
    base = root.resolve()
    candidate = (base / relative).resolve()
    if candidate != base and base not in candidate.parents:
        raise UnsafePathError(field, relative)
    return candidate


class ObjectCache:
    """Content-addressed store of every image pixmake was paid for: ``objects/ab/abcdef…``."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def path(self, sha256: str) -> Path:
        """Where the object with this hash lives (whether or not it exists)."""
        return self.directory / sha256[:2] / sha256

    def has(self, sha256: str) -> bool:
        """Whether the object is stored."""
        return self.path(sha256).is_file()

    def put(self, data: bytes) -> str:
        """Store bytes (idempotent); returns their sha256."""
        digest = sha256_bytes(data)
        target = self.path(digest)
        if not target.is_file():
            atomic_write(target, data)
        return digest

    def get(self, sha256: str) -> bytes:
        """The stored bytes, verified against their hash; raises FileNotFoundError or ValueError."""
        data = self.path(sha256).read_bytes()
        if sha256_bytes(data) != sha256:
            raise ValueError(f"object {sha256[:12]} is corrupt")
        return data


@contextlib.contextmanager
def project_lock(state_dir: Path) -> Iterator[None]:
    """Hold the project's build lock; raises ProjectBusyError at once if another build holds it."""
    from filelock import FileLock, Timeout

    state_dir.mkdir(parents=True, exist_ok=True)
    holder = state_dir / "build.pid"
    lock = FileLock(str(state_dir / "build.lock"), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        pid = holder.read_text().strip() if holder.exists() else "unknown"
        raise ProjectBusyError(
            f"another pixmake build is running in this project (pid {pid}); wait for it or stop it"
        ) from None
    try:
        holder.write_text(f"{os.getpid()}\n")
        yield
    finally:
        with contextlib.suppress(OSError):
            holder.unlink()
        lock.release()
