"""Parse manifest text into validated, fully expanded targets.

PURE: text in, :class:`Manifest` out; no disk, clock or environment (a ``rows:`` catalog is read
through the ``read_file`` callable the shell injects). Stages, in order::

    YAML (C composer, then our own builder: line marks, keys as text, duplicate keys and
          unknown tags refused, recursive aliases refused, alias bombs capped)
      → JSON Schema (fast compiled check; jsonschema explains only when it fails)
      → expansion: matrix axes × catalog rows → one binding of variables per target
      → vars interpolation, defaults, lexical path checks, model capability checks (models.MODELS)
      → unique names and output paths across every expansion

Every problem found is reported, sorted by line: a target with a schema error is skipped by the later
stages, the others are still checked. Path escapes are diagnostics of kind ``"unsafe-path"`` and make
the raised error an :class:`~pixmake.errors.UnsafePathError`.
"""

from __future__ import annotations

import functools
import itertools
import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from types import MappingProxyType
from typing import Any, Final

import yaml

from pixmake.catalog import Row, parse_catalog
from pixmake.errors import Diagnostic, ManifestError, UnsafePathError
from pixmake.models import MODELS
from pixmake.schema import FieldPath, field_path, json_type, locate, suggest, validate_paths

__all__ = [
    "DEFAULT_BASE_URL",
    "MAX_MANIFEST_BYTES",
    "MAX_TARGETS",
    "Manifest",
    "ProviderConfig",
    "ReadFile",
    "Target",
    "interpolate",
    "is_url",
    "output_paths",
    "parse_manifest",
]

DEFAULT_BASE_URL: Final = "https://toapis.com"
MAX_MANIFEST_BYTES: Final = 32 * 1024 * 1024
MAX_EXPANDED_NODES: Final = 2_000_000
MAX_TARGETS: Final = 100_000
_VAR: Final = re.compile(r"\$\$\{|\$\{([^}]*)\}|\$\{")
_VAR_NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_TARGET_NAME: Final = re.compile(r"[A-Za-z0-9_.-][A-Za-z0-9_. -]{0,199}")
_TAG: Final = re.compile(r"[A-Za-z0-9_.-]+")
_MERGE: Final = "tag:yaml.org,2002:merge"

ReadFile = Callable[[str], bytes]
"""Reads a project-relative file (a catalog); raises OSError, or UnsafePathError for a symlink escape."""

_BaseLoader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@dataclass(frozen=True, slots=True)
class ProviderConfig:
    """The manifest's ``provider:`` block, as declared (environment overrides come later, in settings)."""

    name: str = "toapis"
    base_url: str = DEFAULT_BASE_URL
    api_key_env: str = "TOAPIS_API_KEY"
    concurrency: int = 4
    rate: str = "60/min"
    poll_interval: float | None = None


@dataclass(frozen=True, slots=True)
class Target:
    """One image target, fully expanded: what to generate and where it goes.

    ``origin`` says which matrix combination or catalog row made it (empty for a plain target);
    ``fields`` maps ``"references[0]"``, ``"mask"``, ``"out"`` to (field path, line, column), so
    checks that need the disk can still point at the manifest. Neither takes part in equality.
    """

    name: str
    prompt: str
    model: str
    size: str
    n: int
    out: str
    references: tuple[str, ...] = ()
    mask: str | None = None
    tags: tuple[str, ...] = ()
    params: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    line: int = 0
    origin: str = field(default="", compare=False)
    fields: Mapping[str, tuple[str, int, int]] = field(
        default_factory=lambda: MappingProxyType({}), compare=False, repr=False
    )

    def where(self, name: str) -> tuple[str, int, int]:
        """(field path, line, column) of one of this target's fields, or of the target itself."""
        fallback = f"targets.{self.name}" + (f".{name}" if name != "name" else "")
        return self.fields.get(name) or (fallback, self.line, 1)


