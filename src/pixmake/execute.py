"""Carry out a plan: one anyio task group, a pool of workers, every result recorded at once.

Shell. Per paid action::

    upload local inputs once ─▶ journal the client_business_id ─▶ submit ──(unknown outcome)──▶ look it up
            (or resume a journaled task instead)                    │                              │
                                                                    ▼                              ▼
    lock ◀─ journal ◀─ object cache ◀─ write atomically ◀─ verify ◀─ download ◀──── poll at the provider's pace

Restores copy locked bytes from the object cache and cost nothing. Per-target failures are values
(:class:`TargetFailure`); a bad key or an empty balance cancels the whole build. Pacing: a token
bucket for submits, another for queries, and an adaptive (AIMD) limit on targets in flight; the
number of worker tasks is the configured concurrency, so memory stays flat in the number of targets.
The executor emits typed events to a reporter and never prints.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import itertools
import os
import random as _random
import secrets
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import EllipsisType, MappingProxyType
from typing import TYPE_CHECKING, Final, TypeVar

import anyio
import anyio.abc
import anyio.lowlevel

from pixmake import invocation
from pixmake.decode import as_png
from pixmake.errors import (
    BadResultError,
    BudgetError,
    ConfigError,
    GenerationFailedError,
    LockfileError,
    NetworkError,
    PixmakeError,
    ProviderError,
    QuotaError,
    RateLimitedError,
    RequestRejectedError,
    StorageError,
    UnsafePathError,
)
from pixmake.fingerprint import current_keys, lock_entry, target_key
from pixmake.history import remember
from pixmake.journal import ANY, Journal, PendingSubmit, finished_targets
from pixmake.limits import AdaptiveLimiter, AdaptiveLimiterStatistics, RateLimiter, RateLimiterStatistics
from pixmake.lockfile import Lock, LockedOutput, LockEntry, lock_pieces, merged_pieces, parse_lock, split_pieces
from pixmake.lookups import LookupRecord, Witness
from pixmake.manifest import Target, is_url, output_paths
from pixmake.memo import FileStat, file_stat
from pixmake.models import MODELS, RESULT_LIFETIME
from pixmake.pixelcache import PixelDigests
from pixmake.plan import PROVIDER_MADE, Action, ActionKind, Plan
from pixmake.providers.base import GenerationRequest, Provider, TaskState, TaskStatus
from pixmake.retry import Backoff, Operation, Verdict, classify, poll_delay, rides_out
from pixmake.settings import Settings, display_url
from pixmake.store import (
    STATE_DIR,
    ObjectCache,
    RootGuard,
    atomic_write,
    describe_os_error,
    disk_wide,
    hash_file,
    make_state_dir,
)
from pixmake.threadbatch import ThreadBatcher
from pixmake.uploads import UploadCache, Uploader

if TYPE_CHECKING:
    from pixmake.reconcile import PruneResult
    from pixmake.report import Reporter

__all__ = [
    "BuildFinished",
    "BuildResult",
    "BuildStarted",
    "BuildStatistics",
    "ConcurrencyChanged",
    "Event",
    "Executor",
    "RetryScheduled",
    "TargetFailed",
    "TargetFailure",
    "TargetFinished",
    "TargetPolled",
    "TargetStarted",
    "TargetSubmitted",
    "Tick",
    "idle_statistics",
]

T = TypeVar("T")

_RESTORE_WORKERS = 4  # free work: bounded by disk, not by the provider
_CONNECT_ATTEMPTS = 3  # attempts while the provider was never reached: a wrong base URL fails in seconds
_LAST_LOOK = 60.0  # seconds the last poll past max_wait may take (its retries included): then the slot is freed
# Finished targets' disk work waits this long for company before its trip to a worker thread (it holds
# no provider slot): at 64 targets a second, a trip carries two or three targets' work.
_DISK_WINDOW = 0.02
TICK = 10.0  # seconds between two Tick events


_LOCK_READS = 3  # reads of a pixmake.lock that changed during the build and does not parse, before giving up


class _LockUnreadable(Exception):
    """Internal: pixmake.lock changed during the build and does not parse."""


class _LockMoved(Exception):
    """Internal: pixmake.lock changed on disk while a fold was writing the new one."""


# --- events ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BuildStarted:
    """The build began: how much work it has."""

    targets: int  # targets to generate or restore
    images: int  # images to pay for (placeholders to make, with the bundled emulator)
    concurrency: int
    emulator: bool = False  # built by the bundled emulator: nothing is paid for


@dataclass(frozen=True, slots=True)
class TargetStarted:
    """Work on a target began."""

    target: str
    action: str
    images: int


@dataclass(frozen=True, slots=True)
class TargetSubmitted:
    """The provider accepted a submit (or a journaled task was resumed). ``unplanned``: a submit the plan
    did not count, the task of an interrupted build it was to collect being unknown to the provider."""

    target: str
    task_id: str
    resumed: bool
    unplanned: bool = False


@dataclass(frozen=True, slots=True)
class TargetPolled:
    """A status poll answered."""

    target: str
    status: str
    progress: int


@dataclass(frozen=True, slots=True)
class TargetFinished:
    """A target's outputs are written and locked."""

    target: str
    action: str
    outputs: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class TargetFailed:
    """A target failed; the build goes on."""

    target: str
    error: str


@dataclass(frozen=True, slots=True)
class RetryScheduled:
    """A provider call failed and will be retried after ``delay`` seconds."""

    target: str
    operation: str
    attempt: int
    delay: float
    error: str


@dataclass(frozen=True, slots=True)
class ConcurrencyChanged:
    """The adaptive limit on targets in flight moved (halved by 429s, or recovering)."""

    limit: int


@dataclass(frozen=True, slots=True)
class TargetFailure:
    """Why one target failed."""

    target: str
    error: str


@dataclass(frozen=True, slots=True)
class BuildStatistics:
    """What the build asked of the provider, for benchmarks and the curious."""

    submits: int = 0
    polls: int = 0
    lookups: int = 0
    downloads: int = 0
    uploads: int = 0
    distinct_uploads: int = 0
    retries: int = 0
    submit_rate: RateLimiterStatistics | None = None
    query_rate: RateLimiterStatistics | None = None
    concurrency: AdaptiveLimiterStatistics | None = None


@dataclass(frozen=True, slots=True)
class BuildResult:
    """What a build did, outcome by outcome (paid, already paid, free, untouched, failed).

    ``resumed`` are targets whose task an interrupted build had paid for, collected now (their images
    are not in ``images_generated``); ``dropped`` are targets whose journaled task was for inputs they
    no longer have, dropped uncollected; ``stale`` are stale output paths left in place (see
    ``Action.stale``); ``pruned`` is what ``build --prune`` did afterwards (None without ``--prune``).
    ``images_paid`` is what this build's submits were charged, less failed tasks (refunded): more than
    ``images_generated`` when paid targets did not finish (their tasks stay journaled).
    """

    generated: tuple[str, ...] = ()
    restored: tuple[str, ...] = ()
    unchanged: tuple[str, ...] = ()
    edited: tuple[str, ...] = ()
    orphaned: tuple[str, ...] = ()
    failed: tuple[TargetFailure, ...] = ()
    images_generated: int = 0
    images_paid: int = 0
    images_unplanned: int = 0  # of images_paid, what the plan did not count: interrupted tasks the provider lost
    fatal: PixmakeError | None = None  # what stopped the whole build (bad key, no balance, unreachable, disk full)
    statistics: BuildStatistics = field(default_factory=BuildStatistics)
    resumed: tuple[str, ...] = ()
    dropped: tuple[str, ...] = ()
    stale: tuple[str, ...] = ()
    pruned: PruneResult | None = None
    seconds: float = 0.0
    emulator: bool = False  # built by the bundled emulator: its images are placeholders, paid for by nobody
    journaled: tuple[str, ...] = ()  # targets whose paid task (it has a task id) stays journaled for the next build

    @property
    def ok(self) -> bool:
        """True when nothing failed."""
        return not self.failed and self.fatal is None


@dataclass(frozen=True, slots=True)
class Tick:
    """Time passed: emitted every :data:`TICK` seconds while targets are worked on, so a reporter can say
    what the build waits for when no other event comes (one long download, a long ``Retry-After``).
    Not an NDJSON event."""


@dataclass(frozen=True, slots=True)
class BuildFinished:
    """The build ended."""

    result: BuildResult
    seconds: float


Event = (
    BuildStarted
    | TargetStarted
    | TargetSubmitted
    | TargetPolled
    | TargetFinished
    | TargetFailed
    | RetryScheduled
    | ConcurrencyChanged
    | Tick
    | BuildFinished
)


class _Undecodable(Exception):
    """Internal: result image ``index`` of a target does not decode."""

    def __init__(self, index: int, error: BadResultError) -> None:
        super().__init__(str(error))
        self.index = index
        self.error = error


class _Fatal(Exception):
    """Internal: a build-wide failure (bad key, no balance, a full disk) that cancels every target."""

    def __init__(self, error: PixmakeError) -> None:
        super().__init__(str(error))
        self.error = error


# --- the lock recorder -----------------------------------------------------------------------------


