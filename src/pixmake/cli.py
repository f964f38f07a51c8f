"""The command line: click commands over :mod:`pixmake.api`, and one funnel from errors to exit codes.

Each command parses options, resolves settings, makes one call into the API and maps the result
to an :class:`ExitCode`. Only :class:`~pixmake.errors.PixmakeError` is caught for users (one line,
no traceback); anything else is a bug and shows its traceback.
"""

from __future__ import annotations

import json
import os
import sys
from enum import IntEnum
from typing import Any, NoReturn

import click

from pixmake import __version__
from pixmake.errors import AuthError, ManifestError, PixmakeError, UserError

__all__ = ["ExitCode", "cli", "main"]


class ExitCode(IntEnum):
    """Documented exit codes of every pixmake command."""

    OK = 0
    FAILED = 1  # one or more targets failed (or the provider stopped the build)
    CHANGES = 2  # plan --check: something would be paid for or written
    USER_ERROR = 3  # bad manifest, flag, key or path: nothing ran
    INTERRUPTED = 130  # Ctrl-C


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


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print diagnostics as JSON.")
@click.pass_obj
def validate(obj: _Context, as_json: bool) -> None:
    """Check the manifest against the schema and the model rules."""
    from pixmake import api

    try:
        manifest = api.validate(obj.project())
    except ManifestError as error:
        if not as_json:
            raise
        click.echo(json.dumps([d.__dict__ if hasattr(d, "__dict__") else _diag(d) for d in error.diagnostics]))
        sys.exit(ExitCode.USER_ERROR)
    if as_json:
        click.echo("[]")
    else:
        count = len(manifest.targets)
        click.echo(f"{manifest.file}: ok, {count} target{'s' * (count != 1)}")


def _diag(d: Any) -> dict[str, Any]:
    return {"file": d.file, "line": d.line, "column": d.column, "field": d.field, "message": d.message}


_SIGILS = {"create": "+", "regenerate": "~", "restore": "<", "edited": "!", "orphan": "-", "unchanged": " "}


@cli.command()
@click.option("--check", is_flag=True, help="Exit 2 when a build would pay for or write anything (for CI).")
@click.option("--json", "as_json", is_flag=True, help="Print the plan as JSON.")
@click.option("--replace", multiple=True, metavar="TARGET", help="Plan TARGET as regenerated on purpose.")
@click.option("-v", "--verbose", is_flag=True, help="Also list unchanged targets.")
@click.pass_obj
def plan(obj: _Context, check: bool, as_json: bool, replace: tuple[str, ...], verbose: bool) -> None:
    """Show what a build would do, and why."""
    from pixmake import api

    result = api.plan(obj.project(), replace=replace).plan
    if as_json:
        actions = [
            {
                "target": a.name,
                "action": a.kind.value,
                "key": a.key,
                "images": a.target.n if a.target is not None and a.kind.paid else 0,
                "reasons": [{"code": r.code, "text": r.text} for r in a.reasons],
            }
            for a in result.actions
        ]
        counts = {kind.value: n for kind, n in result.counts().items()}
        click.echo(json.dumps({"actions": actions, "counts": counts, "images": result.images_to_generate}, indent=2))
    else:
        for action in result.actions:
            if action.kind.value == "unchanged" and not verbose:
                continue
            why = "; ".join(r.text for r in action.reasons)
            click.echo(
                f"{_SIGILS[action.kind.value]} {action.kind.value:<10} {action.name}" + (f": {why}" if why else "")
            )
        click.echo(f"Plan: {result.summary()}")
    if check and result.changes:
        sys.exit(ExitCode.CHANGES)


@cli.command()
@click.option("--emulator", is_flag=True, help="Build against the bundled emulator (no key, no network).")
@click.option("-j", "--jobs", type=click.IntRange(1, 256), help="Targets in flight at once (default: manifest).")
@click.option("--replace", multiple=True, metavar="TARGET", help="Regenerate TARGET even if unchanged.")
@click.option("--json", "as_json", is_flag=True, help="Print NDJSON events on stdout.")
@click.option("-v", "--verbose", is_flag=True, help="Print every submit and poll.")
@click.pass_obj
def build(
    obj: _Context, emulator: bool, jobs: int | None, replace: tuple[str, ...], as_json: bool, verbose: bool
) -> None:
    """Generate what changed and record it in pixmake.lock."""
    from pixmake import api
    from pixmake.settings import resolve

    project = obj.project()
    manifest = api.validate(project)
    settings = resolve(manifest.provider, os.environ, concurrency=jobs)
    reporter = _reporter(as_json, verbose)
    result = api.build(project, settings, reporter=reporter, emulator=emulator, replace=replace, manifest=manifest)
    if isinstance(result.fatal, AuthError):
        sys.exit(ExitCode.USER_ERROR)  # a refused key is the user's to fix, like a missing one
    if result.fatal is not None or result.failed:
        sys.exit(ExitCode.FAILED)


def _reporter(as_json: bool, verbose: bool) -> Any:
    from pixmake.report import JsonReporter, PlainReporter

    if as_json:
        return JsonReporter()
    return PlainReporter(verbose=verbose)


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option("--port", default=8787, show_default=True, type=click.IntRange(0, 65535), help="Port (0: any free port).")
@click.option("--latency", type=click.FloatRange(0), help="Seconds from submit to completed.")
@click.option("--seed", type=int, help="Seed for reproducible faults.")
def emulator(host: str, port: int, latency: float | None, seed: int | None) -> None:
    """Run the bundled ToAPIs emulator until Ctrl-C."""
    from pixmake.emulator import EmulatorConfig, serve

    knobs: dict[str, Any] = {}
    if latency is not None:
        knobs["latency"] = latency
    if seed is not None:
        knobs["seed"] = seed
    serve(
        EmulatorConfig(**knobs),
        host=host,
        port=port,
        on_ready=lambda url: click.echo(f"emulator listening on {url}"),
    )


def _fail(message: str, code: ExitCode) -> NoReturn:
    click.echo(f"pixmake: error: {message}", err=True)
    sys.exit(code)


def main(argv: list[str] | None = None) -> NoReturn:
    """Entry point: run the CLI and map every outcome to an ExitCode."""
    try:
        cli.main(args=argv, prog_name="pixmake", standalone_mode=False)
    except click.exceptions.Exit as done:
        sys.exit(done.exit_code)
    except click.UsageError as error:
        hint = f" (see 'pixmake {error.ctx.command_path.split(' ', 1)[-1]} --help')" if error.ctx else ""
        _fail(error.format_message() + hint, ExitCode.USER_ERROR)
    except (click.Abort, KeyboardInterrupt):
        click.echo("pixmake: interrupted; finished targets are locked, in-flight tasks resume next build", err=True)
        sys.exit(ExitCode.INTERRUPTED)
    except ManifestError as error:
        for diagnostic in error.diagnostics:
            click.echo(f"pixmake: error: {diagnostic}", err=True)
        sys.exit(ExitCode.USER_ERROR)
    except (UserError, AuthError) as error:
        _fail(str(error), ExitCode.USER_ERROR)
    except PixmakeError as error:
        _fail(str(error), ExitCode.FAILED)
    except click.ClickException as error:
        _fail(error.format_message(), ExitCode.USER_ERROR)
    sys.exit(ExitCode.OK)
