"""Reporters: NDJSON events match the README's schema, plain lines are timestamped, rich prints text as text."""

from __future__ import annotations

import dataclasses
import io
import json
import os
import pty
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from conftest import PACKAGE_ROOT, REPO, TEST_KEY, run_cli
from pixmake.emulator import EmulatorServer
from pixmake.errors import QuotaError
from pixmake.execute import (
    BuildFinished,
    BuildResult,
    BuildStarted,
    ConcurrencyChanged,
    Event,
    RetryScheduled,
    TargetFailed,
    TargetFailure,
    TargetFinished,
    TargetPolled,
    TargetStarted,
    TargetSubmitted,
    Tick,
)
from pixmake.report import JsonReporter, PlainReporter, RichReporter, summary_lines

RESULT = BuildResult(
    generated=("hero",),
    unchanged=("logo",),
    failed=(TargetFailure("mug", "HTTP 400: The 'prompt' field is required."),),
    images_generated=2,
)
EVENTS: list[Event] = [
    BuildStarted(targets=2, images=3, concurrency=4),
    TargetStarted("hero", "create", 2),
    TargetSubmitted("hero", "task_1", resumed=False),
    TargetPolled("hero", "in_progress", 40),
    RetryScheduled("mug", "submit", 1, 0.5, "HTTP 429: slow down"),
    ConcurrencyChanged(2),
    Tick(),
    TargetFinished("hero", "create", ("hero-1.png", "hero-2.png")),
    TargetFailed("mug", "HTTP 400: The 'prompt' field is required."),
    BuildFinished(RESULT, 1.25),
]


def _readme_events() -> dict[str, str]:
    text = (REPO / "README.md").read_text()
    section = text.split("### Events", 1)[1].split("\n## ", 1)[0]
    rows = dict(re.findall(r"^\| `([a-z_]+)` \| (.*) \|$", section, flags=re.MULTILINE))
    rows.pop("event", None)  # the header row
    return rows


def test_every_json_event_is_one_line_named_and_documented() -> None:
    stream = io.StringIO()
    reporter = JsonReporter(stream)
    for event in EVENTS:
        reporter.emit(event)
    reporter.refused("this build would pay for 9 images, more than its cap of 1")  # told in its own stream
    records = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert len(records) == len(EVENTS)  # a Tick is for the people's reporters only; the refusal is one more
    documented = _readme_events()
    for record in records:
        assert record["event"] in documented, record["event"]
        assert isinstance(record["time"], float)
        for name in record:
            if name not in ("event", "time"):
                assert f"`{name}`" in documented[record["event"]], (record["event"], name)
    finished = records[-2]["result"]
    assert finished["failed"] == [{"target": "mug", "error": "HTTP 400: The 'prompt' field is required."}]
    assert finished["images_generated"] == 2 and finished["fatal"] is None
    assert set(documented) == {r["event"] for r in records}


def test_a_fatal_error_is_a_string_in_json() -> None:
    stream = io.StringIO()
    JsonReporter(stream).emit(BuildFinished(BuildResult(fatal=QuotaError("top up", status=402)), 0.1))
    assert json.loads(stream.getvalue())["result"]["fatal"] == "HTTP 402: top up"


def test_plain_lines_are_timestamped_and_the_summary_lists_each_failure() -> None:
    stream = io.StringIO()
    reporter = PlainReporter(stream)
    for event in EVENTS:
        reporter.emit(event)
    lines = stream.getvalue().splitlines()
    assert lines and all(re.match(r"^\[ *\d+\.\ds\] ", line) for line in lines)
    assert not any("polled" in line for line in lines)  # only with -v
    summary = summary_lines(RESULT)
    assert "  failed: mug: HTTP 400: The 'prompt' field is required." in summary
    assert any("1 failed" in line for line in summary)


