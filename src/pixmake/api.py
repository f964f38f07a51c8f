"""The Python API the CLI calls: validate, plan, build.

Shell. Each function takes a :class:`Project` (where the manifest, lockfile and ``.pixmake/`` are)
and returns values; nothing here prints. ``import pixmake.api`` stays light: the executor, the
provider and the emulator (httpx, anyio, Pillow) are imported only by :func:`build`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pixmake.errors import ConfigError, ManifestError
from pixmake.lockfile import Lock, parse_lock
from pixmake.manifest import Manifest, parse_manifest
from pixmake.plan import Plan, make_plan
from pixmake.scan import DiskState, scan_project
from pixmake.store import STATE_DIR, ObjectCache

if TYPE_CHECKING:
    from pixmake.execute import BuildResult
    from pixmake.journal import PendingSubmit
    from pixmake.report import Reporter
    from pixmake.settings import Settings

__all__ = ["PlanResult", "Project", "build", "load_lock", "open_project", "plan", "validate"]

EMULATOR_POLL_INTERVAL = 0.02
UPLOAD_TTL_SECONDS = 12 * 3600


@dataclass(frozen=True, slots=True)
class Project:
    """Where a project's files are: the manifest, the lockfile beside it, and ``.pixmake/``."""

    root: Path
    manifest: Path

    @property
    def lockfile(self) -> Path:
        """``pixmake.lock`` beside the manifest."""
        return self.manifest.with_name("pixmake.lock")

    @property
    def state_dir(self) -> Path:
        """Local, uncommitted state: stat cache, journal, object cache."""
        return self.root / STATE_DIR

    @property
    def journal(self) -> Path:
        """The build journal."""
        return self.state_dir / "journal.jsonl"

    @property
    def objects(self) -> ObjectCache:
        """The content-addressed cache of every generated image."""
        return ObjectCache(self.state_dir / "objects")


def open_project(directory: str | Path | None = None, manifest: str | Path | None = None) -> Project:
    """Locate a project: ``manifest`` (default ``pixmake.yaml``) relative to ``directory`` (default cwd)."""
    base = Path(directory) if directory is not None else Path.cwd()
    if not base.is_dir():
        raise ConfigError(f"-C {directory}: not a directory")
    path = (base / (manifest or "pixmake.yaml")).absolute()
    if not path.is_file():
        raise ConfigError(f"{path}: manifest not found (use -f FILE or -C DIR)")
    return Project(root=path.parent, manifest=path)


def _display(project: Project) -> str:
    try:
        return str(project.manifest.relative_to(Path.cwd()))
    except ValueError:
        return str(project.manifest)


def validate(project: Project) -> Manifest:
    """Load and validate the manifest; raises ManifestError listing every problem."""
    file = _display(project)
    data = project.manifest.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        raise ManifestError.at(file, line, 1, "", "manifest is not valid UTF-8 text") from None
    return parse_manifest(text.removeprefix("\ufeff"), file=file)


def load_lock(project: Project) -> tuple[Lock, dict[str, PendingSubmit]]:
    """The lockfile with the journal folded in (in memory), and the submits still pending."""
    from pixmake.journal import read_journal

    try:
        text = project.lockfile.read_text(encoding="utf-8")
    except FileNotFoundError:
        lock = Lock()
    else:
        lock = parse_lock(text, file=project.lockfile.name)
    return read_journal(project.journal, lock)


@dataclass(frozen=True, slots=True)
class PlanResult:
    """A plan with what it was made from."""

    manifest: Manifest
    lock: Lock
    disk: DiskState
    plan: Plan


def plan(project: Project, *, replace: Iterable[str] = (), manifest: Manifest | None = None) -> PlanResult:
    """What a build would do and why; reads files, writes nothing, needs no key and no network."""
    manifest = manifest or validate(project)
    unknown = set(replace) - {t.name for t in manifest.targets}
    if unknown:
        raise ConfigError(f"--replace: no target named {', '.join(sorted(unknown))}")
    lock, _ = load_lock(project)
    disk = scan_project(project.root, manifest.targets, lock, project.objects, file=manifest.file)
    return PlanResult(manifest, lock, disk, make_plan(manifest.targets, lock, disk, replace=replace))


