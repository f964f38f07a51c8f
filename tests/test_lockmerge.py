"""The lock's three-way merge by target, and `pixmake merge-lock` as git's merge driver in a real repository."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from types import MappingProxyType

import pytest
from hypothesis import given
from hypothesis import strategies as st

from conftest import PACKAGE_ROOT, run_cli
from pixmake.cli import ExitCode
from pixmake.errors import LockfileError
from pixmake.lockfile import Lock, LockedInput, LockedOutput, LockEntry, parse_lock, render_lock
from pixmake.lockmerge import Conflict, ConflictKind, LockMerge, Side, merge_lock_bytes, merge_locks, read_side


def _out(path: str, sha: str = "a") -> LockedOutput:
    return LockedOutput(f"out/{path}.png", sha * 64, 100, 8, 8)


def _entry(key: str, out: str = "t", sha: str = "a", *, stale: tuple[LockedOutput, ...] = ()) -> LockEntry:
    """An entry built from inputs ``key`` whose image ``sha`` is at out/``out``.png."""
    return LockEntry(key, "gpt-4o-image", f"prompt {key}", "1:1", 1, (_out(out, sha),), stale=stale)


def _lock(**entries: LockEntry | None) -> Lock:
    return Lock(MappingProxyType({name: e for name, e in entries.items() if e is not None}))


BASE = _entry("k0")
OURS = _entry("k1", sha="b")
THEIRS = _entry("k2", sha="c")


@pytest.mark.parametrize(
    ("base", "ours", "theirs", "merged"),
    [
        (BASE, BASE, BASE, BASE),  # unchanged on both sides
        (BASE, OURS, BASE, OURS),  # changed on ours only
        (BASE, BASE, THEIRS, THEIRS),  # changed on theirs only
        (BASE, None, BASE, None),  # removed (pruned) on ours only
        (BASE, BASE, None, None),  # removed on theirs only
        (None, None, THEIRS, THEIRS),  # added on theirs only
        (None, OURS, None, OURS),  # added on ours only
        (BASE, OURS, OURS, OURS),  # the same change on both
        (None, OURS, OURS, OURS),  # the same entry added on both
        (BASE, None, None, None),  # removed on both
    ],
    ids=[
        "unchanged",
        "ours-changed",
        "theirs-changed",
        "ours-removed",
        "theirs-removed",
        "theirs-added",
        "ours-added",
        "same-change",
        "same-add",
        "both-removed",
    ],
)
def test_a_target_changed_on_one_side_or_alike_on_both_merges_cleanly(
    base: LockEntry | None, ours: LockEntry | None, theirs: LockEntry | None, merged: LockEntry | None
) -> None:
    result = merge_locks(_lock(t=base), _lock(t=ours), _lock(t=theirs))
    assert result == LockMerge(_lock(t=merged))
    assert result.clean


def test_a_target_changed_differently_on_both_sides_is_a_conflict_that_keeps_ours() -> None:
    """Ours' entry, not none: free when the manifest resolves to ours' inputs, no dearer otherwise; theirs'
    image, elsewhere, is recorded as stale so that no file it wrote goes untracked."""
    theirs = _entry("k2", out="elsewhere", sha="c")
    result = merge_locks(_lock(t=BASE), _lock(t=OURS), _lock(t=theirs))
    assert result.conflicts == (Conflict("t", ConflictKind.CHANGED_ON_BOTH, Side.OURS),)
    assert result.lock.entries["t"] == replace(OURS, stale=theirs.outputs)
    assert not result.clean


def test_theirs_output_at_ours_path_is_not_stale() -> None:
    result = merge_locks(_lock(t=BASE), _lock(t=OURS), _lock(t=THEIRS))  # both write out/t.png
    assert result.lock.entries["t"] == OURS


def test_a_target_added_on_both_sides_with_other_images_is_a_conflict() -> None:
    result = merge_locks(Lock(), _lock(t=OURS), _lock(t=_entry("k1", sha="c")))
    assert result.conflicts == (Conflict("t", ConflictKind.ADDED_ON_BOTH, Side.OURS),)
    assert result.lock.entries["t"] == OURS


@pytest.mark.parametrize(
    ("ours", "theirs", "kind", "kept"),
    [
        (None, THEIRS, ConflictKind.REMOVED_BY_OURS, THEIRS),
        (OURS, None, ConflictKind.REMOVED_BY_THEIRS, OURS),
    ],
)
def test_removed_on_one_side_and_changed_on_the_other_keeps_the_changed_entry(
    ours: LockEntry | None, theirs: LockEntry | None, kind: ConflictKind, kept: LockEntry
) -> None:
    """Kept, the entry is an orphan the next plan shows (or free, if the manifest keeps the target); dropped,
    the target would be paid for again."""
    result = merge_locks(_lock(t=BASE), _lock(t=ours), _lock(t=theirs))
    assert result.conflicts == (Conflict("t", kind, Side.THEIRS if ours is None else Side.OURS),)
    assert result.lock.entries["t"] == kept


def test_a_removal_stands_against_a_side_that_only_pruned_leftovers() -> None:
    base = _entry("k0", stale=(_out("old"),))
    result = merge_locks(_lock(t=base), _lock(t=None), _lock(t=_entry("k0")))
    assert result == LockMerge(Lock())


def test_leftovers_merge_three_ways_when_the_image_is_the_same() -> None:
    """Ours pruned out/old.png; theirs, with the same image, wrote out/new.png before an `out` change."""
    base = _entry("k0", stale=(_out("old"),))
    ours = _entry("k0")
    theirs = _entry("k0", stale=(_out("old"), _out("new")))
    result = merge_locks(_lock(t=base), _lock(t=ours), _lock(t=theirs))
    assert result == LockMerge(_lock(t=_entry("k0", stale=(_out("new"),))))


def test_a_side_that_only_pruned_leftovers_takes_the_others_new_image() -> None:
    base = _entry("k0", out="a", stale=(_out("old"),))
    ours = _entry("k0", out="a")  # build --prune
    theirs = _entry("k2", out="b", sha="c", stale=(_out("old"), _out("a")))  # out changed from a to b, rebuilt
    result = merge_locks(_lock(t=base), _lock(t=ours), _lock(t=theirs))
    assert result == LockMerge(_lock(t=_entry("k2", out="b", sha="c", stale=(_out("a"),))))


def test_neighbouring_targets_added_and_pruned_on_each_side_merge_cleanly() -> None:
    """The review's case: git's line merge conflicts on neighbouring blocks; the merge by name does not."""
    base = _lock(a=_entry("ka", "a"), c=_entry("kc", "c"), d=_entry("kd", "d"))
    ours = _lock(a=_entry("ka", "a"), b1=_entry("kb1", "b1"), c=_entry("kc", "c"))  # d pruned
    theirs = _lock(a=_entry("ka", "a"), b2=_entry("kb2", "b2"), c=_entry("kc", "c"), d=_entry("kd", "d"))
    result = merge_locks(base, ours, theirs)
    assert result == LockMerge(
        _lock(a=_entry("ka", "a"), b1=_entry("kb1", "b1"), b2=_entry("kb2", "b2"), c=_entry("kc", "c"))
    )


def test_a_side_that_only_recorded_what_the_inputs_show_merges_with_the_others_change() -> None:
    """The last fuzz: ``accept`` of an unchanged file adds pixel digests to an entry an older pixmake wrote; a
    teammate's real change of that target was then a conflict (kept ours: the old image)."""
    ref = LockedInput("refs/mug.png", "d" * 64)
    base = replace(_entry("k0"), references=(ref,))
    digested = replace(base, references=(replace(ref, pixels="e" * 64),))
    changed = replace(_entry("k1", sha="b"), references=(ref,))
    for ours, theirs in ((digested, changed), (changed, digested)):
        result = merge_locks(_lock(t=base), _lock(t=ours), _lock(t=theirs))
        assert result.conflicts == ()
        merged = result.lock.entries["t"]
        assert merged.outputs == changed.outputs and merged.references[0].pixels == "e" * 64  # the digest kept


