"""The ToAPIs provider: task bodies in every documented dialect, and errors translated at the boundary.

Most of it runs against the session emulator over HTTP; malformed answers the emulator never gives are
answered by a raw HTTP server on 127.0.0.1 that writes canned bytes, in two tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import email.utils
import gzip
import io
import json
import math
import re
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from PIL import Image

from conftest import TEST_KEY, png_bytes
from pixmake.emulator import EmulatorConfig, EmulatorServer
from pixmake.emulator.config import ExpiredResult
from pixmake.errors import (
    AuthError,
    BadResultError,
    NetworkError,
    QuotaError,
    RateLimitedError,
    RequestRejectedError,
    ServerError,
)
from pixmake.models import MODELS as CLIENT_MODELS
from pixmake.providers.base import GenerationRequest, TaskState
from pixmake.providers.toapis import ToapisProvider, parse_task
from pixmake.settings import Secret, Settings


def _settings(url: str, key: str = TEST_KEY) -> Settings:
    return Settings(
        base_url=url, api_key=Secret(key), api_key_env="TOAPIS_API_KEY", concurrency=4, submit_rate=5.0,
        poll_interval=0.01, request_timeout=5.0,
    )  # fmt: skip


_PNG = png_bytes()
_OTHER_KEY = {"Authorization": "Bearer sk-the-cdn-owners-key"}

REQUEST = GenerationRequest(model="gpt-4o-image", prompt="a mug", size="1:1", n=2, client_business_id="pixmake-k-1")


@pytest.mark.parametrize(
    ("body", "state", "urls"),
    [
        ({"id": "t", "status": "queued"}, TaskState.RUNNING, ()),
        ({"id": "t", "status": "submitted"}, TaskState.RUNNING, ()),
        ({"id": "t", "status": "pending"}, TaskState.RUNNING, ()),
        ({"id": "t", "status": "SOMETHING_NEW"}, TaskState.RUNNING, ()),
        ({"id": "t"}, TaskState.RUNNING, ()),
        ({"id": "t", "status": "completed", "result": {"data": [{"url": "u1"}, {"url": "u2"}]}}, TaskState.COMPLETED,
         ("u1", "u2")),
        ({"id": "t", "status": "completed", "url": "u1"}, TaskState.COMPLETED, ("u1",)),
        ({"id": "t", "status": "succeeded", "images": [{"url": "u1"}]}, TaskState.COMPLETED, ("u1",)),
        ({"id": "t", "status": "completed", "data": [{"url": "u1"}]}, TaskState.COMPLETED, ("u1",)),
        ({"id": "t", "status": "failed", "error": {"code": 422, "message": "no"}}, TaskState.FAILED, ()),
    ],
)  # fmt: skip
def test_parse_task_reads_every_dialect(body: dict[str, Any], state: TaskState, urls: tuple[str, ...]) -> None:
    task = parse_task(body)
    assert task.state is state and task.urls == urls


def test_parse_task_keeps_the_servers_error() -> None:
    task = parse_task({"id": "t", "status": "failed", "error": {"code": 422, "message": "content policy"}})
    assert (task.error_code, task.error_message) == ("422", "content policy")


def test_parse_task_reads_when_the_results_expire() -> None:
    assert parse_task({"id": "t", "status": "completed", "url": "u", "expires_at": 1760086440}).expires_at == 1760086440
    assert parse_task({"id": "t", "status": "completed", "url": "u", "expires_at": "soon"}).expires_at is None
    # Without expires_at, the documented lifetime from completed_at: a refused link can still be judged gone.
    assert parse_task({"id": "t", "status": "completed", "url": "u", "completed_at": 100}).expires_at == 86_500


def test_parse_task_refuses_what_is_not_a_task() -> None:
    with pytest.raises(ServerError):
        parse_task({"status": "queued"})


@pytest.mark.parametrize(
    "value", [10**400, -(10**400), math.inf, math.nan, True], ids=["1e400", "-1e400", "inf", "nan", "true"]
)
@pytest.mark.parametrize("field", ["expires_at", "completed_at"])
def test_a_result_lifetime_no_float_holds_is_no_lifetime(field: str, value: object) -> None:
    """Informative only: ``1`` and 400 zeros (an OverflowError in float()), an infinity or a NaN is ignored."""
    assert parse_task({"id": "t", "status": "completed", "url": "u", field: value}).expires_at is None


@pytest.mark.parametrize(
    ("value", "percent"),
    [(10**400, 100), (-5, 0), (True, 0), (50.5, 0), ("50", 0), (42, 42)],
    ids=["1e400", "negative", "true", "float", "string", "42"],
)
def test_progress_is_a_percent_whatever_the_server_says(value: object, percent: int) -> None:
    assert parse_task({"id": "t", "progress": value}).progress == percent


def _nested(depth: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(depth):
        value = [value]
    return value


def test_server_values_of_any_shape_are_short_lines_not_recursion_errors() -> None:
    """A value nested past what str() can walk, or a number of 4,000 digits, in any field a message shows."""
    deep, huge = _nested(5000), 10**3999
    task = parse_task({"id": "t", "status": deep, "error": {"code": huge, "message": deep}})
    assert task.state is TaskState.RUNNING
    assert task.status == "[[[[...]]]]" and task.error_message == "[[[[...]]]]"
    assert task.error_code is not None and len(task.error_code) <= 100 and task.error_code.isprintable()
    with pytest.raises(ServerError) as caught:
        parse_task({"status": "queued", "deep": deep, "text": "x" * 10_000})
    assert len(str(caught.value)) < 300 and "\n" not in str(caught.value)


def test_an_answer_nested_past_the_recursion_limit_is_a_server_error_in_one_line() -> None:
    deep = b"[" * 100_000 + b"]" * 100_000
    with pytest.raises(ServerError, match=r"^HTTP 200: response is JSON nested deeper than pixmake reads$"):
        _against(lambda m, p: _raw("200 OK", deep), lambda p, u: p.poll("t"))
    with pytest.raises(AuthError, match=r"^HTTP 401: API key refused: \[\[\[\[+$"):  # refused all the same
        _against(lambda m, p: _raw("401 Unauthorized", deep), lambda p, u: p.poll("t"))
    refused = b'{"error": {"message": ' + b"[" * 100_000 + b"]" * 100_000 + b"}}"
    with pytest.raises(ServerError, match=r"^HTTP 500: \{\"error\": \{\"message\": \[\[\[+$"):
        _against(lambda m, p: _raw("500 Internal Server Error", refused), lambda p, u: p.poll("t"))


def test_a_number_past_a_float_in_an_answer_is_no_traceback() -> None:
    body = b'{"id": "t", "status": "completed", "url": "u", "completed_at": 1' + b"0" * 400 + b', "progress": 1e999}'
    task = _against(lambda m, p: _raw("200 OK", body), lambda p, u: p.poll("t"))
    assert task.state is TaskState.COMPLETED and task.expires_at is None and task.progress == 0


async def _with(provider: ToapisProvider, fn: Any) -> Any:
    try:
        return await fn(provider)
    finally:
        await provider.aclose()


def _run(settings: Settings, fn: Any) -> Any:
    return anyio.run(_with, ToapisProvider(settings), fn)


def test_submit_poll_find_download_against_the_emulator(emulator: EmulatorServer) -> None:
    async def flow(p: ToapisProvider) -> tuple[Any, ...]:
        submitted = await p.submit(REQUEST)
        found = await p.find("pixmake-k-1")
        missing = await p.find("pixmake-nobody")
        await anyio.sleep(0.05)
        done = await p.poll(submitted.task_id)
        return submitted, found, missing, done, await p.download(done.urls[0])

    submitted, found, missing, done, image = _run(_settings(emulator.url), flow)
    assert found.task_id == submitted.task_id and missing is None
    assert done.state is TaskState.COMPLETED and len(done.urls) == 2
    assert image.startswith(b"\x89PNG")
    sent = emulator.emulator.submits()[0].json
    assert isinstance(sent, dict) and sent["client_business_id"] == "pixmake-k-1" and sent["n"] == 2


@pytest.mark.parametrize("status", [403, 410])
def test_an_expired_result_link_is_refused_for_the_link_never_for_the_key(
    emulator: EmulatorServer, status: ExpiredResult
) -> None:
    emulator.emulator.reset(
        EmulatorConfig(latency=0.0, submit_rps=None, query_rps=None, result_ttl=0.0, expired_result_status=status)
    )

    async def flow(p: ToapisProvider) -> bytes:
        done = await p.poll((await p.submit(REQUEST)).task_id)
        assert done.expires_at is not None and done.expires_at <= time.time()
        return await p.download(done.urls[0])

    with pytest.raises(RequestRejectedError) as caught:
        _run(_settings(emulator.url), flow)
    assert caught.value.status == status and not isinstance(caught.value, AuthError)


@pytest.mark.parametrize("model", sorted(CLIENT_MODELS))
def test_every_request_the_client_allows_for_a_model_the_emulator_accepts(emulator: EmulatorServer, model: str) -> None:
    """The client's capability table and the emulator's agree: each n and size pixmake lets through, with
    a reference in the form that model takes (strings, or Gemini's [{"url": ...}]), is a valid submit."""
    spec = CLIENT_MODELS[model]
    first_size, low_n = spec.sizes[0], min(spec.n_allowed)
    requests = [(n, first_size) for n in sorted(spec.n_allowed)] + [(low_n, size) for size in spec.sizes]

    async def flow(p: ToapisProvider) -> None:
        for i, (n, size) in enumerate(requests):
            refs = ("https://example.com/ref.png",) if spec.max_images is None or n < spec.max_images else ()
            request = GenerationRequest(model, "a mug", size, n, f"pixmake-{model}-{i}", image_urls=refs)
            await p.submit(request)

    _run(_settings(emulator.url), flow)
    sent = [r.json for r in emulator.emulator.submits() if isinstance(r.json, dict)]
    assert len(sent) == len(requests) and all(r.status == 200 for r in emulator.emulator.submits())
    if spec.reference_objects:
        assert sent[0]["image_urls"] == [{"url": "https://example.com/ref.png"}]


@pytest.mark.parametrize(
    ("knobs", "error"),
    [
        ({"p_429": 1.0}, RateLimitedError),
        ({"p_503_unavailable": 1.0}, RateLimitedError),
        ({"p_500": 1.0}, ServerError),
        ({"p_504_html": 1.0}, ServerError),
        ({"p_drop_after_submit": 1.0}, NetworkError),
        ({"api_key": "sk-else"}, AuthError),
        ({"quota_images": 1}, QuotaError),
    ],
)
def test_submit_errors_are_translated(emulator: EmulatorServer, knobs: dict[str, Any], error: type[Exception]) -> None:
    emulator.emulator.reset(EmulatorConfig(latency=0.02, submit_rps=None, query_rps=None, **knobs))
    with pytest.raises(error) as caught:
        _run(_settings(emulator.url), lambda p: p.submit(REQUEST))
    if isinstance(caught.value, NetworkError):
        assert caught.value.sent  # the request left: the outcome is unknown
    if knobs == {"p_504_html": 1.0}:
        assert "HTML error page" in str(caught.value)
    assert TEST_KEY not in str(caught.value)


def test_a_connection_refused_was_never_sent(closed_port: int) -> None:
    with pytest.raises(NetworkError) as caught:
        _run(_settings(f"http://127.0.0.1:{closed_port}"), lambda p: p.submit(REQUEST))
    assert caught.value.sent is False


def test_tls_failures_say_why_and_were_never_sent(emulator: EmulatorServer, tmp_path: Path) -> None:
    """An untrusted certificate and a server that does not speak TLS: no request left, and the reason is short."""
    import trustme

    issued = trustme.CA().issue_cert("127.0.0.1")
    chain, key = tmp_path / "chain.pem", tmp_path / "key.pem"
    for blob in issued.cert_chain_pems:
        blob.write_to_path(str(chain), append=True)
    issued.private_key_pem.write_to_path(str(key))
    with EmulatorServer(tls=(str(chain), str(key))) as untrusted:
        with pytest.raises(NetworkError) as refused:
            _run(_settings(untrusted.url), lambda p: p.submit(REQUEST))
        assert untrusted.emulator.requests == []
    assert refused.value.sent is False
    assert refused.value.reason == "TLS certificate not trusted: unable to get local issuer certificate"
    with pytest.raises(NetworkError) as plain:
        _run(_settings(emulator.url.replace("http://", "https://")), lambda p: p.submit(REQUEST))
    assert plain.value.sent is False
    assert plain.value.reason is not None and plain.value.reason.startswith("TLS error: "), plain.value.reason
    assert emulator.emulator.submits() == []


@contextlib.asynccontextmanager
async def _canned(
    answer: Callable[[str, str], bytes | list[bytes]], seen: list[bytes] | None = None, *, pause: float = 0.0
) -> AsyncIterator[str]:
    """A raw HTTP server on 127.0.0.1 that answers each request with ``answer(method, path)`` verbatim.

    For answers the emulator never gives: a body cut short of its Content-Length, a garbled gzip body,
    an upload refused with a 200. Its URL is yielded; every answer closes the connection. Each request's
    bytes are appended to ``seen``. An answer given as a list is written piece by piece, ``pause`` seconds
    apart (a server that trickles).
    """

    handlers: set[asyncio.Task[None]] = set()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        handlers.add(task)
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            method, path = head.decode("latin-1").split(" ", 2)[:2]
            length = re.search(r"(?i)content-length: *(\d+)", head.decode("latin-1"))
            body = await reader.readexactly(int(length.group(1)) if length else 0)
            if seen is not None:
                seen.append(head + body)
            given = answer(method, path)
            for index, piece in enumerate([given] if isinstance(given, bytes) else given):
                if index:
                    await asyncio.sleep(pause)
                if reader.at_eof():  # the client gave up
                    break
                writer.write(piece)
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):  # a cancelled handler is logged
            pass
        finally:
            writer.close()
            handlers.discard(task)

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    async with server:
        try:
            yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
        finally:
            for task in list(handlers):  # still trickling to a client that gave up
                task.cancel()
            await asyncio.gather(*handlers, return_exceptions=True)


