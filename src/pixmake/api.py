"""The Python API the CLI calls: validate, plan, build.

Shell. Each function takes a :class:`Project` (where the manifest, lockfile and ``.pixmake/`` are)
and returns values; nothing here prints. ``import pixmake.api`` stays light: the executor, the
provider and the emulator (aiohttp, anyio, Pillow) are imported only by :func:`build`.
"""

from __future__ import annotations

import codecs
import contextlib
import gc
import importlib.util
import os
import shlex
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from dataclasses import replace as dataclass_replace  # where a parameter is named replace
from functools import cache, partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from pixmake import invocation
from pixmake.errors import ConfigError, Diagnostic, LockfileError, ManifestError, PixmakeError, UnsafePathError
from pixmake.recordfile import paused_gc

# The manifest parser (yaml, jsonschema), the lockfile parser and the planner are imported where
# they are used: a no-op `pixmake plan` answered by the memo (pixmake.memo) needs none of them.
if TYPE_CHECKING:
    import asyncio

    from pixmake.emulator.config import EmulatorConfig
    from pixmake.execute import BuildResult
    from pixmake.journal import PendingSubmit
    from pixmake.lockfile import Lock, LockEntry
    from pixmake.manifest import Manifest, Target
    from pixmake.pixelcache import PixelDigests
    from pixmake.plan import Action, Builder, Plan
    from pixmake.reconcile import PruneResult
    from pixmake.report import Reporter
    from pixmake.scan import DiskState
    from pixmake.select import Selection
    from pixmake.settings import Settings
    from pixmake.store import ObjectCache
    from pixmake.sweep import SweepResult

__all__ = [
    "Accepted",
    "Explanation",
    "PlanResult",
    "Project",
    "accept",
    "build",
    "check",
    "explain",
    "load_lock",
    "load_manifest",
    "memo_plan",
    "open_project",
    "plan",
    "prune",
    "stop_build",
    "sweep",
    "validate",
]

EMULATOR_POLL_INTERVAL = 0.02
_BUILD_GC_THRESHOLD = 10_000  # young objects between collections during a build (see _build)


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
        return self.root / ".pixmake"  # store.STATE_DIR; not imported here: the no-op plan loads as little as it can

    @property
    def stat_cache(self) -> Path:
        """Remembered file hashes, trusted while a file's stat is unchanged (see :mod:`pixmake.scan`)."""
        return self.state_dir / "statcache"

    @property
    def journal(self) -> Path:
        """The build journal."""
        return self.state_dir / "journal.jsonl"

    @property
    def history(self) -> Path:
        """Lock entries that builds replaced (see :mod:`pixmake.history`)."""
        return self.state_dir / "history.jsonl"

    @property
    def pixel_digests(self) -> PixelDigests:
        """The digests of what its input files show, by content (see :mod:`pixmake.pixelcache`); read on first use."""
        from pixmake.pixelcache import PixelDigests

        return PixelDigests(self.state_dir / "pixels.json")

    @property
    def objects(self) -> ObjectCache:
        """The content-addressed cache of every generated image."""
        from pixmake.store import ObjectCache

        return ObjectCache(self.state_dir / "objects")


def open_project(directory: str | Path | None = None, manifest: str | Path | None = None) -> Project:
    """Locate a project: ``manifest`` (default ``pixmake.yaml``) relative to ``directory`` (default cwd)."""
    base = Path(directory) if directory is not None else Path.cwd()
    if not base.is_dir():
        raise ConfigError(f"-C {directory}: not a directory")
    path = (base / (manifest or "pixmake.yaml")).absolute()
    if not path.is_file():
        raise ConfigError(_not_found(path, manifest))
    project = Project(root=path.parent, manifest=path)
    state = project.state_dir
    if state.is_symlink():
        if not _state_elsewhere_on_purpose(state, project.root):
            # A link committed to a repository would have a build write its journal and cache where it points.
            raise ConfigError(
                f"{state} is a symlink to {os.readlink(state)}, outside the project, to a folder that is neither "
                "empty nor pixmake's state: to keep the state elsewhere (a CI cache), link an empty folder"
            )
        _claim_state(state.resolve(), project)
    _refuse_links_in_state(state)
    return project


def _refuse_links_in_state(state: Path) -> None:
    """Refuse a symlink among the state's files or the object cache's folders: pixmake makes none, and a
    link committed to a repository (``git add -f``) would have a build append to or write files where it
    points (a journal linked to ``~/.gitconfig``). ``objects`` itself may be a link to an object cache
    kept elsewhere (shared by projects, say): to an empty folder, or to one that holds only an object
    cache's folders, as ``.pixmake`` may link to a CI cache."""
    objects = state / "objects"
    for folder in (state, objects):
        try:
            with os.scandir(folder) as found:
                entries = list(found)
        except OSError:  # none yet, or not a folder: what writes there says so
            continue
        for entry in entries:
            if entry.is_symlink() and not (entry.path == str(objects) and _an_object_cache(objects)):
                raise ConfigError(
                    f"{entry.path} is a symlink (to {os.readlink(entry.path)}); pixmake's state holds none but "
                    "its objects folder linked to an object cache, and a build would write where it points: "
                    "delete it"
                )
            if not (entry.is_symlink() or entry.is_file(follow_symlinks=False) or entry.is_dir(follow_symlinks=False)):
                raise ConfigError(  # reading a FIFO there would wait for a writer for good
                    f"{entry.path} is not a file (a FIFO, a socket or a device); pixmake's state holds none: delete it"
                )


def _refuse_committed_state(project: Project) -> None:
    """Refuse to pay while git tracks files of pixmake's state (``git add -f``: its ``.gitignore`` keeps them
    out): a clone's build would take a committed journal's tasks for paid ones (its plan saying less than it
    pays) and a committed upload cache's links for its references' (a pull request's images sent instead)."""
    from pixmake.gitblobs import tracked
    from pixmake.store import STATE_DIR

    state = project.state_dir
    if state.is_symlink():  # a link to the state kept elsewhere (a CI cache): git tracks the link, not what is there
        where = state.resolve()
        if not where.is_relative_to(project.root.resolve()):
            return
        folder = where.relative_to(project.root.resolve()).as_posix()
        found = [path for path in tracked(project.root, folder) if path != folder]
    else:
        folder = STATE_DIR
        found = tracked(project.root, folder)
    if found:
        more = f" and {len(found) - 1} more" if len(found) > 1 else ""
        top = found[0].split("/", 1)[0] if folder == STATE_DIR else folder  # .PIXMAKE, in its own letter case
        untrack = invocation.git("rm", "-r", "-q", "--cached", top)
        raise ConfigError(
            f"git tracks pixmake's local state ({found[0]}{more}), which is never committed: a build would trust "
            f"its journal's paid tasks and its upload links; untrack it ({untrack}) and commit, then build again"
        )


def _an_object_cache(folder: Path) -> bool:
    """Whether ``folder`` is empty or holds only what an object cache does: two-hex-digit shard folders (no
    links) and the ``users`` list."""
    try:
        with os.scandir(folder) as entries:
            return all(
                (e.name == "users" and e.is_file(follow_symlinks=False))
                or (
                    len(e.name) == 2
                    and all(c in "0123456789abcdef" for c in e.name)
                    and e.is_dir(follow_symlinks=False)
                )
                for e in entries
            )
    except OSError:
        return False


def _project_identity(project: Project) -> str | None:
    """Which project of its repository this is, the same on every clone and runner: its folder's path in its
    git work tree (``.`` at the top); None outside one (a checkout's path changes from one runner to the next)."""
    root = project.root.resolve()
    for top in (root, *root.parents):
        if (top / ".git").exists():
            return root.relative_to(top).as_posix()
    return None


def _claim_state(folder: Path, project: Project) -> None:
    """Make the state folder a link leads to outside the project this project's, or refuse it when another
    project of the repository has its state there: two projects sharing one (a CI cache folder for a whole
    monorepo) would each drop the other's paid tasks from the journal and delete its images from the cache."""
    from pixmake.manifest import portable_path
    from pixmake.store import atomic_write, make_state_dir

    identity = _project_identity(project)
    if identity is None or folder.is_relative_to(project.root.resolve()):
        return
    owner = folder / "project"
    try:
        other = owner.read_bytes().decode("utf-8", "replace").lstrip("\ufeff").strip()
    except FileNotFoundError:
        with contextlib.suppress(OSError):
            make_state_dir(folder)  # pixmake's state from now on, whatever runs first (validate writes nothing)
            atomic_write(owner, identity.encode() + b"\n", durable=False)
        return
    except OSError:
        return  # unreadable: no claim to check, none overwritten
    if portable_path(other) != portable_path(identity):  # -C Proj and -C proj on a disk that ignores case
        raise ConfigError(
            f"{project.state_dir} links to {folder}, the local state of another project (folder {other!r} of the "
            "repository): give each "
            "project a cache folder of its own (its journal and object cache are one project's); if this is "
            f"that project, moved, write {identity} into {owner}"
        )


_OWNER: Final = "manifest"  # in .pixmake/: the name of the manifest whose lock and state these are


