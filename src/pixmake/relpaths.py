"""Lexical check of the project paths a manifest names: normal POSIX form, or refused for leaving the root.

PURE: string rules only, no disk. Used by :func:`pixmake.manifest.parse_manifest` for ``references``,
``mask`` and ``out``, and by :mod:`pixmake.expand` for ``rows:``. What the disk adds (symlinks that
lead out) is checked later by :func:`pixmake.store.safe_path`.
"""

from __future__ import annotations

import functools
import re

__all__ = ["leaves_root_message", "normal_path"]


@functools.lru_cache(maxsize=4096)
def normal_path(raw: str) -> str | None:
    """The path in normal POSIX form, or None when it is absolute or climbs out of the project."""
    if raw.startswith(("/", "\\", "~")) or re.match(r"^[A-Za-z]:", raw) or "\\" in raw or "\0" in raw:
        return None
    parts: list[str] = []
    for part in raw.split("/"):
        if part == "..":
            if not parts:
                return None
            parts.pop()
        elif part not in {".", ""}:
            parts.append(part)
    return "/".join(parts) if parts else None


def leaves_root_message(raw: str) -> str:
    """The ``unsafe-path`` diagnostic text for a path :func:`normal_path` refused."""
    return f"path {raw!r} leaves the project root (use a relative path inside the project)"
