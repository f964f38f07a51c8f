"""ToAPIs async image API over aiohttp: submit → poll → download, Bearer auth.

Every aiohttp exception and every non-2xx answer is translated to a ProviderError in exactly one
place (:func:`_translated` and :func:`_raise_for_status`), chained with ``from``. Facts and their
sources: ``shared/toapis-api.md``. The API key goes only to the API's own host; result files are
fetched with a separate session that carries no credentials.

Why aiohttp and not httpx: a build makes three requests per image, and httpx's asyncio client costs
about ten times aiohttp's CPU per request (encode/httpx#3215; ``bench/throughput.py`` measured 1.5 ms
against 0.13 ms per request on the CI machine), which alone exceeded the executor's CPU budget.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import json
import math
import mimetypes
import re
import reprlib
import socket
import ssl
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any, Final
from urllib.parse import quote

import aiohttp
import yarl

from pixmake import __version__
from pixmake.errors import (
    AuthError,
    BadResultError,
    NetworkError,
    ProviderError,
    QuotaError,
    RateLimitedError,
    RequestRejectedError,
    ServerError,
)
from pixmake.inputs import sniff
from pixmake.models import MODELS, RESULT_LIFETIME
from pixmake.providers.base import GenerationRequest, TaskState, TaskStatus
from pixmake.retry import parse_retry_after
from pixmake.settings import Settings, display_url

__all__ = ["ToapisProvider", "parse_task"]

_SUBMIT: Final = "/v1/images/generations"
_JSON_BODY: Final = {"Content-Type": "application/json"}
_UPLOAD: Final = "/v1/uploads/images"
_DONE: Final = frozenset({"completed", "succeeded", "success"})
_FAILED: Final = frozenset({"failed", "failure", "error", "cancelled", "canceled", "expired"})
# Requests that surely never left this machine: safe to send again, even a submit. A connector
# error means no connection was made; a connection timeout covers waiting for one from the pool.
_NOT_SENT: Final = (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError, aiohttp.InvalidURL)
_REDACTED: Final = b"sk-(redacted)"  # what an API answer that repeats the key says instead
# Bodies are read in chunks up to a cap, so that no answer can fill the memory. No image an API makes comes
# near 64 MB (a 4K RGBA PNG is about 33 MB); a task or upload answer is a few hundred bytes. Of an error
# answer only the start is kept: its message is cut to a line anyway.
_MAX_RESULT: Final = 64 << 20
_MAX_ANSWER: Final = 8 << 20
_MAX_ERROR_BODY: Final = 64 << 10
# A result file or an upload may take as long as it needs while it keeps an average of this many bytes per
# second after its first request timeout: a slow link gets its paid image, a server that trickles a byte now
# and then does not hold a build for ever (a silent one times out between reads).
_MIN_RATE: Final = 1024


class _TooSlow(TimeoutError):
    """A transfer slower on average than :data:`_MIN_RATE`."""


_SPACE_RUN: Final = re.compile(" {2,}")
# What a task id may be: printable ASCII, no space. It is printed, and sent back in a URL's path.
_TASK_ID: Final = re.compile(r"[!-~]{1,200}")


def _one_line(text: str) -> str:
    """A server's text as one printable line: no line ends, no terminal escape sequences, no bidi overrides.

    Every character Python does not call printable (controls, line and paragraph separators, format
    characters such as U+202E, spaces other than U+0020) is a space, and each run of spaces is one: it
    reads as prose. :func:`pixmake.schema.one_line` quotes instead, as a field path or a value from the
    manifest must stay exact."""
    if not text.isprintable():
        text = "".join(char if char.isprintable() else " " for char in text)
    return _SPACE_RUN.sub(" ", text).strip()


_BRIEF: Final = reprlib.Repr()  # anything but a string, in brief: three levels deep, 40 digits, 200 characters
_BRIEF.maxlevel, _BRIEF.maxlong, _BRIEF.maxstring, _BRIEF.maxother = 3, 40, 200, 200


def _said(value: object, limit: int = 300) -> str:
    """Any value from a server's JSON as one printable line of at most ``limit`` characters.

    A string is taken as it is, anything else in brief: a list nested a thousand deep or a number of
    4,000 digits is a short line, not a RecursionError or a screenful.
    """
    text = _one_line((value if isinstance(value, str) else _BRIEF.repr(value))[: 4 * limit])
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _reason(error: BaseException, deadline: float | None = None) -> str:
    """A short cause for people, from the chain of exceptions under a transport error.

    ``deadline`` is the seconds the whole request had: aiohttp's bare TimeoutError says it passed (a
    silent socket raises its own ServerTimeoutError).
    """
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, ConnectionRefusedError):
            return "connection refused"
        if isinstance(seen, socket.gaierror | aiohttp.ClientConnectorDNSError):
            return "host name not found"
        if isinstance(seen, _TooSlow):
            return f"slower than {_MIN_RATE >> 10} KB/s"
        if isinstance(seen, TimeoutError):
            whole = deadline is not None and not isinstance(seen, aiohttp.ServerTimeoutError)
            return f"no complete answer within {deadline:g} s" if whole else "timed out"
        if isinstance(seen, ssl.SSLError) and not isinstance(seen, aiohttp.ClientError):  # aiohttp's: see os_error
            verify = getattr(seen, "verify_message", None)  # why the certificate was refused
            return f"TLS certificate not trusted: {verify}" if verify else f"TLS error: {seen.reason or seen}"
        if isinstance(seen, aiohttp.ServerDisconnectedError):
            return "server disconnected without a complete response"
        if isinstance(seen, aiohttp.ClientPayloadError):
            return "response body cut short or undecodable"
        if isinstance(seen, aiohttp.TooManyRedirects):  # its text holds the URL, with a signed link's token
            return "too many redirects"
        if isinstance(seen, aiohttp.ClientResponseError):  # the parser's: its text quotes the bad line (the key?)
            said = str(seen.message).partition("\n")[0].partition("'")[0].rstrip(": ")  # the rule it broke, no bytes
            return f"malformed HTTP response ({said})" if said else "malformed HTTP response"
        if isinstance(seen, aiohttp.InvalidURL | aiohttp.NonHttpUrlClientError):  # its text is the URL (a token?)
            return (
                "redirected to an invalid or non-HTTP URL"
                if isinstance(seen, aiohttp.RedirectClientError)
                else ("invalid URL")
            )
        seen = getattr(seen, "os_error", None) or seen.__cause__ or seen.__context__
    if isinstance(error, aiohttp.ClientError):  # aiohttp's text may quote a URL or a server's bytes: its kind only
        return type(error).__name__
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__


@contextlib.asynccontextmanager
async def _translated(what: str, url: str, deadline: float | None, scrub: Callable[[str], str]) -> AsyncIterator[None]:
    """Map transport errors to NetworkError, saying whether the request may have arrived.

    ``sent`` is False only for errors raised before any byte left (no connection, a bad URL). A
    dropped connection, a read timeout, a deadline passed, or a body cut short or undecodable arrived
    at the server and may have done its work. The URL in the message has no query (a signed download
    URL carries a token). ``deadline``: the seconds the whole request had; ``scrub`` takes the key out
    of the cause (an exception's text may quote what the server sent back, the key with it).
    """
    try:
        yield
    except (aiohttp.ClientError, TimeoutError) as error:
        reason = _said(scrub(_reason(error, deadline)), 200)
        sent = not isinstance(error, _NOT_SENT)
        raise NetworkError(f"{what} {_shown(url)}: {reason}", sent=sent, reason=reason) from error


def _shown(url: str) -> str:
    """A URL (maybe a server's) fit for a message: no credentials or query (:func:`display_url`), one line."""
    return _said(display_url(url), 200)


async def _read(
    response: aiohttp.ClientResponse, limit: int, *, cut: bool = False, grace: float | None = None
) -> bytes | None:
    """The body, read in chunks; None when it is longer than ``limit`` bytes (the rest is never read).

    A Content-Length past the limit refuses the body before a byte of it is read; without one, or with
    a compressed body (a small gzip body can inflate to gigabytes), the bytes are counted as they arrive.
    ``cut``: a longer body gives its first ``limit`` bytes instead (an error answer, for its message).
    ``grace``: a transfer with no deadline; ``grace`` seconds after it began it must average
    :data:`_MIN_RATE` bytes per second, else :class:`_TooSlow`.
    """
    length = response.content_length
    plain = not response.headers.get(aiohttp.hdrs.CONTENT_ENCODING)
    if grace is None and length is not None and length <= limit and plain:
        return await response.read()  # the parser stops at Content-Length
    if length is not None and length > limit and not cut:
        return None
    body = bytearray()
    started = time.monotonic()
    async for chunk in response.content.iter_any():
        body += chunk
        if len(body) > limit:
            return bytes(body[:limit]) if cut else None
        if grace is not None and (spent := time.monotonic() - started) > grace and len(body) < spent * _MIN_RATE:
            raise _TooSlow
    return bytes(body)


def _spellings(key: str) -> re.Pattern[bytes]:
    """Every spelling of ``key`` an answer may echo: each character as it is, or escaped as JSON escapes
    it (``\\/``, ``\\u002F``; a backslash before any character, though JSON allows it only before a few),
    as a URL does (``%2F``) or as HTML does (``&#47;``, ``&#x2f;``), in any mix.

    Taken out of the raw body, it leaves no spelling that decodes (as JSON) to the key either.
    """

    def spelled(char: str) -> str:
        point = ord(char)
        ways = [re.escape(char), r"\\" + re.escape(char), f"&#0*{point};", f"&#(?i:x0*{point:x});"]
        ways.append("".join(f"%(?i:{byte:02x})" for byte in char.encode()))
        if point < 0x10000:
            ways.append(rf"\\(?i:u{point:04x})")
        return "(?:" + "|".join(ways) + ")"

    return re.compile("".join(map(spelled, key)).encode())


@dataclass(frozen=True, slots=True)
class _Answer:
    """A complete HTTP answer: status, headers and the whole body; and the URL asked."""

    status: int
    headers: Mapping[str, str]
    body: bytes
    url: str

    def text(self) -> str:
        """The body as UTF-8, as JSON must be: never guessed as UTF-16 or UTF-32, whose echo of the key
        the scrub would not see."""
        return self.body.decode("utf-8-sig", "replace")


def _error_fields(answer: _Answer) -> tuple[str | None, str]:
    try:
        body = json.loads(answer.text())
    except (ValueError, RecursionError):  # RecursionError: nested past the interpreter's limit
        text = answer.text().strip()
        looks_html = text[:200].lower().startswith(("<!doctype", "<html")) or "<title>" in text[:500].lower()
        summary = "gateway returned an HTML error page" if looks_html else (_one_line(text[:200]) or "empty body")
        return None, summary
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        code = error.get("code")
        message = _said(error.get("message") or error.get("type") or "error")
        return (None if code is None else _said(code, 100)), message
    if isinstance(body, dict) and "message" in body:
        return None, _said(body["message"])
    return None, _said(body, 200)


def _redirected_to(answer: _Answer) -> str:
    """Where a redirect points, for a message: scheme, host and port only (no credentials, path or query)."""
    location = answer.headers.get("Location")
    if not location:
        return "no address"
    try:
        return _said(str(yarl.URL(answer.url).join(yarl.URL(location)).origin()), 200)
    except ValueError:
        return "an address that is not a URL"


def _raise_for_status(answer: _Answer) -> None:
    status = answer.status
    if 200 <= status < 300:
        return
    if 300 <= status < 400:  # an API call's: a download follows them (see ToapisProvider.download)
        raise RequestRejectedError(
            f"the API redirected to {_redirected_to(answer)}, and pixmake does not follow redirects with the API "
            "key: if that is your provider's (over https), set PIXMAKE_BASE_URL to it",
            status=status,
        )
    code, message = _error_fields(answer)
    if status in (401, 403):
        raise AuthError(f"API key refused: {message}", status=status, code=code)
    if status == 402 or code == "insufficient_quota":
        raise QuotaError(f"insufficient balance: {message}", status=status, code=code)
    if status == 429 or (status == 503 and code == "rate_limit_unavailable"):
        retry_after = parse_retry_after(answer.headers.get("Retry-After"), now=time.time())
        raise RateLimitedError(message, status=status, code=code, retry_after=retry_after)
    if status >= 500:
        raise ServerError(message, status=status, code=code)
    raise RequestRejectedError(message, status=status, code=code)


def _result_urls(body: Mapping[str, Any]) -> tuple[str, ...]:
    """Result URLs wherever the docs and the wild put them (toapis-api.md §3.3)."""
    result = body.get("result")
    for items in (
        result.get("data") if isinstance(result, dict) else None,
        body.get("images"),
        body.get("data"),
    ):
        if isinstance(items, list):
            urls = tuple(str(i["url"]) for i in items if isinstance(i, dict) and isinstance(i.get("url"), str))
            if urls:
                return urls
    url = body.get("url")
    return (url,) if isinstance(url, str) and url else ()


def _seconds(value: object) -> float | None:
    """A Unix time in seconds as the docs give it (a finite JSON number, not a boolean), or None.

    Informative only: a number too large for a float (``1`` and 400 zeros), an infinity or a NaN is None.
    """
    if not isinstance(value, int | float) or isinstance(value, bool):
        return None
    try:
        seconds = float(value)
    except OverflowError:
        return None
    return seconds if math.isfinite(seconds) else None


def _percent(value: object) -> int:
    """A task's progress as the docs give it (an integer 0-100); anything else is 0, and it is kept within 0-100."""
    return min(max(value, 0), 100) if isinstance(value, int) and not isinstance(value, bool) else 0


def parse_task(body: Any) -> TaskStatus:
    """A task object (submit or status response) as a TaskStatus; raises ServerError if it is not one.

    Server strings come out as one printable line each, cut to a length fit for a message.
    """
    if not isinstance(body, dict) or not isinstance(body.get("id"), str):
        raise ServerError(f"unexpected task body: {_said(body, 200)}")
    if not _TASK_ID.fullmatch(body["id"]):  # never folded: polls must name the task the server named
        shown = _said(body["id"], 60)
        raise ServerError(f"malformed task id {shown!r} (not 1 to 200 printable ASCII characters without spaces)")
    status = _said(body.get("status") or "queued", 60).lower()
    state = TaskState.COMPLETED if status in _DONE else TaskState.FAILED if status in _FAILED else TaskState.RUNNING
    raw_error = body.get("error")
    error: dict[str, Any] = raw_error if isinstance(raw_error, dict) else {}
    expires, completed = _seconds(body.get("expires_at")), _seconds(body.get("completed_at"))
    if expires is None and completed is not None:  # result URLs live 24 hours after completion (§3.1)
        expires = completed + RESULT_LIFETIME
    return TaskStatus(
        task_id=body["id"],
        state=state,
        status=status,
        progress=_percent(body.get("progress")),
        urls=_result_urls(body) if state is TaskState.COMPLETED else (),
        error_code=None if error.get("code") is None else _said(error["code"], 100),
        error_message=None if error.get("message") is None else _said(error["message"]),
        expires_at=expires,
        client_business_id=_echoed_id(body),
    )


def _echoed_id(body: dict[str, Any]) -> str | None:
    """The ``client_business_id`` a task answer echoes (top level, or in ``metadata``), when it is one a
    submit could have sent; else None (not echoed: nothing to compare)."""
    metadata = body.get("metadata")
    echoed = body.get("client_business_id")
    if echoed is None and isinstance(metadata, dict):
        echoed = metadata.get("client_business_id")
    return echoed if isinstance(echoed, str) and _TASK_ID.fullmatch(echoed) else None


_MAX_SKEW: Final = 7 * 86_400.0  # a Date further off than this is a broken clock, not a skew to correct for


def _on_our_clock(status: TaskStatus, answer: _Answer) -> TaskStatus:
    """``status`` with its ``expires_at`` read on this machine's clock as well as the provider's, by the
    ``Date`` of the answer that gave it, whichever is later: a link is taken for gone for good (its task
    dropped, and paid for again) only once it has expired by both, so a clock hours fast does not take a
    link refused for a moment for an expired one. Without a readable, plausible ``Date``, as given."""
    if status.expires_at is None or (date := answer.headers.get("Date")) is None:
        return status
    try:
        sent = parsedate_to_datetime(date)
        offset = time.time() - (sent if sent.tzinfo is not None else sent.replace(tzinfo=datetime.UTC)).timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return status
    if not 0 < offset <= _MAX_SKEW:  # this clock behind the provider's (or a Date far off): the later is as given
        return status
    return dataclasses.replace(status, expires_at=status.expires_at + offset)


def _json(answer: _Answer) -> Any:
    try:
        return json.loads(answer.text())
    except ValueError as error:
        raise ServerError(f"response is not JSON: {answer.text()[:200]!r}", status=answer.status) from error
    except RecursionError as error:  # nested past the interpreter's limit
        raise ServerError("response is JSON nested deeper than pixmake reads", status=answer.status) from error


class ToapisProvider:
    """The ToAPIs task API; construct with resolved Settings, close with ``aclose``.

    The HTTP sessions are opened on first use, inside the running event loop (aiohttp binds them to it).
    """

    def __init__(self, settings: Settings) -> None:
        if settings.api_key is None:
            raise ProviderError(f"no API key: set the {settings.api_key_env} environment variable")
        self._settings = settings
        self._key = settings.api_key.reveal().encode()
        self._key_spellings = _spellings(settings.api_key.reveal())  # to take out of any answer that repeats it
        # Requests authenticate with the Bearer key only; credentials in the URL are not sent.
        self._base = str(yarl.URL(settings.base_url).with_user(None)).rstrip("/")
        self._api_session: aiohttp.ClientSession | None = None
        self._files_session: aiohttp.ClientSession | None = None
        # An API call has a deadline (one per call is also cheaper than a read timer). A result file or an
        # upload may take longer: a silent peer times out between reads, a result that trickles is too slow
        # on average (see _read), and an upload has a deadline by its size at _MIN_RATE.
        self._request_timeout = settings.request_timeout
        self._api_timeout = aiohttp.ClientTimeout(total=settings.request_timeout, sock_connect=10.0)
        self._transfer_timeout = aiohttp.ClientTimeout(sock_connect=10.0, sock_read=settings.request_timeout)

    def _open(self) -> tuple[aiohttp.ClientSession, aiohttp.ClientSession]:
        if self._api_session is None or self._files_session is None:
            s = self._settings
            assert s.api_key is not None
            headers = {"User-Agent": f"pixmake/{__version__}", "Accept": "image/*"}  # result files
            auth = {**headers, "Accept": "application/json", "Authorization": f"Bearer {s.api_key.reveal()}"}
            limit = max(16, 2 * s.concurrency)  # every target in flight, plus uploads and downloads

            def session(default_headers: dict[str, str], timeout: aiohttp.ClientTimeout) -> aiohttp.ClientSession:
                return aiohttp.ClientSession(
                    # ssl=True: certificates are verified with the context aiohttp built at import (the
                    # system's CAs, or SSL_CERT_FILE / SSL_CERT_DIR); building another costs 37 ms of CPU.
                    connector=aiohttp.TCPConnector(limit=limit, ssl=True),
                    timeout=timeout,
                    headers=default_headers,
                    cookie_jar=aiohttp.DummyCookieJar(),  # an API client keeps no cookies
                    raise_for_status=False,
                )

            self._api_session = session(auth, self._api_timeout)
            self._files_session = session(headers, self._transfer_timeout)
        return self._api_session, self._files_session

    async def _request(
        self, what: str, method: str, url: str, *, files: bool = False, sending: int = 0, **options: Any
    ) -> _Answer:
        """One request and its whole answer; ``files``: a result file, fetched without the key.

        An API call has the request timeout as its deadline, an upload of ``sending`` bytes that plus the
        time they take at :data:`_MIN_RATE`; a result file has none, but must keep that rate on average.
        A 2xx body past its cap (:data:`_MAX_RESULT` for a file, :data:`_MAX_ANSWER` for an API answer)
        is an error; of an error answer only the start is read.
        """
        api, downloads = self._open()
        # The key must not follow a redirect to another host: API calls never follow one.
        session, redirects = (downloads, True) if files else (api, False)
        timeout = self._transfer_timeout if files else self._api_timeout
        if sending:
            total = self._request_timeout + sending / _MIN_RATE
            timeout = aiohttp.ClientTimeout(total=total, sock_connect=10.0, sock_read=self._request_timeout)
        async with (
            _translated(what, url, timeout.total, self._scrubbed_text),
            session.request(method, url, allow_redirects=redirects, timeout=timeout, **options) as response,
        ):
            failed = not 200 <= response.status < 300  # of an error answer, enough for its message
            limit = _MAX_ERROR_BODY if failed else _MAX_RESULT if files else _MAX_ANSWER
            body = await _read(response, limit, cut=failed, grace=self._request_timeout if files else None)
            if body is None:
                kind = "image" if files else "API answer"
                message = f"{what} {_shown(url)}: more than {limit >> 20} MB, larger than any {kind}"
                if files:
                    raise BadResultError(message, status=response.status)
                raise ServerError(message, status=response.status)
        if not files:  # an error page that quotes the request, even escaped: never print the key
            body = self._scrubbed(body)
        return _Answer(response.status, response.headers, body, url)

    def _scrubbed_text(self, text: str) -> str:
        """``text`` without the key in any spelling."""
        return self._scrubbed(text.encode()).decode(errors="replace")

    def _scrubbed(self, body: bytes) -> bytes:
        """``body`` without the key in any spelling. An answer with no escape at all (every task status
        answer) can only spell it as it is: a plain replace, a tenth of the pattern's cost."""
        if b"\\" in body or b"%" in body or b"&#" in body:
            return self._key_spellings.sub(_REDACTED, body)
        return body.replace(self._key, _REDACTED)

    async def upload(self, data: bytes, *, filename: str) -> str:
        """POST /v1/uploads/images (multipart ``file``); returns the hosted URL.

        The part's type and the name's extension come from the bytes, not the file's name: a JPEG named
        ``logo.png`` or a reference without an extension is declared as what it is.
        """
        form = aiohttp.FormData()
        detected = sniff(data[:64]).format
        if detected is None:
            kind = mimetypes.guess_type(filename)[0] or "application/octet-stream"
        else:
            kind = f"image/{detected}"
            stem, dot, extension = filename.rpartition(".")
            if mimetypes.guess_type(filename)[0] != kind:
                filename = f"{stem if dot else extension}.{'jpg' if detected == 'jpeg' else detected}"
        form.add_field("file", data, filename=filename, content_type=kind)
        form.add_field("purpose", "generation")
        answer = await self._request("upload", "POST", self._base + _UPLOAD, data=form, sending=len(data))
        _raise_for_status(answer)
        body = _json(answer)
        if not isinstance(body, dict) or body.get("success") is False:
            message = body.get("message") if isinstance(body, dict) else body
            raise RequestRejectedError(f"upload refused: {_said(message)}", status=answer.status)
        hosted = body.get("data")
        url = hosted.get("url") if isinstance(hosted, dict) else body.get("url")  # §5: data{id,url,...}
        if not isinstance(url, str):
            raise ServerError(f"upload answered without a URL: {_said(body, 200)}")
        return url

    async def submit(self, request: GenerationRequest) -> TaskStatus:
        """POST /v1/images/generations; charges ``n`` images."""
        payload: dict[str, Any] = {
            **request.params,
            "model": request.model,
            "prompt": request.prompt,
            "size": request.size,
            "n": request.n,
            "client_business_id": request.client_business_id,
        }
        if request.image_urls:
            spec = MODELS.get(request.model)
            objects = spec is not None and spec.reference_objects  # Gemini takes [{"url": ...}] (§2.3)
            payload["image_urls"] = (
                [{"url": url} for url in request.image_urls] if objects else list(request.image_urls)
            )
        if request.mask_url is not None:
            payload["mask_url"] = request.mask_url
        body = json.dumps(payload).encode()
        answer = await self._request("submit", "POST", self._base + _SUBMIT, data=body, headers=_JSON_BODY)
        _raise_for_status(answer)
        return _on_our_clock(parse_task(_json(answer)), answer)

    async def poll(self, task_id: str) -> TaskStatus:
        """GET /v1/images/generations/{task_id}."""
        answer = await self._request("poll", "GET", f"{self._base}{_SUBMIT}/{quote(task_id, safe='')}")
        _raise_for_status(answer)
        return _on_our_clock(parse_task(_json(answer)), answer)

    async def find(self, client_business_id: str) -> TaskStatus | None:
        """GET /v1/images/generations/{client_business_id}; None on 404 (no such task)."""
        answer = await self._request("lookup", "GET", f"{self._base}{_SUBMIT}/{quote(client_business_id, safe='')}")
        if answer.status == 404:
            return None
        _raise_for_status(answer)
        return _on_our_clock(parse_task(_json(answer)), answer)

    async def download(self, url: str) -> bytes:
        """GET a result URL without credentials, following redirects; a body cut short is a NetworkError.

        A URL that is not http(s) (``file:``, ``data:``), or a redirect to one, is a BadResultError: it
        would be as bad again, so it is not retried.

        A 401 or 403 here is about the link (a signed URL past its time), never the API key: it is a
        RequestRejectedError, not an AuthError that would stop the build.
        """
        try:
            answer = await self._request("download", "GET", url, files=True)
        except NetworkError as error:  # aiohttp fetches only http(s), and says so before a byte is sent
            refused = error.__cause__
            if isinstance(refused, aiohttp.InvalidURL | aiohttp.NonHttpUrlClientError):
                how = "redirected to a URL that is" if isinstance(refused, aiohttp.RedirectClientError) else "is"
                raise BadResultError(
                    f"result URL {_shown(url)} {how} not http(s): pixmake does not fetch it"
                ) from error
            raise
        if answer.status in (401, 403):
            raise RequestRejectedError(f"result refused: {_error_fields(answer)[1]}", status=answer.status)
        if 300 <= answer.status < 400:  # one aiohttp could not follow: it gave no Location
            raise RequestRejectedError(f"result URL {_shown(url)} redirected to no address", status=answer.status)
        _raise_for_status(answer)
        return answer.body

    async def aclose(self) -> None:
        """Close both HTTP sessions (if they were opened)."""
        for session in (self._api_session, self._files_session):
            if session is not None:
                await session.close()
        self._api_session = self._files_session = None