@contextlib.contextmanager
def _holding(project: Project, command: str = "build") -> Iterator[None]:
    """Hold the project for ``command`` (one writer of its lock, journal and outputs at a time), as the
    manifest whose lock and state they are (see :func:`_own_state`)."""
    from pixmake.store import project_lock

    with project_lock(project.state_dir, command):
        _own_state(project)
        yield


def _own_state(project: Project) -> None:
    """Refuse a manifest that would share ``pixmake.lock`` and ``.pixmake/`` with another one in its folder:
    its build would drop the other's targets' paid tasks from the journal, and its prune their images.

    The folder's lock and state are the manifest that first wrote them (named in ``.pixmake/manifest``)
    while it is there; else (a fresh clone, the owner renamed) this one's, which then claims them, if it
    is ``pixmake.yaml`` or no other manifest is beside it (``pixmake.yaml``, or a YAML file that looks like
    one: keep each in a folder of its own). ``plan`` is not refused: it writes none of it.
    """
    record = project.state_dir / _OWNER
    try:
        claimed = record.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        claimed = ""
    owner = None
    if _a_manifest_beside(project, claimed):
        if not _same_file(project.root / claimed, project.manifest):
            owner = claimed
    elif project.manifest.name != "pixmake.yaml" and (other := _another_manifest_beside(project)) is not None:
        owner = other  # no owner here (a fresh clone, the owner renamed), and this is not pixmake.lock's namesake
    elif claimed != project.manifest.name:
        from pixmake.store import atomic_write

        with contextlib.suppress(OSError):  # best effort: a read-only state folder is refused elsewhere
            atomic_write(record, project.manifest.name.encode() + b"\n", durable=False)
    if owner is not None:
        name = project.manifest.name
        raise ConfigError(
            f"{project.lockfile.name} and .pixmake/ in {_display_folder(project.root)} are {owner}'s: {name} beside it "
            f"would share them (its build would drop {owner}'s targets and their paid tasks); keep {name} in a "
            f"folder of its own (with -C that folder), or delete {owner} if {name} replaces it"
        )


def _a_manifest_beside(project: Project, name: str) -> bool:
    """Whether ``name`` (a bare file name) is a file in the project's folder."""
    return (
        bool(name)
        and "/" not in name
        and "\\" not in name
        and name not in (".", "..")
        and (project.root / name).is_file()
    )


def _another_manifest_beside(project: Project) -> str | None:
    """Another manifest in the project's folder (``pixmake.yaml`` first, else the first YAML file that looks
    like one), which may own the folder's lock and state: then no other manifest may claim them."""
    if _a_manifest_beside(project, "pixmake.yaml") and not _same_file(project.root / "pixmake.yaml", project.manifest):
        return "pixmake.yaml"
    try:
        names = sorted(e.name for e in os.scandir(project.root) if e.name.endswith((".yaml", ".yml")) and e.is_file())
    except OSError:
        return None
    for name in names:
        path = project.root / name
        if not _same_file(path, project.manifest) and _looks_like_a_manifest(path):
            return name
    return None


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _display_folder(folder: Path) -> str:
    try:
        shown = str(folder.relative_to(Path.cwd()))
    except ValueError:
        return str(folder)
    return "this folder" if shown == "." else shown


def _state_elsewhere_on_purpose(state: Path, root: Path) -> bool:
    """Whether a symlinked ``.pixmake`` may be used: it leads inside the project, or to an empty folder or
    one holding pixmake's state (its .gitignore), as a CI cache does; not to any folder a link names."""
    from pixmake.store import holds_state

    target = state.resolve()
    if target.is_relative_to(root.resolve()):
        return True
    try:
        return not any(target.iterdir()) or holds_state(target)
    except OSError:
        return False


_NOT_FOUND: Final = "file not found: "


def _with_locked_hint(project: Project, error: ManifestError) -> ManifestError:
    """``error`` with a word on each missing input the lock says a build used: it was there then, so it
    was likely never committed (a teammate's clone). The error as it is when the lock cannot be read."""
    if not any(d.message.startswith(_NOT_FOUND) for d in error.diagnostics):
        return error
    try:
        lock, _ = load_lock(project)
    except (PixmakeError, OSError):
        return error
    used = {i.path for e in lock.entries.values() for i in (*e.references, *((e.mask,) if e.mask else ()))}
    if not used:
        return error

    def hinted(diagnostic: Diagnostic) -> Diagnostic:
        rel = diagnostic.message.removeprefix(_NOT_FOUND)
        if not diagnostic.message.startswith(_NOT_FOUND) or rel not in used:
            return diagnostic
        hint = (
            f" ({project.lockfile.name} records a build from it, so it was there: never committed? "
            f"git add -- {shlex.quote(rel)} in the checkout that has it)"
        )
        return replace(diagnostic, message=diagnostic.message + hint)

    return ManifestError.of([hinted(d) for d in error.diagnostics])


def _not_found(path: Path, manifest: str | Path | None) -> str:
    """Why ``path`` is no manifest, and what to pass instead when a near name is beside it."""
    if path.is_dir():
        return f"{path}: is a directory, not a manifest (-f names the YAML file; to work in that folder, use -C {path})"
    if path.exists():
        return f"{path}: is not a file; the manifest is a YAML file"
    import difflib

    near = {path.stem.casefold() + suffix for suffix in (".yaml", ".yml")}
    try:
        yaml_files = sorted(
            e.name for e in os.scandir(path.parent) if e.name.casefold().endswith((".yaml", ".yml")) and e.is_file()
        )
    except OSError:
        yaml_files = []
    found = [name for name in yaml_files if name.casefold() in near]  # another spelling: pixmake.yml
    found = found or difflib.get_close_matches(path.name, yaml_files, n=1, cutoff=0.8)  # a typo: pixmak.yaml
    found = found or [name for name in yaml_files if _looks_like_a_manifest(path.parent / name)][:2]
    if len(found) == 1:
        given = Path(manifest).with_name(found[0]) if manifest is not None else found[0]
        return f"{path}: manifest not found; found {found[0]}: pass -f {given} (or rename it to {path.name})"
    if manifest is not None:
        return f"{path}: manifest not found (-f names it relative to -C DIR, or to the current folder)"
    return (
        f"{path}: manifest not found: pixmake runs where its pixmake.yaml is (or use -C DIR or -f FILE); "
        f"to start one: {invocation.pixmake('init')}"
    )


def _looks_like_a_manifest(path: Path) -> bool:
    """Whether a YAML file beside the missing manifest starts as one does (a ``version:`` and ``targets:``)."""
    try:
        with path.open("rb") as file:
            head = file.read(4096)
    except OSError:
        return False
    return b"targets:" in head and b"version:" in head


def _display(project: Project) -> str:
    try:
        return str(project.manifest.relative_to(Path.cwd()))
    except ValueError:
        return str(project.manifest)


def _read_project_file(project: Project, rel: str) -> bytes:
    """Bytes of a project file the manifest names (a ``rows:`` catalog); symlinks must stay inside the root.

    Raises :class:`~pixmake.expand.NotAFileError` for anything but a regular file: reading a FIFO would
    wait for a writer forever, so it is opened without waiting and refused by what ``fstat`` says.
    """
    from stat import S_ISREG

    from pixmake.expand import NotAFileError
    from pixmake.manifest import MAX_MANIFEST_BYTES
    from pixmake.store import binary, safe_path

    path = safe_path(project.root, rel, field="rows")
    if not S_ISREG(path.stat().st_mode):
        raise NotAFileError(rel)
    with open(os.open(path, binary(os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))), "rb") as handle:
        status = os.fstat(handle.fileno())  # what was opened: the path may have changed since its stat
        if not S_ISREG(status.st_mode):
            raise NotAFileError(rel)
        if status.st_size > MAX_MANIFEST_BYTES:
            raise OSError(f"{rel} is larger than {MAX_MANIFEST_BYTES >> 20} MB")
        return handle.read()


# The manifest and plan allocate hundreds of thousands of objects that all stay alive: every full
# collection would scan them all and free nothing (about 0.6 s of each of validate and plan at 10,000
# targets), so both run with the cyclic collector paused.
@paused_gc()
def validate(project: Project, *, input_warnings: bool = True, select: Selection | None = None) -> Manifest:
    """Load and validate the manifest and its input files; raises ManifestError listing every problem.

    Everything a provider would refuse is caught here, before any request: the schema, the model
    table (pure checks in :mod:`pixmake.manifest`, header checks in :mod:`pixmake.inputs`) and paths
    that leave the project (:class:`~pixmake.errors.UnsafePathError`). ``input_warnings``: the input
    files' warnings (a mask with no transparency) join the manifest's; the manifest cache keeps none,
    since it is not keyed by those files (:func:`plan` finds them afresh). ``select``: only the selected
    targets' files are checked (``make hero`` needs no other target's prerequisites either).
    """
    from pixmake.inputs import check_inputs
    from pixmake.manifest import MAX_MANIFEST_BYTES, Manifest, ProviderConfig, parse_manifest

    file = _display(project)
    text = _manifest_text(project.manifest, file, MAX_MANIFEST_BYTES)

    warned: list[Diagnostic] = []

    def check_targets(targets: tuple[Target, ...]) -> tuple[Diagnostic, ...]:
        try:
            checked = _selected_names(targets, select)
            parsed = Manifest(file, ProviderConfig(), targets)
            warned.extend(check_inputs(project.root, parsed, only=checked))
        except ManifestError as error:
            return _with_locked_hint(project, error).diagnostics
        return ()

    manifest = parse_manifest(
        text.removeprefix("\ufeff"),
        file=file,
        read_file=lambda rel: _read_project_file(project, rel),
        check_targets=check_targets,
        manifest_name=project.manifest.name,
        lockfile_name=project.lockfile.name,
    )
    return replace(manifest, warnings=(*manifest.warnings, *warned)) if warned and input_warnings else manifest


