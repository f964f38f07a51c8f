"""The YAML loader: values as PyYAML's safe loader reads them (keys kept as text), marks where they stood."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from pixmake.errors import ManifestError
from pixmake.yamlmarks import MarkedDict, MarkedList, load_yaml

_scalars = (
    st.none() | st.booleans() | st.integers(-(2**63) + 1, 2**63 - 1) | st.text(max_size=12)
)  # 64-bit: see _scalar
_keys = st.text(min_size=1, max_size=8)
_values = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_keys, inner, max_size=4),
    max_leaves=20,
)


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


@given(st.dictionaries(_keys, _values, max_size=5), st.sampled_from(["block", "flow"]))
def test_values_are_what_pyyamls_safe_loader_reads(document: dict[str, Any], style: str) -> None:
    text = yaml.safe_dump(document, default_flow_style=style == "flow", allow_unicode=True)
    assert _plain(load_yaml(text, file="t.yaml")) == yaml.load(text, Loader=yaml.CSafeLoader)


@given(st.dictionaries(_keys, _values, min_size=1, max_size=4))
def test_a_shared_value_comes_back_shared_as_with_pyyaml(shared: dict[str, Any]) -> None:
    text = yaml.safe_dump({"a": shared, "b": shared})  # dumped as an anchor and an alias
    loaded = load_yaml(text, file="t.yaml")
    assert loaded["a"] is loaded["b"] and _plain(loaded["a"]) == shared


def test_marks_point_at_each_key_and_value_and_aliases_at_their_anchor() -> None:
    text = "x: &common\n  prompt: a mug\ntargets:\n  - *common\n  - {out: b.png}\n"
    doc = load_yaml(text, file="t.yaml")
    assert isinstance(doc, MarkedDict) and doc.mark("x") == (1, 1, 1, 4)
    assert isinstance(doc["targets"], MarkedList)
    assert [doc["targets"].mark(i) for i in range(3)] == [(1, 4, 1, 4), (5, 5, 5, 5), None]
    assert doc["targets"][1].mark("out") == (5, 6, 5, 11) and doc.mark("nothing") is None


def test_marks_stay_exact_on_a_very_long_line() -> None:
    """A flow-style manifest can hold everything on one line: a column in the millions is still exact."""
    long = "x" * (1 << 21)
    doc = load_yaml(f"t: {{a: {long}, b: 1}}\nc: [2, 3]\n", file="t.yaml")
    assert doc["t"].mark("b") == (1, len("t: {a: , ") + len(long) + 1, 1, len("t: {a: , b: ") + len(long) + 1)
    assert doc["c"].mark(1) == (2, 8, 2, 8)


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("a: &x 1\nb: &x 2\n", 2, "second occurrence"),
        ("a: *nowhere\n", 1, "found undefined alias 'nowhere'"),
        ("a: &x [1, *x]\n", 1, "recursive structure"),
        ("a: 1\n---\nb: 2\n", 2, "single YAML document"),
        ("? [1]\n: 2\n", 1, "a key must be plain text"),
        ("a: &l [1]\n*l : 2\n", 1, "a key must be plain text"),
        ("a: !!binary aGk=\n", 1, "the tag 'binary' is not allowed"),
        ("a: 1\nb: {<<: 5}\n", 2, "a merge key (<<) takes a mapping"),
        ("a: 1\nseed: !!int abc\n", 2, "'abc' is not a valid int (quote it for text)"),
        ("a: !!float abc\n", 1, "'abc' is not a valid float"),
        ("a: !!bool maybe\n", 1, "'maybe' is not a valid bool"),
        ("a:\n  n: " + "9" * 5000 + "\n", 2, "is not a valid int"),
        ("n: !!int +\n", 1, "'+' is not a valid int"),
        ("n: !!float _\n", 1, "'_' is not a valid float"),
        ("n: 1" + ":59" * 3000 + "\n", 1, "is too large a number (quote it for text)"),
        ("seed: 9223372036854775808\n", 1, "'9223372036854775808' is too large a number"),
        ("poll_interval: .inf\n", 1, "expected a finite number, found .inf"),
        ("a: [1, -.INF]\n", 1, "expected a finite number, found -.INF"),
        ("a: {x: .nan}\n", 1, "expected a finite number, found .nan"),
    ],
)
def test_what_a_manifest_never_needs_is_refused_with_its_line(text: str, line: int, message: str) -> None:
    with pytest.raises(ManifestError) as caught:
        load_yaml(text, file="t.yaml")
    [diagnostic] = caught.value.diagnostics
    assert diagnostic.line == line and message in diagnostic.message, diagnostic


def test_merge_keys_fill_in_what_the_mapping_does_not_set_itself() -> None:
    doc = load_yaml("base: &b {prompt: p, size: '1:1'}\nt:\n  size: '3:2'\n  <<: *b\n", file="t.yaml")
    assert _plain(doc["t"]) == {"size": "3:2", "prompt": "p"}
    assert doc["t"].mark("size") == (3, 3, 3, 9) and doc["t"].mark("prompt") == (1, 11, 1, 19)


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("version: 1\ntargets:\n\thero:\n", "targets"),  # a tab where targets' entries begin
        ("targets:\n  hero:\n    out: [a.png\n  other: {}\n", "targets.hero.out"),  # an unclosed list
        ("targets:\n  hero:\n    prompt: a\n   bad: indent\n", "targets"),  # a key at no level of targets
    ],
)
def test_a_syntax_error_names_the_field_the_parser_was_reading(text: str, field: str) -> None:
    with pytest.raises(ManifestError) as caught:
        load_yaml(text, file="t.yaml")
    [diagnostic] = caught.value.diagnostics
    assert diagnostic.field == field, diagnostic


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        (  # the quote runs to the end of the file: the error is where it opened
            'targets:\n  a:\n    prompt: "a mug on a table\n    out: a.png\n  b:\n    out: b.png\n',
            3,
            "a quoted value is never closed: it runs to the end of the file (a missing quote?)",
        ),
        (  # a later quote closes it: YAML notices further down, and the message points back
            'targets:\n  a:\n    prompt: "a mug on a table\n    out: a.png\n  b:\n    prompt: "x"\n    out: b.png\n',
            6,
            "did not find expected key (the quote opened on line 3 is not closed there: a missing quote?)",
        ),
        ('targets:\n  a:\n    prompt: "a \\q mug"\n', 3, "found unknown escape character"),  # exact already
        (  # a quoted prompt over two lines is valid: an unrelated error below gets no word about quotes
            'targets:\n  a:\n    prompt: "a mug\n      on a table"\n    out: a.png\n  b:\n    out: b.png\n'
            "   bad: indent\n",
            8,
            "did not find expected key (check this line's indentation against the lines above: a target's fields "
            "line up under its name)",
        ),
    ],
)
def test_an_unclosed_quote_is_named_where_it_opened(text: str, line: int, message: str) -> None:
    with pytest.raises(ManifestError) as caught:
        load_yaml(text, file="t.yaml")
    [diagnostic] = caught.value.diagnostics
    assert (diagnostic.line, diagnostic.message) == (line, f"YAML syntax error: {message}"), diagnostic


_MID_MERGE = (
    "version: 1\ntargets:\n  t01:\n    prompt: a\n    out: a.png\n{ours}  t04:\n    prompt: b\n    out: d.png\n"
)


@pytest.mark.parametrize(
    ("text", "line", "marker"),
    [
        (_MID_MERGE.format(ours="<<<<<<< HEAD\n") + "=======\n  t04:\n    out: e.png\n>>>>>>> topic\n", 6, "<<<<<<<"),
        (_MID_MERGE.format(ours="").replace("\n", "\r\n") + "=======\r\n  t05: {}\r\n", 9, "======="),
        (_MID_MERGE.format(ours="||||||| base\n"), 6, "|||||||"),
    ],
)
def test_a_manifest_git_left_mid_merge_is_named_at_its_first_conflict_marker(text: str, line: int, marker: str) -> None:
    with pytest.raises(ManifestError) as caught:
        load_yaml(text, file="t.yaml")
    [diagnostic] = caught.value.diagnostics
    assert (diagnostic.line, diagnostic.column, diagnostic.field) == (line, 1, "")
    assert diagnostic.message.startswith(f"git conflict marker {marker}: a merge left this manifest unresolved;")


def test_conflict_markers_are_only_named_where_git_writes_them() -> None:
    """At the start of a line; a prompt quoting one, and a syntax error elsewhere, is a syntax error."""
    text = "targets:\n  a:\n    prompt: see <<<<<<< HEAD\n    out: [a.png\n"
    with pytest.raises(ManifestError) as caught:
        load_yaml(text, file="t.yaml")
    assert caught.value.diagnostics[0].message.startswith("YAML syntax error:")