def test_advice_is_one_line_naming_the_target_what_was_kept_and_what_to_do() -> None:
    both = Conflict("hero", ConflictKind.CHANGED_ON_BOTH, Side.OURS).advice("my site/pixmake.lock")
    assert "\n" not in both
    assert both.startswith(
        "target 'hero' changed on both sides: my site/pixmake.lock keeps ours (in a rebase, ours is the branch "
        "rebased onto);"
    )
    assert "pixmake -C 'my site' plan" in both and "pixmake -C 'my site' accept hero" in both  # runs from the top
    assert both.endswith("; then git add 'my site/pixmake.lock'")
    theirs = Conflict("hero", ConflictKind.CHANGED_ON_BOTH, Side.OURS, _entry("k1", "hero")).advice(
        "my site/pixmake.lock"
    )
    assert (  # git leaves our images in the working tree: accepting them as they are would lock ours for theirs
        "to keep theirs as they are: git checkout --theirs -- 'my site/out/hero.png', then "
        "pixmake -C 'my site' accept hero)" in theirs
    )
    gone = Conflict("hero", ConflictKind.REMOVED_BY_OURS, Side.THEIRS).advice()
    assert gone.startswith("target 'hero' removed on our side and changed on theirs: pixmake.lock keeps theirs;")
    assert "pixmake build --prune" in gone and gone.endswith("; then git add pixmake.lock") and "\n" not in gone


