"""make_plan: one action per target, with reasons; pure, so it is tested on values only."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import replace
from types import MappingProxyType

from hypothesis import given
from hypothesis import strategies as st

from pixmake.fingerprint import current_keys, lock_entry, target_key, verbatim_key
from pixmake.lockfile import Lock, LockedOutput, LockEntry
from pixmake.manifest import Target, output_paths
from pixmake.plan import ActionKind, Builder, Plan, make_plan
from pixmake.scan import DiskState


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def built(target: Target, hashes: dict[str, str], tag: str = "") -> tuple[LockEntry, dict[str, str]]:
    """The lock entry a build of ``target`` records, and the hashes of the outputs it wrote."""
    outputs = tuple(LockedOutput(p, sha(f"image {target.name} {p} {tag}"), 100, 8, 8) for p in output_paths(target))
    entry = lock_entry(target, target_key(target, hashes), hashes, outputs, task_id=f"task-{target.name}")
    return entry, {o.path: o.sha256 for o in outputs}


def project(*targets: Target, inputs: dict[str, str] | None = None) -> tuple[Lock, dict[str, str]]:
    """A lock and the disk's hashes right after a build of ``targets``."""
    hashes = dict(inputs or {})
    entries = {}
    for target in targets:
        entries[target.name], outputs = built(target, hashes)
        hashes.update(outputs)
    return Lock(MappingProxyType(entries)), hashes


HERO = Target("hero", "a blue mug on a wooden table", "gpt-4o-image", "1:1", 1, "out/hero.png", ("ref/mug.png",))
INPUTS = {"ref/mug.png": sha("mug"), "ref/mask.png": sha("mask")}


def only(plan: Plan) -> tuple[ActionKind, list[str], list[str]]:
    (action,) = plan.actions
    return action.kind, [r.code for r in action.reasons], [r.text for r in action.reasons]


def test_new_target_is_created() -> None:
    kind, codes, _ = only(make_plan([HERO], Lock(), DiskState(INPUTS)))
    assert (kind, codes) == (ActionKind.CREATE, ["new"])


def test_unchanged_after_build() -> None:
    lock, disk = project(HERO, inputs=INPUTS)
    plan = make_plan([HERO], lock, DiskState(disk))
    assert only(plan)[0] is ActionKind.UNCHANGED
    assert plan.changes == () and plan.summary() == "1 unchanged; 0 images to generate"


def test_prompt_change_is_explained_with_a_word_diff() -> None:
    lock, disk = project(HERO, inputs=INPUTS)
    edited = replace(HERO, prompt="a red mug on a wooden table")
    kind, codes, texts = only(make_plan([edited], lock, DiskState(disk)))
    assert (kind, codes) == (ActionKind.REGENERATE, ["prompt-changed"])
    assert texts == ["prompt changed: -[blue] +[red]"]


def test_param_model_size_and_n_changes_say_old_and_new() -> None:
    lock, disk = project(HERO, inputs=INPUTS)
    edited = replace(HERO, model="gpt-image-2", size="3:2", n=2, params=MappingProxyType({"quality": "high"}))
    kind, codes, texts = only(make_plan([edited], lock, DiskState(disk)))
    assert kind is ActionKind.REGENERATE
    assert codes == ["model-changed", "size-changed", "n-changed", "param-changed", "output-stale"]
    assert texts[:4] == ["model gpt-4o-image → gpt-image-2", "size 1:1 → 3:2", "n 1 → 2", 'param quality null → "high"']


def test_param_changes_are_shown_as_json() -> None:
    lock, disk = project(HERO, inputs=INPUTS)
    edited = replace(HERO, params=MappingProxyType({"metadata": {"a": 1}, "flag": True}))
    _, _, texts = only(make_plan([edited], lock, DiskState(disk)))
    assert texts == ["param flag null → true", 'param metadata null → {"a": 1}']


def test_reference_change_names_the_file_and_both_hashes() -> None:
    lock, disk = project(HERO, inputs=INPUTS)
    now = {**disk, "ref/mug.png": sha("mug, one pixel changed")}
    plan = make_plan([HERO], lock, DiskState(now))
    kind, codes, texts = only(plan)
    assert (kind, codes) == (ActionKind.REGENERATE, ["reference-changed"])
    assert texts == [f"reference ref/mug.png changed ({sha('mug')[:8]} → {sha('mug, one pixel changed')[:8]})"]
    details = plan.actions[0].reasons[0].details
    assert details is not None and details["old"] == sha("mug")


def test_references_listed_in_another_order_are_said_to_be_reordered_not_changed() -> None:
    two = replace(HERO, references=("ref/mug.png", "ref/mask.png"))
    lock, disk = project(two, inputs=INPUTS)
    swapped = replace(two, references=("ref/mask.png", "ref/mug.png"))
    assert only(make_plan([swapped], lock, DiskState(disk)))[1:] == (
        ["references-reordered"],
        ["references reordered: ref/mask.png, ref/mug.png"],
    )


def test_a_param_that_changed_type_is_named_not_blamed_on_the_fingerprint_format() -> None:
    seeded = replace(HERO, params=MappingProxyType({"seed": 1}))
    lock, disk = project(seeded, inputs=INPUTS)
    for value, shown in ((1.0, "1.0"), (True, "true")):  # equal in Python, not in the JSON the key is made of
        changed = replace(HERO, params=MappingProxyType({"seed": value}))
        assert only(make_plan([changed], lock, DiskState(disk)))[1:] == (
            ["param-changed"],
            [f"param seed 1 → {shown}"],
        )


def test_mask_added_changed_and_removed() -> None:
    masked = replace(HERO, mask="ref/mask.png")
    lock, disk = project(HERO, inputs=INPUTS)
    assert only(make_plan([masked], lock, DiskState(disk)))[2] == ["mask ref/mask.png added"]
    lock, disk = project(masked, inputs=INPUTS)
    changed = {**disk, "ref/mask.png": sha("mask 2")}
    assert only(make_plan([masked], lock, DiskState(changed)))[1] == ["mask-changed"]
    assert only(make_plan([HERO], lock, DiskState(disk)))[2] == ["mask ref/mask.png removed"]


def test_missing_output_is_restored_when_cached_else_regenerated() -> None:
    lock, disk = project(HERO, inputs=INPUTS)
    locked = lock.entries["hero"].outputs[0].sha256
    gone = {k: v for k, v in disk.items() if k != "out/hero.png"}
    plan = make_plan([HERO], lock, DiskState(gone, cached_objects=frozenset({locked})))
    assert only(plan)[:2] == (ActionKind.RESTORE, ["output-missing"])
    assert plan.images_to_generate == 0 and plan.changes
    kind, codes, _ = only(make_plan([HERO], lock, DiskState(gone)))
    assert (kind, codes) == (ActionKind.REGENERATE, ["output-missing", "not-cached"])


