"""Parse a ``rows:`` catalog (CSV with a header row, or JSON Lines) into rows of text variables.

PURE: bytes in, rows and diagnostics out; the caller reads the file. Each row remembers its line,
so a problem in row 4,711 points at ``skus.csv:4712``. Values become text as ``vars`` do: numbers
as written, booleans as ``true``/``false``; a line end inside a CSV cell is ``\n`` however the file
ends its lines (as in YAML), so a checkout with CRLF line ends makes the same prompts.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from pixmake.errors import Diagnostic
from pixmake.variables import text_value
from pixmake.yamlmarks import unmerged

__all__ = ["MAX_ROWS", "Row", "parse_catalog"]

MAX_ROWS: Final = 100_000
_NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# JSON Lines end at \n (or \r\n, \r); not at the other ends str.splitlines knows (U+2028, U+0085…), which
# JSON allows as they are inside a string.
_LINE_END: Final = re.compile(r"\r\n?|\n")


@dataclass(frozen=True, slots=True)
class Row:
    """One catalog row: its 1-based line in the file and its column values as text."""

    line: int
    values: Mapping[str, str]


def _text(value: Any) -> str | None:
    if isinstance(value, str | int) or (isinstance(value, float) and math.isfinite(value)):
        return text_value(value)  # bool is an int: "true" / "false", as in vars
    return None


def _csv(text: str, file: str) -> tuple[list[Row], list[Diagnostic]]:
    problems: list[Diagnostic] = []
    rows: list[Row] = []
    if "\r" in text:
        # A quoted cell keeps its line ends as the file has them, and git's core.autocrlf gives a Windows
        # checkout \r\n where Linux has \n: the prompt, so the key, would differ between them. Line ends
        # become \n, as YAML makes them in a block scalar; the csv module counts lines as before.
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        header = next(reader, None)
        if header is None:
            return [], [Diagnostic(file, 1, 1, "", "catalog is empty; it needs a header row of column names")]
        names = [h.strip() for h in header]
        for separator, what in ((";", "semicolons (as Excel writes in some languages)"), ("\t", "tabs")):
            if len(names) == 1 and separator in names[0]:
                message = f"the header is one column holding {what}: pixmake reads comma-separated CSV; save it so"
                return [], [Diagnostic(file, 1, 1, "", message)]
        for column, name in enumerate(names, start=1):
            if not _NAME.fullmatch(name):
                problems.append(
                    Diagnostic(file, 1, column, "", f"column {column} is named {name!r}; use letters, digits and _")
                )
            elif names.index(name) != column - 1:
                problems.append(Diagnostic(file, 1, column, "", f"column name {name!r} appears twice"))
        start = reader.line_num + 1
        for record in reader:
            if not any(cell.strip() for cell in record):
                start = reader.line_num + 1
                continue
            if len(record) != len(names):
                problems.append(
                    Diagnostic(
                        file,
                        start,
                        1,
                        "",
                        f"row has {len(record)} column{'s' * (len(record) != 1)}; the header has {len(names)}",
                    )
                )
            else:
                rows.append(Row(start, dict(zip(names, record, strict=True))))
            if len(rows) > MAX_ROWS:
                return rows, [Diagnostic(file, start, 1, "", f"catalog has more than {MAX_ROWS} rows")]
            start = reader.line_num + 1
    except csv.Error as error:
        problems.append(Diagnostic(file, reader.line_num or 1, 1, "", f"CSV syntax error: {error}"))
    return rows, problems


def _jsonl(text: str, file: str) -> tuple[list[Row], list[Diagnostic]]:
    problems: list[Diagnostic] = []
    rows: list[Row] = []
    for number, line in enumerate(_LINE_END.split(text), start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except (ValueError, RecursionError) as error:
            column = getattr(error, "colno", 1)
            problems.append(Diagnostic(file, number, column, "", f"not a JSON object: {getattr(error, 'msg', error)}"))
            continue
        if not isinstance(item, dict):
            problems.append(Diagnostic(file, number, 1, "", "each line must be a JSON object of column values"))
            continue
        values: dict[str, str] = {}
        for key, value in item.items():
            as_text = _text(value)
            if not _NAME.fullmatch(key):
                problems.append(Diagnostic(file, number, 1, "", f"key {key!r}: use letters, digits and _"))
            elif as_text is None:
                problems.append(Diagnostic(file, number, 1, "", f"key {key!r}: expected text, a number or a boolean"))
            else:
                values[key] = as_text
        rows.append(Row(number, values))
        if len(rows) > MAX_ROWS:
            return rows, [Diagnostic(file, number, 1, "", f"catalog has more than {MAX_ROWS} rows")]
    return rows, problems


def parse_catalog(data: bytes, *, file: str) -> tuple[list[Row], list[Diagnostic]]:
    """Rows of a ``.csv`` or ``.jsonl`` catalog (chosen by ``file``'s suffix) and any problems found."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        return [], [Diagnostic(file, line, 1, "", "catalog is not valid UTF-8 text")]
    if "\0" in text:
        line = text[: text.index("\0")].count("\n") + 1
        return [], [Diagnostic(file, line, 1, "", "catalog contains a NUL byte; is it a binary file?")]
    if (conflict := unmerged(text, "catalog")) is not None:  # not one "row has 1 column" per marker line
        return [], [Diagnostic(file, conflict[0], 1, "", conflict[1])]
    if file.endswith(".jsonl"):
        return _jsonl(text, file)
    return _csv(text, file)
