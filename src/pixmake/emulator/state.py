"""The emulator's state: tasks, uploads, the request record, the charge ledger and the rate buckets.

A task's status is a pure function of the emulator clock (``task_view``): no background work runs, so an
injected clock drives the whole lifecycle::

    created ──queued_fraction·d──▶ in_progress (progress 1..99) ──d──▶ completed | failed (refunded)

where ``d = latency + U(0, latency_jitter)`` is fixed at submit, as is the outcome (failed, or completed
with ``n`` images, ``n - 1`` under ``p_short_result``, ``n + 1`` under ``p_long_result``). Rate buckets,
tasks and ``client_business_id`` lookups belong to the key's *user* (the ``users`` knob; an unlisted key is a
user of its own); uploads are public by URL and the ledger is the whole emulator's. Everything here is
guarded by one lock, so tests may read the record from their own thread while uvicorn serves in another.
"""

from __future__ import annotations

import math
import random
import secrets
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from pixmake.emulator.config import DEFAULT_CONFIG, FAULT_GROUPS, EmulatorConfig
from pixmake.emulator.models import Submission

__all__ = [
    "Emulator",
    "FailureReason",
    "Ledger",
    "LedgerEntry",
    "QuotaExceeded",
    "RateDecision",
    "RecordedRequest",
    "Task",
    "Upload",
    "expires_at",
    "redact_headers",
    "result_urls",
    "submit_view",
    "task_view",
]

FailureReason = tuple[str, str]
"""``(error.code, error.message)`` of a task that will fail."""

