"""The build journal: replay after a crash, torn last lines, pending submits per target, compaction."""

from __future__ import annotations

import errno
import os
import threading
import time
from pathlib import Path

import anyio
import pytest

from pixmake.journal import ANY, Journal, PendingSubmit, read_journal
from pixmake.lockfile import Lock, LockedOutput, LockEntry


def _entry(key: str) -> LockEntry:
    output = LockedOutput("a.png", "0" * 64, 1, 1, 1)
    return LockEntry(key=key, model="gpt-4o-image", prompt="a mug", size="1:1", n=1, outputs=(output,))


def _journal(tmp_path: Path) -> Journal:
    journal = Journal(tmp_path / ".pixmake" / "journal.jsonl")
    journal.open()
    return journal


def test_replay_gives_the_finished_entries_and_the_submits_still_pending(tmp_path: Path) -> None:
    journal = _journal(tmp_path)
    journal.submitting("a", "k1", "cb-a1")
    journal.submitting("b", "k2", "cb-b1")
    journal.accepted("b", "k2", "cb-b1", "task-b")
    journal.submitting("c", "k3", "cb-c1")
    journal.finished("a", _entry("k1"))
    journal.dropped("c", "k3")
    journal.close()
    lock, pending = read_journal(journal.path, Lock())
    assert set(lock.entries) == {"a"}
    assert pending == {"b": PendingSubmit("b", "k2", "cb-b1", "task-b")}


def test_two_targets_with_one_key_keep_their_own_pending_tasks(tmp_path: Path) -> None:
    journal = _journal(tmp_path)
    journal.submitting("left", "same-key", "cb-1")
    journal.submitting("right", "same-key", "cb-2")
    journal.accepted("left", "same-key", "cb-1", "task-1")
    journal.close()
    _, pending = read_journal(journal.path, Lock())
    assert pending["left"].task_id == "task-1" and pending["right"].client_business_id == "cb-2"


def test_a_later_submit_replaces_an_earlier_one_of_the_same_target(tmp_path: Path) -> None:
    journal = _journal(tmp_path)
    journal.submitting("a", "k1", "cb-1")  # refused with a 429: known not to exist
    journal.submitting("a", "k1", "cb-2")
    journal.close()
    _, pending = read_journal(journal.path, Lock())
    assert pending == {"a": PendingSubmit("a", "k1", "cb-2")}


def test_a_torn_last_line_is_ignored(tmp_path: Path) -> None:
    journal = _journal(tmp_path)
    journal.submitting("a", "k1", "cb-1")
    journal.close()
    with journal.path.open("ab") as handle:
        handle.write(b'{"op":"submit","target":"b","key":"k2","cb')  # power lost mid-append
    _, pending = read_journal(journal.path, Lock())
    assert list(pending) == ["a"]


def test_a_record_appended_after_a_torn_line_is_not_lost_with_it(tmp_path: Path) -> None:
    journal = _journal(tmp_path)
    journal.submitting("a", "k1", "cb-1")
    journal.close()
    with journal.path.open("ab") as handle:
        handle.write(b'{"op":"submit","target":"b","key":"k2","cb')  # the disk filled up mid-append
    journal.open()  # the next build, once there is room again
    journal.submitting("c", "k3", "cb-3")
    journal.close()
    _, pending = read_journal(journal.path, Lock())
    assert list(pending) == ["a", "c"]


def test_rewrite_keeps_only_what_is_pending_and_appends_continue(tmp_path: Path) -> None:
    journal = _journal(tmp_path)
    for i in range(50):
        journal.submitting(f"t{i}", f"k{i}", f"cb{i}")
        journal.finished(f"t{i}", _entry(f"k{i}"))
    journal.submitting("open", "ko", "cb-open")
    journal.accepted("open", "ko", "cb-open", "task-open")
    journal.rewrite({"open": PendingSubmit("open", "ko", "cb-open", "task-open")})
    assert len(journal.path.read_text().splitlines()) == 2
    journal.submitting("new", "kn", "cb-new")
    journal.close()
    lock, pending = read_journal(journal.path, Lock())
    assert lock.entries == {} and set(pending) == {"open", "new"}


