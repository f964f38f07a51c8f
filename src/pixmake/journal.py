"""The build journal: an append-only log in ``.pixmake/`` that makes every paid step survive a crash.

Shell. Four records, one JSON object per line (as ninja appends to its build log):

* ``submit``: written and made durable *before* a submit is sent, with its ``client_business_id`` (and,
  for a target whose ``n`` was raised, the sha256 of the locked images it keeps: the task makes the rest);
* ``task``: the provider accepted it and gave a task id;
* ``lock``: the target finished; its full lock entry, and the key of the entry it replaces (``was``; null
  for a target new to the lock);
* ``drop``: the submit is known not to exist or its task failed; nothing to resume.

``pixmake.lock`` is rewritten from lock + journal in batches and at the end of a build, so recording
stays linear in the number of targets. After a crash, the next run folds the journal first and
resumes the in-flight tasks instead of paying for them again. A killed process loses no appended
record (it is in the page cache); a power cut may lose the records after the last fsync, but never a
submit, so at worst a resume looks a task up again. A ``lock`` record is appended only once the
object cache holds its images durably; the output files are not synced, and one a power cut empties
or cuts short is restored from that copy by the next plan. A torn last line (power loss mid-append)
is ignored.

A ``lock`` record applies only while the lockfile still holds the entry it replaced (or its own): one
whose target the lockfile has since locked otherwise (a ``.pixmake`` restored from an old backup or CI
cache, a checkout of another branch after a crash) is *superseded*: the newer entry stands, and the
record's entry goes to the history, so going back to its inputs restores its images free.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from pixmake.fingerprint import current_key
from pixmake.lockfile import Lock, LockEntry, entry_from_json, entry_to_json
from pixmake.store import fsync_dir, make_state_dir, open_for_append

if TYPE_CHECKING:
    import anyio  # imported where it is used: `pixmake plan` reads the journal without the build stack

__all__ = ["ANY", "Journal", "PendingSubmit", "finished_targets", "journal_bytes", "read_journal", "was_of"]

# A submit's fsync runs on the event loop while the moving average of recent fsyncs is under this.
_QUICK_FSYNC: Final = 0.002


@dataclass(frozen=True, slots=True)
class PendingSubmit:
    """A submit that was sent (or about to be) and has no final outcome yet."""

    target: str
    key: str
    client_business_id: str
    task_id: str | None = None
    emulator: bool = False  # sent to the bundled emulator (``build --emulator``), not to a provider
    sent_at: float | None = None  # wall-clock time it was journaled (None in journals of pixmake before it)
    keep: tuple[str, ...] = ()  # sha256 of the locked images the target keeps first: the task makes n - len(keep)
    was: str | None = None  # the target's name in the journal, when a plan moved the task to a renamed target
    # The key of the target's lock entry when the submit was sent (None: none; "*", ANY: a journal of a
    # pixmake before it): a lock that has moved on since holds another build's images for these inputs.
    over: str | None = "*"
    # The images its task makes, when a plan found it paid for its target's inputs with a higher n (lowered
    # while the build was interrupted): the first n are kept. Not journaled: each plan finds it again.
    images: int | None = None


def journal_bytes(path: Path) -> bytes:
    """The journal's bytes; none when there is no journal."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return b""


def _records(data: bytes) -> Iterator[dict[str, Any]]:
    for raw in data.split(b"\n"):
        if not raw.strip():
            continue
        try:
            record = json.loads(raw)
        except (ValueError, RecursionError):
            continue  # a line torn by a crash or a full disk mid-append (or damaged: nested past json's depth)
        if isinstance(record, dict):
            yield record


def _line(record: dict[str, Any]) -> bytes:
    return json.dumps(record, separators=(",", ":")).encode() + b"\n"


def _submit(
    target: str,
    key: str,
    client_business_id: str,
    emulator: bool,
    sent_at: float | None,
    keep: tuple[str, ...] = (),
    over: str | None = "*",
) -> dict[str, Any]:
    record: dict[str, Any] = {"op": "submit", "target": target, "key": key, "cbid": client_business_id}
    if sent_at is not None:
        record["at"] = sent_at
    if keep:
        record["keep"] = list(keep)
    if over != ANY:
        record["over"] = over
    return {**record, "emu": True} if emulator else record


def _task(target: str, key: str, client_business_id: str, task_id: str, emulator: bool = False) -> dict[str, Any]:
    record = {"op": "task", "target": target, "key": key, "cbid": client_business_id, "task_id": task_id}
    return {**record, "emu": True} if emulator else record


def _finished(target: str, entry: LockEntry, was: str | None) -> dict[str, Any]:
    return {"op": "lock", "target": target, "key": entry.key, "was": was, "entry": entry_to_json(entry)}


ANY: Final = "*"
"""The ``was`` of a ``lock`` record of a pixmake before it: applies over whatever the lockfile holds."""


