"""Behaviour of the ToAPIs emulator over real HTTP: lifecycle, validation, rate limits, every fault knob,
uploads, files, record and ledger, control endpoints, and the server's start/stop."""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from PIL import Image

from conftest import KEY, PACKAGE_ROOT, Env, png_bytes, png_size, run_cli
from pixmake.emulator import Emulator, EmulatorConfig, EmulatorServer, config_from_mapping, create_app
from pixmake.emulator.models import InvalidField, Submission, pixel_size, validate_submit
from pixmake.emulator.render import render_stats


def _id(response: httpx.Response) -> str:
    assert response.status_code == 200, response.text
    return str(response.json()["id"])


# -- lifecycle -----------------------------------------------------------------------------------------


def test_lifecycle_queued_then_rising_progress_then_completed(env: Env) -> None:
    task_id = _id(env.submit())
    seen: list[tuple[str, int]] = []
    for _ in range(9):
        body = env.status(task_id).json()
        seen.append((body["status"], body["progress"]))
        env.clock.advance(5)
    statuses = [status for status, _ in seen]
    assert statuses[0] == "queued" and statuses[-1] == "completed"
    running = [progress for status, progress in seen if status == "in_progress"]
    assert running == sorted(running) and len(set(running)) == len(running) >= 4
    assert all(1 <= progress <= 99 for progress in running)


def test_latency_jitter_is_seeded(env: Env) -> None:
    def finish_times(seed: int) -> list[float]:
        env.configure(latency=1.0, latency_jitter=10.0, seed=seed)
        ids = [_id(env.submit()) for _ in range(5)]
        return [env.server.emulator.find_task(KEY, task_id).finished for task_id in ids]  # type: ignore[union-attr]

    assert finish_times(1) == finish_times(1) != finish_times(2)


@pytest.mark.parametrize(("size", "pixels"), [("1:1", (1024, 1024)), ("3:2", (1536, 1024)), ("2:3", (1024, 1536))])
def test_result_files_are_pngs_of_the_documented_size(env: Env, size: str, pixels: tuple[int, int]) -> None:
    task_id = _id(env.submit(size=size, n=2))
    env.clock.advance(40)
    urls = [item["url"] for item in env.status(task_id).json()["result"]["data"]]
    assert [url.rsplit("/", 1)[1] for url in urls] == [f"{task_id}_1.png", f"{task_id}_2.png"]
    assert all(url.startswith(env.server.url + "/files/generated/") for url in urls)
    images = [env.client.get(url) for url in urls]
    assert all(image.headers["content-type"] == "image/png" for image in images)
    assert [png_size(image.content) for image in images] == [pixels, pixels]
    assert images[0].content != images[1].content


def test_result_files_are_one_bit_palette_pngs_rendered_once_per_image(env: Env) -> None:
    """Cheap to render and serve: two palette colours (background, white text) at 1 bit per pixel."""
    before = render_stats().renders
    task_id = _id(env.submit(prompt=f"palette check {time.time_ns()}"))
    env.clock.advance(40)
    url = f"/files/generated/{task_id}_1.png"
    with ThreadPoolExecutor(8) as pool:
        bodies = set(pool.map(lambda _: env.client.get(url).content, range(8)))
    assert len(bodies) == 1 and render_stats().renders == before + 1
    with Image.open(io.BytesIO(bodies.pop())) as image:
        assert (image.mode, image.size) == ("P", (1024, 1024))
        assert image.info.get("transparency") is None and len(image.getcolors() or ()) == 2
        assert image.getpalette()[3:6] == [255, 255, 255]  # type: ignore[index]  # white text


def test_images_are_deterministic_per_task_and_differ_between_tasks_for_one_prompt(env: Env) -> None:
    """As a provider's: a task's image is the same at each fetch; a second task for the prompt makes
    another (so a client keeping one task's images beside another's is seen to)."""
    first, second = _id(env.submit(prompt="same")), _id(env.submit(prompt="same"))
    other = _id(env.submit(prompt="different"))
    env.clock.advance(40)

    def image(task_id: str) -> bytes:
        return env.client.get(f"/files/generated/{task_id}_1.png").content

    assert image(first) == image(first) != image(second)
    assert len({image(first), image(second), image(other)}) == 3


def test_result_files_404_before_completion_and_410_after_expiry(env: Env) -> None:
    env.configure(latency=10.0, result_ttl=60.0)
    task_id = _id(env.submit())
    url = f"/files/generated/{task_id}_1.png"
    assert env.client.get(url).status_code == 404
    env.clock.advance(10)
    body = env.status(task_id).json()
    assert body["expires_at"] == body["completed_at"] + 60
    assert env.client.get(url).status_code == 200
    assert env.client.get(f"/files/generated/{task_id}_2.png").status_code == 404
    env.clock.advance(60)
    assert env.client.get(url).status_code == 410


