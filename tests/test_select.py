"""Selection by name, glob and tag: a union, in manifest order, and a typo is an error."""

from __future__ import annotations

from fnmatch import fnmatchcase

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pixmake.errors import ConfigError
from pixmake.manifest import Target
from pixmake.select import Selection, select_targets

_TAGS = ("q4", "brand", "evergreen")


def target(name: str, *tags: str) -> Target:
    return Target(name, "p", "gpt-4o-image", "1:1", 1, f"out/{name}.png", tags=tags)


MANIFEST = (
    target("hero", "q4"),
    target("product-a100-front", "brand"),
    target("product-b200-side"),
    target("logo", "brand", "evergreen"),
    target("mug-marble", "q4"),
)


def names(selected: tuple[Target, ...]) -> list[str]:
    return [t.name for t in selected]


def test_no_selector_selects_everything() -> None:
    assert select_targets(MANIFEST, Selection()) == MANIFEST
    assert Selection().everything and not Selection(("x",)).everything


def test_name_glob_and_tag_select_their_union_in_manifest_order() -> None:
    chosen = select_targets(MANIFEST, Selection(("mug-marble", "product-*"), ("evergreen",)))
    assert names(chosen) == ["product-a100-front", "product-b200-side", "logo", "mug-marble"]


def test_the_issue_example() -> None:
    chosen = select_targets(MANIFEST, Selection(("hero", "product-*"), ("q4",)))
    assert names(chosen) == ["hero", "product-a100-front", "product-b200-side", "mug-marble"]


def test_a_selector_that_matches_nothing_is_an_error_naming_it() -> None:
    with pytest.raises(ConfigError, match=r"'heor', 'prud\*', --tag q5"):
        select_targets(MANIFEST, Selection(("hero", "heor", "prud*"), ("q5", "q4")))


@pytest.mark.parametrize(
    ("patterns", "tags", "said"),
    [
        (("heor",), (), "no target matches 'heor'; did you mean 'hero'?"),
        (("product",), (), "no target matches 'product'; did you mean 'product*'?"),  # a prefix of several
        (("brand",), (), "no target matches 'brand' (brand is a tag: --tag brand)"),
        ((), ("bran",), "no target matches --tag bran; did you mean --tag brand?"),
        ((), ("logo",), "no target matches --tag logo (a target name is selected without --tag: logo)"),
        (("zzz",), (), "no target matches 'zzz'"),
        (("heor", "zzz"), (), "no target matches 'heor', 'zzz'"),  # several misses: listed, not guessed at
    ],
)
def test_a_selector_that_matches_nothing_says_what_it_may_have_meant(
    patterns: tuple[str, ...], tags: tuple[str, ...], said: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        select_targets(MANIFEST, Selection(patterns, tags))
    assert str(caught.value) == said


def test_extra_names_join_the_selection() -> None:
    assert names(select_targets(MANIFEST, Selection(("logo",)), extra=["hero"])) == ["hero", "logo"]


def test_names_are_exact_and_case_sensitive() -> None:
    with pytest.raises(ConfigError):
        select_targets(MANIFEST, Selection(("Hero",)))
    assert names(select_targets(MANIFEST, Selection(("product-[ab]*-side",)))) == ["product-b200-side"]


_names = st.lists(st.text("abcx-1*?", min_size=1, max_size=6).filter(lambda s: not set(s) & set("*?")), max_size=8)


@st.composite
def cases(draw: st.DrawFn) -> tuple[tuple[Target, ...], Selection]:
    targets = tuple(
        target(name, *draw(st.lists(st.sampled_from(_TAGS), max_size=2, unique=True)))
        for name in dict.fromkeys(draw(_names))
    )
    patterns = draw(st.lists(st.text("abcx-1*?", min_size=1, max_size=4), max_size=3))
    tags = draw(st.lists(st.sampled_from(_TAGS), max_size=2))
    return targets, Selection(tuple(patterns), tuple(tags))


def _selected(t: Target, selection: Selection) -> bool:
    return any(fnmatchcase(t.name, p) for p in selection.patterns) or bool(set(t.tags) & set(selection.tags))


@given(cases())
def test_selection_is_exactly_the_matching_targets_in_order(case: tuple[tuple[Target, ...], Selection]) -> None:
    targets, selection = case
    try:
        chosen = select_targets(targets, selection)
    except ConfigError:
        unmatched = [p for p in selection.patterns if not any(fnmatchcase(t.name, p) for t in targets)]
        unmatched += [g for g in selection.tags if not any(g in t.tags for t in targets)]
        assert unmatched
        return
    if selection.everything:
        assert chosen == targets
    else:
        assert chosen == tuple(t for t in targets if _selected(t, selection))


@given(cases())
def test_selection_is_idempotent(case: tuple[tuple[Target, ...], Selection]) -> None:
    targets, selection = case
    try:
        once = select_targets(targets, selection)
    except ConfigError:
        return
    assert select_targets(once, selection) == once
