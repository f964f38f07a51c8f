"""The command-line contract: exit codes, one-line errors, and no tracebacks for user mistakes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from conftest import PACKAGE_ROOT, git, journal_submit, run_cli, write_png
from pixmake import __version__
from pixmake.cli import ExitCode


def test_exit_codes_are_the_documented_ones() -> None:
    """The README's exit-code table lists exactly the codes the CLI uses; the contract's five never move."""
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    table = readme.split("### Exit codes", 1)[1].split("\n\n", 2)[1]
    documented = [int(line.split("|")[1]) for line in table.splitlines() if line.split("|")[1].strip().isdigit()]
    assert documented == [int(c) for c in ExitCode]
    assert {0, 1, 2, 3, 130} <= set(documented)


def test_pixmake_alone_prints_the_help_not_an_error() -> None:
    outcome = run_cli()
    assert outcome.exit_code == ExitCode.OK and not outcome.stderr
    assert outcome.stdout.startswith("Usage: pixmake") and "Commands:" in outcome.stdout


def test_a_reader_that_stops_early_stops_the_plan_quietly(tmp_path: Path) -> None:
    """`pixmake plan -v | head -1` on a large project: no error line, no traceback, the shell's SIGPIPE code."""
    targets = "".join(f"  poster-{i:04}:\n    prompt: poster number {i}\n    out: out/{i}.png\n" for i in range(2000))
    (tmp_path / "pixmake.yaml").write_text(f"version: 1\ntargets:\n{targets}")
    command = [sys.executable, "-m", "pixmake", "-C", str(tmp_path), "plan", "-v"]
    env = {**os.environ, "PYTHONPATH": str(PACKAGE_ROOT)}
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env) as plan:
        assert plan.stdout is not None and plan.stderr is not None
        assert plan.stdout.readline().startswith(b"+ create")
        plan.stdout.close()  # as head does after its line
        stderr = plan.stderr.read().decode()
    assert plan.returncode == ExitCode.PIPE_CLOSED and stderr == ""


def test_a_bad_value_from_an_environment_variable_names_the_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PIXMAKE_MAX_IMAGES", "abc")
    outcome = run_cli("-C", str(tmp_path), "build")
    assert outcome.exit_code == ExitCode.USER_ERROR
    assert outcome.stderr.startswith(
        "pixmake: error: Invalid value for PIXMAKE_MAX_IMAGES (the default of '--max-images')"
    )
    flagged = run_cli("-C", str(tmp_path), "build", "--max-images", "abc")
    assert flagged.stderr.startswith("pixmake: error: Invalid value for '--max-images'")