def _raw(status: str, body: bytes, **headers: str) -> bytes:
    fields = {"Content-Length": str(len(body)), "Connection": "close"} | {
        k.replace("_", "-"): v for k, v in headers.items()
    }
    head = "".join(f"{k}: {v}\r\n" for k, v in fields.items())
    return f"HTTP/1.1 {status}\r\n{head}\r\n".encode() + body


def _against(
    answer: Callable[[str, str], bytes | list[bytes]],
    call: Callable[[ToapisProvider, str], Any],
    *,
    pause: float = 0.0,
    request_timeout: float = 5.0,
    key: str = TEST_KEY,
) -> Any:
    async def flow() -> Any:
        async with _canned(answer, pause=pause) as url:
            settings = dataclasses.replace(_settings(url, key), request_timeout=request_timeout)
            return await _with(ToapisProvider(settings), lambda p: call(p, url))

    return anyio.run(flow)


def _jpeg() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (8, 8), "red").save(out, "JPEG")
    return out.getvalue()


@pytest.mark.parametrize(
    ("name", "data", "sent_name", "sent_type"),
    [
        ("logo.png", _jpeg(), "logo.jpg", "image/jpeg"),
        ("brand", _PNG, "brand.png", "image/png"),
        ("photo.jpeg", _jpeg(), "photo.jpeg", "image/jpeg"),
        ("notes.txt", b"plain words", "notes.txt", "text/plain"),
    ],
    ids=["jpeg-named-png", "no-extension", "as-named", "not-an-image"],
)
def test_an_upload_declares_the_type_its_bytes_have(name: str, data: bytes, sent_name: str, sent_type: str) -> None:
    """A JPEG named ``.png`` (or a reference without an extension) is sent as what it is."""
    seen: list[bytes] = []
    hosted = b'{"success": true, "message": "", "data": {"url": "https://files.example/u.png"}}'

    async def flow() -> str:
        async with _canned(lambda m, p: _raw("200 OK", hosted, Content_Type="application/json"), seen) as url:
            result: str = await _with(ToapisProvider(_settings(url)), lambda p: p.upload(data, filename=name))
            return result

    assert anyio.run(flow) == "https://files.example/u.png"
    [request] = seen
    boundary = re.search(rb'boundary="?([^";\r\n]+)', request)
    assert boundary is not None
    [part] = [p for p in request.split(b"--" + boundary.group(1)) if b'name="file"' in p]
    headers = part.split(b"\r\n\r\n", 1)[0].decode().lower()
    assert f'filename="{sent_name}"' in headers and f"content-type: {sent_type}" in headers


