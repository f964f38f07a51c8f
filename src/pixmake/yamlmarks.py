"""Load manifest YAML into plain values that remember where each key and value stood in the source.

PURE: text in, values out. The first stage of :func:`pixmake.manifest.parse_manifest`; what it
returns feeds the schema check (:mod:`pixmake.schema`), whose ``locate`` reads the marks. PyYAML's C
composer builds the node graph; our own builder turns it into ``MarkedDict`` / ``MarkedList`` /
scalars, keeping keys as text and refusing what a manifest never needs: duplicate keys, tags other
than the core schema's, recursive aliases, and alias bombs (capped at :data:`MAX_EXPANDED_NODES`).
Every YAML problem becomes a :class:`~pixmake.errors.ManifestError` with a line and column.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Final

import yaml

from pixmake.errors import Diagnostic, ManifestError
from pixmake.schema import field_path

__all__ = ["MAX_EXPANDED_NODES", "MarkedDict", "MarkedList", "load_yaml"]

MAX_EXPANDED_NODES: Final = 2_000_000
_TAG_PREFIX: Final = "tag:yaml.org,2002:"
_MERGE: Final = "tag:yaml.org,2002:merge"
_SCALARS: Final = yaml.constructor.SafeConstructor()  # only its pure per-scalar converters are used

_BaseLoader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class MarkedDict(dict[Any, Any]):
    """A mapping that remembers where each key and value stood in the source (1-based line, column)."""

    __slots__ = ("column", "line", "marks")

    def __init__(self) -> None:
        super().__init__()
        self.marks: dict[Any, tuple[int, int, int, int]] = {}
        self.line = 1
        self.column = 1


class MarkedList(list[Any]):
    """A list that remembers where each item stood in the source: ``marks[i]`` as in :class:`MarkedDict`."""

    __slots__ = ("marks",)

    def __init__(self, items: Iterable[Any], marks: dict[int, tuple[int, int, int, int]]) -> None:
        super().__init__(items)
        self.marks = marks


class _YamlProblem(Exception):
    def __init__(self, node: yaml.Node, message: str, field: str = "") -> None:
        super().__init__(message)
        self.line = node.start_mark.line + 1
        self.column = node.start_mark.column + 1
        self.message = message
        self.field = field


def _refused_tag(node: yaml.Node, path: tuple[str | int, ...] = ()) -> _YamlProblem:
    tag = node.tag.removeprefix(_TAG_PREFIX)
    return _YamlProblem(node, f"the tag {tag!r} is not allowed in a manifest", field_path(path))


def _scalar(node: yaml.ScalarNode) -> Any:
    tag, value = node.tag, node.value
    if tag == "tag:yaml.org,2002:str" or tag == "tag:yaml.org,2002:timestamp":
        return value  # a date-like value stays the text the user wrote
    if tag == "tag:yaml.org,2002:int":
        if value.isdigit() and (value == "0" or value[0] != "0"):
            return int(value)
        return _SCALARS.construct_yaml_int(node)
    if tag == "tag:yaml.org,2002:float":
        return _SCALARS.construct_yaml_float(node)
    if tag == "tag:yaml.org,2002:bool":
        return _SCALARS.construct_yaml_bool(node)
    if tag == "tag:yaml.org,2002:null":
        return None
    raise _refused_tag(node)


class _Builder:
    """Turns the composed node graph into plain values, with marks; linear in the distinct nodes.

    PyYAML's constructor is generic (generators, deep construction, any tag); this one knows the only
    shapes a manifest has, refuses duplicate keys and recursive aliases, keeps every key as text, and
    records (line, column) of every key and value for diagnostics. A duplicate key is recorded in
    ``problems`` (the first value is kept) and building goes on, so every duplicate is reported.
    """

    def __init__(self) -> None:
        self.done: dict[int, Any] = {}
        self.open: set[int] = set()
        self.problems: list[_YamlProblem] = []

    def build(self, node: yaml.Node, path: tuple[str | int, ...] = ()) -> Any:
        if isinstance(node, yaml.ScalarNode):
            try:
                return _scalar(node)
            except _YamlProblem as problem:
                problem.field = field_path(path)
                raise
        ident = id(node)
        if ident in self.done:
            return self.done[ident]  # an alias: share the value, as PyYAML does
        if ident in self.open:
            message = "an alias refers to a node that contains it (a recursive structure)"
            raise _YamlProblem(node, message, field_path(path))
        self.open.add(ident)
        if isinstance(node, yaml.MappingNode):
            value: Any = self.mapping(node, path)
        elif node.tag == "tag:yaml.org,2002:seq":
            children = node.value
            marks = {}
            for index, child in enumerate(children):
                mark = child.start_mark
                marks[index] = (mark.line + 1, mark.column + 1, mark.line + 1, mark.column + 1)
            value = MarkedList([self.build(child, (*path, i)) for i, child in enumerate(children)], marks)
        else:
            raise _refused_tag(node, path)
        self.open.discard(ident)
        self.done[ident] = value
        return value

    def mapping(self, node: yaml.MappingNode, path: tuple[str | int, ...]) -> MarkedDict:
        if node.tag != "tag:yaml.org,2002:map":
            raise _refused_tag(node, path)
        data = MarkedDict()
        mark = node.start_mark
        data.line, data.column = mark.line + 1, mark.column + 1
        marks = data.marks
        seen: dict[str, yaml.Node] = {}
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE:
                self.merge(data, value_node, path)
                continue
            if not isinstance(key_node, yaml.ScalarNode):
                raise _YamlProblem(key_node, "a key must be plain text, not a list or mapping")
            key = key_node.value  # keys are text: "404:" names a target "404", not the integer 404
            if key in seen:
                first = seen[key].start_mark.line + 1
                message = f"duplicate key {key!r} (first defined on line {first})"
                self.problems.append(_YamlProblem(key_node, message, field_path((*path, key))))
                continue
            seen[key] = key_node
            data[key] = self.build(value_node, (*path, key))
            key_mark, value_mark = key_node.start_mark, value_node.start_mark
            marks[key] = (key_mark.line + 1, key_mark.column + 1, value_mark.line + 1, value_mark.column + 1)
        return data

    def merge(self, data: MarkedDict, value_node: yaml.Node, path: tuple[str | int, ...]) -> None:
        """``<<: *a`` or ``<<: [*a, *b]``: keys the mapping does not set itself (earlier sources win)."""
        sources = value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node]
        for source_node in sources:
            if not isinstance(source_node, yaml.MappingNode):
                raise _YamlProblem(source_node, "a merge key (<<) takes a mapping or a list of mappings")
            source = self.build(source_node, path)
            for key, value in source.items():
                if key not in data:
                    data[key] = value
                    data.marks[key] = source.marks[key]


def _expanded_size(root: Any) -> int:
    """Node count with aliases expanded, computed in time linear in the distinct nodes (alias bombs)."""
    sizes: dict[int, int] = {}
    stack: list[tuple[Any, bool]] = [(root, False)]
    while stack:
        obj, done = stack.pop()
        if not isinstance(obj, dict | list) or (id(obj) in sizes and not done):
            continue
        children = list(obj.values()) if isinstance(obj, dict) else obj
        if done:
            total = 1 + sum(sizes.get(id(c), 1) if isinstance(c, dict | list) else 1 for c in children)
            sizes[id(obj)] = min(total, MAX_EXPANDED_NODES + 1)
        else:
            sizes.setdefault(id(obj), 1)
            stack.append((obj, True))
            stack.extend((c, False) for c in children if isinstance(c, dict | list))
    return sizes.get(id(root), 1)


def _syntax_message(text: str, line: int, column: int, what: str) -> str:
    lines = text.splitlines()
    here = lines[line - 1] if 0 < line <= len(lines) else ""
    if "another document" in what:
        return "a manifest is a single YAML document; remove the second '---' and what follows, or merge them"
    if "\t" in here[: max(column, 1)] or (here.startswith("\t")):
        return "a tab character; YAML indents with spaces only"
    if "${" in here and ("[" in here or "{" in here.replace("${", "")):
        return f'YAML syntax error: {what} (inside [ ] or {{ }}, quote a value holding ${{…}}: "a/${{x}}.png")'
    return f"YAML syntax error: {what}"


def load_yaml(text: str, *, file: str) -> Any:
    """The single YAML document in ``text`` as marked values (None when it holds no node).

    Raises :class:`~pixmake.errors.ManifestError` (naming ``file``) for a syntax error, a refused tag,
    duplicate key or recursive alias, a control character, too deep a nesting, or an alias bomb.
    """
    try:
        loader = _BaseLoader(text)
        try:
            node = loader.get_single_node()
        finally:
            loader.dispose()
        builder = _Builder()
        doc = None if node is None else builder.build(node)
        if builder.problems:
            raise ManifestError([Diagnostic(file, p.line, p.column, p.field, p.message) for p in builder.problems])
    except _YamlProblem as problem:
        raise ManifestError.at(file, problem.line, problem.column, problem.field, problem.message) from None
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        line, column = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        what = error.problem or error.context or "invalid YAML"
        raise ManifestError.at(file, line, column, "", _syntax_message(text, line, column, what)) from None
    except yaml.reader.ReaderError as error:
        line = text[: error.position].count("\n") + 1
        code = error.character if isinstance(error.character, int) else ord(error.character)
        message = f"manifest contains the control character #x{code:04x}; is it a binary file?"
        raise ManifestError.at(file, line, 1, "", message) from None
    except yaml.YAMLError as error:
        raise ManifestError.at(file, 1, 1, "", f"YAML error: {error}") from None
    except RecursionError:
        raise ManifestError.at(file, 1, 1, "", "manifest is nested too deeply") from None
    # An alias bomb needs both anchors and aliases; skip the walk for the usual document without them.
    if "&" in text and "*" in text and _expanded_size(doc) > MAX_EXPANDED_NODES:
        raise ManifestError.at(file, 1, 1, "", "manifest expands to too many nodes (YAML alias bomb?)")
    return doc
