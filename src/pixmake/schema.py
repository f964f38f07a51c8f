"""Validate a loaded manifest document against the bundled JSON Schema.

PURE. jsonschema errors become :class:`~pixmake.errors.Diagnostic` values that name the line, column
and dotted field path, with a "did you mean" hint for near-miss field names. The validator is
compiled once per process.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Iterator, Mapping
from functools import cache
from importlib import resources
from typing import Any

from pixmake.errors import Diagnostic

__all__ = ["field_path", "locate", "schema_text", "validate_document"]


def schema_text() -> str:
    """The bundled manifest schema, as JSON text."""
    return resources.files("pixmake").joinpath("pixmake.schema.json").read_text(encoding="utf-8")


@cache
def _validator() -> Any:
    from jsonschema import Draft202012Validator

    schema = json.loads(schema_text())
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


def field_path(path: tuple[str | int, ...] | list[str | int]) -> str:
    """Dotted field path as users write it: ``targets.hero.references[0]``."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def locate(doc: Any, path: tuple[str | int, ...] | list[str | int], *, key: bool = False) -> tuple[int, int]:
    """1-based (line, column) of the value at ``path`` (or of its key), from marks the loader recorded."""
    node = doc
    line, column = getattr(doc, "line", 1), getattr(doc, "column", 1)
    for index, part in enumerate(path):
        marks = getattr(node, "marks", None)
        if marks is None or part not in marks:
            break
        key_line, key_col, value_line, value_col = marks[part]
        last = index == len(path) - 1
        line, column = (key_line, key_col) if key and last else (value_line, value_col)
        try:
            node = node[part]
        except (KeyError, IndexError, TypeError):
            break
    return line, column


def _suggest(word: str, choices: Iterator[str] | list[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def _diagnose(doc: Mapping[str, Any], error: Any, file: str) -> Diagnostic:
    path = list(error.absolute_path)
    if error.validator == "additionalProperties" and isinstance(error.instance, Mapping):
        allowed = list(error.schema.get("properties", {}))
        extras = [k for k in error.instance if k not in allowed]
        if extras:
            name = str(extras[0])
            line, column = locate(doc, [*path, name], key=True)
            message = f"unknown field {name!r}{_suggest(name, allowed)}"
            return Diagnostic(file, line, column, field_path([*path, name]), message)
    if error.validator == "required":
        line, column = locate(doc, path, key=True)
        return Diagnostic(file, line, column, field_path(path), error.message.replace("property", "field"))
    if error.validator == "type":
        expected = error.validator_value
        found = type(error.instance).__name__
        hint = (
            " (write it without quotes)"
            if isinstance(error.instance, str) and expected in {"integer", "number"}
            else ""
        )
        line, column = locate(doc, path)
        return Diagnostic(
            file,
            line,
            column,
            field_path(path),
            f"expected {expected}, found {found} {error.instance!r}{hint}",
        )
    line, column = locate(doc, path)
    return Diagnostic(file, line, column, field_path(path), error.message)


def validate_document(doc: Any, *, file: str) -> list[Diagnostic]:
    """Every schema violation in ``doc``, one diagnostic each (empty list when valid)."""
    return [_diagnose(doc, error, file) for error in _validator().iter_errors(doc)]