def test_plain_lines_say_what_paid_tasks_wait_for_after_a_quiet_minute() -> None:
    """A CI job that prints nothing for minutes is killed as hung: a line a minute at least, while tasks wait."""
    stream = io.StringIO()
    now = [0.0]
    reporter = PlainReporter(stream, clock=lambda: now[0])
    reporter.emit(TargetSubmitted("hero", "task-1", False))
    now[0] = 30.0
    reporter.emit(TargetSubmitted("mug", "task-2", False))
    for second in range(35, 300, 7):
        now[0] = float(second)
        if second < 150:  # then no poll answers (a long Retry-After): the executor's ticks go on
            reporter.emit(TargetPolled("hero", "in_progress" if second > 100 else "queued", 50))
            reporter.emit(TargetPolled("mug", "queued", 0))
        reporter.emit(Tick())
    reporter.emit(TargetFinished("hero", "create", ("hero.png",)))
    now[0] = 400.0
    reporter.emit(Tick())
    lines = stream.getvalue().splitlines()
    assert lines == [
        "[   63.0s] waiting    2 paid tasks in flight (2 queued), the oldest for 1m03s",
        "[  126.0s] waiting    2 paid tasks in flight (1 in_progress, 1 queued), the oldest for 2m06s",
        "[  189.0s] waiting    2 paid tasks in flight (1 in_progress, 1 queued), the oldest for 3m09s",
        "[  252.0s] waiting    2 paid tasks in flight (1 in_progress, 1 queued), the oldest for 4m12s",
        "[  294.0s] done       hero → hero.png",
        "[  400.0s] waiting    1 paid task in flight (1 queued), the oldest for 6m10s",
    ]


def test_rich_view_prints_messages_literally() -> None:
    stream = io.StringIO()
    reporter = RichReporter(stream)
    tricky = "HTTP 400: bad [red]markup[/] in [bold]a prompt"
    for event in [*EVENTS[:-1], TargetFailed("odd", tricky), EVENTS[-1]]:
        reporter.emit(event)
    out = stream.getvalue()
    assert f"odd: {tricky}" in out
    assert "FAILED" in out and "hero → hero-1.png, hero-2.png" in out


def test_the_summary_names_the_outputs_edited_by_hand_and_the_argument_accept_takes() -> None:
    edited = dataclasses.replace(RESULT, edited=("hero", "logo", "mug", "cup"))
    [line] = [line for line in summary_lines(edited) if "edited by hand" in line]
    assert (
        "4 edited by hand (hero, logo, mug and 1 more: left alone; pixmake accept TARGET or pixmake build --restore)"
        in line
    )


def test_rich_view_says_why_it_waits_long() -> None:
    """A provider asking to wait an hour: the bar would stand still with no word why."""
    stream = io.StringIO()
    reporter = RichReporter(stream)
    long = RetryScheduled("hero", "submit", 1, 3600.4, "HTTP 429: Async task request rate exceeded")
    for event in [*EVENTS[:-1], long, EVENTS[-1]]:
        reporter.emit(event)
    out = stream.getvalue()
    assert "hero submit #1 in 1h00m (HTTP 429: Async task request rate exceeded)" in out
    assert "mug submit #1" not in out  # half a second: the count says enough


def test_json_events_stay_valid_where_stdout_cannot_encode_them() -> None:
    """PYTHONIOENCODING=ascii, a Windows code page: non-ASCII names go out as JSON escapes, not as a crash."""
    raw = io.BytesIO()
    stream = io.TextIOWrapper(raw, encoding="ascii")
    reporter = JsonReporter(stream)
    reporter.emit(TargetFinished("café", "create", ("assets/café.png",)))
    reporter.emit(BuildFinished(RESULT, 1.0))
    stream.flush()
    first, last = (json.loads(line) for line in raw.getvalue().decode("ascii").splitlines())
    assert first["outputs"] == ["assets/café.png"] and last["event"] == "build_finished"


def test_plain_lines_use_ascii_where_stderr_cannot_encode_an_arrow() -> None:
    raw = io.BytesIO()
    stream = io.TextIOWrapper(raw, encoding="ascii", errors="backslashreplace")  # as Python's own stderr
    PlainReporter(stream).emit(TargetFinished("hero", "create", ("hero.png",)))
    stream.flush()
    assert raw.getvalue().decode().endswith("done       hero -> hero.png\n")


class _Gone(io.StringIO):
    """A stream whose reader has left: every write raises BrokenPipeError."""

    def write(self, text: str) -> int:
        raise BrokenPipeError(32, "Broken pipe")


@pytest.mark.parametrize("kind", [PlainReporter, JsonReporter])
def test_lines_with_their_reader_gone_are_dropped_quietly(kind: type[PlainReporter | JsonReporter]) -> None:
    reporter = kind(_Gone())
    for event in EVENTS:
        reporter.emit(event)  # raises nothing: the build goes on


