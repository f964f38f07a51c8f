"""Parse manifest text into validated, fully expanded targets: the types, and the stages in order.

PURE: text in, :class:`Manifest` out; no disk, clock or environment (a ``rows:`` catalog is read
through the ``read_file`` callable the shell injects). :func:`parse_manifest` runs the stages::

    YAML with line marks (yamlmarks: keys as text, duplicate keys and unknown tags refused,
          recursive aliases refused, alias bombs capped)
      → JSON Schema (schema: fast compiled check; jsonschema explains only when it fails)
      → expansion: matrix axes × catalog rows → one binding of variables per target (expand)
      → ${var} interpolation (variables), defaults, lexical path checks (relpaths),
        model capability checks (modelcheck, over models.MODELS) → Target
      → unique names and output paths across every expansion; no output overwrites an input
      → the shell's disk checks (``check_targets``: input files), over every target made

The entries of ``targets:`` go through these stages one at a time, as the loader reads each (then it
is dropped), when nothing before ``targets:`` blocks them and ``defaults:``/``vars:`` do not come
after it: a large manifest is never in memory whole, parsed and expanded at once.

Every problem found is reported, sorted by line (diagnostics.Collector gathers them): a field the
schema rejected is left out of the later stages, the target's other fields are still checked (a
target whose out, matrix or rows is rejected or missing is skipped as a whole; one whose model is
rejected skips the model's rules). Path escapes are
diagnostics of kind ``"unsafe-path"`` and make the raised error an
:class:`~pixmake.errors.UnsafePathError`.
"""

from __future__ import annotations

import math
import re
import sys
import unicodedata
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from types import MappingProxyType
from typing import Any, Final

from pixmake.catalog import Row
from pixmake.diagnostics import Collector
from pixmake.errors import Diagnostic, ManifestError
from pixmake.expand import MAX_TARGETS, Expansion, ReadFile, expansions
from pixmake.modelcheck import ModelRequest, RequestPaths, check_model
from pixmake.relpaths import (
    leaves_root_message,
    long_name_message,
    normal_path,
    unprintable_message,
    windows_name_message,
)
from pixmake.schema import FieldPath, field_path, json_type, locate, mark_at, validate_entry, validate_paths
from pixmake.variables import interpolate, text_value
from pixmake.yamlmarks import load_yaml

__all__ = [
    "DEFAULT_BASE_URL",
    "MAX_MANIFEST_BYTES",
    "MAX_TARGETS",
    "CheckTargets",
    "Manifest",
    "ProviderConfig",
    "ReadFile",
    "Target",
    "claimed_paths",
    "interpolate",
    "is_url",
    "output_paths",
    "parse_manifest",
]

DEFAULT_BASE_URL: Final = "https://toapis.com"
MAX_MANIFEST_BYTES: Final = 32 * 1024 * 1024
_TARGET_NAME: Final = re.compile(r"[A-Za-z0-9_.-][A-Za-z0-9_. -]{0,199}")
_TAG: Final = re.compile(r"[A-Za-z0-9_.-]+")
_NO_PARAMS: Final[Mapping[str, Any]] = MappingProxyType({})  # one for every target without params
_MASK_NEEDS: Final = "a mask needs a reference image"  # modelcheck's words, when references: is empty


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
    ``fields`` says where the target and its path fields stand, so checks that need the disk can still
    point at the manifest: read it with :meth:`where`. Neither takes part in equality.
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
    params: Mapping[str, Any] = field(default_factory=lambda: _NO_PARAMS)
    line: int = 0
    origin: str = field(default="", compare=False)
    # One string, as it is kept for every target (a tuple of paths and numbers cost 300 B a target): the
    # target's key column, then "short-name line column" for each of "references[i]", "mask", "out", all
    # separated by spaces; then "|" and the target's field path (which may hold anything, so it comes last).
    fields: str = field(default="", compare=False, repr=False)

    @property
    def inputs(self) -> tuple[str, ...]:
        """Its references, then its mask: every input it names (a project path or a URL)."""
        return self.references if self.mask is None else (*self.references, self.mask)

    def where(self, name: str) -> tuple[str, int, int]:
        """(field path, line, column) of one of this target's fields (``"out"``, ``"references[0]"``), or of the
        target itself (``"name"``)."""
        numbers, _, path = self.fields.partition("|")
        if path:
            words = numbers.split(" ")
            if name == "name":
                return path, self.line, int(words[0])
            for i in range(1, len(words), 3):
                if words[i] == name:
                    return f"{path}.{name}", int(words[i + 1]), int(words[i + 2])
        fallback = f"targets.{self.name}" + (f".{name}" if name != "name" else "")
        return fallback, self.line, 1


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
    return tuple(_numbered(path, i) for i in range(1, target.n + 1))


