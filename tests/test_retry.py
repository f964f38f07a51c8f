"""The retry rule (pure) and the backoff: a table over every error class × operation, and properties."""

from __future__ import annotations

import email.utils
import random
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pixmake.errors import (
    AuthError,
    BadResultError,
    GenerationFailedError,
    NetworkError,
    ProviderError,
    QuotaError,
    RateLimitedError,
    RequestRejectedError,
    ServerError,
)
from pixmake.retry import (
    DOCUMENTED_POLL_INTERVAL,
    Backoff,
    Operation,
    Verdict,
    classify,
    parse_retry_after,
    poll_delay,
    rides_out,
)

SUBMIT, QUERY, UPLOAD, DOWNLOAD = Operation.SUBMIT, Operation.QUERY, Operation.UPLOAD, Operation.DOWNLOAD
RETRY, LOOKUP, FATAL, FAIL = Verdict.RETRY, Verdict.LOOKUP, Verdict.FATAL, Verdict.FAIL

ERRORS: dict[str, ProviderError] = {
    "401 bad key": AuthError("Invalid API key", status=401, code="unauthorized"),
    "403 forbidden": AuthError("forbidden", status=403),
    "402 no balance": QuotaError("top up", status=402, code="insufficient_quota"),
    "429 rate limited": RateLimitedError("slow down", status=429, code="rate_limit_exceeded", retry_after=1.0),
    "503 rate_limit_unavailable": RateLimitedError(
        "limiter down", status=503, code="rate_limit_unavailable", retry_after=None
    ),
    "500 internal": ServerError("boom", status=500, code="internal_error"),
    "502 bad gateway": ServerError("upstream", status=502),
    "504 html gateway page": ServerError("gateway returned an HTML error page", status=504),
    "503 circuit_broken": ServerError("all channels unavailable", status=503, code="circuit_broken"),
    "connect error (never sent)": NetworkError("ConnectError", sent=False),
    "read timeout (maybe arrived)": NetworkError("ReadTimeout", sent=True),
    "dropped after send": NetworkError("RemoteProtocolError", sent=True),
    "400 invalid request": RequestRejectedError("The 'prompt' field is required.", status=400),
    "404 not found": RequestRejectedError("Task not found", status=404),
    "422 content policy": RequestRejectedError("rejected", status=422, code="content_policy_violation"),
    "task failed": GenerationFailedError("generation_failed"),
    "bad result": BadResultError("download: more than 64 MB, larger than any image"),
}

# Columns: submit (costs money), query (poll/lookup), upload, download.
TABLE: dict[str, tuple[Verdict, Verdict, Verdict, Verdict]] = {
    "401 bad key": (FATAL, FATAL, FATAL, FATAL),
    "403 forbidden": (FATAL, FATAL, FATAL, FATAL),
    "402 no balance": (FATAL, FATAL, FATAL, FATAL),
    "429 rate limited": (RETRY, RETRY, RETRY, RETRY),
    "503 rate_limit_unavailable": (RETRY, RETRY, RETRY, RETRY),
    "500 internal": (LOOKUP, RETRY, RETRY, RETRY),
    "502 bad gateway": (LOOKUP, RETRY, RETRY, RETRY),
    "504 html gateway page": (LOOKUP, RETRY, RETRY, RETRY),
    "503 circuit_broken": (LOOKUP, RETRY, RETRY, RETRY),
    "connect error (never sent)": (RETRY, RETRY, RETRY, RETRY),
    "read timeout (maybe arrived)": (LOOKUP, RETRY, RETRY, RETRY),
    "dropped after send": (LOOKUP, RETRY, RETRY, RETRY),
    "400 invalid request": (FAIL, FAIL, FAIL, FAIL),
    "404 not found": (FAIL, FAIL, FAIL, RETRY),  # a result link: a CDN edge not caught up with a fresh result
    "422 content policy": (FAIL, FAIL, FAIL, FAIL),
    "task failed": (FAIL, FAIL, FAIL, FAIL),
    "bad result": (FAIL, FAIL, FAIL, FAIL),  # it would be as bad again (an undecodable image: see execute)
}

