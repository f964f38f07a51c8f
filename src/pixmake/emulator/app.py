"""The emulator's HTTP face: a Starlette app over :class:`Emulator` that speaks ToAPIs (toapis-api.md).

Routes (§1)::

    POST /v1/images/generations           submit: auth → fault draw → submit bucket → validate → charge
    GET  /v1/images/generations/{id}      status by task id or client_business_id: auth → fault → query bucket
    POST /v1/uploads/images               multipart ``file`` → {success, message, data{id,url,mime_type,size}}
    GET  /v1/models  /v1/balance  /v1/user/balance
    GET  /files/generated/<task>_<i>.png  result images (404 before completion; after expires_at, 410
                                          or what ``expired_result_status`` says)
    GET  /files/uploads/<id>.<ext>        uploaded images (410 after upload_ttl)
    GET  /_emulator/requests | ledger | config;  POST /_emulator/config | reset | advance   (not recorded)

Design choices where the docs are silent: injected 429/5xx/504 on submit happen *before* a task exists
(nothing is charged); only ``p_drop_after_submit`` (then drops the connection) and ``p_504_after_submit``
(then answers an edge gateway's HTML 504, §4.1) create and charge a task first.
A ``callback_url`` is refused with ``400 webhook_not_configured`` unless the ``webhook_url`` knob (the
Token's default webhook) is set, and then must keep its scheme, host and port (§2.1); nothing is delivered.
A reused ``client_business_id`` creates another task (and charge), as a plain gateway would; lookups by it
return the newest task (``duplicate_business_id="reject"`` answers 400 instead). Tasks and rate buckets are
the key's user's (the ``users`` knob; §1, §4.2).
A reference or mask URL on this emulator's ``/files/uploads/`` must name a live upload (else 400 naming the
field) of a reference format of the model (its ``ref_formats`` row; §2.1, §5: a GIF uploads but is no
gpt-4o-image reference); an uploaded mask must be a PNG ≤ 4 MB of the first uploaded reference's pixel size.
Other http(s) URLs are accepted unseen, as the emulator never fetches them.
"""

from __future__ import annotations

import io
import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import asdict, dataclass
from email.utils import formatdate
from typing import Final
from urllib.parse import parse_qsl, urlsplit

import anyio
import anyio.to_thread
import httpx
from PIL import Image, UnidentifiedImageError
from starlette.applications import Starlette
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pixmake.emulator.config import EmulatorConfig, config_from_mapping, url_origin
from pixmake.emulator.models import MODELS, TEXT_MODELS, InvalidField, Submission, validate_submit
from pixmake.emulator.render import cached_png, render_png
from pixmake.emulator.state import (
    Emulator,
    QuotaExceeded,
    RateDecision,
    RecordedRequest,
    Upload,
    expires_at,
    redact_headers,
    submit_view,
    task_view,
)

__all__ = ["ConnectionCloser", "create_app", "error_response"]

ConnectionCloser = Callable[[tuple[str, int] | None], bool]
"""Closes the client connection ``(host, port)`` at the transport level; True if it found it."""

_MAX_UPLOAD: Final = 10 * 1024 * 1024
_MAX_MASK: Final = 4 * 1024 * 1024  # §2.1
_UPLOADS_PATH: Final = "/files/uploads/"
_USD_PER_IMAGE: Final = 0.02  # INF: a plausible price, only used by the balance endpoints
_SLOW_CHUNKS: Final = 10
_DISCONNECT_WAIT: Final = 5.0