def _load_uploads(project: Project, base_url: str) -> dict[str, str]:
    try:
        raw: dict[str, Any] = json.loads((project.state_dir / "uploads.json").read_text())
    except (FileNotFoundError, ValueError):
        return {}
    now = time.time()
    return {
        sha: str(item["url"])
        for sha, item in raw.items()
        if isinstance(item, dict) and item.get("base_url") == base_url and now - item.get("at", 0) < UPLOAD_TTL_SECONDS
    }


def _save_uploads(project: Project, base_url: str, uploads: dict[str, str], known: dict[str, str]) -> None:
    from pixmake.store import atomic_write

    path = project.state_dir / "uploads.json"
    try:
        raw: dict[str, Any] = json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        raw = {}
    now = time.time()
    for sha, url in uploads.items():
        if known.get(sha) != url:
            raw[sha] = {"url": url, "base_url": base_url, "at": now}
    atomic_write(path, json.dumps(raw, sort_keys=True, indent=1).encode())


def build(
    project: Project,
    settings: Settings,
    *,
    reporter: Reporter | None = None,
    emulator: bool = False,
    replace: Iterable[str] = (),
    manifest: Manifest | None = None,
) -> BuildResult:
    """Generate what the plan says, record it in the lockfile; ``emulator=True`` runs the bundled emulator."""
    if emulator:
        from pixmake.emulator.server import EmulatorServer

        with EmulatorServer() as server:
            local = replace_settings(settings, server.url)
            return _build(project, local, reporter=reporter, replace=replace, manifest=manifest)
    return _build(project, settings, reporter=reporter, replace=replace, manifest=manifest)


def replace_settings(settings: Settings, url: str) -> Settings:
    """Settings pointed at an emulator: its URL, a throwaway key, a short poll interval."""
    from pixmake.settings import Secret

    return replace(
        settings,
        base_url=url,
        api_key=Secret("sk-emulator-local"),
        poll_interval=settings.poll_interval if settings.poll_interval is not None else EMULATOR_POLL_INTERVAL,
        submit_rate=max(settings.submit_rate, 50.0),
    )


def _build(
    project: Project,
    settings: Settings,
    *,
    reporter: Reporter | None,
    replace: Iterable[str],
    manifest: Manifest | None,
) -> BuildResult:
    import anyio

    from pixmake.execute import Executor
    from pixmake.journal import Journal
    from pixmake.report import RecordingReporter
    from pixmake.store import project_lock

    with project_lock(project.state_dir):
        result = plan(project, replace=replace, manifest=manifest)
        _, pending = load_lock(project)
        paid = [a for a in result.plan.actions if a.kind.paid]
        if paid and settings.api_key is None:
            raise ConfigError(
                f"no API key: set the {settings.api_key_env} environment variable "
                f"({len(paid)} target{'s' * (len(paid) != 1)} to generate), or build with --emulator"
            )
        journal = Journal(project.journal)
        journal.open()
        provider = None
        if paid:
            from pixmake.providers.toapis import ToapisProvider

            provider = ToapisProvider(settings)
        uploads = _load_uploads(project, settings.base_url)
        executor = Executor.create(
            root=project.root,
            lock_path=project.lockfile,
            lock=result.lock,
            pending=pending,
            settings=settings,
            provider=provider,
            reporter=reporter or RecordingReporter(),
            objects=project.objects,
            journal=journal,
            input_hashes=result.disk.file_hashes,
            uploads=uploads,
        )

        async def run() -> BuildResult:
            try:
                return await executor.run(result.plan)
            finally:
                if provider is not None:
                    with anyio.CancelScope(shield=True):
                        await provider.aclose()

        try:
            outcome = anyio.run(run)
        finally:
            journal.close()
            if executor.uploads != uploads:
                _save_uploads(project, settings.base_url, executor.uploads, uploads)
        return outcome
