"""Parse manifest text into validated, fully expanded targets.

PURE: text in, :class:`Manifest` out; no disk, clock or environment. Stages, in order:
YAML with line marks (duplicate keys refused) → JSON Schema → vars interpolation and defaults →
lexical path checks → model capability checks. Every problem found is reported, sorted by line.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from types import MappingProxyType
from typing import Any, Final

import yaml

from pixmake.errors import Diagnostic, ManifestError
from pixmake.models import MODELS
from pixmake.schema import field_path, locate, validate_document

__all__ = [
    "DEFAULT_BASE_URL",
    "Manifest",
    "ProviderConfig",
    "Target",
    "is_url",
    "output_paths",
    "parse_manifest",
]

DEFAULT_BASE_URL: Final = "https://toapis.com"
MAX_MANIFEST_BYTES: Final = 32 * 1024 * 1024
MAX_EXPANDED_NODES: Final = 2_000_000
_VAR: Final = re.compile(r"\$\$\{|\$\{([^}]*)\}|\$\{")
_VAR_NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

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
    """One image target, fully expanded: what to generate and where it goes."""

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


@dataclass(frozen=True, slots=True)
class Manifest:
    """A validated manifest: where it came from, its provider block and its targets in file order."""

    file: str
    provider: ProviderConfig
    targets: tuple[Target, ...]


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


class _Loader(_BaseLoader):  # type: ignore[misc, valid-type]
    """Safe loader that builds :class:`MarkedDict` and refuses duplicate keys."""


def _construct_map(loader: yaml.SafeLoader, node: yaml.MappingNode) -> Iterable[MarkedDict]:
    data = MarkedDict()
    data.line, data.column = node.start_mark.line + 1, node.start_mark.column + 1
    yield data
    seen: dict[Any, yaml.Node] = {}
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue
        key = loader.construct_object(key_node, deep=True)
        if not isinstance(key, str | int | float | bool) and key is not None:
            raise _YamlProblem(key_node, "mapping keys must be plain scalars")
        if key in seen:
            first = seen[key].start_mark.line + 1
            raise _YamlProblem(key_node, f"duplicate key {key!r} (first defined on line {first})")
        seen[key] = key_node
    loader.flatten_mapping(node)
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        data[key] = loader.construct_object(value_node, deep=True)
        data.marks[key] = (
            key_node.start_mark.line + 1,
            key_node.start_mark.column + 1,
            value_node.start_mark.line + 1,
            value_node.start_mark.column + 1,
        )


_Loader.add_constructor("tag:yaml.org,2002:map", _construct_map)


class _YamlProblem(Exception):
    def __init__(self, node: yaml.Node, message: str) -> None:
        super().__init__(message)
        self.line = node.start_mark.line + 1
        self.column = node.start_mark.column + 1
        self.message = message


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
            stack.append((obj, True))
            stack.extend((c, False) for c in children if isinstance(c, dict | list))
    return sizes.get(id(root), 1)


def _load_yaml(text: str, file: str) -> Any:
    if len(text) > MAX_MANIFEST_BYTES:
        raise ManifestError.at(file, 1, 1, "", f"manifest is larger than {MAX_MANIFEST_BYTES >> 20} MB")
    if not text.strip():
        raise ManifestError.at(file, 1, 1, "", "manifest is empty; it needs at least 'version: 1' and 'targets:'")
    try:
        doc = yaml.load(text, Loader=_Loader)
    except _YamlProblem as problem:
        raise ManifestError.at(file, problem.line, problem.column, "", problem.message) from None
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        line, column = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        what = error.problem or error.context or "invalid YAML"
        if "\t" in what or "tab" in what:
            what += " (indent with spaces, not tabs)"
        raise ManifestError.at(file, line, column, "", f"YAML syntax error: {what}") from None
    except yaml.YAMLError as error:
        raise ManifestError.at(file, 1, 1, "", f"YAML error: {error}") from None
    except RecursionError:
        raise ManifestError.at(file, 1, 1, "", "manifest is nested too deeply") from None
    if _expanded_size(doc) > MAX_EXPANDED_NODES:
        raise ManifestError.at(file, 1, 1, "", "manifest expands to too many nodes (YAML alias bomb?)")
    return doc


# --- interpolation ---------------------------------------------------------------------------------


def interpolate(text: str, variables: Mapping[str, str]) -> tuple[str, list[str]]:
    """Replace ``${name}`` by its value, ``$${`` by a literal ``${``; returns the text and any problems."""
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
            known = ", ".join(sorted(variables)) or "none defined"
            problems.append(f"undefined variable {name!r} (vars: {known})")
            return token
        return variables[name]

    return _VAR.sub(substitute, text), problems


# --- paths -----------------------------------------------------------------------------------------


def _normal_path(raw: str) -> str | None:
    """The path in normal POSIX form, or None when it is absolute or climbs out of the project."""
    if raw.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", raw) or "\\" in raw or "\0" in raw:
        return None
    parts: list[str] = []
    for part in PurePosixPath(raw).parts:
        if part == "..":
            if not parts:
                return None
            parts.pop()
        elif part != ".":
            parts.append(part)
    return "/".join(parts) if parts else None


# --- the build of targets --------------------------------------------------------------------------


class _Collector:
    """Gathers diagnostics for one manifest, with positions taken from the marked document."""

    def __init__(self, doc: Any, file: str) -> None:
        self.doc = doc
        self.file = file
        self.diagnostics: list[Diagnostic] = []

    def add(self, path: list[str | int], message: str, *, key: bool = False) -> None:
        line, column = locate(self.doc, path, key=key)
        self.diagnostics.append(Diagnostic(self.file, line, column, field_path(path), message))


def _provider(doc: Mapping[str, Any]) -> ProviderConfig:
    block = doc.get("provider") or {}
    known = {k: block[k] for k in ("name", "base_url", "api_key_env", "concurrency", "rate") if k in block}
    if "poll_interval" in block:
        known["poll_interval"] = float(block["poll_interval"])
    return ProviderConfig(**known)


def _target(
    raw_name: str,
    body: Mapping[str, Any],
    doc: Mapping[str, Any],
    variables: Mapping[str, str],
    c: _Collector,
) -> Target | None:
    where: list[str | int] = ["targets", raw_name]
    defaults = doc.get("defaults") or {}
    before = len(c.diagnostics)

    def text(value: str, path: list[str | int]) -> str:
        result, problems = interpolate(value, variables)
        for problem in problems:
            c.add(path, problem, key=path == where)
        return result

    name = text(raw_name, where)
    prompt = text(body["prompt"], [*where, "prompt"])
    model = body.get("model", defaults.get("model", "gpt-4o-image"))
    size = body.get("size", defaults.get("size", "1:1"))
    n = body.get("n", defaults.get("n", 1))
    params = {**defaults.get("params", {}), **body.get("params", {})}
    tags = tuple(dict.fromkeys([*defaults.get("tags", []), *body.get("tags", [])]))

    def path_field(value: str, path: list[str | int], *, urls: bool = False) -> str:
        value = text(value, path)
        if urls and is_url(value):
            if not value.startswith("https://"):
                c.add(path, f"reference URL must use https: {value!r}")
            return value
        normal = _normal_path(value)
        if normal is None:
            c.add(path, f"path {value!r} leaves the project root (use a relative path inside the project)")
            return value
        return normal

    references = tuple(
        path_field(ref, [*where, "references", i], urls=True) for i, ref in enumerate(body.get("references", []))
    )
    mask = path_field(body["mask"], [*where, "mask"]) if "mask" in body else None
    out = path_field(body["out"], [*where, "out"])

    spec = MODELS.get(model)
    model_path: list[str | int] = [*where, "model"] if "model" in body else ["defaults", "model"]
    if spec is None:
        c.add(model_path, f"unknown model {model!r}; known models: {', '.join(sorted(MODELS))}")
    else:
        if len(prompt) > spec.prompt_max:
            c.add(
                [*where, "prompt"],
                f"prompt is {len(prompt)} characters; {model} accepts at most {spec.prompt_max}",
            )
        if size not in spec.sizes:
            size_path: list[str | int] = [*where, "size"] if "size" in body else ["defaults", "size"]
            c.add(size_path, f"{model} does not support size {size!r}; use one of {', '.join(spec.sizes)}")
        if n not in spec.n_allowed:
            n_path: list[str | int] = [*where, "n"] if "n" in body else ["defaults", "n"]
            allowed = ", ".join(str(v) for v in sorted(spec.n_allowed))
            c.add(n_path, f"{model} does not support n = {n}; use one of {allowed}")
        if len(references) > spec.max_references:
            c.add(
                [*where, "references"],
                f"{len(references)} references; {model} accepts at most {spec.max_references}",
            )
        if mask is not None and not spec.supports_mask:
            c.add([*where, "mask"], f"{model} does not accept a mask")
    if mask is not None and not references:
        c.add([*where, "mask"], "a mask needs a reference image to apply to (add references:)")
    if len(c.diagnostics) > before:
        return None
    line, _ = locate(doc, where, key=True)
    return Target(
        name=name,
        prompt=prompt,
        model=model,
        size=size,
        n=n,
        out=out,
        references=references,
        mask=mask,
        tags=tags,
        params=MappingProxyType(params),
        line=line,
    )


def _check_unique_outputs(targets: list[Target], c: _Collector) -> None:
    owners: dict[str, Target] = {}
    names: dict[str, Target] = {}
    for target in targets:
        if target.name in names:
            other = names[target.name]
            c.add(["targets"], f"targets on lines {other.line} and {target.line} are both named {target.name!r}")
        names[target.name] = target
        for path in output_paths(target):
            if path in owners and owners[path].name != target.name:
                other = owners[path]
                c.diagnostics.append(
                    Diagnostic(
                        c.file,
                        target.line,
                        1,
                        f"targets.{target.name}.out",
                        f"writes {path!r}, which target {other.name!r} (line {other.line}) also writes",
                    )
                )
            owners[path] = target


def parse_manifest(text: str, *, file: str) -> Manifest:
    """Parse, validate and expand a manifest; raises ManifestError listing every problem found."""
    doc = _load_yaml(text, file)
    if not isinstance(doc, dict):
        raise ManifestError.at(
            file, 1, 1, "", f"a manifest is a mapping with 'version' and 'targets', not {type(doc).__name__}"
        )
    schema_problems = validate_document(doc, file=file)
    if schema_problems:
        raise ManifestError(schema_problems)
    c = _Collector(doc, file)
    variables: dict[str, str] = {}
    for name, value in (doc.get("vars") or {}).items():
        if isinstance(value, float) and not math.isfinite(value):
            c.add(["vars", name], "a variable must be finite")
        variables[name] = str(value).lower() if isinstance(value, bool) else str(value)
    targets = [
        target
        for raw_name, body in doc["targets"].items()
        if (target := _target(raw_name, body, doc, variables, c)) is not None
    ]
    _check_unique_outputs(targets, c)
    if c.diagnostics:
        raise ManifestError(c.diagnostics)
    return Manifest(file=file, provider=_provider(doc), targets=tuple(targets))