class _Recorder:
    """The one writer of the journal and the lock; called on the event loop's thread only.

    Each step is appended to the journal at once (a submit is made durable before it is sent: see
    :meth:`Executor._journal_submit`). ``pixmake.lock`` is rewritten only when the entries recorded
    since the last fold reach a quarter of the lock (or 64), so the total cost of folding stays linear
    in the number of targets, and at the end. A fold writes in a worker thread while appends go on,
    then rewrites the journal down to the submits still pending and the entries recorded meanwhile.

    The first fold writes the lock the build started from (which may be in the old format, or come
    partly from the journal) with the new entries. Later ones merge the entries recorded since the
    previous fold into the build's own copy of the lock, read back block by block (:func:`merged_pieces`,
    see :meth:`_write_lock`): a finished target's entry is not kept in memory after its fold.

    ``pixmake.lock`` may change on disk while the build runs (a ``git pull`` brings a teammate's
    entries). A fold that finds it changed since the build planned or last wrote it merges instead of
    overwriting (see :meth:`_write_lock`); this build's own entries are those it recorded and those it
    recovered from the journal.
    """

    def __init__(
        self,
        lock_path: Path,
        lock: Lock,
        journal: Journal,
        pending: dict[str, PendingSubmit],
        *,
        emulator: bool,
        lock_stat: FileStat | None,
        history: Path | None = None,
    ) -> None:
        self.lock_path = lock_path
        self.journal = journal
        self.pending = pending
        self.emulator = emulator  # submits go to the bundled emulator: journaled as such
        self._base: Lock | None = lock  # until the first fold has written it
        self._start = lock  # the lock the build planned from (alive as long as its plan): what each entry replaces
        self._copy = journal.path.with_name("pixmake.lock.build")  # what each fold merges into (see _write_lock)
        self._size = len(lock.entries)  # entries in the lock, at most (for the fold threshold)
        self._since_snapshot: dict[str, LockEntry] = {}  # recorded since the last fold began
        self._folding = False
        self._lock_stat = lock_stat  # as the build planned from it (or last wrote it)
        # Entries this build made or recovered, each with the keys of the entries it replaced (the lockfile's,
        # and those of a chain of journal records): they win a merge over an entry of those keys (_write_lock).
        self._ours = finished_targets(journal.path)
        self._recovered = frozenset(self._ours)  # in _base, from the journal: not in the lockfile until a fold
        self._changing: Mapping[str, LockEntry] = {}  # the entries of the fold in flight
        self._made: dict[str, LockEntry] = {}  # recorded with new images since the last fold: for the history
        self.history = history

    def _reattach(self) -> None:
        """Once the journal's file was deleted under the build (``git clean -fdx``, ``rm -rf .pixmake``), write
        a new one of what the build still owes it: the submits in flight and the entries not yet folded
        (else a crash from here on lost them, and their targets were paid for again)."""
        if not self.journal.gone():
            return
        make_state_dir(self.journal.path.parent)
        self._rewrite_journal()

    def journal_moves(self) -> None:
        """Rewrite the journal at once when the plan moved a task to another target (``was``): else a submit
        of the target it came from, journaled under the same name, would hide it from the next build."""
        if any(task.was is not None for task in self.pending.values()):
            self._rewrite_journal()

    def _rewrite_journal(self) -> None:
        """Replace the journal with what the build still owes it: the submits in flight and the entries not
        yet folded (atomically: a crash leaves the old journal or the new one)."""
        base = self._base  # a fold in a worker thread may drop it meanwhile
        owed = {name: base.entries[name] for name in self._recovered if name in base.entries} if base else {}
        owed |= {**self._changing, **self._since_snapshot}  # not folded yet, or not sure to be
        self.journal.rewrite(self.pending, owed, self._wases())

    def submitting(self, target: str, key: str, client_business_id: str, keep: tuple[str, ...] = ()) -> None:
        """A submit with this id is about to be sent (once the journal is durable); ``keep``: the sha256 of
        the locked images the target keeps before the task's (its ``n`` raised)."""
        self._reattach()
        sent_at = round(time.time(), 3)
        held = self._start.entries.get(target)
        over = held.key if held is not None else None  # a lock that moves on from it holds another build's images
        self.journal.submitting(
            target, key, client_business_id, emulator=self.emulator, sent_at=sent_at, keep=keep, over=over
        )
        self.pending[target] = PendingSubmit(
            target, key, client_business_id, emulator=self.emulator, sent_at=sent_at, keep=keep, over=over
        )

    def accepted(self, target: str, key: str, client_business_id: str, task_id: str) -> None:
        """The provider gave the submit a task id."""
        self.journal.accepted(target, key, client_business_id, task_id, emulator=self.emulator)
        earlier = self.pending.get(target)
        sent_at, keep = (earlier.sent_at, earlier.keep) if earlier is not None else (None, ())
        over = earlier.over if earlier is not None else ANY  # what a rewritten journal must still say
        images = earlier.images if earlier is not None and earlier.client_business_id == client_business_id else None
        self.pending[target] = PendingSubmit(
            target, key, client_business_id, task_id, self.emulator, sent_at, keep, images=images, over=over
        )

    def dropped(self, target: str, key: str) -> None:
        """Nothing is left to resume for this key (never created, failed and refunded, or result gone)."""
        if target in self.pending:
            self.journal.dropped(target, key)
            del self.pending[target]

    def record(self, name: str, entry: LockEntry, *, made: bool = False) -> bool:
        """A target finished: journal its lock entry; True when enough accumulated for a fold. ``made``: new
        images, whose entry the fold also appends to the history (a restore's is there or in a lock already)."""
        if made:
            self._made[name] = entry
        held = self._start.entries.get(name)
        was = held.key if held is not None else None
        self._reattach()
        self.journal.finished(name, entry, was)
        self._since_snapshot[name] = entry
        self._ours.setdefault(name, set()).add(was)
        self._size += 1
        self.pending.pop(name, None)
        return not self._folding and len(self._since_snapshot) >= max(64, self._size // 4)

    def _write_lock(
        self, changed: Mapping[str, LockEntry], *, final: bool, made: Mapping[str, LockEntry] | None = None
    ) -> None:
        """Worker thread: fold ``changed`` into the lock; before the ``final`` fold, into the build's own copy too.

        Later folds merge into the copy in ``.pixmake/``, not into ``pixmake.lock``. The copy needs no
        fsync: only this build reads it. When ``pixmake.lock`` changed on disk (a pull, a checkout), the
        fold takes its entries as well: theirs win over the build's copy, this build's own win over
        theirs (but never a placeholder over a provider's image), and no entry is dropped, so an
        older lock checked out mid-build cannot make a paid image's entry disappear. Then the ``made``
        entries (new images) are appended to the history: a lock change thrown away later loses no image.
        """
        for attempt in range(_LOCK_READS):
            last = attempt + 1 == _LOCK_READS
            try:
                self._fold_into_lock(changed, final=final, last=last)
                if self.history is not None and made:
                    with contextlib.suppress(OSError):  # it only saves money later: the lock is written
                        remember(self.history, made.values(), made=True)
                return
            except _LockMoved:  # changed while this fold wrote: merge again
                continue
            except FileNotFoundError:  # .pixmake deleted as the fold wrote in it (git clean): again, from the lock
                if last:
                    raise

    def _fold_into_lock(self, changed: Mapping[str, LockEntry], *, final: bool, last: bool) -> None:
        """One attempt of :meth:`_write_lock`; raises _LockMoved, unless ``last``, when ``pixmake.lock``
        changed on disk after it was read and before the new one would replace it."""
        try:
            if self._base is None and not os.path.exists(self._copy):
                # The copy went with .pixmake (git clean): the lock is as the last fold wrote it.
                self._base = current_keys(
                    parse_lock(self.lock_path.read_text(encoding="utf-8"), file=self.lock_path.name)
                )
            theirs, seen = self._changed_on_disk()

            def unmoved() -> None:
                if not last and file_stat(self.lock_path) != seen:
                    raise _LockMoved

            if theirs is not None:  # rare: the whole lock in memory, once
                ours = (
                    self._base.entries
                    if self._base is not None
                    else parse_lock(self._copy.read_text(encoding="utf-8")).entries
                )
                merged = {**ours, **changed}
                superseded = []
                for name, entry in theirs.entries.items():
                    own = merged.get(name) if name in self._ours else None
                    if own is None or (own.emulator and not entry.emulator):  # a provider's image beats a placeholder
                        merged[name] = entry
                    elif ANY not in self._ours[name] and entry.key not in {*self._ours[name], own.key}:  # moved on
                        superseded.append(own)
                        merged[name] = entry
                if superseded and self.history is not None:  # going back to those inputs restores them free
                    remember(self.history, superseded)
                self._size = len(merged)
                pieces: Iterable[bytes] = lock_pieces(Lock(MappingProxyType(merged)))
            elif self._base is not None:
                pieces = lock_pieces(Lock(MappingProxyType({**self._base.entries, **changed})))
            else:
                pieces = merged_pieces(split_pieces(_chunks(self._copy)), changed)
            if final:
                atomic_write(self.lock_path, pieces, before_replace=unmoved)
            else:
                atomic_write(self._copy, pieces, durable=False)
                atomic_write(self.lock_path, _chunks(self._copy), before_replace=unmoved)
            self._lock_stat = file_stat(self.lock_path)
        except ValueError as error:  # a damaged copy: every entry since the last fold is still in the journal
            raise StorageError(
                f"the build's copy of the lock ({self._copy}) is damaged ({error}); "
                "finished targets stay in the journal and the next run writes them",
                build_wide=True,
            ) from error
        self._base = None

    def _changed_on_disk(self) -> tuple[Lock | None, FileStat | None]:
        """Worker thread: ``pixmake.lock`` as it now is, when something other than this build changed it
        (None when nothing did, or when it is gone: this build's lock then replaces it), and its stat.

        Raises :class:`_LockUnreadable` when it changed and does not parse (a merge without pixmake's
        driver left conflict markers): overwriting it would drop the other side's entries unseen. Read
        again a few times first: a checkout may be writing it."""
        for attempt in range(_LOCK_READS):
            stat = file_stat(self.lock_path)
            if stat is None or stat == self._lock_stat:
                return None, stat
            try:
                text = self.lock_path.read_text(encoding="utf-8")
                return current_keys(parse_lock(text, file=self.lock_path.name)), stat  # under today's keys
            except FileNotFoundError:
                return None, None
            except (OSError, UnicodeDecodeError, LockfileError) as error:
                if attempt + 1 == _LOCK_READS:
                    raise _LockUnreadable(str(error)) from error
                time.sleep(0.1)
        raise AssertionError("unreachable")

    def discard_copy(self) -> None:
        """Remove the build's own copy of the lock (once the last fold has published it)."""
        with contextlib.suppress(OSError):
            os.unlink(self._copy)

    async def fold(self, *, final: bool = False) -> None:
        """Write ``pixmake.lock`` and shrink the journal; call it shielded. A fold already running is enough.

        The ``final`` fold (the build's last) writes the lock only, not the build's copy of it.
        """
        if self._folding:
            return
        if final and self._base is not None and not self._since_snapshot and self.journal.empty():
            # Nothing recorded, and nothing journaled before or since: the lock and journal stay as they are (a
            # no-op build rewriting them made the next plan miss its memo, 0.9 s instead of 0.07 at 10,000).
            return
        self._folding = True
        try:
            self._reattach()
            changed, self._since_snapshot = self._since_snapshot, {}
            made, self._made = self._made, {}
            self._changing = changed
            try:
                await anyio.to_thread.run_sync(functools.partial(self._write_lock, changed, final=final, made=made))
            except BaseException as error:
                self._since_snapshot = {**changed, **self._since_snapshot}  # the next fold writes them
                self._made = {**made, **self._made}
                if isinstance(error, _LockUnreadable):
                    if not final:
                        return  # the build goes on; its entries wait in the journal for a readable lock
                    raise StorageError(
                        f"pixmake.lock changed during the build and cannot be read ({error}; a merge conflict?): "
                        f"this build's finished targets stay in {STATE_DIR}/journal.jsonl; resolve the lock "
                        f"(README: Merging the lockfile), then {invocation.pixmake('build')} records them, free",
                        build_wide=True,
                    ) from None
                raise
            self.journal.rewrite(self.pending, self._since_snapshot, self._wases())
            await anyio.to_thread.run_sync(_trim_heap)
        finally:
            self._folding, self._changing = False, {}

    def _wases(self) -> dict[str, str | None]:
        """For each entry this build made or recovered, the key a rewritten journal record says it replaced:
        the one it did, or any (:data:`~pixmake.journal.ANY`) after a chain of them."""
        return {name: next(iter(keys)) if len(keys) == 1 else ANY for name, keys in self._ours.items()}


# --- helpers ---------------------------------------------------------------------------------------


def _limiters(
    s: Settings, sleep: Callable[[float], Awaitable[None]], on_change: Callable[[int], None]
) -> tuple[RateLimiter, RateLimiter, AdaptiveLimiter]:
    """A build's pace: the submit and query rates (token buckets) and its adaptive concurrency."""
    submit_rate = RateLimiter(s.submit_rate, burst=max(1.0, min(s.submit_rate * 10, 50)), sleep=sleep)
    query_rate = RateLimiter(s.query_rate, burst=max(1.0, min(s.query_rate * 10, 500)), sleep=sleep)
    return submit_rate, query_rate, AdaptiveLimiter(s.concurrency, on_change=on_change)


def idle_statistics(settings: Settings) -> BuildStatistics:
    """The statistics of a build that sent nothing: its limiters as they start."""
    submit_rate, query_rate, capacity = _limiters(settings, anyio.sleep, lambda n: None)
    return BuildStatistics(
        submit_rate=submit_rate.statistics(), query_rate=query_rate.statistics(), concurrency=capacity.statistics()
    )


@functools.cache
def _glibc(name: str) -> Callable[..., int] | None:
    """A function of glibc's malloc (``malloc_trim``, ``mallopt``), or None where the C library has none
    (macOS, musl, Windows)."""
    import ctypes

    try:
        return getattr(ctypes.CDLL(None), name, None)
    except (OSError, TypeError):  # no C library to load by that name (Windows takes no None)
        return None


_M_ARENA_MAX: Final = -8  # glibc's mallopt parameter


def limit_heap_arenas() -> None:
    """Let the build's threads share two glibc heaps instead of one each (``MALLOC_ARENA_MAX=2``).

    Worker threads decode and write images: each thread's own heap kept the pages its freed buffers
    left, so peak RSS grew with the build. Two shared heaps: 75 MB instead of 81 at 10,000 targets in a
    fast build (1.8 KB per extra target instead of 2.5). Call it before the build starts a thread (the
    scan's hashing pool is one): glibc fixes the limit when it makes the first extra heap. Process-wide;
    a ``MALLOC_ARENA_MAX`` in the environment wins.
    """
    mallopt = _glibc("mallopt")
    if mallopt is not None and "MALLOC_ARENA_MAX" not in os.environ:
        mallopt(_M_ARENA_MAX, 2)


def _trim_heap() -> None:
    """Give the heap's free pages back to the system, where glibc can.

    A build frees thousands of image and response buffers among objects that stay, and glibc keeps
    the pages they leave free: RSS grew 1.4 KB per target through a 10,000-target build, though
    Python's live memory stayed flat. Trimmed after each fold, it grew 0.6 KB per target.
    """
    trim = _glibc("malloc_trim")
    if trim is not None:
        trim(0)


def _left_as_saved(path: str, target: str, kept: str, image: str) -> StorageError:
    """The failure of an output left alone: a file was saved at ``path`` during the build."""
    return StorageError(
        f"{path} changed during the build (an editor? a git checkout?), so it was left as it is{kept}"
        f"'{invocation.pixmake('accept', target)}' keeps the saved file, "
        f"'{invocation.pixmake('build', '--restore')}' puts {image} there",
        build_wide=False,
    )


def _chunks(path: Path) -> Iterator[bytes]:
    """A file's bytes in 64 KB chunks; it is closed once read, so it may then be replaced (as Windows needs)."""
    with open(path, "rb") as file:
        yield from iter(functools.partial(file.read, 1 << 16), b"")


def _client_business_id(key: str) -> str:
    """The idempotency id of one submit attempt: the target's key plus a nonce."""
    return f"pixmake-{key[:32]}-{secrets.token_hex(4)}"


def _about_inputs(error: ProviderError) -> bool:
    """Whether a refused submit may be about its reference or mask URLs (then they are uploaded again).

    Only a 400 (how the docs refuse a request's fields, §4.1): a 422 refuses the content, and would be
    refused again.
    """
    text = error.message.lower()
    return (
        isinstance(error, RequestRejectedError)
        and error.status == 400
        and any(word in text for word in ("url", "image", "mask"))
    )


def _leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    out: list[BaseException] = []
    for error in group.exceptions:
        out.extend(_leaves(error) if isinstance(error, BaseExceptionGroup) else [error])
    return out


@dataclass
class _Counters:
    submits: int = 0
    polls: int = 0
    lookups: int = 0
    downloads: int = 0
    retries: int = 0


# --- the executor ----------------------------------------------------------------------------------


@dataclass
class Executor:
    """Runs one plan against one provider; construct per build with :meth:`create`."""

    root: Path
    settings: Settings
    provider: Provider | None
    reporter: Reporter
    objects: ObjectCache
    recorder: _Recorder
    input_hashes: Mapping[str, str]
    upload_cache: UploadCache
    sleep: Callable[[float], Awaitable[None]] = anyio.sleep
    random: Callable[[], float] = _random.random
    backoff: Backoff = field(default_factory=Backoff)
    max_images: int | None = None  # a cap on what this build pays; the plan was checked against it
    planned_stats: Mapping[str, FileStat] = field(default_factory=dict)  # files as the plan saw them
    history: Path | None = None  # .pixmake/history.jsonl: where the images of a short result are remembered
    pixel_digests: PixelDigests = field(default_factory=lambda: PixelDigests(None))  # of what inputs show
    _unplanned: int = 0  # images of submits the plan did not count (a resumed task the provider no longer has)
    _paid_unplanned: int = 0  # of those, the ones charged (an unknown outcome counts against the cap only)
    _planned_images: int = 0  # what the plan pays for (set by run)
    _failed: list[TargetFailure] = field(default_factory=list)
    _done: dict[ActionKind, list[str]] = field(default_factory=dict)
    _images: int = 0
    _paid: int = 0  # images charged by this build's accepted submits, less failed (refunded) tasks
    _counters: _Counters = field(default_factory=_Counters)
    _reached: bool = False  # some request of this build got an answer from the provider
    _known_task: Witness | None = None  # the first task this build saw created
    _lookups_work: bool | None = None  # whether a lookup by client_business_id found a witness (None: not asked)
    _asked: Witness | None = None  # the witness that lookup was of
    _asking: anyio.Lock = field(default_factory=anyio.Lock)  # one such lookup at a time
    _lookups: LookupRecord | None = None  # .pixmake/lookups.json for this provider and key, read once
    # Since when (monotonic) each kind of call has failed with no call of its kind getting through meanwhile
    _outage: dict[Operation, float] = field(default_factory=dict)
    # Restores that copy the images of a target this build generates (same inputs), by that target: started
    # once it ends on its own (not when a fatal error or Ctrl-C stops the build); and its lock entry.
    _twins: dict[str, list[Action]] = field(default_factory=dict)
    _locked: dict[str, LockEntry] = field(default_factory=dict)
    _group: anyio.abc.TaskGroup | None = None
    _working: int = 0  # workers not finished yet
    _ticking: anyio.CancelScope | None = None  # the Tick events' (made by run): cancelled by the last worker

    def __post_init__(self) -> None:
        self.submit_rate, self.query_rate, self.capacity = _limiters(
            self.settings, self.sleep, lambda n: self.reporter.emit(ConcurrencyChanged(n))
        )
        # Thread work (Pillow decode, hashing, writes) is CPU- and memory-bound: a decoded 1024² image
        # is 3 MB, so this many at once, not one per target in flight.
        self.thread_work = anyio.CapacityLimiter(max(2, os.cpu_count() or 2))
        self.guard = RootGuard(self.root)
        # Trips to a worker thread cost more CPU than a small result's disk work: share them.
        self.disk = ThreadBatcher(_DISK_WINDOW, limiter=self.thread_work)
        self.uploader = Uploader(
            self.upload_cache,
            self._upload,
            lambda path: (self.root / path).read_bytes(),
            lambda url: self._provider().download(url),  # one attempt: should it fail, the file goes up again
        )

    @classmethod
    def create(
        cls,
        *,
        root: Path,
        lock_path: Path,
        lock: Lock,
        pending: dict[str, PendingSubmit],
        settings: Settings,
        provider: Provider | None,
        reporter: Reporter,
        objects: ObjectCache,
        journal: Journal,
        input_hashes: Mapping[str, str],
        upload_cache: UploadCache,
        max_images: int | None = None,
        planned_stats: Mapping[str, FileStat] | None = None,
        lock_stat: FileStat | EllipsisType | None = ...,
        history: Path | None = None,
        pixel_digests: PixelDigests | None = None,
    ) -> Executor:
        """An executor whose recorder starts from ``lock`` and the journal's pending submits.

        ``lock_stat`` is the lockfile's stat (None: no file) taken before the plan read it, so a change
        since is merged (default: its stat now).
        ``planned_stats`` holds the stat of each file the plan found at a path it read (by project path):
        an output that differs from it when its image arrives was saved meanwhile, and is left alone.
        """
        stat = file_stat(lock_path) if lock_stat is ... else lock_stat
        recorder = _Recorder(
            lock_path, lock, journal, pending, emulator=settings.emulator, lock_stat=stat, history=history
        )
        backoff = Backoff(settings.backoff_base, settings.backoff_cap, settings.max_retry_after)
        return cls(
            root, settings, provider, reporter, objects, recorder, input_hashes, upload_cache,
            backoff=backoff, max_images=max_images, planned_stats=planned_stats or {}, history=history,
            pixel_digests=pixel_digests or PixelDigests(None),
        )  # fmt: skip

    def statistics(self) -> BuildStatistics:
        """Provider calls so far, and the limiters' figures."""
        c = self._counters
        return BuildStatistics(
            submits=c.submits,
            polls=c.polls,
            lookups=c.lookups,
            downloads=c.downloads,
            uploads=sum(self.uploader.uploads.values()),
            distinct_uploads=len(self.uploader.uploads),
            retries=c.retries,
            submit_rate=self.submit_rate.statistics(),
            query_rate=self.query_rate.statistics(),
            concurrency=self.capacity.statistics(),
        )

    async def run(self, plan: Plan) -> BuildResult:
        """Execute every action; returns the outcome (the lockfile is folded before returning)."""
        started = time.monotonic()
        fatal: PixmakeError | None = None
        self._planned_images = plan.images_to_generate
        paid = [a for a in plan.actions if a.kind.generates]  # paid now, or collected (paid before)
        restores = [a for a in plan.actions if a.kind is ActionKind.RESTORE and a.after is None]
        for twin in plan.actions:
            if twin.after is not None:
                self._twins.setdefault(twin.after, []).append(twin)
        for action in plan.actions:
            if action.kind in (ActionKind.UNCHANGED, ActionKind.EDITED, ActionKind.ORPHAN):
                self._done.setdefault(action.kind, []).append(action.name)
        for task in plan.abandoned:  # paid for inputs the target no longer has: not collected (README)
            held = self.recorder.pending.get(task.name)
            if held is None or held.was is None or held.key == task.key:  # else it made room for a moved task,
                self.recorder.dropped(task.name, task.key)  # which the journal's rewrite leaves it out for
        self.recorder.journal_moves()
        twins = sum(map(len, self._twins.values()))
        started_event = BuildStarted(
            len(paid) + len(restores) + twins,
            plan.images_to_generate,
            self.settings.concurrency,
            self.settings.emulator,
        )
        self.reporter.emit(started_event)
        try:
            try:
                async with anyio.create_task_group() as group:
                    self._group = group
                    paid_queue, restore_queue = iter(paid), iter(restores)
                    # Twice the concurrency: while `concurrency` tasks run at the provider, as many
                    # finished ones can download and verify without holding a provider slot.
                    workers = [paid_queue] * min(2 * self.settings.concurrency, len(paid))
                    workers += [restore_queue] * min(_RESTORE_WORKERS, len(restores))
                    self._working, self._ticking = len(workers), anyio.CancelScope()
                    if workers:  # in the workers' group: a group around it made each checkpoint walk one more scope
                        group.start_soon(self._tick)
                    for queue in workers:
                        group.start_soon(self._worker, queue)
            except* _Fatal as caught:
                fatal = next(e.error for e in _leaves(caught) if isinstance(e, _Fatal))
        finally:
            with anyio.CancelScope(shield=True):
                try:
                    await self.recorder.fold(final=True)
                    self.recorder.discard_copy()
                except StorageError as error:
                    fatal = fatal or error
                except OSError as error:  # every finished target is still in the journal
                    fatal = fatal or StorageError(
                        f"cannot write the lockfile ({describe_os_error(error, self.root)}); "
                        "finished targets stay in the journal and the next run writes them",
                        build_wide=True,
                    )
        result = BuildResult(
            generated=tuple(self._done.get(ActionKind.CREATE, []) + self._done.get(ActionKind.REGENERATE, [])),
            restored=tuple(self._done.get(ActionKind.RESTORE, [])),
            unchanged=tuple(self._done.get(ActionKind.UNCHANGED, [])),
            edited=tuple(self._done.get(ActionKind.EDITED, [])),
            orphaned=tuple(self._done.get(ActionKind.ORPHAN, [])),
            failed=tuple(self._failed),
            images_generated=self._images,
            images_paid=self._paid,
            images_unplanned=self._paid_unplanned,
            fatal=fatal,
            statistics=self.statistics(),
            resumed=tuple(self._done.get(ActionKind.RESUME, [])),
            dropped=tuple(task.name for task in plan.abandoned),
            emulator=self.settings.emulator,
            stale=tuple(o.path for a in plan.actions for o in a.stale),
            seconds=time.monotonic() - started,
            journaled=tuple(
                sorted(name for name, task in self.recorder.pending.items() if task.task_id and not task.emulator)
            ),
        )
        self.reporter.emit(BuildFinished(result, result.seconds))
        return result

    async def _tick(self) -> None:
        assert self._ticking is not None
        with self._ticking:
            while True:
                await anyio.sleep(TICK)
                self.reporter.emit(Tick())

    async def _worker(self, queue: Iterator[Action]) -> None:
        try:
            for action in queue:  # workers share one iterator: each action is taken exactly once
                await self._run_action(action)
        finally:
            self._working -= 1
            if not self._working and self._ticking is not None:
                self._ticking.cancel()

    async def _run_action(self, action: Action) -> None:
        await self._run(action)
        twins = self._twins.pop(action.name, ())
        source = self._locked.pop(action.name, None)
        if twins:
            await anyio.lowlevel.checkpoint_if_cancelled()  # a fatal error or Ctrl-C: they get no event
        for twin in twins:  # they copy its images, or fail with it; not started when the build is stopping
            assert self._group is not None and twin.target is not None
            take = source
            if source is not None and twin.target.n < source.n:  # a lower n: its first images
                take = dataclasses.replace(source, n=twin.target.n, outputs=source.outputs[: twin.target.n])
            self._group.start_soon(self._run, dataclasses.replace(twin, source=take))

    async def _run(self, action: Action) -> None:
        kind, target, key = action.kind, action.target, action.key
        assert target is not None and key is not None
        self.reporter.emit(TargetStarted(action.name, kind.value, action.images))
        try:
            if action.after is not None and action.source is None:
                raise PixmakeError(f"target {action.after!r}, whose images it shares (the same inputs), was not built")
            outputs = None
            unplanned = False
            if kind is ActionKind.RESUME or (kind is ActionKind.RESTORE and self._resumable(action.name, key)):
                # An interrupted build paid for this target's current inputs: collect it, never submit again.
                raised = action.fallback if action.fallback is not None and action.fallback.kind.paid else None
                outputs = await self._generate(target, key, submit=False, raised=raised)
                if outputs is not None:
                    kind = ActionKind.RESUME
                elif action.fallback is not None:
                    # Nothing to collect (never arrived, or failed and refunded): what the plan would do without it.
                    unplanned = action.fallback.kind.paid and not action.kind.paid
                    action = action.fallback
                    kind = action.kind
            if outputs is None:
                if kind is ActionKind.RESTORE:
                    outputs = await self._restore(action)
                elif kind.paid:
                    if self.settings.emulator:
                        for reason in action.reasons:
                            if reason.code == PROVIDER_MADE:  # its images are paid for: never placeholders
                                raise ConfigError(reason.text)
                    outputs = await self._generate(target, key, planned=not unplanned, raised=action)
                    self._images += action.images
                else:
                    outputs = ()  # unchanged or edited after all: nothing to write
            assert outputs is not None
        except _Fatal:
            raise
        except OSError as error:  # the journal, the object cache or the lockfile: no target can go on
            message = (
                f"{describe_os_error(error, self.root)}; paid tasks stay journaled and the next build collects them"
            )
            raise _Fatal(StorageError(message, build_wide=True)) from error
        except PixmakeError as error:
            if isinstance(error, StorageError) and error.build_wide:  # a full or read-only disk: stop paying
                raise _Fatal(error) from error
            why = str(error)
            if isinstance(error, RequestRejectedError | BadResultError) and action.name in self.recorder.pending:
                # Refused, not lost: the next build asks again, and so on for good if the refusal lasts. (A
                # renamed target's task is journaled under its new name by the build's last fold.)
                forget = invocation.pixmake("forget", action.name)
                why += f" (if that lasts: {forget}, and the next build pays again)"
            self._failed.append(TargetFailure(action.name, why))
            self.reporter.emit(TargetFailed(action.name, why))
            return
        self._done.setdefault(kind, []).append(action.name)
        self.reporter.emit(TargetFinished(action.name, kind.value, outputs))

    def _resumable(self, name: str, key: str) -> bool:
        """Whether a paid task for exactly these inputs is journaled for this target (and this build can
        reach it: an emulator build cannot collect a provider's task)."""
        pending = self.recorder.pending.get(name)
        return (
            self.provider is not None
            and pending is not None
            and pending.key == key
            and pending.emulator == self.settings.emulator
        )

    # --- free work --------------------------------------------------------------------------------

    def _output_file(self, target: str, path: str) -> str:
        """Where an output goes, checked again at write time: a symlink swapped in since the plan cannot
        lead a write out of the project root (raises UnsafePathError).
        A string, not a Path (see :func:`~pixmake.store.atomic_write`)."""
        return self.guard.fresh(path, f"targets.{target}.out")

    async def _restore(self, action: Action) -> tuple[str, ...]:
        assert action.target is not None and action.key is not None and action.source is not None
        paths = output_paths(action.target)
        source = action.source

        def copy() -> None:
            for path, locked in zip(paths, source.outputs, strict=True):
                if path in action.kept:  # edited by hand, beside a missing output: left as it is
                    continue
                target_file = self._output_file(action.name, path)
                with contextlib.suppress(OSError):  # unreadable: write it, which says why if it cannot
                    if os.path.isfile(target_file) and hash_file(target_file) == locked.sha256:
                        continue
                if self._saved_since_plan(target_file, path):
                    raise _left_as_saved(path, action.name, ": ", "the locked image")
                try:
                    data = self.objects.get(locked.sha256)
                except (OSError, ValueError) as error:
                    then = (
                        f"{invocation.pixmake('plan')} says what a build does instead "
                        f"({invocation.git('checkout', '--', path)} puts back a committed copy, free)"
                    )
                    raise BadResultError(f"cannot restore {path} from the object cache: {error}; {then}") from error
                self._write_output(target_file, path, data)

        await anyio.to_thread.run_sync(copy)
        outputs = tuple(
            LockedOutput(path, o.sha256, o.bytes, o.width, o.height)
            for path, o in zip(paths, source.outputs, strict=True)
        )
        known = {i.sha256: i.pixels for i in (*source.references, source.mask) if i is not None}
        entry = self._entry(action.target, action.key, outputs, source.task_id, emulator=source.emulator, pixels=known)
        if source.accepted:  # a retouch put back (or copied to a twin) is still one: a plan says when it goes
            some = tuple(o.sha256 for o in outputs if source.accepted_image(o.sha256))
            if some:  # all of them (), or only those
                entry = dataclasses.replace(
                    entry, accepted=True, accepted_images=() if len(some) == len(outputs) else some
                )
        with anyio.CancelScope(shield=True):
            await self._record(action.name, entry)
        return tuple(path for path in paths if path not in action.kept)

    # --- provider calls ---------------------------------------------------------------------------

    def _entry(
        self,
        target: Target,
        key: str,
        outputs: tuple[LockedOutput, ...],
        task_id: str | None,
        *,
        emulator: bool,
        pixels: Mapping[str, str | None] | None = None,
    ) -> LockEntry:
        """The lock entry of ``outputs``; ``emulator``: they are the bundled emulator's placeholders;
        ``pixels``: the digests of what its inputs show, by sha256 (default: those known, see :meth:`_read_pixels`)."""
        known = self.pixel_digests.known() if pixels is None else pixels
        return lock_entry(target, key, self.input_hashes, outputs, task_id=task_id, emulator=emulator, pixels=known)

    def _read_pixels(self, target: Target) -> None:
        """Worker thread: note the digest of what each of the target's input files shows (see
        :func:`~pixmake.decode.pixel_digest`), once per file content, for its lock entry: a later re-save of
        the file with the same pixels is then not paid for. A file changed since the plan hashed it gets none,
        and so does a placeholder's (``build --emulator``): a build without it regenerates that image anyway."""
        if self.settings.emulator:
            return
        for rel in target.inputs:
            sha256 = None if is_url(rel) else self.input_hashes.get(rel)
            if sha256 is not None:
                self.pixel_digests.of(self.root / rel, sha256)  # read once per content, then known

    def _provider(self) -> Provider:
        assert self.provider is not None, "a paid action needs a provider"
        return self.provider

    def _slow_down(self, error: ProviderError, operation: Operation) -> None:
        """Feed a rate-limit answer to the pacing: shrink concurrency, pause the bucket it came from."""
        if isinstance(error, RateLimitedError):
            self.capacity.rate_limited()
            if error.retry_after:
                bucket = self.submit_rate if operation is Operation.SUBMIT else self.query_rate
                bucket.hold(min(error.retry_after, self.settings.max_retry_after))

    def _check_reachable(self, error: ProviderError, attempt: int) -> None:
        """Stop the build when the provider was never reached and a few attempts to connect failed.

        A connect error on the first requests of a build is almost always a wrong base URL or no
        network, not a blip: say so at once instead of retrying each target for a minute. Once any
        request was answered, connect errors are retried like any other safe error.
        """
        if not (isinstance(error, NetworkError) and not error.sent):
            self._reached = True  # an answer (even an error status) or a request that left: the host is there
        elif not self._reached and attempt + 1 >= _CONNECT_ATTEMPTS:
            where = display_url(self.settings.base_url)
            hint = (
                "if a company proxy inspects TLS, point SSL_CERT_FILE at its CA bundle"
                if error.reason.startswith("TLS certificate")
                else "check PIXMAKE_BASE_URL or provider.base_url"
            )
            message = f"cannot reach {where} ({error.reason}); {hint}"
            raise _Fatal(NetworkError(message, sent=False, reason=error.reason)) from error

    async def _backoff(self, target: str, operation: Operation, attempt: int, error: ProviderError) -> None:
        retry_after = error.retry_after if isinstance(error, RateLimitedError) else None
        delay = self.backoff.delay(attempt, self.random, retry_after=retry_after)
        self._counters.retries += 1
        self.reporter.emit(RetryScheduled(target, operation.value, attempt + 1, delay, str(error)))
        await self.sleep(delay)

    def _retries_left(self, operation: Operation, attempt: int, failing_since: float, error: ProviderError) -> bool:
        """Whether a call that failed ``attempt + 1`` times, the first at ``failing_since`` (monotonic), may be
        sent again: up to ``max_attempts``; and through ``retry_window`` when :func:`~pixmake.retry.rides_out`
        says the failure is an outage a paid task's poll or download should ride out. The window runs from
        this call's first failure, or from the build's (no poll or download of any task got through since):
        an outage of the whole result host does not hold every target for a window of its own."""
        if attempt + 1 < self.settings.max_attempts:
            return True
        started = min(failing_since, self._outage.get(operation, failing_since))
        return rides_out(error, operation) and time.monotonic() - started < self.settings.retry_window

    async def _call(
        self,
        target: str,
        operation: Operation,
        fn: Callable[[], Awaitable[T]],
        final: Callable[[ProviderError], bool] | None = None,
    ) -> T:
        """Call the provider, retrying what is safe to retry (never a submit: see :meth:`_submit`), unless
        ``final`` says an error is for good."""
        assert operation is not Operation.SUBMIT
        failing_since = 0.0
        for attempt in itertools.count():
            if operation is Operation.QUERY:
                await self.query_rate.acquire()
            try:
                value = await fn()
            except ProviderError as error:
                if operation is not Operation.DOWNLOAD:  # result files live on another host
                    self._check_reachable(error, attempt)
                verdict = classify(error, operation)
                if verdict is Verdict.FATAL:
                    raise _Fatal(error) from error
                self._slow_down(error, operation)
                failing_since = failing_since or time.monotonic()
                if rides_out(error, operation):  # a 404 or a bad result says nothing of an outage
                    self._outage.setdefault(operation, failing_since)
                if (
                    verdict is not Verdict.RETRY
                    or (final is not None and final(error))
                    or not self._retries_left(operation, attempt, failing_since, error)
                ):
                    raise
                await self._backoff(target, operation, attempt, error)
            else:
                self._reached = True
                self._outage.pop(operation, None)
                self.capacity.succeeded()
                return value
        raise AssertionError("unreachable")  # pragma: no cover

    async def _upload(self, data: bytes, filename: str) -> str:
        return await self._call("(upload)", Operation.UPLOAD, lambda: self._provider().upload(data, filename=filename))

    async def _poll(self, target: str, task_id: str) -> TaskStatus:
        self._counters.polls += 1
        return await self._call(target, Operation.QUERY, lambda: self._provider().poll(task_id))

    async def _find(self, target: str, client_business_id: str) -> TaskStatus | None:
        self._counters.lookups += 1
        return await self._call(target, Operation.QUERY, lambda: self._provider().find(client_business_id))

    async def _input_urls(self, target: Target) -> tuple[tuple[str, ...], str | None]:
        """URLs for a target's references and mask: as given, or uploaded once per content hash."""

        async def url(ref: str) -> str:
            return ref if is_url(ref) else await self.uploader.url(ref, self.input_hashes[ref])

        return tuple([await url(ref) for ref in target.references]), (
            None if target.mask is None else await url(target.mask)
        )

    def _local_inputs(self, target: Target) -> list[str]:
        return [self.input_hashes[r] for r in target.inputs if not is_url(r)]

    # --- the paid path ----------------------------------------------------------------------------

    async def _journal_submit(self, target: str, key: str, client_business_id: str, keep: tuple[str, ...]) -> None:
        """Journal a submit and wait until it is on disk, shielded: Ctrl-C cannot send an unjournaled submit."""
        self.recorder.submitting(target, key, client_business_id, keep)
        with anyio.CancelScope(shield=True):
            await self.recorder.journal.durable()

    async def _record(self, name: str, entry: LockEntry, *, made: bool = False) -> None:
        """Journal a finished target's lock entry and fold when due; call it shielded. ``made``: its images
        are new (generated or collected), not restored: the history remembers the entry."""
        if name in self._twins:  # its twins copy what it is locked under
            self._locked[name] = entry
        if self.recorder.record(name, entry, made=made):
            await self.recorder.fold()

    async def _resume(self, target: Target, pending: PendingSubmit) -> TaskStatus | None:
        """The journaled task, or None when the provider surely has none (errors propagate: stay journaled).

        A submit never answered is looked up by its id; as after a failed submit, "not found" is trusted
        only ``lookup_grace`` seconds after it was sent (a slow gateway may store the task late), so a
        build rerun at once after an interrupted one asks again then. A journal without send times
        (from an older pixmake) counts from now.
        """
        if pending.task_id is not None:
            try:
                status = await self._poll(target.name, pending.task_id)
            except RequestRejectedError as error:
                if error.status != 404:
                    raise
            else:
                if status.client_business_id in (None, pending.client_business_id):
                    return status
                # The id names another request's task now (an emulator restarted, reissuing ids): collecting
                # it locked another's images. Ours is found by the id it was sent with; if not, a mismatch
                # alone (an echo in another form, say) must not make anyone pay again: it stays journaled.
                found = await self._find(target.name, pending.client_business_id)
                if found is None:
                    raise GenerationFailedError(
                        f"task {pending.task_id} now names another request's task, and none was found by the id "
                        f"it was sent with ({pending.client_business_id}); it stays journaled "
                        f"({invocation.pixmake('forget', target.name)} gives it up, and the next build pays again)"
                    )
                return found
            return await self._find(target.name, pending.client_business_id)
        grace = self.settings.lookup_grace
        sent_at = pending.sent_at if pending.sent_at is not None else time.time()
        trusted_in = min(max(sent_at + grace - time.time(), 0.0), grace)
        return await self._find_trusted(target.name, pending.client_business_id, time.monotonic() + trusted_in)

    async def _obtain_task(
        self, target: Target, key: str, *, submit: bool = True, planned: bool = True, keep: tuple[str, ...] = ()
    ) -> tuple[TaskStatus, bool, tuple[str, ...]] | None:
        """A task for this target, whether this build paid for it, and the sha256 of the locked images the
        target keeps before the task's: the journaled task if it still exists, else a new (paid) submit
        for ``n`` less the ``keep`` images.

        With ``submit=False`` only a journaled task is resumed; None when there is none.
        """
        pending = self.recorder.pending.get(target.name)
        if pending is not None and self.settings.emulator and not pending.emulator:
            # Looking for it on the emulator would find nothing and drop it: a paid result lost.
            raise ConfigError(
                "a task an interrupted build paid for at the provider is journaled for it; the emulator cannot "
                "collect it: build without --emulator"
            )
        if pending is not None and pending.emulator and not self.settings.emulator:
            self.recorder.dropped(target.name, key)  # the bundled emulator's task: no provider has it
            pending = None
        if pending is not None and (pending.key == key or pending.images is not None):  # images: n lowered since
            found = await self._resume(target, pending)
            if found is not None and found.state is not TaskState.FAILED:
                if pending.task_id != found.task_id:  # journaled under the key it was paid for
                    self.recorder.accepted(target.name, pending.key, pending.client_business_id, found.task_id)
                self.reporter.emit(TargetSubmitted(target.name, found.task_id, resumed=True))
                return found, False, pending.keep
        if pending is not None:
            # Never created, failed (refunded), or paid for inputs that have since changed.
            self.recorder.dropped(target.name, key)
        if not submit:
            return None
        asked = target.n - len(keep)
        spare = None if self.max_images is None else self.max_images - self._planned_images - self._unplanned
        if not planned and spare is not None and asked > spare:
            raise BudgetError(
                f"not submitted: its interrupted build's task was not found, and paying for {asked} "
                f"image{'s' * (asked != 1)} again would pass --max-images {self.max_images} "
                f"with what the plan pays for"
            )
        if keep:  # checked before paying: a kept image that cannot be read would waste the new ones
            await anyio.to_thread.run_sync(functools.partial(self._kept_images, target.name, keep, paid=False))
        extra = 0 if planned else asked  # counted before the submit: concurrent ones cannot pass the cap together
        self._unplanned += extra
        try:
            status = await self._submit(target, key, keep)
        except BaseException:
            if target.name not in self.recorder.pending:  # surely not created (else it stays journaled: maybe paid)
                self._unplanned -= extra
            raise
        self._paid += asked  # charged at submit
        self._paid_unplanned += extra
        unplanned = not planned and not self.settings.emulator  # placeholders: nobody pays
        self.reporter.emit(TargetSubmitted(target.name, status.task_id, resumed=False, unplanned=unplanned))
        return status, True, keep

    async def _submit(self, target: Target, key: str, keep: tuple[str, ...] = ()) -> TaskStatus:
        """Submit, retrying only what cannot double-charge; an unknown outcome is looked up before anything else.

        The request asks for ``n`` less the ``keep`` images (locked ones the target keeps first).

        Each attempt's ``client_business_id`` is journaled before it is sent. A new id is made only
        after the old one is known not to exist: the provider refused it (429, 503
        rate_limit_unavailable, connect error) or a lookup by it found nothing.
        """
        provider = self._provider()
        image_urls, mask_url = await self._input_urls(target)
        reuploaded = False
        for attempt in range(self.settings.max_attempts):
            request = GenerationRequest(
                model=target.model,
                prompt=target.prompt,
                size=target.size,
                n=target.n - len(keep),
                client_business_id=_client_business_id(key),
                image_urls=image_urls,
                mask_url=mask_url,
                params=target.params,
            )
            cbid = request.client_business_id
            await self.submit_rate.acquire()
            await self._journal_submit(target.name, key, cbid, keep)
            # The journal step is shielded: a build cancelled meanwhile (Ctrl-C, a refused key) stops here.
            # aiohttp may write a request before its first real suspension point, so check first.
            try:
                await anyio.lowlevel.checkpoint_if_cancelled()
            except anyio.get_cancelled_exc_class():
                self.recorder.dropped(target.name, key)  # never sent: nothing to look up
                raise
            try:
                self._counters.submits += 1
                status = await provider.submit(request)
            except ProviderError as error:
                try:
                    self._check_reachable(error, attempt)
                except _Fatal:
                    self.recorder.dropped(target.name, key)  # it never left this machine
                    raise
                verdict = classify(error, Operation.SUBMIT)
                if verdict is Verdict.FATAL:
                    self.recorder.dropped(target.name, key)  # refused (bad key, no balance): nothing was created
                    raise _Fatal(error) from error
                self._slow_down(error, Operation.SUBMIT)
                if verdict is Verdict.LOOKUP:
                    found = await self._look_up_unknown(target.name, cbid, attempt, error)
                    if found is not None:
                        self.recorder.accepted(target.name, key, cbid, found.task_id)
                        return found
                    if attempt + 1 < self.settings.max_attempts:
                        continue  # known not to exist: a new id, no further wait
                elif (
                    not reuploaded
                    and attempt + 1 < self.settings.max_attempts
                    and _about_inputs(error)
                    and (uploaded := self._local_inputs(target))
                ):
                    # A 400 may mean an uploaded reference expired on the provider: upload again, once.
                    self.recorder.dropped(target.name, key)  # refused: nothing was created
                    reuploaded = True
                    for digest in uploaded:
                        self.uploader.forget(digest)
                    image_urls, mask_url = await self._input_urls(target)
                    continue
                elif verdict is Verdict.RETRY and attempt + 1 < self.settings.max_attempts:
                    # Refused or never sent: nothing was created. Say so before waiting, so a build
                    # cancelled during the wait leaves no task to look up.
                    self.recorder.dropped(target.name, key)
                    await self._backoff(target.name, Operation.SUBMIT, attempt, error)
                    continue
                self.recorder.dropped(target.name, key)  # nothing was created
                raise
            self._reached = True
            self.capacity.succeeded()
            self.recorder.accepted(target.name, key, cbid, status.task_id)
            if self._known_task is None:
                self._known_task = Witness(cbid, status.task_id, time.time())
                if not self.settings.emulator:  # the bundled emulator's port is another each build
                    self._lookup_record().saw_created(self._known_task)
            return status
        raise AssertionError("unreachable")  # pragma: no cover

    async def _look_up_unknown(self, target: str, cbid: str, attempt: int, error: ProviderError) -> TaskStatus | None:
        """After a submit whose outcome is unknown: its task, or None once it surely does not exist.

        A slow gateway may store the task after it answered, so a "not found" is trusted only when it
        comes ``lookup_grace`` seconds after the failure; an earlier one is asked once more at that time.
        Errors propagate: the id stays journaled and the next build looks it up again.
        """
        trusted_from = time.monotonic() + self.settings.lookup_grace
        await self._backoff(target, Operation.SUBMIT, attempt, error)
        return await self._find_trusted(target, cbid, trusted_from)

    async def _find_trusted(
        self, target: str, cbid: str, trusted_from: float, *, checked: bool = False
    ) -> TaskStatus | None:
        """The task submitted with ``cbid``, or None from a "not found" answered at ``trusted_from``
        (``time.monotonic()``) or later; an earlier one is asked once more at that time. Unless ``checked``,
        a "not found" is returned only where such lookups find the tasks that exist (:meth:`_lookups_answer`)."""
        found = await self._find(target, cbid)
        wait = trusted_from - time.monotonic()
        if found is None and wait > 0:
            await self.sleep(wait)
            found = await self._find(target, cbid)
        if found is None and not checked and not await self._lookups_answer(target):
            known = f"task {self._asked.task_id}" if self._asked is not None else "a task (an earlier build asked)"
            raise GenerationFailedError(
                f'the outcome of its submit is unknown, and the provider\'s "not found" for the id it was sent '
                f"with ({cbid}) proves nothing: it says the same of {known}, which it did create; so it is "
                f"not paid for again, and stays journaled (should the provider show no such task, "
                f"{invocation.pixmake('forget', target)} gives it up and the next build pays again)"
            )
        return found

    def _lookup_record(self) -> LookupRecord:
        # By base URL without user, password or query (they may hold a secret), and by the account: a task of
        # another key's is "not found" to this one (lookups are scoped to the key's user, §1), whatever it does.
        if self._lookups is None:
            key = self.settings.api_key.reveal() if self.settings.api_key is not None else ""
            account = hashlib.sha256(f"pixmake lookups\0{key}".encode()).hexdigest()[:16]
            where = f"{display_url(self.settings.base_url)} key:{account}"
            self._lookups = LookupRecord(self.recorder.journal.path.with_name("lookups.json"), where)
        return self._lookups

    async def _lookups_answer(self, target: str) -> bool:
        """Whether a "not found" from a lookup by ``client_business_id`` can be trusted: asked once per build, of
        a witness (:mod:`pixmake.lookups`): the first task this build saw created, else one an earlier build
        kept; with neither, what an earlier build found, else trusted (as the Chinese docs document it)."""
        record = self._lookup_record()
        async with self._asking:
            witness = self._known_task or record.witness()
            if self._lookups_work is None and witness is not None:
                # A gateway that stores tasks late is given the time it is given for the unknown submit.
                trusted_from = time.monotonic() + max(0.0, witness.created + self.settings.lookup_grace - time.time())
                found = await self._find_trusted(target, witness.client_business_id, trusted_from, checked=True)
                self._lookups_work = found is not None and found.task_id == witness.task_id
                self._asked = witness
                if not self.settings.emulator:
                    record.judged(self._lookups_work)
        if self._lookups_work is not None:
            return self._lookups_work
        return record.verdict() is not False

    async def _wait_finished(self, target: str, status: TaskStatus) -> TaskStatus:
        """Poll until the task ends; after ``max_wait`` the target fails with the status then seen.

        A status naming another ``client_business_id`` than the task's (its id reissued: an emulator
        restarted) fails the target; the task stays journaled, and the next build looks it up by its own.
        """
        first = True
        journaled = self.recorder.pending.get(target)
        sent_as = journaled.client_business_id if journaled is not None else status.client_business_id

        async def poll() -> TaskStatus:
            try:
                polled = await self._poll(target, status.task_id)
            except RequestRejectedError as error:
                if error.status != 404:
                    raise
                raise GenerationFailedError(  # not "forget it": the next build asks, then pays again by itself
                    f"{error}: the provider no longer has task {status.task_id}; it stays journaled, and the next "
                    "build looks it up by the id it was sent with, then submits the target again (paid) if none is"
                    " found"
                ) from error
            if sent_as is not None and polled.client_business_id not in (None, sent_as):
                raise GenerationFailedError(
                    f"task {status.task_id} now names another request's task (the server lost ours?); it stays "
                    "journaled, and the next build looks it up by the id it was sent with"
                )
            self.reporter.emit(TargetPolled(target, polled.status, polled.progress))
            return polled

        try:
            with anyio.fail_after(self.settings.max_wait):
                while not status.state.terminal:
                    await self.sleep(poll_delay(first, self.settings.poll_interval, self.random))
                    first = False
                    status = await poll()
        except TimeoutError:
            said = ""
            try:  # once more: a process paused past the deadline (SIGSTOP) has not polled since
                with anyio.fail_after(_LAST_LOOK):
                    status = await poll()
            except TimeoutError:
                said = "; a last poll got no answer"
            except GenerationFailedError:
                raise  # what that poll learned (the task gone, or now another request's) says more than the wait
            except ProviderError as error:
                said = f"; a last poll: {error}"
            if status.state.terminal and not said:
                return status
            last = f"{status.status} ({status.progress} %)" if status.progress else status.status
            raise GenerationFailedError(
                f"task {status.task_id} still {last} after {self.settings.max_wait:.0f} s{said}; "
                "it stays journaled and the next build resumes it"
            ) from None
        return status

    async def _download(self, target: str, key: str, url: str, expires_at: float | None) -> bytes:
        """One result's bytes (retried like any download).

        A result gone for good (410, or 404 or refused after the task's ``expires_at``, or when the status
        gave none, once the links' documented 24 hours since the submit have passed) leaves nothing to
        resume: the next build submits again. One refused or not found before then (a 404 is retried first:
        a CDN edge not caught up yet) stays journaled, and the next build fetches it again through a fresh
        status (whose links may be signed anew).
        """

        async def once() -> bytes:
            self._counters.downloads += 1
            return await self._provider().download(url)

        def expired(unknown: bool = True) -> bool:
            """Whether the links have ended: at ``expires_at``; with none said, the documented 24 hours after
            the submit; with no send time either (a journal of an older pixmake), ``unknown``."""
            if expires_at is not None:
                return time.time() >= expires_at
            journaled = self.recorder.pending.get(target)
            sent_at = journaled.sent_at if journaled is not None else None
            return unknown if sent_at is None else time.time() - sent_at >= RESULT_LIFETIME

        def gone(error: ProviderError) -> bool:  # a 404 surely past the links' end: not a CDN catching up
            return isinstance(error, RequestRejectedError) and expired(unknown=False)

        try:
            return await self._call(target, Operation.DOWNLOAD, once, final=gone)
        except RequestRejectedError as error:
            # Gone for good: 410, or a 404 or refusal after the link's end. Before it, a CDN that has not
            # caught up answers 404 too: the next build fetches the task again.
            if error.status == 410 or (error.status in (401, 403, 404) and expired()):
                self.recorder.dropped(target, key)
                raise RequestRejectedError(
                    "result no longer available; the next build submits the target again",
                    status=error.status,
                ) from error
            if error.status in (401, 403, 404):
                raise RequestRejectedError(
                    f"{error.message}; its task stays journaled and the next build fetches it again",
                    status=error.status,
                ) from error
            raise

    def _saved_since_plan(self, file: str, path: str) -> bool:
        """Worker thread: whether a file was saved at output ``path`` since the plan looked (its stat and
        then its bytes differ from what the plan saw: a mere ``touch`` or ``chmod`` is no save)."""
        now = file_stat(file)
        if now is None or now == self.planned_stats.get(path):
            return False
        try:
            return hash_file(file) != self.input_hashes.get(path)
        except OSError:
            return True  # there, but unreadable: never written over unseen

    @staticmethod
    def _write_output(file: str, path: str, data: bytes, *, after: str = "") -> None:
        """Worker thread: write one output to ``file`` (unsynced: the object cache holds its bytes durably).

        Raises StorageError naming the manifest's ``path``, with ``after`` appended to its message.
        """
        try:
            atomic_write(file, data, durable=False)
        except OSError as error:
            why = error.strerror or str(error)
            raise StorageError(f"cannot write {path}: {why}{after}", build_wide=disk_wide(error)) from error

    def _keep(
        self,
        target: str,
        paths: tuple[str, ...],
        blobs: list[bytes],
        *,
        leave: tuple[str, ...] = (),
        inputs: Target | None = None,
    ) -> tuple[tuple[LockedOutput, ...], StorageError | None]:
        """Worker thread: check every image decodes, store them in the object cache, then write the outputs.

        A result in another format than PNG (a JPEG, a WebP ...) is converted to PNG first: the outputs are
        PNG files, and what is cached, written and locked is the PNG (:func:`~pixmake.decode.as_png`).
        The object cache comes first: the paid image is safe whatever happens next. Returns the outputs
        to lock and the error that stopped an output's write, if any (one that stops the build first):
        the entry is locked all the same, so the next build restores the file from the cache, free. An
        older file left at such a path is removed (else the plan would take it for a hand edit); one
        that cannot be is named in the error; so is a file saved at a path since the plan, left as it is.
        Raises :class:`_Undecodable` (nothing written) when an image does not decode, and StorageError
        when the object cache cannot take an image (the task stays journaled, so the next build collects
        it without paying). ``inputs``: the target, whose input files' pixels its lock entry records
        (:meth:`_read_pixels`), read once the images are kept.
        """
        images = []  # each result as PNG bytes, and its size
        for index, blob in enumerate(blobs):
            try:
                images.append(as_png(blob, f"result {index + 1}"))
            except BadResultError as error:
                raise _Undecodable(index, error) from error
        outputs = []
        for path, (blob, (width, height)) in zip(paths, images, strict=True):
            try:
                digest = self.objects.put(blob)
            except OSError as error:  # the object cache is shared: no other target can be kept either
                where = describe_os_error(error, self.root)
                raise StorageError(
                    f"cannot keep a paid image in {STATE_DIR}/objects ({where}); "
                    "its task stays journaled and the next build collects it",
                    build_wide=True,
                ) from error
            outputs.append(LockedOutput(path, digest, len(blob), width, height))
        image = "the placeholder" if self.settings.emulator else "the paid image"
        kept = f"; {image} is kept in {STATE_DIR}/objects and locked"
        failure: StorageError | None = None
        for path, (blob, _) in zip(paths, images, strict=True):
            if path in leave:  # a kept image whose file was edited by hand: locked, cached, not written
                continue
            try:
                file = self._output_file(target, path)
            except UnsafePathError as error:  # nothing may be touched there
                problem = StorageError(f"{error}{kept}: the next build restores it once it is safe", build_wide=False)
            else:
                found = self._put_output(file, path, target, blob, kept)
                if found is None:
                    continue
                problem = found
            if failure is None or (problem.build_wide and not failure.build_wide):  # a full disk stops the build
                failure = problem
        if inputs is not None:
            self._read_pixels(inputs)
        return tuple(outputs), failure

    def _put_output(self, file: str, path: str, target: str, blob: bytes, kept: str) -> StorageError | None:
        """Worker thread: write one paid output (locked and cached already); the problem that stopped it, if any.

        A file saved at ``path`` since the plan is left alone. After a failed write, the path must not keep an
        older image (the plan would take it for a hand edit): emptied, it is missing, and the next build
        restores it; one that cannot be emptied is named.
        """
        if self._saved_since_plan(file, path):
            return _left_as_saved(path, target, f"{kept}: ", "the new image")
        try:
            self._write_output(file, path, blob, after=f"{kept}: the next build restores it")
            return None
        except StorageError as error:
            try:
                with contextlib.suppress(FileNotFoundError, NotADirectoryError):
                    os.unlink(file)
            except OSError:
                message = str(error).removesuffix(": the next build restores it")
                return StorageError(
                    f"{message}; an older file is still at {path}: build --restore puts it in place",
                    build_wide=error.build_wide,
                )
            return error

    def _kept_images(self, name: str, keep: tuple[str, ...], *, paid: bool) -> list[bytes]:
        """Worker thread: the images a target keeps (``n`` raised), from the object cache; ``paid``: its
        task is paid for (else nothing is yet).

        Raises BadResultError when one cannot be read: before a submit, nothing is paid; after, the task
        stays journaled and nothing of it is downloaded, so a build that finds the image again collects it.
        """
        try:
            return [self.objects.get(digest) for digest in keep]
        except (OSError, ValueError) as error:
            then = (
                "its paid task stays journaled for a build that finds the image again"
                if paid
                else f"nothing was paid: {invocation.pixmake('build', '--replace', name)} pays for all of its images"
            )
            raise BadResultError(
                f"cannot read an image the target keeps from the object cache ({error}); {then}"
            ) from error

    async def _result_images(self, target: Target, key: str, keep: tuple[str, ...], status: TaskStatus) -> list[bytes]:
        """The images a target ends with: those it keeps (read first: one that cannot be read stops here,
        before any download is thrown away), then the finished task's, downloaded."""
        blobs: list[bytes] = []
        if keep:
            blobs = await anyio.to_thread.run_sync(functools.partial(self._kept_images, target.name, keep, paid=True))
        return blobs + [await self._download(target.name, key, url, status.expires_at) for url in status.urls]

    async def _remember_short(self, target: Target, key: str, keep: tuple[str, ...], status: TaskStatus) -> str:
        """Download a short result's images, cache them and remember them (with those ``keep`` names) as an
        entry of their own ``n`` in the history, so that the next build keeps them and pays for the rest
        (as when ``n`` is raised); what to add to the failure's message.

        A download fails as it would for a whole result (one refused stays journaled and is fetched again by
        the next build; one gone for good is dropped); so does an image that does not decode (raises
        :class:`_Undecodable`).
        """
        blobs = await self._result_images(target, key, keep, status)
        await self._remember_images(target, blobs, status)
        spec, rest = MODELS.get(target.model), target.n - len(blobs)
        kept = f"{len(blobs)} image is kept" if len(blobs) == 1 else f"{len(blobs)} images are kept"
        if spec is not None and rest in spec.n_allowed:
            return f"; the {kept}: the next build pays for the other {rest} only"
        return f"; the {kept} in {STATE_DIR}/objects"

    async def _remember_images(self, target: Target, blobs: list[bytes], status: TaskStatus) -> None:
        """Cache a task's images and remember them in the history as the target's with ``n = len(blobs)``: a
        short result's (the next build keeps them), or all of a task paid for a higher ``n`` than the target
        has now (lowered since: raising it back restores them free)."""
        if self.history is None:
            return
        made = dataclasses.replace(target, n=len(blobs))
        paths = output_paths(made)
        with anyio.CancelScope(shield=True):  # cached, then remembered
            outputs, _ = await self.disk.run(functools.partial(self._keep, target.name, paths, blobs, leave=paths))
            entry = self._entry(made, target_key(made, self.input_hashes), outputs, status.task_id, emulator=False)
            await anyio.to_thread.run_sync(remember, self.history, (entry,))

    async def _generate(
        self, target: Target, key: str, *, submit: bool = True, planned: bool = True, raised: Action | None = None
    ) -> tuple[str, ...] | None:
        """Obtain (submit or resume) the target's task, wait for it, download, verify, write and lock it.

        With ``submit=False`` only a journaled task is resumed; returns None when there is none. A submit
        the plan did not count (``planned=False``) is sent only within what ``max_images`` leaves over.
        ``raised`` is the plan's paid action for the target: when it keeps locked images (``n`` raised: its
        ``source``), a new submit asks for the rest only, and outputs it leaves as edited (``kept``) are not
        written. A resumed task keeps the images its journaled submit named.
        """
        source = raised.source if raised is not None else None
        planned_keep = tuple(o.sha256 for o in source.outputs) if source is not None else ()
        leave = raised.kept if raised is not None else ()
        async with self.capacity:  # a provider slot: from submit (or resume) until the task is finished
            obtained = await self._obtain_task(target, key, submit=submit, planned=planned, keep=planned_keep)
            if obtained is None:
                return None
            status, paid_now, keep = obtained
            status = await self._wait_finished(target.name, status)
        if status.state is TaskState.FAILED:
            self.recorder.dropped(target.name, key)
            for digest in self._local_inputs(target):  # an expired upload can fail a task, not only a submit
                self.uploader.doubt(digest)
            if paid_now:
                self._paid -= target.n - len(keep)  # a failed task is refunded
                self._unplanned -= 0 if planned else target.n - len(keep)
                self._paid_unplanned -= 0 if planned else target.n - len(keep)
            code = f" ({status.error_code})" if status.error_code else ""
            why = f"task {status.task_id} failed{code}: {status.error_message or 'no message'}"
            if status.error_code == "insufficient_quota":  # no balance, said in the task (§3.3): as a 402 would
                raise _Fatal(QuotaError(f"insufficient balance: {why}", code=status.error_code))
            raise GenerationFailedError(why)
        if (
            not paid_now
            and not keep
            and source is not None
            and source.task_id != status.task_id  # not this task's own images (a short result remembered)
            and len(planned_keep) + len(status.urls) == target.n
        ):
            keep = planned_keep  # a submit journaled without the images it keeps (an older pixmake rewrote the journal)
        leave = leave if keep == planned_keep else ()  # edited outputs among the images the plan keeps
        asked = target.n - len(keep)
        journaled = None if paid_now else self.recorder.pending.get(target.name)
        more = journaled.images if journaled is not None else None  # paid for a higher n, lowered since
        if more is not None and len(status.urls) >= asked and not keep:  # (more, or fewer but enough, came)
            blobs = await self._result_images(target, key, keep, status)
            try:
                await self._remember_images(target, blobs, status)
            except _Undecodable as bad:  # as for a whole result: it stays journaled, and is fetched again
                raise bad.error from None
            del blobs[asked:]
        elif len(status.urls) < asked:
            # A failed attempt: nothing to lock; the next build submits again, for the rest only when it can.
            why = f"task {status.task_id} returned {len(status.urls)} images, expected {asked}"
            if not status.urls:  # charged at submit all the same
                why += "; paid for all the same, and the next build pays again"
            if 0 < len(status.urls) < asked and self.history is not None and not self.settings.emulator:
                try:
                    why += await self._remember_short(target, key, keep, status)
                except _Undecodable as bad:  # as for a whole result: it stays journaled, and is fetched again
                    raise BadResultError(f"{why}; {bad.error}") from None
            self.recorder.dropped(target.name, key)
            raise BadResultError(why)
        else:  # more than asked for (nothing says a result holds exactly n): the first are the target's
            status = dataclasses.replace(status, urls=status.urls[:asked])
            blobs = await self._result_images(target, key, keep, status)
        paths = output_paths(target)
        for attempt in range(self.settings.max_attempts):
            try:
                # In a worker thread, with others' disk work; Ctrl-C cannot come between the files and their lock entry.
                with anyio.CancelScope(shield=True):
                    outputs, unwritten = await self.disk.run(
                        functools.partial(self._keep, target.name, paths, blobs, leave=leave, inputs=target)
                    )
                    entry = self._entry(target, key, outputs, status.task_id, emulator=self.settings.emulator)
                    if keep and keep == planned_keep and source is not None and source.accepted:  # n raised: kept first
                        some = tuple(sha for sha in keep if source.accepted_image(sha))
                        entry = dataclasses.replace(entry, accepted=bool(some), accepted_images=some)
                    await self._record(target.name, entry, made=True)
                if unwritten is not None:  # locked and cached, so never paid for again; the target still failed
                    raise unwritten
                break
            except _Undecodable as bad:  # cut short where no length told us so, say: fetch that image again
                if attempt + 1 >= self.settings.max_attempts or bad.index < len(keep):
                    raise bad.error from None
                await self._backoff(target.name, Operation.DOWNLOAD, attempt, bad.error)
                url = status.urls[bad.index - len(keep)]
                blobs[bad.index] = await self._download(target.name, key, url, status.expires_at)
        return paths