def check(project: Project) -> Manifest:
    """What :func:`validate` returns and raises, through the manifest cache: an unchanged manifest is not
    parsed again (``pixmake validate`` in a pre-commit hook, 10,000 targets: about 1 s a run otherwise);
    its input files are checked each time, as they are not what the cache is keyed by."""
    from pixmake.inputs import check_inputs

    manifest = load_manifest(project)
    try:
        warned = check_inputs(project.root, manifest)
    except ManifestError as error:
        raise _with_locked_hint(project, error) from None
    return replace(manifest, warnings=(*manifest.warnings, *warned)) if warned else manifest


def _selected_names(targets: tuple[Target, ...], select: Selection | None) -> frozenset[str] | None:
    """The names of the targets ``select`` chooses; None for all (no selection, or one that matches none:
    the plan says so)."""
    if select is None or select.everything:
        return None
    from pixmake.select import select_targets

    try:
        return frozenset(t.name for t in select_targets(targets, select))
    except ConfigError:
        return None


def input_warnings(project: Project, manifest: Manifest, select: Selection | None = None) -> tuple[Diagnostic, ...]:
    """The input files' warnings (a mask with no transparency) of the targets ``select`` chooses (all by
    default), which the manifest cache does not keep; only the masks' headers are read (a 10,000-target
    build would check every input twice)."""
    from pixmake.inputs import input_warnings as masks_warnings

    chosen = _selected_names(manifest.targets, select)
    if chosen is not None:
        manifest = replace(manifest, targets=tuple(t for t in manifest.targets if t.name in chosen))
    return masks_warnings(project.root, manifest)


def _manifest_text(manifest: Path, file: str, max_bytes: int) -> str:
    """The manifest's text; raises ManifestError naming ``file``. Its bytes are not kept: while a large
    manifest is parsed, they would be a fifth of what the load holds at its peak."""
    try:
        size = manifest.stat().st_size
        if size > max_bytes:
            raise ManifestError.at(file, 1, 1, "", f"manifest is larger than {max_bytes >> 20} MB")
        data = manifest.read_bytes()
    except OSError as error:
        raise ManifestError.at(file, 1, 1, "", f"cannot read the manifest: {error.strerror or error}") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):  # what Windows PowerShell 5's > writes
            raise ManifestError.at(file, 1, 1, "", "manifest is UTF-16 text; save it as UTF-8") from None
        line = data[: error.start].count(b"\n") + 1
        raise ManifestError.at(file, line, 1, "", "manifest is not valid UTF-8 text") from None


def load_lock(project: Project, unwritten: list[str] | None = None) -> tuple[Lock, dict[str, PendingSubmit]]:
    """The lockfile with the journal folded in (in memory), and the submits still pending; the targets
    whose entries the journal holds and the lockfile lacks are appended to ``unwritten``."""
    from pixmake.history import remember
    from pixmake.journal import journal_bytes, read_journal
    from pixmake.lcache import load_lock_file
    from pixmake.lockfile import Lock

    # The journal first: a running build's fold writes the lock, then shrinks the journal. Read the other
    # way round, the old lock and the shrunk journal would lack the entries folded in between.
    journal = journal_bytes(project.journal)
    try:
        lock = load_lock_file(project.lockfile, project.state_dir / "lock.cache")
    except FileNotFoundError:
        lock = Lock()
    superseded: list[LockEntry] = []
    written = lock
    lock, pending = read_journal(project.journal, lock, journal, superseded)  # both read earlier versions' entries
    if unwritten is not None and journal:
        unwritten += [name for name, entry in lock.entries.items() if written.entries.get(name) != entry]
    if superseded:  # the lock moved on since they were journaled; the next compaction drops their records
        with contextlib.suppress(OSError):  # best effort: a read-only checkout plans all the same
            remember(project.history, superseded)  # going back to their inputs restores their images free
    return lock, pending


def _tasks_under_current_keys(
    pending: dict[str, PendingSubmit], targets: Iterable[Target], hashes: Mapping[str, str]
) -> dict[str, PendingSubmit]:
    """``pending`` with each task an earlier version journaled under its target's verbatim key (see
    :func:`~pixmake.fingerprint.current_key`) under today's key: it is collected, not dropped and paid again."""
    from pixmake.fingerprint import target_key, verbatim_key

    by_name = {t.name: t for t in targets if t.name in pending}
    moved = dict(pending)
    for name, target in by_name.items():
        task = pending[name]
        try:
            key = target_key(target, hashes)
            if task.key != key and task.key == verbatim_key(target, hashes):
                moved[name] = replace(task, key=key, over=key if task.over == task.key else task.over)
        except KeyError:  # an input the scan did not hash: the plan says what is missing
            continue
    return moved


def _tasks_of_resaved_inputs(
    pending: dict[str, PendingSubmit],
    targets: Iterable[Target],
    hashes: Mapping[str, str],
    lock: Lock,
    pixels: Callable[[str], str | None],
) -> dict[str, PendingSubmit]:
    """``pending`` with each task paid for its target's inputs as they were before a reference or mask was
    saved again with the same pixels (an optimiser run while the build was interrupted) under today's key:
    collected, not dropped and paid again. What they showed then is what the target's lock entry records."""
    from pixmake.fingerprint import target_key
    from pixmake.plan import resaved_inputs

    moved = dict(pending)
    for target in targets:
        task, entry = pending.get(target.name), lock.entries.get(target.name)
        if task is None or entry is None or task.emulator:
            continue
        try:
            key = target_key(target, hashes)
        except KeyError:  # an input the scan did not hash: the plan says what is missing
            continue
        found = resaved_inputs(target, entry, hashes) if task.key != key else None
        if found is None or not found.then or target_key(target, {**hashes, **found.then}) != task.key:
            continue
        if all(pixels(path) == shown for path, shown in found.pixels.items()):
            moved[target.name] = replace(task, key=key)
    return moved


def _tasks_of_lowered_n(
    pending: dict[str, PendingSubmit], targets: Iterable[Target], hashes: Mapping[str, str]
) -> dict[str, PendingSubmit]:
    """``pending`` with each task paid for its target's inputs but a higher ``n`` (lowered while the build was
    interrupted) marked with the images it makes: collected and its first ``n`` kept, not dropped and paid
    for again."""
    from pixmake.fingerprint import target_key
    from pixmake.models import MODELS

    marked = dict(pending)
    for target in targets:
        task = pending.get(target.name)
        spec = MODELS.get(target.model)
        if task is None or task.keep or task.emulator or spec is None:
            continue
        try:
            if task.key == target_key(target, hashes):
                continue
            for more in sorted(n for n in spec.n_allowed if n > target.n):
                if target_key(replace(target, n=more), hashes) == task.key:
                    marked[target.name] = replace(task, images=more)
                    break
        except KeyError:  # an input the scan did not hash: the plan says what is missing
            continue
    return marked


def _tasks_moved_to_their_inputs(
    pending: dict[str, PendingSubmit], targets: Iterable[Target], hashes: Mapping[str, str], lock: Lock
) -> tuple[dict[str, PendingSubmit], tuple[PendingSubmit, ...]]:
    """``pending`` with each non-emulator task its own target will not collect moved to the first target
    that has the task's inputs and would pay for them: collected for it, not dropped and paid for again;
    and the tasks that made room (below).

    A task its target will not collect is one of a target no longer in the manifest (renamed while a
    build was interrupted), or one paid for inputs its target no longer has (copied to a new target and
    then edited, two targets that swapped prompts). A target takes a task only when it has none of its
    own it collects; its own, paid for inputs no target has now, then makes room (the plan drops it, as
    it would anyway). A target locked for those inputs keeps its images (a twin of a target deleted
    mid-build). ``was`` keeps the name the task was journaled under; the build rewrites the journal before
    it sends a submit (see :meth:`pixmake.execute._Recorder.journal_moves`)."""
    targets = tuple(targets)
    names = {t.name for t in targets}
    from pixmake.fingerprint import target_key

    def key_of(target: Target) -> str | None:
        try:
            return target_key(target, hashes)
        except KeyError:  # an input the scan did not hash: the plan says what is missing
            return None

    keys = {t.name: key_of(t) for t in targets if t.name in pending} if pending else {}
    movable: dict[str, str] = {}  # key -> name of the first task of these inputs its own target does not collect
    for name, task in pending.items():
        if task.emulator:
            continue
        own = name not in names or (keys[name] not in (None, task.key) and not task.keep and task.images is None)
        if own:
            movable.setdefault(task.key, name)
    if not movable:
        return pending, ()
    takes: dict[str, str] = {}  # target -> name of the task it takes
    for target in targets:
        if target.name in pending and target.name not in movable.values():
            continue  # it collects a task of its own
        key = keys[target.name] if target.name in keys else key_of(target)
        source = movable.get(key) if key is not None else None
        entry = lock.entries.get(target.name)
        would_pay = entry is None or entry.key != key or entry.emulator  # placeholders: a real build pays
        if source is not None and source != target.name and would_pay and source not in takes.values():
            takes[target.name] = source
    displaced = tuple(pending[t] for t in takes if t in pending and t not in takes.values())
    moved = dict(pending)
    for source in set(takes.values()) - set(takes):
        del moved[source]
    for name, source in takes.items():
        entry = lock.entries.get(name)
        over = entry.key if entry is not None else None  # the lock entry its images would replace
        moved[name] = replace(pending[source], target=name, was=source, over=over)
    return moved, displaced