def test_a_damaged_output_is_put_back_like_a_missing_one_never_kept_as_an_edit() -> None:
    lock, disk = project(HERO, inputs=INPUTS)
    locked = lock.entries["hero"].outputs[0].sha256
    cut = {**disk, "out/hero.png": sha("")}  # a power cut left the unsynced output empty
    damaged = frozenset({"out/hero.png"})
    plan = make_plan([HERO], lock, DiskState(cut, cached_objects=frozenset({locked}), damaged=damaged))
    kind, codes, texts = only(plan)
    assert (kind, codes) == (ActionKind.RESTORE, ["output-damaged"]) and "out/hero.png" in texts[0]
    assert plan.images_to_generate == 0
    kind, codes, _ = only(make_plan([HERO], lock, DiskState(cut, damaged=damaged)))
    assert (kind, codes) == (ActionKind.REGENERATE, ["output-damaged", "not-cached"])


def test_edited_output_is_left_alone_unless_restore_is_asked() -> None:
    lock, disk = project(HERO, inputs=INPUTS)
    locked = lock.entries["hero"].outputs[0].sha256
    retouched = {**disk, "out/hero.png": sha("retouched by hand")}
    state = DiskState(retouched, cached_objects=frozenset({locked}))
    plan = make_plan([HERO], lock, state)
    kind, codes, texts = only(plan)
    assert (kind, codes) == (ActionKind.EDITED, ["output-edited", "edited-hint"])
    assert "build --restore" in texts[1] and "pixmake accept hero" in texts[1]
    assert plan.changes == ()  # plan --check stays green: nothing would be paid for or written
    assert plan.listed == plan.actions
    assert only(make_plan([HERO], lock, state, restore=True))[:2] == (ActionKind.RESTORE, ["output-edited"])
    uncached = make_plan([HERO], lock, DiskState(retouched), restore=True)
    assert only(uncached)[0] is ActionKind.EDITED and "not in the object cache" in only(uncached)[2][1]


def test_orphans_are_reported_only_for_the_whole_manifest() -> None:
    other = replace(HERO, name="old", out="out/old.png")
    lock, disk = project(HERO, other, inputs=INPUTS)
    plan = make_plan([HERO], lock, DiskState(disk))
    assert [(a.name, a.kind) for a in plan.actions] == [("hero", ActionKind.UNCHANGED), ("old", ActionKind.ORPHAN)]
    assert "out/old.png" in plan.actions[1].reasons[0].text
    assert [a.kind for a in make_plan([HERO], lock, DiskState(disk), orphans=False).actions] == [ActionKind.UNCHANGED]


def test_replace_regenerates_on_purpose() -> None:
    lock, disk = project(HERO, inputs=INPUTS)
    kind, codes, _ = only(make_plan([HERO], lock, DiskState(disk), replace=["hero"]))
    assert (kind, codes) == (ActionKind.REGENERATE, ["replace"])


def test_renamed_target_with_same_inputs_is_restored_not_paid() -> None:
    lock, disk = project(HERO, inputs=INPUTS)
    renamed = replace(HERO, name="hero-v2")
    plan = make_plan([renamed], lock, DiskState(disk))
    assert [(a.name, a.kind) for a in plan.actions] == [("hero-v2", ActionKind.RESTORE), ("hero", ActionKind.ORPHAN)]


def test_two_targets_that_swapped_names_swap_their_images_for_free() -> None:
    mug = Target("mug", "a mug in a kitchen", "gpt-4o-image", "1:1", 1, "out/mug.png")
    cup = Target("cup", "a cup on marble", "gpt-4o-image", "1:1", 1, "out/cup.png")
    lock, disk = project(mug, cup)
    swapped = [replace(mug, name="cup"), replace(cup, name="mug")]  # each name now has the other's inputs and out
    plan = make_plan(swapped, lock, DiskState(disk))
    assert [(a.name, a.kind, [r.code for r in a.reasons]) for a in plan.actions] == [
        ("cup", ActionKind.RESTORE, ["same-inputs"]),  # its images already stand at its out: nothing replaced
        ("mug", ActionKind.RESTORE, ["same-inputs"]),
    ]
    assert [a.source for a in plan.actions] == [lock.entries["mug"], lock.entries["cup"]]
    assert plan.images_to_generate == 0


def test_a_target_whose_inputs_another_of_the_build_has_with_a_higher_n_takes_its_first_images() -> None:
    """The review (a model of the bill): a thumbnail (n 1) beside its variants (n 4) of the same prompt paid
    for 5 images; the variants' first one is the thumbnail's, so 4 are paid for."""
    thumb = replace(HERO, name="thumb", out="out/thumb.png")
    variants = replace(HERO, name="variants", n=4, out="out/v.png")
    pair = replace(HERO, name="pair", n=2, out="out/p.png")
    plan = make_plan([thumb, variants, pair], Lock(), DiskState(INPUTS))
    assert [(a.kind, a.after) for a in plan.actions] == [
        (ActionKind.RESTORE, "variants"),
        (ActionKind.CREATE, None),
        (ActionKind.RESTORE, "variants"),
    ]
    assert plan.images_to_generate == 4
    assert plan.actions[0].reasons[0].text == (
        "same inputs as target 'variants' but n 4, whose images this build gets: its first image"
    )
    alone = make_plan([thumb, replace(variants, prompt="another prompt")], Lock(), DiskState(INPUTS))
    assert alone.images_to_generate == 5  # other inputs: nothing to share
    # The long walk: two thumbnails (twins) beside a pair; the second copied the first, which copies the pair
    # now, and the build never started it. Both copy the pair.
    twins = make_plan(
        [replace(pair, name="a"), thumb, replace(thumb, name="c", out="out/c.png")], Lock(), DiskState(INPUTS)
    )
    assert [(a.kind, a.after) for a in twins.actions] == [
        (ActionKind.CREATE, None),
        (ActionKind.RESTORE, "a"),
        (ActionKind.RESTORE, "a"),
    ]


def test_of_targets_with_the_same_inputs_only_the_first_is_paid_for() -> None:
    twins = [replace(HERO, name=name, out=f"out/{name}.png") for name in ("a", "b", "c")]
    plan = make_plan(twins, Lock(), DiskState(INPUTS))
    assert [(a.kind, a.after) for a in plan.actions] == [
        (ActionKind.CREATE, None),
        (ActionKind.RESTORE, "a"),
        (ActionKind.RESTORE, "a"),
    ]
    assert plan.images_to_generate == 1 and plan.actions[1].reasons[0].code == "same-inputs-in-build"
    replaced = make_plan(twins, Lock(), DiskState(INPUTS), replace=["b"])  # new images for b on purpose
    assert [(a.kind, a.after) for a in replaced.actions] == [
        (ActionKind.RESTORE, "b"),  # b's new images serve its twins: one paid set
        (ActionKind.REGENERATE, None),
        (ActionKind.RESTORE, "b"),
    ]


