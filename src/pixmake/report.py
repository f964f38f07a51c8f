"""Reporters: turn executor events into output for people (plain lines, a rich live view) or machines (NDJSON).

Shell. The executor only emits events; everything a build prints goes through here. The closing
summary is not an event's output: the caller prints :func:`summary_lines` of the finished build's
result (after ``--prune`` did its work), on stderr whatever the reporter, so NDJSON on stdout stays
machine-only.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable
from typing import IO, TYPE_CHECKING, Any, ClassVar, Final, Protocol

from pixmake import invocation
from pixmake.entry import silence_stdout
from pixmake.execute import (
    BuildFinished,
    BuildResult,
    BuildStarted,
    ConcurrencyChanged,
    Event,
    RetryScheduled,
    TargetFailed,
    TargetFinished,
    TargetPolled,
    TargetStarted,
    TargetSubmitted,
    Tick,
)

if TYPE_CHECKING:
    from rich.text import Text

_PRINT_EVERY: Final = 0.1  # seconds: the rich view prints finished targets in groups at most this old

__all__ = [
    "JsonReporter",
    "NullReporter",
    "PlainReporter",
    "RecordingReporter",
    "Reporter",
    "RichReporter",
    "summary_lines",
]


class Reporter(Protocol):
    """Receives every event of a build, in order."""

    def emit(self, event: Event) -> None:
        """Handle one event."""
        ...


class NullReporter:
    """Ignores every event (the API's default: a long build keeps no history in memory)."""

    def emit(self, event: Event) -> None:
        """Do nothing."""


class RecordingReporter:
    """Keeps every event in a list (tests, and the API when no output is wanted)."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    def emit(self, event: Event) -> None:
        """Remember the event."""
        self.events.append(event)


_LISTED: Final = 50  # files kept by --prune, or failed targets, listed one per line at most


def _count(n: int, word: str) -> str:
    return f"{n} {word}{'s' * (n != 1)}"


_LOST: Final = "its interrupted build's task was unknown to the provider, so it was submitted again (not in the plan)"


def summary_lines(r: BuildResult) -> list[str]:
    """The closing summary: what ``--prune`` did, then the outcomes (paid, already paid, free, untouched, failed).

    What a build leaves in place on purpose is named with the command that acts on it: edited
    outputs, orphans and stale outputs, and interrupted tasks it dropped.
    """
    lines: list[str] = []
    if r.pruned is not None:
        lines += [f"pixmake: pruned {path}" for path in r.pruned.deleted]
        from pixmake.reconcile import CLAIMED

        claimed = [path for path, why in r.pruned.kept if why == CLAIMED]
        if len(claimed) > _LISTED:  # a renamed template: thousands of files its new targets write, all expected
            shown = ", ".join(claimed[:3])
            lines.append(f"pixmake: kept {len(claimed)} files a current target writes or reads ({shown}, …)")
        listed = [(path, why) for path, why in r.pruned.kept if why != CLAIMED or len(claimed) <= _LISTED]
        lines += [f"pixmake: {'' if why == CLAIMED else 'warning: '}kept {path}: {why}" for path, why in listed]
        if r.pruned.pruned:
            lines.append(f"pixmake: dropped {_count(len(r.pruned.pruned), 'orphan')} from pixmake.lock")
        if r.pruned.skipped:
            lines.append(f"pixmake: note: nothing pruned: {r.pruned.skipped}")
    if r.emulator:  # the bundled emulator's placeholders: nobody paid
        parts = [f"{len(r.generated)} generated ({_count(r.images_generated, 'placeholder image')})"]
    else:
        parts = [f"{len(r.generated)} generated ({_count(r.images_generated, 'image')} paid)"]
    if r.images_paid > r.images_generated and not r.emulator:  # paid at submit, the target did not finish
        parts.append(f"{_count(r.images_paid - r.images_generated, 'image')} paid for targets not finished")
    if r.images_unplanned and not r.emulator:  # the plan said "resume (already paid)"
        lost = "interrupted builds' tasks the provider no longer had, submitted again"
        parts.append(f"{_count(r.images_unplanned, 'image')} paid beyond the plan ({lost})")
    if r.resumed:
        parts.append(f"{len(r.resumed)} resumed (already paid)")
    parts += [f"{len(r.restored)} restored from cache", f"{len(r.unchanged)} unchanged"]
    if r.edited:
        names = ", ".join(r.edited[:3]) + (f" and {len(r.edited) - 3} more" if len(r.edited) > 3 else "")
        accept, restore = invocation.pixmake("accept", "TARGET"), invocation.pixmake("build", "--restore")
        parts.append(f"{len(r.edited)} edited by hand ({names}: left alone; {accept} or {restore})")
    if r.pruned is None or r.pruned.skipped:
        if r.orphaned:
            parts.append(f"{len(r.orphaned)} orphaned (kept; build --prune deletes them)")
        if r.stale:
            them = "them" if len(r.stale) != 1 else "it"
            parts.append(f"{_count(len(r.stale), 'stale output')} kept (build --prune deletes {them})")
    elif r.pruned.pruned:
        parts.append(f"{len(r.pruned.pruned)} orphaned (pruned)")
    if r.dropped:
        parts.append(
            f"{_count(len(r.dropped), 'interrupted task')} dropped (for inputs since changed or built by another "
            "build, targets removed, or an emulator's)"
        )
    if r.failed:
        parts.append(f"{len(r.failed)} failed")
    lines.append(f"build finished in {r.seconds:.1f} s: " + ", ".join(parts))
    failed = sorted(r.failed, key=lambda f: f.target)
    lines += [f"  failed: {f.target}: {f.error}" for f in failed[:_LISTED]]
    if len(failed) > _LISTED:  # each has its line in the log above; --json's build_finished lists every one
        lines.append(
            f"  and {len(failed) - _LISTED} more failed ({', '.join(f.target for f in failed[_LISTED:][:5])}, …)"
        )
    return lines  # a build-wide stop (r.fatal) is the caller's one-line error: the CLI prints it


def _speaks_utf8(stream: IO[str]) -> bool:
    """Whether ``stream`` encodes any character (else: ``PYTHONIOENCODING=ascii``, a Windows code page)."""
    encoding = getattr(stream, "encoding", None) or "utf-8"
    return encoding.lower().replace("-", "").replace("_", "") == "utf8"


_QUIET: Final = 60.0
"""Seconds without a line after which the plain log says what it is waiting for: a CI job that prints
nothing for some minutes is killed as hung (and a runner without the journal pays again)."""


_LONG_WAIT: Final = 120.0
"""Seconds of a retry's wait from which the live view says so above the bar: past the backoff's cap (60 s),
so a provider's long ``Retry-After``, not each retry of an outage."""


def _duration(seconds: float) -> str:
    """``42s``, ``9m05s``, ``1h00m``."""
    minutes, seconds = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{seconds:02d}s" if minutes else f"{seconds}s"


class PlainReporter:
    """Timestamped lines, one per notable event; for CI logs and pipes. While paid tasks wait, a line a
    minute at least says how many and in which states (see :data:`_QUIET`)."""

    def __init__(
        self, stream: IO[str] | None = None, *, verbose: bool = False, clock: Callable[[], float] | None = None
    ) -> None:
        self.stream = stream or sys.stderr
        self.verbose = verbose
        self._clock = clock or time.monotonic
        self._start = self._said = self._clock()
        self._gone = False  # the stream can no longer be written
        self._arrow = "→" if _speaks_utf8(self.stream) else "->"
        self._waiting: dict[str, tuple[str, float]] = {}  # target with a task in flight: its status, since when
        self._limit = 0  # targets in flight at once, as last said

    def _line(self, text: str) -> None:
        if self._gone:
            return
        self._said = now = self._clock()
        try:
            print(f"[{now - self._start:7.1f}s] {text}", file=self.stream, flush=True)
        except OSError:  # the log's reader left (`2>&1 | head`): the build goes on, and finishes what it paid for
            self._gone = True

    def _heartbeat(self) -> None:
        """After :data:`_QUIET` seconds without a line, one that says what the build is waiting for."""
        now = self._clock()
        if not self._waiting or now - self._said < _QUIET:
            return
        states = Counter(status for status, _ in self._waiting.values())
        count = len(self._waiting)
        oldest = now - min(since for _, since in self._waiting.values())
        each = ", ".join(f"{n} {status}" for status, n in sorted(states.items()))
        self._line(
            f"{'waiting':<10} {count} paid task{'s' * (count != 1)} in flight ({each}), "
            f"the oldest for {_duration(oldest)}"
        )

    def close(self) -> None:
        """Nothing to undo (the live view's counterpart leaves the terminal as it found it)."""

    def emit(self, event: Event) -> None:
        """Print the event when it matters."""
        match event:
            case TargetStarted(target, action, images):
                self._line(f"{action:<10} {target}" + (f" ({images} image{'s' * (images != 1)})" if images else ""))
            case TargetSubmitted(target, task_id, resumed, unplanned):
                self._waiting[target] = ("queued", self._clock())
                if unplanned:
                    self._line(f"{'paid again':<10} {target} task {task_id}: {_LOST}")
                elif self.verbose or resumed:
                    self._line(f"{'resumed' if resumed else 'submitted':<10} {target} task {task_id}")
            case TargetPolled(target, status, progress):
                if target in self._waiting:
                    self._waiting[target] = (status, self._waiting[target][1])
                if self.verbose:
                    self._line(f"{'polled':<10} {target} {status} {progress}%")
            case Tick():
                self._heartbeat()
            case TargetFinished(target, _, outputs):
                self._waiting.pop(target, None)
                self._line(f"{'done':<10} {target} {self._arrow} {', '.join(outputs)}")
            case TargetFailed(target, error):
                self._waiting.pop(target, None)
                self._line(f"{'FAILED':<10} {target}: {error}")
            case RetryScheduled(target, operation, attempt, delay, error):
                self._line(f"{'retry':<10} {target} {operation} #{attempt} in {delay:.1f} s ({error})")
            case BuildStarted(targets, images, concurrency, emulator):
                self._start = self._clock()  # lines count from here, as the summary's "finished in" does
                self._limit = concurrency
                if not targets:
                    return
                what = "placeholder" if emulator else ""
                self._line(
                    f"building {targets} target{'s' * (targets != 1)}, {images} {what}{' ' * emulator}"
                    f"image{'s' * (images != 1)} {'to make' if emulator else 'to pay for'}, {concurrency} at a time"
                )
            case ConcurrencyChanged(limit):
                why = "provider is rate limiting" if limit < self._limit else "rate limits eased"
                self._limit = limit
                self._line(f"{'pace':<10} {why}; {limit} target{'s' * (limit != 1)} at a time")
            case BuildFinished():
                pass  # the summary comes from the caller, after --prune (summary_lines)


def _jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, BaseException):
        return str(value)
    return value


