"""Local references and masks go up once per content hash; their URLs are remembered in ``.pixmake/``.

Shell. ``.pixmake/uploads.json`` maps, per API base URL, a file's sha256 to the URL the provider
gave it and when (Unix seconds)::

    {"version": 1, "uploads": {"https://toapis.com": {"<sha256>": {"url": "https://…", "at": 1760000000.0}}}}

An entry older than ``ttl`` is treated as gone (the provider does not document how long uploads
live), and the executor forgets an entry when the provider answers a submit using it with a 4xx, so
that file is uploaded again. One over an hour old is fetched once per build before a submit names it:
a provider that skipped a dead reference instead of refusing the submit would charge for an image made
without it. Within one build, :class:`Uploader` makes concurrent targets that share a
file wait for one upload instead of starting their own: 10,000 targets with one brand reference
upload it once.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Final

import anyio

from pixmake.errors import InputChangedError, PixmakeError
from pixmake.settings import display_url
from pixmake.store import atomic_write, read_json, sha256_bytes

__all__ = ["UPLOAD_TTL_SECONDS", "UploadCache", "Uploader"]

UPLOAD_TTL_SECONDS: Final = 12 * 3600.0
_DOUBTFUL_AFTER: Final = 3600.0  # seconds: an uploaded URL this old may be what failed a task
_VERSION: Final = 1


class UploadCache:
    """The on-disk memory of uploaded files for one base URL; load with :meth:`load`, persist with :meth:`save`.

    Keyed by the base URL without credentials or query (:func:`~pixmake.settings.display_url`): they
    would land on disk. Entries an older pixmake keyed with them are dropped on load.
    """

    def __init__(
        self,
        path: Path,
        base_url: str,
        *,
        ttl: float = UPLOAD_TTL_SECONDS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = path
        self.base_url = display_url(base_url)
        self.ttl = ttl
        self._clock = clock
        self._all: dict[str, dict[str, dict[str, Any]]] = {}
        self._dirty = False

    @classmethod
    def load(
        cls, path: Path, base_url: str, *, ttl: float = UPLOAD_TTL_SECONDS, clock: Callable[[], float] = time.time
    ) -> UploadCache:
        """Read the cache file; a missing, corrupt or older-format file is an empty cache (it is only a cache)."""
        cache = cls(path, base_url, ttl=ttl, clock=clock)
        raw = read_json(path)
        if isinstance(raw, dict) and raw.get("version") == _VERSION and isinstance(raw.get("uploads"), dict):
            uploads = {str(base): items for base, items in raw["uploads"].items() if isinstance(items, dict)}
            cache._all = {
                base: {str(sha): item for sha, item in items.items() if _valid(item)}
                for base, items in uploads.items()
                if display_url(base) == base
            }
            cache._dirty = len(cache._all) < len(uploads)  # rewrite it without them
        return cache

    def _mine(self) -> dict[str, dict[str, Any]]:
        return self._all.setdefault(self.base_url, {})

    def get(self, sha256: str) -> str | None:
        """The URL of a file uploaded less than ``ttl`` ago, else None."""
        item = self._all.get(self.base_url, {}).get(sha256)
        if item is None or not 0 <= self._clock() - float(item["at"]) < self.ttl:  # a clock set back: unknown age
            return None
        return str(item["url"])

    def age(self, sha256: str) -> float | None:
        """Seconds since the file was uploaded, or None when no URL is known for it."""
        item = self._all.get(self.base_url, {}).get(sha256)
        return None if item is None else self._clock() - float(item["at"])

    def put(self, sha256: str, url: str) -> None:
        """Remember a fresh upload."""
        self._mine()[sha256] = {"url": url, "at": self._clock()}
        self._dirty = True

    def forget(self, sha256: str) -> None:
        """Drop an entry the provider no longer accepts."""
        if self._mine().pop(sha256, None) is not None:
            self._dirty = True

    def save(self) -> None:
        """Write the file atomically if anything changed; expired entries are pruned."""
        if not self._dirty:
            return
        now = self._clock()
        for items in self._all.values():
            for sha in [s for s, item in items.items() if now - float(item["at"]) >= self.ttl]:
                del items[sha]
        uploads = {base: dict(sorted(items.items())) for base, items in sorted(self._all.items()) if items}
        document = {"version": _VERSION, "uploads": uploads}
        atomic_write(self.path, json.dumps(document, indent=1).encode())
        self._dirty = False


def _valid(item: object) -> bool:
    return isinstance(item, dict) and isinstance(item.get("url"), str) and isinstance(item.get("at"), int | float)


class Uploader:
    """One upload per content hash per build, shared by every target that needs the file.

    ``upload(data, filename)`` performs the (retried) provider call; ``read(path)`` returns a file's
    bytes and runs in a worker thread; ``fetch(url)`` returns what a URL serves (raising when it serves
    nothing), to check a remembered URL over an hour old. ``uploads`` counts provider uploads by content hash.
    """

    def __init__(
        self,
        cache: UploadCache,
        upload: Callable[[bytes, str], Awaitable[str]],
        read: Callable[[str], bytes],
        fetch: Callable[[str], Awaitable[bytes]] | None = None,
    ) -> None:
        self.cache = cache
        self._upload = upload
        self._read = read
        self._fetch = fetch
        self._locks: dict[str, anyio.Lock] = {}
        self._checked: set[str] = set()  # remembered URLs that served their file in this build
        self.uploads: Counter[str] = Counter()

    async def url(self, path: str, sha256: str) -> str:
        """The provider URL for a local file, uploading it only if no fresh URL is known.

        Raises InputChangedError when the file no longer holds the bytes planned (``sha256``) or is gone.
        """
        lock = self._locks.setdefault(sha256, anyio.Lock())
        async with lock:
            known = self.cache.get(sha256)
            if known is not None and await self._serves(known, sha256):
                return known
            try:
                data, whole = await anyio.to_thread.run_sync(self._read_whole, path)
            except (FileNotFoundError, NotADirectoryError):
                raise InputChangedError(f"{path} went away during the build; nothing was submitted for it") from None
            except OSError as error:  # this input's problem (its permissions, say), not the whole build's
                why = error.strerror or str(error)
                raise InputChangedError(f"cannot read {path} ({why}); nothing was submitted for it") from None
            if sha256_bytes(data) != sha256:  # else its URL would be cached, and its target locked, as other bytes
                raise InputChangedError(
                    f"{path} changed during the build; nothing was submitted for it: the next build uses the new file"
                )
            if not whole:  # the provider may take it all the same, and charge for what it makes of it
                raise InputChangedError(
                    f"{path} is not a whole image (cut short? damaged?); nothing was submitted for it"
                )
            url = await self._upload(data, Path(path).name)
            self.uploads[sha256] += 1
            self.cache.put(sha256, url)
            return url

    def _read_whole(self, path: str) -> tuple[bytes, bool]:
        """Worker thread: a file's bytes, and whether they decode as a whole image (read once per upload)."""
        from pixmake.decode import is_whole_image

        data = self._read(path)
        return data, is_whole_image(data)

    async def _serves(self, url: str, sha256: str) -> bool:
        """Whether a remembered URL still serves the file: taken on trust while under an hour old (and once it
        has served it in this build); else fetched, and forgotten unless it returns the same bytes."""
        age = self.cache.age(sha256)
        if self._fetch is None or sha256 in self._checked or (age is not None and 0 <= age < _DOUBTFUL_AFTER):
            return True
        try:
            served = await self._fetch(url)
        except PixmakeError:  # refused, gone, unreachable: whatever the reason, uploading again costs nothing
            served = b""
        if sha256_bytes(served) != sha256:
            self.cache.forget(sha256)
            return False
        self._checked.add(sha256)
        return True

    def forget(self, sha256: str) -> None:
        """Upload this file again next time it is needed (the provider refused its URL)."""
        self.cache.forget(sha256)

    def doubt(self, sha256: str) -> None:
        """A task that used this file failed: upload it again next time if its URL is over an hour old.

        A URL's lifetime is undocumented, and a provider may report an expired one only by failing the
        task later (§7 q5), never with the 400 that ``forget`` follows. A younger URL is surely still
        good: a task failing for other reasons (content policy) does not upload shared files again.
        """
        age = self.cache.age(sha256)
        if age is not None and not 0 <= age < _DOUBTFUL_AFTER:  # an upload "from the future": the clock was set back
            self.cache.forget(sha256)
