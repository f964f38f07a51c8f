"""The command line: click commands over :mod:`pixmake.api`, and one funnel from errors to exit codes.

Each command parses options, resolves settings, makes one call into the API and maps the result
to an :class:`ExitCode`. Only :class:`~pixmake.errors.PixmakeError` is caught for users (one line,
no traceback); anything else is a bug and shows its traceback.
"""

from __future__ import annotations

import functools
import json
import os
import signal
import sys
import warnings
from collections.abc import Callable, Mapping, Sequence
from enum import IntEnum
from types import FrameType
from typing import TYPE_CHECKING, Any, Final, NoReturn

import click
from click.core import ParameterSource

from pixmake import __version__, invocation
from pixmake.entry import PIPE_CLOSED as _PIPE_CLOSED
from pixmake.entry import silence_stdout
from pixmake.errors import AuthError, Diagnostic, ManifestError, PixmakeError, UserError

if TYPE_CHECKING:
    from pixmake.api import Project
    from pixmake.manifest import Manifest
    from pixmake.report import JsonReporter, PlainReporter, RichReporter

__all__ = ["ExitCode", "cli", "main"]


class ExitCode(IntEnum):
    """Documented exit codes of every pixmake command."""

    OK = 0
    FAILED = 1  # one or more targets failed (or the provider stopped the build)
    CHANGES = 2  # plan --check: something would be paid for or written
    USER_ERROR = 3  # bad manifest, flag, key or path: nothing ran
    INTERRUPTED = 130  # Ctrl-C
    PIPE_CLOSED = _PIPE_CLOSED  # the reader of stdout left (`pixmake plan | head`): stopped quietly, as git does
    TERMINATED = 143  # SIGTERM (a CI runner cancelling the job): stopped as gracefully as Ctrl-C


class _Context:
    def __init__(self, directory: str | None, manifest: str | None) -> None:
        self.directory = directory
        self.manifest = manifest

    def project(self) -> Any:
        from pixmake.api import open_project

        return open_project(self.directory, self.manifest)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="pixmake")
@click.option("-C", "directory", metavar="DIR", help="Run as if started in DIR.")
@click.option("-f", "manifest", metavar="MANIFEST", help="Manifest file (default: pixmake.yaml).")
@click.pass_context
def cli(ctx: click.Context, directory: str | None, manifest: str | None) -> None:
    """pixmake: make for AI-generated images."""
    ctx.obj = _Context(directory, manifest)
    ctx.with_resource(invocation.invoked(directory, manifest))  # advice pasted where pixmake ran runs as it


@cli.command(short_help="Start a project, or set up a clone of one.")
@click.pass_obj
def init(obj: _Context) -> None:
    """Write a starter pixmake.yaml (never over one that is there) and set up git's merge driver for
    pixmake.lock: in .gitattributes, and in this clone's config (each clone runs pixmake init once)."""
    from pathlib import Path

    from pixmake.scaffold import init_project

    root = Path(obj.directory) if obj.directory is not None else Path.cwd()
    for line in init_project(root, obj.manifest or "pixmake.yaml"):
        click.echo(line)
    click.echo(
        f"next: {invocation.pixmake('plan')}, then {invocation.pixmake('build', '--emulator')} (free placeholders) or "
        f"{invocation.pixmake('build')} with TOAPIS_API_KEY set (paid); commit the manifest, pixmake.lock, "
        ".gitattributes and the images it writes"
    )


@cli.command(short_help="Check the manifest and its input files.")
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print diagnostics as a JSON list of {file, line, column, field, message, severity, kind}.",
)
@click.pass_obj
def validate(obj: _Context, as_json: bool) -> None:
    """Check the manifest, its catalogs and input images against the schema and the model rules."""
    from pixmake import api

    try:
        manifest = api.check(obj.project())
    except ManifestError as error:
        if not as_json:
            raise
        click.echo(json.dumps([d.as_dict() for d in error.diagnostics], indent=1, ensure_ascii=False))
        sys.exit(ExitCode.USER_ERROR)
    except UserError as error:
        if not as_json:
            raise
        click.echo(json.dumps([Diagnostic("", 0, 0, "", str(error), kind="config").as_dict()], indent=1))
        sys.exit(ExitCode.USER_ERROR)
    if as_json:
        click.echo(json.dumps([d.as_dict() for d in manifest.warnings], indent=1, ensure_ascii=False))
        return
    _print_warnings(manifest.warnings)
    count = len(manifest.targets)
    click.echo(f"{manifest.file}: ok, {count} target{'s' * (count != 1)}")