class PlanResult:
    """A plan with what it was made from.

    When the plan was answered by the no-op memo, ``manifest``, ``lock`` and ``disk`` are loaded on
    first use (they are then exactly what a full plan would have read).
    """

    __slots__ = ("_disk", "_lock", "_manifest", "_pending", "_project", "_warnings", "plan")

    def __init__(
        self,
        manifest: Manifest | None,
        lock: Lock | None,
        disk: DiskState | None,
        plan: Plan,
        *,
        project: Project | None = None,
        pending: dict[str, PendingSubmit] | None = None,
        warnings: tuple[Diagnostic, ...] | None = None,
    ) -> None:
        self._manifest, self._lock, self._disk, self.plan, self._project = manifest, lock, disk, plan, project
        self._pending, self._warnings = pending, warnings

    @property
    def warnings(self) -> tuple[Diagnostic, ...]:
        """The manifest's warnings (unknown parameters, outputs one file on macOS and Windows, ...), and its
        input files' (a mask with no transparency)."""
        if self._warnings is not None:
            return self._warnings
        if self._project is not None:  # from the memo: the manifest cache keeps no input file's warning
            self._warnings = (*self.manifest.warnings, *input_warnings(self._project, self.manifest))
            return self._warnings
        return self.manifest.warnings

    @property
    def manifest(self) -> Manifest:
        """The expanded manifest."""
        if self._manifest is None:
            assert self._project is not None
            self._manifest, _ = _load_manifest(self._project)
        return self._manifest

    @property
    def lock(self) -> Lock:
        """The lockfile with the journal folded in."""
        if self._lock is None:
            assert self._project is not None
            self._lock, self._pending = load_lock(self._project)
        return self._lock

    @property
    def pending(self) -> dict[str, PendingSubmit]:
        """The journal's submits still pending (tasks of interrupted builds), by target."""
        if self._pending is None:
            assert self._project is not None
            self._lock, self._pending = load_lock(self._project)
        return self._pending

    @property
    def disk(self) -> DiskState:
        """Hashes of the files the plan looked at."""
        if self._disk is None:
            assert self._project is not None
            self._disk = _scan(self._project, self.manifest, self.lock)
        return self._disk


def load_manifest(project: Project, select: Selection | None = None) -> Manifest:
    """The validated manifest, through the manifest cache (``.pixmake/manifest.cache``).

    Same result and errors as :func:`validate`, but an unchanged manifest is not parsed again; a
    manifest that fails validation is never cached. The input files' model rules are checked again
    by :func:`plan` (cheaply, from the stat cache); with ``select``, only the selected targets' files.
    """
    return _load_manifest(project, select)[0]


def _load_manifest(
    project: Project, select: Selection | None = None
) -> tuple[Manifest, list[tuple[str, tuple[int, int, int, int] | None]]]:
    """The manifest, through the manifest cache; and the files it came from, with their stats. ``select``:
    only the selected targets' input files are checked (the cache is not keyed by them: :func:`plan`
    checks them again)."""
    from pixmake.mcache import load_manifest
    from pixmake.store import make_state_dir

    make_state_dir(project.state_dir)  # the first of the local state any command writes
    manifest, (stat, catalogs) = load_manifest(
        project.manifest,
        project.state_dir / "manifest.cache",
        file=_display(project),
        parse=lambda: validate(project, input_warnings=False, select=select),
    )
    sources = [(str(project.manifest), stat)] + [(str(project.root / rel), st) for rel, st in catalogs]
    return manifest, sources


def _scan(project: Project, manifest: Manifest, lock: Lock, required: frozenset[str] | None = None) -> DiskState:
    from pixmake.scan import scan_project

    return scan_project(
        project.root,
        manifest.targets,
        _with_stale_as_outputs(lock),
        project.objects,
        file=manifest.file,
        stat_cache=project.stat_cache,
        required=required,
    )


def _with_stale_as_outputs(lock: Lock) -> Lock:
    """The lock as the scan should see it: stale outputs (see ``LockEntry.stale``) are looked at like outputs.

    The scan hashes every locked output path; so the plan learns which stale files are still there.
    """
    if not any(entry.stale for entry in lock.entries.values()):
        return lock
    from pixmake.lockfile import Lock

    return Lock({name: replace(e, outputs=(*e.outputs, *e.stale)) for name, e in lock.entries.items()})


def _emulator_config(manifest: Manifest) -> EmulatorConfig:
    """The bundled emulator as ``build --emulator`` runs it: a Token whose webhook is the manifest's first
    ``callback_url`` (one who sends one has webhooks set up; the real API refuses it otherwise, §2.1), and
    no rate limits: they are the provider's, for tests; here they made a 10,000-target trial build answer
    429s by the thousand and take an hour."""
    from pixmake.emulator.config import DEFAULT_CONFIG

    callbacks = (t.params.get("callback_url") for t in manifest.targets)
    webhook = next((url for url in callbacks if isinstance(url, str) and url.startswith(("http://", "https://"))), None)
    return replace(DEFAULT_CONFIG, webhook_url=webhook, submit_rps=None, query_rps=None)


def _opaque_masks_paid_for(project: Project, manifest: Manifest, plan: Plan) -> tuple[Diagnostic, ...]:
    """A warning for each mask with no transparent pixel among the edits ``plan`` pays for (their pixels
    are read: not on every plan, only before paying)."""
    edits = [a.target for a in plan.actions if a.kind.paid and a.target is not None and a.target.mask is not None]
    if not edits:
        return ()
    from pixmake.inputs import opaque_masks

    return opaque_masks(project.root, manifest, edits)


def _refuse_paying_for_lfs_pointers(plan: Plan) -> None:
    """A ConfigError when the plan would pay for outputs that are Git LFS pointers: the images exist, in LFS."""
    from pixmake.plan import LFS_POINTER

    pointers = [  # (path, deleted) of each output a paid action would generate over its LFS pointer
        (str(reason.details["path"]), bool(reason.details.get("missing")))
        for action in plan.actions
        if action.kind.paid
        for reason in action.reasons
        if reason.code == LFS_POINTER and reason.details is not None
    ]
    if pointers:
        paths = [path for path, _ in pointers]
        missing = [path for path, deleted in pointers if deleted]
        shown = ", ".join(paths[:3]) + (f" and {len(paths) - 3} more" if len(paths) > 3 else "")
        what = "Git LFS pointers, not images" if len(paths) > 1 else "a Git LFS pointer, not the image"
        if missing:  # deleted: git holds the pointer, the checkout brings it back (LFS fetching the image)
            what = "missing, and held in Git LFS" if len(missing) == len(paths) else f"{what} or missing"
            checkout = f"{invocation.git('checkout', '--', *missing[:3])}{' …' if len(missing) > 3 else ''} then "
        else:
            checkout = ""
        raise ConfigError(
            f"{shown}: {what}, and not in .pixmake/objects: run {checkout}{invocation.git('lfs', 'pull')} "
            f"(a build would pay to generate {'them' if len(paths) > 1 else 'it'} again)"
        )


def _refuse_paying_when_git_refused(plan: Plan, disk: DiskState) -> None:
    """A ConfigError when the plan would pay for outputs that are missing or edited while git refused to read
    the repository (a CI checkout another user owns): git may hold their images, committed."""
    if not disk.git_refused:
        return
    names = [a.name for a in plan.actions if a.kind.paid and any(r.code == "not-cached" for r in a.reasons)]
    if names:
        shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
        raise ConfigError(
            f"{shown}: outputs missing or edited, and git refused to read this repository, where they may be "
            f"committed: run {disk.git_refused} (a build would pay to generate {'them' if len(names) > 1 else 'it'} "
            f"again; {invocation.pixmake('build', '--replace', 'TARGET')} generates one anew on purpose)"
        )


