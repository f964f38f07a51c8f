"""Lexical check of the project paths a manifest names: normal POSIX form, or refused for leaving the root.

PURE: string rules only, no disk. Used by :func:`pixmake.manifest.parse_manifest` for ``references``,
``mask`` and ``out``, and by :mod:`pixmake.expand` for ``rows:``. What the disk adds (symlinks that
lead out) is checked later by :func:`pixmake.store.safe_path`. Two more rules hold for every path, so
that what validates can be shown and written: no control character, line separator or bidi override
(:data:`_UNSAFE`: no terminal escape or line break reaches a plan line), and no name in it longer than a
file system takes (:data:`NAME_MAX`).
"""

from __future__ import annotations

import functools
import re
import unicodedata
from typing import Final

__all__ = [
    "NAME_MAX",
    "PATH_MAX",
    "has_unsafe_characters",
    "leaves_root_message",
    "long_name_message",
    "normal_path",
    "unprintable_message",
    "windows_name_message",
]

NAME_MAX: Final = 255
"""The most bytes (in UTF-8) one name in a path may have: ext4, XFS, btrfs and APFS take 255 bytes; NTFS
takes 255 UTF-16 units, which are never more than a name's UTF-8 bytes."""
PATH_MAX: Final = 4096
"""The most bytes (in UTF-8) a project path may have: Linux takes 4,096 in a whole path (macOS 1,024: a
project path that works on Linux is not refused for it). Longer, it failed at write time, after the plan,
with the path in full as the message."""

_SHOWN_NAME: Final = 40  # characters of an overlong name a message shows


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
    if not raw:
        return "path is empty (an empty catalog cell, or a variable with no value?)"
    if not raw.startswith("/") and all(part in ("", ".") for part in raw.split("/")):  # ".", "./"
        return f"path {raw!r} names the project folder, not a file"
    if "\\" in raw and not raw.startswith(("/", "\\", "~")) and not re.match(r"^[A-Za-z]:", raw):
        return f"path {raw!r} has a backslash: separate folders with / (on every system)"
    return f"path {raw!r} leaves the project root (use a relative path inside the project)"


_NOT_ON_WINDOWS: Final = re.compile(
    r'(?P<char>[<>:"|?*])|(?P<end>[. ])(?:/|$)'
    r"|(?:^|/)(?P<device>(?:con|prn|aux|nul|com[1-9¹²³]|lpt[1-9¹²³]))(?:\.[^/]*)?(?:/|$)",
    re.IGNORECASE,
)


def windows_name_message(path: str) -> str | None:
    """Why Windows cannot hold ``path`` (a name with ``<>:"|?*``, ending in a dot or a space, or a device
    name such as ``con`` or ``aux.png``), for git for Windows refuses to check it out; or None."""
    found = _NOT_ON_WINDOWS.search(path)
    if found is None:
        return None
    if found["char"]:
        why = f"{found['char']!r} is not allowed in a file name there"
    elif found["end"]:
        why = "a name there cannot end in a dot or a space"
    else:
        why = f"{found['device']!r} is a device name there"
    return f"cannot be written on Windows ({why}), nor checked out there by git"


_UNSAFE: Final = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
"""What no path may hold: control characters (escape sequences a terminal runs, line breaks that fake a
line), line and paragraph separators, and the bidi embeddings, overrides and isolates that make a name
read backwards. Not the invisible characters real file names have: a no-break space (U+202F in a
macOS screenshot's name), a zero-width joiner (emoji, Persian)."""


def unprintable_message(raw: str) -> str | None:
    """Why ``raw`` may not be a path (it holds a character of :data:`_UNSAFE`), or None."""
    found = _UNSAFE.search(raw)
    if found is None:
        return None
    char = found.group()
    name = unicodedata.name(char, "a control character")
    return f"expected a path without control characters, found U+{ord(char):04X} ({name}) in {raw!r}"


def has_unsafe_characters(path: str) -> bool:
    """Whether ``path`` holds a character no manifest path may (see :data:`_UNSAFE`)."""
    return _UNSAFE.search(path) is not None


def long_name_message(path: str, *, image: int = 0) -> str | None:
    """Why ``path`` cannot be written (one of its names is longer than :data:`NAME_MAX` bytes), or None.

    ``image`` > 0 says the path is the name an image of a target with ``n`` > 1 is written to.
    """
    if len(path) <= NAME_MAX // 4:  # no name this short can have more bytes: fast for every usual path
        return None
    for part in path.split("/"):
        size = len(part.encode("utf-8", "surrogatepass")) if len(part) > NAME_MAX // 4 else 0
        if size > NAME_MAX:
            shown = part if len(part) <= _SHOWN_NAME else part[: _SHOWN_NAME - 10] + "…" + part[-9:]
            which = f"the name of image {image}, {shown!r}," if image else f"the name {shown!r}"
            return f"{which} is {size} bytes in UTF-8; file systems take at most {NAME_MAX} (shorten it)"
    size = len(path.encode("utf-8", "surrogatepass")) if len(path) > PATH_MAX // 4 else 0
    if size > PATH_MAX:
        which = f"the path of image {image}" if image else "the path"
        return f"{which} is {size} bytes in UTF-8; file systems take at most {PATH_MAX} (shorten it)"
    return None