@pytest.mark.parametrize(
    ("body", "url"),
    [
        (b'{"success": true, "url": "https://files.example/top.png"}', "https://files.example/top.png"),
        (b'{"success": true, "data": "https://files.example/u.png"}', None),
        (b'{"success": true, "data": [{"url": "https://files.example/u.png"}]}', None),
        (b'{"success": true, "data": null}', None),
    ],
    ids=["top-level-url", "data-a-string", "data-a-list", "data-null"],
)
def test_an_upload_answer_of_another_shape_is_a_url_or_a_server_error(body: bytes, url: str | None) -> None:
    """§7 q10: the upload answer's forms are not settled; none is a traceback (providers raise ProviderError)."""

    def upload(p: ToapisProvider, u: str) -> Any:
        return p.upload(_PNG, filename="brand.png")

    answer = lambda m, p: _raw("200 OK", body, Content_Type="application/json")  # noqa: E731
    if url is not None:
        assert _against(answer, upload) == url
        return
    with pytest.raises(ServerError, match="upload answered without a URL"):
        _against(answer, upload)


def test_retry_after_as_an_http_date_is_read() -> None:
    when = email.utils.formatdate(time.time() + 30, usegmt=True)
    body = b'{"error": {"code": "rate_limit_exceeded"}}'
    with pytest.raises(RateLimitedError) as caught:
        _against(lambda m, p: _raw("429 Too Many Requests", body, Retry_After=when), lambda p, u: p.poll("t"))
    assert caught.value.retry_after is not None and 25 <= caught.value.retry_after <= 31