def memo_plan(project: Project) -> PlanResult | None:
    """The plan from the no-op memo, when nothing it depends on changed since it was written."""
    from pixmake.memo import check_memo, memo_file

    remembered = check_memo(memo_file(project.root), root=project.root, manifest=project.manifest)
    if remembered is None:
        return None
    from pixmake.plan import Plan

    warnings = None if remembered.warned else ()  # None: from the manifest (its cache), on first use
    return PlanResult(None, None, None, Plan.all_unchanged(remembered.targets), project=project, warnings=warnings)


@paused_gc()
def plan(
    project: Project,
    *,
    replace: Iterable[str] = (),
    manifest: Manifest | None = None,
    select: Selection | None = None,
    restore: bool = False,
    builder: Builder | None = None,
) -> PlanResult:
    """What a build would do and why; needs no key and no network, and never writes the lockfile or outputs.

    It may update local state in ``.pixmake/`` (the stat cache, the manifest cache, the no-op memo).
    ``select`` limits the plan to some targets (orphans are then not reported); ``restore`` plans
    edited outputs as restored from the object cache (``build --restore``). ``builder`` is the server
    the plan is for (:class:`~pixmake.plan.Builder`; by default either: the placeholder images of
    ``build --emulator`` are kept, and noted). Raises ConfigError for a ``--replace`` or selection that names
    no target, and for a ``--replace`` outside the selection.
    """
    replace = tuple(replace)
    whole = manifest is None and not replace and not restore and (select is None or select.everything)
    if whole:
        remembered = memo_plan(project)
        if remembered is not None:
            return remembered
    from pixmake.gitblobs import in_git_work_tree
    from pixmake.inputs import check_inputs
    from pixmake.mcache import file_stat
    from pixmake.plan import ActionKind, Builder, make_plan
    from pixmake.select import select_targets

    sources: list[tuple[str, tuple[int, int, int, int] | None]] = []
    if manifest is None:
        manifest, sources = _load_manifest(project, select)
    unknown = set(replace) - {t.name for t in manifest.targets}
    if unknown:
        raise ConfigError(f"--replace: no target named {', '.join(sorted(unknown))}")
    targets = manifest.targets
    unselected: tuple[Target, ...] = ()
    chosen: frozenset[str] | None = None  # None: every target (a selection's are the only inputs needed)
    if select is not None and not select.everything:
        targets = select_targets(targets, select)
        chosen = frozenset(t.name for t in targets)
        unselected = tuple(t for t in manifest.targets if t.name not in chosen)
        outside = set(replace) - chosen
        if outside:
            raise ConfigError(
                f"--replace {', '.join(sorted(outside))}: not in the selection; "
                "select it too, or drop the selection (nothing outside it is built)"
            )
    try:  # model rules on the files themselves; cached, so cheap after validate
        warned_inputs = check_inputs(project.root, manifest, only=chosen)
    except ManifestError as error:
        raise _with_locked_hint(project, error) from None
    for path in (project.lockfile, project.journal):
        sources.append((str(path), file_stat(path)))  # before reading: a later change shows as a new stat
    unwritten: list[str] = []
    lock, pending = load_lock(project, unwritten)
    disk = _scan(project, manifest, lock, chosen)
    hashed = disk.file_hashes
    digests = project.pixel_digests

    def pixels(rel: str) -> str | None:
        """What the project file ``rel`` shows, while it holds the bytes the scan hashed (asked only of an
        input whose bytes differ from those a lock entry records with their pixels)."""
        sha256 = hashed.get(rel)
        return None if sha256 is None else digests.of(project.root / rel, sha256)

    pending = _tasks_under_current_keys(pending, manifest.targets, disk.file_hashes)
    pending = _tasks_of_resaved_inputs(pending, manifest.targets, disk.file_hashes, lock, pixels)
    pending = _tasks_of_lowered_n(pending, manifest.targets, disk.file_hashes)
    pending, displaced = _tasks_moved_to_their_inputs(pending, manifest.targets, disk.file_hashes, lock)
    orphans = select is None or select.everything
    from pixmake.fingerprint import keyed_prompt
    from pixmake.history import recall

    history = cache(partial(recall, project.history))  # read only when a target's inputs are not locked for it
    objects = project.objects

    def earlier(key: str) -> LockEntry | None:
        """A replaced entry of these inputs whose images are all cached, or still in place (a fresh clone)."""
        entry = history().get(key)
        if entry is None:
            return None
        if all(objects.has(o.sha256) or disk.file_hashes.get(o.path) == o.sha256 for o in entry.outputs):
            return entry
        return None

    @cache
    def remembered_counts() -> dict[tuple[str, str, str], frozenset[int]]:
        counts: dict[tuple[str, str, str], set[int]] = {}
        for entry in history().values():
            counts.setdefault((entry.model, entry.size, keyed_prompt(entry.prompt)), set()).add(entry.n)
        return {inputs: frozenset(ns) for inputs, ns in counts.items()}

    def earlier_counts(target: Target) -> frozenset[int]:
        """The values of n remembered for the target's model, size and prompt (as the key sees it)."""
        counts = remembered_counts()
        if not counts:  # no history: no prompt to normalise
            return frozenset()
        return counts.get((target.model, target.size, keyed_prompt(target.prompt)), frozenset())

    now = time.time()

    def planned(disk: DiskState, earlier: Callable[[str], LockEntry | None]) -> Plan:
        return make_plan(
            targets,
            lock,
            disk,
            replace=replace,
            restore=restore,
            orphans=orphans,
            pending=pending,
            displaced=displaced,
            builder=builder or Builder.EITHER,
            earlier=earlier,
            earlier_counts=earlier_counts,
            unselected=unselected,
            now=now,
            unwritten=unwritten,
            pixels=pixels,
        )

    result = planned(disk, earlier)
    digests.save()
    paying = [a for a in result.actions if a.kind.paid and a.key is not None and a.name not in replace]
    if paying and in_git_work_tree(project.root):  # a fresh clone going back to earlier inputs: a tag may have them
        from pixmake.fingerprint import verbatim_key
        from pixmake.gitlocks import committed_entries

        keys = {a.key for a in paying if a.key is not None}
        written = {verbatim_key(a.target, disk.file_hashes) for a in paying if a.target is not None}
        committed = committed_entries(project.root, keys, written)
        if committed.entries:
            disk = dataclass_replace(disk, in_git={**disk.in_git, **committed.blobs})
            result = planned(disk, lambda key: earlier(key) or committed.entries.get(key))
    _refuse_paying_for_lfs_pointers(result)
    _refuse_paying_when_git_refused(result, disk)
    warned_inputs = (*warned_inputs, *_opaque_masks_paid_for(project, manifest, result))
    if (
        whole
        and sources
        and result.up_to_date
        and all(a.kind is ActionKind.UNCHANGED and not a.reasons for a in result.actions)
    ):  # not with placeholders kept: the memo answers a build without --emulator too, which regenerates them
        from pixmake.memo import memo_file, write_memo

        # A stale output the lock still records, gone now, would be planned again if it came back (git
        # checkout, stash pop): its absence is part of what the memo proves.
        gone = {o.path for e in lock.entries.values() for o in e.stale} - disk.stats.keys()
        write_memo(
            memo_file(project.root),
            root=project.root,
            manifest=project.manifest,
            sources=[*sources, *((str(project.root / rel), None) for rel in sorted(gone))],
            files=sorted(disk.stats.items()),
            targets=[(a.name, a.key or "") for a in result.actions],
            warned=bool(manifest.warnings or warned_inputs),
        )
    warnings = (*manifest.warnings, *warned_inputs) if warned_inputs else None
    return PlanResult(manifest, lock, disk, result, pending=pending, warnings=warnings)


@dataclass(frozen=True, slots=True)
class Explanation:
    """Everything a target's key is made of (``document``), the key, its lock entry and its planned action."""

    name: str
    key: str
    document: dict[str, Any]
    entry: LockEntry | None
    action: Action
    file: str = ""  # the manifest, as messages name it


@dataclass(frozen=True, slots=True)
class Accepted:
    """A target whose files ``accept`` recorded; ``inputs_changed``: its lock entry had another key (the
    prompt, a reference or a parameter changed), so the files now stand for the current inputs;
    ``task_journaled``: a paid task for these inputs is journaled, and the next build collects it over them;
    ``placeholders``: those of its files that are still ``build --emulator``'s placeholders, now locked as real."""

    name: str
    entry: LockEntry
    inputs_changed: bool
    task_journaled: bool = False
    placeholders: tuple[str, ...] = ()  # its files that are build --emulator's placeholders, untouched


def _target_named(manifest: Manifest, name: str, command: str) -> None:
    if name not in {t.name for t in manifest.targets}:
        raise ConfigError(f"{command}: no target named {name!r} (see {invocation.pixmake('plan', '-v')})")