# -- validation ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"n": "2"}, "n"),
        ({"n": True}, "n"),
        ({"n": 3}, "n"),
        ({"n": 2.0}, "n"),
        ({"size": "16:9"}, "size"),
        ({"size": "1024x1024"}, "size"),
        ({"prompt": "x" * 1001}, "prompt"),
        ({"prompt": ""}, "prompt"),
        ({"image_urls": ["https://example.com/a.png"] * 6}, "image_urls"),
        ({"image_urls": ["data:image/png;base64,AAAA"]}, "image_urls"),
        ({"image_urls": "https://example.com/a.png"}, "image_urls"),
        ({"mask_url": 5}, "mask_url"),
        ({"model": "dall-e-9"}, "model"),
        ({"client_business_id": 5}, "client_business_id"),
        ({"metadata": {"client_business_id": ""}}, "metadata.client_business_id"),
    ],
)
def test_invalid_submits_get_the_documented_400(env: Env, body: dict[str, object], param: str) -> None:
    response = env.submit(**body)
    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["code"], error["param"], error["type"]) == ("invalid_request", param, "invalid_request_error")
    assert env.server.emulator.ledger.charged_images == 0


def test_invalid_json_is_a_400(env: Env) -> None:
    response = env.client.post(
        "/v1/images/generations", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert response.status_code == 400 and response.json()["error"]["param"] == "body"


def test_valid_gpt_4o_requests_are_accepted(env: Env) -> None:
    refs = ["https://example.com/a.png"] * 5
    response = env.submit(prompt="x" * 1000, size="3:2", n=4, image_urls=refs, mask_url="https://example.com/m.png")
    assert response.status_code == 200
    assert env.server.emulator.ledger.charged_images == 4


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"model": "gpt-image-2", "size": "16:9", "n": 5, "resolution": "2k"}, (3648, 2048)),
        ({"model": "gpt-image-2", "size": "21:9", "resolution": "4k"}, (3840, 1648)),
        ({"model": "grok-4-1-image", "size": "9:16", "n": 4}, (1024, 1824)),
        ({"model": "gemini-3-pro-image-preview", "image_urls": [{"url": "https://e.com/a.png"}]}, (1024, 1024)),
        ({"model": "doubao-seedream-4-5", "n": 15}, (2048, 2048)),
        ({"model": "flux-2-pro", "metadata": {"resolution": "2K"}, "size": "4:3"}, (2736, 2048)),
    ],
)
def test_other_models_follow_their_table_row(body: dict[str, object], expected: tuple[int, int]) -> None:
    result = validate_submit({"prompt": "p"} | body)
    assert isinstance(result, Submission), result
    assert (result.width, result.height) == expected


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": "grok-4-1-image", "n": 3}, "n"),
        ({"model": "gpt-image-2", "size": "1:3"}, "size"),
        ({"model": "doubao-seedream-4-5", "n": 10, "image_urls": ["https://e.com/a.png"] * 6}, "image_urls"),
        ({"model": "flux-2-pro", "metadata": {"resolution": "8K"}}, "metadata.resolution"),
    ],
)
def test_other_models_reject_outside_their_row(body: dict[str, object], param: str) -> None:
    result = validate_submit({"prompt": "p"} | body)
    assert isinstance(result, InvalidField) and result.param == param


def test_pixel_size_matches_the_gpt_4o_table() -> None:
    assert [pixel_size(ratio, 1024) for ratio in ("1:1", "3:2", "2:3")] == [(1024, 1024), (1536, 1024), (1024, 1536)]


# -- callback_url (§2.1, [D-wh]) ---------------------------------------------------------------------------


def test_callback_url_without_a_token_webhook_is_refused_as_not_configured(env: Env) -> None:
    response = env.submit(callback_url="https://hooks.example.com/pixmake")
    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["code"], error["param"], error["type"]) == (
        "webhook_not_configured",
        "callback_url",
        "invalid_request_error",
    )
    assert env.submit(callback_url=None).status_code == 200  # null: not sent
    assert env.server.emulator.ledger.charged_images == 1


@pytest.mark.parametrize(
    ("callback", "accepted"),
    [
        ("https://hooks.example.com/pixmake", True),
        ("https://hooks.example.com/other/path?target=hero", True),  # path and query may differ
        ("https://HOOKS.example.com:443/x", True),  # the same origin, spelt out
        ("http://hooks.example.com/pixmake", False),  # another scheme
        ("https://evil.example.com/pixmake", False),  # another host
        ("https://hooks.example.com:8443/pixmake", False),  # another port
        ("hooks.example.com/pixmake", False),
        (["https://hooks.example.com/pixmake"], False),
    ],
)
def test_callback_url_must_keep_the_token_webhooks_scheme_host_and_port(
    env: Env, callback: object, accepted: bool
) -> None:
    env.configure(webhook_url="https://hooks.example.com/pixmake")
    response = env.submit(callback_url=callback)
    if accepted:
        assert response.status_code == 200, response.text
    else:
        assert "https://hooks.example.com:443" in _refused(response, "callback_url")
    assert env.server.emulator.ledger.charged_images == int(accepted)


# -- auth, business ids, scoping -------------------------------------------------------------------------


def test_configured_api_key_is_required(env: Env) -> None:
    env.configure(api_key=KEY)
    assert env.submit().status_code == 200
    other = env.client.post("/v1/images/generations", json={}, headers={"Authorization": "Bearer sk-other"})
    assert other.status_code == 401
    assert env.client.get("/v1/models", headers={"Authorization": "sk-no-bearer"}).status_code == 401