def test_for_the_emulator_twins_never_copy_a_target_it_refuses() -> None:
    """A provider's task of an interrupted build is no emulator build's to collect: the twins copy another."""
    from pixmake.journal import PendingSubmit

    twins = [replace(HERO, name=name, out=f"out/{name}.png") for name in ("a", "b", "c")]
    key = target_key(HERO, INPUTS)
    pending = {"a": PendingSubmit("a", key, "cbid-a", "task_a")}  # paid at the provider
    plan = make_plan(twins, Lock(), DiskState(INPUTS), pending=pending, builder=Builder.EMULATOR)
    assert [(a.kind, a.after) for a in plan.actions] == [
        (ActionKind.RESUME, None),  # the executor fails it: "a build without --emulator collects it"
        (ActionKind.CREATE, None),
        (ActionKind.RESTORE, "b"),
    ]
    provider = make_plan(twins, Lock(), DiskState(INPUTS), pending=pending, builder=Builder.PROVIDER)
    assert [a.after for a in provider.actions] == [None, "a", "a"]


def test_placeholders_with_the_providers_images_locked_for_a_twin_are_replaced_from_them_free() -> None:
    twin = replace(HERO, name="twin", out="out/twin.png")
    lock, disk = project(HERO, twin, inputs=INPUTS)
    lock = Lock(MappingProxyType({"hero": replace(lock.entries["hero"], emulator=True), "twin": lock.entries["twin"]}))
    plan = make_plan([HERO, twin], lock, DiskState(disk), builder=Builder.PROVIDER)
    assert [(a.kind, [r.code for r in a.reasons]) for a in plan.actions] == [
        (ActionKind.RESTORE, ["same-inputs"]),  # twin's real images, not a new payment
        (ActionKind.UNCHANGED, []),
    ]
    assert plan.images_to_generate == 0


def test_inputs_built_before_are_restored_from_the_history_while_cached() -> None:
    lock, disk = project(HERO, inputs=INPUTS)
    earlier_hero = replace(HERO, prompt="a red mug")
    earlier, _ = built(earlier_hero, INPUTS, tag="earlier")
    remembered = {earlier.key: earlier}
    plan = make_plan([earlier_hero], lock, DiskState(disk), earlier=remembered.get)
    kind, codes, _ = only(plan)
    assert (kind, codes) == (ActionKind.RESTORE, ["built-before"]) and plan.actions[0].source == earlier
    assert only(make_plan([earlier_hero], lock, DiskState(disk)))[0] is ActionKind.REGENERATE  # nothing remembered
    assert only(make_plan([earlier_hero], lock, DiskState(disk), earlier=remembered.get, replace=["hero"]))[1] == [
        "replace"
    ]  # --replace: new images on purpose


def test_the_emulators_placeholders_are_kept_for_the_emulator_and_generated_for_the_provider() -> None:
    lock, disk = project(HERO, inputs=INPUTS)
    lock = Lock(MappingProxyType({"hero": replace(lock.entries["hero"], emulator=True)}))
    kept = make_plan([HERO], lock, DiskState(disk))
    assert only(kept)[:2] == (ActionKind.UNCHANGED, ["emulator-placeholder"]) and kept.up_to_date
    assert kept.summary().endswith(
        "1 target holds placeholder images from build --emulator (plan -v lists them), which a build "
        "without --emulator regenerates (1 image)"
    )
    assert only(make_plan([HERO], lock, DiskState(disk), builder=Builder.PROVIDER))[:2] == (
        ActionKind.REGENERATE,
        ["emulator-placeholder"],
    )
    renamed = replace(HERO, name="hero-v2")  # a twin of placeholders is no free restore for the provider
    twin = make_plan([renamed], lock, DiskState(disk), builder=Builder.PROVIDER, orphans=False)
    assert only(twin)[:2] == (ActionKind.CREATE, ["emulator-placeholder", "replaces-file"])  # hero's file, at its out
    assert twin.images_to_generate == 1
    edited = make_plan([HERO], lock, DiskState({**disk, "out/hero.png": sha("mine")}), builder=Builder.PROVIDER)
    assert only(edited)[0] is ActionKind.EDITED and only(edited)[2][-1] == (
        "kept as is; its locked images are placeholders from build --emulator: pixmake build --emulator hero "
        "--replace hero makes new placeholders (free), pixmake build hero --replace hero generates real ones (paid), "
        "pixmake accept hero records your files as real"
    )  # not "build --restore puts the locked bytes back": for a build without --emulator it pays
    emulated_twin = replace(lock.entries["hero"], outputs=(LockedOutput("out/old.png", sha("other"), 1, 8, 8),))
    both = Lock(MappingProxyType({"hero": replace(lock.entries["hero"], emulator=False), "zed": emulated_twin}))
    restored = make_plan([renamed], both, DiskState(disk), builder=Builder.PROVIDER, orphans=False)
    assert only(restored)[0] is ActionKind.RESTORE and restored.actions[0].source == both.entries["hero"]
    missing = {path: h for path, h in disk.items() if path != "out/hero.png"}
    gone = make_plan(
        [HERO], lock, DiskState(missing, cached_objects=frozenset(disk.values())), builder=Builder.PROVIDER
    )
    assert only(gone)[0] is ActionKind.REGENERATE  # not put back from the cache either


def test_moved_out_path_is_a_free_restore() -> None:
    lock, disk = project(HERO, inputs=INPUTS)
    moved = replace(HERO, out="assets/hero.png")
    cached = frozenset(o.sha256 for o in lock.entries["hero"].outputs)
    plan = make_plan([moved], lock, DiskState(disk, cached_objects=cached))
    kind, codes, texts = only(plan)
    assert (kind, codes) == (ActionKind.RESTORE, ["output-missing", "output-stale"])
    assert texts[1] == "output out/hero.png left over from an earlier out or n; build --prune deletes it"
    assert [o.path for o in plan.actions[0].stale] == ["out/hero.png"]