# --- properties over small pools, so that sides often agree, differ, or touch the same target -------------

_names = st.sampled_from("abcde")
_outputs = st.builds(_out, st.sampled_from(["x", "y", "z"]), st.sampled_from("ab"))
_entries = st.builds(
    _entry,
    st.sampled_from(["k0", "k1", "k2"]),
    st.sampled_from(["x", "y"]),
    st.sampled_from("ab"),
    stale=st.lists(_outputs, max_size=2, unique_by=lambda o: o.path).map(tuple),
).map(lambda e: replace(e, stale=tuple(o for o in e.stale if o.path != e.outputs[0].path)))
_locks = st.dictionaries(_names, _entries, max_size=4).map(lambda d: Lock(MappingProxyType(d)))
_edits = st.dictionaries(_names, st.none() | _entries, max_size=3)  # None: the target removed


def _edited(lock: Lock, edits: dict[str, LockEntry | None]) -> Lock:
    entries = {**lock.entries, **edits}
    return Lock(MappingProxyType({name: e for name, e in entries.items() if e is not None}))


def _core(entry: LockEntry | None) -> LockEntry | None:
    return None if entry is None else replace(entry, stale=())


@given(_locks, _locks)
def test_the_same_lock_on_both_sides_is_that_lock(base: Lock, side: Lock) -> None:
    assert merge_locks(base, side, side) == LockMerge(side)


@given(_locks, _locks)
def test_a_side_left_as_the_base_takes_the_other_whole(base: Lock, side: Lock) -> None:
    assert merge_locks(base, base, side) == LockMerge(side)
    assert merge_locks(base, side, base) == LockMerge(side)


@given(_locks, _edits, _edits)
def test_edits_of_different_targets_merge_cleanly_into_both(
    base: Lock, ours: dict[str, LockEntry | None], theirs: dict[str, LockEntry | None]
) -> None:
    theirs = {name: e for name, e in theirs.items() if name not in ours}
    result = merge_locks(base, _edited(base, ours), _edited(base, theirs))
    assert result == LockMerge(_edited(base, {**ours, **theirs}))


@given(_locks, _edits, _edits)
def test_every_merged_entry_is_one_a_side_locked_and_the_result_is_a_lock(
    base: Lock, ours_edits: dict[str, LockEntry | None], theirs_edits: dict[str, LockEntry | None]
) -> None:
    """Never an image with another side's inputs: each entry's image and inputs are ours' or theirs' whole."""
    ours, theirs = _edited(base, ours_edits), _edited(base, theirs_edits)
    result = merge_locks(base, ours, theirs)
    for name, entry in result.lock.entries.items():
        assert _core(entry) in (_core(ours.entries.get(name)), _core(theirs.entries.get(name)))
        assert not {o.path for o in entry.stale} & {o.path for o in entry.outputs}
    assert parse_lock(render_lock(result.lock)) == result.lock
    for conflict in result.conflicts:
        b, o, t = (lock.entries.get(conflict.name) for lock in (base, ours, theirs))
        assert o != b and t != b and o != t
        kept = result.lock.entries[conflict.name]
        assert _core(kept) == _core(t if conflict.kind is ConflictKind.REMOVED_BY_OURS else o)
        assert conflict.kept is (Side.THEIRS if conflict.kind is ConflictKind.REMOVED_BY_OURS else Side.OURS)
    assert [c.name for c in result.conflicts] == sorted(c.name for c in result.conflicts)