_WHY_FROM: Final = 20  # changes from which a plan ends with the reasons most of them share
_SHOWN: Final = 50  # diagnostics of one kind printed at most: 1,000 catalog rows at fault are not 1,000 lines


def _print_diagnostics(diagnostics: Sequence[Diagnostic], kind: str) -> None:
    """Diagnostics on stderr, one line each, the first :data:`_SHOWN` of them, then how many more."""
    for diagnostic in diagnostics[:_SHOWN]:
        click.echo(f"pixmake: {kind}: {diagnostic}", err=True)
    if len(diagnostics) > _SHOWN:
        more = len(diagnostics) - _SHOWN
        click.echo(
            f"pixmake: {more} more {kind}s not shown ({len(diagnostics)} in all; validate --json lists them)", err=True
        )


def _print_warnings(warnings: Sequence[Diagnostic]) -> None:
    """The manifest's warnings: validate, plan and build all show them."""
    _print_diagnostics(warnings, "warning")


@cli.command(short_help="Print the manifest's JSON Schema.")
def schema() -> None:
    """Print the manifest's JSON Schema (2020-12), the contract editors and CI check against."""
    from pixmake.schema import schema_text

    click.echo(schema_text(), nl=False)


_SIGILS = {
    "create": "+",
    "regenerate": "~",
    "restore": "<",
    "resume": ">",
    "edited": "!",
    "orphan": "-",
    "unchanged": " ",
}


def _reason_json(reason: Any) -> dict[str, Any]:
    document = {"code": reason.code, "text": reason.text}
    return document | {"details": dict(reason.details)} if reason.details else document


def _selection(targets: tuple[str, ...], tags: tuple[str, ...]) -> Any:
    if not targets and not tags:
        return None
    from pixmake.select import Selection

    return Selection(targets, tags)


_TARGETS = click.argument("targets", nargs=-1, metavar="[TARGET|GLOB]...")
_TAG = click.option("--tag", "tags", multiple=True, metavar="TAG", help="Select targets with TAG (repeatable).")


