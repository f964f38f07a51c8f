"""``pixmake init``: start a project, and set up git's merge driver for its lock in this clone.

Shell. Writes a starter manifest (never over an existing file), adds ``pixmake.lock merge=pixmake`` to
``.gitattributes`` and, in a git work tree, sets ``merge.pixmake.driver`` in the clone's own config (git
does not carry it across clones: each teammate runs ``pixmake init`` once). Running it again changes
nothing that is already set.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Final

from pixmake.errors import ConfigError
from pixmake.gitblobs import in_git_work_tree
from pixmake.store import atomic_write

__all__ = ["STARTER", "init_project"]

STARTER: Final = """\
# A pixmake manifest: each target is an image (or n of them) generated from its inputs.
# `pixmake plan` says what a build would do and pay; `pixmake build --emulator` makes free placeholders.
# Every field: `pixmake schema` (a JSON Schema an editor can use), or "The manifest" in pixmake's README.
version: 1
defaults:
  model: gpt-4o-image   # its rules: size 1:1, 2:3 or 3:2; n 1, 2 or 4; at most 5 references
  size: "1:1"           # quote ratios: YAML reads 3:2 unquoted as the number 182
targets:
  hero:
    prompt: A blue ceramic mug on a wooden table, soft morning light, product photography
    size: "3:2"
    out: assets/hero.png
  # From a photo in the project, repainting where the mask is transparent (same pixel size as the photo):
  # mug-on-marble:
  #   prompt: Replace the background with white marble; keep the mug unchanged
  #   references: [photos/mug.png]
  #   mask: masks/mug-background.png
  #   out: assets/mug-on-marble.png
  # One target per combination of a matrix (or per row of a CSV catalog: rows: catalog.csv):
  # "banner-${format.label}":
  #   matrix:
  #     format: [{label: square, size: "1:1"}, {label: portrait, size: "2:3"}]
  #   size: ${format.size}
  #   prompt: Our blue mug, ${format.label} crop
  #   out: assets/banner-${format.label}.png
"""

_ATTRIBUTE: Final = "pixmake.lock merge=pixmake"


def init_project(root: Path, manifest: str = "pixmake.yaml") -> list[str]:
    """Set up the project at ``root``; returns one line per thing done or found done.

    Raises ConfigError when ``root`` is not a folder. A ``.gitattributes`` that is a symbolic link is left
    as it is (git reads none; copying what it points at into the project could commit a secret).
    """
    if not root.is_dir():
        raise ConfigError(f"{root}: not a directory")
    done: list[str] = []
    path = root / manifest
    if path.exists():
        done.append(f"kept {manifest}, which is there already")
    else:
        atomic_write(path, STARTER.encode())
        done.append(f"wrote {manifest}: one target to start from, more in its comments")
    attributes = root / ".gitattributes"
    if attributes.is_symlink():  # git reads no such link; its target (a secret, say) must not be copied in
        done.append(
            f"left .gitattributes as it is: a symbolic link, which git does not read; replace it with a file "
            f"holding '{_ATTRIBUTE}' for git to merge pixmake.lock by target"
        )
        done.append(_merge_driver(root))
        return done
    try:
        data = attributes.read_bytes()  # as bytes: git reads any encoding, and so must this
    except FileNotFoundError:
        data = b""
    except OSError as error:
        raise ConfigError(f"cannot read {attributes}: {error.strerror or error}") from error
    if _ATTRIBUTE.encode() not in (line.strip() for line in data.splitlines()):
        end = b"\r\n" if b"\r\n" in data else b"\n"  # the file's own line ends
        ended = data + (end if data and not data.endswith(b"\n") else b"")
        atomic_write(attributes, ended + _ATTRIBUTE.encode() + end)
        done.append(f"added '{_ATTRIBUTE}' to .gitattributes: git merges pixmake.lock by target")
    done.append(_merge_driver(root))
    return done


def _merge_driver(root: Path) -> str:
    """Set git's merge driver for the lock in this clone's config; what was done, as a line."""
    git = shutil.which("git")
    if not in_git_work_tree(root):
        return "not in a git work tree: once it is (git init), run pixmake init again to set the lock's merge driver"
    if git is None:
        return "git is not on PATH: the lock's merge driver is not set"
    # The interpreter's full path: git runs the driver outside any virtual environment.
    driver = f"{shlex.quote(sys.executable)} -m pixmake merge-lock %O %A %B %P"
    found = subprocess.run([git, "config", "--local", "merge.pixmake.driver"], cwd=root, capture_output=True, text=True)
    if found.returncode == 0 and found.stdout.strip() == driver:
        return "git's merge driver for pixmake.lock is set in this clone"
    for name, value in (("merge.pixmake.name", "pixmake lock merge"), ("merge.pixmake.driver", driver)):
        setting = subprocess.run([git, "config", "--local", name, value], cwd=root, capture_output=True, text=True)
        if setting.returncode != 0:  # git's words on why (a repository another user owns, say)
            said = [line for line in setting.stderr.splitlines() if line.strip()]
            why = next(
                (line for line in said if "dubious" in line or "safe.directory" in line), said[0] if said else ""
            )
            return f"could not set git's merge driver: {why or f'git config exited {setting.returncode}'}"
    return "set git's merge driver for pixmake.lock in this clone (each clone runs pixmake init once)"