@dataclass(frozen=True, slots=True)
class Manifest:
    """A validated manifest: where it came from, its provider block and its targets in file order.

    ``catalogs`` lists the ``rows:`` files it read (project-relative); ``warnings`` holds problems
    that do not stop a build (an extra parameter a model does not document).
    """

    file: str
    provider: ProviderConfig
    targets: tuple[Target, ...]
    catalogs: tuple[str, ...] = ()
    warnings: tuple[Diagnostic, ...] = ()


def is_url(ref: str) -> bool:
    """True for a reference given as a URL rather than a project path."""
    return ref.startswith(("https://", "http://"))


def output_paths(target: Target) -> tuple[str, ...]:
    """Files a target writes: ``out`` itself for n = 1, else ``<stem>-1<suffix>`` … ``<stem>-N<suffix>``."""
    if target.n == 1:
        return (target.out,)
    path = PurePosixPath(target.out)
    return tuple(str(path.with_name(f"{path.stem}-{i}{path.suffix}")) for i in range(1, target.n + 1))


# --- YAML with marks -------------------------------------------------------------------------------


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
    def __init__(self, node: yaml.Node, message: str) -> None:
        super().__init__(message)
        self.line = node.start_mark.line + 1
        self.column = node.start_mark.column + 1
        self.message = message


_TAG_PREFIX: Final = "tag:yaml.org,2002:"
_SCALARS: Final = yaml.constructor.SafeConstructor()  # only its pure per-scalar converters are used


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
    raise _YamlProblem(node, f"the tag {tag.removeprefix(_TAG_PREFIX)!r} is not allowed in a manifest")


class _Builder:
    """Turns the composed node graph into plain values, with marks; linear in the distinct nodes.

    PyYAML's constructor is generic (generators, deep construction, any tag); this one knows the only
    shapes a manifest has, refuses duplicate keys and recursive aliases, keeps every key as text, and
    records (line, column) of every key and value for diagnostics.
    """

    def __init__(self) -> None:
        self.done: dict[int, Any] = {}
        self.open: set[int] = set()

    def build(self, node: yaml.Node) -> Any:
        if isinstance(node, yaml.ScalarNode):
            return _scalar(node)
        ident = id(node)
        if ident in self.done:
            return self.done[ident]  # an alias: share the value, as PyYAML does
        if ident in self.open:
            raise _YamlProblem(node, "an alias refers to a node that contains it (a recursive structure)")
        self.open.add(ident)
        if isinstance(node, yaml.MappingNode):
            value: Any = self.mapping(node)
        elif node.tag == "tag:yaml.org,2002:seq":
            children = node.value
            marks = {}
            for index, child in enumerate(children):
                mark = child.start_mark
                marks[index] = (mark.line + 1, mark.column + 1, mark.line + 1, mark.column + 1)
            value = MarkedList([self.build(child) for child in children], marks)
        else:
            raise _YamlProblem(node, f"the tag {node.tag.removeprefix(_TAG_PREFIX)!r} is not allowed in a manifest")
        self.open.discard(ident)
        self.done[ident] = value
        return value

    def mapping(self, node: yaml.MappingNode) -> MarkedDict:
        if node.tag != "tag:yaml.org,2002:map":
            raise _YamlProblem(node, f"the tag {node.tag.removeprefix(_TAG_PREFIX)!r} is not allowed in a manifest")
        data = MarkedDict()
        mark = node.start_mark
        data.line, data.column = mark.line + 1, mark.column + 1
        marks = data.marks
        seen: dict[str, yaml.Node] = {}
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE:
                self.merge(data, value_node)
                continue
            if not isinstance(key_node, yaml.ScalarNode):
                raise _YamlProblem(key_node, "a key must be plain text, not a list or mapping")
            key = key_node.value  # keys are text: "404:" names a target "404", not the integer 404
            if key in seen:
                first = seen[key].start_mark.line + 1
                raise _YamlProblem(key_node, f"duplicate key {key!r} (first defined on line {first})")
            seen[key] = key_node
            data[key] = self.build(value_node)
            key_mark, value_mark = key_node.start_mark, value_node.start_mark
            marks[key] = (key_mark.line + 1, key_mark.column + 1, value_mark.line + 1, value_mark.column + 1)
        return data

    def merge(self, data: MarkedDict, value_node: yaml.Node) -> None:
        """``<<: *a`` or ``<<: [*a, *b]``: keys the mapping does not set itself (earlier sources win)."""
        sources = value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node]
        for source_node in sources:
            if not isinstance(source_node, yaml.MappingNode):
                raise _YamlProblem(source_node, "a merge key (<<) takes a mapping or a list of mappings")
            source = self.build(source_node)
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


