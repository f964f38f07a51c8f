"""Carry out a plan: one anyio task group, one child per action, every result recorded at once.

Shell. Per paid action: upload local inputs once → journal the ``client_business_id`` → submit
(or resume a journaled task) → poll at the provider's pace → download every image → verify
(decodes, count = n) → write atomically → object cache → journal + lock. Restores copy locked
bytes from the object cache and cost nothing. Per-target failures are values
(:class:`TargetFailure`); a bad key or an empty balance cancels the whole build. The executor
emits typed events to a reporter and never prints.
"""

from __future__ import annotations

import hashlib
import io
import random as _random
import secrets
import threading
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import anyio

from pixmake.errors import (
    BadResultError,
    GenerationFailedError,
    NetworkError,
    PixmakeError,
    ProviderError,
    RateLimitedError,
)
from pixmake.journal import Journal, PendingSubmit
from pixmake.limits import RateLimiter
from pixmake.lockfile import Lock, LockedInput, LockedOutput, LockEntry, render_lock
from pixmake.manifest import Target, is_url, output_paths
from pixmake.plan import Action, ActionKind, Plan
from pixmake.providers.base import GenerationRequest, Provider, TaskState, TaskStatus
from pixmake.retry import Backoff, Operation, Verdict, classify
from pixmake.settings import Settings
from pixmake.store import ObjectCache, atomic_write

if TYPE_CHECKING:
    from pixmake.report import Reporter

__all__ = [
    "BuildFinished",
    "BuildResult",
    "Event",
    "Executor",
    "RetryScheduled",
    "TargetFailed",
    "TargetFailure",
    "TargetFinished",
    "TargetPolled",
    "TargetStarted",
    "TargetSubmitted",
]

T = TypeVar("T")


# --- events ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TargetStarted:
    """Work on a target began."""

    target: str
    action: str
    images: int


@dataclass(frozen=True, slots=True)
class TargetSubmitted:
    """The provider accepted a submit (or a journaled task was resumed)."""

    target: str
    task_id: str
    resumed: bool


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
class TargetFailure:
    """Why one target failed."""

    target: str
    error: str


@dataclass(frozen=True, slots=True)
class BuildResult:
    """What a build did, outcome by outcome (paid, free, untouched, failed)."""

    generated: tuple[str, ...] = ()
    restored: tuple[str, ...] = ()
    unchanged: tuple[str, ...] = ()
    edited: tuple[str, ...] = ()
    orphaned: tuple[str, ...] = ()
    failed: tuple[TargetFailure, ...] = ()
    images_generated: int = 0
    fatal: ProviderError | None = None  # what stopped the whole build (bad key, no balance)

    @property
    def ok(self) -> bool:
        """True when nothing failed."""
        return not self.failed and self.fatal is None


@dataclass(frozen=True, slots=True)
class BuildFinished:
    """The build ended."""

    result: BuildResult
    seconds: float


Event = TargetStarted | TargetSubmitted | TargetPolled | TargetFinished | TargetFailed | RetryScheduled | BuildFinished


class _Fatal(Exception):
    """Internal: a build-wide failure (bad key, no balance) that cancels every target."""

    def __init__(self, error: ProviderError) -> None:
        super().__init__(str(error))
        self.error = error


# --- the lock recorder -----------------------------------------------------------------------------


class _Recorder:
    """Journal each finished target at once; fold into ``pixmake.lock`` in batches (linear overall)."""

    def __init__(self, lock_path: Path, lock: Lock, journal: Journal, pending: dict[str, PendingSubmit]) -> None:
        self.lock_path = lock_path
        self.lock = lock
        self.journal = journal
        self.pending = pending
        self._unfolded = 0
        self._last_fold = time.monotonic()
        self._mutex = threading.RLock()  # called from worker threads

    def record(self, name: str, entry: LockEntry) -> None:
        with self._mutex:
            self.journal.finished(name, entry)
            self.lock = self.lock.with_entry(name, entry)
            self.pending.pop(entry.key, None)
            self._unfolded += 1
            # Rewriting the whole lock costs O(size); doing it at most every half second (or per
            # 1 % of the lock) keeps a 10,000-target build linear while the lock stays fresh.
            if time.monotonic() - self._last_fold >= 0.5 or self._unfolded * 100 >= max(100, len(self.lock.entries)):
                self.fold()

    def fold(self) -> None:
        with self._mutex:
            atomic_write(self.lock_path, render_lock(self.lock).encode())
            self.journal.rewrite(dict(self.pending))
            self._unfolded = 0
            self._last_fold = time.monotonic()


