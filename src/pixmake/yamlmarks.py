"""Load manifest YAML into plain values that remember where each key and value stood in the source.

PURE: text in, values out. The first stage of :func:`pixmake.manifest.parse_manifest`; what it
returns feeds the schema check (:mod:`pixmake.schema`), whose ``locate`` reads the marks. PyYAML's C
parser reads the events; our own builder turns them into ``MarkedDict`` / ``MarkedList`` /
scalars, keeping keys as text and refusing what a manifest never needs: duplicate keys, tags other
than the core schema's, recursive aliases, and alias bombs (capped at :data:`MAX_EXPANDED_NODES`).
Values are built straight from the parser's events: the node graph is never held in memory.
Every YAML problem becomes a :class:`~pixmake.errors.ManifestError` with a line and column.
"""

from __future__ import annotations

import math
import re
import sys
from collections.abc import Callable, Iterable
from typing import Any, Final

import yaml

from pixmake.errors import Diagnostic, ManifestError
from pixmake.schema import field_path
from pixmake.variables import text_value

__all__ = [
    "MAX_EXPANDED_NODES",
    "Mark",
    "MarkedDict",
    "MarkedList",
    "OnComment",
    "OnEntry",
    "OnRetyped",
    "load_yaml",
    "unmerged",
]

MAX_EXPANDED_NODES: Final = 2_000_000
_TAG_PREFIX: Final = "tag:yaml.org,2002:"
_MERGE: Final = "tag:yaml.org,2002:merge"
_SCALARS: Final = yaml.constructor.SafeConstructor()  # only its pure per-scalar converters are used

_BaseLoader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


OnEntry = Callable[[Any, str], bool]
"""Called with the document (as read so far) and the name of each entry of ``targets`` once it is read;
True when it is done with the entry, which the document then holds as None (see :func:`load_yaml`)."""

OnRetyped = Callable[[tuple[str | int, ...], int, int, str, Any], None]
"""Called with (path, line, column, text, value) for a plain scalar YAML 1.1 read as something that is
not its text: ``3:2`` (base 60: 182), ``010`` (octal: 8), ``yes`` (true), ``9.90`` (9.9)."""

OnComment = Callable[[tuple[str | int, ...], int, int, str, str], None]
"""Called with (path, line, column, value, comment) for a plain text scalar cut short by a comment on its
line that reads like text: ``prompt: Poster #3 for the sale`` is "Poster" (a ``#`` after a space starts a
comment), and ``comment`` is "#3 for the sale". A comment written as one (``# …``, after ``#`` a space) is
not reported."""

_COMMENT: Final = re.compile(r"[ \t]+(#[^ \t\r\n][^\r\n]*)")
_TEXTY_COMMENT: Final = re.compile(r"[ \t]#[^ \t\r\n]")

Mark = tuple[int, int, int, int]
"""1-based (key line, key column, value line, value column); a list item's key position is its own."""

_BITS: Final = 26  # a manifest is at most 32 MB, so no line or column needs more


def _pack(key_line: int, key_column: int, value_line: int, value_column: int) -> int:
    """A mark as one integer: 40 bytes where a tuple of four cost about 130 (a manifest has one per value)."""
    return (((key_line << _BITS | key_column) << _BITS | value_line) << _BITS) | value_column


def _unpack(packed: int) -> Mark:
    mask = (1 << _BITS) - 1
    return packed >> 3 * _BITS, packed >> 2 * _BITS & mask, packed >> _BITS & mask, packed & mask


class MarkedDict(dict[Any, Any]):
    """A mapping that remembers where each key and value stood in the source: :meth:`mark`."""

    __slots__ = ("column", "line", "marks")

    def __init__(self) -> None:
        super().__init__()
        self.marks: dict[Any, int] = {}  # packed, per key
        self.line = 1
        self.column = 1

    def mark(self, key: Any) -> Mark | None:
        """Where ``key`` and its value stood, or None for a key the source did not have."""
        packed = self.marks.get(key)
        return None if packed is None else _unpack(packed)