def _load_yaml(text: str, file: str) -> Any:
    if len(text) > MAX_MANIFEST_BYTES:
        raise ManifestError.at(file, 1, 1, "", f"manifest is larger than {MAX_MANIFEST_BYTES >> 20} MB")
    if not text.strip():
        raise ManifestError.at(file, 1, 1, "", "manifest is empty; it needs at least 'version: 1' and 'targets:'")
    try:
        loader = _BaseLoader(text)
        try:
            node = loader.get_single_node()
        finally:
            loader.dispose()
        doc = None if node is None else _Builder().build(node)
    except _YamlProblem as problem:
        raise ManifestError.at(file, problem.line, problem.column, "", problem.message) from None
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


# --- interpolation ---------------------------------------------------------------------------------


def interpolate(text: str, variables: Mapping[str, str]) -> tuple[str, list[str]]:
    """Replace ``${name}`` by its value, ``$${`` by a literal ``${``; returns the text and any problems."""
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
            known = f"defined: {', '.join(sorted(variables))}" if variables else "no variables are defined"
            problems.append(f"undefined variable {name!r}{suggest(name, variables)} ({known})")
            return token
        return variables[name]

    return _VAR.sub(substitute, text), problems


def _text_value(value: Any) -> str:
    return ("true" if value else "false") if isinstance(value, bool) else str(value)


# --- paths -----------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=4096)
def _normal_path(raw: str) -> str | None:
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


# --- diagnostics -----------------------------------------------------------------------------------


class _Collector:
    """Gathers diagnostics for one manifest; one problem repeated across expansions is reported once."""

    def __init__(self, doc: Any, file: str) -> None:
        self.doc = doc
        self.file = file
        self.plain: list[Diagnostic] = []
        self.grouped: dict[tuple[FieldPath, bool, str, str, str], list[str]] = {}

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
        self.grouped.setdefault((path, key, message, kind, severity), []).append(origin)

    def diagnostic(self, diagnostic: Diagnostic) -> None:
        self.plain.append(diagnostic)

    def count(self) -> int:
        return len(self.plain) + len(self.grouped)

    def result(self) -> tuple[list[Diagnostic], list[Diagnostic]]:
        """(errors, warnings)."""
        out = list(self.plain)
        for (path, key, message, kind, severity), origins in self.grouped.items():
            line, column = locate(self.doc, path, key=key)
            named = [o for o in origins if o]
            if named:
                more = f" and {len(named) - 1} more" if len(named) > 1 else ""
                message = f"{message} (in {named[0]}{more})"
            out.append(Diagnostic(self.file, line, column, field_path(path), message, severity, kind))
        return [d for d in out if d.severity == "error"], [d for d in out if d.severity != "error"]


# --- expansion -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Expansion:
    binding: Mapping[str, str]
    origin: str


def _matrix(body: Mapping[str, Any]) -> list[_Expansion]:
    axes = body.get("matrix") or {}
    names = list(axes)
    combos = itertools.product(*([_text_value(v) for v in axes[name]] for name in names))
    return [
        _Expansion(
            dict(zip(names, combo, strict=True)), ", ".join(f"{n}={v}" for n, v in zip(names, combo, strict=True))
        )
        for combo in combos
    ]


def _rows(
    where: FieldPath,
    body: Mapping[str, Any],
    c: _Collector,
    read_file: ReadFile | None,
    catalogs: dict[str, list[Row] | None],
) -> list[Row] | None:
    raw = body["rows"]
    path = (*where, "rows")
    rel = _normal_path(raw)
    if rel is None:
        c.add(
            path, f"path {raw!r} leaves the project root (use a relative path inside the project)", kind="unsafe-path"
        )
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


