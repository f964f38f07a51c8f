"""Whether bytes decode completely as an image: the executor's check of a result, the scan's check of an output.

Pillow is imported on first use, so ``validate`` and a no-op ``plan`` never load it.
"""

from __future__ import annotations

import io

from pixmake.errors import BadResultError

__all__ = ["image_size"]


def image_size(blob: bytes) -> tuple[int, int]:
    """Pixel size of an image that decodes completely; raises BadResultError for bytes that do not."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(blob)) as image:
            image.load()
            return image.size
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as error:
        raise BadResultError(f"image does not decode: {error}") from error
