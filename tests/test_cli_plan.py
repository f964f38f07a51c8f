"""plan, explain, accept and target selection, end to end over real HTTP to the emulator on 127.0.0.1."""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from PIL import Image

from conftest import PACKAGE_ROOT, git, journal_submit, run_cli, write_png
from pixmake import api
from pixmake.cli import ExitCode
from pixmake.emulator import EmulatorServer
from pixmake.lockfile import parse_lock
from pixmake.store import ObjectCache


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file except pixmake's local state."""
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and ".pixmake" not in p.parts
    }


def built(root: Path) -> Path:
    outcome = run_cli("-C", str(root), "build")
    assert outcome.exit_code == 0, outcome.stderr
    return root


def plan(root: Path, *args: str) -> tuple[int, list[str]]:
    outcome = run_cli("-C", str(root), "plan", *args)
    assert "Traceback" not in outcome.stderr, outcome.stderr
    return outcome.exit_code, outcome.stdout.splitlines()


def lock_prompt(root: Path, name: str) -> str:
    return parse_lock((root / "pixmake.lock").read_text()).entries[name].prompt


def edit_manifest(root: Path, change: dict[str, object], *, drop: str | None = None) -> None:
    path = root / "pixmake.yaml"
    document = yaml.safe_load(path.read_text())
    for name, fields in change.items():
        document["targets"].setdefault(name, {}).update(fields)
    if drop:
        del document["targets"][drop]
    path.write_text(yaml.safe_dump(document, sort_keys=False))


def test_plan_shows_each_change_with_its_reasons_then_a_summary(examples_copy: Path) -> None:
    code, lines = plan(examples_copy)
    assert code == 0
    assert lines == [
        "+ create     logo-tile: not in the lockfile",
        "+ create     hero: not in the lockfile",
        "+ create     mug-lifestyle: not in the lockfile",
        "+ create     mug-marble: not in the lockfile",
        "Plan: 4 to create; 5 images to generate",
    ]


def test_plan_check_needs_no_key_and_no_network(examples_copy: Path, emulator: EmulatorServer) -> None:
    os.environ["PIXMAKE_BASE_URL"] = emulator.url  # removed again by the autouse clean_environ fixture
    assert plan(examples_copy, "--check")[0] == ExitCode.CHANGES
    assert emulator.emulator.requests == []


def test_after_a_build_plan_is_all_unchanged_and_check_passes(
    examples_copy: Path, provider_env: EmulatorServer
) -> None:
    built(examples_copy)
    for _ in range(2):  # the second plan is answered by the no-op memo: same answer
        code, lines = plan(examples_copy, "--check")
        assert (code, lines) == (0, ["Plan: 4 unchanged; 0 images to generate"])
    code, lines = plan(examples_copy, "-v")
    names = ["logo-tile", "hero", "mug-lifestyle", "mug-marble"]
    assert lines[:4] == [f"  unchanged  {name}" for name in names]


def test_plan_writes_neither_the_lockfile_nor_outputs(examples_copy: Path, provider_env: EmulatorServer) -> None:
    built(examples_copy)
    (examples_copy / "assets/hero-1.png").unlink()
    edit_manifest(examples_copy, {"logo-tile": {"prompt": "A round logo"}}, drop="mug-marble")
    before = snapshot(examples_copy)
    assert plan(examples_copy, "--check")[0] == ExitCode.CHANGES
    assert plan(examples_copy, "--json")[0] == 0
    assert snapshot(examples_copy) == before


def test_json_plan_for_machines(examples_copy: Path, provider_env: EmulatorServer) -> None:
    built(examples_copy)
    edit_manifest(examples_copy, {"hero": {"prompt": "Premium ad of a red ceramic mug on a wooden table, ${style}"}})
    outcome = run_cli("-C", str(examples_copy), "plan", "--json")
    document = json.loads(outcome.stdout)
    assert document["counts"] == {"regenerate": 1, "unchanged": 3} and document["images"] == 2
    (hero,) = [a for a in document["actions"] if a["action"] != "unchanged"]
    assert hero["target"] == "hero" and hero["images"] == 2 and len(hero["key"]) == 64
    (reason,) = hero["reasons"]
    assert reason == {
        "code": "prompt-changed",
        "text": "prompt changed: -[product] -[image] -[blue] +[red]",
        "details": {"old": lock_prompt(examples_copy, "hero"), "new": reason["details"]["new"]},
    }
    assert reason["details"]["new"].startswith("Premium ad of a red ceramic mug")


def test_reference_change_names_the_file_and_hashes(examples_copy: Path, provider_env: EmulatorServer) -> None:
    built(examples_copy)
    with Image.open(examples_copy / "photos/mug.png") as photo:
        photo.load()
        photo.putpixel((0, 0), (1, 2, 3))
        photo.save(examples_copy / "photos/mug.png")
    code, lines = plan(examples_copy, "--check")
    assert code == ExitCode.CHANGES
    assert [line.split(":")[0] for line in lines[:-1]] == ["~ regenerate mug-lifestyle", "~ regenerate mug-marble"]
    assert all("reference photos/mug.png changed (" in line and " → " in line for line in lines[:-1])


def test_explain_prints_the_key_document_and_what_differs(examples_copy: Path, provider_env: EmulatorServer) -> None:
    built(examples_copy)
    edit_manifest(examples_copy, {"mug-marble": {"size": "1:1"}})
    outcome = run_cli("-C", str(examples_copy), "explain", "mug-marble")
    assert outcome.exit_code == 0, outcome.stderr
    assert outcome.stdout.startswith("target mug-marble\n  made by  ") and "\n  key      " in outcome.stdout
    for needle in ['"prompt": "Replace the background', '"size": "1:1"', '"mask": "', "action   regenerate"]:
        assert needle in outcome.stdout
    assert "    - size 2:3 → 1:1" in outcome.stdout
    as_json = json.loads(run_cli("-C", str(examples_copy), "explain", "mug-marble", "--json").stdout)
    lock = parse_lock((examples_copy / "pixmake.lock").read_text())
    assert as_json["locked_key"] == lock.entries["mug-marble"].key != as_json["key"]
    assert as_json["document"]["references"] == [lock.entries["mug-marble"].references[0].sha256]
    unknown = run_cli("-C", str(examples_copy), "explain", "nope")
    assert unknown.exit_code == ExitCode.USER_ERROR and "no target named 'nope'" in unknown.stderr
    edit_manifest(examples_copy, {"twin": {"prompt": "a twin", "out": "assets/twin.png"}})
    edit_manifest(examples_copy, {"twin-2": {"prompt": "a twin", "out": "assets/twin-2.png"}})
    twin = run_cli("-C", str(examples_copy), "explain", "twin-2").stdout
    assert "action   restore" in twin and "same inputs as target 'twin'" in twin  # as plan says: not "create"


def test_selection_by_name_glob_and_tag(examples_copy: Path, provider_env: EmulatorServer) -> None:
    assert plan(examples_copy, "mug-*")[1][-1] == "Plan: 2 to create; 2 images to generate"
    assert plan(examples_copy, "--tag", "brand")[1] == [
        "+ create     logo-tile: not in the lockfile",
        "Plan: 1 to create; 1 image to generate",
    ]
    outcome = run_cli("-C", str(examples_copy), "build", "logo-tile", "mug-*")
    assert outcome.exit_code == 0, outcome.stderr
    assert len(provider_env.emulator.submits()) == 3
    assert sorted(parse_lock((examples_copy / "pixmake.lock").read_text()).entries) == [
        "logo-tile",
        "mug-lifestyle",
        "mug-marble",
    ]
    # Targets outside the selection were neither built nor reported as orphans; the whole plan shows hero.
    assert plan(examples_copy, "--tag", "brand", "--check")[0] == 0
    assert plan(examples_copy)[1][0] == "+ create     hero: not in the lockfile"
    typo = run_cli("-C", str(examples_copy), "build", "mug-marbel")
    assert typo.exit_code == ExitCode.USER_ERROR and "no target matches 'mug-marbel'" in typo.stderr


def test_missing_output_is_restored_for_free(examples_copy: Path, provider_env: EmulatorServer) -> None:
    built(examples_copy)
    before = (examples_copy / "assets/hero-2.png").read_bytes()
    (examples_copy / "assets/hero-2.png").unlink()
    assert plan(examples_copy)[1][0] == "< restore    hero: output assets/hero-2.png is missing"
    submits = len(provider_env.emulator.submits())
    built(examples_copy)
    assert len(provider_env.emulator.submits()) == submits
    assert (examples_copy / "assets/hero-2.png").read_bytes() == before


def test_edited_output_is_kept_and_warned_restore_puts_it_back(
    examples_copy: Path, provider_env: EmulatorServer
) -> None:
    built(examples_copy)
    logo = examples_copy / "assets/logo-tile.png"
    locked = logo.read_bytes()
    write_png(logo, (32, 32), (0, 200, 0))
    retouched = logo.read_bytes()
    code, lines = plan(examples_copy, "--check")
    assert code == 0  # nothing would be paid for or written
    assert lines[0].startswith("! edited     logo-tile: output assets/logo-tile.png differs from the lock")
    outcome = run_cli("-C", str(examples_copy), "build")
    assert outcome.exit_code == 0 and "edited" in outcome.stderr
    assert logo.read_bytes() == retouched
    assert run_cli("-C", str(examples_copy), "build", "--restore").exit_code == 0
    assert logo.read_bytes() == locked
    objects = ObjectCache(examples_copy / ".pixmake" / "objects")  # the retouch is not lost for good
    assert objects.path(hashlib.sha256(retouched).hexdigest()).read_bytes() == retouched


def test_swapped_outs_are_put_back_for_free_not_taken_for_hand_edits(
    examples_copy: Path, provider_env: EmulatorServer
) -> None:
    built(examples_copy)
    lifestyle, marble = examples_copy / "assets/mug-lifestyle.png", examples_copy / "assets/mug-marble.png"
    images = {"mug-lifestyle": lifestyle.read_bytes(), "mug-marble": marble.read_bytes()}
    edit_manifest(examples_copy, {"mug-lifestyle": {"out": str(marble.relative_to(examples_copy))}})
    edit_manifest(examples_copy, {"mug-marble": {"out": str(lifestyle.relative_to(examples_copy))}})
    code, lines = plan(examples_copy, "--check")
    assert code == ExitCode.CHANGES  # a build would write: the wrong image stands at each path
    assert lines[:2] == [
        f"< restore    {name}: output {path} holds another image pixmake made (outs moved or swapped? a branch switch?)"
        f"; pixmake -C {examples_copy} accept {name} keeps it instead"
        for name, path in (("mug-lifestyle", "assets/mug-marble.png"), ("mug-marble", "assets/mug-lifestyle.png"))
    ]
    submits = len(provider_env.emulator.submits())
    built(examples_copy)
    assert len(provider_env.emulator.submits()) == submits  # nothing paid
    assert (marble.read_bytes(), lifestyle.read_bytes()) == (images["mug-lifestyle"], images["mug-marble"])
    assert plan(examples_copy, "--check")[0] == 0


