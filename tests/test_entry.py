"""The entry point's fast lane answers a no-op plan exactly as the full CLI does, without loading click."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import PACKAGE_ROOT, run_cli
from pixmake.emulator import EmulatorServer
from pixmake.entry import answer_noop_plan


def _python(args: list[str], code: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(PACKAGE_ROOT)}
    command = [sys.executable, "-c", code] if code else [sys.executable, "-m", "pixmake", *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize(
    "argv",
    [["plan", "-v"], ["plan", "--json"], ["build"], ["-C"], ["plan", "hero"], ["-x", "d", "plan"], []],
)
def test_anything_but_a_plain_plan_takes_the_full_path(argv: list[str]) -> None:
    assert answer_noop_plan(argv) is None


def test_fast_lane_matches_the_full_cli_and_loads_no_click(examples_copy: Path, provider_env: EmulatorServer) -> None:
    assert run_cli("-C", str(examples_copy), "build").exit_code == 0
    full = run_cli("-C", str(examples_copy), "plan", "--check")
    assert full.exit_code == 0
    fast = _python(["-C", str(examples_copy), "plan", "--check"])
    assert (fast.returncode, fast.stdout, fast.stderr) == (0, full.stdout, "")
    probe = _python(
        [],
        code=(
            "import sys\nfrom pixmake.entry import answer_noop_plan\n"
            f"assert answer_noop_plan(['-C', {str(examples_copy)!r}, 'plan', '--check'])\n"
            "heavy = ('click', 'yaml', 'jsonschema', 'httpx', 'aiohttp', 'anyio', 'rich', 'PIL')\n"
            "loaded = [m for m in heavy if m in sys.modules]\n"
            "assert not loaded, loaded\n"
        ),
    )
    assert probe.returncode == 0, probe.stderr


def test_a_change_falls_through_to_the_full_cli(examples_copy: Path, provider_env: EmulatorServer) -> None:
    assert run_cli("-C", str(examples_copy), "build").exit_code == 0
    assert run_cli("-C", str(examples_copy), "plan", "--check").exit_code == 0
    manifest = examples_copy / "pixmake.yaml"
    manifest.write_text(manifest.read_text().replace("two colours", "three colours"))
    assert answer_noop_plan(["-C", str(examples_copy), "plan", "--check"]) is None
    done = _python(["-C", str(examples_copy), "plan", "--check"])
    assert done.returncode == 2 and "~ regenerate logo-tile" in done.stdout


def test_errors_are_reported_by_the_full_cli(tmp_path: Path) -> None:
    done = _python(["-C", str(tmp_path / "missing"), "plan", "--check"])
    assert done.returncode == 3 and done.stderr.startswith("pixmake: error:")
