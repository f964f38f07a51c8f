"""Expand one ``targets:`` entry into its variable bindings: matrix axes × catalog rows.

PURE (a ``rows:`` catalog is read through the :data:`ReadFile` callable the shell injects). Sits
between the schema check and the build of targets in :func:`pixmake.manifest.parse_manifest`: each
:class:`Expansion` it returns becomes one target, its ``binding`` layered over ``vars:`` and its
``origin`` ("row skus.csv:12, colour=red") naming it in diagnostics. Limits are checked before
anything is expanded; problems go to the :class:`~pixmake.diagnostics.Collector`.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any, Final

from pixmake.catalog import Row, parse_catalog
from pixmake.diagnostics import Collector
from pixmake.errors import UnsafePathError
from pixmake.relpaths import leaves_root_message, long_name_message, normal_path, unprintable_message
from pixmake.schema import FieldPath, one_line
from pixmake.variables import text_value

__all__ = ["MAX_TARGETS", "Expansion", "NotAFileError", "ReadFile", "expansions"]

MAX_TARGETS: Final = 100_000
"""The most targets one ``targets:`` entry may expand to."""

ReadFile = Callable[[str], bytes]
"""Reads a project-relative file (a catalog); raises OSError (:class:`NotAFileError` for a folder, a FIFO,
a device), or UnsafePathError for a symlink escape."""


class NotAFileError(OSError):
    """What :data:`ReadFile` raises for a path that is there but is not a regular file."""


@dataclass(frozen=True, slots=True)
class Expansion:
    """One way to instantiate an entry: the variables it binds and where they came from ("" for a plain entry)."""

    binding: Mapping[str, str]
    origin: str


def _axis_value(axis: str, value: Any) -> dict[str, str]:
    """The variables one axis value binds: ``{axis: text}``, or for a mapping ``{axis.field: text, …}``."""
    if isinstance(value, Mapping):
        return {f"{axis}.{field}": text_value(item) for field, item in value.items()}
    return {axis: text_value(value)}


def _matrix(body: Mapping[str, Any]) -> list[Expansion]:
    axes = body.get("matrix") or {}
    combos = itertools.product(*([_axis_value(name, v) for v in values] for name, values in axes.items()))
    expansions = []
    for combo in combos:
        binding = {name: text for part in combo for name, text in part.items()}
        expansions.append(Expansion(binding, ", ".join(one_line(f"{n}={v}") for n, v in binding.items())))
    return expansions


def _rows(
    where: FieldPath,
    body: Mapping[str, Any],
    c: Collector,
    read_file: ReadFile | None,
    catalogs: dict[str, list[Row] | None],
) -> list[Row] | None:
    raw = body["rows"]
    path = (*where, "rows")
    unprintable = unprintable_message(raw)
    if unprintable is not None:
        c.add(path, unprintable)
        return None
    rel = normal_path(raw)
    if rel is None:
        c.add(path, leaves_root_message(raw), kind="unsafe-path")
        return None
    too_long = long_name_message(rel)
    if too_long is not None:
        c.add(path, too_long)
        return None
    if rel in catalogs:
        return catalogs[rel]
    catalogs[rel] = None
    if read_file is None:
        c.add(path, "this manifest was parsed without file access, so its catalog cannot be read")
        return None
    try:
        data = read_file(rel)
    except UnsafePathError:
        c.add(path, f"path {raw!r} leads outside the project root through a symlink", kind="unsafe-path")
        return None
    except FileNotFoundError:
        c.add(path, f"catalog file not found: {rel}")
        return None
    except (NotAFileError, IsADirectoryError):
        c.add(path, f"{rel} is not a file")  # as inputs says of a reference or a mask
        return None
    except OSError as error:
        c.add(path, f"cannot read catalog {rel}: {error.strerror or error}")
        return None
    rows, problems = parse_catalog(data, file=str(PurePosixPath(c.file).parent / rel))
    for problem in problems:
        c.diagnostic(problem)
    if not rows and not problems:
        c.add(path, f"catalog {rel} has no rows")
    catalogs[rel] = rows if not problems else None
    return catalogs[rel]


def expansions(
    where: FieldPath,
    body: Mapping[str, Any],
    c: Collector,
    read_file: ReadFile | None,
    catalogs: dict[str, list[Row] | None],
) -> list[Expansion]:
    """The expansions of the entry ``body`` at ``where``, in file order; [] when it cannot be expanded.

    ``catalogs`` maps each catalog path read so far to its rows (None if it failed), so a catalog
    shared by several entries is read and reported once; its keys become ``Manifest.catalogs``.
    """
    if "matrix" not in body and "rows" not in body:
        return [Expansion({}, "")]
    count = math.prod(len(values) for values in (body.get("matrix") or {}).values())
    if count > MAX_TARGETS:
        c.add((*where, "matrix"), f"matrix expands to {count} targets; at most {MAX_TARGETS} are allowed")
        return []
    matrix = _matrix(body) if "matrix" in body else [Expansion({}, "")]
    if "rows" not in body:
        return matrix
    rows = _rows(where, body, c, read_file, catalogs)
    if rows is None:
        return []
    if len(rows) * len(matrix) > MAX_TARGETS:
        c.add((*where, "rows"), f"rows × matrix make {len(rows) * len(matrix)} targets; at most {MAX_TARGETS}")
        return []
    catalog = normal_path(body["rows"])
    out: list[Expansion] = []
    for row in rows:
        for combo in matrix:
            origin = f"row {catalog}:{row.line}" + (f", {combo.origin}" if combo.origin else "")
            out.append(Expansion({**row.values, **combo.binding}, origin))
    return out