def test_in_a_fresh_clone_swapped_prompts_swap_the_images_in_place_for_free(
    examples_copy: Path, provider_env: EmulatorServer
) -> None:
    """The twins' images are only on disk (no object cache): each restore must not read a file another
    restore already overwrote."""
    built(examples_copy)
    shutil.rmtree(examples_copy / ".pixmake")  # a fresh clone with the outputs committed
    manifest = examples_copy / "pixmake.yaml"
    document = yaml.safe_load(manifest.read_text())
    lifestyle, marble = document["targets"]["mug-lifestyle"], document["targets"]["mug-marble"]
    for field in ("prompt", "mask", "size"):
        lifestyle[field], marble[field] = marble.get(field), lifestyle.get(field)
    for target in (lifestyle, marble):
        for field in [f for f, v in target.items() if v is None]:
            del target[field]
    manifest.write_text(yaml.safe_dump(document, sort_keys=False))
    files = examples_copy / "assets/mug-lifestyle.png", examples_copy / "assets/mug-marble.png"
    images = [f.read_bytes() for f in files]
    submits = len(provider_env.emulator.submits())
    built(examples_copy)
    assert len(provider_env.emulator.submits()) == submits
    assert [f.read_bytes() for f in files] == images[::-1]


def test_in_a_fresh_clone_swapped_outs_swap_the_images_even_when_one_is_nowhere_else(
    examples_copy: Path, provider_env: EmulatorServer
) -> None:
    """mug-lifestyle's image is only at its old out, which logo-tile's restore overwrites: it is cached first."""
    built(examples_copy)
    shutil.rmtree(examples_copy / ".pixmake")  # a fresh clone: no image cached
    lifestyle, logo = examples_copy / "assets/mug-lifestyle.png", examples_copy / "assets/logo-tile.png"
    only_copy = lifestyle.read_bytes()
    manifest = examples_copy / "pixmake.yaml"
    manifest.write_text(manifest.read_text().replace("two colours", "three colours"))
    built(examples_copy)  # only the new logo is cached
    new_logo = logo.read_bytes()
    edit_manifest(examples_copy, {"logo-tile": {"out": "assets/mug-lifestyle.png"}})
    edit_manifest(examples_copy, {"mug-lifestyle": {"out": "assets/logo-tile.png"}})
    submits = len(provider_env.emulator.submits())
    built(examples_copy)
    assert len(provider_env.emulator.submits()) == submits
    assert (lifestyle.read_bytes(), logo.read_bytes()) == (new_logo, only_copy)
    assert plan(examples_copy, "--check")[0] == 0


def test_in_a_fresh_clone_a_renamed_out_is_moved_for_free(examples_copy: Path, provider_env: EmulatorServer) -> None:
    """A CI runner's clone has the committed image at the old path and nothing cached: it paid again."""
    built(examples_copy)
    shutil.rmtree(examples_copy / ".pixmake")
    image = (examples_copy / "assets/logo-tile.png").read_bytes()
    edit_manifest(examples_copy, {"logo-tile": {"out": "brand/logo.png"}})
    assert plan(examples_copy)[1][0].startswith("< restore    logo-tile: output brand/logo.png is missing")
    submits = len(provider_env.emulator.submits())
    built(examples_copy)
    assert len(provider_env.emulator.submits()) == submits
    assert (examples_copy / "brand/logo.png").read_bytes() == image


def test_an_orphans_only_image_that_a_restore_overwrites_is_kept_in_the_cache(
    examples_copy: Path, provider_env: EmulatorServer
) -> None:
    built(examples_copy)
    shutil.rmtree(examples_copy / ".pixmake")
    lifestyle = examples_copy / "assets/mug-lifestyle.png"
    only_copy = hashlib.sha256(lifestyle.read_bytes()).hexdigest()
    manifest = examples_copy / "pixmake.yaml"
    manifest.write_text(manifest.read_text().replace("two colours", "three colours"))
    built(examples_copy)  # the new logo is cached
    edit_manifest(examples_copy, {"logo-tile": {"out": "assets/mug-lifestyle.png"}}, drop="mug-lifestyle")
    built(examples_copy)
    assert lifestyle.read_bytes() == (examples_copy / "assets/logo-tile.png").read_bytes()  # the logo, restored
    assert (examples_copy / ".pixmake/objects" / only_copy[:2] / only_copy).is_file()  # the orphan's image, kept


def test_a_branch_switch_with_outputs_not_committed_restores_the_images_for_free(
    examples_copy: Path, provider_env: EmulatorServer
) -> None:
    built(examples_copy)
    manifest, lockfile = examples_copy / "pixmake.yaml", examples_copy / "pixmake.lock"
    main_branch = manifest.read_bytes(), lockfile.read_bytes()
    logo = examples_copy / "assets/logo-tile.png"
    locked = logo.read_bytes()
    manifest.write_text(manifest.read_text().replace("two colours", "three colours"))
    built(examples_copy)  # the feature branch pays for its logo
    manifest.write_bytes(main_branch[0])  # git switch main: the lock and manifest change, the outputs stay
    lockfile.write_bytes(main_branch[1])
    assert plan(examples_copy)[1][0] == (
        "< restore    logo-tile: output assets/logo-tile.png holds another image pixmake made "
        f"(outs moved or swapped? a branch switch?); pixmake -C {examples_copy} accept logo-tile keeps it instead"
    )
    submits = len(provider_env.emulator.submits())
    built(examples_copy)
    assert len(provider_env.emulator.submits()) == submits and logo.read_bytes() == locked


def test_a_file_of_the_users_that_a_build_kept_is_still_a_hand_edit(
    examples_copy: Path, provider_env: EmulatorServer
) -> None:
    built(examples_copy)
    logo = examples_copy / "assets/logo-tile.png"
    write_png(logo, (32, 32), (0, 200, 0))
    retouched = logo.read_bytes()
    assert run_cli("-C", str(examples_copy), "build", "--replace", "logo-tile").exit_code == 0  # keeps it, then pays
    logo.write_bytes(retouched)  # the retouch brought back from a backup
    code, lines = plan(examples_copy, "--check")
    assert code == 0 and lines[0].startswith(
        "! edited     logo-tile: output assets/logo-tile.png differs from the lock"
    )
    built(examples_copy)
    assert logo.read_bytes() == retouched


def test_going_back_to_inputs_built_before_pays_nothing(examples_copy: Path, provider_env: EmulatorServer) -> None:
    built(examples_copy)
    manifest = examples_copy / "pixmake.yaml"
    logo = examples_copy / "assets/logo-tile.png"
    first, image = manifest.read_text(), logo.read_bytes()
    manifest.write_text(first.replace("two colours", "three colours"))
    built(examples_copy)  # pays for the new prompt
    manifest.write_text(first)  # and back
    assert plan(examples_copy)[1][0] == (
        "< restore    logo-tile: same inputs as an earlier build, whose images are in .pixmake/objects"
    )
    submits = len(provider_env.emulator.submits())
    built(examples_copy)
    assert len(provider_env.emulator.submits()) == submits and logo.read_bytes() == image
    assert plan(examples_copy, "--check")[0] == 0
    manifest.write_text(first.replace("two colours", "two bright colours"))  # the file kept for new inputs
    assert run_cli("-C", str(examples_copy), "accept", "logo-tile").exit_code == 0
    manifest.write_text(first)
    assert plan(examples_copy, "--check")[1][0].startswith("< restore    logo-tile: same inputs as an earlier build")
    built(examples_copy)
    edit_manifest(examples_copy, {}, drop="logo-tile")  # deleted, pruned, then brought back
    assert run_cli("-C", str(examples_copy), "build", "--prune").exit_code == 0 and not logo.exists()
    manifest.write_text(first)
    built(examples_copy)
    assert len(provider_env.emulator.submits()) == submits and logo.read_bytes() == image
    assert run_cli("-C", str(examples_copy), "build", "--replace", "logo-tile").exit_code == 0  # new images on purpose
    assert len(provider_env.emulator.submits()) == submits + 1
    assert run_cli("-C", str(examples_copy), "gc", "--keep-days", "0").exit_code == 0  # the earlier images go
    manifest.write_text(first.replace("two colours", "three colours"))
    assert plan(examples_copy)[1][0].startswith("~ regenerate logo-tile: prompt changed")
    remembered = [json.loads(line) for line in (examples_copy / ".pixmake/history.jsonl").read_text().splitlines()]
    assert "three colours" not in str(remembered)  # gc forgot the entries whose images it deleted
    assert all((examples_copy / ".pixmake/objects" / o["sha256"][:2] / o["sha256"]).exists()
               for e in remembered for o in e["outputs"])  # fmt: skip


def test_a_missing_output_beside_an_edited_one_is_put_back_and_the_edit_kept(
    examples_copy: Path, provider_env: EmulatorServer
) -> None:
    built(examples_copy)
    first, second = examples_copy / "assets/hero-1.png", examples_copy / "assets/hero-2.png"
    locked = second.read_bytes()
    write_png(first, (32, 32), (0, 200, 0))
    retouched = first.read_bytes()
    second.unlink()
    code, lines = plan(examples_copy, "--check")
    assert code == ExitCode.CHANGES and lines[0].startswith(
        "< restore    hero: output assets/hero-2.png is missing; output assets/hero-1.png differs from the lock"
    )
    outcome = run_cli("-C", str(examples_copy), "build")
    assert outcome.exit_code == 0 and "done       hero → assets/hero-2.png\n" in outcome.stderr  # what it wrote
    assert (first.read_bytes(), second.read_bytes()) == (retouched, locked)
    assert plan(examples_copy, "--check")[0] == 0  # the edit alone: shown, and left alone


def test_accept_records_the_edited_file_as_the_output(examples_copy: Path, provider_env: EmulatorServer) -> None:
    built(examples_copy)
    logo = examples_copy / "assets/logo-tile.png"
    write_png(logo, (32, 48), (0, 200, 0))
    outcome = run_cli("-C", str(examples_copy), "accept", "logo-tile")
    assert (outcome.exit_code, outcome.stdout) == (0, "accepted logo-tile: assets/logo-tile.png\n")
    (output,) = parse_lock((examples_copy / "pixmake.lock").read_text()).entries["logo-tile"].outputs
    assert (output.bytes, output.width, output.height) == (len(logo.read_bytes()), 32, 48)
    assert (examples_copy / ".pixmake/objects" / output.sha256[:2] / output.sha256).read_bytes() == logo.read_bytes()
    assert plan(examples_copy, "--check") == (0, ["Plan: 4 unchanged; 0 images to generate"])
    logo.unlink()  # the accepted bytes are restorable too
    assert plan(examples_copy)[1][0] == "< restore    logo-tile: output assets/logo-tile.png is missing"
    missing = run_cli("-C", str(examples_copy), "accept", "logo-tile")
    assert missing.exit_code == ExitCode.USER_ERROR and "does not exist" in missing.stderr