def _numbered(path: PurePosixPath, i: int) -> str:
    """Where image ``i`` of a target with ``n`` > 1 and ``out`` ``path`` goes."""
    return str(path.with_name(f"{path.stem}-{i}{path.suffix}"))


def claimed_paths(targets: Iterable[Target]) -> frozenset[str]:
    """Every path the targets write or read: what no orphan's or stale output's cleanup may delete."""
    targets = tuple(targets)
    return frozenset((*(p for t in targets for p in output_paths(t)), *(p for t in targets for p in t.inputs)))


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
    c: Collector


def _target(
    raw_name: str, body: Mapping[str, Any], expansion: Expansion, ctx: _Context, rejected: frozenset[str]
) -> tuple[Target, bool]:
    """The target one expansion of an entry makes, and whether it is free of problems.

    ``body`` lacks the ``rejected`` fields (their schema problems are reported already). A target with
    problems is still returned, so the checks that need the disk can look at its other fields; it never
    reaches a :class:`Manifest`.
    """
    c, defaults, origin = ctx.c, ctx.defaults, expansion.origin
    where: FieldPath = ("targets", raw_name)
    variables = {**ctx.variables, **expansion.binding} if expansion.binding else ctx.variables
    failed = False

    def add(path: FieldPath, message: str, *, key: bool = False, kind: str = "manifest") -> None:
        nonlocal failed
        failed = True
        c.add(path, message, key=key, origin=_blamed(path), kind=kind)

    def _blamed(path: FieldPath) -> str:
        """The expansion a problem is told with: none for a default that uses no variable (it is every
        target's problem, not one catalog row's)."""
        if path[:1] == ("defaults",) and len(path) > 1 and "${" not in str(defaults.get(str(path[1]), "")):
            return ""
        return origin

    def warn(path: FieldPath, message: str) -> None:
        c.add(path, message, key=True, origin=origin, severity="warning")

    def text(value: str, path: FieldPath) -> str:
        result, problems = interpolate(value, variables)
        for problem in problems:
            add(path, problem, key=path == where)
        return result

    name, problems = interpolate(raw_name, variables)
    for problem in problems:
        add(where, problem, key=True)
    if not problems and not _TARGET_NAME.fullmatch(name):  # else each expansion's half-made name, once more
        add(where, f"target name {name!r} (after ${{…}}) may use only ASCII letters, digits, space and _ . -", key=True)
    # A prompt or model the schema refused (or a missing prompt) is reported already; the target's other
    # fields are still checked, against no model (its rules would be another model's).
    prompt = text(body["prompt"], (*where, "prompt")) if "prompt" in body else ""

    def inherited(key: str, fallback: Any) -> tuple[Any, FieldPath]:
        if key in body:
            return body[key], (*where, key)
        return defaults.get(key, fallback), ("defaults", key)

    def filled(raw: str, path: FieldPath) -> tuple[str, bool]:
        """A size or model, a template filled in (a matrix axis, a catalog column); whether that failed."""
        result, problems = interpolate(raw, variables, literal=False)
        for problem in problems:
            add(path, problem)
        return result, bool(problems)

    model, model_path = inherited("model", "gpt-4o-image")
    size, size_path = inherited("size", "1:1")
    size, size_failed = filled(size, size_path) if "${" in size else (size, False)
    if "model" in rejected:
        model, model_path = "", (*where, "model")  # no model: pixmake.inputs skips its file rules too
    elif "${" in model:
        model, model_failed = filled(model, model_path)
        if model_failed:  # no model to check against: as for one the schema rejected
            model, rejected = "", rejected | {"model"}
    model, size = _shared(model), _shared(size)
    n, n_path = inherited("n", 1)
    if isinstance(n, float):
        add(n_path, f"expected an integer, found {json_type(n)} {n!r} (write n: {int(n)})")
        n = int(n)
    merged = {**defaults.get("params", {}), **body.get("params", {})}
    params = MappingProxyType(merged) if merged else _NO_PARAMS
    tags: list[str] = []
    inherited_tags = [(("defaults", "tags", i), tag) for i, tag in enumerate(defaults.get("tags", []))]
    for path, tag in [*inherited_tags, *(((*where, "tags", i), tag) for i, tag in enumerate(body.get("tags", [])))]:
        failed = False
        if "${" in tag:
            value, problems = interpolate(tag, variables)
            for problem in problems:
                add(path, problem)
            failed = bool(problems)  # its half-made value is no tag to judge
        else:
            value = tag
        if not failed and not _TAG.fullmatch(value):
            add(path[:-1], f"tag {value!r} (after ${{…}}) may use only ASCII letters, digits and _ . -")
        tags.append(_shared(value))
    key_line, key_column = locate(ctx.doc, where, key=True)
    fields = [str(key_column)]  # see Target.fields

    def path_field(
        value: str, path: FieldPath, short: str, container: Any, index: str | int, *, urls: bool = False
    ) -> str:
        value = text(value, path)
        found = mark_at(container, index)
        line, column = found[2:4] if found is not None else locate(ctx.doc, path)
        fields.append(f"{short} {line} {column}")
        unprintable = unprintable_message(value)
        if unprintable is not None:
            add(path, unprintable)
            return value
        if urls and is_url(value):
            if not value.startswith("https://"):
                add(path, f"expected an https:// URL or a project path, found {value!r}")
            return value
        normal = normal_path(value)
        if normal is None:
            add(path, leaves_root_message(value), kind="unsafe-path")
            return value
        too_long = long_name_message(normal)
        if too_long is not None:
            add(path, too_long)
        return normal

    refs = body.get("references", ())
    references = tuple(
        path_field(ref, (*where, "references", i), f"references[{i}]", refs, i, urls=True) for i, ref in enumerate(refs)
    )
    mask = path_field(body["mask"], (*where, "mask"), "mask", body, "mask") if "mask" in body else None
    out = path_field(body["out"], (*where, "out"), "out", body, "out")
    if not out.endswith(".png"):
        add((*where, "out"), f"expected a path ending in .png, found {out!r} (pixmake writes every result as PNG)")
    elif out.rpartition("/")[2] == ".png":
        add((*where, "out"), f"expected a file name before .png, found {out!r}")
    elif "://" in str(body["out"]):
        add((*where, "out"), f"expected a path in the project, found the URL {body['out']!r}")
    elif n > 1 and normal_path(out) is not None and long_name_message(out) is None:  # image n's has most digits
        too_long = long_name_message(_numbered(PurePosixPath(out), n), image=n)
        if too_long is not None:
            add((*where, "out"), too_long)

    def add_unless_consequent(path: FieldPath, message: str) -> None:
        # `references: photos/mug.png` (no list) is reported by the schema; the mask's "needs a reference" is
        # only its echo.
        if not ("references" in rejected and path == (*where, "mask") and message.startswith(_MASK_NEEDS)):
            add(path, message)

    if "model" not in rejected:

        def add_unless_size_failed(path: FieldPath, message: str) -> None:  # one error for a size not filled in
            if not (size_failed and path == size_path):
                add_unless_consequent(path, message)

        check_model(
            ModelRequest(model, prompt, size, n, references, mask, params),
            RequestPaths(where, model_path, size_path, n_path),
            add_unless_size_failed,
            warn,
        )
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
        params=params,
        line=key_line,
        origin=origin,
        fields=" ".join(fields) + "|" + field_path(where),
    ), not failed