def test_malformed_bodies_the_emulator_never_sends_are_translated() -> None:
    def answer(method: str, path: str) -> bytes:
        if path.startswith("/gzip") or path == "/v1/images/generations":
            return _raw("200 OK", b"not gzip", Content_Encoding="gzip")
        if path == "/v1/uploads/images":
            return _raw("200 OK", b'{"success": false, "message": "Unsupported image type"}')
        return _raw("200 OK", b"\x89PNG half", Content_Length="4096")  # then the connection closes

    with pytest.raises(RequestRejectedError, match="Unsupported image type"):  # an upload refusal keeps its message
        _against(answer, lambda p, u: p.upload(b"text", filename="a.png"))
    calls = [lambda p, u: p.download(f"{u}/a.png"), lambda p, u: p.download(f"{u}/gzip/a.png"),
             lambda p, u: p.submit(REQUEST)]  # fmt: skip
    for call in calls:
        with pytest.raises(NetworkError) as caught:  # a body cut short or undecodable may have arrived
            _against(answer, call)
        assert caught.value.sent is True


@pytest.mark.parametrize(
    ("status", "shape", "error"),
    [
        ("401 Unauthorized", '{{"error": {{"message": "bad key; you sent {echo}"}}}}', AuthError),
        ("401 Unauthorized", "you sent {echo}", AuthError),
        ("400 Bad Request", '{{"error": {{"code": "invalid_request", "message": "{echo}"}}}}', RequestRejectedError),
        ("502 Bad Gateway", "upstream said {echo}", ServerError),
        ("429 Too Many Requests", '{{"message": "slow down, {echo}"}}', RateLimitedError),
        ("200 OK", "not json {echo}", ServerError),
        ("200 OK", '{{"echo": "{echo}"}}', ServerError),
    ],
)
def test_an_answer_that_repeats_the_key_never_puts_it_in_a_message(status: str, shape: str, error: type) -> None:
    """A gateway that quotes the request's Authorization header back, with a line end and escape codes."""
    raw = f"Bearer {TEST_KEY}\n\x1b]0;title\x07 line two"
    echo = json.dumps(raw)[1:-1] if shape.startswith("{") else raw

    def answer(method: str, path: str) -> bytes:
        return _raw(status, shape.format(echo=echo).encode())

    with pytest.raises(error) as caught:
        _against(answer, lambda p, u: p.poll("t"))
    message = str(caught.value)
    assert TEST_KEY not in message and "sk-(redacted)" in message
    assert not any(c in message for c in "\n\x1b\x07"), message