def explain(project: Project, name: str) -> Explanation:
    """Why ``name`` is planned as it is: its key document and what differs from the lock (ninja ``-d explain``)."""
    from pixmake.fingerprint import key_document

    manifest, _ = _load_manifest(project)
    if name not in {t.name for t in manifest.targets} and name in load_lock(project)[0].entries:
        raise ConfigError(
            f"explain: {name!r} is in pixmake.lock but no longer in the manifest (an orphan): "
            f"{invocation.pixmake('build', '--prune')} deletes its outputs and drops it from the lock"
        )
    _target_named(manifest, name, "explain")
    try:
        result = plan(project, manifest=manifest)  # the whole plan: a twin's action depends on the others
    except ManifestError:  # another target's reference missing, say: the target's own plan, as `plan NAME` makes
        from pixmake.select import Selection

        result = plan(project, manifest=manifest, select=Selection((name,)))
    (action,) = (a for a in result.plan.actions if a.name == name and a.target is not None)
    assert action.target is not None and action.key is not None
    document = key_document(action.target, result.disk.file_hashes)
    return Explanation(name, action.key, document, result.lock.entries.get(name), action, manifest.file)


def accept(
    project: Project,
    names: Iterable[str] = (),
    *,
    select: Selection | None = None,
    skipped: list[str] | None = None,
) -> tuple[Accepted, ...]:
    """Record the files now at each target's output paths as its outputs (a retouched image is kept):
    the targets ``names`` names, and those ``select`` chooses (names, globs, tags: as a build's).

    The bytes are stored in the object cache; the lockfile is rewritten. Raises ConfigError for an
    unknown target or a selector that matches none, a missing output file, or a target named (in
    ``names``, or by name in ``select``) whose files are all untouched placeholders; such a target that
    a glob or tag chose is left out, its name appended to ``skipped`` (a glob over placeholders and retouches).
    """
    from pixmake.history import placeholder_images, remember
    from pixmake.manifest import output_paths
    from pixmake.reconcile import accept_outputs, write_lock_and_compact
    from pixmake.select import select_targets

    names = tuple(dict.fromkeys(names))
    with _holding(project, "accept"):
        manifest, _ = _load_manifest(project, select)
        for name in names:
            _target_named(manifest, name, "accept")
        chosen = tuple(t for t in manifest.targets if t.name in names)
        if select is not None and not select.everything:
            selected = {t.name for t in select_targets(manifest.targets, select)}
            chosen = tuple(t for t in manifest.targets if t.name in selected or t.name in names)
        lock, pending = load_lock(project)
        lock_before = lock
        from pixmake.scan import scan_project

        disk = scan_project(
            project.root, chosen, lock, project.objects, file=manifest.file, stat_cache=project.stat_cache
        )
        pending = _tasks_under_current_keys(pending, chosen, disk.file_hashes)
        # The placeholders of this lock, and of entries it no longer holds (a merge conflict kept the other side).
        made_by_emulator = {o.sha256 for e in lock.entries.values() if e.emulator for o in e.outputs}
        made_by_emulator |= placeholder_images(project.history)
        accepted = []
        digests = project.pixel_digests  # each reference decoded once, not per target
        for target in chosen:
            if all(disk.file_hashes.get(path) in made_by_emulator for path in output_paths(target)):
                if (
                    target.name not in names
                    and target.name not in (select.names if select else ())
                    and skipped is not None
                ):
                    skipped.append(target.name)
                    continue
                raise ConfigError(
                    f"accept: {target.name}'s files are build --emulator's placeholders, untouched: nothing to "
                    "keep (accept would lock them as real; a build without --emulator generates the images)"
                )
            entry = accept_outputs(project.root, target, disk.file_hashes, lock, project.objects, digests)
            before = lock.entries.get(target.name)
            lock = lock.with_entry(target.name, entry)
            task = pending.get(target.name)
            journaled = task is not None and task.key == entry.key and not task.emulator  # the emulator's: dropped
            placeholders = tuple(o.path for o in entry.outputs if o.sha256 in made_by_emulator)
            changed = before is not None and before.key != entry.key
            accepted.append(Accepted(target.name, entry, changed, journaled, placeholders))
        replaced = [lock_before.entries[a.name] for a in accepted if a.inputs_changed]
        remember(project.history, replaced)  # going back to those inputs restores their images
        write_lock_and_compact(project.lockfile, project.journal, lock, pending)
        digests.save()
    return tuple(accepted)


def forget(project: Project, names: Iterable[str]) -> tuple[PendingSubmit, ...]:
    """Drop the named targets' journaled tasks of interrupted builds, and return them; raises ConfigError
    (nothing dropped) when one has none.

    The way out when a journaled task can never be collected (its lookup or its result refused for good)
    yet stays journaled, since it may have been paid for: the next build submits the target again, and
    pays again if the provider had made it. A name is the plan's: a task it moves to another target (a
    renamed one, say) is that target's, though the journal names it otherwise until a build rewrites it.
    Holds the project lock: no build runs meanwhile.
    """
    from pixmake.journal import Journal

    names = tuple(dict.fromkeys(names))
    with _holding(project, "forget"):
        _, pending = load_lock(project)
        try:  # the plan's name of each journaled task: a task it moves is not its journaled target's
            moved = plan(project).pending
        except PixmakeError:  # a manifest that does not load moves nothing
            moved = pending
        journaled = {name: task.was or name for name, task in moved.items() if (task.was or name) in pending}
        went = {task.was for task in moved.values() if task.was is not None}  # own tasks moved to another target
        both = [n for n in names if n in pending and n not in went and n in moved and moved[n].was is not None]
        if both:  # its own task, paid for earlier inputs, and the one the plan moves to it: which is meant?
            listed = ", ".join(repr(name) for name in both)
            raise ConfigError(
                f"forget: {listed} has two journaled tasks until a build drops the one paid for its earlier inputs "
                f"and takes the other ({invocation.pixmake('plan')} shows both); build first, then forget if need be"
            )
        missing = [name for name in names if name not in journaled]
        if missing:
            listed = ", ".join(repr(name) for name in missing)
            raise ConfigError(
                f"forget: no task of an interrupted build is journaled for {listed} "
                f"({invocation.pixmake('plan')} lists the ones there are as 'resume')"
            )
        journal = Journal(project.journal)
        journal.open()
        try:
            for name in names:
                journal.dropped(journaled[name], pending[journaled[name]].key)
        finally:
            journal.close()
    return tuple(pending[journaled[name]] for name in names)


def sweep(project: Project, *, keep_days: float = 14.0, dry_run: bool = False) -> SweepResult:
    """Delete cached images no lock (this one with its journal, and git's at every ref) has referred to for
    ``keep_days``; see :mod:`pixmake.sweep`. Holds the project lock: no build runs meanwhile."""
    from pixmake.history import compact
    from pixmake.sweep import sweep as sweep_objects

    with _holding(project, "gc"):
        lock, _ = load_lock(project)
        swept = sweep_objects(
            project.state_dir / "objects",
            lock,
            root=project.root,
            keep_days=keep_days,
            dry_run=dry_run,
            state=project.state_dir,
        )
        if not dry_run:  # the way back to earlier inputs stays open only as long as their images do
            compact(project.history, partial(_images_cached, project.objects))
        return swept


def prune(project: Project) -> PruneResult:
    """Delete orphans' and stale outputs (safely; see :mod:`pixmake.reconcile`) and drop them from the lock."""

    with _holding(project, "prune"):
        return _prune(project)


def _prune(project: Project) -> PruneResult:
    """:func:`prune`, for a caller that holds the project lock."""
    from pixmake.history import remember
    from pixmake.manifest import claimed_paths
    from pixmake.plan import ActionKind
    from pixmake.reconcile import PruneResult, prune_orphans, prune_stale, write_lock_and_compact

    result = plan(project)
    orphans = {a.name: a.source for a in result.plan.actions if a.kind is ActionKind.ORPHAN and a.source}
    stale = {a.name: a.stale for a in result.plan.actions if a.stale}
    recorded = {name for name, entry in result.lock.entries.items() if entry.stale and name not in orphans}
    if not orphans and not stale and not recorded:
        return PruneResult()
    claimed = claimed_paths(result.manifest.targets)  # what a current target writes or reads is never deleted
    remember(project.history, orphans.values())  # a target deleted and then restored gets its images back
    gone = prune_orphans(project.root, orphans, claimed, project.objects)
    cleaned = prune_stale(project.root, stale, claimed, project.objects)
    lock, pending = load_lock(project)
    lock = lock.without(set(orphans))
    for name in sorted(recorded | set(stale)):
        entry = lock.entries.get(name)
        if entry is not None and entry.stale:
            lock = lock.with_entry(name, replace(entry, stale=()))
    write_lock_and_compact(project.lockfile, project.journal, lock, pending)
    return PruneResult(gone.pruned, gone.deleted + cleaned.deleted, gone.kept + cleaned.kept)