def _shared(value: Any) -> Any:
    """One string object for a value many targets repeat (a model, a size, a tag), not one per target."""
    return sys.intern(value) if type(value) is str else value


def _describe(target: Target) -> str:
    return f"line {target.line}" + (f" [{target.origin}]" if target.origin else "")


def _check_unique(targets: list[Target], c: Collector) -> None:
    """Every target name and every output path is made by one expansion only."""

    def clash(target: Target, name: str, message: str, severity: str = "error") -> None:
        field_name, line, column = target.where(name)
        c.diagnostic(Diagnostic(c.file, line, column, field_name, message, severity))

    owners: dict[str, Target] = {}
    names: dict[str, Target] = {}
    for target in targets:
        other = names.get(target.name)
        if other is not None:
            clash(
                target,
                "name",
                f"target name {target.name!r} is made twice: by {_describe(other)} and by {_describe(target)}",
            )
            continue
        names[target.name] = target
        for path in output_paths(target):
            owner = owners.get(path)
            if owner is not None:
                clash(
                    target,
                    "out",
                    f"output {path!r} is written twice: by target {owner.name!r} ({_describe(owner)}) "
                    f"and by target {target.name!r} ({_describe(target)})",
                )
            else:
                owners[path] = target
    folded: dict[str, str] = {}
    on_windows = "error" if sys.platform == "win32" else "warning"  # elsewhere, a teammate on Windows cannot clone it
    for path, target in owners.items():
        if (why := windows_name_message(path)) is not None:
            clash(
                target, "out", f"output {path!r} {why}; rename it if the project is built or cloned there", on_windows
            )
        first = folded.setdefault(portable_path(path), path)
        if first != path:
            shown = (repr(path), repr(first)) if path.casefold() == first.casefold() else (ascii(path), ascii(first))
            clash(target, "out", f"output {shown[0]} of target {target.name!r} and {shown[1]} of target "
                  f"{owners[first].name!r} {_one_file(path, first)}", "warning")  # fmt: skip
        parent = path  # string cuts, not PurePosixPath: pathlib would intern every folder name for good
        while (cut := parent.rfind("/")) > 0:
            parent = parent[:cut]
            owner = owners.get(parent)
            if owner is not None:
                clash(target, "out", f"output {path!r} needs {parent!r} as a folder, but target {owner.name!r} "
                      "writes a file there")  # fmt: skip
                break


