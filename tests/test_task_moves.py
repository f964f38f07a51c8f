"""Which target collects each paid task of an interrupted build: the pure rule of ``pixmake.api``.

A task goes to a target that has its inputs and would pay for them; none is lost, none is given twice.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from pixmake.api import _tasks_moved_to_their_inputs
from pixmake.fingerprint import lock_entry, target_key
from pixmake.journal import PendingSubmit
from pixmake.lockfile import Lock, LockedOutput
from pixmake.manifest import Target

PROMPTS = ("a red mug", "a blue mug", "a green mug")
NAMES = ("a", "b", "c", "d")


def _target(name: str, prompt: str) -> Target:
    return Target(name, prompt, "gpt-4o-image", "1:1", 1, f"{name}.png", ())


def _key(prompt: str) -> str:
    return target_key(_target("any", prompt), {})


def _task(name: str, prompt: str) -> PendingSubmit:
    return PendingSubmit(name, _key(prompt), f"cbid-{name}", f"task-{name}")


def test_two_targets_that_swapped_prompts_mid_build_swap_their_tasks() -> None:
    pending = {"a": _task("a", "a red mug"), "b": _task("b", "a blue mug")}
    targets = [_target("a", "a blue mug"), _target("b", "a red mug")]
    moved, displaced = _tasks_moved_to_their_inputs(pending, targets, {}, Lock())
    assert not displaced
    assert {name: (task.task_id, task.was) for name, task in moved.items()} == {
        "a": ("task-b", "b"),
        "b": ("task-a", "a"),
    }


def test_a_target_keeps_the_task_it_collects_itself_and_a_locked_twin_takes_none() -> None:
    pending = {"a": _task("a", "a red mug"), "gone": _task("gone", "a blue mug")}
    targets = [_target("a", "a red mug"), _target("b", "a blue mug")]
    assert _tasks_moved_to_their_inputs(pending, targets, {}, Lock())[0]["b"].was == "gone"
    image = LockedOutput("b.png", "0" * 64, 100, 8, 8)
    locked = Lock({"b": lock_entry(targets[1], _key("a blue mug"), {}, (image,), task_id="task-b")})
    assert _tasks_moved_to_their_inputs(pending, targets, {}, locked) == (pending, ())


def test_a_target_takes_another_task_and_its_own_for_inputs_no_target_has_makes_room() -> None:
    """The review: a kept its own task (paid for a green mug, which no target has) and so could not take c's;
    both were dropped, and the build paid for a red mug again."""
    pending = {"a": _task("a", "a green mug"), "c": _task("c", "a red mug")}
    targets = [_target("a", "a red mug"), _target("c", "a blue mug")]
    moved, displaced = _tasks_moved_to_their_inputs(pending, targets, {}, Lock())
    assert {name: task.task_id for name, task in moved.items()} == {"a": "task-c"}
    assert displaced == (pending["a"],)


@given(
    st.dictionaries(st.sampled_from(NAMES), st.sampled_from(PROMPTS), min_size=1),
    st.dictionaries(st.sampled_from(NAMES), st.sampled_from(PROMPTS)),
)
def test_no_task_is_lost_or_given_twice_and_each_moved_one_has_its_new_targets_inputs(
    manifest: dict[str, str], journaled: dict[str, str]
) -> None:
    targets = [_target(name, prompt) for name, prompt in manifest.items()]
    pending = {name: _task(name, prompt) for name, prompt in journaled.items()}
    moved, displaced = _tasks_moved_to_their_inputs(pending, targets, {}, Lock())
    kept = [*moved.values(), *displaced]
    assert sorted(t.client_business_id for t in kept) == sorted(t.client_business_id for t in pending.values())
    for name, task in moved.items():
        assert task.target == name
        if task.was is not None:
            assert manifest[name] == journaled[task.was] and manifest.get(task.was) != journaled[task.was]
        else:
            assert pending[name] == task
    for task in displaced:  # made room: paid for inputs its own target no longer has
        assert manifest[task.target] != journaled[task.target]
