"""Contract tests: each documented JSON example (tests/data/toapis_examples.json, from toapis-api.md §2-§5)
is matched field by field and type by type by what the emulator answers in the same situation."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import Env, png_bytes

__all__ = ["assert_matches"]

EXAMPLES = json.loads((Path(__file__).parent / "data" / "toapis_examples.json").read_text())["examples"]


def _documented_text(documented: str, actual: str) -> bool:
    """Equal, where each ``…`` the docs use to elide part of a string stands for any text."""
    return re.fullmatch(".*".join(re.escape(part) for part in documented.split("…")), actual, re.DOTALL) is not None


def assert_matches(documented: Any, actual: Any, vary: list[str], path: str = "") -> None:
    """Same keys, same JSON types at every level; equal values (up to ``…``) except at ``vary`` paths."""
    assert type(actual) is type(documented), (
        f"{path or '<body>'}: {type(actual).__name__} != {type(documented).__name__}"
    )
    if isinstance(documented, dict):
        assert set(actual) == set(documented), f"{path or '<body>'}: keys {sorted(actual)} != {sorted(documented)}"
        for key, item in documented.items():
            assert_matches(item, actual[key], vary, f"{path}.{key}" if path else key)
    elif isinstance(documented, list):
        assert len(actual) == len(documented), f"{path}: {len(actual)} items, documented {len(documented)}"
        for item, got in zip(documented, actual, strict=True):
            assert_matches(item, got, vary, f"{path}[]")
    elif isinstance(documented, str) and path not in vary:
        assert _documented_text(documented, actual), f"{path}: {actual!r} != documented {documented!r}"
    elif path not in vary:
        assert actual == documented, f"{path}: {actual!r} != documented {documented!r}"


def _documented_headers(documented: dict[str, Any], response: httpx.Response) -> dict[str, Any]:
    """The response's values of the documented headers; decimal integers parsed where the docs have a number."""
    got: dict[str, Any] = {}
    for name, value in documented.items():
        text = response.headers.get(name)
        got[name] = int(text) if isinstance(value, int) and text is not None and text.isdigit() else text
    return got


def _task(env: Env, **body: object) -> str:
    return str(env.submit(**body).json()["id"])


def _status_after(env: Env, seconds: float, **body: object) -> httpx.Response:
    task_id = _task(env, **body)
    env.clock.advance(seconds)
    return env.status(task_id)


def _upload(env: Env, data: bytes, name: str = "ref.jpg") -> httpx.Response:
    return env.client.post("/v1/uploads/images", files={"file": (name, data)})


SITUATIONS: dict[str, Callable[[Env], httpx.Response]] = {
    "submit": lambda env: env.submit(),
    "queued": lambda env: _status_after(env, 0),
    "in_progress": lambda env: _status_after(env, 20),
    "completed": lambda env: _status_after(env, 40),
    "completed_n4": lambda env: _status_after(env, 40, n=4),
    "failed": lambda env: _status_after(env.configure(p_task_failed=1.0), 40),
    "not_found": lambda env: env.status("task_img_does_not_exist"),
    "missing_prompt": lambda env: env.client.post("/v1/images/generations", json={"model": "gpt-4o-image"}),
    "unauthorized_submit": lambda env: env.client.post(
        "/v1/images/generations", json={}, headers={"Authorization": ""}
    ),
    "unauthorized_query": lambda env: env.client.get("/v1/images/generations/x", headers={"Authorization": "Bearer x"}),
    "unauthorized_account": lambda env: env.client.get("/v1/balance", headers={"Authorization": ""}),
    "insufficient_quota": lambda env: env.configure(quota_images=0).submit(),
    "rate_limited": lambda env: [env.configure(submit_rps=1.0, submit_burst=1).submit(), env.submit()][1],
    "rate_limited_query": lambda env: [env.configure(query_rps=1.0, query_burst=1).status("x"), env.status("x")][1],
    "limiter_unavailable": lambda env: env.configure(p_503_unavailable=1.0).submit(),
    "upload_ok": lambda env: _upload(env, png_bytes(fmt="JPEG")),
    "upload_bad_type": lambda env: _upload(env, b"plain text, not an image"),
    "upload_too_large": lambda env: _upload(env, b"\x89PNG\r\n\x1a\n" + bytes(10 * 1024 * 1024)),
}


@pytest.mark.parametrize("example", EXAMPLES, ids=[example["situation"] for example in EXAMPLES])
def test_documented_example_matches(env: Env, example: dict[str, Any]) -> None:
    response = SITUATIONS[example["situation"]](env)
    assert response.status_code == example["http_status"], response.text
    assert_matches(example["body"], response.json(), example["vary"])
    if "headers" in example:
        headers = _documented_headers(example["headers"], response)
        assert_matches(example["headers"], headers, example["vary"], "headers")


def test_every_situation_has_an_example() -> None:
    assert {example["situation"] for example in EXAMPLES} == set(SITUATIONS)


def test_completed_expires_24_hours_after_completion(env: Env) -> None:
    body = _status_after(env, 40).json()
    assert body["expires_at"] - body["completed_at"] == 86400
    assert body["completed_at"] - body["created_at"] == 40


def test_business_id_is_echoed_in_submit_and_status(env: Env) -> None:
    submitted = env.submit(client_business_id="order-1").json()
    assert submitted["client_business_id"] == "order-1"
    assert env.status("order-1").json()["id"] == submitted["id"]
