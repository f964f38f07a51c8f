"""Builds against a hostile API: whatever it answers fails at most the target it is about, in one line.

The server is the provider tests' canned one, in a thread of its own: a submit gets the task id ``t-``
and the target's prompt; a status and a result file are what the test chose for that task. A failed
target's paid task stays journaled unless its result can never be collected.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import queue
import threading
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from conftest import png_bytes, png_of_size, run_cli
from pixmake import api
from pixmake.execute import BuildResult, RetryScheduled, TargetFailed
from pixmake.lockfile import parse_lock
from pixmake.plan import ActionKind
from pixmake.report import RecordingReporter
from pixmake.store import sha256_bytes
from test_execute_faults import settings_for, write_manifest
from test_providers import ESCAPED_KEYS, FAKE_LINE_ID, _canned, _raw

_PNG = png_bytes((16, 16))
Answer = bytes | list[bytes]
Status = Callable[[str], Answer]  # the server's URL → a status answer


@contextlib.contextmanager
def hostile_api(
    statuses: Mapping[str, Status], files: Mapping[str, Answer] | None = None, *, submit: Answer | None = None
) -> Iterator[str]:
    """A ToAPIs look-alike on 127.0.0.1, serving until the block ends; yields its URL.

    A submit of prompt P is task ``t-P``; its status is ``statuses[P](url)`` (a prompt not listed completes
    with ``/files/P.png``); ``/files/NAME`` answers ``files[NAME]`` (a PNG when not listed). ``submit``, when
    given, answers every submit and every lookup by a client_business_id instead.
    """
    seen: list[bytes] = []
    where: list[str] = []

    def answer(method: str, path: str) -> Answer:
        if submit is not None and path.startswith("/v1/images/generations") and "/t-" not in path:
            return submit
        if method == "POST" and path == "/v1/images/generations":
            prompt = json.loads(seen[-1].split(b"\r\n\r\n", 1)[1])["prompt"]
            return _raw("200 OK", json.dumps({"id": f"t-{prompt}", "status": "queued"}).encode())
        if path.startswith("/v1/images/generations/t-"):
            prompt = path.rsplit("/t-", 1)[1]
            if prompt in statuses:
                return statuses[prompt](where[0])
            done = {"id": f"t-{prompt}", "status": "completed", "url": f"{where[0]}/files/{prompt}.png"}
            return _raw("200 OK", json.dumps(done).encode())
        if path.startswith("/files/"):
            return (files or {}).get(path.removeprefix("/files/"), _raw("200 OK", _PNG))
        return _raw("404 Not Found", b'{"error": {"message": "no such thing"}}')

    started: queue.Queue[tuple[str, asyncio.AbstractEventLoop, asyncio.Event]] = queue.Queue()

    async def serve() -> None:
        stop = asyncio.Event()
        async with _canned(answer, seen) as url:
            started.put((url, asyncio.get_running_loop(), stop))
            await stop.wait()

    thread = threading.Thread(target=asyncio.run, args=(serve(),))
    thread.start()
    url, loop, stop = started.get(timeout=10)
    where.append(url)
    try:
        yield url
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(10)


def completed(prompt: str, **fields: Any) -> Status:
    """A status: task ``t-prompt`` completed with its file, plus ``fields`` (``None`` leaves a field out)."""

    def status(url: str) -> Answer:
        body = {"id": f"t-{prompt}", "status": "completed", "url": f"{url}/files/{prompt}.png"} | fields
        return _raw("200 OK", json.dumps({k: v for k, v in body.items() if v is not None}).encode())

    return status


def build(root: Path, url: str, **changes: Any) -> tuple[BuildResult, RecordingReporter]:
    project = api.open_project(root)
    reporter = RecordingReporter()
    settings = settings_for(project, url, **({"max_attempts": 2} | changes))
    return api.build(project, settings, reporter=reporter), reporter


def two_targets(root: Path) -> Path:
    """Target ``bad`` (prompt "bad") and target ``good`` (prompt "good"), one image each."""
    return write_manifest(
        root, {name: {"prompt": name, "out": f"out/{name}.png"} for name in ("bad", "good")}, concurrency=2
    )


def failed_alone(root: Path, result: BuildResult, reporter: RecordingReporter) -> str:
    """The one-line error of target ``bad``, after checking the rest of the build went on."""
    assert result.fatal is None and result.generated == ("good",), result
    [failure] = result.failed
    [event] = [e for e in reporter.events if isinstance(e, TargetFailed)]
    assert failure.target == event.target == "bad" and failure.error == event.error
    assert "\n" not in failure.error and failure.error.isprintable(), failure.error
    assert (root / "out" / "good.png").read_bytes() == _PNG
    assert not (root / "out" / "bad.png").exists()
    return failure.error


def journaled(root: Path) -> dict[str, str | None]:
    """Target → task id of the paid tasks the journal still holds."""
    _, pending = api.load_lock(api.open_project(root))
    return {name: p.task_id for name, p in pending.items()}


# --- hostile JSON -----------------------------------------------------------------------------------------


def test_a_completion_time_no_float_holds_is_ignored(tmp_path: Path) -> None:
    """``completed_at`` only dates the result's expiry: 1 and 400 zeros (an OverflowError in float()) is no time."""
    root = two_targets(tmp_path / "p")
    with hostile_api({"bad": completed("bad", completed_at=10**400, progress=10**400)}) as url:
        result, _ = build(root, url)
    assert result.ok and sorted(result.generated) == ["bad", "good"]


