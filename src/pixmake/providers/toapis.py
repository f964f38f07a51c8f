"""ToAPIs async image API over ``httpx.AsyncClient``: submit → poll → download, Bearer auth.

Every httpx exception and every non-2xx answer is translated to a ProviderError in exactly one
place (:func:`_translated` and :func:`_raise_for_status`), chained with ``from``. Facts and their
sources: ``shared/toapis-api.md``. The API key goes only to the API's own host; result files are
fetched with a separate client that carries no credentials.
"""

from __future__ import annotations

import contextlib
import itertools
import socket
import ssl
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any, Final

import httpx

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
from pixmake.providers.base import GenerationRequest, TaskState, TaskStatus
from pixmake.retry import parse_retry_after
from pixmake.settings import Settings

__all__ = ["ToapisProvider", "parse_task"]

_SUBMIT: Final = "/v1/images/generations"
_UPLOAD: Final = "/v1/uploads/images"
_DONE: Final = frozenset({"completed", "succeeded", "success"})
_SHARD: Final = 8  # targets in flight per connection pool
_FAILED: Final = frozenset({"failed", "failure", "error", "cancelled", "canceled", "expired"})
# Requests that surely never left this machine: safe to send again, even a submit.
_NOT_SENT: Final = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout, httpx.UnsupportedProtocol)


def _reason(error: httpx.RequestError) -> str:
    """A short cause for people, from the chain of exceptions under an httpx error."""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, ConnectionRefusedError):
            return "connection refused"
        if isinstance(seen, socket.gaierror):
            return "host name not found"
        if isinstance(seen, TimeoutError | httpx.TimeoutException):
            return "timed out"
        if isinstance(seen, ssl.SSLError):
            return f"TLS error: {seen.reason or seen}"
        seen = seen.__cause__ or seen.__context__
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__


def _where(error: httpx.RequestError) -> str:
    """The request's URL without credentials, query or fragment (a signed download URL carries a token)."""
    try:
        url = error.request.url
    except RuntimeError:
        return ""
    port = f":{url.port}" if url.port is not None else ""
    return f" {url.scheme}://{url.host}{port}{url.path}"


@contextlib.asynccontextmanager
async def _translated(what: str) -> AsyncIterator[None]:
    """Map httpx request errors to NetworkError, saying whether the request may have arrived.

    Not only transport errors: a body that fails to decode (``DecodingError``) or a redirect loop
    arrived at the server too, and must not escape as an httpx exception.
    """
    try:
        yield
    except _NOT_SENT as error:
        reason = _reason(error)
        raise NetworkError(f"{what}{_where(error)}: {reason}", sent=False, reason=reason) from error
    except httpx.RequestError as error:
        reason = _reason(error)
        raise NetworkError(f"{what}{_where(error)}: {reason}", sent=True, reason=reason) from error


def _error_fields(response: httpx.Response) -> tuple[str | None, str]:
    try:
        body = response.json()
    except ValueError:
        text = response.text.strip()
        looks_html = text[:200].lower().startswith(("<!doctype", "<html")) or "<title>" in text[:500].lower()
        summary = "gateway returned an HTML error page" if looks_html else (text[:200] or "empty body")
        return None, summary
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        code = error.get("code")
        return (None if code is None else str(code)), str(error.get("message") or error.get("type") or "error")
    if isinstance(body, dict) and "message" in body:
        return None, str(body["message"])
    return None, str(body)[:200]


def _raise_for_status(response: httpx.Response) -> None:
    status = response.status_code
    if 200 <= status < 300:
        return
    code, message = _error_fields(response)
    if status in (401, 403):
        raise AuthError(f"API key refused: {message}", status=status, code=code)
    if status == 402 or code == "insufficient_quota":
        raise QuotaError(f"insufficient balance: {message}", status=status, code=code)
    if status == 429 or (status == 503 and code == "rate_limit_unavailable"):
        retry_after = parse_retry_after(response.headers.get("Retry-After"), now=time.time())
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


def parse_task(body: Any) -> TaskStatus:
    """A task object (submit or status response) as a TaskStatus; raises ServerError if it is not one."""
    if not isinstance(body, dict) or not isinstance(body.get("id"), str):
        raise ServerError(f"unexpected task body: {str(body)[:200]}")
    status = str(body.get("status") or "queued").lower()
    state = TaskState.COMPLETED if status in _DONE else TaskState.FAILED if status in _FAILED else TaskState.RUNNING
    raw_error = body.get("error")
    error: dict[str, Any] = raw_error if isinstance(raw_error, dict) else {}
    progress = body.get("progress")
    return TaskStatus(
        task_id=body["id"],
        state=state,
        status=status,
        progress=progress if isinstance(progress, int) else 0,
        urls=_result_urls(body) if state is TaskState.COMPLETED else (),
        error_code=None if error.get("code") is None else str(error.get("code")),
        error_message=None if error.get("message") is None else str(error.get("message")),
    )


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError as error:
        raise ServerError(f"response is not JSON: {response.text[:200]!r}", status=response.status_code) from error