def test_a_failed_tasks_message_is_one_line_without_the_key() -> None:
    failed = {"id": "t", "status": "failed", "error": {"code": "bad\nthing", "message": f"{TEST_KEY}\r\nnext\x1b[31m"}}
    status = _against(lambda m, p: _raw("200 OK", json.dumps(failed).encode()), lambda p, u: p.poll("t"))
    assert (status.error_code, status.error_message) == ("bad thing", "sk-(redacted) next [31m")


_KEY = "sk-live/SECRET+abc"
ESCAPED_KEYS = {  # how a server may echo _KEY
    "php": r"sk-live\/SECRET+abc",  # PHP's json_encode escapes every slash by default
    "unicode": "".join(f"\\u{ord(c):04x}" for c in _KEY),
    "unicode-upper-mixed": r"sk-live\u002FSECRET\u002Babc",
    "backslashes": "".join(f"\\{c}" for c in _KEY),  # not JSON: shown as it is, unless scrubbed
    "percent": "sk-live%2FSECRET%2babc",
    "html": "sk-live&#47;SECRET&#x2B;abc",
}


@pytest.mark.parametrize("style", sorted(ESCAPED_KEYS))
@pytest.mark.parametrize(
    ("status", "shape", "error"),
    [
        ("401 Unauthorized", '{{"error": {{"message": "Invalid token {echo}"}}}}', AuthError),
        ("502 Bad Gateway", "upstream said: Invalid token {echo}", ServerError),
        (
            "200 OK",
            '{{"id": "t", "status": "failed", "error": {{"code": "{echo}", "message": "bad token {echo}"}}}}',
            None,
        ),
    ],
    ids=["refused", "not-json", "failed-task"],
)
def test_a_key_echoed_escaped_is_taken_out_too(style: str, status: str, shape: str, error: type | None) -> None:
    """The security review's case: a 401 echoing the key with PHP's `\\/` printed it in the one-line error."""
    body = shape.format(echo=ESCAPED_KEYS[style]).encode()
    if error is None:
        task = _against(lambda m, p: _raw(status, body), lambda p, u: p.poll("t"), key=_KEY)
        message = f"{task.error_code}: {task.error_message}"
        assert message == "sk-(redacted): bad token sk-(redacted)"
    else:
        with pytest.raises(error) as caught:
            _against(lambda m, p: _raw(status, body), lambda p, u: p.poll("t"), key=_KEY)
        message = str(caught.value)
        assert message.endswith("Invalid token sk-(redacted)"), message
    assert "SECRET" not in message