@cli.command(short_help="Show what a build would do, and why.")
@_TARGETS
@_TAG
@click.option("--check", is_flag=True, help="Exit 2 when a build would pay for or write anything (for CI).")
@click.option("--json", "as_json", is_flag=True, help="Print the plan as JSON.")
@click.option("--replace", multiple=True, metavar="TARGET", help="Plan TARGET as regenerated on purpose.")
@click.option("--restore", is_flag=True, help="Plan edited outputs as restored to their locked bytes.")
@click.option(
    "--provider", is_flag=True, help="Plan a build without --emulator: it regenerates build --emulator's placeholders."
)
@click.option("-v", "--verbose", is_flag=True, help="Also list unchanged targets.")
@click.pass_obj
def plan(
    obj: _Context,
    targets: tuple[str, ...],
    tags: tuple[str, ...],
    check: bool,
    as_json: bool,
    replace: tuple[str, ...],
    restore: bool,
    provider: bool,
    verbose: bool,
) -> None:
    """Show what a build would do, and why (all targets, or those named, matched or tagged)."""
    from pixmake import api
    from pixmake.plan import ActionKind, Builder, common_reasons

    select = _selection(targets, tags)
    project = obj.project()
    builder = Builder.PROVIDER if provider else Builder.EITHER
    planned = api.plan(project, replace=replace, select=select, restore=restore, builder=builder)
    result = planned.plan
    if not as_json:
        _print_warnings(planned.warnings)
    if any(a.kind is ActionKind.RESUME for a in result.actions):
        _note_running_build(project)
    if result.unwritten:
        from pixmake.store import running_build

        count, shown = len(result.unwritten), ", ".join(result.unwritten[:5])
        more = f" and {count - 5} more" if count > 5 else ""
        then = (
            "the build running now writes them"
            if running_build(project.state_dir) is not None
            else f"{invocation.pixmake('build')} writes them, free (a clone of the repository pays for them again)"
        )
        click.echo(
            f"pixmake: note: {count} finished target{'s' * (count != 1)} ({shown}{more}) "
            f"{'are' if count != 1 else 'is'} recorded in .pixmake/journal.jsonl, not yet in pixmake.lock: {then}",
            err=True,
        )
    if as_json:
        import json

        outputs = _output_paths(planned)
        actions = [
            {
                "target": a.name,
                "origin": a.target.origin if a.target is not None else "",
                "action": a.kind.value,
                "key": a.key,
                "images": a.images,
                "outputs": outputs(a),
                "reasons": [_reason_json(r) for r in a.reasons],
            }
            for a in result.actions
        ]
        counts = {kind.value: n for kind, n in result.counts().items()}
        dropped = [{"target": t.name, "key": t.key, "reasons": [_reason_json(t.reason)]} for t in result.abandoned]
        stale = [o.path for a in result.actions for o in a.stale]
        document = {
            "actions": actions, "counts": counts, "images": result.images_to_generate, "dropped": dropped,
            "stale": stale, "unwritten": list(result.unwritten), "up_to_date": result.up_to_date,
            "warnings": [d.as_dict() for d in planned.warnings],
        }  # fmt: skip
        click.echo(json.dumps(document, indent=2, ensure_ascii=False, default=str))
    else:
        for action in result.actions if verbose else result.listed:
            why = "; ".join(r.text for r in action.reasons)
            click.echo(
                f"{_SIGILS[action.kind.value]} {action.kind.value:<10} {action.name}" + (f": {why}" if why else "")
            )
        for task in result.abandoned:
            click.echo(f"x {'drop':<10} {task.name}: {task.reason.text}")
        if len(result.changes) >= _WHY_FROM:  # the lines above scrolled away: what most of them say
            common = common_reasons(result.changes)
            if common:
                click.echo("Why, most often: " + "; ".join(f"{n} × {text}" for text, n in common))
        click.echo(f"Plan: {result.summary()}")
    if check and not result.up_to_date:
        sys.exit(ExitCode.CHANGES)


def _output_paths(planned: Any) -> Callable[[Any], list[str]]:
    """The files each action's target writes (an orphan: those its lock entry records), for ``plan --json``:
    a review bot shows the images a change replaces."""
    from pixmake.manifest import output_paths
    from pixmake.plan import ActionKind

    @functools.cache
    def targets() -> dict[str, Any]:  # a plan the memo answered has no targets: the manifest cache has them
        return {t.name: t for t in planned.manifest.targets}

    def outputs(action: Any) -> list[str]:
        if action.kind is ActionKind.ORPHAN:
            entry = planned.lock.entries.get(action.name)
            return [o.path for o in entry.outputs] if entry is not None else []
        target = action.target if action.target is not None else targets().get(action.name)
        return list(output_paths(target)) if target is not None else []

    return outputs


def _note_running_build(project: Any) -> None:
    """A note that the tasks a plan shows as 'resume' belong to a build running now, if one is."""
    from pixmake.store import running_build

    pid = running_build(project.state_dir)
    if pid is not None:
        click.echo(
            f"pixmake: note: a build is running in this project (pid {pid}): "
            "the tasks shown as 'resume' are its own, in flight",
            err=True,
        )