class ToapisProvider:
    """The ToAPIs task API; construct with resolved Settings, close with ``aclose``."""

    def __init__(self, settings: Settings, *, transport: httpx.AsyncBaseTransport | None = None) -> None:
        if settings.api_key is None:
            raise ProviderError(f"no API key: set the {settings.api_key_env} environment variable")
        timeout = httpx.Timeout(settings.request_timeout, connect=10.0)
        # httpcore checks every idle connection of a pool on every request, so one big pool costs
        # O(concurrency) syscalls per request; several small pools, used in turn, keep that constant.
        shards = max(1, -(-settings.concurrency // _SHARD))
        limits = httpx.Limits(max_connections=2 * _SHARD, max_keepalive_connections=2 * _SHARD)
        tls = ssl.create_default_context()  # one context for every client: each costs milliseconds to build
        headers = {"User-Agent": f"pixmake/{__version__}", "Accept": "application/json"}
        auth = {**headers, "Authorization": f"Bearer {settings.api_key.reveal()}"}
        self._apis = [
            httpx.AsyncClient(
                base_url=settings.base_url,
                timeout=timeout,
                limits=limits,
                transport=transport,
                headers=auth,
                verify=tls,
            )
            for _ in range(shards)
        ]
        self._files_clients = [
            httpx.AsyncClient(timeout=timeout, limits=limits, transport=transport, headers=headers, verify=tls)
            for _ in range(shards)
        ]
        self._next_api = itertools.cycle(self._apis)
        self._next_files = itertools.cycle(self._files_clients)

    @property
    def _api(self) -> httpx.AsyncClient:
        return next(self._next_api)

    @property
    def _files(self) -> httpx.AsyncClient:
        return next(self._next_files)

    async def upload(self, data: bytes, *, filename: str) -> str:
        """POST /v1/uploads/images (multipart ``file``); returns the hosted URL."""
        async with _translated("upload"):
            response = await self._api.post(_UPLOAD, files={"file": (filename, data)}, data={"purpose": "generation"})
        _raise_for_status(response)
        body = _json(response)
        if not isinstance(body, dict) or body.get("success") is False:
            message = body.get("message") if isinstance(body, dict) else body
            raise RequestRejectedError(f"upload refused: {message}", status=response.status_code)
        url = (body.get("data") or {}).get("url")
        if not isinstance(url, str):
            raise ServerError(f"upload answered without a URL: {str(body)[:200]}")
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
            payload["image_urls"] = list(request.image_urls)
        if request.mask_url is not None:
            payload["mask_url"] = request.mask_url
        async with _translated("submit"):
            response = await self._api.post(_SUBMIT, json=payload)
        _raise_for_status(response)
        return parse_task(_json(response))

    async def poll(self, task_id: str) -> TaskStatus:
        """GET /v1/images/generations/{task_id}."""
        async with _translated("poll"):
            response = await self._api.get(f"{_SUBMIT}/{task_id}")
        _raise_for_status(response)
        return parse_task(_json(response))

    async def find(self, client_business_id: str) -> TaskStatus | None:
        """GET /v1/images/generations/{client_business_id}; None on 404 (no such task)."""
        async with _translated("lookup"):
            response = await self._api.get(f"{_SUBMIT}/{client_business_id}")
        if response.status_code == 404:
            return None
        _raise_for_status(response)
        return parse_task(_json(response))

    async def download(self, url: str) -> bytes:
        """GET a result URL without credentials; raises BadResultError when the body is cut short."""
        async with _translated("download"):
            response = await self._files.get(url)
        _raise_for_status(response)
        expected = response.headers.get("Content-Length")
        encoded = "content-encoding" in response.headers  # length then counts compressed bytes
        if not encoded and expected is not None and expected.isdigit() and int(expected) != len(response.content):
            raise BadResultError(f"download truncated: {len(response.content)} of {expected} bytes")
        return response.content

    async def aclose(self) -> None:
        """Close both HTTP clients."""
        for client in (*self._apis, *self._files_clients):
            await client.aclose()