def test_accept_names_the_placeholders_it_locks_as_real_and_keeps_the_stale_outputs_recorded(
    examples_copy: Path,
) -> None:
    assert run_cli("-C", str(examples_copy), "build", "--emulator").exit_code == 0
    edit_manifest(examples_copy, {"logo-tile": {"out": "assets/logo.png"}})
    assert run_cli("-C", str(examples_copy), "build", "--emulator").exit_code == 0  # assets/logo-tile.png: stale
    write_png(examples_copy / "assets/hero-1.png", (48, 32), (0, 200, 0))  # hero-2.png stays the emulator's
    write_png(examples_copy / "assets/logo.png", (32, 32), (0, 200, 0))
    manifest = yaml.safe_load((examples_copy / "pixmake.yaml").read_text())
    manifest["targets"]["mug-main"] = manifest["targets"].pop("mug-lifestyle")  # renamed: a twin, unedited
    (examples_copy / "pixmake.yaml").write_text(yaml.safe_dump(manifest, sort_keys=False))
    assert run_cli("-C", str(examples_copy), "build", "--emulator").exit_code == 0
    lock_before = (examples_copy / "pixmake.lock").read_bytes()
    refused = run_cli("-C", str(examples_copy), "accept", "hero", "logo-tile", "mug-main")
    assert refused.exit_code == ExitCode.USER_ERROR and refused.stderr == (
        "pixmake: error: accept: mug-main's files are build --emulator's placeholders, untouched: nothing to keep "
        "(accept would lock them as real; a build without --emulator generates the images)\n"
    )
    assert (examples_copy / "pixmake.lock").read_bytes() == lock_before  # nothing accepted
    outcome = run_cli("-C", str(examples_copy), "accept", "hero", "logo-tile")
    assert outcome.exit_code == 0 and outcome.stderr.splitlines() == [
        "pixmake: note: assets/hero-2.png is still a placeholder from build --emulator, now locked as hero's: "
        f"pixmake -C {examples_copy} build hero --replace hero (without --emulator) generates all its images anew, "
        "the ones you kept too",
    ]
    entries = parse_lock((examples_copy / "pixmake.lock").read_text()).entries
    assert not any(entries[name].emulator for name in ("hero", "logo-tile"))  # the user's word
    assert entries["mug-main"].emulator
    assert [o.path for o in entries["logo-tile"].stale] == ["assets/logo-tile.png"]
    assert run_cli("-C", str(examples_copy), "build", "--emulator", "--prune").exit_code == 0
    assert not (examples_copy / "assets/logo-tile.png").exists()


def test_accept_refuses_a_placeholder_only_the_history_knows(tmp_path: Path, provider_env: EmulatorServer) -> None:
    """After a merge conflict kept the provider's entry, `git checkout --theirs` can put the other side's
    placeholder back: the lock no longer says it is one, but the history does."""
    from pixmake.history import remember

    (tmp_path / "pixmake.yaml").write_text("version: 1\ntargets:\n  hero: {prompt: a mug, out: hero.png}\n")
    assert run_cli("-C", str(tmp_path), "build", "--emulator").exit_code == 0
    placeholder = (tmp_path / "hero.png").read_bytes()
    theirs = parse_lock((tmp_path / "pixmake.lock").read_text()).entries["hero"]  # a branch built it so
    assert run_cli("-C", str(tmp_path), "build").exit_code == 0  # ours: the provider's images
    remember(tmp_path / ".pixmake/history.jsonl", [theirs])  # what merge-lock sets aside in a conflict
    (tmp_path / "hero.png").write_bytes(placeholder)  # git checkout --theirs hero.png
    refused = run_cli("-C", str(tmp_path), "accept", "hero")
    assert refused.exit_code == ExitCode.USER_ERROR and "placeholders, untouched" in refused.stderr


def test_accept_after_an_input_changed_says_the_files_now_stand_for_the_new_inputs(
    examples_copy: Path, provider_env: EmulatorServer
) -> None:
    built(examples_copy)
    edit_manifest(examples_copy, {"hero": {"prompt": "Premium ad of a red ceramic mug on a wooden table, ${style}"}})
    outcome = run_cli("-C", str(examples_copy), "accept", "hero", "logo-tile")
    assert outcome.exit_code == 0
    assert outcome.stdout.splitlines() == [  # in manifest order
        "accepted logo-tile: assets/logo-tile.png",
        "accepted hero: assets/hero-1.png, assets/hero-2.png",
    ]
    assert outcome.stderr.splitlines() == [
        "pixmake: note: hero's inputs differ from the lock's (its prompt, a reference or a parameter changed): "
        "these files now stand for the current ones, and nothing is regenerated"
    ]
    assert plan(examples_copy, "--check") == (0, ["Plan: 4 unchanged; 0 images to generate"])


def test_accept_says_a_journaled_paid_task_for_the_current_inputs_will_replace_the_files(
    examples_copy: Path, provider_env: EmulatorServer
) -> None:
    built(examples_copy)
    edit_manifest(examples_copy, {"hero": {"prompt": "Premium ad of a red ceramic mug on a wooden table, ${style}"}})
    journal_submit(examples_copy, "hero", "pixmake-red-mug-0")  # an interrupted build paid for the red mug
    outcome = run_cli("-C", str(examples_copy), "accept", "hero")
    assert outcome.exit_code == 0 and outcome.stderr.splitlines() == [
        "pixmake: note: a paid task for hero's current inputs is journaled (an interrupted build): "
        "the next build collects it and replaces these files"
    ]


def test_orphans_are_kept_until_prune_which_stays_inside_the_root(
    examples_copy: Path, provider_env: EmulatorServer, tmp_path: Path
) -> None:
    built(examples_copy)
    edit_manifest(examples_copy, {}, drop="mug-lifestyle")
    code, lines = plan(examples_copy, "--check")
    assert code == ExitCode.CHANGES
    assert lines[0] == (
        "- orphan     mug-lifestyle: no longer in the manifest; build --prune deletes assets/mug-lifestyle.png"
    )
    assert run_cli("-C", str(examples_copy), "build").exit_code == 0
    assert (examples_copy / "assets/mug-lifestyle.png").exists()
    assert "mug-lifestyle" in parse_lock((examples_copy / "pixmake.lock").read_text()).entries
    refused = run_cli("-C", str(examples_copy), "build", "--prune", "hero")
    assert refused.exit_code == ExitCode.USER_ERROR
    outcome = run_cli("-C", str(examples_copy), "build", "--prune")
    assert outcome.exit_code == 0, outcome.stderr
    assert "pruned assets/mug-lifestyle.png" in outcome.stderr
    assert not (examples_copy / "assets/mug-lifestyle.png").exists()
    assert "mug-lifestyle" not in parse_lock((examples_copy / "pixmake.lock").read_text()).entries
    assert plan(examples_copy, "--check")[0] == 0
    assert json.loads(run_cli("-C", str(examples_copy), "plan", "--json").stdout)["up_to_date"] is True


def test_a_lock_path_outside_the_root_is_refused_and_never_deleted(
    examples_copy: Path, provider_env: EmulatorServer
) -> None:
    built(examples_copy)
    outside = examples_copy.parent / "outside.png"
    outside.write_bytes(b"not yours")
    lock_path = examples_copy / "pixmake.lock"
    text = lock_path.read_text().replace('"path": "assets/mug-lifestyle.png"', '"path": "../outside.png"')
    lock_path.write_text(text)
    edit_manifest(examples_copy, {}, drop="mug-lifestyle")
    outcome = run_cli("-C", str(examples_copy), "build", "--prune")
    assert outcome.exit_code == ExitCode.USER_ERROR
    assert 'output path "../outside.png" is not one pixmake writes' in outcome.stderr
    assert outside.read_bytes() == b"not yours"


def test_prune_keeps_edited_files_and_files_a_current_target_writes(
    examples_copy: Path, provider_env: EmulatorServer
) -> None:
    built(examples_copy)
    write_png(examples_copy / "assets/mug-lifestyle.png", (8, 8), (9, 9, 9))  # retouched, then orphaned
    edit_manifest(examples_copy, {"mug-marble": {"out": "assets/hero-1.png"}}, drop="hero")  # takes over a path
    edit_manifest(examples_copy, {}, drop="mug-lifestyle")
    assert run_cli("-C", str(examples_copy), "build").exit_code == 0
    outcome = run_cli("-C", str(examples_copy), "build", "--prune")
    assert outcome.exit_code == 0, outcome.stderr
    assert "kept assets/mug-lifestyle.png: differs from the lock (edited?)" in outcome.stderr
    assert "kept assets/hero-1.png: a current target writes or reads it" in outcome.stderr
    assert "pruned assets/hero-2.png" in outcome.stderr
    assert (examples_copy / "assets/mug-lifestyle.png").exists() and (examples_copy / "assets/hero-1.png").exists()
    assert not (examples_copy / "assets/hero-2.png").exists()
    assert sorted(parse_lock((examples_copy / "pixmake.lock").read_text()).entries) == ["logo-tile", "mug-marble"]


def test_replace_rerolls_one_target_on_purpose(examples_copy: Path, provider_env: EmulatorServer) -> None:
    built(examples_copy)
    assert plan(examples_copy, "--replace", "logo-tile")[1][0] == "~ regenerate logo-tile: replacement requested"
    submits = len(provider_env.emulator.submits())
    assert run_cli("-C", str(examples_copy), "build", "--replace", "logo-tile").exit_code == 0
    assert len(provider_env.emulator.submits()) == submits + 1


