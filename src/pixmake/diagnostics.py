"""Collect the problems found in one manifest and hand them back as located errors and warnings.

PURE. Every stage after the schema check of :func:`pixmake.manifest.parse_manifest` (expansion,
target fields, model rules, unique names and outputs) reports here instead of raising, so that all
problems are shown at once. A problem repeated across the expansions of one entry (the same message
at the same field for 300 catalog rows) becomes one diagnostic naming the first origin and how many
more. Each is located in the document when first reported, from the marks of :mod:`pixmake.yamlmarks`,
so a caller may drop the parts of the document it is done with.
"""

from __future__ import annotations

from typing import Any

from pixmake.errors import Diagnostic
from pixmake.schema import FieldPath, field_path, locate

__all__ = ["Collector"]


class Collector:
    """Gathers diagnostics for one manifest; one problem repeated across expansions is reported once."""

    def __init__(self, doc: Any, file: str) -> None:
        self.doc = doc
        self.file = file
        self.plain: list[Diagnostic] = []
        self.grouped: dict[tuple[FieldPath, bool, str, str, str], tuple[tuple[int, int], list[str]]] = {}

    def add(
        self,
        path: FieldPath,
        message: str,
        *,
        key: bool = False,
        origin: str = "",
        kind: str = "manifest",
        severity: str = "error",
    ) -> None:
        """Record a problem at ``path`` (its key when ``key``), made by the expansion ``origin``."""
        group = (path, key, message, kind, severity)
        found = self.grouped.get(group)
        if found is None:
            found = self.grouped[group] = (locate(self.doc, path, key=key), [])
        found[1].append(origin)

    def diagnostic(self, diagnostic: Diagnostic) -> None:
        """Record a diagnostic that is already located (a catalog's, the schema's, a duplicate's)."""
        self.plain.append(diagnostic)

    def result(self) -> tuple[list[Diagnostic], list[Diagnostic]]:
        """(errors, warnings)."""
        out = list(self.plain)
        for (path, _, message, kind, severity), ((line, column), origins) in self.grouped.items():
            named = [o for o in origins if o]
            if named:
                more = f" and {len(named) - 1} more" if len(named) > 1 else ""
                message = f"{message} (in {named[0]}{more})"
            out.append(Diagnostic(self.file, line, column, field_path(path), message, severity, kind))
        return [d for d in out if d.severity == "error"], [d for d in out if d.severity != "error"]
