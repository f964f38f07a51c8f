"""The key: everything that changes the image is in it, nothing else is."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from types import MappingProxyType
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from pixmake.fingerprint import (
    FINGERPRINT_VERSION,
    current_key,
    current_keys,
    input_hash,
    key_document,
    keyed_prompt,
    lock_entry,
    target_key,
    verbatim_key,
)
from pixmake.lockfile import Lock, parse_lock, render_lock
from pixmake.manifest import Target

_text = st.text(st.characters(codec="utf-8"), min_size=1, max_size=40)
_path = st.from_regex(r"[a-z]{1,8}/[a-z0-9]{1,8}\.png", fullmatch=True)
_content = st.binary(min_size=1, max_size=64)


@st.composite
def targets_with_files(draw: st.DrawFn) -> tuple[Target, dict[str, bytes]]:
    """A target with 0-3 references and maybe a mask, and the bytes of each file it names."""
    refs = draw(st.lists(_path, max_size=3, unique=True))
    mask = draw(st.none() | _path.filter(lambda p: p not in refs))
    files = {path: draw(_content) for path in [*refs, *([mask] if mask else [])]}
    params = draw(st.dictionaries(st.sampled_from(["quality", "style", "seed"]), st.integers(0, 9) | _text, max_size=2))
    target = Target(
        name=draw(_text),
        prompt=draw(_text),
        model=draw(st.sampled_from(["gpt-4o-image", "gpt-image-2"])),
        size=draw(st.sampled_from(["1:1", "3:2", "2:3"])),
        n=draw(st.sampled_from([1, 2, 4])),
        out=draw(_path),
        references=tuple(refs),
        mask=mask,
        params=MappingProxyType(params),
    )
    return target, files


def _hashes(files: dict[str, bytes]) -> dict[str, str]:
    return {path: hashlib.sha256(data).hexdigest() for path, data in files.items()}


@given(targets_with_files(), _path, _text, st.integers(0, 10_000), st.lists(st.text(max_size=5), max_size=3))
def test_key_ignores_out_name_line_and_tags(
    case: tuple[Target, dict[str, bytes]], out: str, name: str, line: int, tags: list[str]
) -> None:
    target, files = case
    other = replace(target, out=out, name=name, line=line, tags=tuple(tags))
    assert target_key(other, _hashes(files)) == target_key(target, _hashes(files))


@given(targets_with_files(), st.data())
def test_key_ignores_file_names(case: tuple[Target, dict[str, bytes]], data: st.DataObject) -> None:
    """Renaming every input file (same bytes) keeps the key."""
    target, files = case
    renamed = {path: f"renamed/{i}-{data.draw(_path)}" for i, path in enumerate(files)}
    moved = replace(
        target,
        references=tuple(renamed[r] for r in target.references),
        mask=renamed[target.mask] if target.mask else None,
    )
    moved_files = {renamed[path]: content for path, content in files.items()}
    assert target_key(moved, _hashes(moved_files)) == target_key(target, _hashes(files))


@given(st.lists(targets_with_files(), min_size=2, max_size=4), st.randoms())
def test_key_ignores_target_order(cases: list[tuple[Target, dict[str, bytes]]], random: object) -> None:
    files: dict[str, bytes] = {}
    for _, more in cases:
        files.update({path: data for path, data in more.items() if path not in files})
    keys = [target_key(t, _hashes(files)) for t, _ in cases]
    shuffled = list(zip([t for t, _ in cases], keys, strict=True))
    random.shuffle(shuffled)  # type: ignore[attr-defined]
    assert all(target_key(t, _hashes(files)) == key for t, key in shuffled)


@given(targets_with_files(), st.data())
def test_one_changed_byte_of_any_input_changes_the_key(
    case: tuple[Target, dict[str, bytes]], data: st.DataObject
) -> None:
    target, files = case
    if not files:
        return
    path = data.draw(st.sampled_from(sorted(files)))
    content = bytearray(files[path])
    index = data.draw(st.integers(0, len(content) - 1))
    content[index] ^= data.draw(st.integers(1, 255))
    changed = {**files, path: bytes(content)}
    assert target_key(target, _hashes(changed)) != target_key(target, _hashes(files))


@given(targets_with_files(), st.sampled_from(["prompt", "model", "size", "n", "params"]), st.data())
def test_each_generation_field_changes_the_key(
    case: tuple[Target, dict[str, bytes]], field: str, data: st.DataObject
) -> None:
    target, files = case
    options: dict[str, st.SearchStrategy[object]] = {
        "prompt": _text.filter(lambda v: keyed_prompt(v) != keyed_prompt(target.prompt)),  # not only respaced
        "model": st.sampled_from(["gpt-4o-image", "gpt-image-2", "other"]),
        "size": st.sampled_from(["1:1", "3:2", "2:3", "16:9"]),
        "n": st.integers(1, 10),
        "params": st.dictionaries(st.just("quality"), st.sampled_from(["low", "high"]), min_size=1).map(
            MappingProxyType
        ),
    }
    change: dict[str, Any] = {field: data.draw(options[field].filter(lambda v: v != getattr(target, field)))}
    assert target_key(replace(target, **change), _hashes(files)) != target_key(target, _hashes(files))


_words = st.lists(st.text(st.characters(codec="utf-8").filter(lambda c: not c.isspace()), min_size=1), min_size=1)
_inline = st.lists(st.sampled_from([" ", "\t", "\u00a0", "\u3000"]), min_size=1, max_size=3).map("".join)
_ends = st.lists(st.sampled_from([" ", "\t", "\n", "\r\n", "\u00a0"]), max_size=3).map("".join)


@given(targets_with_files(), st.lists(_words, min_size=1, max_size=3), st.data())
def test_a_prompt_respaced_or_made_a_yaml_block_has_the_same_key(
    case: tuple[Target, dict[str, bytes]], lines: list[list[str]], data: st.DataObject
) -> None:
    """A `>` or `|` block ends in a newline; a checkout may give CRLFs; spaces may double. Line breaks count."""
    target, files = case
    line_end = data.draw(st.sampled_from(["\n", "\r\n"]))
    spaced = line_end.join(
        data.draw(_ends.filter(lambda e: "\n" not in e))
        + "".join(w + data.draw(_inline) for w in words[:-1])
        + words[-1]
        for words in lines
    )
    prompt = data.draw(_ends) + spaced + data.draw(_ends)
    plain = replace(target, prompt="\n".join(" ".join(words) for words in lines))
    assert target_key(replace(target, prompt=prompt), _hashes(files)) == target_key(plain, _hashes(files))


def test_line_breaks_inside_a_prompt_are_in_the_key() -> None:
    poster = Target("p", "BIG\nSUMMER\nSALE", "gpt-4o-image", "1:1", 1, "o.png")
    assert target_key(poster, {}) != target_key(replace(poster, prompt="BIG SUMMER SALE"), {})


@given(targets_with_files(), _ends, st.booleans())
def test_an_entry_an_earlier_version_locked_verbatim_is_read_under_todays_key(
    case: tuple[Target, dict[str, bytes]], end: str, callback: bool
) -> None:
    target, files = case
    params = {**target.params, **({"callback_url": "https://hooks.example/x"} if callback else {})}
    target = replace(target, prompt=target.prompt + end, params=MappingProxyType(params))
    hashes = _hashes(files)
    earlier = replace(lock_entry(target, "", hashes, ()), key=verbatim_key(target, hashes))
    assert current_key(earlier).key == target_key(target, hashes)
    # What today's pixmake writes: the key earlier versions compute (a teammate not yet upgraded reads it as
    # built), read back under today's.
    text = render_lock(Lock(MappingProxyType({"hero": lock_entry(target, target_key(target, hashes), hashes, ())})))
    assert parse_lock(text).entries["hero"].key == verbatim_key(target, hashes)
    assert current_keys(parse_lock(text)).entries["hero"].key == target_key(target, hashes)
    other = replace(earlier, key="f" * 64)  # not a verbatim key of what it records (hand-edited, say): left alone
    assert current_key(other) is other


@given(targets_with_files(), st.text(max_size=30))
def test_where_results_are_reported_is_not_in_the_key(case: tuple[Target, dict[str, bytes]], url: str) -> None:
    target, files = case
    with_callback = replace(target, params=MappingProxyType({**target.params, "callback_url": url}))
    assert target_key(with_callback, _hashes(files)) == target_key(target, _hashes(files))
    assert verbatim_key(with_callback, _hashes(files)) != verbatim_key(target, _hashes(files))


@given(targets_with_files())
def test_a_key_earlier_versions_locked_is_still_the_key_of_a_single_spaced_prompt(
    case: tuple[Target, dict[str, bytes]],
) -> None:
    """Locks written before the prompt's spacing left the key stay valid: same document, same sha256."""
    target, files = case
    target = replace(target, prompt=keyed_prompt(target.prompt) or "p")
    hashes = _hashes(files)
    earlier = {  # the key document as every earlier version hashed it
        "fingerprint": 1,
        "provider": "toapis",
        "model": target.model,
        "prompt": target.prompt,
        "size": target.size,
        "n": target.n,
        "params": dict(target.params),
        "references": [hashes[r] for r in target.references],
        "mask": None if target.mask is None else hashes[target.mask],
    }
    canonical = json.dumps(earlier, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert target_key(target, hashes) == verbatim_key(target, hashes) == hashlib.sha256(canonical.encode()).hexdigest()


def test_reference_order_is_part_of_the_key() -> None:
    target = Target("t", "p", "gpt-4o-image", "1:1", 1, "o.png", references=("a.png", "b.png"))
    hashes = {"a.png": "1" * 64, "b.png": "2" * 64}
    swapped = replace(target, references=("b.png", "a.png"))
    assert target_key(swapped, hashes) != target_key(target, hashes)


def test_key_document_names_every_ingredient() -> None:
    target = Target("t", "p", "gpt-4o-image", "1:1", 1, "o.png", references=("a.png",), mask="m.png")
    document = key_document(target, {"a.png": "a" * 64, "m.png": "m" * 64})
    assert document == {
        "fingerprint": FINGERPRINT_VERSION,
        "provider": "toapis",
        "model": "gpt-4o-image",
        "prompt": "p",
        "size": "1:1",
        "n": 1,
        "params": {},
        "references": ["a" * 64],
        "mask": "m" * 64,
    }


def test_a_url_reference_is_keyed_by_its_url() -> None:
    url = "https://example.com/a.png"
    assert input_hash(url, {}) == "url:" + hashlib.sha256(url.encode()).hexdigest()


@given(targets_with_files())
def test_lock_entry_records_the_inputs_the_key_was_made_from(case: tuple[Target, dict[str, bytes]]) -> None:
    target, files = case
    hashes, key = _hashes(files), target_key(target, _hashes(files))
    entry = lock_entry(target, key, hashes, (), task_id="task_1")
    document = key_document(target, hashes)
    assert [(r.path, r.sha256) for r in entry.references] == list(
        zip(target.references, document["references"], strict=True)
    )
    mask = None if entry.mask is None else (entry.mask.path, entry.mask.sha256)
    assert mask == (None if target.mask is None else (target.mask, document["mask"]))
    recorded = (entry.key, entry.model, entry.prompt, entry.size, entry.n, dict(entry.params), entry.task_id)
    assert recorded == (key, target.model, target.prompt, target.size, target.n, dict(target.params), "task_1")


def test_lock_entry_keeps_its_own_copy_of_the_params() -> None:
    params = {"quality": "high"}
    target = Target("t", "p", "gpt-image-2", "1:1", 1, "o.png", params=params)
    entry = lock_entry(target, "k" * 64, {}, ())
    params["quality"] = "low"
    assert entry.params == {"quality": "high"} and entry.task_id is None


def test_only_cr_and_lf_end_a_prompts_lines() -> None:
    """str.splitlines would also end a line at U+2028, U+0085 or a file separator: here they are spaces."""
    assert keyed_prompt("A\r\nB\rC") == "A\nB\nC"
    assert {c: keyed_prompt(f"A{c}B") for c in ("\u2028", "\x85", "\x1c")} == dict.fromkeys(
        ("\u2028", "\x85", "\x1c"), "A B"
    )