def test_business_id_in_metadata_and_scoped_to_the_key(env: Env) -> None:
    task_id = _id(env.submit(metadata={"client_business_id": "job-7"}))
    assert env.status("job-7").json()["id"] == task_id
    stranger = {"Authorization": "Bearer sk-someone-else"}
    assert env.client.get("/v1/images/generations/job-7", headers=stranger).status_code == 404
    assert env.client.get(f"/v1/images/generations/{task_id}", headers=stranger).status_code == 404


def test_reused_business_id_creates_and_charges_another_task(env: Env) -> None:
    first, second = _id(env.submit(client_business_id="b")), _id(env.submit(client_business_id="b"))
    assert first != second
    assert env.status("b").json()["id"] == second
    assert env.server.emulator.ledger.charged_images == 2


def test_reused_business_id_can_be_rejected(env: Env) -> None:
    env.configure(duplicate_business_id="reject")
    _id(env.submit(client_business_id="b"))
    response = env.submit(client_business_id="b")
    assert response.status_code == 400 and response.json()["error"]["param"] == "client_business_id"
    assert env.server.emulator.ledger.charged_images == 1


# -- rate limits -----------------------------------------------------------------------------------------


def test_submit_bucket_limits_and_refills(env: Env) -> None:
    env.configure(submit_rps=2.0, submit_burst=3)
    accepted = [env.submit() for _ in range(3)]
    assert [r.headers["X-RateLimit-Remaining"] for r in accepted] == ["2", "1", "0"]
    limited = env.submit()
    assert limited.status_code == 429
    assert limited.json() == {"error": {"code": "rate_limit_exceeded", "message": "Async task request rate exceeded"}}
    headers = limited.headers
    assert (headers["Retry-After"], headers["X-RateLimit-Limit"], headers["X-RateLimit-Remaining"]) == ("1", "3", "0")
    assert headers["X-RateLimit-Category"] == "async_submit"
    assert env.status(_id(accepted[0])).status_code == 200  # the query bucket is separate
    env.clock.advance(0.5)
    assert env.submit().status_code == 200
    assert env.submit().status_code == 429
    assert env.server.emulator.ledger.charged_images == 4


def test_rejected_requests_do_not_consume_tokens(env: Env) -> None:
    env.configure(query_rps=1.0, query_burst=2)
    assert [env.status("nope").status_code for _ in range(5)] == [404, 404, 429, 429, 429]
    env.clock.advance(1.0)
    response = env.status("nope")
    assert response.status_code == 404 and response.headers["X-RateLimit-Category"] == "async_query"
    assert env.status("nope").status_code == 429