def read_journal(
    path: Path, lock: Lock, data: bytes | None = None, superseded: list[LockEntry] | None = None
) -> tuple[Lock, dict[str, PendingSubmit]]:
    """Apply the journal to ``lock``: the folded lock and the submits still pending, by target name.

    Pending submits are keyed by target, not by key: two targets may share a key (the same prompt
    twice, for two variations), and each paid task belongs to exactly one of them. ``data``: the
    journal's bytes, read before ``lock`` by a reader racing a build (see :func:`pixmake.api.load_lock`).
    The entries of superseded ``lock`` records (see the module) are appended to ``superseded``.
    """
    entries = dict(lock.entries)
    pending: dict[str, PendingSubmit] = {}
    stale = superseded if superseded is not None else []
    for record in _records(journal_bytes(path) if data is None else data):
        try:
            _replay(record, entries, pending, stale)
        except (KeyError, TypeError, ValueError, AttributeError):
            continue  # whole but damaged (a bit flipped, a foreign writer): skipped as a torn line is
    return Lock(entries), pending


def was_of(record: dict[str, Any]) -> str | None:
    """The key a ``lock`` record's entry replaced (None: none; :data:`ANY`: not said)."""
    was = record.get("was", ANY)
    return None if was is None else str(was)


def _replay(
    record: dict[str, Any],
    entries: dict[str, LockEntry],
    pending: dict[str, PendingSubmit],
    superseded: list[LockEntry],
) -> None:
    """Apply one record to the entries and pending submits."""
    op, target, key = record.get("op"), str(record.get("target", "")), str(record.get("key", ""))
    if op == "submit":
        at = record.get("at")
        sent_at = float(at) if isinstance(at, int | float) and not isinstance(at, bool) and abs(at) < 1e12 else None
        emulator = record.get("emu") is True
        kept = record.get("keep")
        keep = tuple(map(str, kept)) if isinstance(kept, list) else ()
        over = record.get("over", ANY)
        pending[target] = PendingSubmit(
            target, key, str(record["cbid"]), emulator=emulator, sent_at=sent_at, keep=keep,
            over=None if over is None else str(over),
        )  # fmt: skip
    elif op == "task":
        task_id = str(record["task_id"])
        # Without its submit record (a damaged line), the task alone is still a paid one: resumed, not paid again.
        earlier = pending.get(target) or PendingSubmit(target, key, "", emulator=record.get("emu") is True)
        pending[target] = PendingSubmit(
            target, key, str(record["cbid"]), task_id, earlier.emulator, earlier.sent_at, earlier.keep,
            over=earlier.over,
        )  # fmt: skip
    elif op == "lock":
        entry = current_key(entry_from_json(record["entry"]))  # an earlier version's: today's key
        held, was = entries.get(target), was_of(record)
        if was == ANY or (held.key if held is not None else None) in (was, entry.key):
            entries[target] = entry
        else:
            superseded.append(entry)
        pending.pop(target, None)
    elif op == "drop":
        pending.pop(target, None)


def finished_targets(path: Path) -> dict[str, set[str | None]]:
    """The targets whose finished entries the journal holds (not yet folded into the lockfile), each with
    the keys of the entries its records replaced (see :func:`was_of`): a crash and a later build leave a chain."""
    finished: dict[str, set[str | None]] = {}
    for record in _records(journal_bytes(path)):
        if record.get("op") == "lock":
            finished.setdefault(str(record.get("target", "")), set()).add(was_of(record))
    return finished