# --- server strings in output -------------------------------------------------------------------------

FAKE_LINE_ID = "t\u001b[8mHIDDEN\n[ 0.0s] done a "  # the review's: it printed a progress line of its own


@pytest.mark.parametrize("task_id", [FAKE_LINE_ID, "", "t 1", "t\u202e1", "tâche", "t" * 201], ids=repr)
def test_a_task_id_that_is_not_one_printable_word_is_refused(task_id: str) -> None:
    """An id is printed and sent back in a URL as it is: never folded (a poll would name another task)."""
    with pytest.raises(ServerError, match=r"^malformed task id '[^']*' \(not 1 to 200 printable ASCII") as caught:
        parse_task({"id": task_id, "status": "queued"})
    assert str(caught.value).isprintable()


@pytest.mark.parametrize(
    "task_id", ["task_01JABCDEFGHJKMNPQRSTVWXYZ", "3f1c9a2e-8b7d-4c6e-9f0a-1b2c3d4e5f60", "t" * 200]
)
def test_task_ids_as_servers_make_them_are_taken(task_id: str) -> None:
    assert parse_task({"id": task_id}).task_id == task_id


def test_every_server_string_a_status_carries_is_one_printable_line() -> None:
    """Line ends of every kind, terminal escapes, a bidi override (which reorders what follows it on screen)."""
    text = "one\r\ntwo\u2028three\x85four\x1b[2Jfive\u202esix\u200bseven\ufeff\u00a0eight"
    task = parse_task({"id": "t", "status": text, "error": {"code": text, "message": text}})
    folded = "one two three four [2Jfive six seven eight"
    assert (task.status, task.error_code, task.error_message) == (folded.lower(), folded, folded)


def test_a_transport_errors_text_is_one_line_and_so_is_a_servers_url(closed_port: int) -> None:
    """aiohttp quotes what it refused over several lines; a result URL is the server's to choose."""
    twice = _raw("200 OK", _PNG, Content_Length=str(len(_PNG))).replace(
        b"\r\n\r\n", b"\r\nContent-Length: 9\r\n\r\n", 1
    )
    with pytest.raises(NetworkError) as garbled:
        _against(lambda m, p: twice, lambda p, u: p.download(f"{u}/a.png"))
    assert "Duplicate Content-Length" in str(garbled.value) and str(garbled.value).isprintable(), garbled.value
    with pytest.raises(NetworkError) as refused:
        _run(
            _settings("http://127.0.0.1:1"),
            lambda p: p.download(f"http://127.0.0.1:{closed_port}/a\n[ 0.0s] done\x1b.png"),
        )
    assert str(refused.value) == f"download http://127.0.0.1:{closed_port}/a [ 0.0s] done .png: connection refused"


# --- answers that can never be right ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("file:///etc/passwd", "file:///etc/passwd"),
        ("data:image/png;base64,iVBORw0KGgo=", "data:image/png;base64,iVBORw0KGgo="),
        ("ftp://user:pw@files.example/a.png", "ftp://files.example/a.png"),
        ("http://", "http://"),
    ],
)
def test_a_result_url_that_is_not_http_is_a_bad_result_at_once(url: str, shown: str, closed_port: int) -> None:
    """Not a network error retried eight times (74 s), on every build: it would be as bad again."""
    with pytest.raises(BadResultError) as caught:
        _run(_settings(f"http://127.0.0.1:{closed_port}"), lambda p: p.download(url))
    assert str(caught.value) == f"result URL {shown} is not http(s): pixmake does not fetch it"


def test_a_result_redirected_to_a_url_that_is_not_http_is_a_bad_result() -> None:
    moved = _raw("302 Found", b"", Location="file:///etc/passwd")
    with pytest.raises(
        BadResultError, match=r"^result URL http://\S+/a\.png redirected to a URL that is not http\(s\)"
    ):
        _against(lambda m, p: moved, lambda p, u: p.download(f"{u}/a.png"))
    nowhere = _raw("302 Found", b"302: Found")  # no Location: not followed, and not the API's redirect
    with pytest.raises(
        RequestRejectedError, match=r"^HTTP 302: result URL http://\S+/a\.png redirected to no address$"
    ):
        _against(lambda m, p: nowhere, lambda p, u: p.download(f"{u}/a.png"))