def _as(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_buckets_are_per_user_all_of_a_users_keys_share_them(env: Env) -> None:
    """§4.2: token buckets per user; a key the ``users`` knob does not list is a user of its own."""
    env.configure(submit_rps=1.0, submit_burst=1, query_rps=1.0, query_burst=1, users={KEY: "ann", "sk-ann-2": "ann"})
    body = {"model": "gpt-4o-image", "prompt": "p"}
    assert env.submit().status_code == 200
    assert env.client.post("/v1/images/generations", json=body, headers=_as("sk-ann-2")).status_code == 429
    assert env.client.post("/v1/images/generations", json=body, headers=_as("sk-bob")).status_code == 200
    assert env.client.get("/v1/images/generations/x", headers=_as("sk-ann-2")).status_code == 404
    assert env.status("x").status_code == 429
    assert env.client.get("/v1/images/generations/x", headers=_as("sk-carol")).status_code == 404


def test_tasks_and_business_ids_are_scoped_to_the_keys_user(env: Env) -> None:
    env.configure(users={KEY: "ann", "sk-ann-2": "ann"}, duplicate_business_id="reject")
    task_id = _id(env.submit(client_business_id="job-9"))
    for path in (task_id, "job-9"):
        found = env.client.get(f"/v1/images/generations/{path}", headers=_as("sk-ann-2"))
        assert found.status_code == 200 and found.json()["id"] == task_id
        assert env.client.get(f"/v1/images/generations/{path}", headers=_as("sk-bob")).status_code == 404
    again = env.client.post(
        "/v1/images/generations",
        json={"model": "gpt-4o-image", "prompt": "p", "client_business_id": "job-9"},
        headers=_as("sk-ann-2"),
    )
    assert again.status_code == 400  # the same user's business id, from another of her keys
    bobs = env.client.post(
        "/v1/images/generations",
        json={"model": "gpt-4o-image", "prompt": "p", "client_business_id": "job-9"},
        headers=_as("sk-bob"),
    )
    assert bobs.status_code == 200 and env.status("job-9").json()["id"] == task_id


# -- fault knobs -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("knob", "status"), [("p_429", 429), ("p_500", 500), ("p_502", 502)])
def test_injected_errors_on_submit_charge_nothing(env: Env, knob: str, status: int) -> None:
    env.configure(submit_rps=5.0, **{knob: 1.0})
    response = env.submit()
    assert response.status_code == status
    assert "code" in response.json()["error"]
    assert env.server.emulator.ledger.charged_images == 0
    if status == 429:
        assert response.headers["Retry-After"] == "1"


def test_injected_errors_hit_queries_too(env: Env) -> None:
    task_id = _id(env.submit())
    env.server.emulator.reconfigure(EmulatorConfig(p_500=1.0, submit_rps=None, query_rps=None))
    assert env.status(task_id).status_code == 500


def test_html_504_gateway_page(env: Env) -> None:
    env.configure(p_504_html=1.0)
    response = env.submit()
    assert response.status_code == 504
    assert response.headers["content-type"].startswith("text/html")
    assert "504 Gateway Time-out" in response.text and "tengine" in response.text
    with pytest.raises(json.JSONDecodeError):
        response.json()


def test_503_limiter_unavailable_is_submit_only(env: Env) -> None:
    task_id = _id(env.submit())
    env.server.emulator.reconfigure(EmulatorConfig(p_503_unavailable=1.0, submit_rps=None, query_rps=None))
    assert env.submit().status_code == 503
    assert env.status(task_id).status_code == 200


@pytest.mark.parametrize(
    ("knob", "code"), [("p_task_failed", "generation_failed"), ("p_content_policy", "content_policy_violation")]
)
def test_failed_tasks_are_refunded_once_failed(env: Env, knob: str, code: str) -> None:
    env.configure(**{knob: 1.0})
    task_id = _id(env.submit(n=2))
    assert env.server.emulator.ledger.refunded_images == 0
    env.clock.advance(20)
    assert env.status(task_id).json()["status"] == "in_progress"
    env.clock.advance(20)
    body = env.status(task_id).json()
    assert (body["status"], body["progress"], body["error"]["code"]) == ("failed", 0, code)
    ledger = env.server.emulator.ledger
    assert (ledger.charged_images, ledger.refunded_images, ledger.net_images) == (2, 2, 0)
    assert env.client.get(f"/files/generated/{task_id}_1.png").status_code == 404


def test_fault_sequences_are_reproducible_from_the_seed(env: Env) -> None:
    def sequence(seed: int) -> list[int]:
        env.configure(p_500=0.3, p_502=0.2, seed=seed)
        return [env.submit().status_code for _ in range(30)]

    first = sequence(7)
    assert first == sequence(7) != sequence(8)
    assert {200, 500, 502} <= set(first)


@pytest.mark.parametrize(("knob", "status"), [("p_504_html", 504), ("p_500", 500), ("p_429", 429)])
def test_faulted_submits_are_recorded_with_their_body(env: Env, knob: str, status: int) -> None:
    env.configure(**{knob: 1.0})
    assert env.submit(client_business_id=f"cb-{knob}").status_code == status
    (recorded,) = env.server.emulator.submits()
    assert recorded.status == status and recorded.body_size > 0
    assert isinstance(recorded.json, dict) and recorded.json["client_business_id"] == f"cb-{knob}"
    denied = env.client.post("/v1/images/generations", json={"prompt": "x"}, headers={"Authorization": ""})
    assert denied.status_code == 401 and env.server.emulator.submits()[-1].json == {"prompt": "x"}


def test_short_result_completes_with_one_image_fewer_charged_n(env: Env) -> None:
    env.configure(p_short_result=1.0, top_level_url=True)
    pair, single = _id(env.submit(n=2)), _id(env.submit(n=1))
    env.clock.advance(40)
    pair_body, single_body = env.status(pair).json(), env.status(single).json()
    assert pair_body["status"] == single_body["status"] == "completed"
    assert [item["url"].rsplit("/", 1)[1] for item in pair_body["result"]["data"]] == [f"{pair}_1.png"]
    assert single_body["result"]["data"] == [] and "url" not in single_body
    assert env.client.get(f"/files/generated/{pair}_1.png").status_code == 200
    assert env.client.get(f"/files/generated/{pair}_2.png").status_code == 404
    ledger = env.server.emulator.ledger
    assert (ledger.charged_images, ledger.refunded_images, ledger.net_images) == (3, 0, 3)  # charged by n


def test_short_result_shares_the_outcome_draw(env: Env) -> None:
    env.configure(p_task_failed=0.3, p_short_result=0.3, seed=4)
    ids = [_id(env.submit(n=2)) for _ in range(40)]
    env.clock.advance(40)
    bodies = [env.status(task_id).json() for task_id in ids]
    counts = [len(b["result"]["data"]) if b["status"] == "completed" else 0 for b in bodies]
    assert {b["status"] for b in bodies} == {"completed", "failed"} and set(counts) == {0, 1, 2}
    assert env.server.emulator.ledger.net_images == 2 * sum(1 for b in bodies if b["status"] == "completed")


def test_drop_after_submit_creates_and_charges_then_drops(env: Env) -> None:
    env.configure(p_drop_after_submit=1.0)
    with pytest.raises(httpx.RemoteProtocolError):
        env.submit(client_business_id="lost-1", n=2)
    assert env.server.emulator.ledger.charged_images == 2
    (recorded,) = env.server.emulator.submits()
    assert recorded.status is None
    env.server.emulator.reconfigure(EmulatorConfig(latency=40.0, submit_rps=None, query_rps=None))
    assert env.status("lost-1").json()["status"] == "queued"  # the task exists: look it up, never resubmit


def test_504_after_submit_creates_and_charges_then_answers_a_gateway_page(env: Env) -> None:
    env.configure(p_504_after_submit=1.0)
    response = env.submit(client_business_id="lost-2", n=2)
    assert response.status_code == 504 and "Gateway Time-out" in response.text
    assert env.server.emulator.ledger.charged_images == 2
    env.server.emulator.reconfigure(EmulatorConfig(latency=40.0, submit_rps=None, query_rps=None))
    assert env.status("lost-2").json()["status"] == "queued"  # the task exists: look it up, never resubmit


def test_drop_in_process_raises_the_same_transport_error() -> None:
    emulator = Emulator(EmulatorConfig(p_drop_after_submit=1.0))

    async def main() -> None:
        transport = httpx.ASGITransport(app=create_app(emulator))
        async with httpx.AsyncClient(transport=transport, base_url="http://emulator") as client:
            with pytest.raises(httpx.RemoteProtocolError):
                await client.post(
                    "/v1/images/generations",
                    json={"model": "gpt-4o-image", "prompt": "p"},
                    headers={"Authorization": "Bearer sk-x"},
                )

    anyio.run(main)
    assert emulator.ledger.charged_images == 1


def test_truncated_download_is_detectable(env: Env) -> None:
    task_id = _id(env.submit())
    env.clock.advance(40)
    env.server.emulator.reconfigure(EmulatorConfig(p_truncated_download=1.0))
    with pytest.raises(httpx.RemoteProtocolError, match=r"incomplete|complete message body"):
        env.client.get(f"/files/generated/{task_id}_1.png")


def test_slow_download_trickles_the_whole_body(env: Env) -> None:
    task_id = _id(env.submit())
    env.clock.advance(40)
    url = f"/files/generated/{task_id}_1.png"
    whole = env.client.get(url).content
    env.server.emulator.reconfigure(EmulatorConfig(p_slow_download=1.0, slow_download_seconds=0.3))
    started = time.perf_counter()
    assert env.client.get(url).content == whole
    assert time.perf_counter() - started >= 0.25
    with pytest.raises(httpx.ReadTimeout):
        env.client.get(url, timeout=httpx.Timeout(5, read=0.01))


@pytest.mark.parametrize("dialect", ["submitted", "pending"])
def test_status_dialect(env: Env, dialect: str) -> None:
    env.configure(status_dialect=dialect)
    submitted = env.submit().json()
    assert submitted["status"] == dialect
    assert env.status(submitted["id"]).json()["status"] == dialect


def test_integer_error_codes(env: Env) -> None:
    env.configure(error_code_style="int", submit_rps=1.0, submit_burst=2)
    assert env.submit(n="1").json()["error"]["code"] == 400  # a business failure still uses a token (§4.2)
    assert env.submit().status_code == 200
    assert env.submit().json()["error"]["code"] == 429
    unauthorized = env.client.post("/v1/images/generations", json={}, headers={"Authorization": ""})
    assert unauthorized.json()["error"]["code"] == 401


@pytest.mark.parametrize(
    ("style", "where"), [("result", ("result", "data")), ("images", ("images",)), ("data", ("data",))]
)
def test_result_placement_and_top_level_url(env: Env, style: str, where: tuple[str, ...]) -> None:
    env.configure(result_style=style, top_level_url=True)
    task_id = _id(env.submit(n=2))
    env.clock.advance(40)
    body: Any = env.status(task_id).json()
    items = body
    for key in where:
        items = items[key]
    assert len(items) == 2 and body["url"] == items[0]["url"]


# -- uploads -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "mime"), [("PNG", "image/png"), ("JPEG", "image/jpeg"), ("WEBP", "image/webp"), ("GIF", "image/gif")]
)
def test_upload_round_trip(env: Env, fmt: str, mime: str) -> None:
    data = png_bytes(fmt=fmt)
    response = env.client.post("/v1/uploads/images", files={"file": ("x.bin", data)}, data={"purpose": "edit"})
    payload = response.json()["data"]
    assert (payload["mime_type"], payload["size"]) == (mime, len(data))
    assert payload["url"].startswith(f"{env.server.url}/files/uploads/{payload['id']}.")
    served = env.client.get(payload["url"])
    assert served.content == data and served.headers["content-type"] == mime