def test_the_live_view_gives_the_terminal_back_when_the_build_ends_early() -> None:
    """Ctrl-C or an error ends a build without BuildFinished: close() still hides the bar, shows the cursor."""
    from rich.console import Console

    screen = io.StringIO()
    reporter = RichReporter(screen)
    reporter.console = Console(file=screen, force_terminal=True, width=80)  # as a terminal sees it
    for event in EVENTS[:3]:
        reporter.emit(event)
    reporter.close()
    shown = screen.getvalue()
    assert "\x1b[?25h" in shown.split("\x1b[?25l")[-1]  # the cursor the view hid is shown again
    reporter.close()  # twice is harmless


@pytest.mark.parametrize("width", [60, 100])
def test_rich_view_keeps_its_bar_count_and_counts_in_a_narrow_terminal(width: int) -> None:
    """The live frame, as a terminal of ``width`` columns shows it: the bar, n/total and every count."""
    from rich.console import Console

    reporter = RichReporter(io.StringIO())
    for event in EVENTS[:-2]:
        reporter.emit(event)
    screen = Console(file=io.StringIO(), width=width, record=True)
    screen.print(reporter._progress.get_renderable())
    bar, *counts = screen.export_text().splitlines()
    assert bar.startswith("targets") and "1/2" in bar and "━" in bar
    assert "images 2/3" in " ".join(counts) and "concurrency 2" in " ".join(counts)


def test_rich_view_counts_the_images_paid_for_not_those_a_target_keeps() -> None:
    """n 2 → 4 pays for 2 of its 4 outputs; a collected task was paid for by an earlier build."""
    from rich.console import Console

    reporter = RichReporter(io.StringIO())
    reporter.emit(BuildStarted(targets=2, images=2, concurrency=4))
    reporter.emit(TargetStarted("hero", "regenerate", 2))
    reporter.emit(TargetFinished("hero", "regenerate", tuple(f"hero-{i}.png" for i in range(1, 5))))
    reporter.emit(TargetStarted("logo", "resume", 0))
    reporter.emit(TargetFinished("logo", "resume", ("logo.png",)))
    screen = Console(file=io.StringIO(), width=100, record=True)
    screen.print(reporter._progress.get_renderable())
    assert "images 2/2" in screen.export_text()


def test_rich_view_prints_every_finished_target_in_order_even_in_a_burst() -> None:
    """A burst of finishes is printed in groups (each print redraws the bar), but every line, in order."""
    stream = io.StringIO()
    reporter = RichReporter(stream)
    reporter.emit(BuildStarted(targets=200, images=200, concurrency=64))
    for i in range(200):
        reporter.emit(TargetStarted(f"t{i:03d}", "create", 1))
        reporter.emit(TargetFinished(f"t{i:03d}", "create", (f"out/t{i:03d}.png",)))
    reporter.emit(BuildFinished(BuildResult(generated=tuple(f"t{i:03d}" for i in range(200))), 1.0))
    printed = re.findall(r"(t\d{3}) → ", stream.getvalue())
    assert printed == [f"t{i:03d}" for i in range(200)]


@pytest.mark.parametrize(
    ("emulator", "line"),
    [(False, "building 2 targets, 3 images to pay for, 4 at a time"),
     (True, "building 2 targets, 3 placeholder images to make, 4 at a time")],
)  # fmt: skip
def test_the_start_line_says_what_is_paid_for(emulator: bool, line: str) -> None:
    stream = io.StringIO()
    PlainReporter(stream).emit(BuildStarted(targets=2, images=3, concurrency=4, emulator=emulator))
    assert stream.getvalue().split("] ", 1)[1].rstrip("\n") == line


def test_an_emulator_builds_summary_counts_placeholders_not_payments() -> None:
    result = BuildResult(generated=("hero",), images_generated=2, images_paid=3, emulator=True, seconds=0.5)
    (line,) = summary_lines(result)
    assert line.startswith("build finished in 0.5 s: 1 generated (2 placeholder images), 0 restored from cache")
    assert "paid" not in line