@cli.command(short_help="Show what TARGET's key is made of.")
@click.argument("target")
@click.option("--json", "as_json", is_flag=True, help="Print the explanation as JSON.")
@click.pass_obj
def explain(obj: _Context, target: str, as_json: bool) -> None:
    """Print everything TARGET's key is made of, and what differs from the lock."""
    import json

    from pixmake import api
    from pixmake.fingerprint import written_key

    project = obj.project()
    why = api.explain(project, target)
    if why.action.kind.value == "resume":
        _note_running_build(project)
    locked = why.entry.key if why.entry is not None else None
    recorded = written_key(why.entry) if why.entry is not None else None  # as pixmake.lock holds it
    made = why.action.target
    line, origin = (made.line, made.origin) if made is not None else (0, "")
    if as_json:
        reasons = [_reason_json(r) for r in why.action.reasons]
        document: dict[str, Any] = {"target": why.name, "line": line, "origin": origin}
        document |= {"key": why.key, "locked_key": locked}
        document |= {"recorded_key": recorded, "document": why.document, "action": why.action.kind.value}
        document |= {"reasons": reasons}
        click.echo(json.dumps(document, indent=2, ensure_ascii=False, default=str))
        return
    click.echo(f"target {why.name}")
    if line:  # which entry of the manifest made it, and from which catalog row or matrix combination
        click.echo(f"  made by  {why.file}:{line}" + (f" [{origin}]" if origin else ""))
    click.echo(f"  key      {why.key}")
    click.echo(f"  locked   {locked or '(not in the lockfile)'}")
    if recorded != locked:  # a block prompt, a callback_url
        click.echo(f"           (pixmake.lock records {recorded}, this key as earlier versions compute it)")
    click.echo("  key document (sha256 of its canonical JSON):")
    for text in json.dumps(why.document, indent=2, sort_keys=True, ensure_ascii=False).splitlines():
        click.echo(f"    {text}")
    click.echo(f"  action   {why.action.kind.value}")
    for reason in why.action.reasons:
        click.echo(f"    - {reason.text}")


@cli.command(short_help="Keep the files now at TARGET's outputs.")
@_TARGETS
@_TAG
@click.pass_obj
def accept(obj: _Context, targets: tuple[str, ...], tags: tuple[str, ...]) -> None:
    """Record the files now at the outputs of the targets named, matched or tagged as theirs (keep a
    retouched image, or keep images for inputs changed in a way that shows in none)."""
    from pixmake import api

    if not targets and not tags:
        raise click.UsageError("name the targets to accept (names, globs or --tag TAG)")
    changed: list[str] = []
    skipped: list[str] = []
    for accepted in api.accept(obj.project(), select=_selection(targets, tags), skipped=skipped):
        paths = ", ".join(o.path for o in accepted.entry.outputs)
        click.echo(f"accepted {accepted.name}: {paths}")
        if accepted.placeholders:
            still = "is still a placeholder" if len(accepted.placeholders) == 1 else "are still placeholders"
            replace = invocation.pixmake("build", accepted.name, "--replace", accepted.name)
            click.echo(
                f"pixmake: note: {', '.join(accepted.placeholders)} {still} from build --emulator, now locked as "
                f"{accepted.name}'s: {replace} (without --emulator) "
                "generates all its images anew, the ones you kept too",
                err=True,
            )
        if accepted.task_journaled:
            click.echo(
                f"pixmake: note: a paid task for {accepted.name}'s current inputs is journaled (an interrupted "
                "build): the next build collects it and replaces these files",
                err=True,
            )
        elif accepted.inputs_changed:
            changed.append(accepted.name)
    if skipped:
        shown = ", ".join(skipped[:5]) + (f" and {len(skipped) - 5} more" if len(skipped) > 5 else "")
        click.echo(
            f"pixmake: note: left out {shown}: {'its' if len(skipped) == 1 else 'their'} files are build "
            "--emulator's placeholders, untouched (a build without --emulator generates the images)",
            err=True,
        )
    if changed:  # one note for a selection: a shared var's typo fixed is hundreds of targets
        one = len(changed) == 1
        which = f"{changed[0]}'s inputs differ" if one else f"{len(changed)} targets' inputs differ"
        click.echo(
            f"pixmake: note: {which} from the lock's ({'its' if one else 'their'} prompt, a reference or a "
            f"parameter changed): {'these' if one else 'their'} files now stand for the current ones, and "
            "nothing is regenerated",
            err=True,
        )


@cli.command(short_help="Drop TARGET's interrupted task.")
@click.argument("targets", nargs=-1, required=True, metavar="TARGET...")
@click.pass_obj
def forget(obj: _Context, targets: tuple[str, ...]) -> None:
    """Drop TARGET's task of an interrupted build when it can never be collected (the next build pays again)."""
    from pixmake import api

    for task in api.forget(obj.project(), targets):
        task_id = f"task {task.task_id}" if task.task_id is not None else "no task id: its submit was never answered"
        if task.emulator:
            then = "the next build --emulator makes it again"
        elif task.task_id is not None:  # the provider made it: it was paid for
            then = "the next build submits it again, and pays again"
        else:
            then = "the next build submits it again, and pays again if the provider had made it"
        which = f"client_business_id {task.client_business_id}, {task_id}"
        click.echo(f"forgot {task.target}'s interrupted submit ({which}); {then}")