def test_upload_without_file_or_auth(env: Env) -> None:
    assert env.client.post("/v1/uploads/images", data={"purpose": "x"}).json()["success"] is False
    denied = env.client.post("/v1/uploads/images", files={"file": ("a", png_bytes())}, headers={"Authorization": ""})
    assert denied.status_code == 401
    assert env.client.get("/files/uploads/upload_missing.png").status_code == 404


def _upload_url(env: Env, data: bytes) -> str:
    response = env.client.post("/v1/uploads/images", files={"file": ("ref.png", data)})
    assert response.status_code == 200, response.text
    return str(response.json()["data"]["url"])


def _refused(response: httpx.Response, param: str) -> str:
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert (error["code"], error["type"], error["param"]) == ("invalid_request", "invalid_request_error", param)
    return str(error["message"])


def test_uploads_expire_after_upload_ttl(env: Env) -> None:
    env.configure(upload_ttl=60.0)
    url = _upload_url(env, png_bytes())
    env.clock.advance(59)
    assert env.client.get(url).status_code == 200
    assert env.submit(image_urls=[url]).status_code == 200
    env.clock.advance(1)
    assert env.client.get(url).status_code == 410
    assert "expired" in _refused(env.submit(image_urls=["https://example.com/a.png", url]), "image_urls")
    assert "expired" in _refused(env.submit(mask_url=url), "mask_url")
    assert env.server.emulator.ledger.charged_images == 1