_AUTH_TYPE: Final = "authentication_error"
_ERRORS: Final[Mapping[str, tuple[int, Mapping[str, object]]]] = {
    "invalid_request": (400, {"code": "invalid_request", "message": "", "type": "invalid_request_error"}),
    # [D-wh] names only the code; the rest is shaped like the documented invalid_request (§4.1).
    "webhook_not_configured": (
        400,
        {"code": "webhook_not_configured", "message": "", "type": "invalid_request_error"},
    ),
    "unauthorized_submit": (401, {"code": "unauthorized", "message": "Invalid API key", "type": _AUTH_TYPE}),
    "unauthorized_query": (
        401,
        {"code": 401, "message": "Authentication failed, please check your API key", "type": _AUTH_TYPE},
    ),
    # The only documented 402 JSON (a video page, §4.1); the gpt-4o page names the type insufficient_quota.
    "insufficient_quota": (
        402,
        {"code": 402, "message": "Insufficient balance, please top up", "type": "payment_required"},
    ),
    "not_found": (404, {"code": 404, "message": "Task not found", "type": "not_found_error"}),
    "rate_limit_exceeded": (
        429,
        {"code": "rate_limit_exceeded", "message": "Async task request rate exceeded"},
    ),
    "internal_error": (
        500,
        {"code": "internal_error", "message": "Internal server error", "type": "internal_error"},
    ),
    "bad_gateway": (
        502,
        {"code": "bad_gateway", "message": "Upstream service unavailable", "type": "upstream_error"},
    ),
    "rate_limit_unavailable": (
        503,
        {"code": "rate_limit_unavailable", "message": "Async task submit limiter is temporarily unavailable"},
    ),
}
_FAULT_ERRORS: Final[Mapping[str, str]] = {
    "p_429": "rate_limit_exceeded",
    "p_500": "internal_error",
    "p_502": "bad_gateway",
    "p_503_unavailable": "rate_limit_unavailable",
}
_AFTER_SUBMIT: Final = frozenset({"p_drop_after_submit", "p_504_after_submit"})
"""Submit faults drawn after the task is created and charged: the client cannot know it exists."""
_GATEWAY_504: Final = """<html>
<head><title>504 Gateway Time-out</title></head>
<body>
<center><h1>504 Gateway Time-out</h1></center>
<hr><center>Powered by volc-dcdn</center>
<hr><center>tengine</center>
</body>
</html>
"""
_IMAGE_TYPES: Final = (
    (0, b"\x89PNG\r\n\x1a\n", "image/png", "png"),
    (0, b"\xff\xd8\xff", "image/jpeg", "jpg"),
    (0, b"GIF87a", "image/gif", "gif"),
    (0, b"GIF89a", "image/gif", "gif"),
    (8, b"WEBP", "image/webp", "webp"),  # and b"RIFF" at 0, checked below
)
_FORMAT_NAMES: Final[Mapping[str, str]] = {
    "image/jpeg": "JPEG",
    "image/png": "PNG",
    "image/webp": "WebP",
    "image/gif": "GIF",
}
_UNSUPPORTED_IMAGE: Final = "Unsupported image type. Allowed: JPEG, PNG, WebP, GIF"
_TOO_LARGE: Final = "Image too large. Maximum size is 10MB"