CASES = [
    pytest.param(ERRORS[name], op, verdict, id=f"{name}-{op.value}")
    for name, verdicts in TABLE.items()
    for op, verdict in zip((SUBMIT, QUERY, UPLOAD, DOWNLOAD), verdicts, strict=True)
]


def test_the_table_covers_every_error_class_and_operation() -> None:
    assert set(TABLE) == set(ERRORS)
    leaf_classes = {type(e) for e in ERRORS.values()}
    assert leaf_classes == {
        AuthError, QuotaError, RateLimitedError, ServerError, NetworkError,
        RequestRejectedError, GenerationFailedError, BadResultError,
    }  # fmt: skip


@pytest.mark.parametrize(("error", "operation", "verdict"), CASES)
def test_classify(error: ProviderError, operation: Operation, verdict: Verdict) -> None:
    assert classify(error, operation) is verdict


def test_a_submit_is_never_blindly_resent_when_it_may_have_arrived() -> None:
    for name, error in ERRORS.items():
        if classify(error, SUBMIT) is RETRY:
            assert isinstance(error, RateLimitedError) or (isinstance(error, NetworkError) and not error.sent), name


# Past its attempts, a paid task's poll or download rides out an outage (within the retry window), not the rest.
RIDES_OUT: dict[str, bool] = {
    "429 rate limited": True,
    "503 rate_limit_unavailable": True,
    "500 internal": True,
    "502 bad gateway": True,
    "504 html gateway page": True,
    "503 circuit_broken": True,
    "connect error (never sent)": True,  # a network down while a laptop wakes
    "read timeout (maybe arrived)": True,
    "dropped after send": True,
}
RIDES_OUT["TLS handshake cut short"] = True  # a gateway restarting
MORE_ERRORS: dict[str, ProviderError] = {
    "TLS handshake cut short": NetworkError("x", sent=False, reason="TLS error: UNEXPECTED_EOF_WHILE_READING"),
    "TLS certificate refused": NetworkError("x", sent=False, reason="TLS certificate not trusted: self-signed"),
    "501 not implemented": ServerError("no", status=501),
    "505 version": ServerError("no", status=505),
    "garbage on 200": ServerError("unexpected task body: 'x'"),
}


@pytest.mark.parametrize("name", [*ERRORS, *MORE_ERRORS])
@pytest.mark.parametrize("operation", [SUBMIT, QUERY, UPLOAD, DOWNLOAD])
def test_only_a_paid_tasks_poll_or_download_rides_out_an_outage(name: str, operation: Operation) -> None:
    error = ERRORS.get(name) or MORE_ERRORS[name]
    paid = operation in (QUERY, DOWNLOAD)
    assert rides_out(error, operation) is (paid and RIDES_OUT.get(name, False))


# --- backoff -------------------------------------------------------------------------------------------

unit = st.floats(min_value=0.0, max_value=1.0, exclude_max=True)
bases = st.floats(min_value=0.001, max_value=10.0)
caps = st.floats(min_value=0.001, max_value=600.0)
attempts = st.integers(min_value=0, max_value=200)


@given(base=bases, cap=caps, attempt=attempts, draw=unit)
def test_backoff_stays_within_full_jitter_bounds(base: float, cap: float, attempt: int, draw: float) -> None:
    delay = Backoff(base=base, cap=cap).delay(attempt, lambda: draw)
    assert 0.0 <= delay <= min(cap, base * 2.0 ** min(attempt, 62))


@given(base=bases, cap=caps, attempt=attempts, draw=unit, retry_after=st.floats(min_value=0.0, max_value=3600.0))
def test_backoff_honours_retry_after_as_a_floor(
    base: float, cap: float, attempt: int, draw: float, retry_after: float
) -> None:
    delay = Backoff(base=base, cap=cap).delay(attempt, lambda: draw, retry_after=retry_after)
    assert retry_after <= delay <= max(retry_after + base, min(cap, base * 2.0 ** min(attempt, 62)))