class Journal:
    """Appends records; :meth:`durable` makes them durable. Open with :meth:`open`, close with :meth:`close`.

    An append is one ``write`` to the page cache, made on the event loop's thread. Only a submit must
    be on disk before its request is sent; its caller awaits :meth:`durable`, and callers that arrive
    while an fsync runs share the next one (group commit), so a burst of submits costs a few fsyncs.
    The other records ride on the next fsync, a fold, or :meth:`close`: losing one to a power cut
    costs a lookup on resume, never a payment.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None
        self._opened = False  # open() was called: the first append creates the file if need be
        self._fd_lock = threading.Lock()  # an fsync in a worker thread never meets a closed or swapped fd
        self._appended = 0  # records appended so far
        self._synced = 0  # of those, how many are known to be on disk
        self._syncing: anyio.Event | None = None  # set when the fsync in flight returns
        # Moving average of fsync times; it starts slow, so the first fsyncs are measured off the loop.
        self._fsync_seconds = 1.0

    def open(self) -> None:
        """Open for appending.

        A journal whose last line was torn (a crash or a full disk mid-append) first gets the line end
        it lacks: else the next record would be glued onto the torn line, and lost with it. A journal
        that does not exist is made by the first record: a build with nothing to journal leaves none
        (the no-op memo of the next plan holds).
        """
        self._opened = True
        if os.path.exists(self.path):
            self._fd = open_for_append(self.path)

    def close(self) -> None:
        """Make every record durable and close the file."""
        with self._fd_lock:
            if self._fd is not None:
                try:
                    os.fsync(self._fd)
                finally:
                    os.close(self._fd)
                    self._fd = None
                self._synced = self._appended
            self._opened = False

    def empty(self) -> bool:
        """Whether the journal holds no record: none was there when it was opened, and none was appended."""
        with self._fd_lock:
            if self._fd is None:
                return self._appended == 0 and not os.path.getsize(self.path) if os.path.exists(self.path) else True
            return self._appended == 0 and os.fstat(self._fd).st_size == 0

    def gone(self) -> bool:
        """Whether the journal's file was deleted under it (``.pixmake`` removed during a build: a clean)."""
        with self._fd_lock:
            return self._fd is not None and os.fstat(self._fd).st_nlink == 0

    def _append(self, record: dict[str, Any]) -> None:
        assert self._opened, "journal is not open"
        if self._fd is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            make_state_dir(self.path.parent)  # with its .gitignore, should a clean have taken it
            self._fd = open_for_append(self.path)
            fsync_dir(str(self.path.parent))  # a power cut must not take the new file's name with the submit in it
        line = memoryview(_line(record))
        while line:
            line = line[os.write(self._fd, line) :]
        self._appended += 1

    def _fsync(self) -> None:
        with self._fd_lock:
            if self._fd is not None:
                os.fsync(self._fd)

    async def durable(self) -> None:
        """Return once every record appended before the call is on disk; call it shielded from cancellation.

        Where the fsync runs is measured, not assumed: on the caller's thread (the event loop) while
        the moving average of recent fsyncs is under :data:`_QUICK_FSYNC` seconds, since a trip to a
        worker thread costs more CPU than a quick fsync (about 0.8 ms here); in a worker thread
        otherwise, so a slow disk does not stall the loop for long.
        """
        import anyio

        wanted = self._appended
        while self._synced < wanted:
            if self._syncing is not None:
                await self._syncing.wait()  # that fsync may not cover us: look again
                continue
            covered = self._appended
            if self._fsync_seconds < _QUICK_FSYNC:
                self._timed_fsync()
                self._synced = max(self._synced, covered)
                continue
            self._syncing = done = anyio.Event()
            try:
                await anyio.to_thread.run_sync(self._timed_fsync)
                self._synced = max(self._synced, covered)
            finally:
                self._syncing = None
                done.set()

    def _timed_fsync(self) -> None:
        started = time.perf_counter()
        self._fsync()
        self._fsync_seconds += 0.2 * (time.perf_counter() - started - self._fsync_seconds)

    def submitting(
        self,
        target: str,
        key: str,
        client_business_id: str,
        *,
        emulator: bool = False,
        sent_at: float | None = None,
        keep: tuple[str, ...] = (),
        over: str | None = ANY,
    ) -> None:
        """Record a submit about to be sent (then await :meth:`durable` before sending it); ``emulator``: to
        the bundled emulator, whose tasks no provider has; ``sent_at``: the wall-clock time (``time.time()``);
        ``keep``: the sha256 of the locked images the target keeps before the task's; ``over``: the key of
        the target's lock entry now (None: it has none)."""
        self._append(_submit(target, key, client_business_id, emulator, sent_at, keep, over))

    def accepted(self, target: str, key: str, client_business_id: str, task_id: str, *, emulator: bool = False) -> None:
        """Record the task id the provider (``emulator``: the bundled emulator) gave a submit."""
        self._append(_task(target, key, client_business_id, task_id, emulator))

    def finished(self, target: str, entry: LockEntry, was: str | None = ANY) -> None:
        """Record a finished target's lock entry, and the key of the entry it replaces (None: none)."""
        self._append(_finished(target, entry, was))

    def dropped(self, target: str, key: str) -> None:
        """Record that a pending submit has nothing left to resume."""
        self._append({"op": "drop", "target": target, "key": key})

    def rewrite(
        self,
        pending: Mapping[str, PendingSubmit],
        finished: Mapping[str, LockEntry] | None = None,
        was: Mapping[str, str | None] | None = None,
    ) -> None:
        """Replace the journal with the still-pending submits and the ``finished`` entries the lockfile lacks
        (each with the key it replaced, from ``was``)."""
        from pixmake.store import atomic_write

        lines = []
        for p in pending.values():
            lines.append(_line(_submit(p.target, p.key, p.client_business_id, p.emulator, p.sent_at, p.keep, p.over)))
            if p.task_id is not None:
                lines.append(_line(_task(p.target, p.key, p.client_business_id, p.task_id, p.emulator)))
        replaced = was or {}
        lines.extend(_line(_finished(name, entry, replaced.get(name, ANY))) for name, entry in (finished or {}).items())
        with self._fd_lock:
            reopen = self._fd is not None
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
            try:
                atomic_write(self.path, b"".join(lines))  # durable: everything appended so far is in it or folded
                self._synced = self._appended
            finally:
                if reopen:  # after a failed rewrite, the old journal (every record) goes on taking appends
                    self.open()