@cli.command("merge-lock", short_help="Merge pixmake.lock by target (a git driver).")
@click.argument("base", type=click.Path(dir_okay=False))
@click.argument("ours", type=click.Path(dir_okay=False))
@click.argument("theirs", type=click.Path(dir_okay=False))
@click.argument("path", default="pixmake.lock", required=False)
def merge_lock(base: str, ours: str, theirs: str, path: str) -> None:
    """Merge pixmake.lock by target: git's merge driver (`pixmake merge-lock %O %A %B %P`).

    Writes the merged lock over OURS and exits 0. A target changed differently on both sides keeps
    ours' entry (against a removal, the changed one) in a lock that stays whole; each such target is
    named on stderr and the exit is 1, so that git reports a conflict. A side that is not a lock
    leaves OURS as it was (exit 3).
    """
    from pathlib import Path

    from pixmake.lockfile import lock_pieces
    from pixmake.lockmerge import merge_lock_bytes
    from pixmake.store import STATE_DIR, atomic_write

    try:
        base_data = Path(base).read_bytes()
    except FileNotFoundError:  # no common ancestor: git passes an empty file, a caller may pass none
        base_data = b""
    merged = merge_lock_bytes(base_data, Path(ours).read_bytes(), Path(theirs).read_bytes(), file=path)
    atomic_write(ours, lock_pieces(merged.lock))  # git reads the result from %A
    state = Path(path).parent / STATE_DIR  # git runs a driver at the work tree's top; %P is relative to it
    if state.is_dir():  # the side a conflict did not keep: a plan restores it free while its images are cached
        from pixmake.history import remember

        remember(state / "history.jsonl", [c.set_aside for c in merged.conflicts if c.set_aside is not None])
    for conflict in merged.conflicts:
        click.echo(f"pixmake: conflict: {conflict.advice(path)}", err=True)
    if not merged.clean:
        sys.exit(ExitCode.FAILED)


@cli.command(short_help="Delete long-unreferenced cached images.")
@click.option(
    "--keep-days",
    type=click.FloatRange(0),
    default=14.0,
    show_default=True,
    help="Delete an image only once no lock has referred to it for this many days.",
)
@click.option("-n", "--dry-run", is_flag=True, help="Say what would be deleted; delete nothing.")
@click.pass_obj
def gc(obj: _Context, keep_days: float, dry_run: bool) -> None:  # `pixmake gc`, as git gc
    """Delete cached images no lock has referred to for a while (this one, or git's at any branch, tag or stash)."""
    from pixmake import api

    swept = api.sweep(obj.project(), keep_days=keep_days, dry_run=dry_run)
    locks = f"{swept.locks} lock{'s' * (swept.locks != 1)} read"
    click.echo(
        f"{'would delete' if dry_run else 'deleted'} {swept.deleted} cached image{'s' * (swept.deleted != 1)} "
        f"({_size(swept.deleted_bytes)}); kept {swept.referenced} that a lock refers to "
        f"({_size(swept.referenced_bytes)}, {locks}) and {swept.waiting} unreferenced for less than "
        f"{keep_days:g} day{'s' * (keep_days != 1)} ({_size(swept.waiting_bytes)})"
    )


def _size(size: int) -> str:
    return f"{size / 1e6:.1f} MB" if size >= 100_000 else f"{size / 1e3:.0f} KB"


