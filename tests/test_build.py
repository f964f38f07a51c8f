"""Acceptance tests of the walking skeleton: real builds over real HTTP against the emulator on 127.0.0.1."""

from __future__ import annotations

import dataclasses
import gc
import hashlib
import json
import os
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
import yaml
from PIL import Image

from conftest import PACKAGE_ROOT, TEST_KEY, run_cli
from pixmake.emulator import EmulatorServer
from pixmake.lockfile import parse_lock


def _snapshot(root: Path) -> dict[str, bytes]:
    """Every file under root except pixmake's private state."""
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and ".pixmake" not in p.parts
    }


def _submitted_prompts(server: EmulatorServer) -> list[str]:
    return [str(r.json["prompt"]) for r in server.emulator.submits() if isinstance(r.json, dict)]


def test_build_creates_every_declared_image(examples_copy: Path, provider_env: EmulatorServer) -> None:
    outcome = run_cli("-C", str(examples_copy), "build")
    assert outcome.exit_code == 0, outcome.stderr
    expected = {
        "assets/logo-tile.png": (1024, 1024),
        "assets/hero-1.png": (1536, 1024),
        "assets/hero-2.png": (1536, 1024),
        "assets/mug-lifestyle.png": (1024, 1024),
        "assets/mug-marble.png": (1024, 1536),
    }
    for rel, size in expected.items():
        with Image.open(examples_copy / rel) as image:
            assert image.format == "PNG"
            assert image.size == size
    lock = parse_lock((examples_copy / "pixmake.lock").read_text())
    assert sorted(lock.entries) == ["hero", "logo-tile", "mug-lifestyle", "mug-marble"]
    assert provider_env.emulator.ledger.charged_images == 5


def test_a_build_leaves_the_garbage_collector_as_it_found_it(examples_copy: Path, provider_env: EmulatorServer) -> None:
    """A build tunes the collector for its own run (pixmake is also a library): afterwards, nothing shows."""
    before = gc.get_threshold(), gc.get_freeze_count(), gc.isenabled()
    outcome = run_cli("-C", str(examples_copy), "build")
    assert outcome.exit_code == 0, outcome.stderr
    assert provider_env.emulator.ledger.charged_images == 5
    assert (gc.get_threshold(), gc.get_freeze_count(), gc.isenabled()) == before