def test_summary_names_what_the_build_left_in_place_and_resumed() -> None:
    """Orphans, stale outputs, resumed and dropped interrupted tasks are all in the one summary line."""
    result = BuildResult(
        generated=("hero",),
        images_generated=2,
        resumed=("mug",),
        orphaned=("old-a", "old-b"),
        stale=("assets/x.png",),
        dropped=("logo",),
        seconds=1.25,
    )
    (line,) = summary_lines(result)
    assert line.startswith("build finished in 1.2 s: 1 generated (2 images paid), 1 resumed (already paid), ")
    assert "2 orphaned (kept; build --prune deletes them)" in line
    assert "1 stale output kept (build --prune deletes it)" in line
    assert "1 interrupted task dropped" in line


def test_summary_after_prune_lists_what_was_pruned_first() -> None:
    from pixmake.reconcile import PruneResult

    kept = (("assets/kept.png", "edited"), ("assets/hero.png", "a current target writes or reads it"))
    pruned = PruneResult(pruned=("old",), deleted=("assets/old.png",), kept=kept)
    lines = summary_lines(BuildResult(orphaned=("old",), stale=("assets/old.png",), pruned=pruned))
    assert lines[:4] == [
        "pixmake: pruned assets/old.png",
        "pixmake: warning: kept assets/kept.png: edited",
        "pixmake: kept assets/hero.png: a current target writes or reads it",  # a renamed target's: expected
        "pixmake: dropped 1 orphan from pixmake.lock",
    ]
    assert lines[4].startswith("build finished") and "1 orphaned (pruned)" in lines[4] and "stale" not in lines[4]