def _expansions(
    where: FieldPath,
    body: Mapping[str, Any],
    c: _Collector,
    read_file: ReadFile | None,
    catalogs: dict[str, list[Row] | None],
) -> list[_Expansion]:
    if "matrix" not in body and "rows" not in body:
        return [_Expansion({}, "")]
    count = math.prod(len(values) for values in (body.get("matrix") or {}).values())
    if count > MAX_TARGETS:
        c.add((*where, "matrix"), f"matrix expands to {count} targets; at most {MAX_TARGETS} are allowed")
        return []
    matrix = _matrix(body) if "matrix" in body else [_Expansion({}, "")]
    if "rows" not in body:
        return matrix
    rows = _rows(where, body, c, read_file, catalogs)
    if rows is None:
        return []
    if len(rows) * len(matrix) > MAX_TARGETS:
        c.add((*where, "rows"), f"rows × matrix make {len(rows) * len(matrix)} targets; at most {MAX_TARGETS}")
        return []
    catalog = _normal_path(body["rows"])
    out: list[_Expansion] = []
    for row in rows:
        for combo in matrix:
            origin = f"row {catalog}:{row.line}" + (f", {combo.origin}" if combo.origin else "")
            out.append(_Expansion({**row.values, **combo.binding}, origin))
    return out


# --- the build of targets --------------------------------------------------------------------------


def _provider(doc: Mapping[str, Any]) -> ProviderConfig:
    block = doc.get("provider") or {}
    known: dict[str, Any] = {k: block[k] for k in ("name", "base_url", "api_key_env", "rate") if k in block}
    if "concurrency" in block:
        known["concurrency"] = int(block["concurrency"])
    if "poll_interval" in block:
        known["poll_interval"] = float(block["poll_interval"])
    return ProviderConfig(**known)


@dataclass(slots=True)
class _Context:
    doc: Mapping[str, Any]
    defaults: Mapping[str, Any]
    variables: Mapping[str, str]
    c: _Collector


