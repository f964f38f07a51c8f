"""The pure core stays pure, the plan stays light, and every module declares what it exports."""

from __future__ import annotations

import importlib
import os
import pkgutil
import subprocess
import sys

import pytest

import pixmake
from conftest import EXAMPLES, PACKAGE_ROOT

HEAVY = ("httpx", "aiohttp", "anyio", "rich", "PIL", "click", "uvicorn", "starlette")
PURE = (
    "manifest",
    "yamlmarks",
    "variables",
    "relpaths",
    "expand",
    "diagnostics",
    "modelcheck",
    "catalog",
    "schema",
    "models",
    "fingerprint",
    "lockfile",
    "plan",
    "select",
    "retry",
    "settings",
)
_ENV = {**os.environ, "PYTHONPATH": str(PACKAGE_ROOT)}
"""Subprocesses import the pixmake under test (installed or src), as in the other subprocess tests."""


@pytest.mark.parametrize("module", PURE)
def test_pure_core_imports_no_io_library(module: str) -> None:
    code = f"import sys, pixmake.{module}\nheavy = [m for m in {HEAVY!r} if m in sys.modules]\nassert not heavy, heavy"
    subprocess.run([sys.executable, "-c", code], check=True, env=_ENV)


@pytest.mark.parametrize(
    ("selected", "allowed"),
    [
        ((), ("PIL",)),  # mug-marble's edit would be paid for: its mask's pixels are read (Pillow, 20 ms)
        (("hero", "logo-tile", "mug-lifestyle"), ()),
    ],
)
def test_plan_command_imports_none_of_the_build_stack(selected: tuple[str, ...], allowed: tuple[str, ...]) -> None:
    """`pixmake plan` runs without httpx, anyio, rich or Pillow (start-up time of the no-op plan); Pillow
    only to read the pixels of a mask whose edit it would pay for."""
    heavy = [m for m in ("httpx", "aiohttp", "anyio", "rich", "PIL") if m not in allowed]
    code = (
        "import sys\n"
        "from pixmake import api\n"
        "from pixmake.select import Selection\n"
        f"api.plan(api.open_project({str(EXAMPLES)!r}), select=Selection({selected!r}, ()))\n"
        f"heavy = [m for m in {heavy!r} if m in sys.modules]\n"
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True, env=_ENV)


def _modules() -> list[str]:
    return [m.name for m in pkgutil.walk_packages(pixmake.__path__, "pixmake.") if not m.name.endswith("__main__")]


@pytest.mark.parametrize("name", _modules())
def test_every_module_declares_all_and_it_resolves(name: str) -> None:
    module = importlib.import_module(name)
    exported = getattr(module, "__all__", None)
    assert exported is not None, f"{name} has no __all__"
    for attr in exported:
        assert hasattr(module, attr), f"{name}.__all__ names missing {attr}"