@given(_locks, _edits, _edits)
def test_swapping_the_sides_swaps_only_what_a_conflict_keeps(
    base: Lock, ours_edits: dict[str, LockEntry | None], theirs_edits: dict[str, LockEntry | None]
) -> None:
    ours, theirs = _edited(base, ours_edits), _edited(base, theirs_edits)
    forward, backward = merge_locks(base, ours, theirs), merge_locks(base, theirs, ours)
    assert [c.name for c in forward.conflicts] == [c.name for c in backward.conflicts]
    conflicted = {c.name for c in forward.conflicts}
    clean = set(forward.lock.entries) - conflicted
    assert clean == set(backward.lock.entries) - conflicted
    for name in clean:
        there, back = forward.lock.entries[name], backward.lock.entries[name]
        assert _core(there) == _core(back)  # one path's leftovers may differ: each side keeps its own record first
        assert {o.path for o in there.stale} == {o.path for o in back.stale}


# --- reading the sides ------------------------------------------------------------------------------------


def test_an_empty_base_is_no_common_ancestor() -> None:
    """git passes an empty %O when both branches added the lock: the targets each added merge, alike ones too."""
    ours = render_lock(_lock(a=_entry("ka", "a"), b=_entry("kb", "b"))).encode()
    theirs = render_lock(_lock(b=_entry("kb", "b"), c=_entry("kc", "c"))).encode()
    result = merge_lock_bytes(b"", ours, theirs)
    assert result == LockMerge(_lock(a=_entry("ka", "a"), b=_entry("kb", "b"), c=_entry("kc", "c")))


def test_a_version_1_lock_merges_with_a_version_2_one() -> None:
    v1 = json.dumps({"version": 1, "targets": {"a": {**_json(_entry("ka", "a"))}}}).encode()
    theirs = render_lock(_lock(a=_entry("ka", "a"), b=_entry("kb", "b"))).encode()
    result = merge_lock_bytes(v1, v1, theirs)
    assert result == LockMerge(_lock(a=_entry("ka", "a"), b=_entry("kb", "b")))


def _json(entry: LockEntry) -> dict[str, object]:
    from pixmake.lockfile import entry_to_json

    return entry_to_json(entry)


def test_crlf_line_ends_read_as_the_lock() -> None:
    text = render_lock(_lock(a=_entry("ka", "a")))
    assert read_side(text.replace("\n", "\r\n").encode(), side="ours") == parse_lock(text)


@pytest.mark.parametrize(
    ("data", "side", "expected"),
    [
        (b'{"version": 2}\n\n{"target": "a"', "theirs", "pixmake.lock (theirs):3:15: lockfile is corrupt"),
        (b'{"version": 9}\n', "ours", "pixmake.lock (ours): lockfile format version 9 is newer"),
        (b"\xff\xfe", "theirs", "pixmake.lock (theirs): lockfile is corrupt (not UTF-8 text)"),
        (b"", "theirs", "pixmake.lock (theirs): lockfile is empty"),
        (b"", "base", None),
        (b" \n", "base", None),
    ],
)
def test_a_side_that_is_not_a_lock_is_named_without_the_advice_to_delete_it(
    data: bytes, side: str, expected: str | None
) -> None:
    if expected is None:
        assert read_side(data, side=side, empty_ok=True) == Lock()
        return
    with pytest.raises(LockfileError) as raised:
        read_side(data, side=side)
    message = str(raised.value)
    assert message.startswith(expected), message
    assert "delete" not in message and message.endswith("; pixmake.lock is left as ours")


def test_the_merge_core_imports_no_io_library() -> None:
    code = (
        "import sys, pixmake.lockmerge\n"
        "heavy = [m for m in ('httpx', 'anyio', 'rich', 'PIL', 'click') if m in sys.modules]\n"
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True, env={**os.environ, "PYTHONPATH": str(PACKAGE_ROOT)})


# --- the command ------------------------------------------------------------------------------------------


def _sides(tmp_path: Path, base: Lock | bytes, ours: Lock | bytes, theirs: Lock | bytes) -> tuple[str, str, str]:
    paths = []
    for name, lock in (("base", base), ("ours", ours), ("theirs", theirs)):
        path = tmp_path / name
        path.write_bytes(lock if isinstance(lock, bytes) else render_lock(lock).encode())
        paths.append(str(path))
    return paths[0], paths[1], paths[2]