class MarkedList(list[Any]):
    """A list that remembers where each item stood in the source (an item's "key" position is its own)."""

    __slots__ = ("marks",)

    def __init__(self, items: Iterable[Any], marks: list[int]) -> None:
        super().__init__(items)
        self.marks = marks  # packed, per index: a list, as a dict per list cost 160 B more

    def mark(self, index: Any) -> Mark | None:
        """Where item ``index`` stood, or None for an index the source did not have."""
        inside = isinstance(index, int) and 0 <= index < len(self.marks)
        return _unpack(self.marks[index]) if inside else None


class _YamlProblem(Exception):
    def __init__(self, mark: Any, message: str, field: str = "") -> None:
        super().__init__(message)
        self.line = mark.line + 1
        self.column = mark.column + 1
        self.message = message
        self.field = field


def _refused_tag(tag: str, mark: Any, path: tuple[str | int, ...] = ()) -> _YamlProblem:
    return _YamlProblem(
        mark, f"the tag {tag.removeprefix(_TAG_PREFIX)!r} is not allowed in a manifest", field_path(path)
    )


def _scalar(tag: str, value: str, mark: Any) -> Any:
    if tag == "tag:yaml.org,2002:str" or tag == "tag:yaml.org,2002:timestamp":
        return value  # a date-like value stays the text the user wrote
    if tag == "tag:yaml.org,2002:null":
        return None
    if tag not in _NUMBERS:
        raise _refused_tag(tag, mark)
    try:
        if tag == "tag:yaml.org,2002:int" and value.isdigit() and (value == "0" or value[0] != "0"):
            number: Any = int(value)
        else:
            number = _NUMBERS[tag](yaml.ScalarNode(tag, value, mark, mark))
    except (ValueError, KeyError, IndexError):  # an explicit tag on text that is none (!!int abc, !!int +)
        kind = tag.removeprefix(_TAG_PREFIX)
        raise _YamlProblem(mark, f"{_shown(value)} is not a valid {kind} (quote it for text)") from None
    if isinstance(number, float) and not math.isfinite(number):  # .inf and .nan: no manifest field takes them
        raise _YamlProblem(mark, f"expected a finite number, found {value}")
    if type(number) is int and number.bit_length() > 63:  # 1:59:59:… (base 60) grows past what anything takes
        raise _YamlProblem(mark, f"{_shown(value)} is too large a number (quote it for text)")
    return number


def _shown(value: str) -> str:
    return repr(value) if len(value) <= 40 else f"{value[:40]!r}…"


_NUMBERS: Final[dict[str, Callable[[yaml.ScalarNode], Any]]] = {
    "tag:yaml.org,2002:int": _SCALARS.construct_yaml_int,
    "tag:yaml.org,2002:float": _SCALARS.construct_yaml_float,
    "tag:yaml.org,2002:bool": _SCALARS.construct_yaml_bool,
}


class _Anchored:
    """What an anchor names: the built value, where its node starts, and its text if it is a scalar."""

    __slots__ = ("mark", "retyped", "text", "value")

    def __init__(self, value: Any, mark: Any, text: str | None, *, retyped: bool = False) -> None:
        self.value, self.mark, self.text, self.retyped = value, mark, text, retyped


class _Events:
    """PyYAML's parser, typed: its event methods carry no annotations."""

    def __init__(self, loader: yaml.SafeLoader) -> None:
        self._loader = loader

    def get(self) -> Any:
        return self._loader.get_event()  # type: ignore[no-untyped-call]

    def peek(self) -> Any:
        return self._loader.peek_event()  # type: ignore[no-untyped-call]

    def at(self, kind: type[yaml.Event]) -> bool:
        return bool(self._loader.check_event(kind))

    def resolve(self, kind: type[yaml.Node], value: str | None, implicit: Any) -> str:
        return str(self._loader.resolve(kind, value, implicit))  # type: ignore[no-untyped-call]