def _target(raw_name: str, body: Mapping[str, Any], expansion: _Expansion, ctx: _Context) -> Target | None:
    c, defaults, origin = ctx.c, ctx.defaults, expansion.origin
    where: FieldPath = ("targets", raw_name)
    variables = {**ctx.variables, **expansion.binding} if expansion.binding else ctx.variables
    failed = False

    def add(path: FieldPath, message: str, *, key: bool = False, kind: str = "manifest") -> None:
        nonlocal failed
        failed = True
        c.add(path, message, key=key, origin=origin, kind=kind)

    def warn(path: FieldPath, message: str) -> None:
        c.add(path, message, key=True, origin=origin, severity="warning")

    def text(value: str, path: FieldPath) -> str:
        result, problems = interpolate(value, variables)
        for problem in problems:
            add(path, problem, key=path == where)
        return result

    name = text(raw_name, where)
    if not _TARGET_NAME.fullmatch(name):
        add(where, f"target name {name!r} (after ${{…}}) may use only letters, digits, space and _ . -", key=True)
    prompt = text(body["prompt"], (*where, "prompt"))

    def inherited(key: str, fallback: Any) -> tuple[Any, FieldPath]:
        if key in body:
            return body[key], (*where, key)
        return defaults.get(key, fallback), ("defaults", key)

    model, model_path = inherited("model", "gpt-4o-image")
    size, size_path = inherited("size", "1:1")
    n, n_path = inherited("n", 1)
    if isinstance(n, float):
        add(n_path, f"expected an integer, found {json_type(n)} {n!r} (write n: {int(n)})")
        n = int(n)
    params = {**defaults.get("params", {}), **body.get("params", {})}
    tags: list[str] = []
    for i, tag in enumerate([*defaults.get("tags", []), *body.get("tags", [])]):
        value = text(tag, (*where, "tags", i)) if "${" in tag else tag
        if not _TAG.fullmatch(value):
            add((*where, "tags"), f"tag {value!r} (after ${{…}}) may use only letters, digits and _ . -")
        tags.append(value)
    key_line, key_column = locate(ctx.doc, where, key=True)
    fields: dict[str, tuple[str, int, int]] = {"name": (field_path(where), key_line, key_column)}

    prefix = fields["name"][0]

    def path_field(
        value: str, path: FieldPath, short: str, container: Any, index: str | int, *, urls: bool = False
    ) -> str:
        value = text(value, path)
        marks = getattr(container, "marks", None)
        line, column = marks[index][2:4] if marks is not None and index in marks else locate(ctx.doc, path)
        fields[short] = (f"{prefix}.{short}", line, column)
        if urls and is_url(value):
            if not value.startswith("https://"):
                add(path, f"expected an https:// URL or a project path, found {value!r}")
            return value
        normal = _normal_path(value)
        if normal is None:
            add(
                path,
                f"path {value!r} leaves the project root (use a relative path inside the project)",
                kind="unsafe-path",
            )
            return value
        return normal

    refs = body.get("references", ())
    references = tuple(
        path_field(ref, (*where, "references", i), f"references[{i}]", refs, i, urls=True) for i, ref in enumerate(refs)
    )
    mask = path_field(body["mask"], (*where, "mask"), "mask", body, "mask") if "mask" in body else None
    out = path_field(body["out"], (*where, "out"), "out", body, "out")
    if not out.endswith(".png"):
        add((*where, "out"), f"expected a path ending in .png, found {out!r}")
    _check_model(
        _Request(model, prompt, size, n, references, mask, params),
        _Paths(where, model_path, size_path, n_path),
        add,
        warn,
    )
    if failed:
        return None
    return Target(
        name=name,
        prompt=prompt,
        model=model,
        size=size,
        n=n,
        out=out,
        references=references,
        mask=mask,
        tags=tuple(dict.fromkeys(tags)),
        params=MappingProxyType(params),
        line=key_line,
        origin=origin,
        fields=MappingProxyType(fields),
    )


@dataclass(frozen=True, slots=True)
class _Request:
    model: str
    prompt: str
    size: str
    n: int
    references: tuple[str, ...]
    mask: str | None
    params: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class _Paths:
    target: FieldPath
    model: FieldPath
    size: FieldPath
    n: FieldPath


def _check_model(
    r: _Request, p: _Paths, add: Callable[[FieldPath, str], None], warn: Callable[[FieldPath, str], None]
) -> None:
    """The pure rules of :data:`pixmake.models.MODELS`: prompt length, size, n, reference count, mask."""
    model, prompt, size, n, references, mask, params = r.model, r.prompt, r.size, r.n, r.references, r.mask, r.params
    where, model_path, size_path, n_path = p.target, p.model, p.size, p.n
    if mask is not None and not references:
        add((*where, "mask"), "a mask needs a reference image to apply to (add references:)")
    spec = MODELS.get(model)
    if spec is None:
        add(model_path, f"unknown model {model!r}{suggest(model, MODELS)} (known: {', '.join(sorted(MODELS))})")
        return
    if len(prompt) > spec.prompt_max:
        add((*where, "prompt"), f"expected at most {spec.prompt_max} characters for {model}, found {len(prompt)}")
    if size not in spec.sizes:
        add(size_path, f"expected one of {', '.join(spec.sizes)} for {model}, found {size!r}")
    if n not in spec.n_allowed:
        allowed = ", ".join(str(v) for v in sorted(spec.n_allowed))
        add(n_path, f"expected n in {{{allowed}}} for {model}, found {n}")
    if len(references) > spec.max_references:
        add(
            (*where, "references"),
            f"expected at most {spec.max_references} references for {model}, found {len(references)}",
        )
    if spec.max_images is not None and len(references) + n > spec.max_images:
        add(
            (*where, "n"),
            f"{model} takes at most {spec.max_images} images in all (references + n), found {len(references)} + {n}",
        )
    if mask is not None and not spec.supports_mask:
        masked = sorted(m for m, s in MODELS.items() if s.supports_mask)
        add((*where, "mask"), f"{model} does not accept a mask (models that do: {', '.join(masked)})")
    for name in params:
        if name not in spec.params:
            documented = ", ".join(sorted(spec.params)) or "none"
            warn(
                (*where, "params", name),
                f"{model} does not document the parameter {name!r}{suggest(name, spec.params)} "
                f"(documented: {documented}); it is sent as written",
            )