def test_the_no_op_memo_never_hides_a_change(examples_copy: Path, provider_env: EmulatorServer) -> None:
    built(examples_copy)
    assert plan(examples_copy, "--check")[0] == 0
    assert (examples_copy / ".pixmake/noop.memo").exists()
    ref = examples_copy / "photos/mug.png"
    st = ref.stat()
    data = bytearray(ref.read_bytes())
    data[-20] ^= 1  # same size, same mtime: only ctime tells
    ref.write_bytes(bytes(data))
    os.utime(ref, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert plan(examples_copy, "--check")[0] == ExitCode.CHANGES
    ref.write_bytes(bytes(data[:-20]) + bytes([data[-20] ^ 1]) + bytes(data[-19:]))
    assert plan(examples_copy, "--check")[0] == 0
    lock = examples_copy / "pixmake.lock"
    key = parse_lock(lock.read_text()).entries["logo-tile"].key
    lock.write_text(lock.read_text().replace(key, "0" * 64))  # as after a git checkout of an older lock
    assert plan(examples_copy, "--check")[0] == ExitCode.CHANGES
    edit_manifest(examples_copy, {})  # rewritten, same content: still a valid plan
    assert plan(examples_copy, "--check")[0] == ExitCode.CHANGES


def _flip_a_bit_in(path: Path, inside: bytes) -> None:
    """What a bad disk sector or RAM does: one bit of ``inside``, where it occurs in ``path``, changed."""
    data = bytearray(path.read_bytes())
    at = data.index(inside) + len(inside) // 2
    data[at] ^= 0x10
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("cache", ["statcache", "manifest.cache", "lock.cache"])
def test_a_flipped_bit_in_a_cache_is_never_a_wrong_plan(
    examples_copy: Path, provider_env: EmulatorServer, cache: str
) -> None:
    """A wrong hash, prompt or key read from a cache would plan a paid regeneration of what is built."""
    built(examples_copy)
    assert plan(examples_copy, "--check")[0] == 0
    state = examples_copy / ".pixmake"
    (state / "noop.memo").unlink()  # else the memo answers without reading the caches
    if cache == "statcache":
        inside = hashlib.sha256((examples_copy / "photos/mug.png").read_bytes()).digest()
    elif cache == "manifest.cache":
        inside = b"two colours"
    else:
        inside = parse_lock((examples_copy / "pixmake.lock").read_text()).entries["logo-tile"].key.encode()
    _flip_a_bit_in(state / cache, inside)
    assert plan(examples_copy, "--check") == (0, ["Plan: 4 unchanged; 0 images to generate"])


def test_a_flipped_bit_in_the_no_op_memo_is_never_its_answer(examples_copy: Path, provider_env: EmulatorServer) -> None:
    from pixmake.memo import check_memo

    project = api.open_project(examples_copy)
    built(examples_copy)
    api.plan(project)
    memo = project.state_dir / "noop.memo"
    assert check_memo(memo, root=project.root, manifest=project.manifest) is not None
    key = parse_lock((examples_copy / "pixmake.lock").read_text()).entries["logo-tile"].key
    _flip_a_bit_in(memo, bytes.fromhex(key))
    assert check_memo(memo, root=project.root, manifest=project.manifest) is None


def test_an_output_left_a_git_lfs_pointer_is_never_paid_for_again(
    examples_copy: Path, provider_env: EmulatorServer
) -> None:
    """A CI checkout without `git lfs pull` holds pointer files where the committed images are."""
    built(examples_copy)
    logo = examples_copy / "assets/logo-tile.png"
    data = logo.read_bytes()
    sha = hashlib.sha256(data).hexdigest()
    logo.write_text(f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha}\nsize {len(data)}\n")
    assert plan(examples_copy)[1][0] == (
        "< restore    logo-tile: output assets/logo-tile.png is a Git LFS pointer, not the image (git lfs pull "
        "fetches it)"
    )  # cached here: put back for free
    (examples_copy / ".pixmake/objects" / sha[:2] / sha).unlink()  # a fresh runner
    for command in (("plan", "--check"), ("build",)):
        outcome = run_cli("-C", str(examples_copy), *command)
        assert outcome.exit_code == ExitCode.USER_ERROR and outcome.stderr == (
            "pixmake: error: assets/logo-tile.png: a Git LFS pointer, not the image, and not in .pixmake/objects: "
            f"run git -C {examples_copy} lfs pull (a build would pay to generate it again)\n"
        )
    logo.write_bytes(data)  # git lfs pull
    assert plan(examples_copy, "--check")[0] == 0


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_a_deleted_output_git_holds_in_lfs_is_never_paid_for_again(
    examples_copy: Path, provider_env: EmulatorServer
) -> None:
    """The diff review: in a clone, a deleted output whose committed blob is a Git LFS pointer was planned as
    a paid regenerate (the pointer is not the image's size, so it was not taken for it)."""
    built(examples_copy)
    logo = examples_copy / "assets/logo-tile.png"
    data = logo.read_bytes()
    sha = hashlib.sha256(data).hexdigest()
    logo.write_text(f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha}\nsize {len(data)}\n")
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "lfs"]):
        git(examples_copy, *args)
    logo.unlink()
    shutil.rmtree(examples_copy / ".pixmake")  # a fresh clone
    for command in (("plan", "--check"), ("build",)):
        outcome = run_cli("-C", str(examples_copy), *command)
        assert outcome.exit_code == ExitCode.USER_ERROR and outcome.stderr == (
            "pixmake: error: assets/logo-tile.png: missing, and held in Git LFS, and not in .pixmake/objects: run "
            f"git -C {examples_copy} checkout -- assets/logo-tile.png then git -C {examples_copy} lfs pull (a build "
            "would pay to "
            "generate it again)\n"
        )
    assert provider_env.emulator.ledger.charged_images == 5  # the first build's, no more