def _one_file(path: str, other: str) -> str:
    """Why two names that :func:`portable_path` makes one are one file, and where."""
    if unicodedata.normalize("NFC", path) == unicodedata.normalize("NFC", other):  # NTFS keeps both forms apart
        return "differ only in Unicode form: on macOS they are one file, so rename one if the project is built there"
    return (
        "differ only in letter case or Unicode form: on macOS and Windows they are one file, "
        "so rename one if the project is built there"
    )


def portable_path(path: str) -> str:
    """``path`` as a case-insensitive, normalising file system (macOS, Windows) tells files apart: simple
    case mapping, not ``casefold`` (which makes "ß" and "ss" one, as neither does)."""
    return unicodedata.normalize("NFC", path).lower()


def _check_overwrites(
    targets: list[Target], catalogs: Iterable[str], c: Collector, *, manifest: str, lockfile: str, state_dir: str
) -> None:
    """No output path is an input (a reference, a mask, a catalog, the manifest, the lockfile) or local state.

    A build would overwrite the input, which changes the target's key, so every later build would pay
    again: such a manifest never settles.
    """
    inputs: dict[str, str] = {}
    for target in targets:
        for ref in target.references:
            if not is_url(ref):
                inputs.setdefault(ref, f"a reference of target {target.name!r} ({_describe(target)})")
        if target.mask is not None and not is_url(target.mask):
            inputs.setdefault(target.mask, f"the mask of target {target.name!r} ({_describe(target)})")
    for rel in catalogs:
        inputs.setdefault(rel, "a rows: catalog")
    for raw, role in ((manifest, "the manifest"), (lockfile, "the lockfile")):
        own = normal_path(raw)
        if own is not None:
            inputs.setdefault(own, role)
    state = normal_path(state_dir) or state_dir
    folded = {portable_path(path): path for path in inputs}
    for target in targets:
        for path in output_paths(target):
            overwritten = inputs.get(path)
            twin = folded.get(portable_path(path)) if overwritten is None else None
            if overwritten is not None:
                message = (
                    f"output {path!r} would overwrite {overwritten}; each build would change an input and pay again "
                    "(choose another out)"
                )
            elif twin is not None:
                field_name, line, column = target.where("out")
                message = f"output {path!r} and {twin!r}, {inputs[twin]}, {_one_file(path, twin)}"
                c.diagnostic(Diagnostic(c.file, line, column, field_name, message, "warning"))
                continue
            elif portable_path(path) == portable_path(state) or portable_path(path).startswith(
                portable_path(state) + "/"
            ):
                message = f"output {path!r} is inside pixmake's local state ({state}/); choose another out"
            elif ".git" in (folders := portable_path(path).split("/")[:-1]):
                message = f"output {path!r} is inside a .git folder, git's own; choose another out"
            elif ".pixmake" in folders:  # a nested project's state: git ignores it, so a clone pays again
                message = f"output {path!r} is inside a .pixmake folder, a project's local state; choose another out"
            else:
                continue
            field_name, line, column = target.where("out")
            c.diagnostic(Diagnostic(c.file, line, column, field_name, message))


