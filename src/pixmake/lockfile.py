"""``pixmake.lock``: what each target's outputs were built from. Parse and render, nothing else.

PURE. Version 2 of the format is a header line and then one pretty-printed JSON document per target,
sorted by name and separated by a blank line, with no separator between them::

    {"generator": "pixmake", "version": 2}

    {
      "target": "hero",
      "key": "…",
      …
    }

so adding, changing or removing a target changes only its own block (a single JSON object would put a
comma on the previous block's closing line), and most git merges are clean. ``jq`` reads such a
sequence of documents as it is. No field changes unless its target changed (no timestamps). Version 1
(one JSON object with ``targets``) is still read; the next write upgrades it. A lockfile from a newer
pixmake, or a corrupt one, raises :class:`~pixmake.errors.LockfileError`: a silent rebuild would spend
money.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Final

from pixmake import invocation
from pixmake.errors import LockfileError
from pixmake.relpaths import has_unsafe_characters

__all__ = [
    "LOCK_VERSION",
    "NO_PARAMS",
    "Lock",
    "LockEntry",
    "LockedInput",
    "LockedOutput",
    "SharedInputs",
    "entry_from_json",
    "entry_to_json",
    "lock_pieces",
    "lock_text",
    "merged_pieces",
    "parse_lock",
    "render_lock",
    "shared_input",
    "split_pieces",
]

LOCK_VERSION: Final = 2
_SPACE: Final = re.compile(r"[ \t\r\n]*")
NO_PARAMS: Final[Mapping[str, Any]] = MappingProxyType({})
"""The params of every entry without any: one object, not one per entry."""


def _restore() -> str:
    """The way back from a damaged lock, free first."""
    checkout, plan = invocation.git("checkout", "--", "pixmake.lock"), invocation.pixmake("plan")
    return (
        f"restore it from git ({checkout}), or delete it if it was never committed; then run {plan}: a target it "
        "would create or regenerate whose files on disk a build made for its current inputs is kept free by "
        f"{invocation.pixmake('accept', 'TARGET')}, where a build would pay for it again"
    )


@dataclass(frozen=True, slots=True)
class LockedInput:
    """A reference or mask as it was when the target was built; ``pixels``: the digest of what it shows
    (:func:`pixmake.decode.pixel_digest`), when known, so that a file re-saved with the same pixels is
    not paid for again."""

    path: str
    sha256: str
    pixels: str | None = None


@dataclass(frozen=True, slots=True)
class LockedOutput:
    """One generated image file."""

    path: str
    sha256: str
    bytes: int
    width: int
    height: int


@dataclass(frozen=True, slots=True)
class LockEntry:
    """One target's block: its key, the inputs that made it, and its outputs.

    ``stale`` holds outputs the target wrote before its ``out`` or ``n`` changed and writes no longer;
    they stay recorded until ``build --prune`` deletes them, so a rename never leaves an untracked file.
    ``emulator`` marks outputs made by the bundled emulator (``build --emulator``): placeholders, which
    a build against the provider regenerates. ``accepted`` marks outputs ``pixmake accept`` recorded (a
    retouch, or images kept for new inputs): a plan says when a build would replace them. When only some
    are (one kept as the first image when ``n`` was raised), ``accepted_images`` holds their sha256.
    """

    key: str
    model: str
    prompt: str
    size: str
    n: int
    outputs: tuple[LockedOutput, ...]
    references: tuple[LockedInput, ...] = ()
    mask: LockedInput | None = None
    params: Mapping[str, Any] = field(default_factory=lambda: NO_PARAMS)
    task_id: str | None = None
    stale: tuple[LockedOutput, ...] = ()
    emulator: bool = False
    accepted: bool = False
    accepted_images: tuple[str, ...] = ()

    def accepted_image(self, sha256: str) -> bool:
        """Whether an output with these bytes is one ``pixmake accept`` recorded."""
        return self.accepted and (not self.accepted_images or sha256 in self.accepted_images)


@dataclass(frozen=True, slots=True)
class Lock:
    """All locked targets, by name."""

    entries: Mapping[str, LockEntry] = field(default_factory=lambda: MappingProxyType({}))

    def with_entry(self, name: str, entry: LockEntry) -> Lock:
        """A copy with ``name`` set to ``entry``."""
        return Lock(MappingProxyType({**self.entries, name: entry}))

    def without(self, names: set[str] | frozenset[str]) -> Lock:
        """A copy without the given targets."""
        return Lock(MappingProxyType({k: v for k, v in self.entries.items() if k not in names}))


def _output_json(o: LockedOutput) -> dict[str, Any]:
    return {"path": o.path, "sha256": o.sha256, "bytes": o.bytes, "width": o.width, "height": o.height}


class _NotOurs(ValueError):
    """A value no pixmake writes, which a build would act on (a hostile or hand-made lock): said in words."""


def _output(o: Mapping[str, Any]) -> LockedOutput:
    path = str(o["path"])
    if (
        not path.endswith(".png")
        or path.startswith(("/", "~"))
        or (path[1:2] == ":" and path[:1].isascii() and path[:1].isalpha())
        or "\\" in path
        or has_unsafe_characters(path)
        or not _NOT_WRITTEN.isdisjoint(parts := path.lower().split("/"))
        or parts[0] == ".pixmake"
    ):  # what normal_path refuses, or would change, at a fifth of its cost: a lock has an output per image
        # build --prune deletes an orphan's outputs: never the manifest, a .git file or pixmake's own cache
        raise _NotOurs(f"output path {json.dumps(path)} is not one pixmake writes (a .png outside .git/ and .pixmake/)")
    return LockedOutput(path, str(o["sha256"]), int(o["bytes"]), int(o["width"]), int(o["height"]))


_NOT_WRITTEN: Final = frozenset(("", ".", "..", ".git"))  # path parts (and .pixmake/ at the top), as the manifest


def _input_json(i: LockedInput) -> dict[str, Any]:
    if i.pixels is None:
        return {"path": i.path, "sha256": i.sha256}
    return {"path": i.path, "sha256": i.sha256, "pixels": i.pixels}  # older pixmakes read past it


SharedInputs = dict[tuple[str, str, str | None], LockedInput]
"""The inputs read so far, by path, sha256 and pixels: an input many entries name is kept once."""


def shared_input(path: str, sha256: str, shared: SharedInputs | None, pixels: str | None = None) -> LockedInput:
    """The input ``path`` with content ``sha256``: the one in ``shared`` when an entry read before named it too."""
    if shared is None:
        return LockedInput(path, sha256, pixels)
    found = shared.get((path, sha256, pixels))
    if found is None:
        found = shared[path, sha256, pixels] = LockedInput(path, sha256, pixels)
    return found


def _input(i: Mapping[str, Any], shared: SharedInputs | None) -> LockedInput:
    pixels = i.get("pixels")  # only a digest's text: anything else (damage) is no digest, never one to match
    return shared_input(str(i["path"]), str(i["sha256"]), shared, pixels if isinstance(pixels, str) else None)


def entry_to_json(entry: LockEntry) -> dict[str, Any]:
    """One entry as a JSON-ready dict (optional fields only when set); the journal uses it too.

    Its key as earlier versions would compute it (:func:`pixmake.fingerprint.written_key`), so they can read it.
    """
    from pixmake.fingerprint import written_key  # it imports this module

    block: dict[str, Any] = {
        "key": written_key(entry),
        "model": entry.model,
        "prompt": entry.prompt,
        "size": entry.size,
        "n": entry.n,
        "outputs": [_output_json(o) for o in entry.outputs],
    }
    if entry.references:
        block["references"] = [_input_json(r) for r in entry.references]
    if entry.mask is not None:
        block["mask"] = _input_json(entry.mask)
    if entry.params:
        block["params"] = dict(entry.params)
    if entry.task_id is not None:
        block["task_id"] = entry.task_id
    if entry.stale:
        block["stale"] = [_output_json(o) for o in entry.stale]
    if entry.emulator:
        block["emulator"] = True
    if entry.accepted:
        block["accepted"] = True
        if entry.accepted_images:  # some only (older pixmakes read the entry as all accepted)
            block["accepted_images"] = list(entry.accepted_images)
    return block


def entry_from_json(block: Mapping[str, Any], shared: SharedInputs | None = None) -> LockEntry:
    """The inverse of :func:`entry_to_json`; raises KeyError, TypeError or ValueError for a bad block.

    ``shared`` holds the inputs already read (by path and hash), so entries that name the same file
    share one object: a brand image in 10,000 entries is kept once, not 10,000 times.
    """
    params = block.get("params", {})
    emulator, accepted = block.get("emulator", False), block.get("accepted", False)
    if not isinstance(emulator, bool) or not isinstance(accepted, bool):
        raise TypeError("emulator and accepted are true or false")
    some = block.get("accepted_images", ())
    if not isinstance(some, list | tuple) or not all(isinstance(sha, str) for sha in some):
        raise TypeError("accepted_images is a list of sha256")
    return LockEntry(
        key=str(block["key"]),
        model=sys.intern(str(block["model"])),
        prompt=str(block["prompt"]),
        size=sys.intern(str(block["size"])),
        n=int(block["n"]),
        outputs=tuple(_output(o) for o in block["outputs"]),
        references=tuple(_input(r, shared) for r in block.get("references", ())),
        mask=_input(block["mask"], shared) if "mask" in block else None,
        params=MappingProxyType(dict(params)) if params else NO_PARAMS,
        task_id=block.get("task_id"),
        stale=tuple(_output(o) for o in block.get("stale", ())),
        emulator=emulator,
        accepted=accepted,
        accepted_images=tuple(some) if accepted else (),
    )


def _block(name: str, entry: LockEntry) -> str:
    body = json.dumps(entry_to_json(entry), indent=2, sort_keys=True, ensure_ascii=False)
    return '{\n  "target": ' + json.dumps(name, ensure_ascii=False) + ",\n" + body[2:]


_SEPARATOR: Final = b"\n\n"  # between blocks; never inside one (JSON escapes a newline in a string)
_BLOCK_START: Final = b'\n\n{\n  "target": '


_HEADER: Final = json.dumps({"generator": "pixmake", "version": LOCK_VERSION}, sort_keys=True).encode()


def _piece(name: str, entry: LockEntry) -> bytes:
    return (_SEPARATOR.decode() + _block(name, entry)).encode()


def lock_pieces(lock: Lock) -> list[bytes]:
    """The lock's UTF-8 text in pieces: the header, one per target block, and the final newline.

    Their concatenation is :func:`render_lock`. :func:`pixmake.store.atomic_write` writes pieces as
    they are, so a large lock is never joined in memory first.
    """
    pieces = [_HEADER]
    pieces.extend(_piece(name, lock.entries[name]) for name in sorted(lock.entries))
    pieces.append(b"\n")
    return pieces


def split_pieces(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """The pieces of a version-2 lock (as :func:`lock_pieces` made them) from its bytes in any chunks.

    Streams: holds one block and one chunk at a time. Raises ValueError on text this module did not render.
    """
    buffer = b""
    first = True
    for chunk in chunks:
        buffer += chunk
        *whole, buffer = buffer.split(_SEPARATOR)
        for part in whole:
            yield part if first else _SEPARATOR + part
            first = False
    if not buffer.endswith(b"\n"):
        raise ValueError("a lock ends with a newline")
    if not first:
        yield _SEPARATOR + buffer[:-1]
    else:
        yield buffer[:-1]
    yield b"\n"


def _piece_name(piece: bytes) -> str:
    if not piece.startswith(_BLOCK_START):
        raise ValueError("not a target block")
    end = piece.index(b",\n", len(_BLOCK_START))  # a JSON string holds no raw newline
    name = json.loads(piece[len(_BLOCK_START) : end])
    if not isinstance(name, str):
        raise ValueError("a target name is a string")
    return name


def merged_pieces(old: Iterable[bytes], changed: Mapping[str, LockEntry]) -> Iterator[bytes]:
    """The pieces of the lock ``old`` (pieces of a version-2 lock) with the ``changed`` entries added or replaced.

    Equal to ``lock_pieces`` of the merged lock, rendering only the changed blocks: a build folds its
    results into the lock written by its previous fold without keeping every block in memory. Raises
    ValueError when ``old`` is not a lock this module rendered (out of order, or another header).
    """
    pending = sorted(changed)
    at = 0
    pieces = iter(old)
    if next(pieces, None) != _HEADER:
        raise ValueError("not a version-2 lock")
    yield _HEADER
    previous: str | None = None
    for piece in pieces:
        if piece == b"\n":
            break
        name = _piece_name(piece)
        if previous is not None and name <= previous:
            raise ValueError("blocks out of order")
        previous = name
        while at < len(pending) and pending[at] < name:
            yield _piece(pending[at], changed[pending[at]])
            at += 1
        if at < len(pending) and pending[at] == name:
            yield _piece(name, changed[name])
            at += 1
        else:
            yield piece
    else:
        raise ValueError("a lock ends with a newline")
    yield from (_piece(name, changed[name]) for name in pending[at:])
    yield b"\n"


def render_lock(lock: Lock) -> str:
    """Deterministic text of a lock: same lock, same bytes."""
    return b"".join(lock_pieces(lock)).decode()


def _skip_space(text: str, position: int) -> int:
    match = _SPACE.match(text, position)
    return match.end() if match else position


def _corrupt(file: str, error: json.JSONDecodeError, text: str, *, what: str = "") -> LockfileError:
    hint = _restore()
    if re.search(r"^(<{7}|={7}|>{7})( |$)", text, re.MULTILINE):
        hint = (
            "it has git conflict markers: keep both sides' target blocks (each target is one block), or let "
            f"pixmake merge it by target: {invocation.pixmake('init')} sets git's merge driver up, then "
            f"{invocation.git('checkout', '-m', '--', 'pixmake.lock')} merges again with it; one side's whole "
            "lock makes the next build pay again for the other side's targets"
        )
    return LockfileError(f"{file}:{error.lineno}:{error.colno}: lockfile is corrupt ({what or error.msg}); {hint}")


def _check_version(document: object, file: str) -> None:
    if not isinstance(document, dict) or "version" not in document:
        raise LockfileError(f"{file}: not a pixmake lockfile (no 'version' field)")
    version = document["version"]
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise LockfileError(f"{file}: lockfile is corrupt (format version {json.dumps(version)} is not a version)")
    if version > LOCK_VERSION:
        raise LockfileError(
            f"{file}: lockfile format version {version} is newer than this pixmake understands "
            f"(version {LOCK_VERSION}); upgrade pixmake"
        )


def _line(text: str, position: int) -> int:
    return text.count("\n", 0, position) + 1


def _block_problem(block: object, error: Exception) -> str:
    """What is wrong with one target block, in words (no Python exception text)."""
    if not isinstance(block, dict):
        kind = "a list" if isinstance(block, list) else "a string" if isinstance(block, str) else "a plain value"
        return f"a target block must be a JSON object, found {kind}"
    if isinstance(error, KeyError) and error.args:
        return f"missing field {json.dumps(str(error.args[0]))}"
    if isinstance(error, _NotOurs):
        return str(error)
    return "a field has a value of the wrong type"


def _entry(block: Any, name: str, shared: SharedInputs, file: str, text: str, at: int) -> LockEntry:
    """The entry of the block at offset ``at`` of ``text``, or the LockfileError that says what is wrong with it.

    Its line is counted only for a bad block: counting the lines before every block would be quadratic.
    """
    try:
        if not name.isprintable():  # printed in plans: a terminal escape could hide what a line says
            raise _NotOurs(f"the target name {json.dumps(name)} holds a control character")
        return entry_from_json(block, shared)
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        problem = _block_problem(block, error)
        raise LockfileError(
            f"{file}:{_line(text, at)}: lockfile is corrupt (bad target block {json.dumps(name)}: {problem}); "
            + _restore()
        ) from None


def lock_text(data: bytes, *, file: str = "pixmake.lock") -> str:
    """A lockfile's bytes as the text :func:`parse_lock` reads (universal newlines); raises LockfileError for
    bytes that are not UTF-8, or that start with a byte order mark (an editor's: pixmake writes none)."""
    if data.startswith(b"\xef\xbb\xbf"):
        raise LockfileError(
            f"{file}:1: lockfile starts with a byte order mark (an editor saved it as 'UTF-8 with BOM'): "
            "save it as UTF-8 without one"
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        raise LockfileError(f"{file}:{line}: lockfile is corrupt (not UTF-8 text); {_restore()}") from None
    return text.replace("\r\n", "\n").replace("\r", "\n") if "\r" in text else text


def parse_lock(text: str, *, file: str = "pixmake.lock") -> Lock:
    """Parse lockfile text (format 1 or 2); raises LockfileError when corrupt or newer than this pixmake.

    A corrupt lockfile's message names the line of the bad block and what is wrong with it, in words.
    Each block becomes its entry as soon as it is read: the JSON of the whole lock is never held at once.
    """
    decoder = json.JSONDecoder()
    entries: dict[str, LockEntry] = {}
    starts: dict[str, int] = {}  # where each target's block starts: a duplicate's message names both lines
    twice: dict[str, int] = {}
    shared: SharedInputs = {}
    header: Any = None
    position = _skip_space(text, 0)
    try:
        while position < len(text):
            start = position
            document, position = decoder.raw_decode(text, position)
            position = _skip_space(text, position)
            if header is None:
                header = document
                _check_version(header, file)
                continue
            if header["version"] == 1:
                line = _line(text, start)
                raise LockfileError(
                    f"{file}:{line}: lockfile is corrupt (text after the version 1 document); {_restore()}"
                )
            if not isinstance(document, dict) or "target" not in document:
                problem = _block_problem(document, KeyError("target"))
                raise LockfileError(
                    f"{file}:{_line(text, start)}: lockfile is corrupt (bad target block: {problem}); {_restore()}"
                )
            name = str(document.pop("target"))
            if name in entries:
                twice.setdefault(name, start)
            else:
                starts[name] = start
            entries[name] = _entry(document, name, shared, file, text, start)
    except json.JSONDecodeError as error:
        what = (
            "text that is not JSON where a target block should start"
            if header is not None and error.pos == start
            else ""
        )
        raise _corrupt(file, error, text, what=what) from None
    except RecursionError:  # JSON nested deeper than any lock's: damage, or not a lockfile
        raise LockfileError(
            f"{file}:{_line(text, start)}: lockfile is corrupt (nested too deeply); {_restore()}"
        ) from None
    if header is None:
        raise LockfileError(f"{file}: lockfile is empty; {_restore()}")
    if header["version"] == 1:
        targets = header.get("targets", {})
        if not isinstance(targets, dict):
            raise LockfileError(f"{file}:1: lockfile is corrupt ('targets' is not a JSON object); {_restore()}")
        entries = {str(name): _entry(block, str(name), shared, file, text, 0) for name, block in targets.items()}
    if twice:
        name = min(twice)
        more = f" (and {len(twice) - 1} more target{'s' * (len(twice) > 2)})" if len(twice) > 1 else ""
        raise LockfileError(
            f"{file}:{_line(text, twice[name])}: lockfile is corrupt (target {json.dumps(name)} appears twice, "
            f"here and at line {_line(text, starts[name])}{more}; a bad merge?): keep one of its blocks "
            "(README: Merging the lockfile)"
        )
    return Lock(MappingProxyType(entries))