class _Builder:
    """Builds plain values with marks straight from the parser's events; no node graph is ever held.

    PyYAML's composer would first build every node (with two marks each) and its constructor then
    copy them into values: for a large manifest that graph was most of the memory a build ever used.
    This builder knows the only shapes a manifest has, refuses duplicate keys and recursive aliases,
    keeps every key as text, and records (line, column) of every key and value for diagnostics. A
    duplicate key is recorded in ``problems`` (the first value is kept) and building goes on, so every
    duplicate is reported. Aliases share the anchored value, as PyYAML does, and point at its node.
    """

    def __init__(
        self,
        loader: yaml.SafeLoader,
        on_entry: OnEntry | None = None,
        on_retyped: OnRetyped | None = None,
        on_comment: tuple[str, OnComment] | None = None,
    ) -> None:
        self.events = _Events(loader)
        self.on_entry = on_entry
        self.on_retyped = on_retyped
        self.on_comment = on_comment  # with the text the loader reads
        self.top: MarkedDict | None = None  # the document's mapping, while it is built
        self.targets_mark = 0  # packed mark of the document's first "targets:" key, when it is being built
        self.anchors: dict[str, _Anchored] = {}
        self.open: dict[str, Any] = {}  # marks  # anchors whose node is being built
        self.problems: list[_YamlProblem] = []
        self.at: tuple[str | int, ...] = ()  # the node or collection being read: a syntax error's field

    def document(self) -> Any:
        """The single document of the stream (None when there is none)."""
        events = self.events
        events.get()  # stream start
        if events.at(yaml.StreamEndEvent):
            return None
        start = events.get().start_mark  # document start
        value = self.node(())[0]
        events.get()  # document end
        if not events.at(yaml.StreamEndEvent):
            found = events.get()
            raise yaml.composer.ComposerError(
                "expected a single document in the stream", start, "but found another document", found.start_mark
            )
        return value

    def node(self, path: tuple[str | int, ...]) -> tuple[Any, Any, str | None]:
        """The next node's value, where its node starts, and its text if it is a scalar."""
        self.at = path
        event = self.events.get()
        mark: Any = event.start_mark
        if isinstance(event, yaml.AliasEvent):
            name = event.anchor
            if name in self.open:
                message = "an alias refers to a node that contains it (a recursive structure)"
                raise _YamlProblem(self.open[name], message, field_path(path))
            if name not in self.anchors:
                raise yaml.composer.ComposerError(None, None, f"found undefined alias {name!r}", mark)
            anchored = self.anchors[name]
            if anchored.retyped:  # `alias: *ratio`: read where it is written, put in a prompt here
                self._retyped(path, anchored.mark, anchored.text or "", anchored.value)
            return anchored.value, anchored.mark, anchored.text
        anchor = event.anchor
        if anchor is not None:
            first = self.anchors[anchor].mark if anchor in self.anchors else self.open.get(anchor)
            if first is not None:
                raise yaml.composer.ComposerError(
                    f"found duplicate anchor {anchor!r}; first occurrence", first, "second occurrence", mark
                )
            self.open[anchor] = mark
        text = None
        retyped = False
        if isinstance(event, yaml.ScalarEvent):
            explicit = event.tag if event.tag not in (None, "!") else None  # else YAML 1.1 decides what it is
            tag = explicit or self.events.resolve(yaml.ScalarNode, event.value, event.implicit)
            try:
                value: Any = _scalar(tag, event.value, mark)
            except _YamlProblem as problem:
                problem.field = field_path(path)
                raise
            text = event.value
            retyped = type(value) is not str and value is not None and explicit is None and text_value(value) != text
            if retyped:
                self._retyped(path, mark, text, value)
            elif self.on_comment is not None and not event.style and type(value) is str:  # plain: None, or ""
                source, on_comment = self.on_comment
                end: int = getattr(event.end_mark, "index", -1)  # a parser's event always has its end mark
                if source[end : end + 1] in (" ", "\t") and (cut := _COMMENT.match(source, end)) is not None:
                    on_comment(path, mark.line + 1, mark.column + 1, value, cut.group(1))
        elif isinstance(event, yaml.SequenceStartEvent):
            value = self.sequence(event, path)
        else:
            value = self.mapping(event, path)
        if anchor is not None:
            del self.open[anchor]
            self.anchors[anchor] = _Anchored(value, mark, text, retyped=text is not None and retyped)
        return value, mark, text

    def _retyped(self, path: tuple[str | int, ...], mark: Any, text: str, value: Any) -> None:
        if self.on_retyped is not None:
            self.on_retyped(path, mark.line + 1, mark.column + 1, text, value)

    def _more(self, end: type[yaml.Event], path: tuple[str | int, ...]) -> bool:
        """Whether the collection at ``path`` has another item (the parser reads on from inside it)."""
        self.at = path
        return not self.events.at(end)

    def _tag(self, event: Any, kind: type[yaml.Node]) -> str:
        tag = event.tag
        return self.events.resolve(kind, None, event.implicit) if tag is None or tag == "!" else tag

    def sequence(self, event: Any, path: tuple[str | int, ...]) -> MarkedList:
        if self._tag(event, yaml.SequenceNode) != "tag:yaml.org,2002:seq":
            raise _refused_tag(self._tag(event, yaml.SequenceNode), event.start_mark, path)
        items: list[Any] = []
        marks: list[int] = []
        while self._more(yaml.SequenceEndEvent, path):
            value, mark, _ = self.node((*path, len(items)))
            items.append(value)
            marks.append(_pack(mark.line + 1, mark.column + 1, mark.line + 1, mark.column + 1))
        self.events.get()
        return MarkedList(items, marks)

    def mapping(self, event: Any, path: tuple[str | int, ...]) -> MarkedDict:
        if self._tag(event, yaml.MappingNode) != "tag:yaml.org,2002:map":
            raise _refused_tag(self._tag(event, yaml.MappingNode), event.start_mark, path)
        data = MarkedDict()
        mark = event.start_mark
        data.line, data.column = mark.line + 1, mark.column + 1
        marks = data.marks
        streaming = False
        if not path:
            self.top = data
        elif self.targets_mark and path == ("targets",) and self.top is not None:
            # The entries are handed to on_entry as they are read; the document names them already.
            self.top["targets"], self.top.marks["targets"] = data, self.targets_mark
            self.targets_mark, streaming = 0, True
        seen: dict[str, Any] = {}  # key → its mark
        while self._more(yaml.MappingEndEvent, path):
            key_event = self.events.peek()
            if self._is_merge_key(key_event):
                self.events.get()
                self.merge(data, path)
                continue
            if isinstance(key_event, yaml.SequenceStartEvent | yaml.MappingStartEvent):
                raise _YamlProblem(key_event.start_mark, "a key must be plain text, not a list or mapping")
            _, key_mark, key = self.node(path)
            if key is None:  # an alias to a list or mapping
                raise _YamlProblem(key_mark, "a key must be plain text, not a list or mapping")
            if key in seen:
                message = f"duplicate key {key!r} (first defined on line {seen[key].line + 1})"
                self.problems.append(_YamlProblem(key_mark, message, field_path((*path, key))))
                self.node((*path, key))  # the value: built (for its anchors), not kept
                continue
            seen[key] = key_mark
            key = sys.intern(key)  # one "prompt" for every target, not one each
            if not path and key == "targets" and self.on_entry is not None:
                self.at = (key,)  # where a syntax error in what comes next is, as node() would say
                start = self.events.peek().start_mark
                self.targets_mark = _pack(key_mark.line + 1, key_mark.column + 1, start.line + 1, start.column + 1)
            data[key], value_mark, _ = self.node((*path, key))
            if not path:
                self.targets_mark = 0  # read: a later "targets" (a duplicate) is not streamed
            marks[key] = _pack(key_mark.line + 1, key_mark.column + 1, value_mark.line + 1, value_mark.column + 1)
            if streaming and self.on_entry is not None and self.on_entry(self.top, key):
                data[key] = None  # done with: on_entry made its targets
        self.events.get()
        return data

    def _is_merge_key(self, event: Any) -> bool:
        if not isinstance(event, yaml.ScalarEvent) or event.anchor is not None or event.tag is not None:
            return False
        return self.events.resolve(yaml.ScalarNode, event.value, event.implicit) == _MERGE

    def merge(self, data: MarkedDict, path: tuple[str | int, ...]) -> None:
        """``<<: *a`` or ``<<: [*a, *b]``: keys the mapping does not set itself (earlier sources win)."""
        value, mark, _ = self.node(path)
        if isinstance(value, MarkedList):
            sources = [(item, _unpack(value.marks[i])) for i, item in enumerate(value)]
        else:
            sources = [(value, (mark.line + 1, mark.column + 1, 0, 0))]
        for source, (line, column, _, _) in sources:
            if not isinstance(source, MarkedDict):
                problem = _YamlProblem(mark, "a merge key (<<) takes a mapping or a list of mappings")
                problem.line, problem.column = line, column
                raise problem
            for key, item in source.items():
                if key not in data:
                    data[key] = item
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