# Fields of a target without which its other checks mean nothing (or would report made-up problems): the
# expansions (a name's ${sku} undefined), and the output the disk checks look at.
_ESSENTIAL: Final = frozenset({"out", "matrix", "rows"})


def _blocks_everything(path: FieldPath) -> bool:
    """Whether a schema error at ``path`` makes the semantic checks meaningless for every target."""
    return not path or path[0] in {"defaults", "vars"} or (path[0] == "targets" and len(path) < 2)


def _rejected(problems: Iterable[tuple[FieldPath, Diagnostic]]) -> dict[str, frozenset[str] | None]:
    """Per target entry, the fields the schema rejected; None when the whole entry is unusable."""
    found: dict[str, set[str] | None] = {}
    for path, _ in problems:
        if path[0] != "targets":
            continue
        name = str(path[1])
        if len(path) == 2 or path[2] in _ESSENTIAL:
            found[name] = None
        else:
            fields = found.setdefault(name, set())
            if fields is not None:
                fields.add(str(path[2]))
    return {name: None if fields is None else frozenset(fields) for name, fields in found.items()}


def _without(body: Any, fields: frozenset[str]) -> Any:
    return {k: v for k, v in body.items() if k not in fields} if fields else body


class _Made:
    """The targets made so far, and what making them needs; entries come one at a time.

    While the loader reads ``targets:`` (see :func:`~pixmake.yamlmarks.load_yaml`), :meth:`entry` checks
    each entry against the schema and makes its targets, once what comes before ``targets:`` is known to
    be valid; otherwise the entries are kept and made after the whole document is checked.
    """

    def __init__(self, file: str, read_file: ReadFile | None) -> None:
        self.file = file
        self.read_file = read_file
        self.ctx: _Context | None = None  # set by start(): at the first entry read, or once the whole document is
        self.declined = False  # what comes before targets: has problems, so entries wait for the whole document
        self.schema_problems: list[tuple[FieldPath, Diagnostic]] = []  # of the entries made as they were read
        self.catalogs: dict[str, list[Row] | None] = {}
        self.targets: list[Target] = []
        self.checked: list[Target] = []  # every target made, with problems or not: the disk checks look at them all
        self.retyped: list[Diagnostic] = []  # values YAML reads as other than their text (1.1 types, comments)

    def note_retyped(self, path: FieldPath, line: int, column: int, text: str, value: Any) -> None:
        """A plain scalar read as a value that is not its text: a warning where it becomes text in prompts."""
        if path[:1] == ("vars",) or (len(path) in (5, 6) and path[0] == "targets" and path[2] == "matrix"):
            kind = "boolean" if isinstance(value, bool) else "number"
            message = (
                f"{text} is read as the {kind} {text_value(value)} (YAML 1.1), which is what ${{…}} puts in its "
                f'place; quote it ("{text}") to keep the text'
            )
            self.retyped.append(Diagnostic(self.file, line, column, field_path(path), message, "warning"))

    def note_comment(self, path: FieldPath, line: int, column: int, value: str, comment: str) -> None:
        """A plain text cut short by a comment that reads like text (``Poster #3``): a warning."""
        shown = comment if len(comment) <= 40 else comment[:39] + "…"
        message = (
            f"the value ends at {value[-20:]!r}: YAML reads the rest of the line, {shown!r}, as a comment "
            "(' #' starts one); quote the whole value to keep it, or write '# ' if it is a comment"
        )
        self.retyped.append(Diagnostic(self.file, line, column, field_path(path), message, "warning"))

    def start(self, doc: Mapping[str, Any]) -> _Context:
        """Read ``vars:`` and ``defaults:`` of a document whose schema problems block none of its targets."""
        c = Collector(doc, self.file)
        variables: dict[str, str] = {}
        for name, value in (doc.get("vars") or {}).items():
            if isinstance(value, float) and not math.isfinite(value):
                c.add(("vars", name), f"expected a finite number, found {value}")
            variables[name] = text_value(value)
            if "${" in variables[name]:  # as written, in every prompt: say so (substituting now would change keys)
                c.add(
                    ("vars", name),
                    "a variable's value is put in as written: the ${…} in it is not substituted, and a prompt "
                    "gets that text; write the value out in full",
                    severity="warning",
                )
        self.ctx = _Context(doc, doc.get("defaults") or {}, variables, c)
        return self.ctx

    def entry(self, doc: Any, name: str) -> bool:
        """The loader read entry ``name``: make its targets now, unless what came before it has problems."""
        if self.declined:
            return False
        if self.ctx is None:
            before = validate_paths(doc, file=self.file, entries_checked=True)
            if any(_blocks_everything(path) for path, _ in before):
                self.declined = True
                return False
            self.start(doc)
        problems = validate_entry(doc, name, file=self.file)
        self.schema_problems += problems  # reported with the document's own, once it is read
        self.targets_of(name, doc["targets"][name], _rejected(problems).get(name, frozenset()))
        return True

    def targets_of(self, raw_name: str, entry: Any, fields: frozenset[str] | None) -> None:
        """Make the targets of one entry, without the ``fields`` the schema rejected (None: the whole entry).

        Its problems are located as they are reported, so the caller may drop the entry afterwards; its
        memory then holds the next targets, instead of the whole parsed document sitting beside them.
        """
        if fields is None:
            return
        assert self.ctx is not None
        body = _without(entry, fields)
        for expansion in expansions(("targets", raw_name), body, self.ctx.c, self.read_file, self.catalogs):
            target, ok = _target(raw_name, body, expansion, self.ctx, fields)
            self.checked.append(target)
            if ok:
                self.targets.append(target)


