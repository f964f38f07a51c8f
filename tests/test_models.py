"""The model capability table: documented facts as data, and every rule enforced from the table alone."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from pixmake.errors import ManifestError
from pixmake.manifest import parse_manifest
from pixmake.models import MB, MODELS, ModelSpec, pixel_size


def _parse(target: dict[str, Any]) -> None:
    document = {"version": 1, "targets": {"t": {"prompt": "a mug", "out": "t.png", **target}}}
    parse_manifest(yaml.safe_dump(document, sort_keys=False), file="m.yaml")


def _refs(count: int) -> list[str]:
    return [f"https://example.com/{i}.png" for i in range(count)]


def test_gpt_4o_image_row_matches_the_documented_request_fields() -> None:
    """toapis-api.md §2.1."""
    spec = MODELS["gpt-4o-image"]
    assert spec.prompt_max == 1000
    assert spec.sizes == ("1:1", "2:3", "3:2")
    assert spec.n_allowed == {1, 2, 4}
    assert spec.max_references == 5
    assert spec.reference_formats == {"jpeg", "png", "webp"} and spec.reference_max_bytes == 10 * MB
    assert spec.supports_mask and spec.mask_formats == {"png"} and spec.mask_max_bytes == 4 * MB
    assert spec.mask_matches_first_reference


@pytest.mark.parametrize(
    "model",
    ["gpt-image-2", "gemini-3-pro-image-preview", "doubao-seedream-4-5", "flux-kontext-pro", "grok-4-1-image"],
)
def test_the_table_has_a_row_for_the_other_documented_models(model: str) -> None:
    """toapis-api.md §2.3."""
    assert MODELS[model].id == model


def test_other_documented_facts() -> None:
    assert MODELS["gpt-image-2"].prompt_max == 32_000 and len(MODELS["gpt-image-2"].sizes) == 13
    assert MODELS["gpt-image-2"].n_allowed == set(range(1, 11)) and MODELS["gpt-image-2"].max_references == 16
    assert MODELS["gemini-3-pro-image-preview"].max_references == 14
    assert MODELS["flux-kontext-pro"].max_references == 1 and MODELS["flux-2-pro"].max_references == 8
    assert MODELS["doubao-seedream-4-5"].max_images == 15
    assert MODELS["grok-4-1-image"].n_allowed == {1, 2, 4} and MODELS["grok-4-1-image"].prompt_max == 1000


@pytest.mark.parametrize("spec", list(MODELS.values()), ids=lambda s: s.id)
def test_every_row_is_consistent(spec: ModelSpec) -> None:
    assert spec.prompt_max > 0 and spec.sizes and spec.n_allowed and spec.max_references >= 0
    assert all(":" in size for size in spec.sizes)
    assert spec.reference_formats <= {"jpeg", "png", "webp"}


@pytest.mark.parametrize("spec", list(MODELS.values()), ids=lambda s: s.id)
def test_what_a_row_allows_validates(spec: ModelSpec) -> None:
    n = max(spec.n_allowed) if spec.max_images is None else min(max(spec.n_allowed), spec.max_images - 1)
    _parse({"model": spec.id, "size": spec.sizes[-1], "n": n, "references": _refs(1), "prompt": "p" * spec.prompt_max})


@pytest.mark.parametrize("spec", list(MODELS.values()), ids=lambda s: s.id)
def test_what_a_row_refuses_is_refused_with_the_model_named(spec: ModelSpec) -> None:
    cases: list[dict[str, Any]] = [
        {"size": "7:5"},
        {"n": max(spec.n_allowed) + 1},
        {"references": _refs(spec.max_references + 1)},
        {"prompt": "p" * (spec.prompt_max + 1)},
    ]
    if not spec.supports_mask:
        cases.append({"references": _refs(1), "mask": "m.png"})
    for case in cases:
        with pytest.raises(ManifestError) as caught:
            _parse({"model": spec.id, **case})
        assert any(spec.id in d.message for d in caught.value.diagnostics), (case, caught.value)


def test_a_mask_needs_a_reference_for_every_model() -> None:
    for spec in MODELS.values():
        with pytest.raises(ManifestError, match="a mask needs a reference"):
            _parse({"model": spec.id, "mask": "m.png"})


def test_pixel_size_of_the_gpt_4o_image_ratios() -> None:
    assert pixel_size("1:1") == (1024, 1024)
    assert pixel_size("3:2") == (1536, 1024)
    assert pixel_size("2:3") == (1024, 1536)
