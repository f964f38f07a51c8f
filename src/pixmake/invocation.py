"""The commands pixmake's advice prints, written to run as pasted where the user ran pixmake.

PURE but for one context variable, set by the command line for one invocation. With ``-C brand`` or
``-f sprites.yaml``, a bare ``pixmake accept logo`` pasted from a message would run in another folder or
on another manifest (``pixmake build --restore`` on the default manifest pays for its targets), and a
bare ``git checkout -- pixmake.lock`` would name another lock. Paths inside messages stay relative to
the project, as if pixmake had been started there (what ``-C`` means).
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

__all__ = ["git", "invoked", "pixmake"]


_PREFIXES: ContextVar[tuple[str, str]] = ContextVar("pixmake_invocation", default=("pixmake", "git"))
"""What a printed ``pixmake`` and ``git`` command starts with."""


def pixmake(*words: str) -> str:
    """``pixmake WORDS…`` (each quoted for a shell), with the ``-C`` and ``-f`` this invocation was given."""
    return f"{_PREFIXES.get()[0]} {shlex.join(words)}"


def git(*words: str) -> str:
    """``git WORDS…`` (each quoted for a shell), with a ``-C`` to the project's folder when it is not the
    current one: paths in ``WORDS`` are the project's."""
    return f"{_PREFIXES.get()[1]} {shlex.join(words)}"


@contextmanager
def invoked(directory: str | None, manifest: str | None) -> Iterator[None]:
    """Within: advice names ``-C directory`` and ``-f manifest`` as the user gave them."""
    options = [f"-C {shlex.quote(directory)}"] if directory else []
    if manifest:
        options.append(f"-f {shlex.quote(manifest)}")
    folder = os.path.normpath(os.path.join(directory or ".", os.path.dirname(manifest or "")))
    git = "git" if folder == "." else f"git -C {shlex.quote(folder)}"
    token = _PREFIXES.set((" ".join(["pixmake", *options]), git))
    try:
        yield
    finally:
        _PREFIXES.reset(token)