def _build_on_a_terminal(
    root: Path, server: EmulatorServer, ci: str | None, term: str = "xterm"
) -> tuple[int, str, str]:
    """``python -m pixmake build`` with its stderr on a pseudo-terminal: exit code, stdout, what the terminal got."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIXMAKE_", "TOAPIS_")) and k != "CI"}
    env |= {"PIXMAKE_BASE_URL": server.url, "TOAPIS_API_KEY": TEST_KEY, "PIXMAKE_POLL_INTERVAL": "0.01"}
    env |= {"TERM": term, "PYTHONPATH": os.pathsep.join([str(PACKAGE_ROOT), os.environ.get("PYTHONPATH", "")])}
    if ci is not None:
        env["CI"] = ci
    terminal, pane = pty.openpty()
    try:
        command = [sys.executable, "-m", "pixmake", "-C", str(root), "build"]
        with subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=pane) as process:
            os.close(pane)
            received = b""
            while True:  # read as it comes, so a full terminal buffer cannot stall the build
                try:
                    chunk = os.read(terminal, 4096)
                except OSError:  # EIO: the build closed the terminal
                    break
                if not chunk:
                    break
                received += chunk
            stdout, _ = process.communicate(timeout=60)
            code = process.returncode
    finally:
        os.close(terminal)
    return code, stdout.decode(), received.decode()


@pytest.mark.parametrize(("ci", "term"), [("true", "xterm"), ("1", "xterm"), (None, "dumb")])
def test_ci_and_a_dumb_terminal_get_plain_lines_even_on_a_terminal(
    ci: str | None, term: str, make_project: Callable[..., Path], emulator: EmulatorServer
) -> None:
    root = make_project({"version": 1, "targets": {"hero": {"prompt": "a red mug", "out": "hero.png"}}})
    code, stdout, shown = _build_on_a_terminal(root, emulator, ci, term)
    assert code == 0 and stdout == ""
    assert "\x1b[" not in shown  # no live view: no cursor or colour control
    lines = shown.replace("\r\n", "\n").splitlines()
    assert re.fullmatch(r"\[ +\d+\.\ds\] create +hero \(1 image\)", lines[1])
    assert re.fullmatch(r"\[ +\d+\.\ds\] done +hero → hero\.png", lines[2])


def test_a_terminal_without_ci_gets_the_live_view(make_project: Callable[..., Path], emulator: EmulatorServer) -> None:
    root = make_project({"version": 1, "targets": {"hero": {"prompt": "a red mug", "out": "hero.png"}}})
    code, stdout, shown = _build_on_a_terminal(root, emulator, None)
    assert code == 0 and stdout == ""
    assert "\x1b[" in shown and not re.search(r"\[ +\d+\.\ds\] ", shown)  # the pty is a terminal to pixmake


def test_ci_with_json_gets_ndjson_on_stdout(
    monkeypatch: pytest.MonkeyPatch, make_project: Callable[..., Path], provider_env: EmulatorServer
) -> None:
    monkeypatch.setenv("CI", "true")
    root = make_project({"version": 1, "targets": {"hero": {"prompt": "a red mug", "out": "hero.png"}}})
    outcome = run_cli("-C", str(root), "build", "--json")
    assert outcome.exit_code == 0
    events = [json.loads(line) for line in outcome.stdout.splitlines()]
    assert events[0]["event"] == "build_started" and events[-1]["event"] == "build_finished"
    assert not re.search(r"\[ +\d+\.\ds\] ", outcome.stderr)  # no plain lines besides


def test_plain_lines_count_from_the_build_start_as_the_summary_does(monkeypatch: pytest.MonkeyPatch) -> None:
    """Loading and planning come before the executor: a line must not read later than 'finished in'."""
    import time

    now = [100.0]
    monkeypatch.setattr(time, "monotonic", lambda: now[0])
    stream = io.StringIO()
    reporter = PlainReporter(stream)
    now[0] = 101.5  # the manifest was loaded and planned
    reporter.emit(BuildStarted(1, 0, 4))
    now[0] = 101.7
    reporter.emit(TargetFinished("hero", "restore", ("assets/hero.png",)))
    assert [line.split("]")[0] for line in stream.getvalue().splitlines()] == ["[    0.0s", "[    0.2s"]


def test_summary_counts_images_paid_for_targets_that_did_not_finish() -> None:
    """Charged at submit: a paid target that failed afterwards (its task journaled) is money spent, and said so."""
    result = BuildResult(
        generated=("hero",),
        images_generated=2,
        images_paid=5,
        failed=(TargetFailure("mug", "cannot write mug.png: Not a directory"),),
    )
    line = summary_lines(result)[0]
    assert "1 generated (2 images paid), 3 images paid for targets not finished, " in line
    assert "paid for targets not finished" not in summary_lines(BuildResult(images_generated=2, images_paid=2))[0]


def test_the_summary_lists_fifty_failures_by_name_and_counts_the_rest() -> None:
    """318 content-policy refusals in completion order buried the summary; each has its line in the log."""
    failures = tuple(TargetFailure(f"t{i:03d}", "task failed (content_policy_violation)") for i in reversed(range(60)))
    lines = summary_lines(BuildResult(failed=failures))
    listed = [line for line in lines if line.startswith("  failed: ")]
    assert listed == [f"  failed: t{i:03d}: task failed (content_policy_violation)" for i in range(50)]
    assert lines[-1] == "  and 10 more failed (t050, t051, t052, t053, t054, …)"


def test_a_prune_summarises_the_files_current_targets_claim_and_lists_each_one_that_differs() -> None:
    from pixmake.reconcile import CLAIMED, PruneResult

    kept = (*((f"assets/sq/{i}.png", CLAIMED) for i in range(5000)), ("assets/x.png", "differs from the lock"))
    lines = summary_lines(BuildResult(pruned=PruneResult(kept=kept)))
    assert lines[:2] == [
        "pixmake: kept 5000 files a current target writes or reads (assets/sq/0.png, assets/sq/1.png, "
        "assets/sq/2.png, …)",
        "pixmake: warning: kept assets/x.png: differs from the lock",
    ]
    few = summary_lines(BuildResult(pruned=PruneResult(kept=kept[:2])))
    assert few[:2] == [f"pixmake: kept assets/sq/{i}.png: {CLAIMED}" for i in range(2)]


def test_the_pace_line_says_whether_the_limit_fell_or_came_back() -> None:
    """The review (a long build): while concurrency came back one slot at a time, every line still said
    "provider is rate limiting"."""
    stream = io.StringIO()
    reporter = PlainReporter(stream)
    for event in (BuildStarted(targets=9, images=9, concurrency=4), ConcurrencyChanged(2), ConcurrencyChanged(3)):
        reporter.emit(event)
    paces = [line.split("] ", 1)[1] for line in stream.getvalue().splitlines() if "pace" in line]
    assert paces == [
        "pace       provider is rate limiting; 2 targets at a time",
        "pace       rate limits eased; 3 targets at a time",
    ]