@pytest.mark.parametrize(
    ("location", "shown"),
    [
        ("https://user:secret@api.example:8443/v1/images/generations?token=abc", "https://api.example:8443"),
        ("https://toapis.com/v1/images/generations", "https://toapis.com"),
        ("/elsewhere", "http://127.0.0.1:<port>"),
        (None, "no address"),
    ],
)
def test_an_api_redirect_says_so_and_where_without_credentials(location: str | None, shown: str) -> None:
    """It read "HTTP 302: 302: Found". The key is never sent after a redirect (it could lead anywhere)."""
    seen: list[bytes] = []
    moved = _raw("302 Found", b"302: Found", **({"Location": location} if location else {}))

    async def flow() -> Any:
        async with _canned(lambda m, p: moved, seen) as url:
            with pytest.raises(RequestRejectedError) as caught:
                await _with(ToapisProvider(_settings(url)), lambda p: p.submit(REQUEST))
            return str(caught.value).replace(url.rsplit(":", 1)[1], "<port>")

    assert anyio.run(flow) == (
        f"HTTP 302: the API redirected to {shown}, and pixmake does not follow redirects with the API key: "
        "if that is your provider's (over https), set PIXMAKE_BASE_URL to it"
    )
    assert len(seen) == 1


def test_the_key_goes_only_to_the_api_host(emulator: EmulatorServer) -> None:
    with EmulatorServer() as cdn:  # another host, holding a file pixmake is told to fetch
        uploaded = httpx.post(f"{cdn.url}/v1/uploads/images", files={"file": ("a.png", _PNG)}, headers=_OTHER_KEY)
        foreign_url = uploaded.json()["data"]["url"]

        async def flow(p: ToapisProvider) -> tuple[bytes, bytes]:
            submitted = await p.submit(REQUEST)
            await anyio.sleep(0.05)
            done = await p.poll(submitted.task_id)
            return await p.download(done.urls[0]), await p.download(foreign_url)

        own, foreign = _run(_settings(emulator.url), flow)
        [fetched] = [r for r in cdn.emulator.requests if r.method == "GET"]
    assert own.startswith(b"\x89PNG") and foreign == _PNG
    api_calls = [r for r in emulator.emulator.requests if r.path.startswith("/v1/")]
    downloads = [r for r in emulator.emulator.requests if r.path.startswith("/files/")]
    assert len(api_calls) == 2 and all(r.headers["authorization"] == "Bearer sk-…redacted" for r in api_calls)
    assert len(downloads) == 1 and "authorization" not in downloads[0].headers  # not even from the API host
    assert "authorization" not in fetched.headers
    assert {r.headers["accept"] for r in api_calls} == {"application/json"}
    assert {r.headers["accept"] for r in (*downloads, fetched)} == {"image/*"}  # a file host is asked for images


# --- hostile servers: sizes and deadlines --------------------------------------------------------------


def _trickle(head: bytes, count: int) -> list[bytes]:
    """An answer's head, then its body one byte at a time."""
    return [head, *[b"x"] * count]


def test_a_result_that_trickles_fails_once_it_averages_under_1_kb_per_second() -> None:
    """A byte every 0.1 s never lets the 0.3 s read timeout fire: after that first timeout's worth of
    time, the transfer must average 1 KB/s. A slow link does; a trickling server does not."""
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\nConnection: close\r\n\r\n"
    started = time.monotonic()
    with pytest.raises(NetworkError) as caught:
        _against(
            lambda m, p: _trickle(head, 1000), lambda p, u: p.download(f"{u}/a.png"), pause=0.1, request_timeout=0.3
        )
    assert 0.3 < time.monotonic() - started < 3
    assert caught.value.sent is True  # retryable
    assert str(caught.value).endswith(": slower than 1 KB/s"), caught.value


def test_a_slow_result_that_keeps_its_pace_is_received_whole() -> None:
    """No overall deadline: 24 KB at about 8 KB/s takes six request timeouts, and arrives."""
    body = _PNG + b"\0" * (24_000 - len(_PNG))
    head = f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
    pieces = [head, *(body[i : i + 800] for i in range(0, len(body), 800))]
    started = time.monotonic()
    got = _against(lambda m, p: pieces, lambda p, u: p.download(f"{u}/a.png"), pause=0.1, request_timeout=0.5)
    assert got == body and time.monotonic() - started > 2.5


def test_an_upload_whose_answer_trickles_fails_at_its_deadline() -> None:
    """An upload's deadline is the request timeout plus its bytes at 1 KB/s."""
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\nConnection: close\r\n\r\n"
    started = time.monotonic()
    with pytest.raises(NetworkError) as caught:
        _against(lambda m, p: _trickle(head, 1000), lambda p, u: p.upload(_PNG, filename="a.png"), pause=0.1,
                 request_timeout=0.3)  # fmt: skip
    deadline = 0.3 + len(_PNG) / 1024
    assert deadline - 0.1 < time.monotonic() - started < deadline + 2
    assert str(caught.value).endswith(f": no complete answer within {deadline:g} s"), caught.value
    assert "\n" not in str(caught.value)