@cli.command(short_help="Generate what changed (needs a key).")
@_TARGETS
@_TAG
@click.option("--emulator", is_flag=True, help="Build against the bundled emulator (no key, no network).")
@click.option("-j", "--jobs", type=click.IntRange(1, 256), help="Targets in flight at once (default: manifest).")
@click.option("--replace", multiple=True, metavar="TARGET", help="Regenerate TARGET even if unchanged.")
@click.option("--restore", is_flag=True, help="Put the locked bytes back over outputs edited by hand.")
@click.option("--prune", is_flag=True, help="Delete orphans' and stale outputs and drop them from pixmake.lock.")
@click.option(
    "--max-images",
    type=click.IntRange(0),
    envvar="PIXMAKE_MAX_IMAGES",
    metavar="N",
    help="Pay for at most N images: refuse to start when the plan would pay for more (env PIXMAKE_MAX_IMAGES).",
)
@click.option("--json", "as_json", is_flag=True, help="Print NDJSON events on stdout.")
@click.option("-v", "--verbose", is_flag=True, help="Print every submit and poll.")
@click.pass_obj
def build(
    obj: _Context,
    targets: tuple[str, ...],
    tags: tuple[str, ...],
    emulator: bool,
    jobs: int | None,
    replace: tuple[str, ...],
    restore: bool,
    prune: bool,
    max_images: int | None,
    as_json: bool,
    verbose: bool,
) -> None:
    """Generate what changed (all targets, or those named, matched or tagged) and record it in pixmake.lock.

    Needs TOAPIS_API_KEY: the provider charges per image, at submit (`pixmake plan --provider` counts them
    first). With --emulator: placeholder images from the bundled emulator, free, with no key.
    """
    from pixmake import api
    from pixmake.report import JsonReporter, summary_lines
    from pixmake.settings import resolve

    try:
        project = obj.project()
        select = _selection(targets, tags)
        manifest = api.load_manifest(project, select)  # through the manifest cache, as plan does
        environ: Mapping[str, str] = os.environ
        if emulator:  # the emulator brings its own URL and key: a bad one in the environment does not matter
            ignored = {"PIXMAKE_BASE_URL", manifest.provider.api_key_env}
            environ = {name: value for name, value in os.environ.items() if name not in ignored}
        settings = resolve(manifest.provider, environ, concurrency=jobs)
    except UserError as error:  # refused before it started (a bad manifest, a bad URL): --json says so too
        if as_json:
            JsonReporter().refused(str(error))
        raise
    _print_warnings((*manifest.warnings, *api.input_warnings(project, manifest, select)))
    if emulator and click.get_current_context().get_parameter_source("max_images") is ParameterSource.ENVIRONMENT:
        max_images = None  # a spend cap for real builds (CI, say); the emulator spends nothing
    reporter = _reporter(as_json, verbose)
    global _stopping
    _stopping = "; finished targets are locked" + ("" if emulator else ", in-flight tasks resume next build")
    if _in_ci() and not emulator:  # a runner starts afresh: the journal of what was paid must outlive it
        _stopping += " if .pixmake/ is saved for it (README: In CI)"
    try:
        result = api.build(
            project,
            settings,
            reporter=reporter,
            emulator=emulator,
            replace=replace,
            manifest=manifest,
            select=select,
            restore=restore,
            prune=prune,
            max_images=max_images,
            warn=_print_warnings,
        )
    except UserError as error:  # refused to start (a spend cap, no key): --json's stream says so too
        if isinstance(reporter, JsonReporter):
            reporter.refused(str(error))
        raise
    finally:
        reporter.close()  # the live view gives the terminal back, whatever ended the build
    for line in summary_lines(result):  # stderr in every mode: with --json, stdout carries only NDJSON
        click.echo(line, err=True)
    _warn_of_uncommitted_inputs(project, manifest, result.generated)
    if _in_ci() and result.images_paid > result.images_generated and not result.emulator:
        click.echo(  # what "the next build resumes it" needs on a runner that starts afresh
            "pixmake: note: paid tasks of targets not finished are journaled in .pixmake/: save it for the next "
            "job whatever this one's outcome (README: In CI), or the next runner pays for them again",
            err=True,
        )
    if result.fatal is not None:
        ran = result.images_paid or result.generated or result.resumed or result.journaled
        if isinstance(result.fatal, AuthError) and ran:
            _fail(str(result.fatal), ExitCode.FAILED)  # refused once something was paid: not "nothing ran" (3)
        raise result.fatal  # one line from the funnel: a refused key exits 3; no balance, unreachable exit 1
    if result.failed:
        sys.exit(ExitCode.FAILED)


