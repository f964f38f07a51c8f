"""Validate a loaded manifest document against the bundled JSON Schema.

PURE. The schema (``schemas/pixmake.schema.json``, JSON Schema 2020-12) is the contract. Two
validators are compiled from it once per process:

* a fast checker: plain Python closures for the keywords the schema uses, answering only "valid?";
  it runs over the whole document in one pass (10,000 targets in milliseconds);
* ``jsonschema``'s ``Draft202012Validator``, run only when the fast checker says no (or meets a
  keyword it does not know), to explain every violation.

So the fast path never decides alone that a document is *invalid*, and the slow one is the authority
for every message. Violations become :class:`~pixmake.errors.Diagnostic` values naming line, column,
dotted field path, what was expected and what was found, with "did you mean" for near misses.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Callable, Iterable, Mapping, Sized
from functools import cache
from importlib import resources
from typing import Any, Final

from pixmake.errors import Diagnostic

__all__ = [
    "FieldPath",
    "field_path",
    "json_type",
    "locate",
    "mark_at",
    "one_line",
    "schema",
    "schema_text",
    "suggest",
    "validate_document",
    "validate_entry",
    "validate_paths",
]

FieldPath = tuple[str | int, ...]
_Check = Callable[[Any], bool]

_ANNOTATIONS: Final = frozenset(
    {
        "$schema",
        "$id",
        "$defs",
        "$comment",
        "title",
        "description",
        "default",
        "examples",
        "markdownDescription",
        "patternErrorMessage",
        "errorMessage",
        "deprecated",
    }
)


def schema_text() -> str:
    """The bundled manifest schema, as JSON text."""
    return resources.files("pixmake").joinpath("pixmake.schema.json").read_text(encoding="utf-8")


@cache
def schema() -> Mapping[str, Any]:
    """The bundled schema, parsed once."""
    loaded: dict[str, Any] = json.loads(schema_text())
    return loaded


@cache
def _validator() -> Any:
    from jsonschema import Draft202012Validator

    Draft202012Validator.check_schema(schema())
    return Draft202012Validator(schema())


# The keywords of the ``targets`` mapping that check each entry (its name, its value) on its own.
_PER_ENTRY: Final = frozenset({"propertyNames", "properties", "patternProperties", "additionalProperties"})


@cache
def _entries() -> Mapping[str, Any]:
    """What the schema asks of each entry of ``targets``, as a schema for a mapping of one entry."""
    targets: Mapping[str, Any] = schema()["properties"]["targets"]
    return {key: value for key, value in targets.items() if key in _PER_ENTRY or key == "type"}


@cache
def _without_entries() -> Mapping[str, Any]:
    """The schema without what it asks of each entry of ``targets`` (checked on its own: validate_entry)."""
    targets = {key: value for key, value in schema()["properties"]["targets"].items() if key not in _PER_ENTRY}
    return {**schema(), "properties": {**schema()["properties"], "targets": targets}}


@cache
def _validator_without_entries() -> Any:
    from jsonschema import Draft202012Validator

    return Draft202012Validator(_without_entries())


# --- the fast checker --------------------------------------------------------------------------------


class _Unsupported(Exception):
    """The schema uses a keyword the fast checker does not implement; use jsonschema alone."""


def _is_type(name: str) -> _Check:
    if name == "object":
        return lambda v: isinstance(v, dict)
    if name == "array":
        return lambda v: isinstance(v, list)
    if name == "string":
        return lambda v: isinstance(v, str)
    if name == "boolean":
        return lambda v: isinstance(v, bool)
    if name == "null":
        return lambda v: v is None
    if name == "integer":
        return lambda v: (isinstance(v, int) and not isinstance(v, bool)) or (isinstance(v, float) and v.is_integer())
    if name == "number":
        return lambda v: isinstance(v, int | float) and not isinstance(v, bool)
    raise _Unsupported(name)


def _compile(node: Any, root: Mapping[str, Any], refs: dict[str, _Check]) -> _Check:
    if node is True or node == {}:
        return lambda v: True
    if node is False:
        return lambda v: False
    checks: list[_Check] = []
    for key, arg in node.items():
        if key in _ANNOTATIONS:
            continue
        checks.append(_keyword(key, arg, node, root, refs))
    if len(checks) == 1:
        return checks[0]
    if len(checks) == 2:
        first, second = checks
        return lambda v: first(v) and second(v)

    def every(v: Any) -> bool:
        for check in checks:  # noqa: SIM110 - a plain loop is ~2x faster than all(<genexpr>) on this hot path
            if not check(v):
                return False
        return True

    return every


def _keyword(key: str, arg: Any, node: Mapping[str, Any], root: Mapping[str, Any], refs: dict[str, _Check]) -> _Check:
    if key == "type":
        types = [_is_type(t) for t in ([arg] if isinstance(arg, str) else arg)]
        if len(types) == 1:
            return types[0]
        return lambda v: any(t(v) for t in types)
    if key == "const":
        return lambda v: v == arg and type(v) is type(arg)
    if key == "enum":
        return lambda v: any(v == a and type(v) is type(a) for a in arg)
    if key == "pattern":
        search = re.compile(arg).search
        return lambda v: not isinstance(v, str) or search(v) is not None
    if key in {"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"}:
        ops: dict[str, Callable[[Any], bool]] = {
            "minimum": lambda v: v >= arg,
            "maximum": lambda v: v <= arg,
            "exclusiveMinimum": lambda v: v > arg,
            "exclusiveMaximum": lambda v: v < arg,
        }
        op = ops[key]
        return lambda v: isinstance(v, bool) or not isinstance(v, int | float) or op(v)
    if key in {"minLength", "maxLength", "minItems", "maxItems", "minProperties", "maxProperties"}:
        kind: type[Sized] = str if key.endswith("Length") else list if key.endswith("Items") else dict
        low = key.startswith("min")
        return lambda v: not isinstance(v, kind) or (len(v) >= arg if low else len(v) <= arg)
    if key == "uniqueItems":
        if not arg:
            return lambda v: True
        return lambda v: not isinstance(v, list) or _unique(v)
    if key == "required":
        return lambda v: not isinstance(v, dict) or all(k in v for k in arg)
    if key == "properties" or key == "additionalProperties" or key == "patternProperties":
        if key != "properties" and "properties" in node:
            return lambda v: True  # compiled together with "properties"
        return _object(node, root, refs)
    if key == "propertyNames":
        check = _compile(arg, root, refs)
        return lambda v: not isinstance(v, dict) or all(check(k) for k in v)
    if key == "items":
        item = _compile(arg, root, refs)

        def items(v: Any) -> bool:
            if isinstance(v, list):
                for i in v:
                    if not item(i):
                        return False
            return True

        return items
    if key == "$ref":
        return _ref(arg, root, refs)
    if key in {"anyOf", "oneOf", "allOf"}:
        parts = [_compile(part, root, refs) for part in arg]
        if key == "anyOf":
            return lambda v: any(p(v) for p in parts)
        if key == "allOf":
            return lambda v: all(p(v) for p in parts)
        return lambda v: sum(1 for p in parts if p(v)) == 1
    if key == "not":
        inner = _compile(arg, root, refs)
        return lambda v: not inner(v)
    raise _Unsupported(key)


def _unique(items: list[Any]) -> bool:
    try:
        return len({(type(i), i) for i in items}) == len(items)
    except TypeError:
        return False  # unhashable items: let jsonschema decide


def _object(node: Mapping[str, Any], root: Mapping[str, Any], refs: dict[str, _Check]) -> _Check:
    props = {name: _compile(sub, root, refs) for name, sub in node.get("properties", {}).items()}
    patterns = [
        (re.compile(p).search, _compile(sub, root, refs)) for p, sub in node.get("patternProperties", {}).items()
    ]
    extra = _compile(node.get("additionalProperties", True), root, refs)

    def check(v: Any) -> bool:
        if not isinstance(v, dict):
            return True
        for k, item in v.items():
            prop = props.get(k)
            if prop is not None and not prop(item):
                return False
            matched = [c for search, c in patterns if isinstance(k, str) and search(k)] if patterns else []
            if not all(c(item) for c in matched):
                return False
            if prop is None and not matched and not extra(item):
                return False
        return True

    return check


def _ref(ref: str, root: Mapping[str, Any], refs: dict[str, _Check]) -> _Check:
    if not ref.startswith("#/"):
        raise _Unsupported(ref)
    if ref not in refs:
        refs[ref] = lambda v: True  # placeholder while compiling a recursive reference
        node: Any = root
        for part in ref[2:].split("/"):
            node = node[part]
        refs[ref] = _compile(node, root, refs)
    return lambda v: refs[ref](v)


@cache
def _fast(node: str = "document") -> _Check | None:
    """The fast checker of the whole ``document``, the document ``without entries``, or one ``entry``."""
    whole = {"document": schema(), "without entries": _without_entries(), "entry": _entries()}[node]
    try:
        return _compile(whole, schema(), {})
    except _Unsupported:
        return None


# --- locating and explaining --------------------------------------------------------------------------


def field_path(path: Iterable[str | int]) -> str:
    """Dotted field path as users write it: ``targets.hero.references[0]``."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            text = one_line(str(part))
            out += f".{text}" if out else text
    return out