# The lines git writes around a conflict it leaves to the user (and diff3's base marker), at a line's start.
_CONFLICT_MARKER: Final = re.compile(r"^(<{7}|\|{7}|={7}|>{7})(?: |\r?$)", re.MULTILINE)


def unmerged(text: str, what: str) -> tuple[int, str] | None:
    """A file git could not merge (``what`` it is: "manifest", "catalog"): the line of its first conflict
    marker, and what to say of it; None without one."""
    found = _CONFLICT_MARKER.search(text)
    if found is None:
        return None
    message = (
        f"git conflict marker {found.group(1)}: a merge left this {what} unresolved; resolve the conflict "
        "(keep the lines you want, delete the marker lines), then run again"
    )
    return text.count("\n", 0, found.start()) + 1, message


def _raise_if_mid_merge(text: str, file: str) -> None:
    """A manifest git could not merge: its first conflict marker, not the YAML error the markers cause."""
    found = unmerged(text, "manifest")
    if found is not None:
        raise ManifestError.at(file, found[0], 1, "", found[1]) from None


def _syntax_message(text: str, line: int, column: int, what: str) -> str:
    lines = text.splitlines()
    here = lines[line - 1] if 0 < line <= len(lines) else ""
    if "another document" in what:
        return "a manifest is a single YAML document; remove the second '---' and what follows, or merge them"
    if "\t" in here[: max(column, 1)] or (here.startswith("\t")):
        return "a tab character; YAML indents with spaces only"
    if "${" in here and ("[" in here or "{" in here.replace("${", "")):
        return f'YAML syntax error: {what} (inside [ ] or {{ }}, quote a value holding ${{…}}: "a/${{x}}.png")'
    if "mapping values are not allowed" in what and ": " in here.partition(": ")[2]:
        return f"YAML syntax error: {what} (quote a value that holds ': ', as in prompt: \"Product: a mug\")"
    unclosed = _unclosed_quote(lines, line)
    if unclosed and "never closed" not in what:
        return f"YAML syntax error: {what} (the quote opened on line {unclosed} is not closed there: a missing quote?)"
    hint = _structure_hint(lines, line, column, what)
    return f"YAML syntax error: {what}" + (f" ({hint})" if hint else "")