def test_a_status_nested_past_the_recursion_limit_fails_its_target_and_keeps_its_task(tmp_path: Path) -> None:
    deep = b"[" * 100_000 + b"]" * 100_000
    root = two_targets(tmp_path / "p")
    with hostile_api({"bad": lambda url: _raw("200 OK", deep)}) as url:
        result, reporter = build(root, url)
    assert failed_alone(root, result, reporter) == "HTTP 200: response is JSON nested deeper than pixmake reads"
    assert journaled(root) == {"bad": "t-bad"}  # paid: the next build asks again


# --- the key, echoed escaped ------------------------------------------------------------------------------


@pytest.mark.parametrize("style", ["php", "unicode"])
def test_a_key_echoed_escaped_reaches_no_event_and_no_error_line(
    style: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The review's repro: key ``sk-live/SECRET+abc``, echoed as PHP escapes it, was printed whole by
    ``pixmake: error:`` (a refused key), and by ``--json``'s target_failed and build_finished (a failed task)."""
    echo = ESCAPED_KEYS[style]
    refused = _raw("401 Unauthorized", b'{"error": {"message": "Invalid token ' + echo.encode() + b'"}}')
    failed = {"id": "t-bad", "status": "failed", "error": {"code": "auth", "message": "cannot bill "}}
    failed_body = json.dumps(failed).encode().replace(b"cannot bill ", f"cannot bill {echo}".encode())
    root = two_targets(tmp_path / "p")
    monkeypatch.setenv("TOAPIS_API_KEY", "sk-live/SECRET+abc")
    monkeypatch.setenv("PIXMAKE_POLL_INTERVAL", "0.01")
    with hostile_api({"bad": lambda url: _raw("200 OK", failed_body)}) as url:
        monkeypatch.setenv("PIXMAKE_BASE_URL", url)
        built = run_cli("-C", str(root), "build", "--json")
    with hostile_api({}, submit=refused) as url:
        monkeypatch.setenv("PIXMAKE_BASE_URL", url)
        refusal = run_cli("-C", str(root), "build")  # target bad again: its task failed
    events = [json.loads(line) for line in built.stdout.splitlines()]
    [target_failed] = [e for e in events if e["event"] == "target_failed"]
    [finished] = [e for e in events if e["event"] == "build_finished"]
    assert target_failed["error"] == "task t-bad failed (auth): cannot bill sk-(redacted)"
    assert finished["result"]["failed"] == [{"target": "bad", "error": target_failed["error"]}]
    assert "pixmake: error: HTTP 401: API key refused: Invalid token sk-(redacted)" in refusal.stderr
    for output in (built.stdout, built.stderr, refusal.stdout, refusal.stderr):
        assert "SECRET" not in output


@pytest.mark.parametrize("field", ["Content-Length", "status line"])
def test_a_malformed_answer_quoting_the_key_reaches_no_event_and_no_error_line(
    field: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The review's repro: a status answer whose Content-Length (or status line) is the request's
    Authorization header; aiohttp's parser error quoted it, and every retry line and event printed it."""
    key = "sk-live-SECRET123"
    bad = f"Bearer {key}"
    raw = (
        f"HTTP/1.1 200 OK\r\nContent-Length: {bad}\r\n\r\n{{}}" if field == "Content-Length"
        else f"HTTP/1.1 5x0 {bad}\r\nContent-Length: 2\r\n\r\n{{}}"
    ).encode()  # fmt: skip
    root = two_targets(tmp_path / "p")
    for name, value in {"TOAPIS_API_KEY": key, "PIXMAKE_POLL_INTERVAL": "0.01", "PIXMAKE_BACKOFF_BASE": "0.001",
                        "PIXMAKE_RETRY_WINDOW": "0"}.items():  # fmt: skip
        monkeypatch.setenv(name, value)
    with hostile_api({"bad": lambda url: raw}) as url:
        monkeypatch.setenv("PIXMAKE_BASE_URL", url)
        built = run_cli("-C", str(root), "build", "--json", "-v")
    assert built.exit_code == 1
    events = [json.loads(line) for line in built.stdout.splitlines()]
    [failed] = [e for e in events if e["event"] == "target_failed"]
    assert "malformed HTTP response" in failed["error"]
    assert [e for e in events if e["event"] == "retry"]  # the lines that printed it, each time
    for output in (built.stdout, built.stderr):
        assert "SECRET" not in output


def test_a_result_link_that_redirects_forever_is_named_without_its_token(tmp_path: Path) -> None:
    root = two_targets(tmp_path / "p")
    loop = _raw("302 Found", b"", Location="/files/bad.png?token=SIGNEDSECRET")
    with hostile_api({}, {"bad.png": loop, "bad.png?token=SIGNEDSECRET": loop}) as url:
        result, reporter = build(root, url)
    error = failed_alone(root, result, reporter)
    assert "too many redirects" in error and "SIGNEDSECRET" not in error
    assert all("SIGNEDSECRET" not in str(event) for event in reporter.events)


@pytest.mark.parametrize("location", ["ftp://cdn.example/x.png?X-Amz-Signature=SIGNEDSECRET", "http://[::1"])
def test_a_result_link_redirected_to_no_http_url_is_named_without_it(location: str, tmp_path: Path) -> None:
    """The diff review's repro: aiohttp's error for a redirect to ftp:// quoted the URL with its token."""
    root = two_targets(tmp_path / "p")
    with hostile_api({}, {"bad.png": _raw("302 Found", b"", Location=location)}) as url:
        result, reporter = build(root, url)
    error = failed_alone(root, result, reporter)
    assert "redirected to a URL that is not http(s)" in error and "SIGNEDSECRET" not in error
    assert all("SIGNEDSECRET" not in str(event) for event in reporter.events)


def test_a_result_of_more_pixels_than_any_model_makes_fails_its_target_in_pixmakes_words(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The review's repro: 169 million pixels were decoded (724 MB) and Pillow's raw warning printed."""
    root = two_targets(tmp_path / "p")
    for name, value in {"TOAPIS_API_KEY": "sk-test", "PIXMAKE_POLL_INTERVAL": "0.01", "PIXMAKE_BACKOFF_BASE": "0.001",
                        "PIXMAKE_RETRY_WINDOW": "0"}.items():  # fmt: skip
        monkeypatch.setenv(name, value)
    with hostile_api({}, {"bad.png": _raw("200 OK", png_of_size(13_000, 13_000))}) as url:
        monkeypatch.setenv("PIXMAKE_BASE_URL", url)
        built = run_cli("-C", str(root), "build")
    assert built.exit_code == 1
    assert "failed: bad: result 1 is 13000×13000 pixels, more than any image model makes (64 Mpx)" in built.stderr
    assert "ecompression" not in built.stderr and (root / "out" / "good.png").exists()


# --- server strings in output -----------------------------------------------------------------------------


def test_a_task_id_that_would_print_a_line_of_its_own_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The review's id ``t ESC[8mHIDDEN LF [ 0.0s] done a`` printed a fake progress line: now the submit's
    answer is malformed, its task is looked up by id (it may be paid) and the target fails in one line."""
    root = write_manifest(tmp_path / "p", {"a": {"prompt": "a", "out": "out/a.png"}}, concurrency=1)
    task = {"id": FAKE_LINE_ID, "status": "failed", "error": {"message": "no"}}  # printed at once if taken
    answer = _raw("200 OK", json.dumps(task).encode())
    for name, value in {
        "TOAPIS_API_KEY": "sk-test",
        "PIXMAKE_BACKOFF_BASE": "0.001",
        "PIXMAKE_LOOKUP_GRACE": "0",
        "PIXMAKE_RETRY_WINDOW": "0",  # give up after the attempts, as the tests count them
    }.items():
        monkeypatch.setenv(name, value)
    with hostile_api({}, submit=answer) as url:
        monkeypatch.setenv("PIXMAKE_BASE_URL", url)
        outcome = run_cli("-C", str(root), "build", "-v")
    lines = outcome.stderr.splitlines()
    assert outcome.exit_code == 1 and all(line.isprintable() for line in lines), lines
    assert not any("done" in line and "HIDDEN" not in line for line in lines), lines
    assert any("malformed task id 't [8mHIDDEN [ 0.0s] done a'" in line for line in lines), lines
    _, pending = api.load_lock(api.open_project(root))
    assert pending["a"].task_id is None  # journaled by its client_business_id: the next build looks it up


# --- answers that can never be right ----------------------------------------------------------------------


WAY_OUT = " (if that lasts: pixmake forget bad, and the next build pays again)"  # the task stays journaled


def test_a_result_url_that_is_not_http_fails_its_target_at_once_and_keeps_its_task(tmp_path: Path) -> None:
    """It was a network error, retried eight times (74 s) on every build."""
    root = two_targets(tmp_path / "p")
    with hostile_api({"bad": completed("bad", url="file:///etc/passwd")}) as url:
        result, reporter = build(root, url, max_attempts=8)
    error = failed_alone(root, result, reporter)
    assert error == "result URL file:///etc/passwd is not http(s): pixmake does not fetch it" + WAY_OUT
    assert not [e for e in reporter.events if isinstance(e, RetryScheduled)]
    assert journaled(root) == {"bad": "t-bad"}  # paid: a server that mends its links is collected from


def test_a_result_that_is_not_an_image_says_what_it_starts_with(tmp_path: Path) -> None:
    """It said "cannot identify image file <_io.BytesIO object at 0x7f…>"."""
    root = two_targets(tmp_path / "p")
    page = _raw("200 OK", b"<html><body>Access denied</body></html>", Content_Type="text/html")
    with hostile_api({}, {"bad.png": page}) as url:
        result, reporter = build(root, url)
    assert failed_alone(root, result, reporter) == "result 1 is not an image (an HTML page)" + WAY_OUT
    assert journaled(root) == {"bad": "t-bad"}  # fetched again (a CDN's error page may pass), then kept


def test_a_short_result_that_is_not_an_image_fails_its_target_and_keeps_its_task(tmp_path: Path) -> None:
    """Keeping a short result's images met an error page: it crashed the build, on every build."""
    root = write_manifest(
        tmp_path / "p",
        {"bad": {"prompt": "bad", "n": 2, "out": "out/bad.png"}, "good": {"prompt": "good", "out": "out/good.png"}},
        concurrency=2,
    )
    page = _raw("200 OK", b"<html><body>Access denied</body></html>", Content_Type="text/html")
    with hostile_api({}, {"bad.png": page}) as url:  # one image for n 2
        result, reporter = build(root, url)
    assert failed_alone(root, result, reporter) == (
        "task t-bad returned 1 images, expected 2; result 1 is not an image (an HTML page)" + WAY_OUT
    )
    assert journaled(root) == {"bad": "t-bad"}  # fetched again (a CDN's error page may pass), then kept


def test_an_api_that_redirects_fails_its_targets_naming_where_and_pays_nothing(tmp_path: Path) -> None:
    root = two_targets(tmp_path / "p")
    moved = _raw("301 Moved Permanently", b"301: Moved", Location="https://user:pw@api.example/v1/images/generations")
    with hostile_api({}, submit=moved) as url:
        result, _ = build(root, url)
    assert result.generated == () and {f.target for f in result.failed} == {"bad", "good"}
    assert {f.error for f in result.failed} == {
        "HTTP 301: the API redirected to https://api.example, and pixmake does not follow redirects with the API "
        "key: if that is your provider's (over https), set PIXMAKE_BASE_URL to it"
    }
    assert journaled(root) == {}  # refused: nothing was created


# --- results in other formats -----------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["JPEG", "GIF", "TIFF", "WEBP"])
def test_a_result_in_another_format_is_written_as_the_png_it_is_locked_as(fmt: str, tmp_path: Path) -> None:
    """The README promises PNG outputs: a JPEG was written as ``out/a.png`` unconverted. It is converted
    (paid for, so never refused; the pixels are kept), and the lock, the object cache and the file agree."""
    original = Image.new("RGB", (24, 16), (200, 40, 10))
    served = io.BytesIO()
    original.save(served, fmt)
    root = write_manifest(tmp_path / "p", {"a": {"prompt": "a", "out": "out/a.png"}}, concurrency=1)
    with hostile_api({}, {"a.png": _raw("200 OK", served.getvalue())}) as url:
        result, _ = build(root, url)
        assert result.ok and result.generated == ("a",)
        written = (root / "out" / "a.png").read_bytes()
        with Image.open(io.BytesIO(written)) as image:
            assert image.format == "PNG" and image.size == (24, 16)
        [locked] = parse_lock((root / "pixmake.lock").read_text()).entries["a"].outputs
        assert (locked.sha256, locked.bytes, locked.width, locked.height) == (
            sha256_bytes(written),
            len(written),
            24,
            16,
        )
        cached = root / ".pixmake" / "objects" / locked.sha256[:2] / locked.sha256
        assert cached.read_bytes() == written
        project = api.open_project(root)
        assert [a.kind for a in api.plan(project).plan.actions] == [ActionKind.UNCHANGED]
        (root / "out" / "a.png").unlink()
        again, _ = build(root, url)
    assert again.restored == ("a",) and (root / "out" / "a.png").read_bytes() == written