def test_stale_outputs_are_reported_until_pruned_and_count_as_changes() -> None:
    four = replace(HERO, n=4, out="out/c.png")
    lock, disk = project(four, inputs=INPUTS)
    two = replace(four, n=2, size="3:2")  # paid: n lowered alone keeps the first images (see below)
    plan = make_plan([two], lock, DiskState(disk))
    (action,) = plan.actions
    assert action.kind is ActionKind.REGENERATE
    assert [o.path for o in action.stale] == ["out/c-3.png", "out/c-4.png"]
    assert action.reasons[-1].details == {"paths": ["out/c-3.png", "out/c-4.png"]}
    # After the build: the lock holds the new outputs and records the old ones as stale.
    rebuilt, outputs = built(two, disk)
    entry = replace(rebuilt, stale=lock.entries["hero"].outputs[2:])
    after = Lock(MappingProxyType({"hero": entry}))
    plan = make_plan([two], after, DiskState({**disk, **outputs}))
    (action,) = plan.actions
    assert action.kind is ActionKind.UNCHANGED and plan.changes == (action,) and plan.listed == (action,)
    assert [r.code for r in action.reasons] == ["output-stale"]
    # A stale file deleted by hand, or one another target writes now, is not reported.
    gone = {k: v for k, v in {**disk, **outputs}.items() if k != "out/c-4.png"}
    other = replace(HERO, name="other", out="out/c-3.png")
    plan = make_plan([two, other], after, DiskState(gone))
    assert plan.actions[0].stale == () and not plan.actions[0].reasons
    reader = replace(HERO, name="reader", out="out/r.png", references=("out/c-4.png",))  # now an input: kept
    plan = make_plan([two, reader], after, DiskState({**disk, **outputs}))
    assert [o.path for o in plan.actions[0].stale] == ["out/c-3.png"]


def test_a_paid_action_names_the_unlocked_files_it_replaces() -> None:
    disk = {**INPUTS, "out/hero.png": sha("a photo someone put there")}
    plan = make_plan([HERO], Lock(), DiskState(disk))
    kind, codes, texts = only(plan)
    assert (kind, codes) == (ActionKind.CREATE, ["new", "replaces-file"])
    digest = sha("a photo someone put there")
    assert texts[1] == f"will replace existing file out/hero.png (kept as .pixmake/objects/{digest[:2]}/{digest})"
    lock, disk = project(HERO, inputs=INPUTS)  # the locked bytes in place: nothing to say
    _, codes, _ = only(make_plan([replace(HERO, prompt="a red mug")], lock, DiskState(disk)))
    assert codes == ["prompt-changed"]


def test_summary_counts_like_terraform() -> None:
    lock, disk = project(HERO, inputs=INPUTS)
    new = replace(HERO, name="new", out="out/new.png", n=2)
    plan = make_plan([HERO, new], lock, DiskState(disk))
    assert plan.summary() == "1 to create, 1 unchanged; 2 images to generate"


def test_lazy_all_unchanged_plan_behaves_like_the_real_one() -> None:
    lock, disk = project(HERO, inputs=INPUTS)
    real = make_plan([HERO], lock, DiskState(disk))
    lazy = Plan.all_unchanged([("hero", real.actions[0].key or "")])
    assert lazy.summary() == real.summary() and lazy.changes == () and lazy.listed == ()
    assert lazy.counts() == real.counts() and lazy.images_to_generate == 0
    assert [(a.name, a.kind, a.key) for a in lazy.actions] == [(a.name, a.kind, a.key) for a in real.actions]


_word = st.sampled_from(["mug", "blue", "red", "table", "studio", "light", "soft", "marble"])


@st.composite
def manifests(draw: st.DrawFn) -> tuple[list[Target], dict[str, str]]:
    """Up to 8 targets sharing a pool of references, with distinct names and output paths."""
    pool = {f"ref/{i}.png": sha(f"ref {i} {draw(st.integers(0, 3))}") for i in range(4)}
    targets = []
    for i in range(draw(st.integers(0, 8))):
        refs = draw(st.lists(st.sampled_from(sorted(pool)), max_size=2, unique=True))
        targets.append(
            Target(
                name=f"t{i}",
                prompt=" ".join(draw(st.lists(_word, min_size=1, max_size=5))),
                model=draw(st.sampled_from(["gpt-4o-image", "gpt-image-2"])),
                size=draw(st.sampled_from(["1:1", "3:2"])),
                n=draw(st.sampled_from([1, 2])),
                out=f"out/t{i}.png",
                references=tuple(refs),
                mask=draw(st.none() | st.sampled_from(sorted(pool))),
            )
        )
    return targets, pool


@given(manifests(), st.randoms())
def test_plan_after_build_is_all_unchanged(case: tuple[list[Target], dict[str, str]], random: object) -> None:
    targets, pool = case
    lock, disk = project(*targets, inputs=pool)
    random.shuffle(targets)  # type: ignore[attr-defined]  # target order does not matter
    plan = make_plan(targets, lock, DiskState(disk))
    assert all(a.kind is ActionKind.UNCHANGED for a in plan.actions)
    assert plan.changes == () and plan.images_to_generate == 0


@given(manifests(), st.data())
def test_changing_one_reference_replans_exactly_its_users(
    case: tuple[list[Target], dict[str, str]], data: st.DataObject
) -> None:
    targets, pool = case
    lock, disk = project(*targets, inputs=pool)
    ref = data.draw(st.sampled_from(sorted(pool)))
    plan = make_plan(targets, lock, DiskState({**disk, ref: sha("edited")}))
    users = {t.name for t in targets if ref in t.references or t.mask == ref}
    replanned = {a.name for a in plan.actions if a.kind is ActionKind.REGENERATE or a.after is not None}
    assert replanned == users  # a user with the same inputs as another copies its new images (after)
    assert plan.images_to_generate == sum(
        {a.key: a.target.n for a in plan.actions if a.kind.paid and a.target}.values()
    )
    assert {a.name for a in plan.actions if a.kind is ActionKind.UNCHANGED} == {t.name for t in targets} - users


def test_a_paid_task_of_an_interrupted_build_is_resumed_not_paid_again() -> None:
    """A journaled task for a target's current inputs is collected (RESUME), whatever the lock says."""
    from pixmake.journal import PendingSubmit

    lock, disk = project(HERO, inputs=INPUTS)
    key = target_key(HERO, disk)
    pending = {"hero": PendingSubmit("hero", key, "cbid-1", "task_123")}
    # a killed `build --replace hero`: the lock still matches, so without the journal it is UNCHANGED
    plan = make_plan([HERO], lock, DiskState(disk), pending=pending)
    (action,) = plan.actions
    assert action.kind is ActionKind.RESUME and not action.kind.paid and action.kind.generates
    assert [r.text for r in action.reasons] == ["collecting paid task task_123 from an interrupted build"]
    assert action.fallback is not None and action.fallback.kind is ActionKind.UNCHANGED
    assert plan.summary() == "1 to resume (already paid); 0 images to generate"
    assert plan.images_to_generate == 0 and not plan.up_to_date
    # a killed first build: CREATE without the journal
    created = make_plan([HERO], Lock(), DiskState(INPUTS), pending=pending)
    assert [(a.kind, a.fallback and a.fallback.kind) for a in created.actions] == [
        (ActionKind.RESUME, ActionKind.CREATE)
    ]


