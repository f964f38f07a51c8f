"""Placeholder PNGs for emulated results: right pixel size, deterministic, readable, cheap.

Each image is a flat colour derived from (prompt, index) with the index, its task id, model,
size and wrapped prompt drawn on it in white, so a person can tell targets and variants apart, and two
tasks for one prompt give different images, as a provider's would (a client keeping some images of one
task beside those of another is seen to). The same arguments always give the same bytes.

Cheap by construction (about 1-3 ms for 1024², against ~14 ms for an RGB canvas with FreeType text): the
text is drawn once with Pillow's built-in bitmap font on a small tile and scaled up by whole pixels, so it
stays crisp; the canvas is a two-colour palette image (background index 0, text index 1), so the PNG is
1 bit per pixel and the background colour lives only in the palette; zlib runs at level 1. Results are
LRU-cached; a per-image lock makes concurrent misses for one image render it once, while different images
render in parallel (Pillow releases the GIL while encoding).
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
_CACHE_SIZE: Final = 512  # a 1024² placeholder is 2-10 kB
_GLYPH_WIDTH: Final = 6  # Pillow's built-in bitmap font: 6x11 pixels per character
_GLYPH_HEIGHT: Final = 11
_LINE_GAP: Final = 2
_WHITE: Final = (255, 255, 255)


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


@lru_cache(maxsize=1)
def _font() -> ImageFont.ImageFont:
    return ImageFont.load_default_imagefont()


def _printable(text: str) -> str:
    """The bitmap font covers Latin-1 only: anything else (and control characters) becomes ``?``."""
    return "".join(c if " " <= c <= "~" or "\xa0" <= c <= "\xff" else "?" for c in text)


def _text_mask(lines: list[str], scale: int) -> Image.Image:
    """White-on-black ``L`` mask of ``lines`` in the bitmap font, scaled up ``scale`` times (nearest)."""
    pitch = _GLYPH_HEIGHT + _LINE_GAP
    width = max(1, max(len(line) for line in lines) * _GLYPH_WIDTH)
    tile = Image.new("L", (width, pitch * len(lines)), 0)
    draw = ImageDraw.Draw(tile)
    for row, line in enumerate(lines):
        draw.text((0, row * pitch), line, fill=255, font=_font())
    return tile.resize((tile.width * scale, tile.height * scale), Image.Resampling.NEAREST)


def _paste(canvas: Image.Image, mask: Image.Image, x: int, y: int) -> int:
    """Paint palette index 1 through ``mask`` at (x, y), clipped to the canvas; return the y below it."""
    mask = mask.crop((0, 0, min(mask.width, canvas.width - x), min(mask.height, canvas.height - y)))
    if mask.width > 0 and mask.height > 0:
        canvas.paste(1, (x, y, x + mask.width, y + mask.height), mask)
    return y + mask.height


def _draw(model: str, prompt: str, width: int, height: int, index: int, n: int, task: str) -> Image.Image:
    unit = max(12, min(width, height) // 24)
    scale = max(1, round(unit / _GLYPH_HEIGHT))
    canvas = Image.new("P", (width, height), 0)
    canvas.putpalette([*_colour(prompt, index), *_WHITE])
    y = _paste(canvas, _text_mask([f"#{index} of {n}"], 3 * scale), unit, unit) + unit
    y = _paste(canvas, _text_mask([_printable(f"task {task}")], scale), unit, y) + unit
    columns = max(10, (width - 2 * unit) // (_GLYPH_WIDTH * scale))
    rows = max(1, (height - y - unit) // ((_GLYPH_HEIGHT + _LINE_GAP) * scale))
    lines = [*textwrap.wrap(_printable(f"{model} · {width}x{height}"), columns), ""]
    lines += textwrap.wrap(_printable(prompt), columns)
    _paste(canvas, _text_mask(lines[:rows], scale), unit, y)
    return canvas


_RenderKey = tuple[str, str, int, int, int, int, str]
_cache: OrderedDict[_RenderKey, bytes] = OrderedDict()
_cache_lock = threading.Lock()
_rendering: dict[_RenderKey, threading.Lock] = {}  # one lock per image being rendered; guarded by _cache_lock


def cached_png(model: str, prompt: str, width: int, height: int, index: int, n: int, task: str) -> bytes | None:
    """The PNG from the cache, or None; never renders (cheap enough to call on the event loop)."""
    key = (model, prompt, width, height, index, n, task)
    with _cache_lock:
        data = _cache.get(key)
        if data is not None:
            _cache.move_to_end(key)
        return data


def render_png(model: str, prompt: str, width: int, height: int, index: int, n: int, task: str) -> bytes:
    """Return the PNG bytes of image ``index`` (1-based) of ``n`` of task ``task`` for this request (LRU-cached)."""
    key = (model, prompt, width, height, index, n, task)
    data = cached_png(*key)
    if data is not None:
        return data
    with _cache_lock:
        lock = _rendering.setdefault(key, threading.Lock())
    with lock:  # a concurrent miss for the same image waits here, then finds it cached
        data = cached_png(*key)
        if data is None:
            data = _encode(*key)
            with _cache_lock:
                _cache[key] = data
                while len(_cache) > _CACHE_SIZE:
                    _cache.popitem(last=False)
                _rendering.pop(key, None)
    return data


def _encode(model: str, prompt: str, width: int, height: int, index: int, n: int, task: str) -> bytes:
    started = time.perf_counter()
    buffer = io.BytesIO()
    _draw(model, prompt, width, height, index, n, task).save(buffer, format="PNG", compress_level=_COMPRESS_LEVEL)
    with _stats_lock:
        _stats.renders += 1
        _stats.seconds += time.perf_counter() - started
    return buffer.getvalue()