def test_merge_lock_writes_the_merged_lock_over_ours_and_exits_0(tmp_path: Path) -> None:
    v1 = json.dumps({"version": 1, "targets": {"a": _json(_entry("ka", "a"))}}).encode()
    base, ours, theirs = _sides(tmp_path, v1, v1, _lock(a=_entry("ka", "a"), b=_entry("kb", "b")))
    outcome = run_cli("merge-lock", base, ours, theirs)
    assert (outcome.exit_code, outcome.stdout, outcome.stderr) == (ExitCode.OK, "", "")
    expected = render_lock(_lock(a=_entry("ka", "a"), b=_entry("kb", "b")))  # version 2, as pixmake writes it
    assert Path(ours).read_text() == expected


def test_merge_lock_without_a_base_file_merges_two_ways(tmp_path: Path) -> None:
    _, ours, theirs = _sides(tmp_path, b"", _lock(a=_entry("ka", "a")), _lock(b=_entry("kb", "b")))
    outcome = run_cli("merge-lock", str(tmp_path / "no-such-file"), ours, theirs)
    assert outcome.exit_code == ExitCode.OK
    assert Path(ours).read_text() == render_lock(_lock(a=_entry("ka", "a"), b=_entry("kb", "b")))


def test_merge_lock_names_each_conflict_on_one_line_writes_a_whole_lock_and_exits_1(tmp_path: Path) -> None:
    base, ours, theirs = _sides(
        tmp_path,
        _lock(a=BASE, b=BASE, z=BASE),
        _lock(a=OURS, b=BASE, c=_entry("kc", "c")),
        _lock(a=THEIRS, z=THEIRS),
    )
    outcome = run_cli("merge-lock", base, ours, theirs, "site/pixmake.lock")
    assert outcome.exit_code == ExitCode.FAILED
    lines = outcome.stderr.splitlines()
    assert [line.split("'")[1] for line in lines] == ["a", "z"]
    assert all(line.startswith("pixmake: conflict: target '") and "site/pixmake.lock" in line for line in lines)
    assert "Traceback" not in outcome.stderr
    assert parse_lock(Path(ours).read_text()) == _lock(a=OURS, c=_entry("kc", "c"), z=THEIRS)  # b: removed


@pytest.mark.parametrize("bad", ["ours", "theirs", "base"])
def test_a_side_that_is_not_a_lock_is_one_line_exit_3_and_ours_untouched(tmp_path: Path, bad: str) -> None:
    sides = {"base": _lock(a=BASE), "ours": _lock(a=OURS), "theirs": _lock(b=THEIRS)}
    corrupt = b'{"version": 2}\n\n<<<<<<< HEAD\n'
    base, ours, theirs = _sides(tmp_path, *(corrupt if name == bad else sides[name] for name in sides))
    before = Path(ours).read_bytes()
    outcome = run_cli("merge-lock", base, ours, theirs)
    assert outcome.exit_code == ExitCode.USER_ERROR
    assert outcome.stderr.startswith(f"pixmake: error: pixmake.lock ({bad}):3:1: lockfile is corrupt")
    assert len(outcome.stderr.splitlines()) == 1
    assert Path(ours).read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["base", "ours", "theirs"]  # no temp file left


# --- git itself -------------------------------------------------------------------------------------------


def _git(repo: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "GIT_CONFIG_GLOBAL": os.devnull,  # the developer's own git settings change nothing
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.com",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.com",
        "PYTHONPATH": str(PACKAGE_ROOT),  # the driver runs the pixmake under test
    }
    return subprocess.run(["git", *args], cwd=repo, env=env, capture_output=True, text=True, check=check)