def test_uploads_never_expire_by_default(env: Env) -> None:
    url = _upload_url(env, png_bytes())
    env.clock.advance(10 * 365 * 86400)
    assert env.client.get(url).status_code == 200 and env.submit(image_urls=[url]).status_code == 200


def test_unknown_emulator_uploads_are_refused_foreign_urls_accepted(env: Env) -> None:
    unknown = f"{env.server.url}/files/uploads/upload_0000000000000000.png"
    assert "not a known upload" in _refused(env.submit(image_urls=[unknown]), "image_urls")
    assert "not a known upload" in _refused(env.submit(mask_url=unknown), "mask_url")
    gpt2 = {"model": "gpt-image-2", "reference_images": [unknown]}
    _refused(env.submit(**gpt2), "reference_images")
    foreign = ["https://assets.example.com/gone.png", "http://127.0.0.1:1/files/uploads/upload_x.png"]
    assert env.submit(image_urls=foreign, mask_url=foreign[0]).status_code == 200
    assert env.server.emulator.ledger.charged_images == 1


@pytest.mark.parametrize(
    ("model", "field", "fmt", "accepted"),
    [
        ("gpt-4o-image", "image_urls", "GIF", False),  # §5: uploadable, but not a gpt-4o-image reference format
        ("gpt-4o-image", "image_urls", "JPEG", True),
        ("gpt-4o-image", "image_urls", "WEBP", True),
        ("gpt-image-2", "reference_images", "WEBP", False),  # [D-g2e]: PNG/JPG
        ("gpt-image-2", "image_urls", "GIF", False),
        ("gpt-image-2", "reference_images", "JPEG", True),
        ("gemini-3-pro-image-preview", "image_urls", "GIF", False),  # [D-gem3]: jpeg/jpg/png/webp
        ("gemini-3-pro-image-preview", "image_urls", "WEBP", True),
        ("grok-4-1-image", "image_urls", "GIF", True),  # no formats documented: any upload
    ],
)
def test_an_uploaded_reference_must_be_a_format_the_model_takes(
    env: Env, model: str, field: str, fmt: str, accepted: bool
) -> None:
    png, other = _upload_url(env, png_bytes()), _upload_url(env, png_bytes(fmt=fmt))
    refs: list[object] = [png, other]
    response = env.submit(model=model, **{field: [{"url": url} for url in refs] if "gemini" in model else refs})
    if accepted:
        assert response.status_code == 200, response.text
    else:
        message = _refused(response, field)
        assert other in message and model in message and "PNG" in message
        assert {"GIF": "a GIF", "WEBP": "a WebP"}[fmt] in message
    assert env.server.emulator.ledger.charged_images == int(accepted)


def test_an_uploaded_mask_must_be_a_png_the_size_of_the_first_reference(env: Env) -> None:
    ref = _upload_url(env, png_bytes((64, 48)))
    other = _upload_url(env, png_bytes((32, 32)))
    assert env.submit(image_urls=[ref, other], mask_url=_upload_url(env, png_bytes((64, 48)))).status_code == 200
    message = _refused(env.submit(image_urls=[ref], mask_url=other), "mask_url")
    assert "64x48" in message and "32x32" in message
    _refused(env.submit(image_urls=[ref], mask_url=_upload_url(env, png_bytes((64, 48), "JPEG"))), "mask_url")
    _refused(env.submit(mask_url=_upload_url(env, png_bytes((64, 48), "WEBP"))), "mask_url")  # not a PNG
    foreign = ["https://assets.example.com/ref.png"]
    assert env.submit(image_urls=foreign, mask_url=other).status_code == 200  # size unknown: not checked
    assert env.submit(image_urls=[ref], mask_url=foreign[0]).status_code == 200
    assert env.server.emulator.ledger.charged_images == 3


# -- record, ledger, catalogue, control plane --------------------------------------------------------------


def test_record_redacts_the_key_everywhere(env: Env) -> None:
    env.submit(client_business_id="r1")
    env.status("r1")
    recorded = env.server.emulator.requests
    assert [(r.method, r.path, r.status) for r in recorded] == [
        ("POST", "/v1/images/generations", 200),
        ("GET", "/v1/images/generations/r1", 200),
    ]
    assert recorded[0].json == {"model": "gpt-4o-image", "prompt": "a lighthouse at dusk", "client_business_id": "r1"}
    assert recorded[0].headers["authorization"] == "Bearer sk-…redacted"
    over_http = env.client.get("/_emulator/requests").text
    assert KEY not in repr(recorded) and KEY not in over_http and "SECRET" not in over_http
    assert len(json.loads(over_http)["requests"]) == 2  # control requests are not recorded


def test_ledger_over_http(env: Env) -> None:
    env.submit(n=4, client_business_id="L")
    ledger = env.client.get("/_emulator/ledger").json()
    assert (ledger["charged_images"], ledger["refunded_images"], ledger["net_images"]) == (4, 0, 4)
    (entry,) = ledger["entries"]
    assert (entry["client_business_id"], entry["n"], entry["refunded"], entry["net_images"]) == ("L", 4, False, 4)