class JsonReporter:
    """One JSON object per event per line (NDJSON): ``{"event": "target_finished", "time": …, …}``."""

    _NAMES: ClassVar[dict[type, str]] = {
        TargetStarted: "target_started",
        TargetSubmitted: "target_submitted",
        TargetPolled: "target_polled",
        TargetFinished: "target_finished",
        TargetFailed: "target_failed",
        RetryScheduled: "retry",
        ConcurrencyChanged: "concurrency_changed",
        BuildStarted: "build_started",
        BuildFinished: "build_finished",
    }

    def __init__(self, stream: IO[str] | None = None) -> None:
        self.stream = stream or sys.stdout
        # Non-ASCII characters as \u escapes where the stream cannot encode them: the same JSON values,
        # never an encoding error mid-build.
        self._ascii = not _speaks_utf8(self.stream)
        self._gone = False  # the reader has left

    def close(self) -> None:
        """Nothing to undo: every line is flushed as it is written."""

    def emit(self, event: Event) -> None:
        """Write the event as one JSON line; once the reader has left (``build --json | head``), nothing."""
        if self._gone or isinstance(event, Tick):
            return
        self._write({"event": self._NAMES[type(event)], "time": round(time.time(), 3), **_jsonable(event)})

    def refused(self, error: str) -> None:
        """Write the ``build_refused`` event: the build did not start (a spend cap, no key, a bad manifest),
        which a stream that simply ends would leave a reader to take for an interrupted build."""
        if not self._gone:
            self._write({"event": "build_refused", "time": round(time.time(), 3), "error": error})

    def _write(self, record: dict[str, Any]) -> None:
        try:
            print(json.dumps(record, sort_keys=True, ensure_ascii=self._ascii), file=self.stream, flush=True)
        except BrokenPipeError:  # the build goes on: what it pays for is locked whether or not anyone reads
            self._gone = True
            if self.stream is sys.stdout:
                silence_stdout()  # the flush at exit goes nowhere too


