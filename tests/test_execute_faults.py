"""The fault matrix: builds over real HTTP against the emulator with each fault knob, then all at once.

Whatever the emulator throws, a build (re-run while targets legitimately fail, as for a failed task)
ends with every image present and locked, and the emulator's ledger shows exactly one charge per
locked image: no ``client_business_id`` charged twice, net charged images == images in the lock.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import time
from collections import Counter
from pathlib import Path
from typing import Any

import anyio
import pytest
import yaml
from PIL import Image

from conftest import TEST_KEY, journal_submit, write_png
from pixmake import api
from pixmake.emulator import EmulatorConfig, EmulatorServer
from pixmake.execute import BuildResult
from pixmake.lockfile import parse_lock
from pixmake.providers.base import GenerationRequest
from pixmake.providers.toapis import ToapisProvider
from pixmake.report import PlainReporter, RecordingReporter
from pixmake.settings import Settings, resolve


def make_manifest(root: Path, count: int, *, concurrency: int = 16, every_ref: int = 5, twins: int = 0) -> Path:
    """A generated manifest of ``count`` targets; every ``every_ref``-th one also uses a shared local reference.

    Every prompt differs (so does every key), except for the last ``twins`` targets, which repeat the first
    ones exactly (same key, another name: two variations of one prompt). Once one twin is locked the plan
    may restore the other from it for free.
    """
    root.mkdir(parents=True, exist_ok=True)
    write_png(root / "refs" / "brand.png", (32, 32), (10, 120, 200))
    targets: dict[str, Any] = {}
    for i in range(count):
        twin_of = i if i < count - twins else i - count + twins
        target: dict[str, Any] = {"prompt": f"product shot {twin_of}", "out": f"out/t{i:04d}.png"}
        if twin_of % 7 == 3:
            target["n"] = 2
        if every_ref and twin_of % every_ref == 0:
            target["references"] = ["refs/brand.png"]
        targets[f"t{i:04d}"] = target
    return write_manifest(root, targets, concurrency=concurrency)


def write_manifest(root: Path, targets: dict[str, dict[str, Any]], *, concurrency: int) -> Path:
    """``root/pixmake.yaml`` with these targets (1:1 gpt-4o-image, one image each unless they say)."""
    root.mkdir(parents=True, exist_ok=True)
    document = {
        "version": 1,
        "provider": {"concurrency": concurrency, "rate": "1000/s"},
        "defaults": {"model": "gpt-4o-image", "size": "1:1", "n": 1},
        "targets": targets,
    }
    (root / "pixmake.yaml").write_text(yaml.safe_dump(document, sort_keys=False))
    return root


def fast_settings(project: api.Project, server: EmulatorServer, **changes: Any) -> Settings:
    """Settings for the emulator with no real waiting: tiny polls, backoff and Retry-After."""
    return settings_for(project, server.url, **changes)


def settings_for(project: api.Project, url: str, **changes: Any) -> Settings:
    """Settings for the API at ``url`` (the emulator, or a test's own server) with no real waiting."""
    manifest = api.validate(project)
    environ = {
        "PIXMAKE_BASE_URL": url,
        "TOAPIS_API_KEY": TEST_KEY,
        "PIXMAKE_POLL_INTERVAL": "0.005",
        "PIXMAKE_BACKOFF_BASE": "0.001",
        "PIXMAKE_LOOKUP_GRACE": "0",
        "PIXMAKE_RETRY_WINDOW": "0",  # give up after the attempts, as the tests count them
        "PIXMAKE_MAX_RETRY_AFTER": "0.005",
        "PIXMAKE_QUERY_RATE": "5000",
    }
    settings = resolve(manifest.provider, environ)
    return dataclasses.replace(settings, request_timeout=10.0, **changes)


def paid_by_a_killed_build(
    project: api.Project, settings: Settings, name: str, cbid: str, *, timed: bool = True
) -> None:
    """What a build killed right after its submit for ``name`` was sent leaves: the submit journaled (no
    answer, so no task id) and a task paid for at the provider. ``timed=False``: journaled with no send time,
    as a pixmake before them did."""
    journal_submit(project.root, name, cbid, sent_at=time.time() if timed else None)
    [target] = [t for t in api.validate(project).targets if t.name == name]
    request = GenerationRequest(target.model, target.prompt, target.size, target.n, cbid)

    async def send() -> None:
        provider = ToapisProvider(settings)
        try:
            await provider.submit(request)
        finally:
            await provider.aclose()

    anyio.run(send)


def build_until_done(root: Path, server: EmulatorServer, *, max_builds: int = 12, **changes: Any) -> list[BuildResult]:
    """Build again while targets fail (a failed task is refunded; the next build pays for a new one)."""
    project = api.open_project(root)
    results = []
    for _ in range(max_builds):
        result = api.build(project, fast_settings(project, server, **changes), reporter=RecordingReporter())
        results.append(result)
        assert result.fatal is None, result.fatal
        if not result.failed:
            return results
    raise AssertionError(f"still failing after {max_builds} builds: {results[-1].failed[:5]}")


def locked_images(root: Path) -> dict[str, tuple[str, int]]:
    """Target → (task id, image count) from pixmake.lock."""
    lock = parse_lock((root / "pixmake.lock").read_text(encoding="utf-8"))
    return {name: (entry.task_id or "", len(entry.outputs)) for name, entry in lock.entries.items()}


def assert_paid_once_and_complete(root: Path, server: EmulatorServer, count: int) -> None:
    """Every image present and decodable; every paid task is locked, each paid once.

    Twins (targets with one key) may share a locked task: one was paid, the other restored from it.
    """
    locked = locked_images(root)
    assert len(locked) == count
    for name, (_, n) in locked.items():
        paths = [root / f"out/{name}.png"] if n == 1 else [root / f"out/{name}-{k}.png" for k in range(1, n + 1)]
        for path in paths:
            with Image.open(path) as image:
                assert image.size == (1024, 1024)
    ledger = server.emulator.ledger
    ids = [e.client_business_id for e in ledger.entries]
    assert None not in ids
    assert [cbid for cbid, times in Counter(ids).items() if times > 1] == [], "a client_business_id charged twice"
    paid = {e.task_id: e for e in ledger.entries if not e.refunded}
    distinct = dict(locked.values())
    assert ledger.net_images == sum(distinct.values()), "net charged images != images in the lock"
    for name, (task_id, n) in locked.items():
        assert task_id in paid and paid[task_id].n == n, name
    assert set(paid) == {task_id for task_id, _ in locked.values()}, "a paid task is not in the lock"


RETRIED = ("p_429", "p_500", "p_502", "p_504_html", "p_503_unavailable", "p_truncated_download")
SINGLE_KNOBS: list[dict[str, Any]] = [
    {"p_429": 0.3},
    {"p_500": 0.3},
    {"p_502": 0.3},
    {"p_504_html": 0.3},
    {"p_503_unavailable": 0.3},
    {"p_drop_after_submit": 0.3},
    {"p_504_after_submit": 0.3},
    {"p_task_failed": 0.3},
    {"p_content_policy": 0.3},
    {"p_slow_download": 0.3, "slow_download_seconds": 0.05},
    {"p_truncated_download": 0.3},
    {"status_dialect": "submitted"},
    {"status_dialect": "pending", "error_code_style": "int", "p_500": 0.2},
    {"top_level_url": True, "result_style": "images"},
    {"result_style": "data", "latency_jitter": 0.05},
]


@pytest.mark.parametrize("knobs", SINGLE_KNOBS, ids=lambda k: ",".join(f"{a}={b}" for a, b in k.items()))
def test_each_fault_alone(knobs: dict[str, Any], emulator: EmulatorServer, tmp_path: Path) -> None:
    emulator.emulator.reset(EmulatorConfig(latency=0.01, submit_rps=None, query_rps=None, seed=11, **knobs))
    root = make_manifest(tmp_path / "p", 30)
    results = build_until_done(root, emulator)
    assert_paid_once_and_complete(root, emulator, 30)
    assert sum(r.images_paid for r in results) == emulator.emulator.ledger.net_images, "the bill is what pixmake said"
    uploads = [r for r in emulator.emulator.requests if r.path == "/v1/uploads/images" and r.status == 200]
    assert len(uploads) == 1, "the shared reference is uploaded once"
    if any(k in RETRIED for k in knobs):
        assert sum(r.statistics.retries for r in results) > 0


def test_drop_after_submit_is_resolved_by_lookup_not_resubmit(emulator: EmulatorServer, tmp_path: Path) -> None:
    emulator.emulator.reset(EmulatorConfig(latency=0.01, submit_rps=None, query_rps=None, p_drop_after_submit=1.0))
    root = make_manifest(tmp_path / "p", 6, every_ref=0)
    [result] = build_until_done(root, emulator, max_builds=1)
    assert len(result.generated) == 6
    submits = emulator.emulator.submits()
    assert len(submits) == 6 and all(r.status is None for r in submits)  # every connection dropped
    assert result.statistics.lookups == 6
    assert_paid_once_and_complete(root, emulator, 6)
    assert result.images_paid == emulator.emulator.ledger.net_images  # found by lookup: paid by this build


def test_a_gateway_504_after_the_task_was_created_is_resolved_by_lookup_not_resubmit(
    emulator: EmulatorServer, tmp_path: Path
) -> None:
    """The common double charge: the edge gateway times out (HTML 504) after the API created the task."""
    emulator.emulator.reset(EmulatorConfig(latency=0.01, submit_rps=None, query_rps=None, p_504_after_submit=1.0))
    root = make_manifest(tmp_path / "p", 6, every_ref=0)
    [result] = build_until_done(root, emulator, max_builds=1)
    assert len(result.generated) == 6
    submits = emulator.emulator.submits()
    assert len(submits) == 6 and all(r.status == 504 for r in submits)
    assert result.statistics.lookups == 6
    assert_paid_once_and_complete(root, emulator, 6)
    assert result.images_paid == emulator.emulator.ledger.net_images


@pytest.mark.parametrize("grace", [0.5, 0.0], ids=["trusted-late", "trusted-at-once"])
def test_a_task_stored_after_the_gateway_answered_is_found_not_paid_twice(
    grace: float, emulator: EmulatorServer, tmp_path: Path
) -> None:
    """The connection drops after the submit and the task becomes visible by its id only 0.2 s later.

    A "not found" right away is not trusted: the executor asks again once the grace has passed, finds
    the task and pays once. Trusting the first answer (no grace) pays for every target twice: that is
    what the grace is for, and what this test shows it prevents.
    """
    config = EmulatorConfig(latency=0.01, submit_rps=None, query_rps=None, p_drop_after_submit=1.0, lookup_lag=0.2)
    emulator.emulator.reset(config)
    root = make_manifest(tmp_path / "p", 4, every_ref=0)
    project = api.open_project(root)
    settings = fast_settings(project, emulator, lookup_grace=grace, max_attempts=2)
    result = api.build(project, settings, reporter=RecordingReporter())
    images = sum(target.n for target in api.validate(project).targets)
    if grace:
        assert len(result.generated) == 4 and result.statistics.lookups == 8  # early "not found", then found
        assert_paid_once_and_complete(root, emulator, 4)
        assert result.images_paid == emulator.emulator.ledger.net_images
    else:
        assert emulator.emulator.ledger.net_images == 2 * images  # every target paid twice: the lag fooled it
        assert len(result.failed) == 4  # and the second submits were dropped too


def test_a_build_rerun_at_once_after_an_interrupted_submit_waits_out_the_grace_before_paying(
    emulator: EmulatorServer, tmp_path: Path
) -> None:
    """Build 1 was killed while its dropped submit's task was not yet visible by id; build 2 runs at once.

    Its first lookup says "not found" too early: the resume asks again once the grace since the submit has
    passed, finds the task, and pays nothing. Trusting that first answer paid for the target twice.
    """
    emulator.emulator.reset(EmulatorConfig(latency=0.01, submit_rps=None, query_rps=None, lookup_lag=0.6))
    root = make_manifest(tmp_path / "p", 1, every_ref=0)
    project = api.open_project(root)
    settings = fast_settings(project, emulator, lookup_grace=1.0)
    paid_by_a_killed_build(project, settings, "t0000", "pixmake-killed-build-0")
    result = api.build(project, settings, reporter=RecordingReporter())
    assert result.ok and result.resumed == ("t0000",) and result.statistics.lookups == 2
    assert emulator.emulator.ledger.net_images == 1 and len(emulator.emulator.submits()) == 1
    assert_paid_once_and_complete(root, emulator, 1)


def test_504_html_on_submit_leads_to_lookup_then_a_new_id(emulator: EmulatorServer, tmp_path: Path) -> None:
    emulator.emulator.reset(EmulatorConfig(latency=0.01, submit_rps=None, query_rps=None, p_504_html=0.5, seed=3))
    root = make_manifest(tmp_path / "p", 10, every_ref=0)
    # Polls meet the 504s too: 8 in a row (1 in 256) would fail a target and split the figures over two builds.
    [result] = build_until_done(root, emulator, max_builds=1, max_attempts=20)
    requests = emulator.emulator.requests
    gateway_pages = [r for r in requests if r.method == "POST" and r.status == 504]
    gateway_ids = [r.json["client_business_id"] for r in gateway_pages if isinstance(r.json, dict)]
    every_lookup = [r for r in requests if r.method == "GET" and "/v1/images/generations/pixmake-" in r.path]
    lookups = [r for r in every_lookup if r.path.rsplit("/", 1)[1] in gateway_ids]
    # Once per build, before a "not found" is trusted: a lookup of a task the build saw created finds it.
    assert len([r for r in every_lookup if r not in lookups and r.status == 200]) == 1
    assert gateway_pages and result.statistics.lookups == len(gateway_pages) + 1
    # Lookups meet 504s too (and are retried); each ends in "not found", and then a new id is submitted.
    assert len([r for r in lookups if r.status == 404]) == len(gateway_pages)
    assert {r.status for r in every_lookup} <= {200, 404, 504}
    # The record keeps each 504'd submit's body: exactly those ids were looked up, found missing, never charged.
    assert len(set(gateway_ids)) == len(gateway_pages)
    assert {r.path.rsplit("/", 1)[1] for r in lookups if r.status == 404} == set(gateway_ids)
    assert not set(gateway_ids) & {e.client_business_id for e in emulator.emulator.ledger.entries}
    assert len(emulator.emulator.submits()) == 10 + len(gateway_pages)
    assert_paid_once_and_complete(root, emulator, 10)


def test_all_faults_at_once_300_targets(emulator: EmulatorServer, tmp_path: Path) -> None:
    """Every knob at once, each group failing 30 % of its requests; 300 targets; rebuild until done."""
    submit = ("p_429", "p_500", "p_502", "p_504_html", "p_503_unavailable", "p_drop_after_submit", "p_504_after_submit")
    knobs: dict[str, Any] = {k: 0.3 / len(submit) for k in submit}
    knobs |= {"p_task_failed": 0.15, "p_content_policy": 0.15}
    knobs |= {"p_slow_download": 0.15, "p_truncated_download": 0.15, "slow_download_seconds": 0.05}
    emulator.emulator.reset(
        EmulatorConfig(latency=0.01, latency_jitter=0.02, submit_rps=None, query_rps=None, seed=2024, **knobs)
    )
    root = make_manifest(tmp_path / "p", 300, concurrency=32)
    results = build_until_done(root, emulator)
    assert len(results) >= 2  # 30 % of tasks fail: some targets needed another build
    assert_paid_once_and_complete(root, emulator, 300)
    assert sum(r.images_paid for r in results) == emulator.emulator.ledger.net_images, "the bill is what pixmake said"
    uploads = [r for r in emulator.emulator.requests if r.path == "/v1/uploads/images" and r.status == 200]
    assert len(uploads) == 1
    again = api.build(api.open_project(root), fast_settings(api.open_project(root), emulator))
    assert again.generated == () and len(again.unchanged) == 300


def test_raising_n_under_every_fault_pays_once_for_each_new_image_and_keeps_the_first(
    emulator: EmulatorServer, tmp_path: Path
) -> None:
    """60 targets built with n 1, then raised to 2 under every fault at once: one more image each, paid once."""
    emulator.emulator.reset(EmulatorConfig(latency=0.01, submit_rps=None, query_rps=None))
    targets = {f"t{i:04d}": {"prompt": f"product shot {i}", "out": f"out/t{i:04d}.png"} for i in range(60)}
    root = write_manifest(tmp_path / "p", targets, concurrency=16)
    build_until_done(root, emulator)
    first = {name: (root / f"out/{name}.png").read_bytes() for name in targets}
    write_manifest(root, {name: {**t, "n": 2} for name, t in targets.items()}, concurrency=16)
    submit = ("p_429", "p_500", "p_502", "p_504_html", "p_503_unavailable", "p_drop_after_submit", "p_504_after_submit")
    knobs: dict[str, Any] = {k: 0.3 / len(submit) for k in submit}
    knobs |= {"p_task_failed": 0.15, "p_truncated_download": 0.15, "p_short_result": 0.1}
    emulator.emulator.reset(EmulatorConfig(latency=0.01, submit_rps=None, query_rps=None, seed=7, **knobs))
    results = build_until_done(root, emulator)
    ledger = emulator.emulator.ledger
    ids = [e.client_business_id for e in ledger.entries]
    assert [cbid for cbid, times in Counter(ids).items() if times > 1] == [], "a client_business_id charged twice"
    assert {e.n for e in ledger.entries} == {1}  # only the new image is asked for
    assert sum(r.images_paid for r in results) == ledger.net_images, "the bill is what pixmake said"
    lock = parse_lock((root / "pixmake.lock").read_text(encoding="utf-8"))
    locked_tasks = [entry.task_id or "" for entry in lock.entries.values()]
    paid_tasks = [e.task_id for e in ledger.entries if not e.refunded]
    assert sorted(set(paid_tasks) & set(locked_tasks)) == sorted(locked_tasks)  # each locked task paid, once
    short = len(set(paid_tasks) - set(locked_tasks))  # a short result is a failed attempt, charged n (the emulator)
    assert ledger.net_images == 60 + short
    for name in targets:
        assert (root / f"out/{name}-1.png").read_bytes() == first[name]
        assert (root / f"out/{name}-2.png").read_bytes() != first[name]  # a new image, not the first again
        with Image.open(root / f"out/{name}-2.png") as image:
            assert image.size == (1024, 1024)


def test_the_plain_log_speaks_during_a_long_download_with_no_poll_to_report(
    emulator: EmulatorServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A CI job quiet for minutes is killed as hung: the heartbeat must not wait for a poll's answer."""
    monkeypatch.setattr("pixmake.execute.TICK", 0.05)
    monkeypatch.setattr("pixmake.report._QUIET", 0.5)
    config = EmulatorConfig(latency=0.0, p_slow_download=1.0, slow_download_seconds=1.0, submit_rps=None)
    emulator.emulator.reset(config)
    root = make_manifest(tmp_path / "p", 1, every_ref=0)
    project = api.open_project(root)
    stream = io.StringIO()
    result = api.build(project, fast_settings(project, emulator), reporter=PlainReporter(stream))
    assert result.generated == ("t0000",)
    log = stream.getvalue()
    assert "waiting    1 paid task in flight (1 completed)" in log, log
    assert log.index("waiting") < log.index("done       t0000")


def test_a_task_paid_for_a_higher_n_is_collected_after_n_was_lowered_and_raising_it_back_is_free(
    emulator: EmulatorServer, tmp_path: Path
) -> None:
    """Ctrl-C on seeing the bill, n lowered from 4 to 2, build again: the paid task of 4 was dropped, and 2 more
    images were paid for."""
    emulator.emulator.reset(EmulatorConfig(latency=0.01, submit_rps=None, query_rps=None))
    root = write_manifest(tmp_path / "p", {"hero": {"prompt": "a red mug", "out": "hero.png", "n": 4}}, concurrency=4)
    project = api.open_project(root)
    paid_by_a_killed_build(project, fast_settings(project, emulator), "hero", "cbid-of-four")
    assert emulator.emulator.ledger.charged_images == 4
    write_manifest(root, {"hero": {"prompt": "a red mug", "out": "hero.png", "n": 2}}, concurrency=4)
    [action] = api.plan(project).plan.actions
    assert action.kind.value == "resume" and action.images == 0
    assert "(n 4 → 2 since: keeps its first 2 images, caches the rest)" in action.reasons[0].text
    result = api.build(project, fast_settings(project, emulator))
    assert result.resumed == ("hero",), result
    assert emulator.emulator.ledger.charged_images == 4  # nothing paid again
    [task] = [e for e in emulator.emulator.ledger.entries if e.client_business_id == "cbid-of-four"]
    entry = parse_lock((root / "pixmake.lock").read_text()).entries["hero"]
    assert entry.n == 2 and entry.task_id == task.task_id
    assert [o.path for o in entry.outputs] == ["hero-1.png", "hero-2.png"]
    write_manifest(root, {"hero": {"prompt": "a red mug", "out": "hero.png", "n": 4}}, concurrency=4)
    again = api.build(project, fast_settings(project, emulator))
    assert again.restored == ("hero",) and emulator.emulator.ledger.charged_images == 4  # its other 2, free
    first_two = [(root / f"hero-{i}.png").read_bytes() for i in (1, 2)]
    assert [o.sha256 for o in parse_lock((root / "pixmake.lock").read_text()).entries["hero"].outputs][:2] == [
        hashlib.sha256(data).hexdigest() for data in first_two
    ]


def test_a_task_of_a_higher_n_leaves_alone_a_target_whose_images_are_locked(
    emulator: EmulatorServer, tmp_path: Path
) -> None:
    """n raised from 1 to 4, the build killed once paid, n set back to 1: the task replaced the committed image."""
    emulator.emulator.reset(EmulatorConfig(latency=0.01, submit_rps=None, query_rps=None))
    one = {"hero": {"prompt": "a red mug", "out": "hero.png", "n": 1}}
    root = write_manifest(tmp_path / "p", one, concurrency=4)
    project = api.open_project(root)
    assert api.build(project, fast_settings(project, emulator)).ok
    committed = (root / "hero.png").read_bytes()
    write_manifest(root, {"hero": {**one["hero"], "n": 4}}, concurrency=4)
    paid_by_a_killed_build(project, fast_settings(project, emulator), "hero", "cbid-of-four")
    write_manifest(root, one, concurrency=4)
    [action] = api.plan(project).plan.actions
    assert action.kind.value == "unchanged" and action.reasons[0].code == "task-kept"
    assert api.build(project, fast_settings(project, emulator)).ok
    assert (root / "hero.png").read_bytes() == committed
    charged = emulator.emulator.ledger.charged_images
    write_manifest(root, {"hero": {**one["hero"], "n": 4}}, concurrency=4)  # raised again: the task's, free
    result = api.build(project, fast_settings(project, emulator))
    assert result.resumed == ("hero",) and emulator.emulator.ledger.charged_images == charged


def test_a_short_result_of_a_task_of_a_higher_n_still_gives_the_lowered_n(
    emulator: EmulatorServer, tmp_path: Path
) -> None:
    """n 4 paid, lowered to 2, the task made 3: it failed as 'expected 2', was dropped, and 2 were paid again."""
    emulator.emulator.reset(EmulatorConfig(latency=0.01, submit_rps=None, query_rps=None, p_short_result=1.0))
    four = {"hero": {"prompt": "a red mug", "out": "hero.png", "n": 4}}
    root = write_manifest(tmp_path / "p", four, concurrency=4)
    project = api.open_project(root)
    paid_by_a_killed_build(project, fast_settings(project, emulator), "hero", "cbid-of-four")
    write_manifest(root, {"hero": {**four["hero"], "n": 2}}, concurrency=4)
    charged = emulator.emulator.ledger.charged_images
    result = api.build(project, fast_settings(project, emulator))
    assert result.resumed == ("hero",) and emulator.emulator.ledger.charged_images == charged
    assert [o.path for o in parse_lock((root / "pixmake.lock").read_text()).entries["hero"].outputs] == [
        "hero-1.png",
        "hero-2.png",
    ]