def test_no_op_plan_imports_neither_yaml_nor_the_build_stack(examples_copy: Path, provider_env: EmulatorServer) -> None:
    built(examples_copy)
    assert plan(examples_copy, "--check")[0] == 0
    code = (
        "import sys\n"
        "from pixmake.cli import main\n"
        "try:\n"
        f"    main(['-C', {str(examples_copy)!r}, 'plan', '--check'])\n"
        "except SystemExit as done:\n"
        "    assert done.code == 0, done.code\n"
        "heavy = [m for m in ('yaml', 'jsonschema', 'httpx', 'aiohttp', 'anyio', 'rich', 'PIL') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    env = {**os.environ, "PYTHONPATH": str(PACKAGE_ROOT)}
    subprocess.run([sys.executable, "-c", code], check=True, env=env, capture_output=True)


def test_manifest_cache_follows_the_manifest_and_its_catalogs(tmp_path: Path) -> None:
    """An unchanged YAML is not parsed again, but a changed catalog row or a touched manifest is seen."""
    (tmp_path / "pixmake.yaml").write_text(
        "version: 1\ntargets:\n  sku-${sku}:\n    rows: skus.csv\n    prompt: Studio shot of ${sku}\n"
        "    out: out/${sku}.png\n"
    )
    (tmp_path / "skus.csv").write_text("sku\na100\n")
    assert plan(tmp_path)[1] == ["+ create     sku-a100: not in the lockfile", "Plan: 1 to create; 1 image to generate"]
    assert (tmp_path / ".pixmake/manifest.cache").exists()
    assert plan(tmp_path)[1][-1] == "Plan: 1 to create; 1 image to generate"
    (tmp_path / "skus.csv").write_text("sku\na100\nb200\n")
    assert plan(tmp_path)[1][-1] == "Plan: 2 to create; 2 images to generate"
    manifest = tmp_path / "pixmake.yaml"
    manifest.write_text(manifest.read_text().replace("Studio shot", "Studio photo"))
    st = manifest.stat()
    os.utime(manifest, ns=(st.st_atime_ns, st.st_mtime_ns - 10**9))  # an older mtime must not fool it
    outcome = run_cli("-C", str(tmp_path), "plan", "--json")
    assert {a["target"] for a in json.loads(outcome.stdout)["actions"]} == {"sku-a100", "sku-b200"}
    explained = run_cli("-C", str(tmp_path), "explain", "sku-b200", "--json")
    assert json.loads(explained.stdout)["document"]["prompt"] == "Studio photo of b200"


def test_memo_and_caches_are_per_manifest(examples_copy: Path, provider_env: EmulatorServer) -> None:
    built(examples_copy)
    assert plan(examples_copy, "--check")[0] == 0
    other = examples_copy / "other.yaml"
    other.write_text((examples_copy / "pixmake.yaml").read_text().replace("two colours", "three colours"))
    outcome = run_cli("-C", str(examples_copy), "-f", "other.yaml", "plan", "--check")
    assert outcome.exit_code == ExitCode.CHANGES  # same root and lockfile, another manifest: not the memo's answer
    assert "~ regenerate logo-tile: prompt changed: -[two] +[three]" in outcome.stdout
    assert plan(examples_copy, "--check")[0] == 0


def test_memo_racy_rule_a_file_not_older_than_the_memo_is_planned_again(
    examples_copy: Path, provider_env: EmulatorServer
) -> None:
    from pixmake.memo import check_memo

    project = api.open_project(examples_copy)
    built(examples_copy)
    api.plan(project)
    memo = project.state_dir / "noop.memo"
    assert check_memo(memo, root=project.root, manifest=project.manifest) is not None
    written = memo.stat().st_mtime_ns
    logo = examples_copy / "assets/logo-tile.png"
    os.utime(logo, ns=(written, written))  # same tick as the memo: it may have changed unseen
    assert check_memo(memo, root=project.root, manifest=project.manifest) is None
    os.utime(memo, ns=(written + 10**9, written + 10**9))  # a later memo write settles it (as git's index)
    assert check_memo(memo, root=project.root, manifest=project.manifest) is None  # the stat changed anyway
    api.plan(project)  # re-verified by hash, and a fresh memo records the new stat
    assert check_memo(memo, root=project.root, manifest=project.manifest) is not None


def test_memo_a_folder_swapped_for_a_symlink_leading_outside_is_planned_again(
    examples_copy: Path, provider_env: EmulatorServer
) -> None:
    """Every file's stat holds (the folder was moved, not copied), but the root check must run again."""
    built(examples_copy)
    assert plan(examples_copy, "--check")[0] == 0
    assert plan(examples_copy, "--check")[0] == 0  # answered by the memo
    outside = examples_copy.parent / "outside"
    outside.mkdir()
    (examples_copy / "photos").rename(outside / "photos")
    (examples_copy / "photos").symlink_to(outside / "photos")
    outcome = run_cli("-C", str(examples_copy), "plan", "--check")
    assert outcome.exit_code == ExitCode.USER_ERROR and "outside the project" in outcome.stderr


def test_memo_a_stale_output_that_comes_back_is_planned_again(
    examples_copy: Path, provider_env: EmulatorServer
) -> None:
    built(examples_copy)
    old = examples_copy / "assets/logo-tile.png"
    edit_manifest(examples_copy, {"logo-tile": {"out": "assets/logo.png"}})
    built(examples_copy)  # the old file stays, recorded as a stale output
    kept = old.read_bytes()
    old.unlink()
    assert plan(examples_copy, "--check")[0] == 0
    assert plan(examples_copy, "--check")[0] == 0  # answered by the memo
    old.write_bytes(kept)  # git checkout, stash pop
    code, lines = plan(examples_copy, "--check")
    assert code == ExitCode.CHANGES and lines[-1].endswith("1 stale output to prune; 0 images to generate")


def test_a_file_already_at_an_out_path_is_named_by_the_plan_and_kept_by_the_build(
    examples_copy: Path, provider_env: EmulatorServer
) -> None:
    logo = examples_copy / "assets/logo-tile.png"
    write_png(logo, (16, 16), (1, 2, 3))  # someone's own file, there before the first build
    mine = logo.read_bytes()
    digest = hashlib.sha256(mine).hexdigest()
    lines = plan(examples_copy)[1]
    assert lines[0] == (
        "+ create     logo-tile: not in the lockfile; "
        f"will replace existing file assets/logo-tile.png (kept as .pixmake/objects/{digest[:2]}/{digest})"
    )  # where to find it again (the review: "kept in .pixmake/objects", among thousands of hashes)
    built(examples_copy)
    assert logo.read_bytes() != mine
    assert (examples_copy / ".pixmake/objects" / digest[:2] / digest).read_bytes() == mine
    kept = [p for p in (examples_copy / ".pixmake/objects").rglob("*") if p.is_file() and p.read_bytes() == mine]
    assert len(kept) == 1


def test_stale_outputs_after_a_rename_or_a_lower_n_are_planned_then_pruned(
    examples_copy: Path, provider_env: EmulatorServer
) -> None:
    built(examples_copy)
    old_logo = (examples_copy / "assets/logo-tile.png").read_bytes()
    edit_manifest(examples_copy, {"logo-tile": {"out": "assets/logo.png"}, "hero": {"n": 1}})
    code, lines = plan(examples_copy, "--check")
    assert code == ExitCode.CHANGES
    assert lines[:2] == [
        "< restore    logo-tile: output assets/logo.png is missing; "
        "output assets/logo-tile.png left over from an earlier out or n; build --prune deletes it",
        "< restore    hero: n 2 → 1: its first locked image is kept; output assets/hero.png is missing; "
        "outputs assets/hero-1.png, assets/hero-2.png left over from an earlier out or n; build --prune deletes them",
    ]
    built(examples_copy)  # without --prune the old files stay, and stay known
    assert (examples_copy / "assets/logo-tile.png").exists() and (examples_copy / "assets/hero-2.png").exists()
    code, lines = plan(examples_copy, "--check")
    assert code == ExitCode.CHANGES
    assert lines[-1] == "Plan: 4 unchanged, 3 stale outputs to prune; 0 images to generate"
    document = json.loads(run_cli("-C", str(examples_copy), "plan", "--json").stdout)
    assert sorted(document["stale"]) == ["assets/hero-1.png", "assets/hero-2.png", "assets/logo-tile.png"]
    assert document["up_to_date"] is False and document["images"] == 0
    write_png(examples_copy / "assets/hero-1.png", (8, 8), (9, 9, 9))  # retouched: prune keeps it
    outcome = run_cli("-C", str(examples_copy), "build", "--prune")
    assert outcome.exit_code == 0, outcome.stderr
    assert "pruned assets/logo-tile.png" in outcome.stderr and "pruned assets/hero-2.png" in outcome.stderr
    assert "kept assets/hero-1.png: differs from the lock (edited?)" in outcome.stderr
    assert not (examples_copy / "assets/logo-tile.png").exists()
    assert (examples_copy / "assets/logo.png").read_bytes() == old_logo
    assert all(not entry.stale for entry in parse_lock((examples_copy / "pixmake.lock").read_text()).entries.values())
    assert plan(examples_copy, "--check")[0] == 0


def test_plan_json_gives_orphan_paths_as_a_list(examples_copy: Path, provider_env: EmulatorServer) -> None:
    built(examples_copy)
    edit_manifest(examples_copy, {}, drop="hero")
    outcome = run_cli("-C", str(examples_copy), "plan", "--json")
    (orphan,) = [a for a in json.loads(outcome.stdout)["actions"] if a["action"] == "orphan"]
    assert orphan["reasons"][0]["details"] == {"paths": ["assets/hero-1.png", "assets/hero-2.png"], "kept": []}
    edit_manifest(examples_copy, {"hero-main": {"prompt": "A mug", "n": 2, "out": "assets/hero.png"}})  # same files
    assert plan(examples_copy)[1][-2] == (
        "- orphan     hero: no longer in the manifest; build --prune drops it from the lock "
        "and keeps assets/hero-1.png, assets/hero-2.png (a current target's)"
    )
    explained = run_cli("-C", str(examples_copy), "explain", "hero")
    assert explained.exit_code == ExitCode.USER_ERROR
    assert explained.stderr.splitlines() == [
        "pixmake: error: explain: 'hero' is in pixmake.lock but no longer in the manifest (an orphan): "
        f"pixmake -C {examples_copy} build --prune deletes its outputs and drops it from the lock"
    ]


def test_prune_never_deletes_an_orphans_file_that_a_current_target_reads(examples_copy: Path) -> None:
    assert run_cli("-C", str(examples_copy), "build", "--emulator").exit_code == 0
    edit_manifest(examples_copy, {"banner": {"prompt": "A banner", "references": ["assets/logo-tile.png"]}})
    edit_manifest(examples_copy, {"banner": {"out": "assets/banner.png"}}, drop="logo-tile")
    assert plan(examples_copy)[1][-2] == (
        "- orphan     logo-tile: no longer in the manifest; build --prune drops it from the lock "
        "and keeps assets/logo-tile.png (a current target's)"
    )
    pruned = run_cli("-C", str(examples_copy), "build", "--emulator", "--prune")
    assert pruned.exit_code == 0, pruned.stderr
    assert (examples_copy / "assets/logo-tile.png").is_file()
    assert run_cli("-C", str(examples_copy), "plan", "--check").exit_code == 0


def test_prune_never_deletes_a_current_output_through_a_symlinked_folder(examples_copy: Path) -> None:
    assert run_cli("-C", str(examples_copy), "build", "--emulator").exit_code == 0
    (examples_copy / "assets").rename(examples_copy / "art")  # the folder renamed, the old name kept as a link
    (examples_copy / "assets").symlink_to("art")
    manifest = examples_copy / "pixmake.yaml"
    manifest.write_text(manifest.read_text().replace("out: assets/", "out: art/"))
    before = {p.name: p.read_bytes() for p in (examples_copy / "art").iterdir()}
    pruned = run_cli("-C", str(examples_copy), "build", "--emulator", "--prune")
    assert pruned.exit_code == 0, pruned.stderr
    assert {p.name: p.read_bytes() for p in (examples_copy / "art").iterdir()} == before
    assert run_cli("-C", str(examples_copy), "plan", "--check").exit_code == 0


def test_replace_of_a_target_outside_the_selection_is_a_user_error(
    examples_copy: Path, provider_env: EmulatorServer
) -> None:
    built(examples_copy)
    submits = len(provider_env.emulator.submits())
    outcome = run_cli("-C", str(examples_copy), "build", "--replace", "hero", "logo-tile")
    assert outcome.exit_code == ExitCode.USER_ERROR
    assert outcome.stderr == (
        "pixmake: error: --replace hero: not in the selection; "
        "select it too, or drop the selection (nothing outside it is built)\n"
    )
    assert len(provider_env.emulator.submits()) == submits
    both = run_cli("-C", str(examples_copy), "build", "--replace", "hero", "hero", "logo-tile")
    assert both.exit_code == 0, both.stderr
    assert len(provider_env.emulator.submits()) == submits + 1


def test_a_prompt_rewritten_as_a_yaml_block_is_not_paid_for_again(
    examples_copy: Path, provider_env: EmulatorServer
) -> None:
    """`prompt: >` folds lines into spaces and ends in a newline: the same prompt, and the same images."""
    built(examples_copy)
    manifest = examples_copy / "pixmake.yaml"
    text = manifest.read_text()
    one_line = "    prompt: Premium product ad image of a blue ceramic mug on a wooden table, ${style}\n"
    block = "    prompt: >\n      Premium product ad image of a blue ceramic mug\n      on a wooden table, ${style}\n"
    manifest.write_text(text.replace(one_line, block))
    assert plan(examples_copy, "--check") == (0, ["Plan: 4 unchanged; 0 images to generate"])
    manifest.write_text(text.replace(one_line, block.replace("blue", "red")))
    assert plan(examples_copy, "--check")[0] == ExitCode.CHANGES


def test_lowering_n_keeps_the_first_images_and_pays_nothing(examples_copy: Path, provider_env: EmulatorServer) -> None:
    built(examples_copy)
    first = (examples_copy / "assets/hero-1.png").read_bytes()
    task = parse_lock((examples_copy / "pixmake.lock").read_text()).entries["hero"].task_id
    edit_manifest(examples_copy, {"hero": {"n": 1}})
    submits = len(provider_env.emulator.submits())
    built(examples_copy)
    assert len(provider_env.emulator.submits()) == submits
    assert (examples_copy / "assets/hero.png").read_bytes() == first
    entry = parse_lock((examples_copy / "pixmake.lock").read_text()).entries["hero"]
    assert (entry.n, [o.path for o in entry.outputs], entry.task_id) == (1, ["assets/hero.png"], task)


def test_raising_n_keeps_the_locked_images_and_pays_for_the_new_ones_only(
    examples_copy: Path, provider_env: EmulatorServer
) -> None:
    built(examples_copy)
    images = [(examples_copy / f"assets/hero-{i}.png").read_bytes() for i in (1, 2)]
    charged = provider_env.emulator.ledger.charged_images
    edit_manifest(examples_copy, {"hero": {"n": 4}})
    assert plan(examples_copy) == (
        0,
        [
            "~ regenerate hero: n 2 → 4: keeps its 2 locked images, generates 2 more",
            "Plan: 1 to regenerate, 3 unchanged; 2 images to generate",
        ],
    )
    built(examples_copy)
    assert provider_env.emulator.ledger.charged_images == charged + 2
    assert provider_env.emulator.submits()[-1].json["n"] == 2  # type: ignore[index]
    written = [(examples_copy / f"assets/hero-{i}.png").read_bytes() for i in (1, 2, 3, 4)]
    assert written[:2] == images and len(set(written)) == 4  # two kept, two new (each task draws its own)
    entry = parse_lock((examples_copy / "pixmake.lock").read_text()).entries["hero"]
    assert (entry.n, [o.path for o in entry.outputs]) == (4, [f"assets/hero-{i}.png" for i in (1, 2, 3, 4)])
    assert plan(examples_copy, "--check") == (0, ["Plan: 4 unchanged; 0 images to generate"])


def test_raising_n_leaves_a_kept_output_edited_by_hand_as_it_is(
    examples_copy: Path, provider_env: EmulatorServer
) -> None:
    built(examples_copy)
    retouched = examples_copy / "assets/hero-1.png"
    with Image.open(retouched) as image:
        image.convert("RGB").rotate(180).save(retouched)
    edit = retouched.read_bytes()
    second = (examples_copy / "assets/hero-2.png").read_bytes()
    edit_manifest(examples_copy, {"hero": {"n": 4}})
    assert plan(examples_copy)[1][0] == (
        "~ regenerate hero: n 2 → 4: keeps its 2 locked images, generates 2 more; output assets/hero-1.png "
        f"differs from the lock (edited by hand?); kept as is; pixmake -C {examples_copy} accept hero keeps it"
    )
    charged = provider_env.emulator.ledger.charged_images
    built(examples_copy)
    assert provider_env.emulator.ledger.charged_images == charged + 2
    assert (retouched.read_bytes(), (examples_copy / "assets/hero-2.png").read_bytes()) == (edit, second)
    assert plan(examples_copy)[1][0].startswith("! edited     hero: output assets/hero-1.png differs from the lock")


def test_raising_n_with_a_kept_image_the_cache_cannot_give_pays_nothing_and_says_so(
    examples_copy: Path, provider_env: EmulatorServer
) -> None:
    built(examples_copy)
    entry = parse_lock((examples_copy / "pixmake.lock").read_text()).entries["hero"]
    cached = ObjectCache(examples_copy / ".pixmake" / "objects").path(entry.outputs[0].sha256)
    cached.write_bytes(bytes(len(cached.read_bytes())))  # rotted in place: there, the right size, wrong bytes
    edit_manifest(examples_copy, {"hero": {"n": 4}})
    charged = provider_env.emulator.ledger.charged_images
    outcome = run_cli("-C", str(examples_copy), "build")
    assert outcome.exit_code == 1 and provider_env.emulator.ledger.charged_images == charged
    assert "cannot read an image the target keeps from the object cache" in outcome.stderr
    assert f"nothing was paid: pixmake -C {examples_copy} build --replace hero pays for all" in outcome.stderr


def test_a_build_emulator_preview_of_a_raised_n_leaves_the_provider_build_keeping_its_images(
    examples_copy: Path, provider_env: EmulatorServer
) -> None:
    """Provider images at n 2, n raised to 4, placeholders from build --emulator, then a provider build."""
    built(examples_copy)
    images = [(examples_copy / f"assets/hero-{i}.png").read_bytes() for i in (1, 2)]
    edit_manifest(examples_copy, {"hero": {"n": 4}})
    assert run_cli("-C", str(examples_copy), "build", "--emulator").exit_code == 0
    assert plan(examples_copy, "--provider")[1][0] == (
        "~ regenerate hero: its locked images are placeholders from build --emulator; keeps the 2 images an "
        "earlier build got for these inputs (in .pixmake/objects), generates 2 more"
    )
    assert plan(examples_copy)[1][-1].endswith(  # plain `plan` keeps the placeholders and counts what is paid
        "1 target holds placeholder images from build --emulator (plan -v lists them), which a build without "
        "--emulator regenerates "
        "(2 images)"
    )
    charged = provider_env.emulator.ledger.charged_images
    built(examples_copy)
    assert provider_env.emulator.ledger.charged_images == charged + 2
    assert [(examples_copy / f"assets/hero-{i}.png").read_bytes() for i in (1, 2)] == images


def test_in_a_fresh_clone_raising_n_from_one_keeps_the_committed_image(
    examples_copy: Path, provider_env: EmulatorServer
) -> None:
    """n 1 → 2 moves the image to out's first numbered path; the clone's only copy is the committed file."""
    built(examples_copy)
    shutil.rmtree(examples_copy / ".pixmake")
    logo = (examples_copy / "assets/logo-tile.png").read_bytes()
    charged = provider_env.emulator.ledger.charged_images
    edit_manifest(examples_copy, {"logo-tile": {"n": 2}})
    built(examples_copy)
    assert provider_env.emulator.ledger.charged_images == charged + 1
    assert (examples_copy / "assets/logo-tile-1.png").read_bytes() == logo
    assert (examples_copy / "assets/logo-tile-2.png").read_bytes() != logo
    entry = parse_lock((examples_copy / "pixmake.lock").read_text()).entries["logo-tile"]
    assert [o.path for o in entry.outputs] == ["assets/logo-tile-1.png", "assets/logo-tile-2.png"]
    assert (examples_copy / "assets/logo-tile-2.png").is_file()


def test_in_a_fresh_clone_lowering_n_and_raising_it_back_pays_nothing(
    examples_copy: Path, provider_env: EmulatorServer
) -> None:
    built(examples_copy)
    shutil.rmtree(examples_copy / ".pixmake")
    images = [(examples_copy / f"assets/hero-{i}.png").read_bytes() for i in (1, 2)]
    submits = len(provider_env.emulator.submits())
    edit_manifest(examples_copy, {"hero": {"n": 1}})
    built(examples_copy)
    edit_manifest(examples_copy, {"hero": {"n": 2}})
    assert plan(examples_copy)[1][0].startswith("< restore    hero: same inputs as an earlier build")
    built(examples_copy)
    assert len(provider_env.emulator.submits()) == submits
    assert [(examples_copy / f"assets/hero-{i}.png").read_bytes() for i in (1, 2)] == images


def test_a_copy_of_another_targets_image_made_on_purpose_is_a_hand_edit(
    examples_copy: Path, provider_env: EmulatorServer
) -> None:
    """Not cached and not locked at that path: nothing says pixmake put it there, so it is left alone."""
    built(examples_copy)
    shutil.rmtree(examples_copy / ".pixmake")  # a fresh clone: mug-lifestyle's image is not cached
    manifest = examples_copy / "pixmake.yaml"
    manifest.write_text(manifest.read_text().replace("two colours", "three colours"))
    built(examples_copy)  # the new logo is cached: it could be put back
    logo, lifestyle = examples_copy / "assets/logo-tile.png", examples_copy / "assets/mug-lifestyle.png"
    logo.write_bytes(lifestyle.read_bytes())
    assert plan(examples_copy)[1][0] == (
        "! edited     logo-tile: output assets/logo-tile.png differs from the lock (edited by hand?); kept as is; "
        f"build --restore puts the locked bytes back; pixmake -C {examples_copy} accept logo-tile keeps it"
    )


def test_explain_names_the_key_the_lock_records_for_a_block_prompt(
    examples_copy: Path, provider_env: EmulatorServer
) -> None:
    """The lock file holds the key earlier versions compute; explain says so beside today's."""
    manifest = examples_copy / "pixmake.yaml"
    one_line = "    prompt: Premium product ad image of a blue ceramic mug on a wooden table, ${style}\n"
    manifest.write_text(manifest.read_text().replace(one_line, one_line.replace("prompt: ", "prompt: >\n      ")))
    built(examples_copy)
    recorded = parse_lock((examples_copy / "pixmake.lock").read_text()).entries["hero"].key
    lines = run_cli("-C", str(examples_copy), "explain", "hero").stdout.splitlines()
    assert lines[4] == f"           (pixmake.lock records {recorded}, this key as earlier versions compute it)"
    assert lines[2].split()[-1] == lines[3].split()[-1] != recorded  # today's key, read from the lock
    assert "pixmake.lock records" not in run_cli("-C", str(examples_copy), "explain", "logo-tile").stdout
    as_json = json.loads(run_cli("-C", str(examples_copy), "explain", "hero", "--json").stdout)
    assert (as_json["recorded_key"], as_json["locked_key"]) == (recorded, lines[3].split()[-1])


def test_an_out_renamed_by_letter_case_on_macos_is_restored_in_a_fresh_clone_without_paying(
    examples_copy: Path, provider_env: EmulatorServer
) -> None:
    """On macOS the rename changes nothing on disk and git keeps the old name: the clone holds the locked
    bytes at assets/logo-tile.png while the lock says assets/Logo-Tile.png."""
    built(examples_copy)
    edit_manifest(examples_copy, {"logo-tile": {"out": "assets/Logo-Tile.png"}})
    assert run_cli("-C", str(examples_copy), "build", "--prune").exit_code == 0
    logo = (examples_copy / "assets/Logo-Tile.png").read_bytes()
    (examples_copy / "assets/Logo-Tile.png").rename(examples_copy / "assets/logo-tile.png")  # what git checks out
    if (examples_copy / "assets/Logo-Tile.png").exists():
        pytest.skip("a case-insensitive file system: the file is found under either name")
    shutil.rmtree(examples_copy / ".pixmake")
    for _ in range(2):  # plan writes nothing: the second says it all again
        code, lines = plan(examples_copy, "--check")
        assert code == 2 and lines[0] == (
            "< restore    logo-tile: output assets/Logo-Tile.png is missing, its locked bytes are at "
            "assets/logo-tile.png (git on macOS and Windows keeps a file's old letter case: "
            f"git -C {examples_copy} mv -f assets/logo-tile.png assets/Logo-Tile.png)"
        )
    assert not (examples_copy / ".pixmake" / "objects").exists()
    charged = provider_env.emulator.ledger.charged_images
    built(examples_copy)
    assert provider_env.emulator.ledger.charged_images == charged
    assert (examples_copy / "assets/Logo-Tile.png").read_bytes() == logo


def test_advice_pasted_where_pixmake_ran_with_c_and_f_runs_on_that_project(
    examples_copy: Path, provider_env: EmulatorServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`pixmake -C brand -f sprites.yaml plan` advises commands with the same -C and -f: pasted bare, they would
    run on another folder's manifest (a `build --restore` there pays for its targets)."""
    (examples_copy / "pixmake.yaml").rename(examples_copy / "sprites.yaml")
    monkeypatch.chdir(examples_copy.parent)
    folder = examples_copy.name
    assert run_cli("-C", folder, "-f", "sprites.yaml", "build").exit_code == 0
    logo = examples_copy / "assets/logo-tile.png"
    logo.write_bytes((examples_copy / "assets/mug-marble.png").read_bytes())  # retouched by hand
    lines = run_cli("-C", folder, "-f", "sprites.yaml", "plan").stdout.splitlines()
    advice = lines[0].rsplit("; ", 1)[1].removesuffix(" keeps it instead")
    assert advice == f"pixmake -C {folder} -f sprites.yaml accept logo-tile"
    pasted = run_cli(*shlex.split(advice)[1:])
    assert pasted.exit_code == 0, pasted.stderr
    assert parse_lock((examples_copy / "pixmake.lock").read_text()).entries["logo-tile"].outputs[0].sha256 == (
        hashlib.sha256(logo.read_bytes()).hexdigest()
    )


def test_a_full_disk_after_the_build_still_tells_its_outcome(
    examples_copy: Path, provider_env: EmulatorServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The upload cache is a cache (the next build uploads again, free); the stale outputs' record is not,
    but either failing at the end must not hide what the build did behind one bare error line."""
    from pixmake import reconcile
    from pixmake.uploads import UploadCache

    def full(*args: object, **kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    built(examples_copy)
    edit_manifest(examples_copy, {"logo-tile": {"out": "assets/logo.png"}})
    with monkeypatch.context() as patch:
        patch.setattr(UploadCache, "save", full)
        patch.setattr(reconcile, "write_lock_and_compact", full)
        outcome = run_cli("-C", str(examples_copy), "build")
    assert outcome.exit_code == 1
    assert "build finished in" in outcome.stderr and "1 restored from cache" in outcome.stderr
    assert (
        "cannot record the stale outputs assets/logo-tile.png in pixmake.lock (No space left on device); every "
        "target is locked, but build --prune will not know those files: delete them if unwanted"
    ) in outcome.stderr
    assert plan(examples_copy, "--check")[0] == 0  # the restored logo is locked


def test_a_build_that_could_not_write_the_lock_leaves_plan_check_failing_until_a_build_writes_it(
    examples_copy: Path, provider_env: EmulatorServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The finished entries were in the journal only: plan --check said up to date, the lock was committed
    without them, and a clone paid for them again."""
    from pixmake import execute, store

    real = store.atomic_write

    def full(path: str | os.PathLike[str], *args: Any, **kwargs: Any) -> None:
        if os.path.basename(path) == "pixmake.lock":
            raise OSError(28, "No space left on device")
        real(path, *args, **kwargs)

    edit_manifest(examples_copy, {}, drop="hero")
    built(examples_copy)
    committed = (examples_copy / "pixmake.lock").read_bytes()
    edit_manifest(examples_copy, {"hero": {"prompt": "A mug", "n": 2, "out": "assets/hero.png"}})
    with monkeypatch.context() as patch:
        patch.setattr(execute, "atomic_write", full)
        failed = run_cli("-C", str(examples_copy), "build")
    assert failed.exit_code == 1 and "cannot write the lockfile" in failed.stderr
    assert (examples_copy / "pixmake.lock").read_bytes() == committed
    checked = run_cli("-C", str(examples_copy), "plan", "--check")
    assert checked.exit_code == ExitCode.CHANGES
    assert (
        checked.stdout.splitlines()[-1]
        == "Plan: 4 unchanged, 1 finished target to write into pixmake.lock; 0 images to generate"
    )
    assert (
        "pixmake: note: 1 finished target (hero) is recorded in .pixmake/journal.jsonl, not yet in pixmake.lock: "
        f"pixmake -C {examples_copy} build writes them, free (a clone of the repository pays for them again)"
    ) in checked.stderr
    assert json.loads(run_cli("-C", str(examples_copy), "plan", "--json").stdout)["unwritten"] == ["hero"]
    charged = provider_env.emulator.ledger.charged_images
    assert run_cli("-C", str(examples_copy), "build").exit_code == 0
    assert provider_env.emulator.ledger.charged_images == charged
    assert "hero" in parse_lock((examples_copy / "pixmake.lock").read_text()).entries
    assert plan(examples_copy, "--check")[0] == 0


def test_a_long_plan_ends_with_the_reasons_most_of_its_targets_share(examples_copy: Path) -> None:
    """A shared reference edited: 10,000 lines scrolled by, and the end said only '10000 to regenerate'."""
    (examples_copy / "pixmake.yaml").write_text(
        "version: 1\ntargets:\n"
        + "".join(
            f"  t{i}:\n    prompt: shot {i}\n    out: out/t{i}.png\n    references: [refs/a.png]\n" for i in range(25)
        )
        + "  other:\n    prompt: x\n    out: out/other.png\n"
    )
    write_png(examples_copy / "refs/a.png", (8, 8), (1, 2, 3))
    assert run_cli("-C", str(examples_copy), "build", "--emulator").exit_code == 0
    write_png(examples_copy / "refs/a.png", (8, 8), (3, 2, 1))
    (examples_copy / "out/other.png").unlink()
    lines = plan(examples_copy)[1]
    assert lines[-2].startswith("Why, most often: 25 × reference refs/a.png changed (")
    assert "; " not in lines[-2]  # the one restore's reason is no one else's
    assert lines[-1].startswith("Plan: 25 to regenerate, 1 to restore")


def test_a_damaged_lock_never_committed_is_mended_free_by_following_its_message(
    examples_copy: Path, provider_env: EmulatorServer
) -> None:
    """The advice was git checkout alone: for a lock never committed, git says 'did not match any file'."""
    built(examples_copy)
    lock = examples_copy / "pixmake.lock"
    lock.write_bytes(lock.read_bytes()[:700])  # cut short: a disk that filled, an editor's crash
    refused = run_cli("-C", str(examples_copy), "plan")
    assert refused.exit_code != 0 and "or delete it if it was never committed" in refused.stderr
    lock.unlink()
    charged = provider_env.emulator.ledger.charged_images
    restored = [line.split()[2].rstrip(":") for line in plan(examples_copy)[1] if line.startswith("< restore")]
    assert sorted(restored) == ["hero", "logo-tile", "mug-lifestyle", "mug-marble"]  # the history knows them
    built(examples_copy)
    assert plan(examples_copy, "--check")[0] == 0 and provider_env.emulator.ledger.charged_images == charged
    lock.unlink()
    shutil.rmtree(examples_copy / ".pixmake")  # a lock never committed, in a clone of its own: accept takes the files
    names = [line.split()[2].rstrip(":") for line in plan(examples_copy)[1] if line.startswith("+ create")]
    assert sorted(names) == ["hero", "logo-tile", "mug-lifestyle", "mug-marble"]
    assert run_cli("-C", str(examples_copy), "accept", *names).exit_code == 0
    assert plan(examples_copy, "--check")[0] == 0 and provider_env.emulator.ledger.charged_images == charged


def test_explain_and_plan_json_name_the_row_or_combination_that_made_a_target(tmp_path: Path) -> None:
    """At 10,000 expanded targets, which entry and which catalog row made `shot-b-marble` was nowhere."""
    (tmp_path / "skus.csv").write_text("sku\na\nb\n")
    (tmp_path / "pixmake.yaml").write_text(
        "version: 1\ntargets:\n  plain:\n    prompt: x\n    out: plain.png\n"
        "  shot-${sku}-${bg}:\n    rows: skus.csv\n    matrix: {bg: [white, marble]}\n"
        "    prompt: ${sku} on ${bg}\n    out: out/${sku}-${bg}.png\n"
    )
    explained = run_cli("-C", str(tmp_path), "explain", "shot-b-marble")
    assert explained.exit_code == 0, explained.stderr
    made = explained.stdout.splitlines()[1]
    assert made.startswith("  made by  ") and made.endswith("pixmake.yaml:6 [row skus.csv:3, bg=marble]")
    assert json.loads(run_cli("-C", str(tmp_path), "explain", "shot-b-marble", "--json").stdout)["line"] == 6
    actions = json.loads(run_cli("-C", str(tmp_path), "plan", "--json").stdout)["actions"]
    assert {a["target"]: a["origin"] for a in actions}["shot-b-marble"] == "row skus.csv:3, bg=marble"
    assert {a["target"]: a["origin"] for a in actions}["plain"] == ""


def test_a_lock_or_prompt_holding_terminal_codes_cannot_rewrite_the_plan_a_reviewer_reads(
    examples_copy: Path, provider_env: EmulatorServer
) -> None:
    """The review's repro: a pull request changing the lock's prompt to hold ESC ]0;…BEL (or a CSI, or a
    bidi override) had `plan` and `explain` print it raw: the terminal acted on it."""
    built(examples_copy)
    lock = examples_copy / "pixmake.lock"
    text = lock.read_text()
    entry = parse_lock(text).entries["hero"]
    text = text.replace(json.dumps(entry.prompt), json.dumps(entry.prompt + " \x1b]0;pwned\x07 \u202eevil"))
    text = text.replace(json.dumps(entry.model), json.dumps(entry.model + "\x9b2J"))
    text = text.replace(entry.key, "0" * 64)
    lock.write_text(text)
    shutil.rmtree(examples_copy / ".pixmake")  # the reviewer's clone: no history of hero's images
    for command in (("plan",), ("explain", "hero")):
        outcome = run_cli("-C", str(examples_copy), *command)
        assert not any(c in outcome.stdout + outcome.stderr for c in "\x1b\x07\x9b\u202e"), outcome.stdout
    [line] = [line for line in plan(examples_copy)[1] if "hero:" in line]
    assert "prompt changed: -[\\x1b]0;pwned\\x07 \\u202eevil]" in line and "model gpt-4o-image\\x9b2J →" in line


def test_after_an_emulator_build_a_plan_lists_the_changes_not_every_placeholder(examples_copy: Path) -> None:
    """The review: after `build --emulator`, plain `plan` listed every target as "unchanged … placeholders",
    which buried the one change; the summary counts them, `plan -v` lists them."""
    assert run_cli("-C", str(examples_copy), "build", "--emulator").exit_code == 0
    edit_manifest(examples_copy, {"logo-tile": {"prompt": "A round logo tile"}})
    code, lines = plan(examples_copy)
    assert code == 0 and len(lines) == 2 and lines[0].startswith("~ regenerate logo-tile: prompt changed")
    assert lines[1].startswith("Plan: 1 to regenerate, 3 unchanged; 1 image to generate; 3 targets hold placeholder")
    assert lines[1].endswith(": 5 images to pay for without --emulator")
    verbose = plan(examples_copy, "-v")[1]
    assert sum("its locked images are placeholders" in line for line in verbose) == 3


@pytest.mark.skipif(shutil.which("git") is None or not hasattr(os, "geteuid") or os.geteuid() != 0, reason="root+git")
def test_a_missing_output_is_not_paid_for_while_git_refuses_to_read_the_repository(
    examples_copy: Path, provider_env: EmulatorServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The CI review: a container job whose checkout another user owns: git refused every lookup, `plan`
    said so, and `build` paid for an image git held, committed."""
    built(examples_copy)
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "assets"]):
        git(examples_copy, *args)
    (examples_copy / "assets/logo-tile.png").unlink()
    shutil.rmtree(examples_copy / ".pixmake")  # a fresh runner
    for folder, _, files in os.walk(examples_copy):
        for name in [folder, *(os.path.join(folder, f) for f in files)]:
            os.chown(name, 65534, 65534)
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", os.devnull)  # no safe.directory of this machine's
    charged = provider_env.emulator.ledger.charged_images
    for command in (("plan", "--check"), ("build",)):
        outcome = run_cli("-C", str(examples_copy), *command)
        assert outcome.exit_code == ExitCode.USER_ERROR and outcome.stderr == (
            "pixmake: error: logo-tile: outputs missing or edited, and git refused to read this repository, where "
            f"they may be committed: run git config --global --add safe.directory {examples_copy.resolve()} (a "
            f"build would pay to generate it again; pixmake -C {examples_copy} build --replace TARGET generates "
            "one anew on purpose)\n"
        )
    assert provider_env.emulator.ledger.charged_images == charged
    assert run_cli("-C", str(examples_copy), "build", "--replace", "logo-tile").exit_code == ExitCode.OK
    assert provider_env.emulator.ledger.charged_images == charged + 1  # asked for: paid


def test_a_selection_builds_when_another_targets_input_is_missing(
    examples_copy: Path, provider_env: EmulatorServer
) -> None:
    """`pixmake build hero` needs hero's inputs, not the reference of a target it does not build (make's rule)."""
    (examples_copy / "photos/mug.png").unlink()  # mug-lifestyle's and mug-marble's: not yet committed, say
    (examples_copy / "masks/mug-background.png").unlink()
    for args in (["validate"], ["plan"], ["build"], ["plan", "mug-*"], ["build", "--tag", "campaign-q4"]):
        refused = run_cli("-C", str(examples_copy), *args)
        assert refused.exit_code == ExitCode.USER_ERROR, args
        assert "targets.mug-lifestyle.references[0]: file not found: photos/mug.png" in refused.stderr, args
    assert len(provider_env.emulator.submits()) == 0
    assert plan(examples_copy, "hero", "logo-tile") == (
        0,
        [
            "+ create     logo-tile: not in the lockfile",
            "+ create     hero: not in the lockfile",
            "Plan: 2 to create; 3 images to generate",
        ],
    )
    outcome = run_cli("-C", str(examples_copy), "build", "hero", "logo-tile")
    assert outcome.exit_code == 0, outcome.stderr
    assert "mug" not in outcome.stderr
    explained = run_cli("-C", str(examples_copy), "explain", "hero")
    assert explained.exit_code == 0 and "  action   unchanged" in explained.stdout, explained.stderr
    missing = run_cli("-C", str(examples_copy), "explain", "mug-lifestyle")
    assert missing.exit_code == ExitCode.USER_ERROR and "file not found: photos/mug.png" in missing.stderr
    assert len(provider_env.emulator.submits()) == 2
    assert sorted(parse_lock((examples_copy / "pixmake.lock").read_text()).entries) == ["hero", "logo-tile"]


def test_an_unselected_target_whose_task_has_a_twins_inputs_and_whose_reference_is_gone(
    examples_copy: Path, provider_env: EmulatorServer
) -> None:
    """The plan of a selection looks for an unselected target's task a selected twin could collect: one
    whose own key cannot be made (its reference is gone) is not that, and no traceback."""
    journal_submit(examples_copy, "mug-lifestyle", "pixmake-windowsill-0", over=None)
    lifestyle = yaml.safe_load((examples_copy / "pixmake.yaml").read_text())["targets"]["mug-lifestyle"]
    edit_manifest(examples_copy, {"windowsill": {**lifestyle, "out": "assets/windowsill.png"}})
    edit_manifest(examples_copy, {"mug-lifestyle": {"references": ["photos/gone.png"]}})
    code, lines = plan(examples_copy, "windowsill")  # the task is mug-lifestyle's, for inputs it no longer has
    assert code == 0 and lines[0].startswith("+ create     windowsill"), lines


def test_an_edit_built_then_discarded_with_git_and_made_again_is_not_paid_twice(
    examples_copy: Path, provider_env: EmulatorServer
) -> None:
    """The review (a studio): `git checkout -- .` after a build threw away the lock, the only record of which
    cached images those inputs made; redoing the same edit, or making it on another branch, paid again."""
    built(examples_copy)
    git(examples_copy, "init", "-q")
    git(examples_copy, "add", "-A")
    git(examples_copy, "commit", "-qm", "v1")
    manifest = examples_copy / "pixmake.yaml"
    first = manifest.read_text()
    manifest.write_text(first.replace("two colours", "three colours"))
    built(examples_copy)  # pays for logo-tile's new prompt
    made = (examples_copy / "assets/logo-tile.png").read_bytes()
    submits = len(provider_env.emulator.submits())
    git(examples_copy, "checkout", "-q", "--", ".")  # "didn't like it": the manifest, lock and image go back
    manifest.write_text(first.replace("two colours", "three colours"))  # then changed their mind
    assert plan(examples_copy)[1][0] == (
        "< restore    logo-tile: same inputs as an earlier build, whose images are in .pixmake/objects"
    )
    built(examples_copy)
    assert len(provider_env.emulator.submits()) == submits
    assert (examples_copy / "assets/logo-tile.png").read_bytes() == made


def test_an_accepted_retouch_kept_as_the_first_image_when_n_is_raised_is_still_said_to_be_one(
    examples_copy: Path, provider_env: EmulatorServer
) -> None:
    """n 1 → 2 keeps the accepted retouch as logo-tile-1.png and pays for one more: the mark stays with it."""
    built(examples_copy)
    logo = examples_copy / "assets/logo-tile.png"
    write_png(logo, (32, 32), (200, 0, 0))
    retouch = logo.read_bytes()
    assert run_cli("-C", str(examples_copy), "accept", "logo-tile").exit_code == 0
    manifest = examples_copy / "pixmake.yaml"
    manifest.write_text(
        manifest.read_text().replace("out: assets/logo-tile.png", "out: assets/logo-tile.png\n    n: 2")
    )
    built(examples_copy)
    assert (examples_copy / "assets/logo-tile-1.png").read_bytes() == retouch
    assert parse_lock((examples_copy / "pixmake.lock").read_text()).entries["logo-tile"].accepted
    manifest.write_text(manifest.read_text().replace("A flat geometric logo tile", "A round logo tile"))
    lines = plan(examples_copy)[1]
    assert "will replace assets/logo-tile-1.png, which pixmake accept recorded (a retouch?)" in lines[0]
    assert "logo-tile-2.png, which" not in lines[0]  # the image generated beside it is no retouch (the review)
    assert lines[-1].endswith("; 1 file recorded by pixmake accept (retouches?) would be replaced")


def test_a_build_that_would_replace_an_accepted_retouch_says_so_in_the_plan(
    examples_copy: Path, provider_env: EmulatorServer
) -> None:
    """The review (a studio): a retouch kept with `accept` was replaced by the next style change with no word,
    where an edit not accepted got one; among 800 regenerations, 30 retouched cards were invisible."""
    built(examples_copy)
    logo = examples_copy / "assets/logo-tile.png"
    write_png(logo, (32, 32), (200, 0, 0))
    retouch = logo.read_bytes()
    assert run_cli("-C", str(examples_copy), "accept", "logo-tile").exit_code == 0
    assert parse_lock((examples_copy / "pixmake.lock").read_text()).entries["logo-tile"].accepted
    assert plan(examples_copy, "--check")[0] == 0
    logo.unlink()
    built(examples_copy)  # put back from the cache: still the retouch, and still said to be one
    assert logo.read_bytes() == retouch
    assert parse_lock((examples_copy / "pixmake.lock").read_text()).entries["logo-tile"].accepted
    manifest = examples_copy / "pixmake.yaml"
    manifest.write_text(manifest.read_text().replace("A flat geometric logo tile", "A round logo tile"))
    sha = hashlib.sha256(retouch).hexdigest()
    code, lines = plan(examples_copy)
    assert code == 0
    assert lines[0] == (
        "~ regenerate logo-tile: prompt changed: -[flat geometric] +[round]; will replace assets/logo-tile.png, "
        f"which pixmake accept recorded (a retouch?); kept as .pixmake/objects/{sha[:2]}/{sha}"
    )
    assert lines[-1].endswith("; 1 file recorded by pixmake accept (retouches?) would be replaced")
    [action] = [a for a in json.loads(run_cli("-C", str(examples_copy), "plan", "--json").stdout)["actions"]
                if a["target"] == "logo-tile"]  # fmt: skip
    assert {"path": "assets/logo-tile.png", "sha256": sha, "accepted": True} in [
        r.get("details") for r in action["reasons"]
    ]
    built(examples_copy)
    assert logo.read_bytes() != retouch and ObjectCache(examples_copy / ".pixmake/objects").has(sha)
    assert not parse_lock((examples_copy / "pixmake.lock").read_text()).entries["logo-tile"].accepted
    assert "accept" not in plan(examples_copy)[1][-1]


def test_accept_takes_globs_and_tags_and_says_once_what_changed(
    examples_copy: Path, provider_env: EmulatorServer
) -> None:
    """The review (a studio): a typo fixed in a shared var planned 796 regenerations; accept, the way to keep
    the images, took exact names only and printed a note per target."""
    built(examples_copy)
    manifest = examples_copy / "pixmake.yaml"
    manifest.write_text(manifest.read_text().replace("soft key light", "soft key-light"))
    assert plan(examples_copy)[1][-1] == "Plan: 3 to regenerate, 1 unchanged; 4 images to generate"
    outcome = run_cli("-C", str(examples_copy), "accept", "logo-*", "--tag", "campaign-q4")
    assert outcome.exit_code == 0, outcome.stderr
    assert [line.split(":")[0] for line in outcome.stdout.splitlines()] == [
        "accepted logo-tile",
        "accepted hero",
        "accepted mug-lifestyle",
        "accepted mug-marble",
    ]
    assert outcome.stderr.splitlines() == [
        "pixmake: note: 3 targets' inputs differ from the lock's (their prompt, a reference or a parameter "
        "changed): their files now stand for the current ones, and nothing is regenerated"
    ]
    assert plan(examples_copy, "--check") == (0, ["Plan: 4 unchanged; 0 images to generate"])
    typo = run_cli("-C", str(examples_copy), "accept", "logo-tyle")
    assert typo.exit_code == ExitCode.USER_ERROR and "no target matches 'logo-tyle'" in typo.stderr
    nothing = run_cli("-C", str(examples_copy), "accept")
    assert nothing.exit_code == ExitCode.USER_ERROR and "name the targets to accept" in nothing.stderr


def test_plan_json_names_the_files_each_action_writes(examples_copy: Path) -> None:
    """The review (a pull request's bot): without the output paths it could not show the images a change
    replaces. A plan the no-op memo answers, and an orphan's lock entry, name them too."""

    def outputs() -> dict[str, tuple[str, list[str]]]:
        document = json.loads(run_cli("-C", str(examples_copy), "plan", "--json").stdout)
        return {a["target"]: (a["action"], a["outputs"]) for a in document["actions"]}

    hero = ["assets/hero-1.png", "assets/hero-2.png"]
    assert outputs()["hero"] == ("create", hero)
    assert run_cli("-C", str(examples_copy), "build", "--emulator").exit_code == 0
    assert outputs()["hero"] == ("unchanged", hero)  # answered by the memo
    edit_manifest(examples_copy, {}, drop="hero")
    assert outputs()["hero"] == ("orphan", hero)


def test_a_fresh_clone_going_back_to_inputs_a_tag_locked_restores_their_committed_images_free(
    examples_copy: Path, provider_env: EmulatorServer, tmp_path: Path
) -> None:
    """The review (a studio): reverting an art-direction change cost the author's machine nothing (its
    history) but a fresh clone or a CI runner every image again, while git held the lock and the images."""
    built(examples_copy)
    git(examples_copy, "init", "-q")
    git(examples_copy, "add", "-A")
    git(examples_copy, "commit", "-qm", "v1")
    git(examples_copy, "tag", "v1")
    v1 = (examples_copy / "assets/logo-tile.png").read_bytes()
    manifest = examples_copy / "pixmake.yaml"
    manifest.write_text(manifest.read_text().replace("soft key light", "hard rim light"))
    built(examples_copy)
    git(examples_copy, "commit", "-qam", "v2: a new style")
    git(examples_copy, "checkout", "-q", "-b", "aaa", "v1")  # a branch with v1's lock, its logo not in git:
    git(examples_copy, "rm", "-q", "--cached", "assets/logo-tile.png")  # listed before the tag that has it
    git(examples_copy, "commit", "-qm", "logo untracked")
    (examples_copy / "assets/logo-tile.png").unlink()
    git(examples_copy, "checkout", "-q", "-")
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", str(examples_copy), str(clone))
    submits = len(provider_env.emulator.submits())
    (clone / "pixmake.yaml").write_text(manifest.read_text().replace("hard rim light", "soft key light"))
    code, lines = plan(clone)
    assert code == 0
    assert lines == [
        "< restore    logo-tile: same inputs as an earlier build, whose images git holds",
        "< restore    hero: same inputs as an earlier build, whose images git holds",
        "< restore    mug-lifestyle: same inputs as an earlier build, whose images git holds",
        "Plan: 3 to restore, 1 unchanged; 0 images to generate",
    ]
    built(clone)
    assert len(provider_env.emulator.submits()) == submits
    assert (clone / "assets/logo-tile.png").read_bytes() == v1
    assert plan(clone, "--check")[0] == 0


def test_the_history_grows_with_images_made_not_with_restores(examples_copy: Path) -> None:
    """The diff review: every restore appended its entry again (200 targets, outputs deleted 3 times: 800
    lines), and every plan that reads the history read them all."""
    assert run_cli("-C", str(examples_copy), "build", "--emulator").exit_code == 0
    history = examples_copy / ".pixmake/history.jsonl"
    made = history.read_bytes()
    assert len(made.splitlines()) == 4  # the four targets' first images
    for _ in range(2):
        shutil.rmtree(examples_copy / "assets")
        assert run_cli("-C", str(examples_copy), "build", "--emulator").exit_code == 0
    assert history.read_bytes() == made


def test_a_plan_in_a_partial_clone_fetches_nothing(examples_copy: Path, tmp_path: Path) -> None:
    """The diff review: a partial clone's plan fetched the lock at a tag (over ssh it could wait on a
    password); git before 2.40 marks such a clone by its remote's `promisor` alone."""
    assert run_cli("-C", str(examples_copy), "build", "--emulator").exit_code == 0
    git(examples_copy, "init", "-q")
    git(examples_copy, "config", "uploadpack.allowFilter", "true")
    git(examples_copy, "add", "-A")
    git(examples_copy, "commit", "-qm", "v1")
    git(examples_copy, "tag", "v1")
    manifest = examples_copy / "pixmake.yaml"
    manifest.write_text(manifest.read_text().replace("soft key light", "hard rim light"))
    assert run_cli("-C", str(examples_copy), "build", "--emulator").exit_code == 0
    git(examples_copy, "commit", "-qam", "v2")
    clone = tmp_path / "partial"
    git(tmp_path, "clone", "-q", "--filter=blob:none", f"file://{examples_copy}", str(clone))

    def missing() -> int:
        listed = subprocess.run(
            ["git", "rev-list", "--objects", "--all", "--missing=print"], cwd=clone, capture_output=True, check=True
        )
        return listed.stdout.count(b"\n?")

    before = missing()
    assert before > 0
    (clone / "pixmake.yaml").write_text(manifest.read_text().replace("hard rim light", "soft key light"))
    code, lines = plan(clone, "--provider")
    assert code == 0 and lines[-1].startswith("Plan: 4 to regenerate"), lines
    assert missing() == before


def test_accept_of_a_glob_leaves_out_untouched_placeholders_and_says_so(examples_copy: Path) -> None:
    """The diff review: `accept 'card-*'` refused the whole batch when one matched target held untouched
    placeholders; named one by one, such a target is still refused."""
    assert run_cli("-C", str(examples_copy), "build", "--emulator").exit_code == 0
    write_png(examples_copy / "assets/logo-tile.png", (32, 32), (0, 120, 0))  # retouched
    outcome = run_cli("-C", str(examples_copy), "accept", "*")
    assert outcome.exit_code == 0, outcome.stderr
    assert outcome.stdout.splitlines() == ["accepted logo-tile: assets/logo-tile.png"]
    assert outcome.stderr.splitlines() == [
        "pixmake: note: left out hero, mug-lifestyle, mug-marble: their files are build --emulator's "
        "placeholders, untouched (a build without --emulator generates the images)"
    ]
    named = run_cli("-C", str(examples_copy), "accept", "hero")
    assert named.exit_code == ExitCode.USER_ERROR and "hero's files are build --emulator's placeholders" in named.stderr