_QUOTED_THEN_MORE: Final = re.compile(r"""^\s*(?:-\s+)?[^#"':]+:\s+(["'])[^"']*\1\s*[^\s#]""")


def _structure_hint(lines: list[str], line: int, column: int, what: str) -> str:
    """What a newcomer's YAML most likely got wrong where PyYAML's words say only what it expected."""
    here = lines[line - 1] if 0 < line <= len(lines) else ""
    if "cannot start any token" in what and 0 < column <= len(here) and here[column - 1] in "@`%":
        return f'a plain value cannot start with {here[column - 1]}; quote the value, as in prompt: "@brand mug"'
    if "did not find expected key" in what and _QUOTED_THEN_MORE.match(here):
        return "a value that starts with a quote must end with it: quote all of it, as in prompt: '\"Autumn\" mug'"
    if "mapping values are not allowed" in what or "did not find expected key" in what:
        above = next(
            (lines[n] for n in range(line - 2, -1, -1) if lines[n].strip() and not lines[n].lstrip().startswith("#")),
            "",
        )
        if above and ":" not in above.split("#", 1)[0]:
            return f"the line above, {above.strip()!r}, has no ':'; a name needs one, as in hero:"
        return "check this line's indentation against the lines above: a target's fields line up under its name"
    return ""