def test_a_task_journaled_more_than_a_day_ago_is_resumed_with_a_word_on_its_expired_links() -> None:
    from pixmake.journal import PendingSubmit

    lock, disk = project(HERO, inputs=INPUTS)
    key = target_key(HERO, disk)
    now = 2_000_000_000.0
    for sent, said in [(now - 3600, ""), (now - 3 * 86_400 - 5, "; sent 3 days ago"), (None, "")]:
        pending = {"hero": PendingSubmit("hero", key, "cbid-1", "task_123", sent_at=sent)}
        (action,) = make_plan([HERO], lock, DiskState(disk), pending=pending, now=now).actions
        (reason,) = action.reasons
        assert action.kind is ActionKind.RESUME
        if said:
            assert reason.text == (
                "collecting paid task task_123 from an interrupted build; sent 3 days ago, and result links last "
                "24 hours: should its images be gone, they are paid for again (--max-images 0 stops that)"
            )
            assert reason.details is not None and reason.details["age"] == 3 * 86_400 + 5
        else:
            assert reason.text == "collecting paid task task_123 from an interrupted build"


def test_a_paid_task_for_other_inputs_or_a_removed_target_is_dropped_and_fails_check() -> None:
    from pixmake.journal import PendingSubmit

    lock, disk = project(HERO, inputs=INPUTS)
    stale_task = {"hero": PendingSubmit("hero", "old-key", "cbid-1", "task_123")}
    plan = make_plan([HERO], lock, DiskState(disk), pending=stale_task)
    assert [a.kind for a in plan.actions] == [ActionKind.UNCHANGED] and plan.changes == ()
    assert [t.name for t in plan.abandoned] == ["hero"] and not plan.up_to_date
    assert "task_123" in plan.abandoned[0].reason.text
    assert plan.summary() == "1 unchanged, 1 interrupted task to drop (inputs changed); 0 images to generate"
    gone = {"old": PendingSubmit("old", "k", "cbid-2")}
    assert [t.name for t in make_plan([HERO], lock, DiskState(disk), pending=gone).abandoned] == ["old"]
    # a selection (orphans=False) leaves other targets' tasks alone
    assert make_plan([HERO], lock, DiskState(disk), pending=gone, orphans=False).up_to_date


def earlier_project(*targets: Target, inputs: dict[str, str]) -> tuple[Lock, dict[str, str]]:
    """:func:`project`, as an earlier pixmake locked it: every key verbatim (prompt and parameters as written)."""
    lock, hashes = project(*targets, inputs=inputs)
    by_name = {t.name: t for t in targets}
    entries = {name: replace(e, key=verbatim_key(by_name[name], hashes)) for name, e in lock.entries.items()}
    return Lock(MappingProxyType(entries)), hashes


def test_a_lock_whose_prompt_kept_a_csv_cells_crlf_is_the_same_prompt() -> None:
    """An earlier pixmake read a quoted CSV cell's CRLF as it was; today's reads LF. Upgrading pays nothing:
    the entry is read under today's key (as api.load_lock reads every lock)."""
    before = replace(HERO, prompt="a blue mug\r\nwith a handle")
    lock, disk = earlier_project(before, inputs=INPUTS)
    read = current_keys(lock)
    today = replace(HERO, prompt="a blue mug\nwith a handle")
    action = make_plan([today], read, DiskState(disk)).actions[0]
    assert (action.kind, action.key) == (ActionKind.UNCHANGED, target_key(today, disk))
    edited = replace(today, n=2, out="out/hero.png")
    paid = make_plan([edited], read, DiskState(disk)).actions[0]
    assert paid.kind is ActionKind.REGENERATE and paid.key == target_key(edited, disk)
    other = replace(HERO, prompt="a blue mug\nwith two handles")
    assert only(make_plan([other], read, DiskState(disk)))[0] is ActionKind.REGENERATE


def test_an_earlier_lock_of_a_prompt_since_respaced_or_its_callback_moved_pays_nothing() -> None:
    """Keyed verbatim by an earlier version; then the prompt lost its block's newline and a double space, and
    callback_url changed: the same images, and a twin or a rename finds them under today's key."""
    before = replace(HERO, prompt="a blue mug  on a wooden table\n", params=MappingProxyType({"callback_url": "a"}))
    lock, disk = earlier_project(before, inputs=INPUTS)
    assert lock.entries["hero"].key != target_key(before, disk)  # what this test is about
    read = current_keys(lock)
    today = replace(HERO, params=MappingProxyType({"callback_url": "b"}))
    action = make_plan([today], read, DiskState(disk)).actions[0]
    assert (action.kind, action.key) == (ActionKind.UNCHANGED, target_key(today, disk))
    renamed = replace(today, name="hero-2")
    moved = make_plan([renamed], read, DiskState(disk), orphans=False).actions[0]
    assert (moved.kind, [r.code for r in moved.reasons]) == (ActionKind.RESTORE, ["renamed"])
    other = replace(today, prompt="a red mug on a wooden table")
    assert only(make_plan([other], read, DiskState(disk)))[:2] == (ActionKind.REGENERATE, ["prompt-changed"])
    quality = replace(today, params=MappingProxyType({"callback_url": "b", "quality": "high"}))
    assert only(make_plan([quality], read, DiskState(disk)))[0] is ActionKind.REGENERATE


def test_a_rewrapped_prompt_is_unchanged_under_todays_key() -> None:
    lock, disk = project(HERO, inputs=INPUTS)
    folded = replace(HERO, prompt="  a blue  mug on a wooden\ttable\n")
    assert only(make_plan([folded], lock, DiskState(disk)))[0] is ActionKind.UNCHANGED


def test_fewer_images_keep_the_first_ones_for_free() -> None:
    """n lowered: the first images of the locked ones are what a build would pay for again."""
    four = replace(HERO, n=4)
    lock, disk = project(four, inputs=INPUTS)
    two = replace(HERO, n=2)
    (action,) = make_plan([two], lock, DiskState(disk)).actions
    assert (action.kind, [r.code for r in action.reasons]) == (ActionKind.RESTORE, ["n-lowered", "output-stale"])
    assert action.reasons[0].text == "n 4 → 2: its first 2 locked images are kept"
    assert action.key == target_key(two, disk) and action.source is not None
    assert action.source.outputs == lock.entries["hero"].outputs[:2]
    assert [o.path for o in action.stale] == ["out/hero-3.png", "out/hero-4.png"]
    one = replace(HERO, n=1)
    assert only(make_plan([one], lock, DiskState(disk)))[2][0] == "n 4 → 1: its first locked image is kept"


def test_more_images_keep_the_locked_ones_and_pay_for_the_rest() -> None:
    two = replace(HERO, n=2)
    lock, disk = project(two, inputs=INPUTS)
    four = replace(HERO, n=4)
    plan = make_plan([four], lock, DiskState(disk))
    (action,) = plan.actions
    assert (action.kind, [r.text for r in action.reasons]) == (
        ActionKind.REGENERATE,
        ["n 2 → 4: keeps its 2 locked images, generates 2 more"],
    )
    assert action.source == lock.entries["hero"] and action.key == target_key(four, disk)
    assert (action.images, plan.images_to_generate) == (2, 2)
    assert plan.summary() == "1 to regenerate; 2 images to generate"
    one_lock, one_disk = project(HERO, inputs=INPUTS)
    assert only(make_plan([two], one_lock, DiskState(one_disk)))[2] == [
        "n 1 → 2: keeps its locked image, generates 1 more",
        "output out/hero.png left over from an earlier out or n; build --prune deletes it",
    ]