def test_control_config_reset_and_advance(env: Env) -> None:
    changed = env.client.post("/_emulator/config", json={"p_500": 1.0, "status_dialect": "pending"}).json()
    assert (changed["p_500"], changed["latency"]) == (1.0, 40.0)
    assert env.submit().status_code == 500
    assert env.client.post("/_emulator/config", json={"p_9000": 1}).status_code == 400
    assert env.client.post("/_emulator/config", json={"p_500": 2}).status_code == 400
    assert env.client.post("/_emulator/config", json={"users": {"sk-x": "ann"}}).json()["users"] == {"sk-x": "ann"}
    reset = env.client.post("/_emulator/reset", json={"latency": 5}).json()
    assert (reset["p_500"], reset["latency"]) == (0.0, 5.0)
    assert env.server.emulator.requests == []
    task_id = _id(env.submit())
    env.client.post("/_emulator/advance", json={"seconds": 5})
    assert env.status(task_id).json()["status"] == "completed"
    assert env.client.post("/_emulator/advance", json={"seconds": -1}).status_code == 400


def test_models_and_balances(env: Env) -> None:
    images = {m["id"] for m in env.client.get("/v1/models", params={"type": "image"}).json()["data"]}
    assert {"gpt-4o-image", "gpt-image-2", "flux-2-pro"} <= images
    assert "gpt-4o-image" not in {m["id"] for m in env.client.get("/v1/models").json()["data"]}
    env.configure(quota_images=10)
    env.submit(n=4)
    token = env.client.get("/v1/balance").json()
    user = env.client.get("/v1/user/balance").json()
    assert token["total_used"] == user["used"] > 0 and token["total_available"] == user["balance"]
    assert env.submit(n=4).status_code == 200
    assert env.submit(n=4).status_code == 402
    assert env.client.get("/v1/balance", headers={"Authorization": ""}).json()["error"]["code"] == 401


def test_config_from_mapping_coerces_cli_strings() -> None:
    config = config_from_mapping({"p_500": "0.25", "submit_rps": "none", "top_level_url": "true", "seed": "3"})
    assert (config.p_500, config.submit_rps, config.top_level_url, config.seed) == (0.25, None, True, 3)
    config = config_from_mapping({"upload_ttl": "90", "p_short_result": "0.5"})
    assert (config.upload_ttl, config.p_short_result) == (90.0, 0.5)
    assert config_from_mapping({"upload_ttl": "none"}, config).upload_ttl is None
    config = config_from_mapping({"webhook_url": "https://hooks.example.com/h"})
    assert config.webhook_url == "https://hooks.example.com/h"
    assert config_from_mapping({"webhook_url": "none"}, config).webhook_url is None
    config = config_from_mapping({"users": "sk-a:ann, sk-b:ann,sk-c:bob"})
    assert config.users == {"sk-a": "ann", "sk-b": "ann", "sk-c": "bob"}
    assert config_from_mapping({"users": {"sk-a": "ann"}}).users == {"sk-a": "ann"}
    assert config_from_mapping({"users": "none"}, config).users is None
    bad_knobs: list[dict[str, object]] = [{"nope": 1}, {"latency": "fast"}, {"p_429": 0.6, "p_500": 0.6}]
    bad_knobs += [{"status_dialect": "done"}, {"upload_ttl": -1}, {"p_task_failed": 0.6, "p_short_result": 0.6}]
    bad_knobs += [{"webhook_url": "hooks.example.com"}, {"webhook_url": "https://h.example.com:99999/"}]
    bad_knobs += [{"users": "sk-a"}, {"users": "sk-a:ann,"}, {"users": {"sk-a": 5}}, {"users": ["sk-a"]}]
    for bad in bad_knobs:
        with pytest.raises(ValueError):
            config_from_mapping(bad)


# -- the server ----------------------------------------------------------------------------------------------


def test_server_starts_on_a_free_port_and_an_open_download_does_not_hold_up_its_stop() -> None:
    """A 60 s download in flight is cut by the 1 s graceful shutdown: the server thread is joined (within its
    5 s stop timeout) before the context manager returns, and the client sees its download broken."""
    threads_before = set(threading.enumerate())
    config = EmulatorConfig(latency=0.0, p_slow_download=1.0, slow_download_seconds=60.0)
    outcome: list[BaseException | None] = []
    streaming = threading.Event()
    headers = {"Authorization": "Bearer sk-1"}
    with EmulatorServer(config) as server, httpx.Client(base_url=server.url, headers=headers, timeout=30) as client:
        assert server.url.startswith("http://127.0.0.1:") and server.port > 0
        task_id = _id(client.post("/v1/images/generations", json={"model": "gpt-4o-image", "prompt": "p"}))
        [url] = [item["url"] for item in client.get(f"/v1/images/generations/{task_id}").json()["result"]["data"]]

        def download() -> None:
            try:
                with httpx.stream("GET", url, timeout=30) as response:
                    streaming.set()  # headers are in, the body trickles for 60 s
                    response.read()
                outcome.append(None)
            except httpx.HTTPError as error:
                outcome.append(error)

        downloader = threading.Thread(target=download)
        downloader.start()
        assert streaming.wait(10)
    assert f"emulator {server.url}" not in {t.name for t in threading.enumerate()}  # joined before __exit__ returned
    downloader.join(30)
    # The rest (anyio's worker thread that rendered the image) stop once their loop has ended, soon after.
    deadline = time.monotonic() + 5
    while not set(threading.enumerate()) <= threads_before and time.monotonic() < deadline:
        time.sleep(0.02)
    assert set(threading.enumerate()) <= threads_before
    assert len(outcome) == 1 and isinstance(outcome[0], httpx.RemoteProtocolError)