def _describe(target: Target) -> str:
    return f"line {target.line}" + (f" [{target.origin}]" if target.origin else "")


def _check_unique(targets: list[Target], c: _Collector) -> None:
    owners: dict[str, Target] = {}
    names: dict[str, Target] = {}
    for target in targets:
        other = names.get(target.name)
        if other is not None:
            field_name, line, column = target.where("name")
            c.diagnostic(
                Diagnostic(
                    c.file,
                    line,
                    column,
                    field_name,
                    f"target name {target.name!r} is made twice: by {_describe(other)} and by {_describe(target)}",
                )
            )
            continue
        names[target.name] = target
        for path in output_paths(target):
            owner = owners.get(path)
            if owner is not None:
                field_name, line, column = target.where("out")
                c.diagnostic(
                    Diagnostic(
                        c.file,
                        line,
                        column,
                        field_name,
                        f"output {path!r} is written twice: by target {owner.name!r} ({_describe(owner)}) "
                        f"and by target {target.name!r} ({_describe(target)})",
                    )
                )
            else:
                owners[path] = target


def _blocks_everything(path: FieldPath) -> bool:
    """Whether a schema error at ``path`` makes the semantic checks meaningless for every target."""
    return not path or path[0] in {"defaults", "vars"} or (path[0] == "targets" and len(path) < 2)


def parse_manifest(text: str, *, file: str, read_file: ReadFile | None = None) -> Manifest:
    """Parse, validate and expand a manifest; raises ManifestError (UnsafePathError) listing every problem.

    ``read_file`` reads a catalog named by ``rows:`` (a project-relative path, already checked
    lexically); without it a manifest that uses ``rows:`` is an error.
    """
    doc = _load_yaml(text, file)
    if doc is None:
        raise ManifestError.at(file, 1, 1, "", "manifest is empty; it needs at least 'version: 1' and 'targets:'")
    if not isinstance(doc, dict):
        raise ManifestError.at(
            file, 1, 1, "", f"expected a mapping with 'version' and 'targets', found {json_type(doc)}"
        )
    schema_problems = validate_paths(doc, file=file)
    c = _Collector(doc, file)
    for _, diagnostic in schema_problems:
        c.diagnostic(diagnostic)
    if any(_blocks_everything(path) for path, _ in schema_problems):
        raise ManifestError.of([d for _, d in schema_problems])
    skip = {path[1] for path, _ in schema_problems if path[0] == "targets"}
    variables: dict[str, str] = {}
    for name, value in (doc.get("vars") or {}).items():
        if isinstance(value, float) and not math.isfinite(value):
            c.add(("vars", name), f"expected a finite number, found {value}")
        variables[name] = _text_value(value)
    ctx = _Context(doc, doc.get("defaults") or {}, variables, c)
    catalogs: dict[str, list[Row] | None] = {}
    targets: list[Target] = []
    for raw_name, body in doc["targets"].items():
        if raw_name in skip:
            continue
        for expansion in _expansions(("targets", raw_name), body, c, read_file, catalogs):
            target = _target(raw_name, body, expansion, ctx)
            if target is not None:
                targets.append(target)
    _check_unique(targets, c)
    errors, warnings = c.result()
    if errors:
        raise ManifestError.of(errors)
    return Manifest(
        file=file,
        provider=_provider(doc),
        targets=tuple(targets),
        catalogs=tuple(sorted(rel for rel in catalogs)),
        warnings=tuple(sorted(warnings, key=lambda d: (d.line, d.column))),
    )