def test_more_images_pay_for_all_when_the_rest_is_no_n_of_the_model_or_the_locked_ones_are_gone() -> None:
    """gpt-4o-image takes n 1, 2 or 4: 1 → 4 would ask for 3, so 4 are made; images out of reach, placeholders,
    and another change pay for all as well; build --emulator makes a whole set of placeholders."""
    one_lock, one_disk = project(HERO, inputs=INPUTS)
    four = replace(HERO, n=4)
    (action,) = make_plan([four], one_lock, DiskState(one_disk)).actions
    assert (action.kind, action.source, action.images) == (ActionKind.REGENERATE, None, 4)
    two = replace(HERO, n=2)
    lock, disk = project(two, inputs=INPUTS)
    gone = {path: digest for path, digest in disk.items() if path != "out/hero-1.png"}
    assert make_plan([four], lock, DiskState(gone)).images_to_generate == 4
    cached = frozenset(o.sha256 for o in lock.entries["hero"].outputs)
    assert make_plan([four], lock, DiskState(gone, cached_objects=cached)).images_to_generate == 2
    placeholders = Lock(MappingProxyType({"hero": replace(lock.entries["hero"], emulator=True)}))
    assert make_plan([four], placeholders, DiskState(disk)).images_to_generate == 4
    assert make_plan([replace(four, prompt="a red mug")], lock, DiskState(disk)).images_to_generate == 4
    (emulated,) = make_plan([four], lock, DiskState(disk), builder=Builder.EMULATOR).actions
    assert (emulated.source, emulated.images, [r.code for r in emulated.reasons]) == (None, 4, ["n-changed"])


def test_plans_count_only_what_the_provider_pays_for_placeholders_when_its_images_are_remembered() -> None:
    """`pixmake plan` keeps placeholders and says what a build without --emulator pays for them: nothing
    when the provider's images for these inputs are remembered, the rest when those of a lower n are."""
    two = replace(HERO, n=2)
    provider, _ = built(two, INPUTS, tag="provider")
    placeholders = replace(provider, emulator=True, outputs=built(two, INPUTS, tag="emulator")[0].outputs)
    lock = Lock(MappingProxyType({"hero": placeholders}))
    disk = DiskState({**INPUTS, **{o.path: o.sha256 for o in placeholders.outputs}})
    plan = make_plan([two], lock, disk, earlier={provider.key: provider}.get)
    assert only(plan)[2] == [
        "its locked images are placeholders from build --emulator; a build without --emulator puts back the "
        "2 images the provider made for these inputs before, free"
    ]
    assert plan.summary().endswith(
        "1 target holds placeholder images from build --emulator (plan -v lists them), which a build without "
        "--emulator replaces with "
        "the provider's, free"
    )
    (restore,) = make_plan([two], lock, disk, earlier={provider.key: provider}.get, builder=Builder.PROVIDER).actions
    assert (restore.kind, restore.images) == (ActionKind.RESTORE, 0)

    one, _ = built(replace(HERO, n=1), INPUTS, tag="provider")
    plan = make_plan([two], lock, disk, earlier={one.key: one}.get)
    assert only(plan)[2][0].endswith("keeps the 1 image the provider made for these inputs before and generates 1 more")
    assert plan.summary().endswith("which a build without --emulator regenerates (1 image)")
    (raised,) = make_plan([two], lock, disk, earlier={one.key: one}.get, builder=Builder.PROVIDER).actions
    assert (raised.kind, raised.images) == (ActionKind.REGENERATE, 1)
    assert make_plan([two], lock, disk).summary().endswith("regenerates (2 images)")  # nothing remembered


def test_more_images_than_an_earlier_build_made_keep_its_images_and_edits_stay_unless_restore() -> None:
    """n 2 → 1 (its first image kept), then 4: 4 - 1 is no n of gpt-4o-image, but the earlier entry with
    n 2 is remembered: 2 are kept, 2 paid. A retouched kept output stays as it is; --restore puts it back."""
    two = replace(HERO, n=2)
    earlier, hashes = built(two, INPUTS)
    one = replace(HERO, n=1)
    lowered = replace(earlier, key=target_key(one, INPUTS), n=1, outputs=earlier.outputs[:1], stale=earlier.outputs[1:])
    lock = Lock(MappingProxyType({"hero": lowered}))
    disk = {**INPUTS, **hashes, "out/hero.png": earlier.outputs[0].sha256}
    four = replace(HERO, n=4)
    plan = make_plan([four], lock, DiskState(disk), earlier={earlier.key: earlier}.get)
    (action,) = plan.actions
    assert (action.kind, action.source, plan.images_to_generate) == (ActionKind.REGENERATE, earlier, 2)
    assert [r.text for r in action.reasons] == [
        "n 1 → 4",
        "keeps the 2 images an earlier build got for these inputs (in .pixmake/objects), generates 2 more",
    ]
    retouched = {**disk, "out/hero-2.png": sha("retouched")}
    (edited,) = make_plan([four], lock, DiskState(retouched), earlier={earlier.key: earlier}.get).actions
    codes = [r.code for r in edited.reasons]
    assert (edited.kept, codes[:3]) == (("out/hero-2.png",), ["n-changed", "keeps-earlier", "output-edited"])
    assert "replaces-file" not in [r.code for r in edited.reasons]
    (put_back,) = make_plan(
        [four], lock, DiskState(retouched), restore=True, earlier={earlier.key: earlier}.get
    ).actions
    assert put_back.kept == () and "replaces-file" in [r.code for r in put_back.reasons]