def _commit_lock(repo: Path, lock: Lock, message: str) -> None:
    (repo / "pixmake.lock").write_text(render_lock(lock))
    _git(repo, "add", "pixmake.lock")
    _git(repo, "commit", "-q", "-m", message)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A repository set up as the README says, by `pixmake init`: the attribute committed, the driver configured."""
    root = tmp_path / "repo"
    root.mkdir()
    _git(root, "init", "-q", "-b", "main")
    assert run_cli("-C", str(root), "init").exit_code == 0
    assert _git(root, "config", "merge.pixmake.driver").stdout.strip() == (
        f"{shlex.quote(sys.executable)} -m pixmake merge-lock %O %A %B %P"
    )
    _git(root, "add", ".gitattributes")
    _commit_lock(root, _lock(a=_entry("ka", "a"), c=_entry("kc", "c")), "base")
    return root


needs_git = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")


@needs_git
def test_git_merges_two_branches_that_each_add_a_neighbouring_target(repo: Path, tmp_path: Path) -> None:
    base = _lock(a=_entry("ka", "a"), c=_entry("kc", "c"))
    _git(repo, "checkout", "-q", "-b", "other")
    _commit_lock(repo, _edited(base, {"b2": _entry("kb2", "b2")}), "add b2")
    _git(repo, "checkout", "-q", "main")
    _commit_lock(repo, _edited(base, {"b1": _entry("kb1", "b1")}), "add b1")
    sides = [_git(repo, "show", f"{rev}:pixmake.lock").stdout for rev in ("HEAD~1", "HEAD", "other")]
    files = []
    for name, text in zip(("base", "ours", "theirs"), sides, strict=True):
        (tmp_path / name).write_text(text)
        files.append(str(tmp_path / name))
    line_merge = _git(repo, "merge-file", "-p", files[1], files[0], files[2], check=False)
    assert line_merge.returncode > 0  # without the driver: a conflict between the two new blocks

    merged = _git(repo, "merge", "-q", "--no-edit", "other", check=False)
    assert merged.returncode == 0, merged.stderr
    expected = _edited(base, {"b1": _entry("kb1", "b1"), "b2": _entry("kb2", "b2")})
    assert (repo / "pixmake.lock").read_text() == render_lock(expected)
    assert _git(repo, "show", "HEAD:pixmake.lock").stdout == render_lock(expected)  # committed as merged


@needs_git
def test_git_reports_a_conflict_when_one_target_changed_on_both_branches(repo: Path) -> None:
    base = _lock(a=_entry("ka", "a"), c=_entry("kc", "c"))
    _git(repo, "checkout", "-q", "-b", "other")
    _commit_lock(repo, _edited(base, {"a": _entry("ka2", "a", sha="c"), "d": _entry("kd", "d")}), "theirs")
    _git(repo, "checkout", "-q", "main")
    _commit_lock(repo, _edited(base, {"a": _entry("ka1", "a", sha="b")}), "ours")

    merged = _git(repo, "merge", "--no-edit", "other", check=False)
    assert merged.returncode != 0
    assert "CONFLICT (content): Merge conflict in pixmake.lock" in merged.stdout
    assert "pixmake: conflict: target 'a' changed on both sides: pixmake.lock keeps ours" in merged.stderr
    assert _git(repo, "diff", "--name-only", "--diff-filter=U").stdout.split() == ["pixmake.lock"]
    resolved = parse_lock((repo / "pixmake.lock").read_text())  # no conflict markers: a lock pixmake reads
    assert resolved == _edited(base, {"a": _entry("ka1", "a", sha="b"), "d": _entry("kd", "d")})


@needs_git
def test_the_side_a_conflict_did_not_keep_is_remembered_for_a_free_restore(repo: Path) -> None:
    """In a rebase, ours is upstream: your own images, built here, are theirs. Kept in the project's history,
    a plan restores them for free if you resolve the manifest to your inputs (their images are cached)."""
    from pixmake.history import recall

    (repo / ".pixmake").mkdir()  # a work tree pixmake has built in
    (repo / ".gitignore").write_text(".pixmake/\n")
    base = _lock(a=_entry("ka", "a"), c=_entry("kc", "c"))
    _git(repo, "checkout", "-q", "-b", "other")
    _commit_lock(repo, _edited(base, {"a": _entry("ka2", "a", sha="c")}), "theirs")
    _git(repo, "checkout", "-q", "main")
    _commit_lock(repo, _edited(base, {"a": _entry("ka1", "a", sha="b")}), "ours")
    assert _git(repo, "merge", "--no-edit", "other", check=False).returncode != 0
    assert recall(repo / ".pixmake/history.jsonl") == {"ka2": _entry("ka2", "a", sha="c")}