def _cache_restore_sources(
    project: Project, actions: Iterable[Action], twins: Mapping[tuple[str, str], str], in_git: Mapping[str, str]
) -> None:
    """Put into the object cache each image a restore copies (or a target whose ``n`` was raised keeps)
    that is only in place on disk (a renamed target's twin, in a clone whose cache lacks it; or under its
    path in another letter case, ``twins``) or in git (``in_git``: a committed output deleted): the
    executor copies from the cache alone, and another restore may overwrite that file first. A file that
    no longer holds the image is left out (that restore then fails, naming it)."""
    from pixmake.gitblobs import read_blobs
    from pixmake.plan import ActionKind
    from pixmake.store import safe_path, sha256_bytes

    objects = project.objects
    from_git: set[str] = set()
    for action in actions:
        for restore in (action, action.fallback):
            if (
                restore is None
                or restore.source is None
                or not (restore.kind is ActionKind.RESTORE or restore.kind.paid)
            ):
                continue  # a paid action's source: the locked images it keeps (n raised)
            for output in restore.source.outputs:
                if not objects.has(output.sha256):
                    with contextlib.suppress(OSError, UnsafePathError):
                        where = twins.get((output.path, output.sha256), output.path)
                        data = safe_path(project.root, where, field=f"targets.{action.name}").read_bytes()
                        if sha256_bytes(data) == output.sha256:
                            objects.put(data)
                    if output.sha256 in in_git and not objects.has(output.sha256):
                        from_git.add(in_git[output.sha256])
    for _, data in read_blobs(project.root, sorted(from_git)):
        if sha256_bytes(data) in in_git:  # the plan read these bytes a moment ago: a check, not a trust
            objects.put(data)


def _images_cached(objects: ObjectCache, entry: LockEntry) -> bool:
    """Whether every image of ``entry`` is in the object cache."""
    return all(objects.has(o.sha256) for o in entry.outputs)


def _keep_replaced_files(project: Project, actions: Iterable[Action]) -> None:
    """Put into the object cache the bytes of every file a build will overwrite that are not its locked bytes.

    A file already at a new target's ``out`` (or an edited output of a target being regenerated) would
    otherwise be lost; the plan names each one (reason ``replaces-file``), and this keeps exactly those.
    So is another target's locked image that a restore overwrites (``output-replaced``: outs swapped),
    which in a fresh clone may be its only copy, and an output edited by hand that ``build --restore``
    puts the locked bytes over (``output-edited``, not left as it is): a restore changes one's mind too.
    """
    from pixmake.plan import ActionKind
    from pixmake.store import safe_path, sha256_bytes

    objects = project.objects
    for action in actions:
        for reason in action.reasons:
            if reason.details is None:
                continue
            if reason.code == "replaces-file":
                rel, sha, users = reason.details["path"], reason.details["sha256"], True
            elif reason.code == "output-replaced":
                rel, sha, users = reason.details["path"], reason.details["actual"], False  # a locked image
            elif (
                reason.code == "output-edited"
                and action.kind is ActionKind.RESTORE
                and reason.details["path"] not in action.kept
            ):
                rel, sha, users = reason.details["path"], reason.details["actual"], True
            else:
                continue
            if not objects.has(sha):
                kept = safe_path(project.root, rel, field=f"targets.{action.name}.out").read_bytes()
                objects.put(kept, users=users or sha256_bytes(kept) != sha)  # saved since the plan: someone's


def _record_stale(project: Project, actions: Iterable[Action]) -> None:
    """After a build, remember in the lock the stale outputs of each target the build relocked.

    The executor writes a fresh entry for each target it builds; without this, a file left behind by
    a renamed ``out`` or a lowered ``n`` would no longer be known to the plan or to ``--prune``.
    """
    stale = {a.name: a.stale for a in actions if a.stale}
    if not stale:
        return
    from pixmake.reconcile import with_stale, write_lock_and_compact

    lock, pending = load_lock(project)
    changed = False
    for name, outputs in stale.items():
        entry = lock.entries.get(name)
        if entry is None:
            continue
        merged = with_stale(entry, outputs)
        if merged is not entry:
            lock, changed = lock.with_entry(name, merged), True
    if changed:
        write_lock_and_compact(project.lockfile, project.journal, lock, pending)


def build(
    project: Project,
    settings: Settings,
    *,
    reporter: Reporter | None = None,
    emulator: bool = False,
    replace: Iterable[str] = (),
    manifest: Manifest | None = None,
    select: Selection | None = None,
    restore: bool = False,
    prune: bool = False,
    max_images: int | None = None,
    warn: Callable[[Sequence[Diagnostic]], None] | None = None,
) -> BuildResult:
    """Generate what the plan says, record it in the lockfile; ``emulator=True`` runs the bundled emulator.

    ``select`` builds only some targets; ``restore`` puts the locked bytes back over edited outputs;
    ``prune`` then deletes orphans' and stale outputs (:func:`prune`; the result's ``pruned``).
    ``manifest`` is the project's manifest when the caller already loaded it (:func:`load_manifest`).
    ``max_images`` refuses (ConfigError, before any request) a plan that would pay for more images.
    ``warn`` is given what the plan finds only once it knows what it pays for (a mask with no transparent
    pixel), before any request.
    Raises :class:`~pixmake.errors.ProjectBusyError` when another build holds the project, and
    ConfigError for ``prune`` with a selection.
    """
    if prune and select is not None and not select.everything:
        raise ConfigError("--prune works on the whole manifest; drop the target selection")
    replace = tuple(replace)  # read more than once
    options: dict[str, Any] = {
        "replace": replace,
        "manifest": manifest,
        "select": select,
        "restore": restore,
        "max_images": max_images,
        "warn": warn,
    }

    with _holding(project):  # one hold for the build and its prune: no command comes between
        built_from = _manifest_files(project) if prune else {}
        whole = not replace and not restore and (select is None or select.everything)
        remembered = memo_plan(project) if whole else None  # a no-op, proved by stats alone: as plan --check
        if whole:  # planned as plan plans it (the manifest cache makes the load cheap): a no-op writes the memo
            options["manifest"] = None
        if remembered is not None:
            paced = replace_settings(settings, settings.base_url) if emulator else settings  # as the emulator's
            result = _nothing_to_build(remembered, paced, reporter, emulator=emulator)
        elif emulator:
            from pixmake.emulator.server import EmulatorServer

            with EmulatorServer(_emulator_config(manifest or load_manifest(project))) as server:
                result = _build(project, replace_settings(settings, server.url), reporter=reporter, **options)
        else:
            result = _build(project, settings, reporter=reporter, **options)
        if prune:
            from dataclasses import replace as replace_fields

            from pixmake.reconcile import PruneResult

            if _restat(built_from) != built_from:  # an editor saved it: prune what the build built, or nothing
                skipped = (
                    f"{_display(project)} changed during the build; {invocation.pixmake('build', '--prune')} prunes"
                )
                result = replace_fields(result, pruned=PruneResult(skipped=skipped))
            else:
                result = replace_fields(result, pruned=_prune(project))
    return result


def _nothing_to_build(
    remembered: PlanResult, settings: Settings, reporter: Reporter | None, *, emulator: bool
) -> BuildResult:
    """The outcome of a build the no-op memo proves has nothing to do, told as the executor tells one (a
    whole build of 10,000 unchanged targets took 0.9 s to say so; plan --check, 0.06)."""
    from pixmake.execute import BuildFinished, BuildResult, BuildStarted, idle_statistics

    started = time.monotonic()
    report = reporter.emit if reporter is not None else (lambda event: None)
    report(BuildStarted(0, 0, settings.concurrency, emulator))
    unchanged = tuple(action.name for action in remembered.plan.actions)
    statistics = idle_statistics(settings)  # as a no-op planned again tells them (build --json)
    result = BuildResult(
        unchanged=unchanged, emulator=emulator, statistics=statistics, seconds=time.monotonic() - started
    )
    report(BuildFinished(result, result.seconds))
    return result


def _manifest_files(project: Project) -> dict[str, object]:
    """The manifest's files (it and its catalogs) with their stats now."""
    return _restat({path: None for path, _ in _load_manifest(project)[1]})


def _restat(files: Mapping[str, object]) -> dict[str, object]:
    """These files with their stats now."""
    from pixmake.memo import file_stat

    return {path: file_stat(Path(path)) for path in files}


class _Stop:
    """How :func:`stop_build` stops one build: as asyncio's Ctrl-C handler does, by cancelling its main task.

    The build's task arms it when it starts and disarms it once the executor returned; a stop asked for
    outside that stretch is remembered, and :func:`_build` raises KeyboardInterrupt once the loop is gone.
    """

    __slots__ = ("_target", "requested")

    def __init__(self) -> None:
        self.requested = False
        self._target: tuple[asyncio.AbstractEventLoop, asyncio.Task[Any]] | None = None

    def arm(self) -> None:
        """Called by the build's main task, first thing: a stop from now on cancels it."""
        import asyncio

        task = asyncio.current_task()
        assert task is not None
        self._target = (asyncio.get_running_loop(), task)
        if self.requested:  # asked for while the loop was starting
            self._cancel()

    def disarm(self) -> None:
        """Called by the build's main task once the executor returned: nothing is left to cancel."""
        self._target = None

    def __call__(self) -> None:
        if not self.requested:  # a second signal while the first one's stop runs changes nothing
            self.requested = True
            self._cancel()

    def _cancel(self) -> None:
        target, self._target = self._target, None  # taken: the task is cancelled once at most
        if target is not None:
            loop, task = target
            loop.call_soon_threadsafe(task.cancel)  # from a signal handler, or another thread: wakes the loop too