def test_a_remembered_short_result_is_kept_for_fewer_images_and_says_what_changed() -> None:
    """n 4 came back with 3 images (remembered as an entry of n 3): n lowered to 2 takes their first two
    for free; with a prompt changed since the lock, the plan says so beside what it keeps."""
    four = replace(HERO, n=4)
    short, _ = built(replace(HERO, n=3), INPUTS, tag="short")  # remembered, cached, not written
    cached = frozenset(o.sha256 for o in short.outputs)

    def counts(target: Target) -> frozenset[int]:
        return frozenset({3}) if target.prompt == HERO.prompt else frozenset()

    remembered = {short.key: short}.get
    two = replace(HERO, n=2)
    (lowered,) = make_plan(
        [two], Lock(), DiskState(INPUTS, cached_objects=cached), earlier=remembered, earlier_counts=counts
    ).actions
    assert (lowered.kind, lowered.reasons[0].text) == (
        ActionKind.RESTORE,
        "same inputs as an earlier build but n 3: its first 2 images, in .pixmake/objects",
    )
    assert lowered.source is not None and lowered.source.outputs == short.outputs[:2]
    lock, disk = project(replace(four, prompt="a red mug"), inputs=INPUTS)
    (changed,) = make_plan(
        [four], lock, DiskState(disk, cached_objects=cached), earlier=remembered, earlier_counts=counts
    ).actions
    assert (changed.kind, changed.images, [r.code for r in changed.reasons][:2]) == (
        ActionKind.REGENERATE,
        1,
        ["prompt-changed", "keeps-earlier"],
    )
    (new,) = make_plan(
        [four], Lock(), DiskState(INPUTS, cached_objects=cached), earlier=remembered, earlier_counts=counts
    ).actions
    assert (new.kind, new.images) == (ActionKind.CREATE, 1)
    (placeholders,) = make_plan(
        [four],
        Lock(),
        DiskState(INPUTS, cached_objects=cached),
        earlier=remembered,
        earlier_counts=counts,
        builder=Builder.EMULATOR,
    ).actions
    assert (placeholders.images, [r.code for r in placeholders.reasons]) == (4, ["new"])


def test_of_twins_with_raised_n_the_one_keeping_images_pays_and_the_other_copies_it() -> None:
    two, other = replace(HERO, n=2), replace(HERO, name="other", n=1, out="out/other.png", prompt="something else")
    lock, disk = project(other, two, inputs=INPUTS)
    four = replace(HERO, n=4)
    twin = replace(four, name="a-twin", out="out/twin.png")  # first in manifest order, nothing locked
    plan = make_plan([twin, four], lock, DiskState(disk), orphans=False)
    assert [(a.name, a.kind, a.images, a.after) for a in plan.actions] == [
        ("a-twin", ActionKind.RESTORE, 0, "hero"),
        ("hero", ActionKind.REGENERATE, 2, None),
    ]
    assert plan.images_to_generate == 2


def test_fewer_images_with_another_change_or_out_of_reach_are_paid_for() -> None:
    four = replace(HERO, n=4)
    lock, disk = project(four, inputs=INPUTS)
    assert only(make_plan([replace(HERO, n=2, prompt="a red mug")], lock, DiskState(disk)))[0] is ActionKind.REGENERATE
    assert only(make_plan([replace(HERO, n=8)], lock, DiskState(disk)))[0] is ActionKind.REGENERATE
    first = lock.entries["hero"].outputs[0].path
    gone = {path: sha for path, sha in disk.items() if path != first}  # deleted, and not in the object cache
    assert only(make_plan([replace(HERO, n=2)], lock, DiskState(gone)))[0] is ActionKind.REGENERATE


def test_fewer_images_leave_an_output_edited_by_hand_as_it_is() -> None:
    four = replace(HERO, n=4)
    lock, disk = project(four, inputs=INPUTS)
    edited = {**disk, "out/hero-1.png": sha("retouched")}
    cached = frozenset(o.sha256 for o in lock.entries["hero"].outputs)
    assert only(make_plan([replace(HERO, n=2)], lock, DiskState(edited, cached_objects=cached)))[0] is ActionKind.EDITED
    someones = {**disk, "out/hero.png": sha("a file already there")}  # n 4 → 1 writes out/hero.png
    assert only(make_plan([replace(HERO, n=1)], lock, DiskState(someones)))[0] is ActionKind.EDITED


def test_a_target_wanting_fewer_images_of_a_locked_targets_inputs_takes_its_first_ones() -> None:
    four = replace(HERO, n=4)
    lock, disk = project(four, inputs=INPUTS)
    two = replace(HERO, name="thumbs", n=2, out="out/thumbs.png")
    plan = make_plan([four, two], lock, DiskState(disk))
    action = plan.actions[1]
    assert (action.kind, [r.text for r in action.reasons]) == (
        ActionKind.RESTORE,
        ["same inputs as locked target 'hero' but n 4: its first 2 images"],
    )
    assert action.source is not None and action.source.outputs == lock.entries["hero"].outputs[:2]
    assert action.key == target_key(two, disk) and plan.images_to_generate == 0
    both_lowered = make_plan([replace(HERO, n=2), two], lock, DiskState(disk))  # the hero lowered, a twin added
    assert [a.kind for a in both_lowered.actions] == [ActionKind.RESTORE, ActionKind.RESTORE]


def test_a_plan_keeping_placeholders_gives_one_figure_for_what_a_real_build_pays() -> None:
    """The review: "1 image to generate; 1 target holds placeholders … (2 images)": the bill was a sum."""
    two = replace(HERO, n=2)
    placeholders = replace(built(two, INPUTS, tag="emulator")[0], emulator=True)
    logo = Target("logo", "a logo", "gpt-4o-image", "1:1", 1, "out/logo.png")
    disk = DiskState({**INPUTS, **{o.path: o.sha256 for o in placeholders.outputs}})
    plan = make_plan([two, logo], Lock(MappingProxyType({"hero": placeholders})), disk)
    assert plan.summary() == (
        "1 to create, 1 unchanged; 1 image to generate; 1 target holds placeholder images from build --emulator "
        "(plan -v lists them), "
        "which a build without --emulator regenerates (2 images): 3 images to pay for without --emulator"
    )
    provider = make_plan([two, logo], Lock(MappingProxyType({"hero": placeholders})), disk, builder=Builder.PROVIDER)
    assert provider.images_to_generate == 3  # what `plan --provider` says, and a real build pays


def test_a_missing_output_says_when_git_refused_to_look_for_its_committed_copy() -> None:
    entry, _ = built(HERO, INPUTS)
    lock = Lock(MappingProxyType({"hero": entry}))
    refused = "git config --global --add safe.directory /ci/checkout"
    kind, codes, texts = only(make_plan([HERO], lock, DiskState(dict(INPUTS), git_refused=refused)))
    assert (kind, codes) == (ActionKind.REGENERATE, ["output-missing", "not-cached"])
    assert texts[1] == (
        "locked bytes are not in the object cache; git refused to read this repository, so git's copy was not "
        f"looked for ({refused})"
    )


def test_a_prompt_diff_splits_at_line_ends_and_escapes_only_what_a_terminal_acts_on() -> None:
    from pixmake.plan import _prompt_diff

    assert _prompt_diff("one\nline \x1b[2J", "one\nword \x1b[2J") == "-[line] +[word]"


