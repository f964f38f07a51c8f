"""Placeholder PNGs for emulated results: right pixel size, deterministic, readable, cheap.

Each image is a flat colour derived from (prompt, index) with the model, size, index and wrapped prompt
drawn on it, so a person can tell targets and variants apart. The same arguments always give the same
bytes. Rendering is LRU-cached and uses a low zlib level, so a benchmark never waits on Pillow.
"""

from __future__ import annotations

import hashlib
import io
import textwrap
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from functools import lru_cache
from typing import Final

from PIL import Image, ImageDraw, ImageFont

__all__ = ["RenderStats", "cached_png", "render_png", "render_stats"]

_COMPRESS_LEVEL: Final = 1
_CACHE_SIZE: Final = 128


@dataclass(slots=True)
class RenderStats:
    """How often and how long placeholder rendering ran (cache misses only)."""

    renders: int = 0
    seconds: float = 0.0


_stats = RenderStats()
_stats_lock = threading.Lock()


def render_stats() -> RenderStats:
    """Return a copy of the process-wide render counters (for the benchmark)."""
    with _stats_lock:
        return RenderStats(_stats.renders, _stats.seconds)


def _colour(prompt: str, index: int) -> tuple[int, int, int]:
    digest = hashlib.sha256(f"{index}\0{prompt}".encode()).digest()
    # Keep the background mid-dark so white text stays legible.
    return (40 + digest[0] % 150, 40 + digest[1] % 150, 40 + digest[2] % 150)


@lru_cache(maxsize=16)
def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def _draw(model: str, prompt: str, width: int, height: int, index: int, n: int) -> Image.Image:
    image = Image.new("RGB", (width, height), _colour(prompt, index))
    draw = ImageDraw.Draw(image)
    unit = max(12, min(width, height) // 24)
    margin = unit
    draw.text((margin, margin), f"#{index} of {n}", fill="white", font=_font(unit * 3))
    draw.text((margin, margin + unit * 4), f"{model} · {width}x{height}", fill="white", font=_font(unit))
    columns = max(10, int((width - 2 * margin) / (unit * 0.5)))
    lines = textwrap.wrap(prompt, columns)[: max(1, (height - 8 * unit) // int(unit * 1.3))]
    for row, line in enumerate(lines):
        draw.text((margin, margin + unit * 6 + int(row * unit * 1.3)), line, fill="white", font=_font(unit))
    return image


_RenderKey = tuple[str, str, int, int, int, int]
_cache: OrderedDict[_RenderKey, bytes] = OrderedDict()
_cache_lock = threading.Lock()
_render_lock = threading.Lock()  # one render at a time: concurrent misses for one image render it once


def cached_png(model: str, prompt: str, width: int, height: int, index: int, n: int) -> bytes | None:
    """The PNG from the cache, or None; never renders (cheap enough to call on the event loop)."""
    key = (model, prompt, width, height, index, n)
    with _cache_lock:
        data = _cache.get(key)
        if data is not None:
            _cache.move_to_end(key)
        return data


def render_png(model: str, prompt: str, width: int, height: int, index: int, n: int) -> bytes:
    """Return the PNG bytes of image ``index`` (1-based) of ``n`` for this request (LRU-cached)."""
    key = (model, prompt, width, height, index, n)
    with _render_lock:
        data = cached_png(*key)
        if data is not None:
            return data
        data = _encode(*key)
    with _cache_lock:
        _cache[key] = data
        while len(_cache) > _CACHE_SIZE:
            _cache.popitem(last=False)
    return data


def _encode(model: str, prompt: str, width: int, height: int, index: int, n: int) -> bytes:
    started = time.perf_counter()
    buffer = io.BytesIO()
    _draw(model, prompt, width, height, index, n).save(buffer, format="PNG", compress_level=_COMPRESS_LEVEL)
    with _stats_lock:
        _stats.renders += 1
        _stats.seconds += time.perf_counter() - started
    return buffer.getvalue()