def test_emulator_command_sets_knobs_and_the_api_key() -> None:
    command = [sys.executable, "-m", "pixmake", "emulator", "--port", "0", "--api-key", "sk-only-this"]
    command += ["--knob", "p_500=1", "--knob", "status_dialect=pending", "--latency", "3"]
    env = {**os.environ, "PYTHONPATH": str(PACKAGE_ROOT)}
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env) as server:
        try:
            assert server.stdout is not None
            line = server.stdout.readline()
            assert line.startswith("emulator listening on http://127.0.0.1:"), line
            url = line.rsplit(" ", 1)[1].strip()
            assert server.stdout.readline() == (
                f"to build against it: PIXMAKE_BASE_URL={url} TOAPIS_API_KEY=sk-only-this pixmake build\n"
            )  # what a new user has to know to use it
            with httpx.Client(base_url=line.rsplit(" ", 1)[1].strip(), timeout=5) as client:
                body = {"model": "gpt-4o-image", "prompt": "p"}
                other = client.post("/v1/images/generations", json=body, headers={"Authorization": f"Bearer {KEY}"})
                mine = client.post(
                    "/v1/images/generations", json=body, headers={"Authorization": "Bearer sk-only-this"}
                )
                config = client.get("/_emulator/config").json()
            assert (other.status_code, mine.status_code) == (401, 500)
            assert (config["p_500"], config["status_dialect"], config["latency"]) == (1.0, "pending", 3.0)
        finally:
            server.terminate()
            server.wait(timeout=10)


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_stopping_the_emulator_is_its_normal_end_not_a_failure(stop: signal.Signals) -> None:
    command = [sys.executable, "-m", "pixmake", "emulator", "--port", "0"]
    env = {**os.environ, "PYTHONPATH": str(PACKAGE_ROOT)}
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) as server:
        assert server.stdout is not None and server.stderr is not None
        assert server.stdout.readline().startswith("emulator listening on http://127.0.0.1:")
        server.send_signal(stop)
        stderr = server.stderr.read()
        assert server.wait(timeout=10) == 0 and stderr == "emulator stopped\n", stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--knob", "p_9000=1"], "unknown emulator knob(s): p_9000"),
        (["--knob", "p_500"], "expected NAME=VALUE"),
        (["--knob", "p_500=2"], "p_500 must be within [0, 1]"),
        (["--knob", "p_500=abc"], "p_500 must be a number, got 'abc'"),
        (["--knob", "quota_images=1.5"], "quota_images must be an integer, got '1.5'"),
    ],
)
def test_emulator_command_refuses_bad_knobs_in_one_line(args: list[str], message: str) -> None:
    outcome = run_cli("emulator", "--port", "0", *args)
    assert outcome.exit_code == 3 and "Traceback" not in outcome.stderr
    [line] = outcome.stderr.splitlines()
    assert line.startswith("pixmake: error: ") and message in line


def test_emulator_command_on_a_taken_port_is_one_line_exit_3() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        outcome = run_cli("emulator", "--port", str(port))
    assert outcome.exit_code == 3 and outcome.stdout == ""
    assert outcome.stderr.splitlines() == [
        f"pixmake: error: the emulator cannot listen on 127.0.0.1:{port}: Address already in use"
    ]


def test_the_emulators_help_lists_every_knob() -> None:
    """The help a bad knob's error points at names them all, and only those that exist."""
    import dataclasses

    from pixmake.cli import _KNOBS

    assert _KNOBS.split() == [field.name for field in dataclasses.fields(EmulatorConfig)]
    assert "p_content_policy" in run_cli("emulator", "--help").stdout


def test_placeholders_are_the_same_on_every_machine_and_a_standalone_emulators_ids_never_repeat(
    tmp_path: Path,
) -> None:
    """The diff review: task ids salted per start (so a restarted standalone emulator never reissues one)
    changed every `build --emulator` placeholder, which shows its task id: the lock churned between
    machines. The bundled emulator's ids follow the seed; a standalone one's never repeat."""
    hashes = []
    for copy in ("a", "b"):
        root = tmp_path / copy
        root.mkdir()
        (root / "pixmake.yaml").write_text("version: 1\ntargets:\n  hero: {prompt: a mug, out: hero.png}\n")
        assert run_cli("-C", str(root), "build", "--emulator").exit_code == 0
        hashes.append((root / "hero.png").read_bytes())
    assert hashes[0] == hashes[1]
    submission = validate_submit({"model": "gpt-4o-image", "prompt": "a mug", "size": "1:1", "n": 1})
    assert isinstance(submission, Submission)
    first, again = (Emulator(unique_ids=True).create_task(KEY, submission) for _ in range(2))
    assert first.id != again.id
    assert Emulator().create_task(KEY, submission).id == Emulator().create_task(KEY, submission).id
