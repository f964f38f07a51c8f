"""The history of replaced lock entries: appended, read back by key, torn lines skipped, compacted by gc."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from pixmake.fingerprint import lock_entry, target_key
from pixmake.history import compact, recall, remember
from pixmake.lockfile import LockedOutput, LockEntry
from pixmake.manifest import Target


def entry(prompt: str, image: str = "a" * 64) -> LockEntry:
    target = Target("hero", prompt, "gpt-4o-image", "1:1", 1, "out/hero.png")
    return lock_entry(target, target_key(target, {}), {}, (LockedOutput("out/hero.png", image, 10, 8, 8),))


def test_entries_come_back_by_key_the_last_of_a_key_winning(tmp_path: Path) -> None:
    history = tmp_path / "history.jsonl"
    assert recall(history) == {}
    red, blue = entry("a red mug"), entry("a blue mug")
    newer_red = replace(red, task_id="task-2")
    remember(history, [red, blue])
    remember(history, [newer_red])
    remember(history, [])  # nothing to add: the file is not touched
    assert recall(history) == {red.key: newer_red, blue.key: blue}


def test_a_torn_last_line_costs_only_itself(tmp_path: Path) -> None:
    history = tmp_path / "history.jsonl"
    red, blue = entry("a red mug"), entry("a blue mug")
    remember(history, [red])
    with open(history, "ab") as handle:
        handle.write(b'{"key": "cut sh')  # a crash mid-append
    with open(history, "ab") as handle:
        handle.write(b"\n" + b"[" * 100_000 + b"\n")  # damage nested past json's depth: a traceback before
    remember(history, [blue])
    assert recall(history) == {red.key: red, blue.key: blue}


def test_compact_keeps_one_entry_per_key_and_only_those_asked_for(tmp_path: Path) -> None:
    history = tmp_path / "history.jsonl"
    red, blue = entry("a red mug", "b" * 64), entry("a blue mug", "c" * 64)
    remember(history, [red, red, blue])
    compact(history, lambda e: e.outputs[0].sha256 == "c" * 64)  # red's image is gone from the cache
    assert recall(history) == {blue.key: blue} and len(history.read_bytes().splitlines()) == 1


def test_the_providers_images_win_over_the_emulators_placeholders_for_one_key(tmp_path: Path) -> None:
    history = tmp_path / "history.jsonl"
    real = entry("a red mug")
    placeholder = replace(real, emulator=True, task_id="task-emulator")
    remember(history, [real, placeholder])  # the placeholders came later (build --emulator --replace)
    assert recall(history) == {real.key: real}
    remember(history, [replace(real, task_id="task-3")])
    assert recall(history)[real.key].task_id == "task-3"


def test_an_entry_remembered_already_is_not_appended_again(tmp_path: Path) -> None:
    """A prompt toggled back and forth, or a build retried after a refused key, adds no line."""
    history = tmp_path / "history.jsonl"
    red, blue = entry("a red mug"), entry("a blue mug")
    twin = replace(red, outputs=(LockedOutput("out/twin.png", "a" * 64, 10, 8, 8),))  # same key, another out
    for _ in range(3):
        remember(history, [red, blue, twin])
    assert len(history.read_bytes().splitlines()) == 3
