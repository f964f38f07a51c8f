"""The schema is the contract: documented field by field, and the fast checker never disagrees with it."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from conftest import REPO, run_cli
from pixmake.schema import _fast, field_path, schema, schema_text, validate_document

CORPUS = Path(__file__).parent / "data" / "manifests"


def _properties(node: Any, path: str = "") -> Iterator[tuple[str, Mapping[str, Any]]]:
    """Every property schema (and additionalProperties/items schema) in the document, with its path."""
    if not isinstance(node, Mapping):
        return
    for name, sub in node.get("properties", {}).items():
        yield f"{path}.{name}", sub
        yield from _properties(sub, f"{path}.{name}")
    for key in ("additionalProperties", "items"):
        sub = node.get(key)
        if isinstance(sub, Mapping) and sub and "$ref" not in sub:
            yield f"{path}.<{key}>", sub
            yield from _properties(sub, f"{path}.<{key}>")
    for pattern, sub in node.get("patternProperties", {}).items():
        yield f"{path}.<{pattern}>", sub
    for name, sub in node.get("$defs", {}).items():
        yield f"$defs.{name}", sub
        yield from _properties(sub, f"$defs.{name}")


def _resolve(node: Mapping[str, Any]) -> Mapping[str, Any]:
    ref = node.get("$ref")
    if isinstance(ref, str):
        target: Any = schema()
        for part in ref.removeprefix("#/").split("/"):
            target = target[part]
        return {**target, **{k: v for k, v in node.items() if k != "$ref"}}
    return node


def test_the_schema_is_valid_json_schema_2020_12() -> None:
    Draft202012Validator.check_schema(schema())
    assert schema()["$schema"] == "https://json-schema.org/draft/2020-12/schema"


@pytest.mark.parametrize("path,node", list(_properties(schema())), ids=lambda v: v if isinstance(v, str) else "")
def test_every_field_has_a_description_and_examples(path: str, node: Mapping[str, Any]) -> None:
    resolved = _resolve(node)
    assert resolved.get("description"), f"{path} has no description"
    assert resolved.get("examples"), f"{path} has no examples"


def test_every_example_is_valid_against_its_own_field() -> None:
    for path, node in _properties(schema()):
        resolved = dict(_resolve(node))
        validator = Draft202012Validator({**resolved, "$defs": schema()["$defs"]})
        for example in resolved.get("examples", []):
            assert not list(validator.iter_errors(example)), f"{path}: example {example!r} is invalid"


def test_an_editor_is_offered_every_model_and_every_aspect_ratio_the_model_table_knows() -> None:
    """The schema's examples are what yaml-language-server completes: kept in step with the model table."""
    from pixmake.models import MODELS

    defs = schema()["$defs"]
    assert defs["model"]["examples"] == list(MODELS)
    assert set(defs["size"]["examples"]) == {size for spec in MODELS.values() for size in spec.sizes}


def test_pixmake_schema_prints_the_bundled_schema() -> None:
    outcome = run_cli("schema")
    assert outcome.exit_code == 0
    assert json.loads(outcome.stdout) == json.loads((REPO / "schemas" / "pixmake.schema.json").read_text())
    assert outcome.stdout == schema_text()


def _corpus_documents() -> list[Any]:
    docs = []
    for path in sorted(CORPUS.rglob("*.yaml")):
        try:
            docs.append(yaml.safe_load(path.read_text(encoding="utf-8")))
        except (yaml.YAMLError, UnicodeDecodeError, RecursionError, ValueError):  # ValueError: !!int abc
            continue
    return docs


def test_the_agreement_corpus_is_not_silently_empty() -> None:
    """Files that do not parse as YAML are skipped above; most of the corpus must still be compared."""
    assert len(_corpus_documents()) >= 60


def _jsonschema_valid(doc: Any) -> bool:
    return not list(Draft202012Validator(schema()).iter_errors(doc))


@pytest.mark.parametrize("doc", _corpus_documents())
def test_fast_checker_agrees_with_jsonschema_on_the_corpus(doc: Any) -> None:
    fast = _fast()
    assert fast is not None, "the schema uses a keyword the fast checker does not know"
    assert fast(doc) == _jsonschema_valid(doc)


_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-3, 20), st.floats(-2, 20), st.sampled_from(["", "1:1", "a.png", "${x}", "2"])
)
_keys = st.sampled_from(
    [
        "version",
        "targets",
        "provider",
        "defaults",
        "vars",
        "prompt",
        "out",
        "n",
        "size",
        "model",
        "matrix",
        "rows",
        "references",
        "mask",
        "tags",
        "params",
        "rate",
        "concurrency",
        "hero",
        "x-any",
        "sku",
        "quality",
    ]
)
_documents = st.recursive(
    _scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_keys, inner, max_size=4), max_leaves=25
)


@given(_documents)
@settings(max_examples=500, deadline=None)
def test_the_fast_checker_never_passes_what_jsonschema_refuses(doc: Any) -> None:
    fast = _fast()
    assert fast is not None
    if fast(doc):
        assert _jsonschema_valid(doc)


_targets = st.dictionaries(
    st.sampled_from(["a", "b", "sku-${sku}"]),
    st.fixed_dictionaries(
        {"prompt": st.sampled_from(["p", ""]), "out": st.sampled_from(["a.png", "a.jpg"])},
        optional={
            "n": st.one_of(st.integers(0, 20), st.sampled_from(["2", 2.0])),
            "size": st.sampled_from(["1:1", "3x2", 3]),
            "tags": st.lists(st.sampled_from(["q4", "q4", "a b"]), max_size=3),
            "matrix": st.dictionaries(
                st.sampled_from(["sku", "1x"]), st.lists(st.sampled_from(["a", 1, None]), max_size=2)
            ),
            "rows": st.sampled_from(["a.csv", "a.txt"]),
        },
    ),
    max_size=3,
)


@given(_targets)
@settings(max_examples=300, deadline=None)
def test_the_fast_checker_agrees_on_near_valid_manifests(targets: dict[str, Any]) -> None:
    fast = _fast()
    assert fast is not None
    doc = {"version": 1, "targets": targets}
    assert fast(doc) == _jsonschema_valid(doc)


def test_each_problem_of_a_document_is_one_diagnostic_with_a_field_path() -> None:
    doc = {"version": 1, "targets": {"a": {"prompt": "p", "out": "a.png", "sise": "1:1", "colr": 1}}}
    diagnostics = validate_document(doc, file="m.yaml")
    assert sorted(d.field for d in diagnostics) == ["targets.a.colr", "targets.a.sise"]
    assert any("did you mean 'size'?" in d.message for d in diagnostics)


@pytest.mark.parametrize(
    ("key", "shown"),
    [
        ("a\nb", "'a\\nb'"),
        ("a\rb", "'a\\rb'"),
        ("\x1b[31mred", "'\\x1b[31mred'"),
        ("a\u2028b", "'a\\u2028b'"),
        ("prix\xa0: 10", "prix\xa0: 10"),  # a no-break space is text
        ("\U0001f469\u200d\U0001f3a8", "\U0001f469\u200d\U0001f3a8"),  # an emoji sequence with its joiner
    ],
)
def test_a_field_path_is_one_line_and_escapes_only_what_would_break_it(key: str, shown: str) -> None:
    assert field_path(("targets", key, "out")) == f"targets.{shown}.out"