def _warn_of_uncommitted_inputs(project: Project, manifest: Manifest, built: Sequence[str]) -> None:
    """A warning for each reference, mask or catalog of a target just generated that git does not track: the
    lock records a build from it, and a teammate's clone, lacking it, cannot plan at all."""
    from pixmake.gitblobs import untracked
    from pixmake.manifest import is_url

    names = set(built)
    if not names:
        return
    inputs = {rel for t in manifest.targets if t.name in names for rel in t.inputs if not is_url(rel)}
    for rel in untracked(project.root, [*inputs, *manifest.catalogs]):
        message = f"{rel} is not in git, and the lock now records a build from it: {invocation.git('add', '--', rel)}"
        click.echo(f"pixmake: warning: {message} (a clone without it cannot plan)", err=True)


def _in_ci() -> bool:
    """Whether a CI system runs pixmake (its ``CI`` variable, as GitHub, GitLab and the rest set it)."""
    return os.environ.get("CI", "").lower() not in ("", "0", "false", "no")


def _reporter(as_json: bool, verbose: bool) -> JsonReporter | PlainReporter | RichReporter:
    """NDJSON with --json; a live view in an interactive terminal; plain timestamped lines otherwise (CI, pipes)."""
    from pixmake.report import JsonReporter, PlainReporter, RichReporter

    if as_json:
        return JsonReporter()
    ci = _in_ci()
    dumb = os.environ.get("TERM") == "dumb"  # Emacs shells, some CI consoles: no cursor movement
    if not verbose and not ci and not dumb and sys.stderr.isatty():
        return RichReporter()
    return PlainReporter(verbose=verbose)


_KNOBS: Final = (  # the fields of pixmake.emulator.EmulatorConfig (a test keeps the two the same)
    "api_key latency latency_jitter queued_fraction result_ttl expired_result_status upload_ttl submit_rps "
    "submit_burst query_rps query_burst p_429 p_500 p_502 p_504_html p_503_unavailable p_drop_after_submit "
    "p_504_after_submit p_task_failed p_content_policy p_task_no_balance p_short_result p_long_result "
    "p_slow_download p_truncated_download p_403_download p_404_download slow_download_seconds status_dialect "
    "error_code_style top_level_url result_times result_style duplicate_business_id quota_images lookup_lag "
    "lookup_by_business_id webhook_url users seed"
)


@cli.command(
    epilog=f"Knobs (--knob NAME=VALUE; p_* are probabilities from 0 to 1; each is described in "
    f"src/pixmake/emulator/config.py): {', '.join(_KNOBS.split())}."
)
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option("--port", default=8787, show_default=True, type=click.IntRange(0, 65535), help="Port (0: any free port).")
@click.option("--latency", type=click.FloatRange(0), help="Seconds from submit to completed.")
@click.option("--seed", type=int, help="Seed for reproducible faults.")
@click.option("--api-key", help="Accept only this key (default: any 'sk-...' key).")
@click.option("--knob", multiple=True, metavar="NAME=VALUE", help="Set an emulator knob, e.g. p_500=0.1 (repeatable).")
def emulator(
    host: str, port: int, latency: float | None, seed: int | None, api_key: str | None, knob: tuple[str, ...]
) -> None:
    """Run the bundled ToAPIs emulator until Ctrl-C."""
    from pixmake.emulator import config_from_mapping, serve

    pairs = [text.partition("=") for text in knob]
    if any(not sep or not name.strip() for name, sep, _ in pairs):
        raise click.BadParameter("expected NAME=VALUE", param_hint="'--knob'")
    knobs: dict[str, object] = {name.strip(): value for name, _, value in pairs}
    named = {"latency": latency, "seed": seed, "api_key": api_key}
    knobs |= {name: value for name, value in named.items() if value is not None}
    try:
        config = config_from_mapping(knobs)
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="'--knob'") from error
    try:
        serve(
            config,
            host=host,
            port=port,
            on_ready=lambda url: click.echo(
                f"emulator listening on {url}\nto build against it: PIXMAKE_BASE_URL={url} "
                f"TOAPIS_API_KEY={api_key or 'sk-anything'} {invocation.pixmake('build')}"
            ),
        )
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM: how an emulator is meant to stop, not a failure
        click.echo("emulator stopped", err=True)


def _fail(message: str, code: ExitCode) -> NoReturn:
    click.echo(f"pixmake: error: {message}", err=True)
    sys.exit(code)