def test_backoff_grows_beneath_a_short_retry_after() -> None:
    """A storm of "retry after 1 s" answers: each retry waits at least 1 s, and later ones longer."""
    backoff = Backoff()
    top = 1.0 - 1e-12
    assert [round(backoff.delay(k, lambda: top, retry_after=1.0), 6) for k in range(7)] == [2, 2, 4, 8, 16, 32, 60]
    assert backoff.delay(6, lambda: 0.0, retry_after=1.0) == 1.0


@given(base=bases, attempt=st.integers(min_value=0, max_value=30))
def test_backoff_ceiling_grows_exponentially_until_the_cap(base: float, attempt: int) -> None:
    backoff = Backoff(base=base, cap=1e12)
    assert backoff.delay(attempt + 1, lambda: 0.999999) >= backoff.delay(attempt, lambda: 0.999999)


def test_backoff_default_matches_the_documented_1_2_4_seconds() -> None:
    backoff = Backoff()
    top = 1.0 - 1e-12
    assert [round(backoff.delay(k, lambda: top), 6) for k in range(3)] == [1.0, 2.0, 4.0]
    assert backoff.delay(100, lambda: top) <= backoff.cap


def test_backoff_uses_the_injected_random_source() -> None:
    rng = random.Random(7)
    first = [Backoff().delay(3, rng.random) for _ in range(5)]
    rng = random.Random(7)
    assert [Backoff().delay(3, rng.random) for _ in range(5)] == first


# --- Retry-After ---------------------------------------------------------------------------------------


@given(seconds=st.integers(min_value=0, max_value=10**6))
def test_retry_after_seconds(seconds: int) -> None:
    assert parse_retry_after(str(seconds), now=1e9) == seconds
    assert parse_retry_after(f"  {seconds} ", now=1e9) == seconds


@given(now=st.integers(min_value=10**9, max_value=2 * 10**9), ahead=st.integers(min_value=-1000, max_value=10**5))
def test_retry_after_http_date(now: int, ahead: int) -> None:
    header = email.utils.formatdate(now + ahead, usegmt=True)
    assert parse_retry_after(header, now=float(now)) == max(0, ahead)


@pytest.mark.parametrize("zone", ["America/Los_Angeles", "Asia/Shanghai", "UTC"])
def test_retry_after_in_each_http_date_form_means_the_same_moment_in_any_local_time_zone(
    zone: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The review (the API's facts): an asctime date, one of the three forms HTTP allows, was read as local
    time: "30 s from now" held the build for 8 hours west of UTC and not at all east of it."""
    monkeypatch.setenv("TZ", zone)
    time.tzset()
    try:
        now = 1_764_000_000  # 2025-11-24 16:00:00 UTC, a Monday
        forms = ["Mon, 24 Nov 2025 16:00:30 GMT", "Monday, 24-Nov-25 16:00:30 GMT", "Mon Nov 24 16:00:30 2025"]
        assert [parse_retry_after(form, now=float(now)) for form in forms] == [30.0, 30.0, 30.0]
    finally:
        monkeypatch.undo()
        time.tzset()


@pytest.mark.parametrize("value", [None, "", "   ", "soon", "nan", "inf", "Mon, 99 Foo 2025 99:99:99 GMT"])
def test_retry_after_garbage_is_ignored(value: str | None) -> None:
    assert parse_retry_after(value, now=1e9) is None


def test_negative_retry_after_means_now() -> None:
    assert parse_retry_after("-5", now=1e9) == 0.0


# --- polling pace --------------------------------------------------------------------------------------


@given(draw=unit, interval=st.one_of(st.none(), st.floats(min_value=0.001, max_value=60.0)))
def test_polling_waits_about_the_interval_first_then_one_to_two_intervals(draw: float, interval: float | None) -> None:
    base = DOCUMENTED_POLL_INTERVAL if interval is None else interval
    assert poll_delay(True, interval, lambda: draw) == base
    assert base <= poll_delay(False, interval, lambda: draw) <= 2 * base


def test_the_default_pace_is_the_documented_5_then_5_to_10_seconds() -> None:
    assert poll_delay(True, None, lambda: 0.9) == 5.0
    assert poll_delay(False, None, lambda: 0.0) == 5.0
    assert poll_delay(False, None, lambda: 0.999) == pytest.approx(9.995)
