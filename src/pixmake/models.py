"""Model capabilities as data: what each provider model accepts, checked before any money is spent.

PURE. One row per model id; every rule is read from the table, never coded as a branch per model.
The pure checks (prompt length, size, n, reference count, mask support) run in
:mod:`pixmake.modelcheck`; the rules that need image headers (formats, bytes, mask pixel size) run in
:mod:`pixmake.inputs`. Facts and their sources: ``shared/toapis-api.md`` §2.1, §2.3 and §5.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final

__all__ = ["MB", "MODELS", "RESULT_LIFETIME", "ModelSpec", "pixel_size"]

MB: Final = 1024 * 1024
RESULT_LIFETIME: Final = 86_400.0
"""Seconds a task's result links work after it completes (toapis-api.md §3.1: expires_at = completed_at + 86400)."""
_WEB_FORMATS: Final = frozenset({"jpeg", "png", "webp"})


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """What one model accepts: one row of :data:`MODELS`."""

    id: str
    prompt_max: int
    sizes: tuple[str, ...]
    n_allowed: frozenset[int]
    max_references: int
    supports_mask: bool
    reference_max_bytes: int = 10 * MB
    mask_max_bytes: int = 4 * MB
    reference_formats: frozenset[str] = _WEB_FORMATS
    mask_formats: frozenset[str] = frozenset({"png"})
    mask_matches_first_reference: bool = True
    max_images: int | None = None  # references + n together (seedream: 15)
    params: frozenset[str] = frozenset()  # documented extra fields; others draw a warning
    reference_objects: bool = False  # image_urls sent as [{"url": ...}] (Gemini, §2.3), not as strings


def _row(
    id: str,
    *,
    prompt_max: int,
    sizes: tuple[str, ...],
    n: range | tuple[int, ...],
    refs: int,
    mask: bool = False,
    ref_bytes: int = 10 * MB,
    ref_formats: frozenset[str] = _WEB_FORMATS,
    max_images: int | None = None,
    params: tuple[str, ...] = (),
    reference_objects: bool = False,
) -> tuple[str, ModelSpec]:
    spec = ModelSpec(
        id,
        prompt_max,
        sizes,
        frozenset(n),
        refs,
        mask,
        reference_max_bytes=ref_bytes,
        reference_formats=ref_formats,
        max_images=max_images,
        params=frozenset(params),
        reference_objects=reference_objects,
    )
    return id, spec


_GPT4O_SIZES: Final = ("1:1", "2:3", "3:2")
_GROK_SIZES: Final = ("1:1", "2:3", "3:2", "16:9", "9:16")
_GPT_IMAGE_2_SIZES: Final = (
    *("1:1", "3:2", "2:3", "4:3", "3:4", "5:4", "4:5"),
    *("16:9", "9:16", "2:1", "1:2", "21:9", "9:21"),
)
_GEMINI_SIZES: Final = ("1:1", "2:3", "3:2", "3:4", "4:3", "4:5", "5:4", "9:16", "16:9", "21:9")
_GEMINI_31_SIZES: Final = (*_GEMINI_SIZES, "1:4", "4:1", "1:8", "8:1")
_GPT_IMAGE_2_PARAMS: Final = (
    *("resolution", "quality", "response_format", "output_format", "output_compression"),
    *("background", "callback_url", "metadata"),
)
_FLUX_KONTEXT_PARAMS: Final = ("response_format", "safety_tolerance", "prompt_upsampling", "callback_url", "metadata")

MODELS: Final[Mapping[str, ModelSpec]] = MappingProxyType(
    dict(
        [
            # §2.1: the documented default model.
            _row(
                "gpt-4o-image",
                prompt_max=1000,
                sizes=_GPT4O_SIZES,
                n=(1, 2, 4),
                refs=5,
                mask=True,
                params=("callback_url", "metadata"),
            ),
            # §2.3 [D-g2][D-g2e]: ≤ 16 refs PNG/JPG ≤ 50 MB, n 1-10, mask matches the first reference.
            _row(
                "gpt-image-2",
                prompt_max=32_000,
                sizes=_GPT_IMAGE_2_SIZES,
                n=range(1, 11),
                refs=16,
                mask=True,
                ref_bytes=50 * MB,
                ref_formats=frozenset({"jpeg", "png"}),
                params=_GPT_IMAGE_2_PARAMS,
            ),
            # §2.3 [D-grok]: prompt ≤ 1000, n ∈ {1, 2, 4}, ≤ 5 refs ≤ 10 MB.
            _row("grok-4-1-image", prompt_max=1000, sizes=_GROK_SIZES, n=(1, 2, 4), refs=5),
            _row("grok-4-2-image", prompt_max=1000, sizes=_GROK_SIZES, n=(1, 2, 4), refs=5),
            # §2.3 [D-gem3][D-gem31]: ≤ 14 refs ≤ 10 MB jpeg/png/webp; no 1000-character cap; one image a call.
            _row(
                "gemini-3-pro-image-preview",
                prompt_max=100_000,
                sizes=_GEMINI_SIZES,
                n=(1,),
                refs=14,
                params=("metadata", "callback_url"),
                reference_objects=True,
            ),
            _row(
                "gemini-3.1-flash-image-preview",
                prompt_max=100_000,
                sizes=_GEMINI_31_SIZES,
                n=(1,),
                refs=14,
                params=("metadata", "callback_url"),
                reference_objects=True,
            ),
            # §2.3 [D-sd45][D-sd5p]: refs ≤ 10; references + outputs ≤ 15 (5.0-pro: n 1-10).
            _row(
                "doubao-seedream-4-5",
                prompt_max=4000,
                sizes=_GEMINI_SIZES,
                n=range(1, 16),
                refs=10,
                max_images=15,
                params=("metadata", "callback_url"),
            ),
            _row(
                "doubao-seedream-5-0-pro",
                prompt_max=4000,
                sizes=_GEMINI_SIZES,
                n=range(1, 11),
                refs=10,
                max_images=15,
                params=("metadata", "callback_url"),
            ),
            # §2.3 [D-flux]: flux-2 ≤ 8 refs; kontext ≤ 1 ref and its own extra fields.
            _row(
                "flux-2-pro",
                prompt_max=4000,
                sizes=_GEMINI_SIZES,
                n=(1,),
                refs=8,
                params=("metadata", "callback_url"),
            ),
            _row(
                "flux-kontext-pro",
                prompt_max=4000,
                sizes=_GEMINI_SIZES,
                n=(1,),
                refs=1,
                params=_FLUX_KONTEXT_PARAMS,
            ),
            _row(
                "flux-kontext-max",
                prompt_max=4000,
                sizes=_GEMINI_SIZES,
                n=(1,),
                refs=1,
                params=_FLUX_KONTEXT_PARAMS,
            ),
        ]
    )
)


def pixel_size(size: str, *, long_side: int = 1536, short_side: int = 1024) -> tuple[int, int]:
    """Pixel size for an aspect ratio, as gpt-4o-image renders it (1:1 1024², 3:2 1536×1024, 2:3 1024×1536)."""
    w, h = (int(part) for part in size.split(":"))
    if w == h:
        return short_side, short_side
    if w > h:
        return long_side, max(1, round(long_side * h / w))
    return max(1, round(long_side * w / h)), long_side