_stops: list[Callable[[], None]] = []  # one per build running in this process


def stop_build() -> bool:
    """Stop the builds running in this process as Ctrl-C stops one; meant for a signal handler (SIGTERM).

    asyncio cancels a build on Ctrl-C only while SIGINT has Python's default handler (not when it is
    ignored, as in a background job of a non-interactive shell); this cancels it the same way whatever
    SIGINT's disposition: in-flight work stops, finished targets are locked, paid tasks in flight stay
    journaled for the next build, and its :func:`build` raises KeyboardInterrupt. Returns False when no
    build is running. Calling it again while a build stops changes nothing.
    """
    running = tuple(_stops)
    for stop in running:
        stop()
    return bool(running)


def replace_settings(settings: Settings, url: str) -> Settings:
    """Settings pointed at an emulator: its URL, a throwaway key, a short poll interval."""
    from pixmake.settings import Secret

    return replace(
        settings,
        base_url=url,
        api_key=Secret("sk-emulator-local"),
        poll_interval=settings.poll_interval if settings.poll_interval is not None else EMULATOR_POLL_INTERVAL,
        submit_rate=max(settings.submit_rate, 50.0),
        query_rate=max(settings.query_rate, 1000.0),
        emulator=True,
    )


def _build(
    project: Project,
    settings: Settings,
    *,
    reporter: Reporter | None,
    replace: Iterable[str],
    manifest: Manifest | None,
    select: Selection | None = None,
    restore: bool = False,
    max_images: int | None = None,
    warn: Callable[[Sequence[Diagnostic]], None] | None = None,
) -> BuildResult:
    """:func:`build` without the emulator and the prune, for a caller that holds the project lock."""
    from asyncio import CancelledError

    import anyio

    from pixmake.execute import Executor, limit_heap_arenas
    from pixmake.history import remember
    from pixmake.journal import Journal
    from pixmake.manifest import output_paths
    from pixmake.memo import file_stat
    from pixmake.plan import PLACEHOLDER, ActionKind, Builder, common_reasons
    from pixmake.report import NullReporter
    from pixmake.store import remove_leftover_temps
    from pixmake.uploads import UploadCache

    limit_heap_arenas()
    lock_stat = file_stat(project.lockfile)  # before the plan reads it: a pull from now on is merged, not lost
    result = plan(
        project,
        replace=replace,
        manifest=manifest,
        select=select,
        restore=restore,
        builder=Builder.EMULATOR if settings.emulator else Builder.PROVIDER,
    )
    if warn is not None and (found := _opaque_masks_paid_for(project, result.manifest, result.plan)):
        warn(found)
    pending = result.pending
    images = result.plan.images_to_generate
    if max_images is not None and images > max_images:
        paying = [f"{a.name} {a.images}" for a in result.plan.actions if a.images]
        shown = ", ".join(paying[:5]) + (f" and {len(paying) - 5} more targets" if len(paying) > 5 else "")
        common = common_reasons(a for a in result.plan.actions if a.images)[:1]
        shown += "".join(f"; why: {text} ({n} of {len(paying)} targets)" for text, n in common)
        raise ConfigError(
            f"this build would {'make' if settings.emulator else 'pay for'} {images} "
            f"{'placeholder ' * settings.emulator}image{'s' * (images != 1)} ({shown}), more than its cap of "
            f"{max_images} (--max-images or PIXMAKE_MAX_IMAGES); "
            f"'{invocation.pixmake('plan', *([] if settings.emulator else ['--provider']))}' says why (with this "
            "build's targets, --replace and --restore, if any)"
        )
    paid = [a for a in result.plan.actions if a.kind.generates]  # RESUME collects from the provider too
    if paid and settings.api_key is None:
        count = len(paid)
        placeholders = sum(any(r.code == PLACEHOLDER for r in a.reasons) for a in paid)
        which = f", {placeholders} of them over placeholders from build --emulator" if placeholders else ""
        typo = ""
        if settings.key_lookalikes:
            names = " and ".join(settings.key_lookalikes)
            typo = f"; {names} {'is' if len(settings.key_lookalikes) == 1 else 'are'} set: a misspelling?"

        def provider_only(action: Action) -> bool:  # build --emulator refuses it, or keeps its placeholders
            entry = result.lock.entries.get(action.name)
            made = entry is not None and not entry.emulator and entry.key == action.key
            return action.kind is ActionKind.RESUME or made or any(r.code == PLACEHOLDER for r in action.reasons)

        emulator = "" if all(map(provider_only, paid)) else ", or build with --emulator (placeholders, free)"
        missing = (
            f"{settings.api_key_env} is set but empty (a CI secret this job cannot read?)"
            if settings.key_empty
            else f"set the {settings.api_key_env} environment variable"
        )
        raise ConfigError(
            f"no API key: {missing} ({count} target{'s' * (count != 1)} to generate or collect{which}){emulator}{typo}"
        )
    if paid and not settings.emulator:
        _refuse_committed_state(project)
    _keep_replaced_files(project, result.plan.actions)  # a paid action's, or a restore of another entry's images
    _cache_restore_sources(project, result.plan.actions, result.disk.case_twins, result.disk.in_git)
    replaced = [  # entries this build replaces with other inputs' images: kept for a way back
        entry
        for a in result.plan.actions
        if (entry := result.lock.entries.get(a.name)) is not None and a.key is not None and entry.key != a.key
    ]
    remember(project.history, replaced)
    writes = (a for a in result.plan.actions if a.kind.generates or a.kind is ActionKind.RESTORE)
    writing = [a.target for a in writes if a.target is not None]  # a killed build's temporary files: gone
    remove_leftover_temps(project.root, (path for target in writing for path in output_paths(target)))
    journal = Journal(project.journal)
    journal.open()
    provider = None
    if paid:
        from pixmake.providers.toapis import ToapisProvider

        provider = ToapisProvider(settings)
    uploads = UploadCache.load(project.state_dir / "uploads.json", settings.base_url)
    digests = project.pixel_digests
    executor = Executor.create(
        root=project.root,
        lock_path=project.lockfile,
        lock=result.lock,
        pending=pending,
        settings=settings,
        provider=provider,
        reporter=reporter or NullReporter(),
        objects=project.objects,
        journal=journal,
        input_hashes=result.disk.file_hashes,
        upload_cache=uploads,
        max_images=max_images,
        planned_stats=result.disk.stats,
        history=project.history,
        lock_stat=lock_stat,
        pixel_digests=digests,
    )

    stop = _Stop()

    async def run() -> BuildResult:
        stop.arm()
        try:
            return await executor.run(result.plan)
        finally:
            stop.disarm()  # a stop from now on ends pixmake after the loop, not this provider's close
            digests.save()
            if provider is not None:
                with anyio.CancelScope(shield=True):
                    await provider.aclose()

    # uvloop where it exists (not on Windows): about 0.4 ms less CPU per target (bench/throughput.py).
    backend_options = {"use_uvloop": True} if importlib.util.find_spec("uvloop") is not None else {}
    # The manifest, plan and lock live as long as the build: keep the collector from rescanning them.
    # Each target allocates thousands of short-lived objects (requests, coroutines, JSON) and almost
    # no cycles: at CPython's default threshold (700) the collector ran 1,200 times in a 10,000-target
    # build, 0.17 ms of CPU per target; at 10,000, 0.04 ms. It still runs, so cycles are still freed.
    thresholds = gc.get_threshold()
    gc.set_threshold(max(thresholds[0], _BUILD_GC_THRESHOLD), *thresholds[1:])
    gc.freeze()
    _stops.append(stop)
    unrecorded: OSError | LockfileError | None = None  # the stale outputs could not be written into the lock
    try:
        built = anyio.run(run, backend_options=backend_options)
    except CancelledError:  # the main task cancelled: only a stop does that (asyncio's Ctrl-C raises KeyboardInterrupt)
        if not stop.requested:
            raise
        raise KeyboardInterrupt from None
    finally:
        try:  # a stop asked for meanwhile is kept for after this cleanup, not raised in the middle of it
            gc.unfreeze()
            gc.set_threshold(*thresholds)
            journal.close()
            with contextlib.suppress(OSError):  # a cache: without it, the next build uploads again (free)
                uploads.save()
            try:
                _record_stale(project, result.plan.actions)
            except (OSError, LockfileError) as error:  # the build's outcome is still to be told
                unrecorded = error
        finally:
            _stops.remove(stop)
    if stop.requested:  # it came as the build ended: pixmake still stops, as asked
        raise KeyboardInterrupt
    if unrecorded is not None and built.fatal is None:
        from pixmake.errors import StorageError
        from pixmake.store import describe_os_error

        stale = ", ".join(o.path for a in result.plan.actions for o in a.stale)
        why = describe_os_error(unrecorded, project.root) if isinstance(unrecorded, OSError) else str(unrecorded)
        failure = StorageError(
            f"cannot record the stale outputs {stale} in pixmake.lock ({why}); every target is locked, but "
            "build --prune will not know those files: delete them if unwanted",
            build_wide=True,
        )
        built = dataclass_replace(built, fatal=failure)
    return built