_OPENS_QUOTE: Final = re.compile(r"""^\s*(?:-\s+)?[^#"']*?:\s+(["'])(.*)$""")


def _unclosed_quote(lines: list[str], line: int) -> int:
    """The line whose value opens a quote that only closes at ``line`` (or the line before), where YAML
    noticed something wrong; 0 when there is none. A quoted value closed on its next line, or long
    before the error, is a multi-line value, not a missing quote."""
    for number in range(line - 1, 0, -1):
        found = _OPENS_QUOTE.match(lines[number - 1])
        if found is None:
            continue
        quote, rest = found.groups()
        closed = rest.replace("\\\\", "").replace('\\"', "") if quote == '"' else rest.replace("''", "")
        if quote in closed:
            return 0  # the nearest value that opens a quote closes it on its own line
        between = lines[number : max(line - 2, number)]  # after it, before the line YAML stopped at
        return number if not any(quote in text for text in between) else 0
    return 0


def load_yaml(
    text: str,
    *,
    file: str,
    on_entry: OnEntry | None = None,
    on_retyped: OnRetyped | None = None,
    on_comment: OnComment | None = None,
) -> Any:
    """The single YAML document in ``text`` as marked values (None when it holds no node).

    Raises :class:`~pixmake.errors.ManifestError` (naming ``file``) for a syntax error, a refused tag,
    duplicate key or recursive alias, a control character, too deep a nesting, or an alias bomb.

    ``on_entry`` sees each entry of the document's ``targets:`` mapping as soon as it is read, with
    the document as read so far (its ``targets`` holds the entries read, and their marks); an entry
    it is done with is not kept, so the whole document is never in memory at once. It is not called
    for a text with both anchors and aliases: the alias-bomb check needs the whole document. Problems
    found later in the text still raise here, so ``on_entry`` should only gather its own.
    ``on_retyped`` hears of each plain scalar read as a value that is not its text (see :data:`OnRetyped`),
    ``on_comment`` of each plain text a comment that reads like text cuts short (see :data:`OnComment`).
    """
    if "&" in text and "*" in text:
        on_entry = None
    builder: _Builder | None = None
    try:
        loader = _BaseLoader(text)
        try:
            texty = on_comment is not None and _TEXTY_COMMENT.search(text) is not None  # else no scalar is cut
            builder = _Builder(loader, on_entry, on_retyped, (text, on_comment) if texty and on_comment else None)
            doc = builder.document()
        finally:
            loader.dispose()
        if builder.problems:
            raise ManifestError([Diagnostic(file, p.line, p.column, p.field, p.message) for p in builder.problems])
    except _YamlProblem as problem:
        _raise_if_mid_merge(text, file)
        raise ManifestError.at(file, problem.line, problem.column, problem.field, problem.message) from None
    except yaml.MarkedYAMLError as error:
        _raise_if_mid_merge(text, file)
        mark = error.problem_mark or error.context_mark
        what = error.problem or error.context or "invalid YAML"
        quoted = error.context == "while scanning a quoted scalar"
        if quoted and "end of stream" in str(error.problem) and error.context_mark is not None:
            mark = error.context_mark  # where the quote opened, not the end of the file it ran to
            what = "a quoted value is never closed: it runs to the end of the file (a missing quote?)"
        line, column = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        field = field_path(builder.at) if builder is not None else ""  # where the parser was when it stopped
        raise ManifestError.at(file, line, column, field, _syntax_message(text, line, column, what)) from None
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