_terminated = False
_stopping: str = ""  # what an interrupt leaves behind, said after "pixmake: interrupted" (a build sets it)


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    """SIGTERM stops pixmake as Ctrl-C does: whatever handles SIGINT now (asyncio's graceful cancel
    during a build, else KeyboardInterrupt) handles it, so finished targets are locked first.

    With SIGINT ignored (a background job of a non-interactive shell, some CI runners) asyncio cancels
    no build on Ctrl-C, and a KeyboardInterrupt raised inside the event loop would tear the build down
    with tracebacks: a running build is cancelled as asyncio's handler would (``api.stop_build``)."""
    global _terminated
    _terminated = True
    handler = signal.getsignal(signal.SIGINT)
    if callable(handler):
        handler(signal.SIGINT, frame)
        return
    # Not imported, or still being imported (the signal may land in that import): no build is running.
    stop_build = getattr(sys.modules.get("pixmake.api"), "stop_build", None)
    if stop_build is None or not stop_build():
        raise KeyboardInterrupt


def _name_the_variable(error: click.BadParameter) -> None:
    """A bad value that came from an option's environment variable names that variable, not the flag."""
    param, ctx = error.param, error.ctx
    if param is None or param.name is None or ctx is None or not isinstance(param.envvar, str):
        return
    if ctx.get_parameter_source(param.name) is click.core.ParameterSource.ENVIRONMENT:
        error.param_hint = f"{param.envvar} (the default of {param.get_error_hint(ctx)})"


def main(argv: list[str] | None = None) -> NoReturn:
    """Entry point: run the CLI and map every outcome to an ExitCode."""
    args = sys.argv[1:] if argv is None else list(argv)
    global _stopping
    _stopping = ""
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _on_sigterm)
    # Pillow's own words on a large image, with its source path: pixmake refuses a result past
    # decode.MAX_RESULT_PIXELS itself, and a person's large file is theirs (as decode.is_whole_image says).
    warnings.filterwarnings("ignore", message=r"Image size \(\d+ pixels\) exceeds limit")
    try:
        # Not cli.main(): it prints an empty line before re-raising Ctrl-C, and the funnel below
        # owns every message. Shell completion is answered first, as cli.main would.
        cli._main_shell_completion({}, "pixmake", None)
        with cli.make_context("pixmake", args) as ctx:
            cli.invoke(ctx)
    except click.exceptions.Exit as done:
        sys.exit(done.exit_code)
    except click.exceptions.NoArgsIsHelpError as error:  # plain `pixmake`: the help, not an error
        click.echo(error.ctx.get_help() if error.ctx is not None else error.format_message())
        sys.exit(ExitCode.OK)
    except click.UsageError as error:
        if isinstance(error, click.BadParameter):
            _name_the_variable(error)
        message = error.format_message()
        hint = f" (see '{error.ctx.command_path} --help')" if error.ctx else ""
        if isinstance(error, click.NoSuchOption) and error.option_name in ("-C", "-f") and error.ctx:
            option, command = error.option_name, error.ctx.info_name
            message, hint = f"{option} is global: write it before the command (pixmake {option} … {command} …)", ""
        _fail(message + hint, ExitCode.USER_ERROR)
    except (click.Abort, KeyboardInterrupt):
        what = "terminated" if _terminated else "interrupted"
        click.echo(f"pixmake: {what}{_stopping}", err=True)
        sys.exit(ExitCode.TERMINATED if _terminated else ExitCode.INTERRUPTED)
    except ManifestError as error:
        _print_diagnostics(error.diagnostics, "error")
        sys.exit(ExitCode.USER_ERROR)
    except (UserError, AuthError) as error:
        _fail(str(error), ExitCode.USER_ERROR)
    except PixmakeError as error:
        _fail(str(error), ExitCode.FAILED)
    except click.ClickException as error:
        _fail(error.format_message(), ExitCode.USER_ERROR)
    except BrokenPipeError:  # `pixmake plan | head`: the reader left
        silence_stdout()
        sys.exit(ExitCode.PIPE_CLOSED)
    except OSError as error:  # the disk refused a read or write pixmake does not handle itself: one line, no traceback
        from pixmake.store import describe_os_error

        _fail(describe_os_error(error, os.curdir), ExitCode.FAILED)
    sys.exit(ExitCode.OK)