_FAILURES: Final[Mapping[str, FailureReason]] = {
    "p_task_failed": ("generation_failed", "call upstream API failed: upstream returned status 422"),
    "p_content_policy": ("content_policy_violation", "Your request was rejected by the safety system."),
    "p_task_no_balance": ("insufficient_quota", "Insufficient account balance"),  # §3.3: in a task, not HTTP 402
}
_REDACTED_HEADERS: Final = frozenset(
    {"authorization", "proxy-authorization", "x-api-key", "api-key", "cookie", "set-cookie"}
)


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    """One request the emulator received; secrets are redacted before it is stored."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    json: object | None
    body_size: int
    status: int | None  # None: the connection was dropped without a response
    time: float


@dataclass(frozen=True, slots=True)
class Task:
    """One submitted generation task; its status is derived from ``now`` by :func:`task_view`."""

    id: str
    key: str
    submission: Submission
    created: float
    started: float
    finished: float
    failure: FailureReason | None
    images: int  # result images once completed: n, n - 1 under p_short_result, n + 1 under p_long_result


@dataclass(frozen=True, slots=True)
class Upload:
    """An uploaded reference image, served back at ``/files/uploads/<id>.<ext>`` until ``upload_ttl``."""

    id: str
    key: str
    data: bytes
    mime_type: str
    extension: str
    purpose: str
    created: float
    size: tuple[int, int] | None  # pixels, None if the header could not be read


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    """What one task cost: charged at submit by ``n``, refunded in full when it fails."""

    task_id: str
    client_business_id: str | None
    model: str
    n: int
    charged_images: int
    refunded: bool

    @property
    def net_images(self) -> int:
        """Images actually paid for."""
        return 0 if self.refunded else self.charged_images


@dataclass(frozen=True, slots=True)
class Ledger:
    """All charges, in submit order, as of the moment it was read."""

    entries: tuple[LedgerEntry, ...]

    @property
    def charged_images(self) -> int:
        """Images charged at submit, refunds ignored."""
        return sum(entry.charged_images for entry in self.entries)

    @property
    def refunded_images(self) -> int:
        """Images given back for failed tasks."""
        return sum(entry.charged_images for entry in self.entries if entry.refunded)

    @property
    def net_images(self) -> int:
        """Images paid for after refunds."""
        return self.charged_images - self.refunded_images


@dataclass(frozen=True, slots=True)
class RateDecision:
    """The outcome of taking a token; also feeds the ``X-RateLimit-*`` headers."""

    allowed: bool
    category: str
    limit: int
    remaining: int
    reset: int
    retry_after: int


class QuotaExceeded(Exception):
    """The submit would take the key past ``quota_images``."""


@dataclass(slots=True)
class _Bucket:
    rate: float
    burst: int
    tokens: float
    updated: float

    def take(self, now: float, category: str) -> RateDecision:
        self.tokens = min(float(self.burst), self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        allowed = self.tokens >= 1.0
        if allowed:
            self.tokens -= 1.0
        wait = max(1, math.ceil((1.0 - self.tokens) / self.rate)) if not allowed else 0
        return RateDecision(
            allowed=allowed,
            category=category,
            limit=self.burst,
            remaining=int(self.tokens),
            reset=math.ceil((self.burst - self.tokens) / self.rate),
            retry_after=wait,
        )


def _redact(name: str, value: str) -> str:
    if name not in _REDACTED_HEADERS:
        return value
    scheme, _, secret = value.partition(" ")
    prefix = "sk-" if secret.startswith("sk-") else ""
    return f"{scheme} {prefix}…redacted" if secret else "…redacted"


def redact_headers(headers: Sequence[tuple[bytes, bytes]]) -> dict[str, str]:
    """Decode ASGI headers into a dict, with credentials replaced by a marker."""
    decoded = ((name.decode("latin-1").lower(), value.decode("latin-1")) for name, value in headers)
    return {name: _redact(name, value) for name, value in decoded}


def _queued_view(task: Task, config: EmulatorConfig) -> dict[str, object]:
    body: dict[str, object] = {"id": task.id}
    if task.submission.client_business_id is not None:
        body["client_business_id"] = task.submission.client_business_id
    body |= {"object": "generation.task", "model": task.submission.model}
    return body | {"status": config.status_dialect, "progress": 0, "created_at": int(task.created)}


def submit_view(task: Task, config: EmulatorConfig) -> dict[str, object]:
    """Return the submit response body (§2.1): always the queued task plus ``metadata: {}``."""
    return _queued_view(task, config) | {"metadata": {}}


def task_view(task: Task, now: float, config: EmulatorConfig, base_url: str) -> dict[str, object]:
    """Return the status body (§3.3) of ``task`` at time ``now``."""
    body = _queued_view(task, config)
    if now < task.started:
        return body
    if now < task.finished:
        share = (now - task.started) / (task.finished - task.started)
        return body | {"status": "in_progress", "progress": min(99, 1 + int(98 * share))}
    if task.failure is not None:
        code, message = task.failure
        return body | {"status": "failed", "progress": 0, "error": {"code": code, "message": message}}
    return body | _completed_fields(task, config, base_url)


def _completed_fields(task: Task, config: EmulatorConfig, base_url: str) -> dict[str, object]:
    completed_at = int(task.finished)
    items: list[dict[str, object]] = [{"url": url} for url in result_urls(task, base_url)]
    placement: dict[str, dict[str, object]] = {
        "result": {"result": {"type": "image", "data": items}},
        "images": {"images": items},
        "data": {"data": items},
    }
    fields: dict[str, object] = {"status": "completed", "progress": 100}
    if config.result_times:
        fields |= {"completed_at": completed_at, "expires_at": expires_at(task, config)}
    fields |= placement[config.result_style]
    if config.top_level_url and items:
        fields["url"] = items[0]["url"]
    return fields


def expires_at(task: Task, config: EmulatorConfig) -> int:
    """When a completed task's result files stop being served (Unix seconds)."""
    return int(task.finished + config.result_ttl)


def result_urls(task: Task, base_url: str) -> list[str]:
    """The absolute URLs of a task's images, 1-based: ``{base}/files/generated/<task>_<i>.png``."""
    return [f"{base_url}/files/generated/{task.id}_{index}.png" for index in range(1, task.images + 1)]


def _pick(rng: random.Random, config: EmulatorConfig, knobs: Sequence[str]) -> str | None:
    """One categorical draw over ``knobs``; always consumes exactly one random number."""
    draw = rng.random()
    for knob in knobs:
        draw -= getattr(config, knob)
        if draw < 0:
            return knob
    return None


