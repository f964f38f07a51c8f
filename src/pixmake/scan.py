"""Turn the project's files into a :class:`DiskState` value for the planner.

Shell. Hashes every reference, mask and output the plan needs (in threads: hashlib releases the
GIL), checks each path stays inside the project root, and notes which locked outputs the object
cache can restore.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from pixmake.errors import Diagnostic, ManifestError
from pixmake.lockfile import Lock
from pixmake.manifest import Target, is_url, output_paths
from pixmake.store import ObjectCache, safe_path

__all__ = ["DiskState", "hash_file", "scan_project"]


@dataclass(frozen=True, slots=True)
class DiskState:
    """What is on disk: sha256 of each present file the plan asks about, and the cached objects."""

    file_hashes: Mapping[str, str] = field(default_factory=dict)
    cached_objects: frozenset[str] = frozenset()


def hash_file(path: Path) -> str:
    """Hex sha256 of a file's bytes."""
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def _hash_present(paths: Mapping[str, Path]) -> dict[str, str]:
    def one(item: tuple[str, Path]) -> tuple[str, str | None]:
        try:
            return item[0], hash_file(item[1])
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            return item[0], None

    workers = min(8, (os.cpu_count() or 2) * 2)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return {rel: digest for rel, digest in pool.map(one, paths.items()) if digest is not None}


def _wanted(root: Path, targets: Iterable[Target], lock: Lock) -> tuple[dict[str, Path], dict[str, str]]:
    """Paths to hash (relative → absolute) and, for inputs, the field each came from."""
    inputs: dict[str, str] = {}
    paths: dict[str, Path] = {}
    for target in targets:
        fields = [(f"targets.{target.name}.references[{i}]", ref) for i, ref in enumerate(target.references)]
        if target.mask is not None:
            fields.append((f"targets.{target.name}.mask", target.mask))
        for name, rel in fields:
            if not is_url(rel) and rel not in paths:
                paths[rel] = safe_path(root, rel, field=name)
                inputs[rel] = name
        for rel in output_paths(target):
            if rel not in paths:
                paths[rel] = safe_path(root, rel, field=f"targets.{target.name}.out")
    for name, entry in lock.entries.items():
        for output in entry.outputs:
            if output.path not in paths:
                paths[output.path] = safe_path(root, output.path, field=f"pixmake.lock: {name}")
    return paths, inputs


def scan_project(root: Path, targets: tuple[Target, ...], lock: Lock, objects: ObjectCache, *, file: str) -> DiskState:
    """Hash what the plan needs; raises ManifestError naming each missing reference or mask."""
    paths, inputs = _wanted(root, targets, lock)
    hashes = _hash_present(paths)
    lines = {f"targets.{t.name}": t.line for t in targets}
    missing = [
        Diagnostic(file, lines.get(name.rsplit(".", 1)[0].split("[")[0], 1), 1, name, f"file not found: {rel}")
        for rel, name in inputs.items()
        if rel not in hashes
    ]
    if missing:
        raise ManifestError(missing)
    # Only outputs that are not in place need the object cache; a no-op plan asks it nothing.
    unplaced = {o.sha256 for entry in lock.entries.values() for o in entry.outputs if hashes.get(o.path) != o.sha256}
    for target in targets:
        entry = lock.entries.get(target.name)
        if entry is not None:
            unplaced.update(
                o.sha256
                for path, o in zip(output_paths(target), entry.outputs, strict=False)
                if hashes.get(path) != o.sha256
            )
    cached = frozenset(sha for sha in unplaced if objects.has(sha))
    return DiskState(file_hashes=hashes, cached_objects=cached)