def test_an_api_answer_that_trickles_fails_at_the_request_timeout() -> None:
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\nConnection: close\r\n\r\n"
    with pytest.raises(
        NetworkError, match=r"poll http://127\.0\.0\.1:\d+/v1/images/generations/t: no complete answer within 0\.5 s"
    ):
        _against(lambda m, p: _trickle(head, 1000), lambda p, u: p.poll("t"), pause=0.1, request_timeout=0.5)


def _gzip_bomb(size: int) -> bytes:
    """A gzip body of ``size`` zero bytes: about a thousandth of that on the wire."""
    return gzip.compress(b"\0" * size, compresslevel=1)


_TOO_LARGE: dict[str, Callable[[], bytes | list[bytes]]] = {
    "content-length": lambda: _raw("200 OK", b"\x89PNG", Content_Length=str(2 << 30)),  # refused before a byte is read
    "gzip": lambda: _raw("200 OK", _gzip_bomb(65 << 20), Content_Encoding="gzip"),
    "until-closed": lambda: [b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n", *[b"\0" * (1 << 20)] * 65],
}


@pytest.mark.parametrize("shape", sorted(_TOO_LARGE))
def test_a_result_larger_than_any_image_is_a_bad_result_not_read_into_memory(shape: str) -> None:
    answer = _TOO_LARGE[shape]()
    with pytest.raises(
        BadResultError, match=r"^HTTP 200: download http://\S+/a\.png: more than 64 MB, larger than any image$"
    ):
        _against(lambda m, p: answer, lambda p, u: p.download(f"{u}/a.png"))


def test_an_api_answer_larger_than_any_is_a_server_error() -> None:
    body = b'{"id": "t", "status": "queued", "padding": "' + b"x" * (9 << 20) + b'"}'
    with pytest.raises(ServerError, match=r"poll \S+: more than 8 MB, larger than any API answer$"):
        _against(lambda m, p: _raw("200 OK", body), lambda p, u: p.poll("t"))
    bomb = _raw("200 OK", _gzip_bomb(9 << 20), Content_Encoding="gzip")
    with pytest.raises(ServerError, match="larger than any API answer"):
        _against(lambda m, p: bomb, lambda p, u: p.submit(REQUEST))


def test_of_a_long_error_answer_only_its_start_is_read() -> None:
    body = b'{"error": {"message": "upstream down"}, "trace": "' + b"x" * (1 << 20) + b'"}'  # cut short: not JSON
    with pytest.raises(ServerError, match=r'^HTTP 502: \{"error": \{"message": "upstream down"\}, "trace": "x+$'):
        _against(lambda m, p: _raw("502 Bad Gateway", body), lambda p, u: p.poll("t"))


@pytest.mark.parametrize(
    ("date_offset", "later"),
    [
        (-25 * 3600.0, 25 * 3600.0),  # this clock a day fast: the link lives a day longer by it
        (3600.0, 0.0),  # this clock slow: the provider's expiry comes later on it already
        (None, 0.0),  # no Date
        (-30 * 86_400.0, 0.0),  # a Date a month off: a broken clock, not a skew
        (80 * 365 * 86_400.0, 0.0),  # 2099
    ],
)
def test_a_result_links_end_is_the_later_of_both_clocks(date_offset: float | None, later: float) -> None:
    """Dropping a paid task as gone for good waits until its link has expired by this clock and the provider's."""
    from email.utils import formatdate

    from pixmake.providers.toapis import _Answer, _on_our_clock

    now = time.time()
    status = parse_task({"id": "t", "status": "completed", "url": "u", "expires_at": now + 60})
    headers = {} if date_offset is None else {"Date": formatdate(now + date_offset, usegmt=True)}
    moved = _on_our_clock(status, _Answer(200, headers, b"", "u"))
    assert moved.expires_at is not None and moved.expires_at - (now + 60) == pytest.approx(later, abs=2.0)
    garbled = _on_our_clock(status, _Answer(200, {"Date": "yesterday-ish"}, b"", "u"))
    assert garbled.expires_at == status.expires_at


def test_an_aiohttp_errors_text_never_reaches_a_reason() -> None:
    """Its text may quote a URL with a signed link's token, or a server's bytes: the reason names its kind."""
    import aiohttp

    from pixmake.providers.toapis import _reason

    assert _reason(aiohttp.NonHttpUrlRedirectClientError("ftp://cdn/x.png?sig=SIGNEDSECRET")) == (
        "redirected to an invalid or non-HTTP URL"
    )
    assert _reason(aiohttp.InvalidURL("http://h/x?sig=SIGNEDSECRET")) == "invalid URL"
    assert _reason(aiohttp.ClientError("http://h/x?sig=SIGNEDSECRET")) == "ClientError"
