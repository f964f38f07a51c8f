"""Whether bytes decode completely as an image: the executor's check of a result, the scan's check of an output.

Pillow is imported on first use, so ``validate`` and a no-op ``plan`` never load it.
"""

from __future__ import annotations

import io

from pixmake.errors import BadResultError

__all__ = ["image_size", "is_whole_image"]


def image_size(blob: bytes, what: str = "the file") -> tuple[int, int]:
    """Pixel size of an image that decodes completely; raises BadResultError for bytes that do not.

    An image too large to decode safely (Pillow's decompression-bomb limit) is refused as well. The
    error's message names the bytes as ``what`` ("result 1").
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(blob)) as image:
            image.load()
            return image.size
    except Image.DecompressionBombError as error:
        raise BadResultError(f"{what} is too large to decode safely: {error}") from error
    except UnidentifiedImageError as error:  # its text names a BytesIO object: say what the bytes are instead
        start = f"starts with {blob[:16]!r}" if blob else "is empty"
        raise BadResultError(f"{what} is not an image ({start})") from error
    except (OSError, ValueError, SyntaxError) as error:
        raise BadResultError(f"{what} does not decode: {error}") from error


def is_whole_image(blob: bytes) -> bool:
    """False for bytes that do not decode whole (empty, zeros, most cuts); True for any image that decodes,
    and for one too large to decode whose header is whole: that is a person's file, not debris.

    A PNG cut inside its last chunk still decodes: only a comparison with the bytes it came from shows
    the cut (:mod:`pixmake.scan` makes it).
    """
    from PIL import Image

    try:
        image_size(blob)
    except BadResultError as error:
        return isinstance(error.__cause__, Image.DecompressionBombError)
    return True