def error_response(
    kind: str,
    config: EmulatorConfig,
    *,
    message: str | None = None,
    param: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    """A documented error envelope (§4.1); ``error_code_style="int"`` swaps ``code`` for the HTTP status."""
    status, template = _ERRORS[kind]
    error: dict[str, object] = {"code": status if config.error_code_style == "int" else template["code"]}
    error["message"] = message if message is not None else template["message"]
    if param is not None:
        error["param"] = param
    if "type" in template:
        error["type"] = template["type"]
    return JSONResponse({"error": error}, status_code=status, headers=headers)


def _rate_headers(decision: RateDecision | None) -> dict[str, str]:
    if decision is None:
        return {}
    headers = {
        "X-RateLimit-Limit": str(decision.limit),
        "X-RateLimit-Remaining": str(decision.remaining),
        "X-RateLimit-Reset": str(decision.reset),
        "X-RateLimit-Category": decision.category,
    }
    if not decision.allowed:
        headers["Retry-After"] = str(decision.retry_after)
    return headers


def _sniff_image(data: bytes) -> tuple[str, str] | None:
    for offset, magic, mime_type, extension in _IMAGE_TYPES:
        if data[offset : offset + len(magic)] == magic and (extension != "webp" or data[:4] == b"RIFF"):
            return mime_type, extension
    return None


def _pixel_size(data: bytes) -> tuple[int, int] | None:
    """An image's pixel size from its header (Pillow reads no pixels for this)."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            return image.size
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        return None


def _base_url(request: Request) -> str:
    return str(request.base_url).rstrip("/")


def _hosted_upload_id(url: str, base_url: str) -> str | None:
    """The upload id if ``url`` points at this emulator's ``/files/uploads/``, else None (a foreign URL)."""
    parts = urlsplit(url)
    if f"{parts.scheme}://{parts.netloc}" != base_url or not parts.path.startswith(_UPLOADS_PATH):
        return None
    return parts.path[len(_UPLOADS_PATH) :].rpartition(".")[0] or parts.path[len(_UPLOADS_PATH) :]


def _check_callback(body: object, webhook_url: str | None) -> InvalidField | None:
    """Refuse a ``callback_url`` unless the Token has a default webhook of the same scheme, host and port (§2.1).

    A JSON null counts as not sent (INF: what the gateway does with one is undocumented).
    """
    callback = body.get("callback_url") if isinstance(body, Mapping) else None
    if callback is None:
        return None
    wanted = url_origin(webhook_url) if webhook_url is not None else None
    if wanted is None:
        message = "Webhooks are not configured for this token; set a webhook URL before sending 'callback_url'."
        return InvalidField("callback_url", message, code="webhook_not_configured")
    if not isinstance(callback, str) or url_origin(callback) != wanted:
        scheme, host, port = wanted
        message = (
            f"The 'callback_url' must keep the scheme, host and port of the token's webhook URL "
            f"({scheme}://{host}:{port}); only the path and query may differ."
        )
        return InvalidField("callback_url", message)
    return None


async def _read_body(receive: Receive) -> bytes:
    """The whole request body (an ``http.disconnect`` ends it early)."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


@dataclass(slots=True)
class _Capture:
    """Shared between the recorder and a handler, so a deliberately dropped request is recorded *before*
    the connection closes (a client that sees the drop must already find the request in the record)."""

    record: Callable[[int | None], None]
    done: bool = False

    def finish(self, status: int | None) -> None:
        """Record once, with ``status`` (None: dropped without a response)."""
        if not self.done:
            self.done = True
            self.record(status)


_CAPTURE_KEY: Final = "pixmake.emulator.capture"


class _Recorder:
    """ASGI middleware that records every non-control request, its body and its status.

    The body is read before the app runs (and replayed to it), so a request answered without reading it
    (an injected fault, a 401) is still recorded with its JSON and size.
    """

    def __init__(self, app: ASGIApp, emulator: Emulator) -> None:
        self.app = app
        self.emulator = emulator

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith("/_emulator"):
            await self.app(scope, receive, send)
            return
        body = await _read_body(receive)
        replay: list[Message] = [{"type": "http.request", "body": body, "more_body": False}]
        status: list[int] = []

        def record(final_status: int | None) -> None:
            self.emulator.record(self._recorded(scope, body, final_status))

        capture = scope[_CAPTURE_KEY] = _Capture(record)

        async def receive_body() -> Message:
            return replay.pop() if replay else await receive()

        async def send_status(message: Message) -> None:
            if message["type"] == "http.response.start":
                status.append(message["status"])
                date = formatdate(self.emulator.now(), usegmt=True).encode()  # its clock, advanced or not
                message = {**message, "headers": [*message.get("headers", ()), (b"date", date)]}
            elif message["type"] == "http.response.body" and not message.get("more_body", False):
                capture.finish(status[0])  # before the last bytes leave: the client then sees a full record
            await send(message)

        try:
            await self.app(scope, receive_body, send_status)
        finally:
            capture.finish(status[0] if status else None)

    def _recorded(self, scope: Scope, body: bytes, status: int | None) -> RecordedRequest:
        headers = redact_headers(scope["headers"])
        return RecordedRequest(
            method=scope["method"],
            path=scope["path"],
            query=dict(parse_qsl(scope["query_string"].decode("latin-1"))),
            headers=headers,
            json=_maybe_json(headers.get("content-type", ""), body),
            body_size=len(body),
            status=status,
            time=self.emulator.now(),
        )


def _maybe_json(content_type: str, body: bytes) -> object | None:
    if "json" not in content_type or not body:
        return None
    try:
        parsed: object = json.loads(body)
    except ValueError:
        return None
    return parsed


async def _drop_connection(scope: Scope, receive: Receive, closer: ConnectionCloser | None) -> None:
    """Close the client's connection with no (further) response bytes.

    On a real server the transport is closed and we wait for uvicorn to notice, so nothing else is sent.
    In-process (``httpx.ASGITransport``) there is no connection, so raise what httpx raises for one.
    """
    if _CAPTURE_KEY in scope:
        scope[_CAPTURE_KEY].finish(None)
    if closer is not None and closer(scope.get("client")):
        with anyio.move_on_after(_DISCONNECT_WAIT):
            while (await receive())["type"] != "http.disconnect":
                pass
        return
    raise httpx.RemoteProtocolError("Server disconnected without sending a response.")


class _Download(Response):
    """A file body that can arrive slowly (``trickle``) or stop halfway (``truncate``)."""

    def __init__(
        self,
        data: bytes,
        media_type: str,
        *,
        fault: str | None,
        seconds: float,
        closer: ConnectionCloser | None,
    ) -> None:
        super().__init__(data, media_type=media_type)
        self.fault, self.seconds, self.closer = fault, seconds, closer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.fault is None:
            await super().__call__(scope, receive, send)
            return
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        if self.fault == "p_truncated_download":
            half = self.body[: len(self.body) // 2]
            await send({"type": "http.response.body", "body": half, "more_body": True})
            await _drop_connection(scope, receive, self.closer)
            return
        step = -(-len(self.body) // _SLOW_CHUNKS)
        for start in range(0, len(self.body), step):
            await anyio.sleep(self.seconds / _SLOW_CHUNKS)
            more = start + step < len(self.body)
            chunk = self.body[start : start + step]
            await send({"type": "http.response.body", "body": chunk, "more_body": more})


Handler = Callable[[Request], Awaitable[Response]]


class _Api:
    """The route handlers, bound to one emulator (and, on a real server, its connection closer)."""

    def __init__(self, emulator: Emulator, closer: ConnectionCloser | None) -> None:
        self.emu = emulator
        self.closer = closer

    # -- shared steps -------------------------------------------------------------------------------

    def _auth(self, request: Request) -> str | Response:
        """The request's API key, or the documented 401 (submit style on POST, status style on GET)."""
        key = self.emu.authenticate(request.headers.get("authorization"))
        if key is not None:
            return key
        kind = "unauthorized_submit" if request.method == "POST" else "unauthorized_query"
        return error_response(kind, self.emu.config)

    def _fault_response(self, fault: str | None, category: str) -> Response | None:
        if fault is None or fault in _AFTER_SUBMIT:
            return None
        if fault == "p_504_html":
            return HTMLResponse(_GATEWAY_504, status_code=504)
        headers: dict[str, str] = {}
        if fault == "p_429":
            config = self.emu.config
            burst = config.submit_burst if category == "async_submit" else config.query_burst
            headers = _rate_headers(RateDecision(False, category, burst, 0, 1, 1))
        return error_response(_FAULT_ERRORS[fault], self.emu.config, headers=headers)

    def _invalid(self, problem: InvalidField) -> Response:
        config = self.emu.config
        return error_response(problem.code, config, message=problem.message, param=problem.param)

    def _admit(self, request: Request, group: str, category: str) -> tuple[str, str | None, dict[str, str]] | Response:
        """Auth, then the fault draw, then (unless a fault hit) a token from the bucket of the key's user.

        Returns ``(key, fault, rate headers)`` for a request to serve, or the response refusing it. A drawn
        ``p_drop_after_submit`` or ``p_504_after_submit`` is returned as the fault (the handler creates the
        task, then fails).
        """
        key = self._auth(request)
        if isinstance(key, Response):
            return key
        fault = self.emu.draw_fault(group)
        refused = self._fault_response(fault, category)
        if refused is not None:
            return refused
        if fault is not None:  # one of _AFTER_SUBMIT: served without taking a token
            return key, fault, {}
        decision = self.emu.take_token(category, key)
        headers = _rate_headers(decision)
        if decision is not None and not decision.allowed:
            return error_response("rate_limit_exceeded", self.emu.config, headers=headers)
        return key, None, headers

    # -- task endpoints -----------------------------------------------------------------------------

    async def submit(self, request: Request) -> Response:
        """``POST /v1/images/generations``."""
        admitted = self._admit(request, "submit", "async_submit")
        if isinstance(admitted, Response):
            return admitted
        key, fault, headers = admitted
        try:
            body: object = json.loads(await request.body())
        except ValueError:
            return self._invalid(InvalidField("body", "The request body must be valid JSON."))
        result = validate_submit(body)
        if isinstance(result, InvalidField):
            return self._invalid(result)
        problem = _check_callback(body, self.emu.config.webhook_url) or self._check_inputs(result, _base_url(request))
        if problem is not None:
            return self._invalid(problem)
        try:
            task = self.emu.create_task(key, result)
        except QuotaExceeded:
            return error_response("insufficient_quota", self.emu.config)
        except KeyError:
            return self._invalid(InvalidField("client_business_id", "The 'client_business_id' is already used."))
        if fault == "p_drop_after_submit":
            await _drop_connection(request.scope, request.receive, self.closer)
        if fault == "p_504_after_submit":
            return HTMLResponse(_GATEWAY_504, status_code=504)
        return JSONResponse(submit_view(task, self.emu.config), headers=headers)

    def _hosted_upload(self, field: str, url: str, base_url: str) -> Upload | InvalidField | None:
        """The live upload ``url`` names, an :class:`InvalidField` if it names none, None for a foreign URL."""
        upload_id = _hosted_upload_id(url, base_url)
        if upload_id is None:
            return None
        upload = self.emu.get_upload(upload_id)
        if upload is None:
            return InvalidField(field, f"The '{field}' URL {url} is not a known upload.")
        if self.emu.upload_expired(upload):
            return InvalidField(field, f"The '{field}' URL {url} has expired; upload the image again.")
        return upload

    def _check_inputs(self, submission: Submission, base_url: str) -> InvalidField | None:
        """Refuse unknown or expired uploads, references of a format the model does not take, and an
        uploaded mask that cannot apply to the first reference."""
        formats = MODELS[submission.model].ref_formats
        first: Upload | None = None
        for position, (field, url) in enumerate(submission.references):
            found = self._hosted_upload(field, url, base_url)
            if isinstance(found, InvalidField):
                return found
            if found is not None and formats is not None and found.mime_type not in formats:
                wanted = ", ".join(sorted(_FORMAT_NAMES[mime] for mime in formats))
                message = f"The '{field}' image {url} is a {_FORMAT_NAMES[found.mime_type]}; {submission.model}"
                return InvalidField(field, f"{message} takes only {wanted} reference images.")
            first = found if position == 0 else first
        if submission.mask_url is None:
            return None
        mask = self._hosted_upload("mask_url", submission.mask_url, base_url)
        if mask is None or isinstance(mask, InvalidField):
            return mask
        if mask.mime_type != "image/png":
            return InvalidField("mask_url", "The 'mask_url' image must be a PNG.")
        if len(mask.data) > _MAX_MASK:
            return InvalidField("mask_url", "The 'mask_url' image must be at most 4 MB.")
        if first is not None and first.size != mask.size:
            wanted, got = ("x".join(map(str, size)) if size else "unknown" for size in (first.size, mask.size))
            message = f"The 'mask_url' image must be the size of the first reference image ({wanted}), not {got}."
            return InvalidField("mask_url", message)
        return None

    async def status(self, request: Request) -> Response:
        """``GET /v1/images/generations/{task_id}`` (or a client_business_id)."""
        admitted = self._admit(request, "query", "async_query")
        if isinstance(admitted, Response):
            return admitted
        key, _, headers = admitted
        task = self.emu.find_task(key, request.path_params["task_id"])
        if task is None:
            return error_response("not_found", self.emu.config, headers=headers)
        body = task_view(task, self.emu.now(), self.emu.config, _base_url(request))
        return JSONResponse(body, headers=headers)

    # -- uploads ------------------------------------------------------------------------------------

    async def upload(self, request: Request) -> Response:
        """``POST /v1/uploads/images`` (multipart ``file``, optional ``purpose``)."""
        key = self._auth(request)
        if isinstance(key, Response):
            return key
        refused = self._fault_response(self.emu.draw_fault("upload"), "upload")
        if refused is not None:
            return refused
        async with request.form(max_part_size=_MAX_UPLOAD) as form:
            file, purpose = form.get("file"), form.get("purpose")
            data = await file.read(_MAX_UPLOAD + 1) if isinstance(file, UploadFile) else None
        if data is None:
            return _upload_error("The 'file' field is required.")
        if len(data) > _MAX_UPLOAD:
            return _upload_error(_TOO_LARGE)
        sniffed = _sniff_image(data)
        if sniffed is None:
            return _upload_error(_UNSUPPORTED_IMAGE)
        purpose_text = purpose if isinstance(purpose, str) and purpose else "generation"
        upload = self.emu.add_upload(key, data, *sniffed, purpose=purpose_text, size=_pixel_size(data))
        url = f"{_base_url(request)}/files/uploads/{upload.id}.{upload.extension}"
        payload = {"id": upload.id, "url": url, "mime_type": upload.mime_type, "size": len(data)}
        return JSONResponse({"success": True, "message": "", "data": payload})

    # -- files --------------------------------------------------------------------------------------

    async def generated_file(self, request: Request) -> Response:
        """``GET /files/generated/<task>_<i>.png``: 404 until completed, ``expired_result_status`` once expired."""
        stem, _, extension = request.path_params["name"].rpartition(".")
        task_id, _, index_text = stem.rpartition("_")
        task = self.emu.task_by_id(task_id)
        index = int(index_text) if index_text.isdigit() else 0
        now, config = self.emu.now(), self.emu.config
        if task is None or extension != "png" or not 1 <= index <= task.images:
            return Response("Not Found", status_code=404)
        if now < task.finished or task.failure is not None:
            return Response("Not Found", status_code=404)
        if now >= expires_at(task, config):
            status = config.expired_result_status
            return Response({410: "Gone", 404: "Not Found", 403: "Forbidden"}[status], status_code=status)
        sub = task.submission
        key = (sub.model, sub.prompt, sub.width, sub.height, index, sub.n, task.id)
        data = cached_png(*key)
        if data is None:  # render off the event loop; hits stay inline
            data = await anyio.to_thread.run_sync(render_png, *key)
        fault = self.emu.draw_fault("download")
        if fault == "p_403_download":  # a CDN refusing the link (§1: clients without a User-Agent get 403)
            return Response("Forbidden", status_code=403)
        if fault == "p_404_download":  # a CDN edge that has not caught up with a fresh result yet
            return Response("Not Found", status_code=404)
        seconds = config.slow_download_seconds
        return _Download(data, "image/png", fault=fault, seconds=seconds, closer=self.closer)

    async def uploaded_file(self, request: Request) -> Response:
        """``GET /files/uploads/<id>.<ext>``: 410 once older than ``upload_ttl``."""
        upload_id = request.path_params["name"].rpartition(".")[0]
        upload = self.emu.get_upload(upload_id)
        if upload is None:
            return Response("Not Found", status_code=404)
        if self.emu.upload_expired(upload):
            return Response("Gone", status_code=410)
        return Response(upload.data, media_type=upload.mime_type)

    # -- catalogue and account ------------------------------------------------------------------------

    async def models(self, request: Request) -> Response:
        """``GET /v1/models?type=text|image|all`` (default text, §1)."""
        key = self._auth(request)
        if isinstance(key, Response):
            return key
        wanted = request.query_params.get("type", "text")
        kinds = {"text": ("text",), "image": ("image",), "all": ("text", "image")}.get(wanted, ("text",))
        catalogue = [(name, "text") for name in TEXT_MODELS] + [(name, "image") for name in MODELS]
        data = [_model_entry(name, kind) for name, kind in catalogue if kind in kinds]
        return JSONResponse({"object": "list", "data": data})

    async def balance(self, request: Request) -> Response:
        """``GET /v1/balance`` (token) and ``GET /v1/user/balance`` (user); amounts in USD (INF)."""
        key = self._auth(request)
        if isinstance(key, Response):
            return key
        quota = self.emu.config.quota_images
        used = round(self.emu.ledger.net_images * _USD_PER_IMAGE, 4)
        granted = 100.0 if quota is None else round(quota * _USD_PER_IMAGE, 4)
        if request.url.path == "/v1/user/balance":
            return JSONResponse(
                {
                    "object": "user.balance",
                    "balance": round(granted - used, 4),
                    "used": used,
                    "currency": "USD",
                }
            )
        body = {"object": "token.balance", "total_granted": granted, "total_used": used}
        body |= {"total_available": round(granted - used, 4), "unlimited": quota is None, "currency": "USD"}
        return JSONResponse(body)

    # -- control plane ------------------------------------------------------------------------------

    async def control_requests(self, request: Request) -> Response:
        """``GET /_emulator/requests``: the record as JSON."""
        return JSONResponse({"requests": [asdict(item) for item in self.emu.requests]})

    async def control_ledger(self, request: Request) -> Response:
        """``GET /_emulator/ledger``: entries plus totals."""
        ledger = self.emu.ledger
        entries = [asdict(entry) | {"net_images": entry.net_images} for entry in ledger.entries]
        totals = {"charged_images": ledger.charged_images, "refunded_images": ledger.refunded_images}
        return JSONResponse({"entries": entries, **totals, "net_images": ledger.net_images})

    async def control_config(self, request: Request) -> Response:
        """``GET``/``POST /_emulator/config``: read, or change some knobs (JSON object) keeping state."""
        if request.method == "POST":
            try:
                self.emu.reconfigure(config_from_mapping(await request.json(), self.emu.config))
            except (ValueError, TypeError) as exc:
                return JSONResponse({"error": str(exc)}, status_code=400)
        return JSONResponse(asdict(self.emu.config))

    async def control_reset(self, request: Request) -> Response:
        """``POST /_emulator/reset``: clear state; an optional JSON body replaces knobs from the defaults."""
        raw = await request.body()
        try:
            config = config_from_mapping(json.loads(raw)) if raw.strip() else None
        except (ValueError, TypeError) as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        self.emu.reset(config)
        return JSONResponse(asdict(self.emu.config))

    async def control_advance(self, request: Request) -> Response:
        """``POST /_emulator/advance`` with ``{"seconds": s}``: move the emulator clock forward."""
        body = await request.json()
        seconds = body.get("seconds") if isinstance(body, dict) else None
        if not isinstance(seconds, int | float) or isinstance(seconds, bool) or seconds < 0:
            return JSONResponse({"error": "'seconds' must be a non-negative number"}, status_code=400)
        self.emu.advance(float(seconds))
        return JSONResponse({"now": self.emu.now()})

    def routes(self) -> list[Route]:
        """The route table."""
        table: list[tuple[str, Handler, list[str]]] = [
            ("/v1/images/generations", self.submit, ["POST"]),
            ("/v1/images/generations/{task_id}", self.status, ["GET"]),
            ("/v1/uploads/images", self.upload, ["POST"]),
            ("/v1/models", self.models, ["GET"]),
            ("/v1/balance", self.balance, ["GET"]),
            ("/v1/user/balance", self.balance, ["GET"]),
            ("/files/generated/{name}", self.generated_file, ["GET"]),
            ("/files/uploads/{name}", self.uploaded_file, ["GET"]),
            ("/_emulator/requests", self.control_requests, ["GET"]),
            ("/_emulator/ledger", self.control_ledger, ["GET"]),
            ("/_emulator/config", self.control_config, ["GET", "POST"]),
            ("/_emulator/reset", self.control_reset, ["POST"]),
            ("/_emulator/advance", self.control_advance, ["POST"]),
        ]
        return [Route(path, handler, methods=methods) for path, handler, methods in table]


def _upload_error(message: str) -> JSONResponse:
    return JSONResponse({"success": False, "message": message}, status_code=400)


def _model_entry(name: str, kind: str) -> dict[str, object]:
    return {"id": name, "object": "model", "created": 1760000000, "owned_by": "toapis", "type": kind}


def create_app(emulator: Emulator, *, close_connection: ConnectionCloser | None = None) -> Starlette:
    """Build the ASGI app over ``emulator``.

    ``close_connection`` is given by :class:`~pixmake.emulator.server.EmulatorServer` so that dropped
    connections are real; without it (e.g. under ``httpx.ASGITransport``) a drop raises
    ``httpx.RemoteProtocolError`` into the caller, which is what httpx raises for a real drop.
    """
    app = Starlette(routes=_Api(emulator, close_connection).routes())
    app.add_middleware(_Recorder, emulator=emulator)
    return app