class RichReporter:
    """A live view for terminals: per-state counts, images done/total, images per minute, ETA, retries, concurrency.

    Finished and failed targets are printed above the live bar; the closing summary replaces it.
    """

    def __init__(self, stream: IO[str] | None = None) -> None:
        from rich.console import Console

        self.console = Console(file=stream or sys.stderr, highlight=False)
        self._progress: Any = None
        self._task: Any = None
        self._start = time.monotonic()
        self._images_total = 0
        self._images_done = 0
        self._paying: dict[str, int] = {}  # images each started target pays for (its TargetStarted)
        self._in_flight = 0
        self._submitted = 0
        self._done = 0
        self._failed = 0
        self._retries = 0
        self._concurrency = 0
        self._lines: list[Text] = []  # finished and failed targets not printed yet
        self._printed = 0.0  # when lines were last printed

    def _begin(self, event: BuildStarted) -> None:
        from rich.console import RenderableType
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
        from rich.text import Text

        self._images_total, self._concurrency = event.images, event.concurrency
        self._start = time.monotonic()

        class TwoLines(Progress):
            """The bar on its own line, the counts on the next: on one line, a terminal of 100 columns
            squeezed the bar, the count and the ETA down to an ellipsis."""

            def get_renderables(self) -> Iterable[RenderableType]:
                yield self.make_tasks_table(self.tasks)
                yield from (Text(task.fields["states"], overflow="fold") for task in self.tasks)

        self._progress = TwoLines(
            TextColumn("[bold]targets"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            console=self.console,
            transient=True,
        )
        self._task = self._progress.add_task("targets", total=event.targets, states="")
        self._progress.start()

    def _states(self) -> str:
        minutes = max(time.monotonic() - self._start, 1e-9) / 60.0
        return (
            f"in flight {self._in_flight} (submitted {self._submitted}) · failed {self._failed} · "
            f"images {self._images_done}/{self._images_total} · {self._images_done / minutes:.0f}/min · "
            f"retries {self._retries} · concurrency {self._concurrency}"
        )

    def emit(self, event: Event) -> None:
        """Update the live view; print finished and failed targets above it."""
        from rich.text import Text

        match event:
            case BuildStarted():
                self._begin(event)
            case TargetStarted(target, _, images):
                self._in_flight += 1
                self._paying[target] = images
            case TargetSubmitted(target, task_id, _, unplanned):
                self._submitted += 1
                if unplanned:
                    self._print(Text.assemble(("paid again ", "yellow"), f"{target} task {task_id}: {_LOST}"))
            case TargetFinished(target, action, outputs):
                self._in_flight -= 1
                self._done += 1
                if action in ("create", "regenerate", "resume"):
                    # What the total counts: images paid for now (n raised: not the kept ones; a resume: none)
                    self._images_done += self._paying.pop(target, 0)
                    self._submitted = max(0, self._submitted - 1)
                self._advance()
                self._print(Text.assemble((f"{action:<10} ", "green"), f"{target} → {', '.join(outputs)}"))
            case TargetFailed(target, error):
                self._in_flight -= 1
                self._paying.pop(target, None)
                self._failed += 1
                self._advance()
                self._print(Text.assemble(("FAILED     ", "bold red"), f"{target}: {error}"))
            case RetryScheduled(target, operation, attempt, delay, error):
                self._retries += 1
                if delay >= _LONG_WAIT:  # else the bar would stand still for minutes with no word why
                    when = f"{operation} #{attempt} in {_duration(delay)}"
                    self._print(Text.assemble(("retry      ", "yellow"), f"{target} {when} ({error})"))
            case ConcurrencyChanged(limit):
                self._concurrency = limit
            case Tick():
                pass  # below: print what waits in the group, refresh the rates
            case BuildFinished():
                self.close()  # the caller prints the summary (summary_lines) where the bar was
                return
        if self._lines and time.monotonic() - self._printed >= _PRINT_EVERY:
            self._flush()
        if self._progress is not None:
            self._progress.update(self._task, states=self._states())

    def close(self) -> None:
        """Take the live bar down and show the cursor again, also when the build ended early (Ctrl-C, an error)."""
        if self._progress is not None:
            self._flush()
            self._progress.stop()
            self._progress = None

    def _advance(self) -> None:
        if self._progress is not None:
            self._progress.advance(self._task)

    def _print(self, line: Text) -> None:
        """Print ``line`` above the live bar, grouped with the others of the same tenth of a second.

        Each print redraws the live bar: at 64 targets a second, one print per target cost 1.2–1.5 ms
        of CPU per target. A held line goes out with the next event of any kind, or at the end.
        """
        self._lines.append(line)
        if time.monotonic() - self._printed >= _PRINT_EVERY:
            self._flush()

    def _flush(self) -> None:
        from rich.text import Text

        if self._lines:
            self.console.print(Text("\n").join(self._lines))
            self._lines.clear()
        self._printed = time.monotonic()
