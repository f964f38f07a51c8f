"""When to retry a provider call, and how long to wait first.

PURE and table-tested. Money is spent at submit, so a submit is retried blindly only when the
request surely never arrived or the provider said "slow down" (429, 503 rate_limit_unavailable).
When a submit's outcome is unknown (read timeout, 5xx, connection dropped after sending), the task
is looked up by its ``client_business_id`` before anything is submitted again. Polls, lookups,
uploads and downloads are idempotent and retry freely.
"""

from __future__ import annotations

import datetime
import email.utils
import math
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Final

from pixmake.errors import (
    AuthError,
    NetworkError,
    ProviderError,
    QuotaError,
    RateLimitedError,
    RequestRejectedError,
    ServerError,
)

__all__ = [
    "DOCUMENTED_POLL_INTERVAL",
    "Backoff",
    "Operation",
    "Verdict",
    "classify",
    "parse_retry_after",
    "poll_delay",
    "rides_out",
]

DOCUMENTED_POLL_INTERVAL: Final = 5.0
"""Seconds before the first status poll; later polls wait 1-2 times this (toapis-api.md §3.4: 5 s, then 5-10 s)."""


class Operation(Enum):
    """The kinds of provider call, by how safe they are to repeat."""

    SUBMIT = "submit"  # charges money
    QUERY = "query"  # poll or lookup
    UPLOAD = "upload"
    DOWNLOAD = "download"


class Verdict(Enum):
    """What to do after a failed call."""

    RETRY = "retry"  # wait, then send the same call again
    LOOKUP = "lookup"  # the submit may have been accepted: look the task up before submitting again
    FATAL = "fatal"  # stop the whole build (bad key, no balance)
    FAIL = "fail"  # give up on this target


def classify(error: ProviderError, operation: Operation) -> Verdict:
    """Decide how to react to ``error`` raised by ``operation``."""
    if isinstance(error, AuthError | QuotaError):
        return Verdict.FATAL
    if isinstance(error, RateLimitedError):
        return Verdict.RETRY
    if isinstance(error, NetworkError):
        if operation is Operation.SUBMIT and error.sent:
            return Verdict.LOOKUP
        return Verdict.RETRY
    if isinstance(error, ServerError):
        return Verdict.LOOKUP if operation is Operation.SUBMIT else Verdict.RETRY
    if operation is Operation.DOWNLOAD and isinstance(error, RequestRejectedError) and error.status == 404:
        return Verdict.RETRY  # a CDN edge that has not caught up with a fresh result yet
    return Verdict.FAIL  # a request refused as invalid, a failed task, a result that can never be an image


def rides_out(error: ProviderError, operation: Operation) -> bool:
    """Whether a paid task's poll or download that failed with ``error`` after all its attempts should go on
    retrying (within a window): the network or the gateway is down (no answer, 429, a 5xx status), a passing
    outage; not a garbage answer, a certificate refused or a method not implemented (501, 505), which last."""
    if operation not in (Operation.QUERY, Operation.DOWNLOAD):
        return False
    if isinstance(error, NetworkError):
        return not error.reason.startswith("TLS certificate")  # a handshake cut short is a passing outage
    if isinstance(error, RateLimitedError):
        return True
    return (
        isinstance(error, ServerError)
        and error.status is not None
        and error.status >= 500
        and error.status not in (501, 505)
    )


def parse_retry_after(value: str | None, *, now: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta seconds or an HTTP date); None if absent or bad."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:  # an asctime date (no zone): HTTP dates are always UTC (RFC 9110 §5.6.7)
            when = when.replace(tzinfo=datetime.UTC)
        seconds = when.timestamp() - now
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential backoff with full jitter: attempt k waits uniform(0, min(cap, base·2^k)).

    A ``Retry-After`` is honoured as a floor, plus up to one ``base`` of jitter so that many
    clients told the same time do not return at the same instant; the backoff still grows beneath it,
    so a provider that keeps answering "retry after 1 s" through a storm is asked less and less often.
    """

    base: float = 1.0
    cap: float = 60.0
    max_retry_after: float = 3600.0  # a longer Retry-After is clamped to this

    def delay(self, attempt: int, random: Callable[[], float], *, retry_after: float | None = None) -> float:
        """Seconds to wait before retry number ``attempt`` (0-based); ``random`` returns [0, 1)."""
        ceiling = min(self.cap, self.base * 2.0 ** min(attempt, 62))
        jittered = ceiling * random()
        if retry_after is None:
            return jittered
        return max(min(max(retry_after, 0.0), self.max_retry_after) + self.base * random(), jittered)


def poll_delay(first: bool, interval: float | None, random: Callable[[], float]) -> float:
    """Seconds to wait before a status poll: ``interval`` (default 5 s) first, then uniform(interval, 2·interval)."""
    base = DOCUMENTED_POLL_INTERVAL if interval is None else interval
    return base if first else base * (1.0 + random())