class Emulator:
    """The emulator's whole state; the Starlette app (``create_app``) is a thin HTTP face over it."""

    def __init__(
        self,
        config: EmulatorConfig = DEFAULT_CONFIG,
        *,
        clock: Callable[[], float] = time.time,
        unique_ids: bool = False,
    ) -> None:
        """Start empty with ``config``; ``clock`` returns Unix seconds and drives every timestamp.

        ``unique_ids``: task and upload ids differ from those of any earlier start (a standalone emulator,
        restarted under builds that journaled its ids); else they follow the seed, as the placeholders
        that show them do (``build --emulator`` makes the same images on every machine).
        """
        self._salt = secrets.token_hex(8) if unique_ids else ""
        self._lock = threading.RLock()
        self._clock = clock
        self._offset = 0.0
        self.config = config
        self.reset(config)

    # -- knobs and clock ---------------------------------------------------------------------------

    def reconfigure(self, config: EmulatorConfig) -> None:
        """Change the knobs, keep tasks, uploads, record and ledger; re-seed the random streams."""
        with self._lock:
            self.config = config
            self._seed(config.seed)
            self._buckets: dict[tuple[str, str], _Bucket] = {}

    def reset(self, config: EmulatorConfig | None = None) -> None:
        """Forget every task, upload, recorded request and charge; optionally switch config too."""
        with self._lock:
            self.reconfigure(config or self.config)
            self._tasks: dict[str, Task] = {}
            self._by_business_id: dict[str, list[str]] = {}  # oldest first, every user's
            self._uploads: dict[str, Upload] = {}
            self._requests: list[RecordedRequest] = []
            self._offset = 0.0

    def _seed(self, seed: int) -> None:
        ids = getattr(self, "_rngs", {}).get("ids") or random.Random(f"{seed}:ids{self._salt}")
        # Task and upload ids go on from where they were: a provider never hands out an id twice, and a
        # project built before a reset holds them (reproducible all the same, per emulator and seed; and
        # across restarts, never the same with unique_ids: a resumed build collected another's images).
        self._rngs = {name: random.Random(f"{seed}:{name}") for name in FAULT_GROUPS} | {"ids": ids}

    def now(self) -> float:
        """The emulator's current time: the injected clock plus any :meth:`advance`."""
        return self._clock() + self._offset

    def advance(self, seconds: float) -> None:
        """Move the emulator's clock forward (for tests driving a subprocess emulator over HTTP)."""
        with self._lock:
            self._offset += seconds

    # -- record and ledger -------------------------------------------------------------------------

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every API and file request received, in completion order (control endpoints excluded)."""
        with self._lock:
            return list(self._requests)

    def submits(self) -> list[RecordedRequest]:
        """The recorded ``POST /v1/images/generations`` requests."""
        return [r for r in self.requests if r.method == "POST" and r.path == "/v1/images/generations"]

    def record(self, request: RecordedRequest) -> None:
        """Append one request to the record."""
        with self._lock:
            self._requests.append(request)

    @property
    def ledger(self) -> Ledger:
        """The charges as of now: failed tasks count as refunded once their failure is visible."""
        with self._lock:
            now = self.now()
            return Ledger(tuple(self._entry(task, now) for task in self._tasks.values()))

    @staticmethod
    def _entry(task: Task, now: float) -> LedgerEntry:
        sub = task.submission
        refunded = task.failure is not None and now >= task.finished
        return LedgerEntry(task.id, sub.client_business_id, sub.model, sub.n, sub.n, refunded)

    # -- authentication, rate limits, faults -------------------------------------------------------

    def authenticate(self, authorization: str | None) -> str | None:
        """Return the API key from an ``Authorization`` header, or None if it is missing or wrong."""
        scheme, _, key = (authorization or "").partition(" ")
        key = key.strip()
        if scheme.lower() != "bearer" or not key.startswith("sk-"):
            return None
        expected = self.config.api_key
        return key if expected is None or key == expected else None

    def user_of(self, key: str) -> str:
        """The user ``key`` belongs to: its ``users`` entry, else the key itself (a user of its own)."""
        users = self.config.users
        return users.get(key, key) if users is not None else key

    def take_token(self, category: str, key: str) -> RateDecision | None:
        """Take one token from the ``async_submit`` or ``async_query`` bucket of the key's user (§4.2: all of a
        user's keys share them); None if unlimited."""
        rate, burst = {
            "async_submit": (self.config.submit_rps, self.config.submit_burst),
            "async_query": (self.config.query_rps, self.config.query_burst),
        }[category]
        if rate is None:
            return None
        with self._lock:
            now = self.now()
            bucket = self._buckets.setdefault((category, self.user_of(key)), _Bucket(rate, burst, float(burst), now))
            return bucket.take(now, category)

    def draw_fault(self, group: str) -> str | None:
        """Draw the fault knob (e.g. ``"p_500"``) that hits this request of ``group``, or None."""
        with self._lock:
            return _pick(self._rngs[group], self.config, FAULT_GROUPS[group])

    # -- tasks ---------------------------------------------------------------------------------------

    def _new_id(self, prefix: str) -> str:
        rng = self._rngs["ids"]
        while True:
            candidate = f"{prefix}{rng.getrandbits(64):016x}"
            if candidate not in self._tasks and candidate not in self._uploads:
                return candidate

    def create_task(self, key: str, submission: Submission) -> Task:
        """Create and charge a task. Raises :class:`QuotaExceeded` or ``KeyError`` (duplicate business id)."""
        with self._lock:
            config, now = self.config, self.now()
            self._check_quota(submission.n)
            business_id = submission.client_business_id
            if business_id and config.duplicate_business_id == "reject" and self._newest(key, business_id):
                raise KeyError(business_id)
            duration = config.latency + self._rngs["outcome"].uniform(0.0, config.latency_jitter)
            outcome = _pick(self._rngs["outcome"], config, FAULT_GROUPS["outcome"])
            task = Task(
                id=self._new_id("task_img_"),
                key=key,
                submission=submission,
                created=now,
                started=now + duration * config.queued_fraction,
                finished=now + duration,
                failure=_FAILURES.get(outcome or ""),
                images=submission.n + {"p_short_result": -1, "p_long_result": 1}.get(outcome or "", 0),
            )
            self._tasks[task.id] = task
            if business_id:
                self._by_business_id.setdefault(business_id, []).append(task.id)
            return task

    def _check_quota(self, n: int) -> None:
        quota = self.config.quota_images
        if quota is not None and self.ledger.net_images + n > quota:
            raise QuotaExceeded(f"{n} image(s) requested, quota {quota}")

    def _newest(self, key: str, business_id: str) -> Task | None:
        """The newest task of the key's user with ``business_id`` (a reused id finds the newest task)."""
        user = self.user_of(key)
        for task_id in reversed(self._by_business_id.get(business_id, ())):
            if self.user_of(self._tasks[task_id].key) == user:
                return self._tasks[task_id]
        return None

    def find_task(self, key: str, task_or_business_id: str) -> Task | None:
        """Find a task of the key's user by task id, else by ``client_business_id`` (the newest task with it)."""
        with self._lock:
            task = self._tasks.get(task_or_business_id)
            if task is None and self.config.lookup_by_business_id:
                task = self._newest(key, task_or_business_id)
                if task is not None and self.now() < task.created + self.config.lookup_lag:
                    return None  # not visible by business id yet
            return task if task is not None and self.user_of(task.key) == self.user_of(key) else None

    def task_by_id(self, task_id: str) -> Task | None:
        """Any key's task by id (for the public result-file URLs)."""
        with self._lock:
            return self._tasks.get(task_id)

    # -- uploads -------------------------------------------------------------------------------------

    def add_upload(
        self, key: str, data: bytes, mime_type: str, extension: str, purpose: str, size: tuple[int, int] | None
    ) -> Upload:
        """Store an uploaded image and return it with its new id."""
        with self._lock:
            upload = Upload(self._new_id("upload_"), key, data, mime_type, extension, purpose, self.now(), size)
            self._uploads[upload.id] = upload
            return upload

    def get_upload(self, upload_id: str) -> Upload | None:
        """An upload by id, or None (expired ones included: see :meth:`upload_expired`)."""
        with self._lock:
            return self._uploads.get(upload_id)

    def upload_expired(self, upload: Upload) -> bool:
        """Whether ``upload`` is older than ``upload_ttl`` on the emulator clock."""
        ttl = self.config.upload_ttl
        return ttl is not None and self.now() >= upload.created + ttl
