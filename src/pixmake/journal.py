"""The build journal: an fsync'd append-only log in ``.pixmake/`` that makes every step durable at once.

Shell. Three records, one JSON object per line (as ninja appends to its build log):

* ``submit``: written *before* a submit is sent, with its ``client_business_id``;
* ``task``: the provider accepted it and gave a task id;
* ``lock``: the target finished; its full lock entry;
* ``drop``: the submit is known not to exist or its task failed; nothing to resume.

``pixmake.lock`` is rewritten from lock + journal in batches and at the end of a build, so recording
stays linear in the number of targets. After a crash, the next run folds the journal first and
resumes the in-flight tasks instead of paying for them again. A torn last line (power loss mid-append)
is ignored.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from pixmake.lockfile import Lock, LockEntry, entry_from_json, entry_to_json

__all__ = ["Journal", "PendingSubmit", "read_journal"]


@dataclass(frozen=True, slots=True)
class PendingSubmit:
    """A submit that was sent (or about to be) and has no final outcome yet."""

    target: str
    key: str
    client_business_id: str
    task_id: str | None = None


def _records(path: Path) -> Iterator[dict[str, Any]]:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return
    for raw in data.split(b"\n"):
        if not raw.strip():
            continue
        try:
            record = json.loads(raw)
        except ValueError:
            continue  # a torn final line from a crash mid-append
        if isinstance(record, dict):
            yield record


def _line(record: dict[str, Any]) -> bytes:
    return json.dumps(record, sort_keys=True, separators=(",", ":")).encode() + b"\n"


def _submit(target: str, key: str, client_business_id: str) -> dict[str, Any]:
    return {"op": "submit", "target": target, "key": key, "cbid": client_business_id}


def _task(target: str, key: str, client_business_id: str, task_id: str) -> dict[str, Any]:
    return {"op": "task", "target": target, "key": key, "cbid": client_business_id, "task_id": task_id}


def read_journal(path: Path, lock: Lock) -> tuple[Lock, dict[str, PendingSubmit]]:
    """Apply the journal to ``lock``: the folded lock and the submits still pending, by target name.

    Pending submits are keyed by target, not by key: two targets may share a key (the same prompt
    twice, for two variations), and each paid task belongs to exactly one of them.
    """
    entries = dict(lock.entries)
    pending: dict[str, PendingSubmit] = {}
    for record in _records(path):
        op, target, key = record.get("op"), str(record.get("target", "")), str(record.get("key", ""))
        if op == "submit":
            pending[target] = PendingSubmit(target, key, str(record["cbid"]))
        elif op == "task" and target in pending:
            pending[target] = PendingSubmit(target, key, str(record["cbid"]), str(record["task_id"]))
        elif op == "lock":
            entries[target] = entry_from_json(record["entry"])
            pending.pop(target, None)
        elif op == "drop":
            pending.pop(target, None)
    return Lock(entries), pending


class Journal:
    """Appends records with fsync; open with :meth:`open`, close with :meth:`close`."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._handle: BinaryIO | None = None
        self._mutex = threading.RLock()  # appends come from worker threads

    def open(self) -> None:
        """Open for appending (creating ``.pixmake/`` as needed)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._handle = self.path.open("ab")

    def close(self) -> None:
        """Close the file."""
        if self._handle is not None:
            self._handle.close()
            self._handle = None

    def _append(self, record: dict[str, Any]) -> None:
        line = _line(record)
        with self._mutex:
            assert self._handle is not None, "journal is not open"
            self._handle.write(line)
            self._handle.flush()
            os.fsync(self._handle.fileno())

    def submitting(self, target: str, key: str, client_business_id: str) -> None:
        """Record a submit about to be sent."""
        self._append(_submit(target, key, client_business_id))

    def accepted(self, target: str, key: str, client_business_id: str, task_id: str) -> None:
        """Record the task id the provider gave a submit."""
        self._append(_task(target, key, client_business_id, task_id))

    def finished(self, target: str, entry: LockEntry) -> None:
        """Record a finished target's lock entry."""
        self._append({"op": "lock", "target": target, "key": entry.key, "entry": entry_to_json(entry)})

    def dropped(self, target: str, key: str) -> None:
        """Record that a pending submit has nothing left to resume."""
        self._append({"op": "drop", "target": target, "key": key})

    def rewrite(self, pending: dict[str, PendingSubmit]) -> None:
        """Replace the journal with just the still-pending submits (after the lock absorbed the rest)."""
        from pixmake.store import atomic_write

        lines = []
        for p in pending.values():
            lines.append(_line(_submit(p.target, p.key, p.client_business_id)))
            if p.task_id is not None:
                lines.append(_line(_task(p.target, p.key, p.client_business_id, p.task_id)))
        data = b"".join(lines)
        with self._mutex:
            reopen = self._handle is not None
            self.close()
            atomic_write(self.path, data)
            if reopen:
                self.open()
