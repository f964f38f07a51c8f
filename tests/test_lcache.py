"""The lock cache: the same Lock as parsing, without parsing, exactly while the lockfile is unchanged."""

from __future__ import annotations

import dataclasses
import marshal
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given, settings

from pixmake import api, lcache
from pixmake.errors import LockfileError
from pixmake.fingerprint import current_keys
from pixmake.journal import Journal
from pixmake.lcache import load_lock_file
from pixmake.lockfile import Lock, LockedInput, LockedOutput, LockEntry, entry_to_json, parse_lock, render_lock
from pixmake.recordfile import read_record, write_record
from test_lockfile import locks

PAST = 1_600_000_000 * 10**9
ENTRY = LockEntry("a" * 64, "gpt-4o-image", "A mug", "1:1", 1, (LockedOutput("out/hero.png", "b" * 64, 10, 8, 8),))


class Parses:
    """Counts the real ``parse_lock`` calls the cache makes, so a test can tell a hit from a miss."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls = 0
        monkeypatch.setattr(lcache, "parse_lock", self)

    def __call__(self, text: str, *, file: str) -> Lock:
        self.calls += 1
        return parse_lock(text, file=file)


def write_lock(path: Path, lock: Lock, *, edit: Callable[[str], str] = lambda text: text) -> str:
    text = edit(render_lock(lock))
    path.write_text(text, encoding="utf-8")
    os.utime(path, ns=(PAST, PAST))  # older than any cache written now: not racy
    return text


def setup(tmp_path: Path) -> tuple[Path, Path, Lock]:
    lock = Lock({"hero": ENTRY, "side": ENTRY})
    write_lock(tmp_path / "pixmake.lock", lock)
    return tmp_path / "pixmake.lock", tmp_path / ".pixmake" / "lock.cache", lock


@settings(max_examples=50, deadline=None)
@given(locks)
def test_a_miss_and_a_hit_both_return_what_parse_lock_returns(lock: Lock) -> None:
    with tempfile.TemporaryDirectory() as directory:
        path, cache = Path(directory) / "pixmake.lock", Path(directory) / ".pixmake" / "lock.cache"
        text = write_lock(path, lock)
        parsed = current_keys(parse_lock(text))  # as every reader takes it (an earlier version's keys as today's)
        for _ in range(2):  # a miss that writes the cache, then a hit from it
            loaded = load_lock_file(path, cache)
            assert loaded == parsed
            assert [entry_to_json(loaded.entries[n]) for n in loaded.entries] == [
                entry_to_json(parsed.entries[n]) for n in parsed.entries
            ]
            assert list(loaded.entries) == list(parsed.entries)
        assert cache.exists()


def test_a_hit_does_not_parse(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path, cache, lock = setup(tmp_path)
    parses = Parses(monkeypatch)
    assert load_lock_file(path, cache) == lock
    assert load_lock_file(path, cache) == lock
    assert parses.calls == 1


def test_an_edited_lockfile_is_parsed_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path, cache, lock = setup(tmp_path)
    parses = Parses(monkeypatch)
    load_lock_file(path, cache)
    write_lock(path, lock.without({"side"}))
    assert set(load_lock_file(path, cache).entries) == {"hero"}
    assert parses.calls == 2


def test_an_edit_of_the_same_size_as_new_as_the_cache_is_caught_by_hash(tmp_path: Path) -> None:
    path, cache, lock = setup(tmp_path)
    load_lock_file(path, cache)
    written = cache.stat().st_mtime_ns
    write_lock(path, lock, edit=lambda text: text.replace("A mug", "A pot"))  # same size
    os.utime(path, ns=(written, written))  # as new as the cache: its stat alone proves nothing
    assert load_lock_file(path, cache).entries["hero"].prompt == "A pot"


def test_a_touched_lockfile_with_the_same_bytes_is_a_hit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path, cache, lock = setup(tmp_path)
    parses = Parses(monkeypatch)
    load_lock_file(path, cache)
    path.write_text(render_lock(lock), encoding="utf-8")  # new mtime and ctime, same content (git checkout)
    os.utime(path, ns=(PAST + 1, PAST + 1))
    assert load_lock_file(path, cache) == lock
    assert load_lock_file(path, cache) == lock
    assert parses.calls == 1


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"\x00garbage",
        marshal.dumps([1, 2, 3]),
        marshal.dumps({"format": (0, "0", ()), "stat": None, "sha256": "", "entries": ()}),
    ],
    ids=["empty", "garbage", "foreign", "other-format"],
)
def test_a_corrupt_or_foreign_cache_is_ignored(tmp_path: Path, content: bytes) -> None:
    path, cache, lock = setup(tmp_path)
    cache.parent.mkdir()
    cache.write_bytes(content)
    assert load_lock_file(path, cache) == lock
    assert load_lock_file(path, cache) == lock  # and replaced by a good one


def test_a_cache_of_this_format_with_bad_entries_is_ignored(tmp_path: Path) -> None:
    path, cache, lock = setup(tmp_path)
    load_lock_file(path, cache)
    loaded = read_record(cache, lcache._format())
    assert loaded is not None
    record = loaded[0]
    for entries in [(("hero", "too few fields"),), (("hero", *record["entries"][0][1:]),) * 2, 7]:
        write_record(cache, {**record, "entries": entries})  # sealed: only the entries are wrong
        os.utime(cache)  # newer than the lockfile, as a real write would be
        assert load_lock_file(path, cache) == lock


def test_a_cache_of_other_code_is_ignored(tmp_path: Path) -> None:
    path, cache, _ = setup(tmp_path)
    load_lock_file(path, cache)
    loaded = read_record(cache, lcache._format())
    assert loaded is not None
    record = loaded[0]
    version, pixmake, (identity, fields) = record["format"]
    other = (version, pixmake, (identity[1:], fields))  # a module of pixmake changed since
    write_record(cache, {**record, "format": other, "entries": ()})
    assert len(load_lock_file(path, cache).entries) == 2


def test_a_corrupt_lockfile_raises_and_is_never_cached(tmp_path: Path) -> None:
    path, cache, _ = setup(tmp_path)
    load_lock_file(path, cache)
    path.write_text('{"generator": "pixmake", "version": 2}\n\n{"target": "hero"', encoding="utf-8")
    for _ in range(2):
        with pytest.raises(LockfileError, match=r"pixmake\.lock:3:"):
            load_lock_file(path, cache)


def test_crlf_line_ends_read_as_read_text_reads_them(tmp_path: Path) -> None:
    path, cache, lock = setup(tmp_path)
    path.write_bytes(render_lock(lock).replace("\n", "\r\n").encode())
    assert load_lock_file(path, cache) == lock
    path.write_bytes(b'{"generator": "pixmake", "version": 2}\r\n\r\n{"target": "hero"')
    with pytest.raises(LockfileError, match=r"pixmake\.lock:3:"):
        load_lock_file(path, cache)


def test_the_journal_is_folded_in_on_top_of_a_cached_lock(tmp_path: Path) -> None:
    (tmp_path / "pixmake.yaml").write_text("version: 1\ntargets: {}\n")
    project = api.open_project(tmp_path)
    write_lock(project.lockfile, Lock({"hero": ENTRY}))
    assert api.load_lock(project)[0].entries["hero"].prompt == "A mug"
    assert (project.state_dir / "lock.cache").exists()
    journal = Journal(project.journal)
    journal.open()
    try:
        journal.finished("hero", dataclasses.replace(ENTRY, prompt="A cup"))
    finally:
        journal.close()
    assert api.load_lock(project)[0].entries["hero"].prompt == "A cup"
    project.journal.unlink()
    assert api.load_lock(project)[0].entries["hero"].prompt == "A mug"


def test_a_hit_shares_an_input_many_entries_name_as_a_parse_does(tmp_path: Path) -> None:
    brand = LockedInput("refs/brand.png", "c" * 64)
    entry = dataclasses.replace(ENTRY, references=(brand,))
    lock = Lock({"hero": entry, "side": dataclasses.replace(entry, prompt="A pot")})
    path, cache = tmp_path / "pixmake.lock", tmp_path / ".pixmake" / "lock.cache"
    write_lock(path, lock)
    for _ in range(2):  # a miss (parsed), then a hit (decoded from the cache)
        loaded = load_lock_file(path, cache)
        assert loaded == lock
        hero, side = loaded.entries["hero"], loaded.entries["side"]
        assert hero.references[0] is side.references[0] and hero.params is side.params
    assert cache.exists()


def test_a_block_prompts_entry_is_read_under_todays_key_from_the_lock_and_from_the_cache(tmp_path: Path) -> None:
    """The lock records the key earlier versions compute for a prompt ending in a newline; a reader takes today's."""
    from pixmake.fingerprint import lock_entry, target_key, verbatim_key
    from pixmake.manifest import Target

    target = Target("hero", "a blue mug\n", "gpt-4o-image", "1:1", 1, "hero.png")
    entry = lock_entry(target, target_key(target, {}), {}, ENTRY.outputs)
    path, cache = tmp_path / "pixmake.lock", tmp_path / ".pixmake" / "lock.cache"
    write_lock(path, Lock({"hero": entry}))
    assert parse_lock(path.read_text()).entries["hero"].key == verbatim_key(target, {})
    for _ in range(2):  # a miss that writes the cache, then a hit from it
        assert load_lock_file(path, cache).entries["hero"].key == target_key(target, {})
