"""Model capabilities as data: what each provider model accepts, checked before any money is spent.

PURE. One row per model id; rules are read from the table, never coded as branches per model.
Facts and their sources: ``shared/toapis-api.md`` §2.1 and §2.3.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final

__all__ = ["MODELS", "ModelSpec", "pixel_size"]


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """What one model accepts."""

    id: str
    prompt_max: int
    sizes: tuple[str, ...]
    n_allowed: frozenset[int]
    max_references: int
    supports_mask: bool
    reference_max_bytes: int = 10 * 1024 * 1024
    mask_max_bytes: int = 4 * 1024 * 1024


def _row(
    id: str, *, prompt_max: int, sizes: tuple[str, ...], n: range | tuple[int, ...], refs: int, mask: bool
) -> tuple[str, ModelSpec]:
    return id, ModelSpec(id, prompt_max, sizes, frozenset(n), refs, mask)


_GPT4O_SIZES: Final = ("1:1", "2:3", "3:2")
_GPT_IMAGE_2_SIZES: Final = (
    "1:1",
    "3:2",
    "2:3",
    "4:3",
    "3:4",
    "5:4",
    "4:5",
    "16:9",
    "9:16",
    "2:1",
    "1:2",
    "21:9",
    "9:21",
)
_GEMINI_SIZES: Final = ("1:1", "2:3", "3:2", "3:4", "4:3", "4:5", "5:4", "9:16", "16:9", "21:9")

MODELS: Final[Mapping[str, ModelSpec]] = MappingProxyType(
    dict(
        [
            _row("gpt-4o-image", prompt_max=1000, sizes=_GPT4O_SIZES, n=(1, 2, 4), refs=5, mask=True),
            _row("gpt-image-2", prompt_max=32000, sizes=_GPT_IMAGE_2_SIZES, n=range(1, 11), refs=16, mask=True),
            _row(
                "grok-4-1-image",
                prompt_max=1000,
                sizes=(*_GPT4O_SIZES, "16:9", "9:16"),
                n=(1, 2, 4),
                refs=5,
                mask=False,
            ),
            _row(
                "gemini-3-pro-image-preview",
                prompt_max=100_000,
                sizes=_GEMINI_SIZES,
                n=(1,),
                refs=14,
                mask=False,
            ),
            _row(
                "doubao-seedream-4-5",
                prompt_max=4000,
                sizes=_GEMINI_SIZES,
                n=range(1, 16),
                refs=10,
                mask=False,
            ),
            _row("flux-kontext-pro", prompt_max=4000, sizes=_GEMINI_SIZES, n=(1,), refs=1, mask=False),
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