_BREAKS_LINES: Final = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")  # control characters, line separators


def one_line(text: str) -> str:
    """``text`` fit for a one-line diagnostic: quoted with escapes when it holds a line end, an escape
    code or another control character; as it is otherwise (a no-break space, an emoji sequence)."""
    return repr(text) if _BREAKS_LINES.search(text) else text


def mark_at(node: Any, key: str | int) -> tuple[int, int, int, int] | None:
    """1-based (key line, key column, value line, value column) of ``key`` in ``node``, when ``node`` is a
    MarkedDict or MarkedList of pixmake.yamlmarks that had it in the source; else None."""
    mark_of = getattr(node, "mark", None)
    return mark_of(key) if mark_of is not None else None


def locate(doc: Any, path: Iterable[str | int], *, key: bool = False) -> tuple[int, int]:
    """1-based (line, column) of the value at ``path`` (or of its key), from marks the loader recorded.

    Falls back to the nearest enclosing node that has marks.
    """
    node = doc
    line, column = getattr(doc, "line", 1), getattr(doc, "column", 1)
    parts = list(path)
    for index, part in enumerate(parts):
        found = mark_at(node, part)
        if found is None:
            break
        key_line, key_col, value_line, value_col = found
        last = index == len(parts) - 1
        line, column = (key_line, key_col) if key and last else (value_line, value_col)
        try:
            node = node[part]
        except (KeyError, IndexError, TypeError):
            break
    return line, column