def test_an_emulator_build_ignores_the_providers_url_and_key_in_the_environment(
    examples_copy: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PIXMAKE_BASE_URL", "not a url")
    monkeypatch.setenv("TOAPIS_API_KEY", "sk-pasted with a space")
    outcome = run_cli("-C", str(examples_copy), "build", "--emulator")
    assert outcome.exit_code == ExitCode.OK, outcome.stderr


def test_a_build_without_the_emulator_says_it_would_replace_its_placeholders(
    examples_copy: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TOAPIS_API_KEY", raising=False)
    assert run_cli("-C", str(examples_copy), "build", "--emulator").exit_code == ExitCode.OK
    outcome = run_cli("-C", str(examples_copy), "build")
    assert outcome.exit_code == ExitCode.USER_ERROR
    assert outcome.stderr.splitlines() == [
        "pixmake: error: no API key: set the TOAPIS_API_KEY environment variable (4 targets to generate or "
        "collect, 4 of them over placeholders from build --emulator)"  # not "or --emulator": it keeps them
    ]


def test_without_a_key_a_task_only_the_provider_can_collect_is_not_sent_to_the_emulator(
    make_project: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """build --emulator refuses to collect a provider's task: suggesting it would lead to another refusal."""
    monkeypatch.delenv("TOAPIS_API_KEY", raising=False)
    root = make_project({"version": 1, "targets": {"hero": {"prompt": "a red mug", "out": "hero.png"}}})
    journal_submit(root, "hero", "pixmake-interrupted-1")
    outcome = run_cli("-C", str(root), "build")
    assert outcome.exit_code == ExitCode.USER_ERROR
    assert outcome.stderr.splitlines() == [
        "pixmake: error: no API key: set the TOAPIS_API_KEY environment variable (1 target to generate or collect)"
    ]


@pytest.mark.parametrize(
    ("variable", "named"), [("TOAPIS_KEY", True), ("TOAPI_API_KEY", True), ("OPENAI_API_KEY", False)]
)
def test_no_key_names_a_lookalike_variable_that_is_set(
    examples_copy: Path, monkeypatch: pytest.MonkeyPatch, variable: str, named: bool
) -> None:
    monkeypatch.delenv("TOAPIS_API_KEY", raising=False)
    monkeypatch.setenv(variable, "sk-in-the-wrong-place")
    outcome = run_cli("-C", str(examples_copy), "build")
    assert outcome.exit_code == ExitCode.USER_ERROR and "sk-in-the-wrong-place" not in outcome.stderr
    [line] = outcome.stderr.splitlines()
    assert line.startswith("pixmake: error: no API key: set the TOAPIS_API_KEY environment variable")
    assert line.endswith(f"; {variable} is set: a misspelling?") == named


@pytest.mark.parametrize(("args", "said"), [(("plan", "-C", "x"), "-C"), (("build", "-f", "m.yaml"), "-f")])
def test_a_global_option_after_the_command_says_where_it_goes(args: tuple[str, ...], said: str) -> None:
    outcome = run_cli(*args)
    assert outcome.exit_code == ExitCode.USER_ERROR
    assert (
        outcome.stderr
        == f"pixmake: error: {said} is global: write it before the command (pixmake {said} … {args[0]} …)\n"
    )


@pytest.mark.parametrize("link", ["journal.jsonl", "history.jsonl", "objects", "objects/ab"])
def test_a_symlink_inside_the_state_folder_is_refused_before_anything_is_written_through_it(
    link: str, examples_copy: Path, tmp_path: Path
) -> None:
    """The review's repro: `.pixmake/journal.jsonl -> ~/.gitconfig` (committed with `git add -f`) had a
    build append journal lines to it; `.pixmake/objects -> elsewhere` filled that folder with images."""
    victim = tmp_path / "victim"
    if link.startswith("objects"):
        victim.mkdir()
        (victim / "notes.txt").write_text("mine")  # a folder of someone's: no object cache
    else:
        victim.write_text("mine\n")
    state = examples_copy / ".pixmake"
    (state / link).parent.mkdir(parents=True, exist_ok=True)
    (state / link).symlink_to(victim)
    for command in (("build", "--emulator"), ("plan",)):
        outcome = run_cli("-C", str(examples_copy), *command)
        assert outcome.exit_code == ExitCode.USER_ERROR
        assert outcome.stderr == (
            f"pixmake: error: {state / link} is a symlink (to {victim}); pixmake's state holds none but its "
            "objects folder linked to an object cache, and a build would write where it points: delete it\n"
        )
    assert ([p.name for p in victim.iterdir()] == ["notes.txt"]) if victim.is_dir() else victim.read_text() == "mine\n"
    (state / link).unlink()
    assert run_cli("-C", str(examples_copy), "build", "--emulator").exit_code == ExitCode.OK


def test_a_state_folder_linked_outside_the_project_must_be_pixmakes(examples_copy: Path, tmp_path: Path) -> None:
    """A `.pixmake` symlink committed to a repository must not have a build write where it points (a home
    folder, say); a link to an empty folder or to pixmake's own state (a CI cache) is fine."""
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "notes.txt").write_text("mine")
    (examples_copy / ".pixmake").symlink_to(victim)
    for command in (("build", "--emulator"), ("plan",)):
        outcome = run_cli("-C", str(examples_copy), *command)
        assert outcome.exit_code == ExitCode.USER_ERROR
        assert "is a symlink to " in outcome.stderr and "link an empty folder" in outcome.stderr
    assert [p.name for p in victim.iterdir()] == ["notes.txt"]
    cache = tmp_path / "ci-cache"
    cache.mkdir()
    (examples_copy / ".pixmake").unlink()
    (examples_copy / ".pixmake").symlink_to(cache)  # empty: a cache's first run
    assert run_cli("-C", str(examples_copy), "build", "--emulator").exit_code == ExitCode.OK
    assert run_cli("-C", str(examples_copy), "plan", "--check").exit_code == ExitCode.OK  # its state now


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not on PATH")
def test_two_projects_of_a_repository_cannot_share_one_state_folder(examples_copy: Path, tmp_path: Path) -> None:
    """A monorepo's CI linking every project's `.pixmake` to one cache folder: each project would drop the
    other's paid tasks from the journal and delete its cached images. The second is refused before anything;
    the first, checked out elsewhere (another runner), is still itself."""
    repository, cache = tmp_path / "repo", tmp_path / "ci-cache"
    cache.mkdir()
    brand, web = repository / "brand", repository / "web"
    for project in (brand, web):
        shutil.copytree(examples_copy, project)
        (project / ".pixmake").symlink_to(cache)
    subprocess.run(["git", "init", "-q", str(repository)], check=True)
    assert run_cli("-C", str(brand), "validate").exit_code == ExitCode.OK  # a CI's first step claims it
    assert run_cli("-C", str(brand), "build", "--emulator").exit_code == ExitCode.OK
    before = sorted(p.relative_to(cache) for p in cache.rglob("*"))
    refused = run_cli("-C", str(web), "plan")
    assert refused.exit_code == ExitCode.USER_ERROR
    assert "the local state of another project (folder 'brand' of the repository)" in refused.stderr
    assert sorted(p.relative_to(cache) for p in cache.rglob("*")) == before
    (cache / "project").write_bytes(b"\xef\xbb\xbfbrand\r\n")  # written by hand on Windows: a BOM, CRLF
    assert run_cli("-C", str(brand), "plan", "--check").exit_code == ExitCode.OK
    (cache / "project").write_bytes(b"\xff\xfeb\x00")  # UTF-16: not brand's, and no traceback
    assert run_cli("-C", str(brand), "plan").exit_code == ExitCode.USER_ERROR
    (cache / "project").write_text("brand\n")
    elsewhere = tmp_path / "runner-2" / "repo"
    shutil.copytree(repository, elsewhere, symlinks=True)
    assert run_cli("-C", str(elsewhere / "brand"), "plan", "--check").exit_code == ExitCode.OK  # still its own


def test_a_build_whose_json_reader_stops_early_goes_on_and_locks_everything(examples_copy: Path) -> None:
    """`pixmake build --json | head -1`: the build is paid for; it finishes quietly, reader or not."""
    command = [sys.executable, "-m", "pixmake", "-C", str(examples_copy), "build", "--emulator", "--json"]
    env = {**os.environ, "PYTHONPATH": str(PACKAGE_ROOT)}
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env) as build:
        assert build.stdout is not None and build.stderr is not None
        assert b'"event": "build_started"' in build.stdout.readline()
        build.stdout.close()
        stderr = build.stderr.read().decode()
    assert build.returncode == ExitCode.OK, stderr
    assert "Traceback" not in stderr and "error" not in stderr
    assert run_cli("-C", str(examples_copy), "plan", "--check").exit_code == ExitCode.OK


def test_version() -> None:
    outcome = run_cli("--version")
    assert outcome.exit_code == 0 and __version__ in outcome.stdout


@pytest.mark.parametrize(
    "args",
    [["no-such-command"], ["build", "--no-such-flag"], ["build", "-j", "0"], ["plan", "--check", "extra", "--bogus"]],
)
def test_usage_errors_exit_3_not_2(args: list[str], tmp_path: Path) -> None:
    outcome = run_cli("-C", str(tmp_path), *args)
    assert outcome.exit_code == ExitCode.USER_ERROR
    assert outcome.stderr.startswith("pixmake: error:")
    assert "Traceback" not in outcome.stderr


def test_missing_manifest_is_a_user_error(tmp_path: Path) -> None:
    outcome = run_cli("-C", str(tmp_path), "plan")
    assert outcome.exit_code == ExitCode.USER_ERROR
    assert "manifest not found" in outcome.stderr and len(outcome.stderr.strip().splitlines()) == 1


def test_missing_directory_is_a_user_error(tmp_path: Path) -> None:
    outcome = run_cli("-C", str(tmp_path / "nope"), "validate")
    assert outcome.exit_code == ExitCode.USER_ERROR
    assert outcome.stderr.splitlines() == [f"pixmake: error: -C {tmp_path / 'nope'}: not a directory"]


def test_f_picks_another_manifest_and_the_lock_sits_beside_it(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "other.yaml").write_text("version: 1\ntargets:\n  a:\n    prompt: p\n    out: a.png\n")
    outcome = run_cli("-C", str(tmp_path), "-f", "sub/other.yaml", "plan", "--check")
    assert outcome.exit_code == ExitCode.CHANGES
    assert "a: not in the lockfile" in outcome.stdout


@pytest.mark.parametrize(
    ("lock", "words"),
    [('{"version": 1, "targets": {', ["corrupt"]), ('{"version": 99, "targets": {}}', ["newer", "99"])],
    ids=["corrupt", "from-a-newer-pixmake"],
)
def test_an_unreadable_lockfile_is_refused_not_rebuilt(tmp_path: Path, lock: str, words: list[str]) -> None:
    (tmp_path / "pixmake.yaml").write_text("version: 1\ntargets:\n  a:\n    prompt: p\n    out: a.png\n")
    (tmp_path / "pixmake.lock").write_text(lock)
    outcome = run_cli("-C", str(tmp_path), "plan")
    assert outcome.exit_code == ExitCode.USER_ERROR
    assert all(word in outcome.stderr for word in words), outcome.stderr
    assert (tmp_path / "pixmake.lock").read_text() == lock


def test_usage_error_hint_names_the_command_once(tmp_path: Path) -> None:
    assert run_cli("-C", str(tmp_path), "bogus").stderr.rstrip().endswith("(see 'pixmake --help')")
    assert run_cli("-C", str(tmp_path), "build", "--bogus").stderr.rstrip().endswith("(see 'pixmake build --help')")


def test_an_unreachable_base_url_fails_fast_in_one_line_naming_it_without_credentials(
    examples_copy: Path, monkeypatch: pytest.MonkeyPatch, closed_port: int
) -> None:
    import json

    port = closed_port
    monkeypatch.setenv("PIXMAKE_BASE_URL", f"http://user:hunter2@127.0.0.1:{port}/")
    monkeypatch.setenv("TOAPIS_API_KEY", "sk-test-unreachable")
    monkeypatch.setenv("PIXMAKE_BACKOFF_BASE", "0.01")
    outcome = run_cli("-C", str(examples_copy), "build", "--json")
    assert outcome.exit_code == ExitCode.FAILED
    assert outcome.stderr.strip().splitlines()[-1] == (
        f"pixmake: error: cannot reach http://127.0.0.1:{port} (connection refused); "
        "check PIXMAKE_BASE_URL or provider.base_url"
    )
    assert "hunter2" not in outcome.stdout + outcome.stderr
    events = [json.loads(line) for line in outcome.stdout.splitlines()]
    retries = [e for e in events if e["event"] == "retry"]
    assert 0 < len(retries) <= 2 * 4  # a short budget per target in flight, not a minute of retries
    plan = run_cli("-C", str(examples_copy), "plan")  # no task was created, so none is announced as paid
    assert plan.exit_code == 0 and "collecting paid task" not in plan.stdout


def test_a_disk_error_outside_the_build_is_one_line_not_a_traceback(tmp_path: Path) -> None:
    (tmp_path / "pixmake.yaml").write_text("version: 1\ntargets:\n  hero: {prompt: a red mug, out: hero.png}\n")
    (tmp_path / ".pixmake").write_text("a file where pixmake keeps its state")
    outcome = run_cli("-C", str(tmp_path), "plan")
    assert outcome.exit_code == 1
    [line] = outcome.stderr.splitlines()
    assert line.startswith("pixmake: error: Not a directory: ") and line.endswith(".pixmake/journal.jsonl")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_a_catalog_that_is_not_a_file_is_refused_not_waited_on(tmp_path: Path) -> None:
    """Reading a FIFO waits for a writer: `validate` hung for good on `rows: cat.csv` made by mkfifo."""
    os.mkfifo(tmp_path / "cat.csv")
    (tmp_path / "dir.csv").mkdir()
    entries = "".join(
        f"  {name}-${{sku}}:\n    rows: {name}.csv\n    prompt: p ${{sku}}\n    out: {name}/${{sku}}.png\n"
        for name in ("cat", "dir")
    )
    (tmp_path / "pixmake.yaml").write_text(f"version: 1\ntargets:\n{entries}")
    command = [sys.executable, "-m", "pixmake", "-C", str(tmp_path), "validate"]
    env = {**os.environ, "PYTHONPATH": str(PACKAGE_ROOT)}
    outcome = subprocess.run(command, capture_output=True, text=True, env=env, timeout=60, check=False)
    assert outcome.returncode == ExitCode.USER_ERROR
    assert [line.split(": ", 3)[3] for line in outcome.stderr.splitlines()] == [
        "targets.cat-${sku}.rows: cat.csv is not a file",
        "targets.dir-${sku}.rows: dir.csv is not a file",
    ]


@pytest.mark.parametrize(
    ("present", "args", "says"),
    [
        (
            "pixmake.yml",
            [],
            "manifest not found; found pixmake.yml: pass -f pixmake.yml (or rename it to pixmake.yaml)",
        ),
        ("Pixmake.YAML", [], "found Pixmake.YAML: pass -f Pixmake.YAML (or rename it to pixmake.yaml)"),
        ("sub/Prod.yml", ["-f", "sub/prod.yaml"], "found Prod.yml: pass -f sub/Prod.yml (or rename it to prod.yaml)"),
        (
            "pixmake.json",
            [],
            "manifest not found: pixmake runs where its pixmake.yaml is (or use -C DIR or -f FILE); to start one: "
            "pixmake -C {root} init",
        ),
        ("pixmak.yaml", [], "found pixmak.yaml: pass -f pixmak.yaml (or rename it to pixmake.yaml)"),  # a typo
        ("campaign.yaml", [], "found campaign.yaml: pass -f campaign.yaml (or rename it to pixmake.yaml)"),
        ("x.yaml", ["-f", "nope.yaml"], "found x.yaml: pass -f x.yaml (or rename it to nope.yaml)"),
        (
            "x.json",
            ["-f", "nope.yaml"],
            "manifest not found (-f names it relative to -C DIR, or to the current folder)",
        ),
    ],
)
def test_a_missing_manifest_names_the_one_beside_it_by_another_spelling(
    tmp_path: Path, present: str, args: list[str], says: str
) -> None:
    (tmp_path / present).parent.mkdir(exist_ok=True)
    (tmp_path / present).write_text("version: 1\ntargets:\n  a: {prompt: p, out: a.png}\n")
    outcome = run_cli("-C", str(tmp_path), *args, "validate")
    assert outcome.exit_code == ExitCode.USER_ERROR
    (line,) = outcome.stderr.splitlines()
    assert line.endswith(says.format(root=tmp_path))


def test_f_naming_a_directory_says_it_is_one(tmp_path: Path) -> None:
    (tmp_path / "v").mkdir()
    outcome = run_cli("-C", str(tmp_path), "-f", "v", "validate")
    assert outcome.exit_code == ExitCode.USER_ERROR
    assert outcome.stderr.splitlines() == [
        f"pixmake: error: {tmp_path / 'v'}: is a directory, not a manifest (-f names the YAML file; to work in "
        f"that folder, use -C {tmp_path / 'v'})"
    ]


def test_a_utf16_manifest_is_named_as_such(tmp_path: Path) -> None:
    """What Windows PowerShell 5's `>` writes."""
    (tmp_path / "pixmake.yaml").write_bytes("version: 1\ntargets: {}\n".encode("utf-16"))
    outcome = run_cli("-C", str(tmp_path), "validate")
    assert outcome.exit_code == 3
    assert outcome.stderr.strip().endswith("manifest is UTF-16 text; save it as UTF-8"), outcome.stderr


def test_a_thousand_errors_print_fifty_lines_and_a_count(tmp_path: Path) -> None:
    """1,000 catalog rows at fault were 1,000 lines: the first screen said nothing the first line did not."""
    targets = "".join(
        f"  t{i}:\n    prompt: p\n    out: out/t{i}.png\n    references: [missing/{i}.png]\n" for i in range(120)
    )
    (tmp_path / "pixmake.yaml").write_text(f"version: 1\ntargets:\n{targets}")
    outcome = run_cli("-C", str(tmp_path), "validate")
    lines = outcome.stderr.splitlines()
    assert outcome.exit_code == ExitCode.USER_ERROR and len(lines) == 51
    assert all(line.startswith("pixmake: error: ") and "file not found: missing/" in line for line in lines[:50])
    assert lines[-1] == "pixmake: 70 more errors not shown (120 in all; validate --json lists them)"
    listed = json.loads(run_cli("-C", str(tmp_path), "validate", "--json").stdout)
    assert len(listed) == 120


def test_validate_of_an_unchanged_manifest_still_says_everything_a_first_validate_said(tmp_path: Path) -> None:
    """validate reads the manifest cache (a pre-commit hook on 10,000 targets took a second a run): its warnings
    come back from it, and what the cache is not keyed by, the input files, is checked afresh each time."""
    write_png(tmp_path / "mug.png", (8, 8), (0, 0, 255))
    (tmp_path / "pixmake.yaml").write_text(
        "version: 1\ntargets:\n  hero:\n    prompt: Poster #3 for the sale\n    out: hero.png\n"
        "    references: [mug.png]\n"
    )
    first = run_cli("-C", str(tmp_path), "validate")
    assert first.exit_code == ExitCode.OK and "#3 for the sale" in first.stderr, first.stderr
    assert (tmp_path / ".pixmake" / "manifest.cache").is_file()
    again = run_cli("-C", str(tmp_path), "validate")
    assert (again.exit_code, again.stdout, again.stderr) == (first.exit_code, first.stdout, first.stderr)
    (tmp_path / "mug.png").unlink()
    gone = run_cli("-C", str(tmp_path), "validate")
    assert gone.exit_code == ExitCode.USER_ERROR and "file not found: mug.png" in gone.stderr, gone.stderr


def test_the_command_list_is_whole_sentences_and_build_says_it_costs() -> None:
    """The review: the top-level help cut every summary with "...", and build's help never said it pays."""
    commands = run_cli("--help").stdout.split("Commands:\n", 1)[1].splitlines()
    assert len(commands) == 11 and all(line.endswith(".") and not line.endswith("...") for line in commands)
    assert "the provider charges per image, at submit" in " ".join(run_cli("build", "--help").stdout.split())


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_a_reference_never_committed_is_warned_of_at_the_build_and_named_so_in_a_clone(
    examples_copy: Path, tmp_path: Path
) -> None:
    """The review: a new reference not `git add`ed gave no word at the build, then every command of a
    teammate's clone failed with a bare "file not found"."""
    shutil.copy(examples_copy / "photos" / "mug.png", examples_copy / "photos" / "gift.png")
    manifest = examples_copy / "pixmake.yaml"
    manifest.write_text(
        manifest.read_text() + "  gift:\n    prompt: A gift box\n    references: [photos/gift.png]\n"
        "    out: assets/gift.png\n"
    )
    git(examples_copy, "init", "-q")
    git(examples_copy, "add", "-A")
    git(examples_copy, "rm", "-q", "--cached", "photos/gift.png")  # forgotten
    built = run_cli("-C", str(examples_copy), "build", "--emulator")
    assert built.exit_code == ExitCode.OK
    warnings = [line for line in built.stderr.splitlines() if line.startswith("pixmake: warning:")]
    assert warnings == [
        f"pixmake: warning: photos/gift.png is not in git, and the lock now records a build from it: "
        f"git -C {examples_copy} add -- photos/gift.png (a clone without it cannot plan)"
    ]
    git(examples_copy, "add", "-A")
    git(examples_copy, "rm", "-q", "--cached", "photos/gift.png")
    git(examples_copy, "commit", "-qm", "assets")
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", str(examples_copy), str(clone))
    planned = run_cli("-C", str(clone), "plan")
    assert planned.exit_code == ExitCode.USER_ERROR
    assert planned.stderr.endswith(
        "targets.gift.references[0]: file not found: photos/gift.png (pixmake.lock records a build from it, so it "
        "was there: never committed? git add -- photos/gift.png in the checkout that has it)\n"
    )
    assert run_cli("-C", str(examples_copy), "build", "--emulator").stderr.count("warning") == 0  # nothing built


def test_init_starts_a_project_that_plans_and_builds_and_never_writes_over_one(tmp_path: Path) -> None:
    """The review: `pixmake init` was "No such command", and an empty folder's error gave no way forward."""
    outcome = run_cli("-C", str(tmp_path), "init")
    assert outcome.exit_code == ExitCode.OK
    assert outcome.stdout.splitlines()[:2] == [
        "wrote pixmake.yaml: one target to start from, more in its comments",
        "added 'pixmake.lock merge=pixmake' to .gitattributes: git merges pixmake.lock by target",
    ]
    assert "run pixmake init again" in outcome.stdout  # no git work tree yet: the driver waits for one
    assert run_cli("-C", str(tmp_path), "build", "--emulator").exit_code == ExitCode.OK
    assert (tmp_path / "assets" / "hero.png").is_file()
    (tmp_path / "pixmake.yaml").write_text("version: 1\ntargets: {}\n# mine\n")
    again = run_cli("-C", str(tmp_path), "init")
    assert again.exit_code == ExitCode.OK and again.stdout.startswith("kept pixmake.yaml, which is there already\n")
    assert (tmp_path / "pixmake.yaml").read_text().endswith("# mine\n")
    assert (tmp_path / ".gitattributes").read_text() == "pixmake.lock merge=pixmake\n"  # not added twice


def test_the_starters_commented_examples_validate_once_uncommented(tmp_path: Path) -> None:
    """What `pixmake init` suggests in comments must work as written."""
    from pixmake.scaffold import STARTER

    lines = STARTER.splitlines()
    examples = [  # "  #   field: …" and "  # name:" lines, not the prose between them
        line.replace("  # ", "  ", 1)
        for line in lines
        if line.startswith("  #   ") or (line.startswith("  # ") and " " not in line[4:].partition(":")[0])
    ]
    text = "\n".join([*lines, *examples]) + "\n"
    (tmp_path / "pixmake.yaml").write_text(text)
    (tmp_path / "photos").mkdir()
    (tmp_path / "masks").mkdir()
    write_png(tmp_path / "photos" / "mug.png", size=(64, 64))
    write_png(tmp_path / "masks" / "mug-background.png", size=(64, 64), mode="RGBA", color=(0, 0, 0, 0))
    outcome = run_cli("-C", str(tmp_path), "validate")
    assert outcome.exit_code == ExitCode.OK, outcome.stderr
    assert outcome.stdout.strip().endswith("pixmake.yaml: ok, 4 targets")  # hero, the edit, two banners


def test_the_object_cache_may_link_to_an_object_cache_kept_elsewhere(examples_copy: Path, tmp_path: Path) -> None:
    """The diff review: a shared object cache (`.pixmake/objects` linked to it) was refused outright."""
    shared = tmp_path / "shared-objects"
    shared.mkdir()
    (examples_copy / ".pixmake").mkdir(exist_ok=True)
    (examples_copy / ".pixmake" / "objects").symlink_to(shared)
    assert run_cli("-C", str(examples_copy), "build", "--emulator").exit_code == ExitCode.OK
    assert any(shared.iterdir())  # the images went to the shared cache
    other = tmp_path / "other"
    shutil.copytree(examples_copy, other, symlinks=True)
    assert run_cli("-C", str(other), "plan", "--check").exit_code == ExitCode.OK  # a second project uses it too


@pytest.mark.parametrize("existing", [b"*.png binary\r\n", b"caf\xe9 -text", b""], ids=["crlf", "latin-1", "empty"])
def test_init_adds_its_line_to_any_gitattributes_in_its_own_line_ends(existing: bytes, tmp_path: Path) -> None:
    """The diff review: a .gitattributes that is not UTF-8 stopped init after it had written the manifest."""
    (tmp_path / ".gitattributes").write_bytes(existing)
    assert run_cli("-C", str(tmp_path), "init").exit_code == ExitCode.OK
    end = b"\r\n" if b"\r\n" in existing else b"\n"
    expected = existing + (end if existing and not existing.endswith(b"\n") else b"") + b"pixmake.lock merge=pixmake"
    assert (tmp_path / ".gitattributes").read_bytes() == expected + end
    assert run_cli("-C", str(tmp_path), "init").exit_code == ExitCode.OK
    assert (tmp_path / ".gitattributes").read_bytes() == expected + end  # once


def test_init_never_copies_what_a_committed_gitattributes_link_points_at(tmp_path: Path) -> None:
    """The security review: a pull request committing .gitattributes as a link to a secret outside the
    project had init copy the secret into a new, world-readable .gitattributes for the next commit."""
    secret = tmp_path / "outside" / ".env"
    secret.parent.mkdir()
    secret.write_text("TOAPIS_API_KEY=sk-secret-value\n")
    project = tmp_path / "project"
    project.mkdir()
    (project / ".gitattributes").symlink_to(secret)
    outcome = run_cli("-C", str(project), "init")  # the rest of init is done (the diff review: a CI step failed)
    assert outcome.exit_code == ExitCode.OK and "left .gitattributes as it is: a symbolic link" in outcome.stdout
    assert "sk-secret-value" not in outcome.stdout + outcome.stderr
    assert (project / ".gitattributes").is_symlink() and secret.read_text() == "TOAPIS_API_KEY=sk-secret-value\n"
    assert (project / "pixmake.yaml").exists()


@pytest.mark.parametrize("value", ["", "  \n"])
def test_a_key_variable_set_to_nothing_says_so(
    examples_copy: Path, monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    """The CI review: a secret a job cannot read (a fork's pull request) is an empty variable, and the error
    said to set it, as if it were missing; and offered --emulator without saying it makes placeholders."""
    monkeypatch.setenv("TOAPIS_API_KEY", value)
    outcome = run_cli("-C", str(examples_copy), "build")
    assert outcome.exit_code == ExitCode.USER_ERROR
    assert outcome.stderr.splitlines() == [
        "pixmake: error: no API key: TOAPIS_API_KEY is set but empty (a CI secret this job cannot read?) "
        "(4 targets to generate or collect), or build with --emulator (placeholders, free)"
    ]


def test_a_refused_build_says_so_on_its_json_stream(examples_copy: Path, provider_env: object) -> None:
    """The CI review: `build --json` refused by a spend cap wrote nothing, which the README says means an
    interrupted build: a script would retry it."""
    outcome = run_cli("-C", str(examples_copy), "build", "--json", "--max-images", "1")
    assert outcome.exit_code == ExitCode.USER_ERROR
    [event] = [json.loads(line) for line in outcome.stdout.splitlines()]
    assert event["event"] == "build_refused" and event["error"].startswith("this build would pay for 5 images")
    assert outcome.stderr == f"pixmake: error: {event['error']}\n"


def test_a_build_refused_for_its_manifest_or_url_says_so_on_its_json_stream(
    examples_copy: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The second diff review: the manifest and the base URL were read before --json's handler."""
    (examples_copy / "pixmake.yaml").write_text("version: 1\ntargets:\n  a: {prompt: x}\n")
    for env in ({}, {"PIXMAKE_BASE_URL": "http://x?y"}):
        if env:
            (examples_copy / "pixmake.yaml").write_text("version: 1\ntargets:\n  a: {prompt: x, out: a.png}\n")
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        outcome = run_cli("-C", str(examples_copy), "build", "--json")
        assert outcome.exit_code == ExitCode.USER_ERROR
        [event] = [json.loads(line) for line in outcome.stdout.splitlines()]
        assert event["event"] == "build_refused" and outcome.stderr.startswith("pixmake: error: ")


def test_a_second_manifest_in_a_folder_never_writes_the_first_ones_lock_and_state(tmp_path: Path) -> None:
    """`pixmake -f sprites.yaml build --prune` beside pixmake.yaml shared its pixmake.lock and .pixmake/: it
    pruned pixmake.yaml's images as orphans (and a build drops an orphan's journaled paid task)."""
    (tmp_path / "pixmake.yaml").write_text("version: 1\ntargets:\n  a:\n    prompt: a\n    out: a.png\n")
    (tmp_path / "sprites.yaml").write_text("version: 1\ntargets:\n  b:\n    prompt: b\n    out: b.png\n")
    assert run_cli("-C", str(tmp_path), "build", "--emulator").exit_code == 0
    lock = (tmp_path / "pixmake.lock").read_bytes()
    said = (
        f"pixmake: error: pixmake.lock and .pixmake/ in {tmp_path} are pixmake.yaml's: sprites.yaml beside it would "
        "share them (its build would drop pixmake.yaml's targets and their paid tasks); keep sprites.yaml in a "
        "folder of its own (with -C that folder), or delete pixmake.yaml if sprites.yaml replaces it"
    )
    for command in (["build", "--emulator", "--prune"], ["accept", "b"], ["forget", "b"], ["gc"]):
        refused = run_cli("-C", str(tmp_path), "-f", "sprites.yaml", *command)
        assert (refused.exit_code, refused.stderr.strip()) == (ExitCode.USER_ERROR, said), command
    assert (tmp_path / "a.png").exists() and (tmp_path / "pixmake.lock").read_bytes() == lock
    assert run_cli("-C", str(tmp_path), "-f", "sprites.yaml", "plan").exit_code == 0  # a what-if: writes no lock
    (tmp_path / "pixmake.yaml").rename(tmp_path / "main.yaml")  # renamed: sprites.yaml may not take them over
    refused = run_cli("-C", str(tmp_path), "-f", "sprites.yaml", "build", "--emulator")
    assert refused.exit_code == ExitCode.USER_ERROR and "are main.yaml's" in refused.stderr
    (tmp_path / "sprites.yaml").unlink()  # alone again: the renamed manifest takes the lock and state over
    assert run_cli("-C", str(tmp_path), "-f", "main.yaml", "build", "--emulator").exit_code == 0
    assert (tmp_path / ".pixmake/manifest").read_text() == "main.yaml\n"


@pytest.mark.parametrize(
    ("damage", "said"),
    [
        (lambda text: text + b"\xff\n", "lockfile is corrupt (not UTF-8 text)"),
        (lambda text: b"\xef\xbb\xbf" + text, "pixmake.lock:1: lockfile starts with a byte order mark"),
        (lambda text: text + b"\n" + b"[" * 100_000, "lockfile is corrupt (nested too deeply)"),
    ],
    ids=["not-utf-8", "bom", "deep"],
)
def test_a_lockfile_damaged_past_json_is_one_line_in_every_command(
    examples_copy: Path, damage: Callable[[bytes], bytes], said: str
) -> None:
    """The damage review: each of these stopped plan, build, explain, accept, forget and gc with a traceback."""
    assert run_cli("-C", str(examples_copy), "build", "--emulator").exit_code == ExitCode.OK
    lock = examples_copy / "pixmake.lock"
    lock.write_bytes(damage(lock.read_bytes()))
    for command in (["plan"], ["build", "--emulator"], ["explain", "hero"], ["gc"], ["forget", "hero"]):
        outcome = run_cli("-C", str(examples_copy), *command)
        assert outcome.exit_code == ExitCode.USER_ERROR, command
        assert said in outcome.stderr and len(outcome.stderr.strip().splitlines()) == 1, command


@pytest.mark.parametrize("kind", ["fifo", "socket"])
def test_an_output_that_is_no_file_is_refused_before_a_build_hangs_on_it(examples_copy: Path, kind: str) -> None:
    """The damage review: a FIFO at an output was planned as missing, and the build then waited on it for good
    (Ctrl-C and SIGTERM could not end it); a socket failed as 'changed during the build'."""
    import socket

    assert run_cli("-C", str(examples_copy), "build", "--emulator").exit_code == ExitCode.OK
    output = examples_copy / "assets" / "logo-tile.png"
    output.unlink()
    if kind == "fifo":
        os.mkfifo(output)
    else:
        server = socket.socket(socket.AF_UNIX)
        server.bind(str(output))
    try:
        for command in (["validate"], ["plan"], ["build", "--emulator"]):
            outcome = run_cli("-C", str(examples_copy), *command)
            assert outcome.exit_code == ExitCode.USER_ERROR, command
            assert "assets/logo-tile.png is not a file (a FIFO, a socket or a device)" in outcome.stderr, command
    finally:
        if kind == "socket":
            server.close()


@pytest.mark.parametrize(
    "where",
    ["pixmake.lock", ".pixmake/journal.jsonl", ".pixmake/manifest", ".pixmake/uploads.json", ".pixmake/noop.memo"],
)
def test_a_fifo_in_place_of_the_lock_or_a_state_file_is_refused_not_waited_on(examples_copy: Path, where: str) -> None:
    """The damage review: each of these hung plan or build (and /dev/zero linked as the lock grew memory)."""
    assert run_cli("-C", str(examples_copy), "build", "--emulator").exit_code == ExitCode.OK
    path = examples_copy / where
    path.unlink(missing_ok=True)
    os.mkfifo(path)
    for command in (["plan"], ["build", "--emulator"]):
        outcome = run_cli("-C", str(examples_copy), *command)
        assert outcome.exit_code == ExitCode.USER_ERROR, command
        assert "is not a file (a FIFO, a socket or a device)" in outcome.stderr, command
    # As a user runs it: the console script checks the no-op memo before anything else (the last fuzz: it hung)
    env = {**os.environ, "PYTHONPATH": str(PACKAGE_ROOT)}
    command = [sys.executable, "-m", "pixmake", "-C", str(examples_copy), "plan"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == ExitCode.USER_ERROR and "is not a file (a FIFO" in done.stderr
    path.unlink()
    (examples_copy / "pixmake.lock").unlink(missing_ok=True)
    (examples_copy / "pixmake.lock").symlink_to("/dev/zero")
    outcome = run_cli("-C", str(examples_copy), "plan")
    assert outcome.exit_code == ExitCode.USER_ERROR and "pixmake.lock is not a file" in outcome.stderr
