"""The ToAPIs provider: task bodies in every documented dialect, and errors translated at the boundary.

Most of it runs against the session emulator over HTTP; malformed answers the emulator never gives are
written as an ``httpx.MockTransport`` function, in two tests (the style guide allows a provider test or two).
"""

from __future__ import annotations

import email.utils
import time
from typing import Any

import anyio
import httpx
import pytest

from conftest import TEST_KEY, png_bytes
from pixmake.emulator import EmulatorConfig, EmulatorServer
from pixmake.errors import (
    AuthError,
    BadResultError,
    NetworkError,
    QuotaError,
    RateLimitedError,
    RequestRejectedError,
    ServerError,
)
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


def test_parse_task_refuses_what_is_not_a_task() -> None:
    with pytest.raises(ServerError):
        parse_task({"status": "queued"})


async def _with(provider: ToapisProvider, fn: Any) -> Any:
    try:
        return await fn(provider)
    finally:
        await provider.aclose()


def _run(settings: Settings, fn: Any, transport: httpx.AsyncBaseTransport | None = None) -> Any:
    return anyio.run(_with, ToapisProvider(settings, transport=transport), fn)


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


def test_retry_after_as_an_http_date_is_read() -> None:
    when = email.utils.formatdate(time.time() + 30, usegmt=True)

    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(429, json={"error": {"code": "rate_limit_exceeded"}}, headers={"Retry-After": when})

    with pytest.raises(RateLimitedError) as caught:
        _run(_settings("https://api.test"), lambda p: p.poll("t"), httpx.MockTransport(answer))
    assert caught.value.retry_after is not None and 25 <= caught.value.retry_after <= 31


def test_malformed_bodies_the_emulator_never_sends_are_translated() -> None:
    # Over real HTTP, h11 itself refuses a body shorter than its Content-Length, and the emulator neither
    # garbles an encoding nor refuses an upload with a 200: these answers are easier written as a function.
    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.host == "gzip.test" or request.url.path == "/v1/images/generations":
            return httpx.Response(200, content=b"not gzip", headers={"Content-Encoding": "gzip"})
        if request.url.path == "/v1/uploads/images":
            return httpx.Response(200, json={"success": False, "message": "Unsupported image type"})
        return httpx.Response(200, content=b"\x89PNG half", headers={"Content-Length": "4096"})

    settings = _settings("https://api.test")
    with pytest.raises(BadResultError, match="download truncated"):  # a short body
        _run(settings, lambda p: p.download("https://files.test/a.png"), httpx.MockTransport(answer))
    with pytest.raises(RequestRejectedError, match="Unsupported image type"):  # an upload refusal keeps its message
        _run(settings, lambda p: p.upload(b"text", filename="a.png"), httpx.MockTransport(answer))
    for call in (lambda p: p.download("https://gzip.test/a.png"), lambda p: p.submit(REQUEST)):
        with pytest.raises(NetworkError) as caught:  # a body that does not decode may have arrived
            _run(settings, call, httpx.MockTransport(answer))
        assert caught.value.sent is True


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