def suggest(word: str, choices: Iterable[str]) -> str:
    """``"; did you mean 'size'?"`` for a near miss among ``choices``, else ``""``."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


_JSON_TYPES: Final = {
    str: "string",
    int: "integer",
    float: "number",
    bool: "boolean",
    type(None): "null",
    dict: "mapping",
    list: "list",
}


def json_type(value: Any) -> str:
    """The JSON/YAML name of a value's type, as a user would call it."""
    for kind, name in _JSON_TYPES.items():
        if type(value) is kind:
            return name
    return "mapping" if isinstance(value, dict) else "list" if isinstance(value, list) else type(value).__name__


def _show(value: Any) -> str:
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if value is None:
        return "nothing (null)"
    text = repr(value)
    return f"{json_type(value)} {text if len(text) <= 60 else text[:57] + '...'}"


def _expected_type(expected: Any) -> str:
    names = {
        "object": "a mapping",
        "array": "a list",
        "string": "a string",
        "integer": "an integer",
        "number": "a number",
        "boolean": "true or false",
        "null": "null",
    }
    kinds = [expected] if isinstance(expected, str) else list(expected)
    return " or ".join(names.get(k, k) for k in kinds)


def _explain(doc: Any, error: Any, file: str) -> list[tuple[FieldPath, Diagnostic]]:
    path: FieldPath = tuple(error.absolute_path)
    schema_node: Mapping[str, Any] = error.schema if isinstance(error.schema, Mapping) else {}
    instance = error.instance
    validator = error.validator
    value = error.validator_value

    def at(p: FieldPath, message: str, *, key: bool = False) -> tuple[FieldPath, Diagnostic]:
        line, column = locate(doc, p, key=key)
        return p, Diagnostic(file, line, column, field_path(p), message)

    if "propertyNames" in error.relative_schema_path:
        # jsonschema reports a bad key as an error on the key itself, with the mapping's path.
        expected = schema_node.get("patternErrorMessage") or error.message
        if validator == "maxLength":
            expected = f"at most {value} characters"
        if validator == "not" and path and path[-1] == "params":
            message = f"{instance!r} is a pipeline field, set it on the target, not in params"
            return [at((*path, instance), message, key=True)]
        return [at((*path, instance), f"bad name {instance!r}: expected {expected}", key=True)]
    if validator == "additionalProperties" and isinstance(instance, Mapping):
        allowed = list(schema_node.get("properties", {}))
        patterns = [re.compile(p).search for p in schema_node.get("patternProperties", {})]
        extras = [k for k in instance if k not in allowed and not any(match(str(k)) for match in patterns)]
        where = field_path(path) or "the top level"
        found = []
        for k in extras:
            hint = suggest(str(k), allowed)
            if "^x-" in schema_node.get("patternProperties", {}) and not hint:
                hint = " (keys starting with x- are free, for notes and shared YAML anchors)"
            found.append(at((*path, k), f"unknown field {k!r} in {where}{hint}", key=True))
        return found
    if validator == "required":
        missing = [k for k in value if isinstance(instance, Mapping) and k not in instance]
        found = [at(path, f"missing required field {k!r}", key=True) for k in missing]
        if len(path) == 2 and path[0] == "targets":  # a target's: the raw path names the field, for the parser
            return [((*path, k), diagnostic) for k, (_, diagnostic) in zip(missing, found, strict=True)]
        return found
    if validator == "type" and value == "string" and path and path[-1] == "size" and _is_int(instance):
        # YAML 1.1 reads an unquoted 3:2 as the base-60 integer 3*60+2 = 182; show what was written.
        hint = f' (write it with quotes: "{instance // 60}:{instance % 60}")' if instance >= 60 else ""
        return [at(path, f'expected a string like "3:2", found integer {instance}{hint}')]
    if validator == "type":
        hint = ""
        if isinstance(instance, str) and value in {"integer", "number"}:
            hint = f" (write it without quotes: {instance})" if _numeric(instance) else ""
        elif value == "array" and isinstance(instance, str | int | float):  # tags: campaign-q4
            hint = f" (a list of one is written [{_flow_item(instance)}])"
        elif path == ("targets",) and isinstance(instance, list):  # targets: [- name: hero, …]
            name = _listed_name(instance)
            hint = f" ({_TARGETS_BY_NAME.format(name=name) if name else _TARGETS_NOT_LISTED})"
        return [at(path, f"expected {_expected_type(value)}, found {_show(instance)}{hint}")]
    if validator in {"enum", "const"}:
        options = value if validator == "enum" else [value]
        shown = ", ".join(json.dumps(o) for o in options)
        near = suggest(str(instance), [str(o) for o in options]) if isinstance(instance, str) else ""
        return [at(path, f"expected {'one of ' if len(options) > 1 else ''}{shown}, found {_show(instance)}{near}")]
    if validator == "pattern":
        expected = schema_node.get("patternErrorMessage") or f"text matching {value}"
        if path and path[-1] == "api_key_env":  # what was written may be the key itself: never repeat it
            return [at(path, f"expected {expected}, found something else (the key goes in that variable, not here)")]
        return [at(path, f"expected {expected}, found {_show(instance)}")]
    if validator in {"minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum"}:
        words = {
            "minimum": "at least",
            "exclusiveMinimum": "more than",
            "maximum": "at most",
            "exclusiveMaximum": "less than",
        }
        return [at(path, f"expected {words[validator]} {value}, found {_show(instance)}")]
    if validator in {"minLength", "minItems", "minProperties"}:
        what = {"minLength": "character", "minItems": "item", "minProperties": "entry"}[validator]
        return [at(path, f"expected at least {value} {what}{'s' * (value != 1)}, found {len(instance)}")]
    if validator in {"maxLength", "maxItems", "maxProperties"}:
        one, many = {"maxLength": ("character", "characters"), "maxItems": ("item", "items"),
                     "maxProperties": ("entry", "entries")}[validator]  # fmt: skip
        return [at(path, f"expected at most {value} {one if value == 1 else many}, found {len(instance)}")]
    if validator == "uniqueItems":
        dupes = [i for index, i in enumerate(instance) if i in instance[:index]]
        return [at(path, f"expected unique items, found {', '.join(repr(d) for d in dupes)} more than once")]
    if validator in {"oneOf", "anyOf"}:
        inner = [e for e in error.context or () if e.relative_path]  # the branch that took the value's form
        if inner and isinstance(instance, Mapping | list):  # what inside it is wrong, where (a field of an axis value)
            return [found for e in inner for found in _explain(doc, e, file)]
        described = schema_node.get("description", "")
        first = re.split(r"\.(?:\s|$)", described, maxsplit=1)[0]  # a sentence: ${axis.field} holds a dot
        return [at(path, f"expected {first[:1].lower() + first[1:] or 'another form'}, found {_show(instance)}")]
    return [at(path, error.message)]