def _set_after_targets(doc: Mapping[str, Any]) -> bool:
    """Whether ``defaults:`` or ``vars:`` comes after ``targets:`` (so targets made as they were read lack it)."""
    keys = list(doc)
    return any(key in {"defaults", "vars"} for key in keys[keys.index("targets") + 1 :]) if "targets" in keys else False


CheckTargets = Callable[[tuple[Target, ...]], Sequence[Diagnostic]]
"""The shell's checks of targets against the disk (input files); returns the problems found."""


def parse_manifest(
    text: str,
    *,
    file: str,
    read_file: ReadFile | None = None,
    check_targets: CheckTargets | None = None,
    manifest_name: str = "pixmake.yaml",
    lockfile_name: str = "pixmake.lock",
    state_dir: str = ".pixmake",
    stream: bool = True,
) -> Manifest:
    """Parse, validate and expand a manifest; raises ManifestError (UnsafePathError) listing every problem.

    ``read_file`` reads a catalog named by ``rows:`` (a project-relative path, already checked
    lexically); without it a manifest that uses ``rows:`` is an error. ``check_targets`` runs the
    checks that need the disk over every target that could be built, even when others have problems,
    so one run reports everything. ``manifest_name``, ``lockfile_name`` and ``state_dir`` are the
    project-relative paths no output may overwrite. With ``stream`` (the default), each entry of
    ``targets`` is made into targets as the loader reads it, and dropped: the whole parsed document is
    never in memory (the result is the same as without).
    """
    if len(text) > MAX_MANIFEST_BYTES:
        raise ManifestError.at(file, 1, 1, "", f"manifest is larger than {MAX_MANIFEST_BYTES >> 20} MB")
    made = _Made(file, read_file)
    on_entry = made.entry if stream else None
    doc = (
        load_yaml(text, file=file, on_entry=on_entry, on_retyped=made.note_retyped, on_comment=made.note_comment)
        if text.strip()
        else None
    )
    if doc is None:
        raise ManifestError.at(file, 1, 1, "", "manifest is empty; it needs at least 'version: 1' and 'targets:'")
    if not isinstance(doc, dict):
        raise ManifestError.at(
            file, 1, 1, "", f"expected a mapping with 'version' and 'targets', found {json_type(doc)}"
        )
    streamed = made.ctx is not None  # every entry was made as it was read, and is None in doc
    if streamed and _set_after_targets(doc):  # those targets were made without them: read the whole document
        options = {"manifest_name": manifest_name, "lockfile_name": lockfile_name, "state_dir": state_dir}
        return parse_manifest(
            text, file=file, read_file=read_file, check_targets=check_targets, stream=False, **options
        )
    schema_problems = validate_paths(doc, file=file, entries_checked=streamed) + made.schema_problems
    if any(_blocks_everything(path) for path, _ in schema_problems):
        raise ManifestError.of([d for _, d in schema_problems])
    c = (made.ctx or made.start(doc)).c
    for _, diagnostic in schema_problems:
        c.diagnostic(diagnostic)
    for diagnostic in made.retyped:
        c.diagnostic(diagnostic)
    if not streamed:
        # A schema error in one field leaves the target's other fields to the later stages: all problems at once.
        rejected = _rejected(schema_problems)
        entries = doc["targets"]
        for raw_name, entry in entries.items():
            made.targets_of(raw_name, entry, rejected.get(raw_name, frozenset()))
            entries[raw_name] = None  # see _Made.targets_of
    targets = made.targets
    catalogs = made.catalogs
    _check_unique(targets, c)
    _check_overwrites(targets, catalogs, c, manifest=manifest_name, lockfile=lockfile_name, state_dir=state_dir)
    errors, warnings = c.result()
    if check_targets is not None:
        reported = {d.field for d in errors}  # a field already reported is not reported again from the disk
        errors += [d for d in check_targets(tuple(made.checked)) if d.field not in reported]
    if errors:
        raise ManifestError.of(errors)
    return Manifest(
        file=file,
        provider=_provider(doc),
        targets=tuple(targets),
        catalogs=tuple(sorted(rel for rel in catalogs)),
        warnings=tuple(sorted(warnings, key=lambda d: (d.line, d.column))),
    )
