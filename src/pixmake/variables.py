"""The manifest's ``${name}`` templates: substitute variables into text, and give a value its text form.

PURE. Used by :func:`pixmake.manifest.parse_manifest` for ``vars:`` and target fields, by
:mod:`pixmake.expand` for matrix values, and by :mod:`pixmake.catalog` for JSON Lines values, so
a number or a boolean reads the same wherever a variable comes from.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Final

from pixmake.schema import suggest

__all__ = ["interpolate", "text_value"]

_VAR: Final = re.compile(r"\$\$\{|\$\{([^}]*)\}|\$\{")
_VAR_NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)?")  # ${axis.field}


def interpolate(text: str, variables: Mapping[str, str], *, literal: bool = True) -> tuple[str, list[str]]:
    """Replace ``${name}`` by its value, ``$${`` by a literal ``${``; returns the text and any problems.

    A name may have one dot (``${format.size}``): a field of a matrix value that is a mapping, which the
    expansion binds flat, under that dotted name. ``literal``: an undefined variable's problem says how to
    write the text ``${…}`` itself (not where the text cannot be a value: a size, a model)."""
    if "${" not in text:
        return text, []
    problems: list[str] = []

    def substitute(match: re.Match[str]) -> str:
        token = match.group(0)
        if token == "$${":
            return "${"
        name = match.group(1)
        if name is None:
            problems.append("unclosed '${' (write '$${' for a literal '${')")
            return token
        if not _VAR_NAME.fullmatch(name):
            problems.append(f"bad variable name {name!r} in '${{{name}}}'")
            return token
        if name not in variables:
            fields = sorted(f"${{{v}}}" for v in variables if v.startswith(f"{name}."))
            if fields:  # a matrix axis whose values are mappings
                problems.append(f"{name!r} stands for several values: write one of {', '.join(fields)}")
                return token
            known = f"defined: {', '.join(sorted(variables))}" if variables else "no variables are defined"
            near = suggest(name, variables)
            as_is = "" if near or not literal else f"; $${{{name}}} is the text ${{{name}}}"  # meant as it is?
            problems.append(f"undefined variable {name!r}{near} ({known}{as_is})")
            return token
        return variables[name]

    return _VAR.sub(substitute, text), problems


def text_value(value: Any) -> str:
    """A variable's value as text: booleans as ``true``/``false``, anything else as ``str`` writes it."""
    return ("true" if value else "false") if isinstance(value, bool) else str(value)