def test_a_task_journaled_before_another_build_locked_its_inputs_is_dropped_not_collected() -> None:
    """The CI review: a job restored a .pixmake/ older than the lock: its journaled task for q, whose
    inputs another job had built and committed since, was collected over the committed images."""
    from pixmake.journal import PendingSubmit

    lock, disk = project(HERO, inputs=INPUTS)
    key = target_key(HERO, disk)
    for over, kind in [(None, ActionKind.UNCHANGED), ("an-older-key", ActionKind.UNCHANGED), (key, ActionKind.RESUME)]:
        pending = {"hero": PendingSubmit("hero", key, "cbid-1", "task_123", over=over)}
        plan = make_plan([HERO], lock, DiskState(disk), pending=pending)
        (action,) = plan.actions
        assert action.kind is kind, over  # sent over the entry the lock still holds: a killed --replace's
        if kind is ActionKind.UNCHANGED:
            [dropped] = plan.abandoned
            assert dropped.reason.text == (
                "paid task task_123 from an interrupted build is dropped, not collected: its inputs are built and "
                "locked already (a .pixmake/ older than pixmake.lock?)"
            )
            assert plan.summary() == "1 unchanged, 1 interrupted task to drop (built already); 0 images to generate"


def test_a_paid_task_is_collected_over_placeholders_locked_since() -> None:
    """The second diff review: a teammate's `build --emulator` pulled in since made the paid task look
    "built already": it was dropped, and the next build paid again."""
    from pixmake.journal import PendingSubmit

    lock, disk = project(HERO, inputs=INPUTS)
    key = target_key(HERO, disk)
    placeholders = Lock(MappingProxyType({"hero": replace(lock.entries["hero"], emulator=True)}))
    pending = {"hero": PendingSubmit("hero", key, "cbid-1", "task_123", over=None)}
    for builder in (Builder.EITHER, Builder.PROVIDER):
        plan = make_plan([HERO], placeholders, DiskState(disk), pending=pending, builder=builder)
        assert [a.kind for a in plan.actions] == [ActionKind.RESUME] and not plan.abandoned, builder


# --- a reference or mask saved again with the same pixels ------------------------------------------


def with_pixels(lock: Lock, digests: dict[str, str]) -> Lock:
    """``lock`` with the pixel digests of its entries' inputs recorded (by sha256), as a build records them."""

    def noted(entry: LockEntry) -> LockEntry:
        refs = tuple(replace(r, pixels=digests.get(r.sha256)) for r in entry.references)
        mask = None if entry.mask is None else replace(entry.mask, pixels=digests.get(entry.mask.sha256))
        return replace(entry, references=refs, mask=mask)

    return Lock(MappingProxyType({name: noted(e) for name, e in lock.entries.items()}))


MARBLE = replace(HERO, name="marble", out="out/marble.png", mask="ref/mask.png")
DIGESTS = {sha("mug"): "pixels of the mug", sha("mask"): "pixels of the mask"}


def asked_of(shows: dict[str, str]) -> tuple[list[str], Callable[[str], str | None]]:
    """A ``pixels`` function answering from ``shows`` (path → digest), and the list of paths it was asked of."""
    asked: list[str] = []

    def pixels(path: str) -> str | None:
        asked.append(path)
        return shows.get(path)

    return asked, pixels


def test_a_reference_saved_again_with_the_same_pixels_is_relocked_not_paid_for() -> None:
    lock, disk = project(HERO, MARBLE, inputs=INPUTS)
    lock = with_pixels(lock, DIGESTS)
    now = {**disk, "ref/mug.png": sha("mug, optimised")}  # smaller file, same pixels
    asked, pixels = asked_of({"ref/mug.png": "pixels of the mug"})
    plan = make_plan([HERO, MARBLE], lock, DiskState(now), pixels=pixels)
    assert [a.kind for a in plan.actions] == [ActionKind.RESTORE, ActionKind.RESTORE]
    assert plan.images_to_generate == 0
    hero = plan.actions[0]
    assert [r.code for r in hero.reasons] == ["same-pixels"]
    assert hero.reasons[0].text == "reference ref/mug.png saved again with the same pixels: nothing to generate"
    # The entry a build records: the target's key now, the file's new hash, the pixels it shows.
    assert hero.source is not None and hero.key == target_key(HERO, now)
    assert hero.source.key == hero.key and hero.source.outputs == lock.entries["hero"].outputs
    assert [(r.path, r.sha256, r.pixels) for r in hero.source.references] == [
        ("ref/mug.png", sha("mug, optimised"), "pixels of the mug")
    ]
    assert set(asked) == {"ref/mug.png"}


def test_a_mask_saved_again_with_the_same_pixels_is_relocked() -> None:
    lock, disk = project(MARBLE, inputs=INPUTS)
    now = {**disk, "ref/mask.png": sha("mask, re-saved"), "ref/mug.png": sha("mug, re-saved")}
    _, pixels = asked_of({"ref/mask.png": "pixels of the mask", "ref/mug.png": "pixels of the mug"})
    kind, codes, texts = only(make_plan([MARBLE], with_pixels(lock, DIGESTS), DiskState(now), pixels=pixels))
    assert (kind, codes) == (ActionKind.RESTORE, ["same-pixels"])
    assert texts == [
        "reference ref/mug.png and mask ref/mask.png saved again with the same pixels: nothing to generate"
    ]


def test_other_pixels_or_no_recorded_pixels_regenerate() -> None:
    lock, disk = project(HERO, inputs=INPUTS)
    now = {**disk, "ref/mug.png": sha("mug, retouched")}
    _, pixels = asked_of({"ref/mug.png": "pixels of a retouched mug"})
    kind, codes, _ = only(make_plan([HERO], with_pixels(lock, DIGESTS), DiskState(now), pixels=pixels))
    assert (kind, codes) == (ActionKind.REGENERATE, ["reference-changed"])
    # A lock from before pixels were recorded: the file is not even decoded.
    asked, pixels = asked_of({"ref/mug.png": "pixels of the mug"})
    kind, codes, _ = only(make_plan([HERO], lock, DiskState(now), pixels=pixels))
    assert (kind, codes, asked) == (ActionKind.REGENERATE, ["reference-changed"], [])


def test_same_pixels_with_another_change_regenerates() -> None:
    lock, disk = project(HERO, inputs=INPUTS)
    now = {**disk, "ref/mug.png": sha("mug, optimised")}
    _, pixels = asked_of({"ref/mug.png": "pixels of the mug"})
    edited = replace(HERO, prompt="a red mug on a wooden table")
    kind, codes, _ = only(make_plan([edited], with_pixels(lock, DIGESTS), DiskState(now), pixels=pixels))
    assert (kind, codes) == (ActionKind.REGENERATE, ["prompt-changed", "reference-changed"])


def test_same_pixels_leaves_an_edited_output_alone() -> None:
    lock, disk = project(HERO, inputs=INPUTS)
    now = {**disk, "ref/mug.png": sha("mug, optimised"), "out/hero.png": sha("retouched by hand")}
    _, pixels = asked_of({"ref/mug.png": "pixels of the mug"})
    kind, codes, _ = only(make_plan([HERO], with_pixels(lock, DIGESTS), DiskState(now), pixels=pixels))
    assert (kind, codes) == (ActionKind.EDITED, ["output-edited", "edited-hint"])
