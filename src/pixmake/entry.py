"""The console entry point, with a fast lane for a no-op ``pixmake plan [--check]``.

Shell. ``pixmake [-C DIR] [-f FILE] plan [--check]`` is what CI runs on every commit; when the
no-op memo (:mod:`pixmake.memo`) proves nothing changed, the answer is one line and exit 0. Loading
click alone costs more than that answer at 10,000 targets, so :func:`main` tries this lane first and
falls back to the full command line (:func:`pixmake.cli.main`) for any other arguments, any memo
miss and any error, which then reports it in the usual way. Output and exit code are exactly those
of the full path.
"""

from __future__ import annotations

import os
import sys
from typing import NoReturn

__all__ = ["PIPE_CLOSED", "answer_noop_plan", "main", "silence_stdout"]

PIPE_CLOSED = 141
"""Exit code when the reader of stdout left (128 + SIGPIPE, as a shell reports it; ``cli.ExitCode.PIPE_CLOSED``)."""


def silence_stdout() -> None:
    """Point stdout's file descriptor at the null device: its reader left (``pixmake plan | head``), and
    nothing written or flushed later, at exit included, may fail on the broken pipe."""
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def _parse(argv: list[str]) -> tuple[str | None, str | None, bool] | None:
    """``(-C dir, -f manifest, --check)`` when argv is exactly a plain plan command, else None."""
    directory = manifest = None
    rest = list(argv)
    while rest and rest[0] in ("-C", "-f") and len(rest) >= 2:
        option, value = rest.pop(0), rest.pop(0)
        if option == "-C":
            directory = value
        else:
            manifest = value
    if rest == ["plan"]:
        return directory, manifest, False
    if rest == ["plan", "--check"]:
        return directory, manifest, True
    return None


def _unchanged_summary(count: int) -> str:
    """``Plan.summary()`` of a plan whose every action is UNCHANGED (tests/test_entry.py keeps them equal)."""
    return (
        f"Plan: {count} unchanged; 0 images to generate\n" if count else "Plan: nothing to do; 0 images to generate\n"
    )


def answer_noop_plan(argv: list[str]) -> str | None:
    """The full path's output for ``argv`` when it is a plain plan and the memo holds; None otherwise.

    Imports only :mod:`pixmake.memo` (not :mod:`pixmake.api`, whose dataclasses and pathlib imports
    cost about as much as the answer itself).
    """
    parsed = _parse(argv)
    if parsed is None:
        return None
    from pathlib import Path

    from pixmake.memo import check_memo, memo_file

    directory, manifest, _ = parsed
    try:
        # The manifest's location exactly as api.open_project finds it; a mismatch only means a memo miss.
        path = ((Path(directory) if directory is not None else Path.cwd()) / (manifest or "pixmake.yaml")).absolute()
        remembered = check_memo(memo_file(path.parent), root=path.parent, manifest=path)
    except (OSError, ValueError):
        return None  # the full path reports it
    if remembered is None or remembered.warned:
        return None  # the full path prints the warnings (from the memo) before the plan
    return _unchanged_summary(len(remembered.targets))


def main(argv: list[str] | None = None) -> NoReturn:
    """Console entry point: the fast lane when it applies, else the full command line."""
    args = sys.argv[1:] if argv is None else argv
    answer = answer_noop_plan(args)
    if answer is not None:
        try:
            sys.stdout.write(answer)
            sys.stdout.flush()
        except BrokenPipeError:  # `pixmake plan | true`: as the full command line answers it
            silence_stdout()
            sys.exit(PIPE_CLOSED)
        except OSError as error:  # `pixmake plan > /dev/full`: one line, as the full command line says it
            silence_stdout()
            sys.stderr.write(f"pixmake: error: {error.strerror or error}\n")
            sys.exit(1)
        sys.exit(0)  # a no-op plan, with or without --check
    from pixmake.cli import main as full_main

    full_main(args)