_TARGETS_BY_NAME: Final = (
    'targets are keyed by name: write "{name}:" where "- name: {name}" is, with the fields indented under it'
)
_TARGETS_NOT_LISTED: Final = "targets are keyed by name, not listed: hero: {prompt: …, out: …}"
_PLAIN_FLOW_ITEM: Final = re.compile(r"[A-Za-z0-9_.][A-Za-z0-9_./ -]*")


def _flow_item(value: str | float) -> str:
    """``value`` as one item of a YAML ``[…]`` list: quoted unless it is plain (``${…}``, ``,``, ``:`` need quotes)."""
    text = str(value)
    return text if _PLAIN_FLOW_ITEM.fullmatch(text) and not text.endswith(" ") else json.dumps(text, ensure_ascii=False)


def _listed_name(items: list[Any]) -> str:
    """The ``name:`` of the first listed target, as the user wrote it; "" when it has none."""
    first = items[0] if items else None
    name = first.get("name") if isinstance(first, Mapping) else None
    return one_line(name) if isinstance(name, str) else ""


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _numeric(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def validate_paths(doc: Any, *, file: str, entries_checked: bool = False) -> list[tuple[FieldPath, Diagnostic]]:
    """Every schema violation as (raw path, diagnostic); empty when valid. Fast path first.

    With ``entries_checked``, the entries of ``targets`` are not checked (each was, with :func:`validate_entry`,
    as the loader read it): together they check exactly what the whole schema checks.
    """
    fast = _fast("without entries" if entries_checked else "document")
    if fast is not None and fast(doc):
        return []
    validator = _validator_without_entries() if entries_checked else _validator()
    return _explained(doc, validator.iter_errors(doc), file)


def validate_entry(doc: Any, name: str, *, file: str) -> list[tuple[FieldPath, Diagnostic]]:
    """Every schema violation in the entry ``name`` of ``doc["targets"]`` (its name and its value), as
    :func:`validate_paths` reports them."""
    one = {name: doc["targets"][name]}
    fast = _fast("entry")
    if fast is not None and fast(one):
        return []
    return _explained(doc, _validator().descend(one, _entries(), path="targets"), file)


def _explained(doc: Any, errors: Iterable[Any], file: str) -> list[tuple[FieldPath, Diagnostic]]:
    found: list[tuple[FieldPath, Diagnostic]] = []
    for error in errors:
        found.extend(_explain(doc, error, file))
    unique: dict[tuple[int, int, str, str], tuple[FieldPath, Diagnostic]] = {}
    for path, diagnostic in found:
        unique.setdefault(
            (diagnostic.line, diagnostic.column, diagnostic.field, diagnostic.message), (path, diagnostic)
        )
    return list(unique.values())


def validate_document(doc: Any, *, file: str) -> list[Diagnostic]:
    """Every schema violation in ``doc``, one diagnostic each (empty list when valid)."""
    return [diagnostic for _, diagnostic in validate_paths(doc, file=file)]
