"""The digest of what each input file shows (:func:`~pixmake.decode.pixel_digest`), by the sha256 of its bytes,
kept in ``.pixmake/pixels.json``.

Shell. Decoding a reference takes tens of milliseconds (a 1024² PNG) and more for larger ones; a plan asks
for the digest of each input whose bytes differ from those its lock entry records with a digest, a build
for each input of what it pays for, ``accept`` for each input of what it records. Kept by content, a file is
decoded once, not on every plan until the next build. A file that cannot be read, or changed since it was
hashed, gets no digest and none is kept. A cache that cannot be read is empty, and one that cannot be
written is not: it only saves work.
"""

from __future__ import annotations

import contextlib
import json
import re
import threading
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Final

from pixmake.decode import pixel_digest
from pixmake.store import atomic_write, make_state_dir, read_json, sha256_bytes

__all__ = ["PixelDigests"]

_VERSION: Final = 1
_HEX: Final = re.compile(r"[0-9a-f]{64}")
_KEPT: Final = 50_000  # digests kept, the last asked for: 6 MB of JSON at most


class PixelDigests:
    """The digests of the files' contents asked for so far, read from and saved to ``path`` (None: not kept)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._known: dict[str, str | None] | None = None  # sha256 → digest (None: the bytes have none)
        self._added = False
        self._lock = threading.Lock()  # a build asks from several worker threads

    def _load(self) -> dict[str, str | None]:
        with self._lock:
            if self._known is None:
                self._known = self._read()
            return self._known

    def _read(self) -> dict[str, str | None]:
        if self.path is None:
            return {}
        raw = read_json(self.path)
        digests = raw.get("digests") if isinstance(raw, dict) and raw.get("version") == _VERSION else None
        if not isinstance(digests, dict):
            return {}
        return {  # a sha256 and a digest are 64 hex digits each: anything else is damage, kept out
            sha: found
            for sha, found in digests.items()
            if _HEX.fullmatch(sha) and (found is None or (isinstance(found, str) and _HEX.fullmatch(found)))
        }

    def known(self) -> Mapping[str, str | None]:
        """The digests known so far, by sha256 (read or kept): a view, not a copy."""
        return MappingProxyType(self._load())

    def of(self, file: Path | str, sha256: str) -> str | None:
        """The digest of the file's contents, while they are the bytes ``sha256`` names (None else, or when
        they have none: not an image, say)."""
        known = self._load()
        if sha256 in known:
            return known[sha256]
        try:
            with open(file, "rb") as handle:
                data = handle.read()
        except OSError:
            return None
        if sha256_bytes(data) != sha256:  # changed since it was hashed: nothing to keep
            return None
        digest = pixel_digest(data)
        with self._lock:
            known[sha256] = digest
            self._added = True
        return digest

    def save(self) -> None:
        """Write the digests back, when any was added (the last :data:`_KEPT` of them)."""
        if self.path is None or not self._added:
            return
        with self._lock:
            kept = dict(list(self._load_unlocked().items())[-_KEPT:])
            self._added = False
        document = json.dumps({"version": _VERSION, "digests": kept}, separators=(",", ":")).encode()
        with contextlib.suppress(OSError):
            make_state_dir(self.path.parent)  # with its .gitignore: a fresh clone's plan may write it first
            atomic_write(self.path, document, durable=False)

    def _load_unlocked(self) -> dict[str, str | None]:
        return self._known if self._known is not None else {}