def test_a_spend_cap_refuses_a_larger_build_before_any_request(
    examples_copy: Path, provider_env: EmulatorServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The examples pay for 5 images: a cap of 4 stops the build in one line, having sent nothing."""
    outcome = run_cli("-C", str(examples_copy), "build", "--max-images", "4")
    assert outcome.exit_code == 3
    assert outcome.stderr.strip().splitlines() == [
        "pixmake: error: this build would pay for 5 images (logo-tile 1, hero 2, mug-lifestyle 1, mug-marble 1; "
        "why: not in the lockfile (4 of 4 targets)), "
        f"more than its cap of 4 (--max-images or PIXMAKE_MAX_IMAGES); 'pixmake -C {examples_copy} plan --provider' "
        "says why (with this build's targets, --replace and --restore, if any)"
    ]
    assert provider_env.emulator.requests == [] and not (examples_copy / "pixmake.lock").exists()
    emulated = run_cli("-C", str(examples_copy), "build", "--emulator", "--max-images", "4")
    assert emulated.exit_code == 3 and emulated.stderr.startswith(
        "pixmake: error: this build would make 5 placeholder images (logo-tile 1, hero 2, mug-lifestyle 1, "
        "mug-marble 1; why: not in the lockfile (4 of 4 targets)), more than its cap of 4"
    )
    monkeypatch.setenv("PIXMAKE_MAX_IMAGES", "5")  # a team-wide cap from CI's environment
    assert run_cli("-C", str(examples_copy), "build").exit_code == 0
    assert provider_env.emulator.ledger.charged_images == 5
    monkeypatch.setenv("PIXMAKE_MAX_IMAGES", "0")  # nothing left to pay for: a cap of 0 passes
    assert run_cli("-C", str(examples_copy), "build").exit_code == 0


def test_second_build_submits_nothing_and_changes_no_byte(examples_copy: Path, provider_env: EmulatorServer) -> None:
    assert run_cli("-C", str(examples_copy), "build").exit_code == 0
    before = _snapshot(examples_copy)
    submits = len(provider_env.emulator.submits())
    outcome = run_cli("-C", str(examples_copy), "build")
    assert outcome.exit_code == 0, outcome.stderr
    assert len(provider_env.emulator.submits()) == submits
    assert _snapshot(examples_copy) == before
    plan = run_cli("-C", str(examples_copy), "plan", "--check")
    assert plan.exit_code == 0, plan.stdout


def test_editing_one_prompt_regenerates_exactly_that_target(examples_copy: Path, provider_env: EmulatorServer) -> None:
    assert run_cli("-C", str(examples_copy), "build").exit_code == 0
    manifest = examples_copy / "pixmake.yaml"
    manifest.write_text(manifest.read_text().replace("two colours", "three colours"))
    assert run_cli("-C", str(examples_copy), "plan", "--check").exit_code == 2
    provider_env.emulator.reset()
    assert run_cli("-C", str(examples_copy), "build").exit_code == 0
    prompts = _submitted_prompts(provider_env)
    assert len(prompts) == 1 and "three colours" in prompts[0]


def test_one_changed_byte_of_a_reference_regenerates_the_targets_using_it(
    examples_copy: Path, provider_env: EmulatorServer
) -> None:
    assert run_cli("-C", str(examples_copy), "build").exit_code == 0
    ref = examples_copy / "photos" / "mug.png"
    with Image.open(ref) as original:
        edited = original.copy()
    edited.putpixel((0, 0), (1, 2, 3))
    edited.save(ref)
    submitted = len(_submitted_prompts(provider_env))  # no reset: the emulator must keep the mask's upload
    assert run_cli("-C", str(examples_copy), "build").exit_code == 0
    prompts = sorted(_submitted_prompts(provider_env)[submitted:])
    assert len(prompts) == 2
    assert any("windowsill" in p for p in prompts) and any("marble" in p for p in prompts)


def test_a_reference_and_mask_optimised_in_place_pay_for_nothing(
    examples_copy: Path, provider_env: EmulatorServer
) -> None:
    """A re-save with the same pixels (an editor, oxipng run over the repo) rewrites the lock, free."""
    assert run_cli("-C", str(examples_copy), "build").exit_code == 0
    charged = provider_env.emulator.ledger.charged_images
    for name in ("photos/mug.png", "masks/mug-background.png"):
        file = examples_copy / name
        with Image.open(file) as original:
            original.load()
            before = file.read_bytes()
            original.save(file, compress_level=0)  # other bytes, same pixels
        assert file.read_bytes() != before
    planned = run_cli("-C", str(examples_copy), "plan")
    assert "< restore    mug-marble: reference photos/mug.png and mask masks/mug-background.png saved again" in (
        planned.stdout
    )
    assert "0 images to generate" in planned.stdout
    assert run_cli("-C", str(examples_copy), "build").exit_code == 0
    assert provider_env.emulator.ledger.charged_images == charged
    lock = parse_lock((examples_copy / "pixmake.lock").read_text())
    marble = lock.entries["mug-marble"]
    assert marble.mask is not None and marble.references[0].pixels is not None
    assert {i.sha256 for i in (*marble.references, marble.mask)} == {
        hashlib.sha256((examples_copy / name).read_bytes()).hexdigest()
        for name in ("photos/mug.png", "masks/mug-background.png")
    }
    assert run_cli("-C", str(examples_copy), "plan", "--check").exit_code == 0
    # The same pixels but one: paid for, as any change.
    with Image.open(examples_copy / "photos/mug.png") as optimised:
        edited = optimised.convert("RGB")
    edited.putpixel((0, 0), (1, 2, 3))
    edited.save(examples_copy / "photos/mug.png")
    assert run_cli("-C", str(examples_copy), "build").exit_code == 0
    assert provider_env.emulator.ledger.charged_images == charged + 2


def test_the_pixels_of_an_input_are_read_once_per_content_and_never_stop_a_build(
    examples_copy: Path, provider_env: EmulatorServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The diff review: a reference Pillow's EXIF reader chokes on crashed a paid build after its images were
    written, before their lock entry (every build then collected and crashed again); each plan decoded every
    changed reference again (35 s a plan for 1,000), and accept decoded one reference once per target."""
    import pixmake.pixelcache
    from pixmake.decode import pixel_digest

    decoded: list[int] = []

    def counted(blob: bytes) -> str | None:
        decoded.append(len(blob))
        return pixel_digest(blob)

    monkeypatch.setattr(pixmake.pixelcache, "pixel_digest", counted)
    mug = examples_copy / "photos" / "mug.png"
    plain = mug.read_bytes()
    exif = b"garbage!garbage"
    chunk = len(exif).to_bytes(4, "big") + b"eXIf" + exif + zlib.crc32(b"eXIf" + exif).to_bytes(4, "big")
    mug.write_bytes(plain[:33] + chunk + plain[33:])  # after IHDR: what Pillow's EXIF reader raises on
    assert run_cli("-C", str(examples_copy), "build", "--emulator").exit_code == 0
    assert decoded == []  # placeholders: a build without --emulator regenerates them whatever their inputs
    built = run_cli("-C", str(examples_copy), "build")
    assert built.exit_code == 0, built.stderr
    assert provider_env.emulator.ledger.charged_images == 5
    lock = parse_lock((examples_copy / "pixmake.lock").read_text())
    assert lock.entries["mug-marble"].references[0].pixels is None  # no digest: a re-save of it is a change
    assert lock.entries["mug-marble"].mask is not None and lock.entries["mug-marble"].mask.pixels is not None
    assert len(decoded) == 2  # the reference and the mask, once each for the two targets naming them
    mask = examples_copy / "masks" / "mug-background.png"
    with Image.open(mask) as original:
        edited = original.copy()
    edited.putpixel((0, 0), (1, 2, 3, 0))
    edited.save(mask)  # another mask
    for _ in range(3):
        assert (
            "~ regenerate mug-marble: mask masks/mug-background.png changed"
            in run_cli("-C", str(examples_copy), "plan").stdout
        )
    assert len(decoded) == 3  # decoded once for three plans
    manifest = examples_copy / "pixmake.yaml"
    manifest.write_text(manifest.read_text().replace("white marble", "black slate"))
    edited.putpixel((0, 0), (1, 2, 4, 0))
    edited.save(mask)
    assert run_cli("-C", str(examples_copy), "plan").exit_code == 0
    assert len(decoded) == 3  # the prompt changed too: not a re-save, whatever the mask shows
    Image.new("RGB", (1024, 1024), (9, 9, 9)).save(examples_copy / "assets" / "mug-lifestyle.png")  # a retouch
    assert run_cli("-C", str(examples_copy), "accept", "mug-lifestyle").exit_code == 0
    assert len(decoded) == 3  # the mug's digest is known: not read again


def test_a_build_refuses_to_pay_while_git_tracks_its_state(examples_copy: Path, provider_env: EmulatorServer) -> None:
    """The security review: a pull request committing .pixmake/ (git add -f) had a clone's build trust its
    journal (a plan of 4 images paid 20) and would have it trust its upload links (another's references)."""
    assert run_cli("-C", str(examples_copy), "build").exit_code == 0
    charged = provider_env.emulator.ledger.charged_images

    def git(*args: str) -> None:
        subprocess.run(["git", *args], cwd=examples_copy, check=True, capture_output=True)

    git("init", "-q")
    git("add", "-f", ".pixmake/uploads.json")
    manifest = examples_copy / "pixmake.yaml"
    manifest.write_text(manifest.read_text().replace("two colours", "three colours"))
    refused = run_cli("-C", str(examples_copy), "build")
    assert refused.exit_code != 0 and provider_env.emulator.ledger.charged_images == charged
    assert "git tracks pixmake's local state (.pixmake/uploads.json)" in refused.stderr
    assert "rm -r -q --cached .pixmake) and commit" in refused.stderr
    assert run_cli("-C", str(examples_copy), "build", "--emulator", "logo-tile").exit_code == 0  # placeholders: free
    git("rm", "-r", "-q", "--cached", ".pixmake")
    assert run_cli("-C", str(examples_copy), "build").exit_code == 0
    assert provider_env.emulator.ledger.charged_images == charged + 1
    # The diff review: .PIXMAKE is .pixmake on macOS and Windows; a link to a CI cache folder is no state.
    (examples_copy / ".PIXMAKE").mkdir()
    (examples_copy / ".PIXMAKE" / "journal.jsonl").write_text("{}\n")
    git("add", "-f", ".PIXMAKE")
    manifest.write_text(manifest.read_text().replace("three colours", "four colours"))
    refused = run_cli("-C", str(examples_copy), "build")
    assert refused.exit_code != 0 and "(.PIXMAKE/journal.jsonl)" in refused.stderr
    git("rm", "-r", "-q", "--cached", ".PIXMAKE")
    cache = examples_copy.parent / "ci-cache"
    (examples_copy / ".pixmake").rename(cache)
    (examples_copy / ".pixmake").symlink_to(cache)
    git("add", ".pixmake")  # the link itself: git does not look into it, nor at its .gitignore
    assert run_cli("-C", str(examples_copy), "build").exit_code == 0
    assert provider_env.emulator.ledger.charged_images == charged + 2


def test_renaming_out_and_reordering_targets_submits_nothing(examples_copy: Path, provider_env: EmulatorServer) -> None:
    assert run_cli("-C", str(examples_copy), "build").exit_code == 0
    manifest = examples_copy / "pixmake.yaml"
    document = yaml.safe_load(manifest.read_text())
    document["targets"]["logo-tile"]["out"] = "assets/brand/logo.png"
    document["targets"] = dict(reversed(list(document["targets"].items())))
    manifest.write_text(yaml.safe_dump(document, sort_keys=False))
    provider_env.emulator.reset()
    outcome = run_cli("-C", str(examples_copy), "build")
    assert outcome.exit_code == 0, outcome.stderr
    assert provider_env.emulator.submits() == []
    assert (examples_copy / "assets/brand/logo.png").read_bytes() == (
        examples_copy / "assets/logo-tile.png"
    ).read_bytes()


def test_manifest_error_is_one_line_with_file_line_and_field(tmp_path: Path) -> None:
    root = tmp_path / "p"
    root.mkdir()
    (root / "pixmake.yaml").write_text("version: 1\ntargets:\n  hero:\n    prompt: a mug\n    n: 3\n    out: a.png\n")
    outcome = run_cli("-C", str(root), "validate")
    assert outcome.exit_code == 3
    lines = outcome.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "pixmake.yaml:5:" in lines[0] and "targets.hero.n" in lines[0]
    assert "Traceback" not in outcome.stderr


def test_missing_key_is_a_one_line_error_before_any_request(
    examples_copy: Path, emulator: EmulatorServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PIXMAKE_BASE_URL", emulator.url)
    outcome = run_cli("-C", str(examples_copy), "build")
    assert outcome.exit_code == 3
    assert "TOAPIS_API_KEY" in outcome.stderr and len(outcome.stderr.strip().splitlines()) == 1
    assert emulator.emulator.requests == []


def test_api_key_never_leaks(examples_copy: Path, provider_env: EmulatorServer) -> None:
    outputs = [
        run_cli("-C", str(examples_copy), "build", "-v"),
        run_cli("-C", str(examples_copy), "build", "--json"),
    ]
    assert [outcome.exit_code for outcome in outputs] == [0, 0], outputs  # the key was used, not refused early
    provider_env.emulator.reconfigure(dataclasses.replace(provider_env.emulator.config, api_key="sk-some-other-key"))
    (examples_copy / "pixmake.yaml").write_text(
        (examples_copy / "pixmake.yaml").read_text().replace("two colours", "3")
    )
    outputs.append(run_cli("-C", str(examples_copy), "build"))
    assert outputs[-1].exit_code == 3, outputs[-1].stderr  # refused key: user error
    for outcome in outputs:
        assert TEST_KEY not in outcome.stdout + outcome.stderr
    for path in examples_copy.rglob("*"):
        if path.is_file():
            assert TEST_KEY.encode() not in path.read_bytes(), path
    for request in provider_env.emulator.requests:
        assert TEST_KEY not in json.dumps(request.headers)


def test_readme_first_command_as_a_user_runs_it(examples_copy: Path) -> None:
    """`pixmake -C examples build --emulator`, as a subprocess with no key and no network settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TOAPIS_", "PIXMAKE_"))}
    env["PYTHONPATH"] = str(PACKAGE_ROOT)  # the pixmake under test, installed or src (as the other subprocesses)
    command = [sys.executable, "-m", "pixmake", "-C", str(examples_copy), "build", "--emulator"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert (examples_copy / "assets/hero-2.png").is_file()
    assert "4 generated (5 placeholder images)" in done.stderr
    again = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0 and "0 generated" in again.stderr, again.stderr


def test_build_reads_the_manifest_through_the_cache_and_an_invalid_one_is_never_cached(
    examples_copy: Path, provider_env: EmulatorServer
) -> None:
    """`build` goes through the manifest cache as `plan` does: an unchanged YAML is not parsed again."""
    manifest = examples_copy / "pixmake.yaml"
    os.utime(manifest, ns=(1_000_000_000, 1_000_000_000))  # well older than the cache: not racy
    cache = examples_copy / ".pixmake" / "manifest.cache"
    assert run_cli("-C", str(examples_copy), "build").exit_code == 0
    assert cache.is_file()  # the build parsed the manifest once and cached it
    written = cache.stat()
    assert run_cli("-C", str(examples_copy), "build").exit_code == 0
    again = cache.stat()
    assert (again.st_ino, again.st_mtime_ns) == (written.st_ino, written.st_mtime_ns)  # a hit: not parsed again
    manifest.write_text(manifest.read_text().replace("n: 2", "n: 3"))
    for _ in range(2):  # the invalid manifest is reported every time, never cached
        outcome = run_cli("-C", str(examples_copy), "build")
        assert outcome.exit_code == 3 and "targets.hero.n" in outcome.stderr, outcome.stderr


def test_build_summary_names_orphans_and_stale_outputs_and_prune_reports_before_it(
    examples_copy: Path, provider_env: EmulatorServer
) -> None:
    assert run_cli("-C", str(examples_copy), "build").exit_code == 0
    manifest = examples_copy / "pixmake.yaml"
    document = yaml.safe_load(manifest.read_text())
    del document["targets"]["mug-lifestyle"]
    document["targets"]["logo-tile"]["out"] = "assets/brand/logo.png"  # the old file becomes a stale output
    manifest.write_text(yaml.safe_dump(document, sort_keys=False))

    outcome = run_cli("-C", str(examples_copy), "build", "--json")
    assert outcome.exit_code == 0, outcome.stderr
    assert all(json.loads(line)["event"] for line in outcome.stdout.splitlines())  # stdout: NDJSON only
    (summary,) = outcome.stderr.strip().splitlines()  # the human summary goes to stderr
    assert summary.startswith("build finished in ") and "1 restored from cache" in summary
    assert "1 orphaned (kept; build --prune deletes them)" in summary
    assert "1 stale output kept (build --prune deletes it)" in summary

    pruned = run_cli("-C", str(examples_copy), "build", "--prune")
    assert pruned.exit_code == 0, pruned.stderr
    lines = pruned.stderr.strip().splitlines()
    assert lines[-1].startswith("build finished in ") and "1 orphaned (pruned)" in lines[-1], lines
    assert "pixmake: pruned assets/mug-lifestyle.png" in lines[:-1]
    assert "pixmake: pruned assets/logo-tile.png" in lines[:-1]
    assert "pixmake: dropped 1 orphan from pixmake.lock" in lines[:-1]


@pytest.mark.parametrize("leftover", [b"", "cut short"], ids=["empty", "cut-short"])
def test_an_output_a_power_cut_damaged_is_restored_free_not_kept_as_an_edit(
    examples_copy: Path, provider_env: EmulatorServer, leftover: bytes | str
) -> None:
    """Outputs are written without fsync (their bytes are durable in the object cache): what a power cut
    can leave of one is repaired by the next build at no cost, while a hand edit is still left alone."""
    assert run_cli("-C", str(examples_copy), "build").exit_code == 0
    before = _snapshot(examples_copy)
    damaged, edited = examples_copy / "assets/hero-1.png", examples_copy / "assets/logo-tile.png"
    damaged.write_bytes(leftover if isinstance(leftover, bytes) else before["assets/hero-1.png"][:-100])
    Image.new("RGB", (8, 8), "white").save(edited)  # a whole image: a hand edit, kept
    edited_bytes = edited.read_bytes()
    submits = len(provider_env.emulator.submits())

    plan = run_cli("-C", str(examples_copy), "plan", "--json")
    actions = {a["target"]: a for a in json.loads(plan.stdout)["actions"]}
    assert actions["hero"]["action"] == "restore", actions["hero"]
    assert [r["code"] for r in actions["hero"]["reasons"]] == ["output-damaged"]
    assert actions["logo-tile"]["action"] == "edited"

    outcome = run_cli("-C", str(examples_copy), "build")
    assert outcome.exit_code == 0, outcome.stderr
    assert len(provider_env.emulator.submits()) == submits  # nothing paid again
    assert damaged.read_bytes() == before["assets/hero-1.png"]
    assert edited.read_bytes() == edited_bytes


def test_over_https_the_certificate_is_checked_before_the_key_is_sent(examples_copy: Path, tmp_path: Path) -> None:
    """A server whose certificate no trusted CA signed never receives a request, so never sees the key:
    the build stops in one line. Trusting its CA (SSL_CERT_FILE, as for any OpenSSL client) lets it through."""
    import trustme

    ca = trustme.CA()
    issued = ca.issue_cert("127.0.0.1")
    ca_file, chain, key = tmp_path / "ca.pem", tmp_path / "chain.pem", tmp_path / "key.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    for blob in issued.cert_chain_pems:
        blob.write_to_path(str(chain), append=True)
    issued.private_key_pem.write_to_path(str(key))
    with EmulatorServer(tls=(str(chain), str(key))) as server:
        assert server.url.startswith("https://")
        env = {k: v for k, v in os.environ.items() if not k.startswith(("TOAPIS_", "PIXMAKE_", "SSL_CERT_"))}
        env |= {"PYTHONPATH": str(PACKAGE_ROOT), "PIXMAKE_BASE_URL": server.url, "TOAPIS_API_KEY": TEST_KEY}
        command = [sys.executable, "-m", "pixmake", "-C", str(examples_copy), "build"]
        refused = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
        assert refused.returncode == 1, refused.stderr
        assert refused.stderr.splitlines()[-1] == (
            f"pixmake: error: cannot reach {server.url} (TLS certificate not trusted: unable to get local issuer "
            "certificate); if a company proxy inspects TLS, point SSL_CERT_FILE at its CA bundle"
        )
        assert TEST_KEY not in refused.stderr
        assert server.emulator.requests == []  # not one request arrived: the key never left this machine
        trusted = subprocess.run(
            command, env=env | {"SSL_CERT_FILE": str(ca_file)}, capture_output=True, text=True, timeout=120
        )
        assert trusted.returncode == 0, trusted.stderr
        assert server.emulator.ledger.charged_images == 5
        assert (examples_copy / "assets/hero-2.png").is_file()


def test_build_emulator_takes_the_callback_url_a_project_sends(tmp_path: Path) -> None:
    """The real API refuses callback_url unless the Token has webhooks; a project sending one has them."""
    (tmp_path / "pixmake.yaml").write_text(
        "version: 1\ntargets:\n  hero:\n    prompt: a mug\n    out: hero.png\n"
        "    params: {callback_url: 'https://hooks.example.com/pixmake'}\n"
    )
    outcome = run_cli("-C", str(tmp_path), "build", "--emulator")
    assert outcome.exit_code == 0, outcome.stderr
    assert (tmp_path / "hero.png").exists()


def test_a_file_saved_since_the_plan_is_kept_as_someones_not_as_an_image_pixmake_made(tmp_path: Path) -> None:
    """The plan saw another target's image there (outs swapped); the build finds a file saved meanwhile."""
    from pixmake import api
    from pixmake.plan import Action, ActionKind, Reason
    from pixmake.store import sha256_bytes

    (tmp_path / "pixmake.yaml").write_text("version: 1\ntargets: {}\n")
    (tmp_path / "out").mkdir()
    saved = b"the user's own file, saved after the plan"
    (tmp_path / "out/b.png").write_bytes(saved)
    project = api.open_project(tmp_path)
    seen = Reason("output-replaced", "", {"path": "out/b.png", "locked": "0" * 64, "actual": "1" * 64})
    api._keep_replaced_files(project, [Action(ActionKind.RESTORE, "a", (seen,))])
    assert project.objects.has(sha256_bytes(saved)) and not project.objects.made_by_pixmake(sha256_bytes(saved))


def test_every_file_is_opened_in_binary_mode_where_descriptors_default_to_text(
    examples_copy: Path, provider_env: EmulatorServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Windows' C runtime opens a descriptor in text mode unless asked for O_BINARY, and writes each b"\\n"
    as b"\\r\\n": every image, the lock and the journal would come out damaged. Simulated: a platform with
    an O_BINARY flag, whose descriptors opened without it translate what is written through them."""
    o_binary = 1 << 30  # a bit Linux's open(2) ignores
    monkeypatch.setattr(os, "O_BINARY", o_binary, raising=False)
    opened_as_text: list[str] = []
    text: set[int] = set()
    real_open, real_write, real_close = os.open, os.write, os.close

    def open_(path: str, flags: int, mode: int = 0o777, *, dir_fd: int | None = None) -> int:
        fd = real_open(path, flags, mode, dir_fd=dir_fd)
        text.discard(fd)
        if not flags & o_binary and not os.path.isdir(path if dir_fd is None else fd):
            text.add(fd)
            opened_as_text.append(os.fspath(path))
        return fd

    def write(fd: int, data: bytes) -> int:
        if fd in text:
            real_write(fd, bytes(data).replace(b"\n", b"\r\n"))
            return len(data)
        return real_write(fd, data)

    def writev(fd: int, buffers: list[bytes]) -> int:
        return sum(write(fd, buffer) for buffer in buffers)

    def close(fd: int) -> None:
        text.discard(fd)
        real_close(fd)

    monkeypatch.setattr(os, "open", open_)
    monkeypatch.setattr(os, "write", write)
    monkeypatch.setattr(os, "writev", writev, raising=False)
    monkeypatch.setattr(os, "close", close)
    outcome = run_cli("-C", str(examples_copy), "build")
    assert outcome.exit_code == 0, outcome.stderr
    holds_no_bytes = {os.devnull, str(examples_copy / ".pixmake/build.lock")}  # filelock's
    assert [path for path in opened_as_text if path not in holds_no_bytes] == []
    for image in (examples_copy / "assets").glob("*.png"):
        with Image.open(image) as decoded:
            decoded.load()
    plan = run_cli("-C", str(examples_copy), "plan", "--check")
    assert plan.exit_code == 0, plan.stdout + plan.stderr


def test_a_prune_after_a_new_output_layout_leaves_no_empty_folders(examples_copy: Path) -> None:
    """The review (a studio): moving every out to a new layout, then `build --prune`, left the old folders
    empty. Folders that still hold anything stay, and so does a symlinked folder's target."""
    assert run_cli("-C", str(examples_copy), "build", "--emulator").exit_code == 0
    (examples_copy / "assets/notes.txt").write_text("keep me")
    manifest = examples_copy / "pixmake.yaml"
    manifest.write_text(manifest.read_text().replace("out: assets/", "out: art/v2/"))
    (examples_copy / "old/deep").mkdir(parents=True)
    outcome = run_cli("-C", str(examples_copy), "build", "--emulator", "--prune")
    assert outcome.exit_code == 0, outcome.stderr
    assert sorted(p.name for p in (examples_copy / "assets").iterdir()) == ["notes.txt"]
    assert (examples_copy / "old/deep").is_dir()  # not pixmake's to remove
    (examples_copy / "real").mkdir()
    (examples_copy / "shots").symlink_to("real")
    manifest.write_text(manifest.read_text().replace("out: art/v2/", "out: shots/"))
    assert run_cli("-C", str(examples_copy), "build", "--emulator", "--prune").exit_code == 0
    assert not (examples_copy / "art").exists() and any((examples_copy / "real").iterdir())
    manifest.write_text(manifest.read_text().replace("out: shots/", "out: art/v3/"))
    assert run_cli("-C", str(examples_copy), "build", "--emulator", "--prune").exit_code == 0
    assert (examples_copy / "real").is_dir() and not any((examples_copy / "real").iterdir())  # the link's target


def test_a_fifo_at_an_orphans_output_is_kept_not_waited_on_by_prune(examples_copy: Path) -> None:
    """The diff review: a FIFO at an orphan's output hung build --prune until SIGTERM."""
    assert run_cli("-C", str(examples_copy), "build", "--emulator").exit_code == 0
    manifest = examples_copy / "pixmake.yaml"
    manifest.write_text(manifest.read_text().replace("  logo-tile:", "  logo-tile-v2:"))
    output = examples_copy / "assets" / "logo-tile.png"
    manifest.write_text(manifest.read_text().replace("out: assets/logo-tile.png", "out: assets/logo-tile-v2.png"))
    output.unlink()
    os.mkfifo(output)
    outcome = run_cli("-C", str(examples_copy), "build", "--emulator", "--prune")
    assert outcome.exit_code == 0, outcome.stderr
    assert "not a file (a FIFO, a socket or a device)" in outcome.stderr + outcome.stdout
    assert output.is_fifo()