def test_a_rewrite_the_disk_refuses_leaves_every_record_and_appends_go_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    journal = _journal(tmp_path)
    journal.submitting("paid", "kp", "cb-paid")
    journal.accepted("paid", "kp", "cb-paid", "task-paid")
    journal.finished("done", _entry("kd"))

    def full(*_: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    with monkeypatch.context() as patched:
        patched.setattr(os, "replace", full)  # the disk fills up as the journal is rewritten
        with pytest.raises(OSError, match="No space left"):
            journal.rewrite({"paid": PendingSubmit("paid", "kp", "cb-paid", "task-paid")})
    journal.submitting("next", "kn", "cb-next")  # the journal is still open
    journal.close()
    lock, pending = read_journal(journal.path, Lock())
    assert set(lock.entries) == {"done"} and set(pending) == {"paid", "next"}
    assert pending["paid"].task_id == "task-paid"
    assert not [p.name for p in journal.path.parent.iterdir() if p.name.endswith(".tmp")]  # no temp file left behind


def test_a_missing_journal_is_empty(tmp_path: Path) -> None:
    assert read_journal(tmp_path / "nope.jsonl", Lock()) == (Lock(), {})


def test_concurrent_submits_share_fsyncs_and_each_returns_only_once_on_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    journal = _journal(tmp_path)
    synced_lines: list[int] = []  # how many lines the file held at each fsync
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        real_fsync(fd)
        synced_lines.append(len(journal.path.read_bytes().splitlines()))

    monkeypatch.setattr(os, "fsync", fsync)
    on_disk_when_returned: list[tuple[int, int]] = []  # (line this submit wrote, lines synced by then)

    async def submit(i: int) -> None:
        journal.submitting(f"t{i}", f"k{i}", f"cb{i}")
        line = len(journal.path.read_bytes().splitlines())
        await journal.durable()
        on_disk_when_returned.append((line, max(synced_lines)))

    async def burst() -> None:
        async with anyio.create_task_group() as group:
            for i in range(40):
                group.start_soon(submit, i)

    anyio.run(burst)
    journal.close()
    assert len(on_disk_when_returned) == 40
    assert all(line <= synced for line, synced in on_disk_when_returned)  # durable before the submit goes out
    assert len(synced_lines) < 40  # group commit: the burst shared fsyncs
    _, pending = read_journal(journal.path, Lock())
    assert len(pending) == 40


def test_a_cancelled_waiter_leaves_the_next_one_served(tmp_path: Path) -> None:
    journal = _journal(tmp_path)

    async def scenario() -> None:
        journal.submitting("a", "k1", "cb-1")
        with anyio.move_on_after(0):  # cancelled before or during its fsync
            await journal.durable()
        journal.submitting("b", "k2", "cb-2")
        with anyio.fail_after(5):
            await journal.durable()

    anyio.run(scenario)
    journal.close()
    assert set(read_journal(journal.path, Lock())[1]) == {"a", "b"}


def test_fsyncs_leave_the_event_loop_while_the_disk_is_slow(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Quick fsyncs run on the loop's thread (a trip to a worker costs more); a slow one sends them back to a thread."""
    (tmp_path / ".pixmake").mkdir()
    (tmp_path / ".pixmake" / "journal.jsonl").touch()  # one there already: its first record syncs no folder
    journal = _journal(tmp_path)
    loop_thread = threading.get_ident()
    on_loop: list[bool] = []
    slow = {"next": False}

    def fsync(fd: int) -> None:  # a quick disk (durability itself is tested above), with one hiccup on demand
        if slow["next"]:
            slow["next"] = False
            time.sleep(0.05)
        on_loop.append(threading.get_ident() == loop_thread)

    monkeypatch.setattr(os, "fsync", fsync)

    async def submits(count: int) -> None:
        for i in range(count):
            journal.submitting(f"t{i}", f"k{i}", f"cb{i}")
            await journal.durable()

    anyio.run(submits, 60)
    assert not on_loop[0] and on_loop[-1]  # measured in a thread first, then quick enough for the loop
    slow["next"] = True
    before = len(on_loop)
    anyio.run(submits, 2)
    assert on_loop[before:] == [True, False]  # the slow one ran on the loop, the next one in a thread
    journal.close()


def test_a_submit_to_the_bundled_emulator_or_keeping_images_is_journaled_as_such_through_a_rewrite(
    tmp_path: Path,
) -> None:
    """An emulator's task stays one; a submit for a raised n keeps naming the locked images it comes after."""
    journal = Journal(tmp_path / "journal.jsonl")
    journal.open()
    journal.submitting("demo", "k1", "cb-demo", emulator=True)
    journal.accepted("demo", "k1", "cb-demo", "task-demo")
    journal.submitting("paid", "k2", "cb-paid")
    journal.submitting("more", "k3", "cb-more", keep=("a" * 64, "b" * 64))
    journal.accepted("more", "k3", "cb-more", "task-more")
    journal.close()
    _, pending = read_journal(journal.path, Lock())
    assert pending == {
        "demo": PendingSubmit("demo", "k1", "cb-demo", "task-demo", emulator=True),
        "paid": PendingSubmit("paid", "k2", "cb-paid"),
        "more": PendingSubmit("more", "k3", "cb-more", "task-more", keep=("a" * 64, "b" * 64)),
    }
    journal.rewrite(pending)
    assert read_journal(journal.path, Lock())[1] == pending


@pytest.mark.parametrize(
    "damaged",
    [
        b'{"op":"submit","target":"b","key":"k2","cbie":"cb-2"}',  # one bit flipped in a name
        b'{"op":"submit","target":"b","key":"k2"}',
        b'{"op":"lock","target":"b","key":"k2","entry":{}}',
        b'{"op":"lock","target":"b","key":"k2","entry":[]}',
        b'{"op":"task","target":"a","key":"k1","cbid":"cb-1"}',
        b'{"op":"lock","target":"b","key":"k2","entry":' + b"[" * 100_000 + b"]" * 100_000 + b"}",  # too deep
    ],
    ids=["cbie", "no-cbid", "empty-entry", "list-entry", "task-without-id", "deep"],
)
def test_a_whole_but_damaged_record_is_skipped_and_the_others_replayed(tmp_path: Path, damaged: bytes) -> None:
    """Every command reads the journal (forget, the way out, too): one bad record must not stop them all."""
    journal = _journal(tmp_path)
    journal.submitting("a", "k1", "cb-1")
    journal.close()
    with journal.path.open("ab") as handle:
        handle.write(damaged + b"\n")
    journal.open()
    journal.finished("c", _entry("k3"))
    journal.close()
    lock, pending = read_journal(journal.path, Lock())
    assert list(pending) == ["a"] and list(lock.entries) == ["c"]


@pytest.mark.parametrize("damage", ["bit-flip", "cut", "not-utf-8"])
def test_a_paid_task_whose_submit_record_was_damaged_is_still_resumed(tmp_path: Path, damage: str) -> None:
    """The damage review: one bad byte in a submit line made the next build pay again for the task its intact
    task line named. A task record names target, key, client_business_id and task: enough to collect it."""
    journal = _journal(tmp_path)
    journal.submitting("hero", "k1", "cb-1", sent_at=1_700_000_000.0)
    journal.accepted("hero", "k1", "cb-1", "task-1")
    journal.submitting("side", "k2", "cb-2")
    journal.accepted("side", "k2", "cb-2", "task-2", emulator=True)
    journal.close()
    lines = journal.path.read_bytes().splitlines(keepends=True)
    first = lines[0]
    lines[0] = {"bit-flip": first.replace(b'"op"', b'"oq"'), "cut": first[:20] + b"\n", "not-utf-8": b"\xff" + first}[
        damage
    ]
    lines[2] = b""  # side's submit line gone
    journal.path.write_bytes(b"".join(lines))
    _, pending = read_journal(journal.path, Lock())
    assert pending == {
        "hero": PendingSubmit("hero", "k1", "cb-1", "task-1"),  # its send time and kept images are not known
        "side": PendingSubmit("side", "k2", "cb-2", "task-2", emulator=True),
    }


def test_a_reader_racing_a_fold_sees_every_finished_entry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A fold writes the lock, then shrinks the journal: `plan` during a build read the old lock and the
    shrunk journal, and showed finished targets as to create."""
    from pixmake import api, lcache
    from pixmake.lockfile import render_lock

    (tmp_path / "pixmake.yaml").write_text("version: 1\ntargets: {}\n")
    project = api.open_project(tmp_path)
    project.state_dir.mkdir()
    (tmp_path / "pixmake.lock").write_text(render_lock(Lock({"a": _entry("k1")})))
    journal = Journal(project.journal)
    journal.open()
    journal.finished("b", _entry("k2"))  # finished since the last fold
    journal.close()
    real = lcache.load_lock_file

    def fold_meanwhile(*args: object) -> Lock:
        lock = real(*args)  # type: ignore[arg-type]
        (tmp_path / "pixmake.lock").write_text(render_lock(Lock({"a": _entry("k1"), "b": _entry("k2")})))
        journal.rewrite({})  # the fold's second step
        return lock

    monkeypatch.setattr(lcache, "load_lock_file", fold_meanwhile)
    lock, _ = api.load_lock(project)
    assert set(lock.entries) == {"a", "b"}


@pytest.mark.parametrize(
    ("held", "was", "applies"),
    [
        (None, None, True),  # a new target, still unlocked
        ("k0", "k0", True),  # the entry it replaced is still there: a crash before the fold
        ("k1", "k0", True),  # its own entry is there: the fold ran, the journal's shrink did not
        ("k2", "k0", False),  # locked otherwise since: a restored backup of .pixmake, another branch
        ("k2", None, False),  # locked since by someone else (a teammate's build, pulled)
        (None, "k0", False),  # the lock no longer holds it (another branch without it, pruned)
        ("k2", ANY, True),  # a journal of a pixmake before `was`: as it always did
    ],
)
def test_a_finished_entry_applies_only_over_the_entry_it_replaced(
    tmp_path: Path, held: str | None, was: str | None, applies: bool
) -> None:
    """An old journal (a .pixmake restored from a backup or a CI cache) rolled the committed lock back, and
    the next build paid again for inputs the lock had moved on from."""
    journal = _journal(tmp_path)
    journal.finished("t", _entry("k1"), was)
    journal.close()
    lock = Lock({"t": _entry(held)} if held is not None else {})
    superseded: list[LockEntry] = []
    folded, _ = read_journal(journal.path, lock, superseded=superseded)
    expected = "k1" if applies else held
    assert (folded.entries["t"].key if "t" in folded.entries else None) == expected
    assert [e.key for e in superseded] == ([] if applies else ["k1"])


def test_the_first_record_of_a_new_journal_syncs_its_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The journal is made by its first record, moments before a paid submit: a power cut must not take
    the new file's name, and the submit's record with it."""
    synced: list[bool] = []
    real = os.fsync

    def fsync(fd: int) -> None:
        synced.append(os.path.isdir(f"/proc/self/fd/{fd}"))
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    journal = _journal(tmp_path)
    assert not journal.path.exists()
    journal.submitting("a", "k1", "cb-1")
    journal.close()
    if os.path.isdir("/proc/self/fd"):
        assert synced[:1] == [True]  # the folder, first
    assert read_journal(journal.path, Lock())[1]["a"].client_business_id == "cb-1"


def test_the_lock_entry_a_submit_was_sent_over_survives_its_task_and_a_rewrite(tmp_path: Path) -> None:
    """What tells a killed `build --replace`'s task (sent over the entry the lock still holds) from one a
    lock has moved on from since (another build locked the same inputs: drop it, do not collect it)."""
    path = tmp_path / "journal.jsonl"
    journal = Journal(path)
    journal.open()
    journal.submitting("a", "k-a", "cbid-a", over=None)
    journal.accepted("a", "k-a", "cbid-a", "task-a")
    journal.submitting("b", "k-b", "cbid-b", over="k-old")
    journal.submitting("c", "k-c", "cbid-c")  # unsaid: an earlier pixmake's record
    journal.close()
    _, pending = read_journal(path, Lock())
    assert {name: p.over for name, p in pending.items()} == {"a": None, "b": "k-old", "c": ANY}
    assert pending["a"].task_id == "task-a"
    journal = Journal(path)
    journal.open()
    journal.rewrite(pending)
    journal.close()
    assert read_journal(path, Lock())[1] == pending


def test_a_send_time_no_clock_could_give_is_not_known_and_the_submit_still_counts(tmp_path: Path) -> None:
    """The damage review: a send time of 10**400 stopped every command with an OverflowError traceback."""
    path = tmp_path / "journal.jsonl"
    path.write_bytes(b'{"op":"submit","target":"b","key":"k2","cbid":"cb-2","at":1' + b"0" * 400 + b"}\n")
    assert read_journal(path, Lock())[1] == {"b": PendingSubmit("b", "k2", "cb-2", sent_at=None)}
