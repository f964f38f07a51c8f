"""The entry point's fast lane answers a no-op plan exactly as the full CLI does, without loading click."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import PACKAGE_ROOT, run_cli
from pixmake.emulator import EmulatorServer
from pixmake.entry import answer_noop_plan
from pixmake.memo import check_memo, memo_file


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


def test_plan_and_build_show_the_warnings_validate_shows(examples_copy: Path, provider_env: EmulatorServer) -> None:
    manifest = examples_copy / "pixmake.yaml"
    manifest.write_text(
        manifest.read_text().replace("tags: [brand]", "tags: [brand]\n    params: {colour_mode: vivid}")
    )
    checked = run_cli("-C", str(examples_copy), "validate")
    warnings = [line for line in checked.stderr.splitlines() if line.startswith("pixmake: warning: ")]
    assert checked.exit_code == 0 and len(warnings) == 1 and "colour_mode" in warnings[0]
    built = run_cli("-C", str(examples_copy), "build")
    assert built.exit_code == 0 and built.stderr.splitlines()[0] == warnings[0]  # before the build's own lines
    for _ in range(2):  # the second plan is answered by the no-op memo: it still warns, and the fast lane stands aside
        planned = run_cli("-C", str(examples_copy), "plan", "--check")
        assert (planned.exit_code, planned.stderr.splitlines()) == (0, warnings)
    remembered = check_memo(memo_file(examples_copy), root=examples_copy, manifest=manifest)
    assert remembered is not None and remembered.warned
    assert answer_noop_plan(["-C", str(examples_copy), "plan", "--check"]) is None
    fast = _python(["-C", str(examples_copy), "plan", "--check"])
    assert (fast.returncode, fast.stderr.splitlines()) == (0, warnings)
    listed = json.loads(run_cli("-C", str(examples_copy), "validate", "--json").stdout)
    document = json.loads(run_cli("-C", str(examples_copy), "plan", "--json").stdout)
    assert document["warnings"] == listed and listed[0]["severity"] == "warning"


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_a_full_stdout_is_one_line_on_either_path(examples_copy: Path, provider_env: EmulatorServer) -> None:
    assert run_cli("-C", str(examples_copy), "build").exit_code == 0
    assert run_cli("-C", str(examples_copy), "plan", "--check").exit_code == 0  # the memo: the fast lane answers
    env = {**os.environ, "PYTHONPATH": str(PACKAGE_ROOT)}
    answers = []
    for fast in (True, False):
        args = ["-C", str(examples_copy), "plan"] + ([] if fast else ["-v"])  # -v takes the full path
        with open("/dev/full", "w") as full:
            done = subprocess.run(
                [sys.executable, "-m", "pixmake", *args], env=env, stdout=full, stderr=subprocess.PIPE, text=True
            )
        answers.append((done.returncode, done.stderr))
    assert answers[0] == answers[1] == (1, "pixmake: error: No space left on device\n")