# --- the executor ----------------------------------------------------------------------------------


def _verify_images(blobs: Sequence[bytes]) -> list[tuple[int, int]]:
    """Pixel size of each image; raises BadResultError for bytes that do not decode."""
    from PIL import Image, UnidentifiedImageError

    sizes = []
    for index, blob in enumerate(blobs, 1):
        try:
            with Image.open(io.BytesIO(blob)) as image:
                image.load()
                sizes.append(image.size)
        except (UnidentifiedImageError, OSError, ValueError) as error:
            raise BadResultError(f"image {index} does not decode: {error}") from error
    return sizes


def _client_business_id(key: str) -> str:
    return f"pixmake-{key[:32]}-{secrets.token_hex(4)}"


@dataclass
class Executor:
    """Runs one plan against one provider; construct per build."""

    root: Path
    settings: Settings
    provider: Provider | None
    reporter: Reporter
    objects: ObjectCache
    journal: Journal
    recorder: _Recorder
    input_hashes: Mapping[str, str]
    sleep: Callable[[float], Awaitable[None]] = anyio.sleep
    random: Callable[[], float] = _random.random
    backoff: Backoff = field(default_factory=Backoff)
    _uploads: dict[str, str] = field(default_factory=dict)
    _upload_locks: dict[str, anyio.Lock] = field(default_factory=dict)
    _failed: list[TargetFailure] = field(default_factory=list)
    _done: dict[ActionKind, list[str]] = field(default_factory=dict)
    _images: int = 0

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
        uploads: dict[str, str] | None = None,
    ) -> Executor:
        """An executor whose lock recorder starts from ``lock`` and the journal's pending submits."""
        recorder = _Recorder(lock_path, lock, journal, pending)
        executor = cls(root, settings, provider, reporter, objects, journal, recorder, input_hashes)
        executor._uploads.update(uploads or {})
        return executor

    @property
    def uploads(self) -> dict[str, str]:
        """Content hash → uploaded URL, for the upload cache."""
        return dict(self._uploads)

    async def run(self, plan: Plan) -> BuildResult:
        """Execute every action; returns the outcome (the lockfile is folded before returning)."""
        started = time.monotonic()
        fatal: ProviderError | None = None
        submit_rate = RateLimiter(self.settings.submit_rate, burst=max(1.0, min(self.settings.submit_rate * 10, 50)))
        limiter = anyio.CapacityLimiter(self.settings.concurrency)
        try:
            try:
                async with anyio.create_task_group() as group:
                    for action in plan.actions:
                        group.start_soon(self._run_action, action, limiter, submit_rate)
            except* _Fatal as caught:
                fatal = next(e.error for e in _leaves(caught) if isinstance(e, _Fatal))
        finally:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(self.recorder.fold)
        result = BuildResult(
            generated=tuple(self._done.get(ActionKind.CREATE, []) + self._done.get(ActionKind.REGENERATE, [])),
            restored=tuple(self._done.get(ActionKind.RESTORE, [])),
            unchanged=tuple(self._done.get(ActionKind.UNCHANGED, [])),
            edited=tuple(self._done.get(ActionKind.EDITED, [])),
            orphaned=tuple(self._done.get(ActionKind.ORPHAN, [])),
            failed=tuple(self._failed),
            images_generated=self._images,
            fatal=fatal,
        )
        self.reporter.emit(BuildFinished(result, time.monotonic() - started))
        return result

    async def _run_action(self, action: Action, limiter: anyio.CapacityLimiter, submit_rate: RateLimiter) -> None:
        kind = action.kind
        if kind in (ActionKind.UNCHANGED, ActionKind.EDITED, ActionKind.ORPHAN):
            self._done.setdefault(kind, []).append(action.name)
            return
        assert action.target is not None and action.key is not None
        self.reporter.emit(TargetStarted(action.name, kind.value, action.target.n if kind.paid else 0))
        try:
            if kind is ActionKind.RESTORE:
                outputs = await self._restore(action)
            else:
                async with limiter:
                    outputs = await self._generate(action.target, action.key, submit_rate)
        except _Fatal:
            raise
        except PixmakeError as error:
            self._failed.append(TargetFailure(action.name, str(error)))
            self.reporter.emit(TargetFailed(action.name, str(error)))
            return
        self._done.setdefault(kind, []).append(action.name)
        self.reporter.emit(TargetFinished(action.name, kind.value, outputs))

    # --- free work --------------------------------------------------------------------------------

    async def _restore(self, action: Action) -> tuple[str, ...]:
        assert action.target is not None and action.key is not None and action.source is not None
        paths = output_paths(action.target)
        source = action.source

        def copy() -> None:
            for path, locked in zip(paths, source.outputs, strict=True):
                target_file = self.root / path
                if target_file.is_file() and hashlib.sha256(target_file.read_bytes()).hexdigest() == locked.sha256:
                    continue
                atomic_write(target_file, self.objects.get(locked.sha256))

        try:
            await anyio.to_thread.run_sync(copy)
        except (OSError, ValueError) as error:
            raise BadResultError(f"cannot restore from the object cache: {error}") from error
        outputs = tuple(
            LockedOutput(path, o.sha256, o.bytes, o.width, o.height)
            for path, o in zip(paths, source.outputs, strict=True)
        )
        entry = self._entry(action.target, action.key, outputs, source.task_id)
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(self.recorder.record, action.name, entry)
        return paths

    # --- paid work --------------------------------------------------------------------------------

    def _entry(self, target: Target, key: str, outputs: tuple[LockedOutput, ...], task_id: str | None) -> LockEntry:
        from pixmake.fingerprint import input_hash

        return LockEntry(
            key=key,
            model=target.model,
            prompt=target.prompt,
            size=target.size,
            n=target.n,
            outputs=outputs,
            references=tuple(LockedInput(r, input_hash(r, self.input_hashes)) for r in target.references),
            mask=None if target.mask is None else LockedInput(target.mask, input_hash(target.mask, self.input_hashes)),
            params=target.params,
            task_id=task_id,
        )

    def _provider(self) -> Provider:
        assert self.provider is not None, "a paid action needs a provider"
        return self.provider

    async def _call(self, target: str, operation: Operation, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        """Call the provider, retrying what is safe to retry; LOOKUP verdicts propagate to the caller."""
        for attempt in range(self.settings.max_attempts):
            try:
                return await fn(*args)
            except ProviderError as error:
                verdict = classify(error, operation)
                if verdict is Verdict.FATAL:
                    raise _Fatal(error) from error
                if verdict is not Verdict.RETRY or attempt + 1 >= self.settings.max_attempts:
                    raise
                retry_after = error.retry_after if isinstance(error, RateLimitedError) else None
                delay = self.backoff.delay(attempt, self.random, retry_after=retry_after)
                self.reporter.emit(RetryScheduled(target, operation.value, attempt + 1, delay, str(error)))
                await self.sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _input_url(self, target: str, ref: str) -> str:
        """URL for a reference or mask: as given, or uploaded once per content hash."""
        if is_url(ref):
            return ref
        digest = self.input_hashes[ref]
        lock = self._upload_locks.setdefault(digest, anyio.Lock())
        async with lock:
            if digest not in self._uploads:
                data = await anyio.to_thread.run_sync((self.root / ref).read_bytes)
                self._uploads[digest] = await self._call(target, Operation.UPLOAD, self._upload, data, Path(ref).name)
        return self._uploads[digest]

    async def _upload(self, data: bytes, filename: str) -> str:
        return await self._provider().upload(data, filename=filename)

    async def _submit_once(self, target: Target, key: str, request: GenerationRequest, rate: RateLimiter) -> TaskStatus:
        """Submit, retrying only what cannot double-charge; an unknown outcome is looked up first."""
        provider = self._provider()
        for attempt in range(self.settings.max_attempts):
            await rate.acquire()
            try:
                cbid = request.client_business_id
                with anyio.CancelScope(shield=True):
                    await anyio.to_thread.run_sync(self.journal.submitting, target.name, key, cbid)
                    self.recorder.pending[key] = PendingSubmit(target.name, key, cbid)
                return await provider.submit(request)
            except ProviderError as error:
                verdict = classify(error, Operation.SUBMIT)
                if verdict is Verdict.FATAL:
                    raise _Fatal(error) from error
                if verdict is Verdict.LOOKUP:
                    found = await self._call(target.name, Operation.QUERY, provider.find, request.client_business_id)
                    if found is not None:
                        return found
                elif verdict is Verdict.FAIL or attempt + 1 >= self.settings.max_attempts:
                    raise
                retry_after = error.retry_after if isinstance(error, RateLimitedError) else None
                delay = self.backoff.delay(attempt, self.random, retry_after=retry_after)
                self.reporter.emit(RetryScheduled(target.name, "submit", attempt + 1, delay, str(error)))
                await self.sleep(delay)
                request = _with_new_id(request, key)  # the old id is known not to exist
        raise NetworkError("submit kept failing; giving up", sent=False)

    async def _obtain_task(self, target: Target, key: str, rate: RateLimiter) -> TaskStatus:
        provider = self._provider()
        pending = self.recorder.pending.get(key)
        if pending is not None:
            lookup_id = pending.task_id or pending.client_business_id
            fn = provider.poll if pending.task_id else provider.find
            try:
                found = await self._call(target.name, Operation.QUERY, fn, lookup_id)
            except ProviderError:
                found = None
            if found is not None and found.state is not TaskState.FAILED:
                self.reporter.emit(TargetSubmitted(target.name, found.task_id, resumed=True))
                return found
        image_urls = tuple([await self._input_url(target.name, ref) for ref in target.references])
        mask_url = None if target.mask is None else await self._input_url(target.name, target.mask)
        request = GenerationRequest(
            model=target.model,
            prompt=target.prompt,
            size=target.size,
            n=target.n,
            client_business_id=_client_business_id(key),
            image_urls=image_urls,
            mask_url=mask_url,
            params=target.params,
        )
        status = await self._submit_once(target, key, request, rate)
        with anyio.CancelScope(shield=True):
            cbid = self.recorder.pending[key].client_business_id if key in self.recorder.pending else ""
            await anyio.to_thread.run_sync(self.journal.accepted, target.name, key, cbid, status.task_id)
            self.recorder.pending[key] = PendingSubmit(target.name, key, cbid, status.task_id)
        self.reporter.emit(TargetSubmitted(target.name, status.task_id, resumed=False))
        return status

    def _poll_delay(self, first: bool) -> float:
        """The documented pace: about 5 s first, then 5-10 s with jitter (scaled by poll_interval)."""
        base = self.settings.poll_interval if self.settings.poll_interval is not None else 5.0
        return base if first else base * (1.0 + self.random())

    async def _wait_finished(self, target: str, status: TaskStatus) -> TaskStatus:
        first = True
        with anyio.fail_after(self.settings.max_wait):
            while not status.state.terminal:
                await self.sleep(self._poll_delay(first))
                first = False
                status = await self._call(target, Operation.QUERY, self._provider().poll, status.task_id)
                self.reporter.emit(TargetPolled(target, status.status, status.progress))
        return status

    async def _generate(self, target: Target, key: str, rate: RateLimiter) -> tuple[str, ...]:
        status = await self._obtain_task(target, key, rate)
        try:
            status = await self._wait_finished(target.name, status)
        except TimeoutError:
            raise GenerationFailedError(
                f"task {status.task_id} still {status.status} after {self.settings.max_wait:.0f} s; "
                "it stays journaled and the next build resumes it"
            ) from None
        if status.state is TaskState.FAILED:
            await anyio.to_thread.run_sync(self.journal.dropped, target.name, key)
            self.recorder.pending.pop(key, None)
            code = f" ({status.error_code})" if status.error_code else ""
            raise GenerationFailedError(f"task {status.task_id} failed{code}: {status.error_message or 'no message'}")
        if len(status.urls) != target.n:
            raise BadResultError(f"task {status.task_id} returned {len(status.urls)} images, expected {target.n}")
        blobs = [
            await self._call(target.name, Operation.DOWNLOAD, self._provider().download, url) for url in status.urls
        ]
        sizes = await anyio.to_thread.run_sync(_verify_images, blobs)
        paths = output_paths(target)

        def store() -> tuple[LockedOutput, ...]:
            outputs = []
            for path, blob, (width, height) in zip(paths, blobs, sizes, strict=True):
                digest = self.objects.put(blob)
                atomic_write(self.root / path, blob)
                outputs.append(LockedOutput(path, digest, len(blob), width, height))
            return tuple(outputs)

        with anyio.CancelScope(shield=True):
            outputs = await anyio.to_thread.run_sync(store)
            entry = self._entry(target, key, outputs, status.task_id)
            await anyio.to_thread.run_sync(self.recorder.record, target.name, entry)
        self._images += target.n
        return paths


def _with_new_id(request: GenerationRequest, key: str) -> GenerationRequest:
    from dataclasses import replace

    return replace(request, client_business_id=_client_business_id(key))


def _leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    out: list[BaseException] = []
    for error in group.exceptions:
        out.extend(_leaves(error) if isinstance(error, BaseExceptionGroup) else [error])
    return out
