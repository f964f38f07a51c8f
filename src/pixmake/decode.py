"""Whether bytes decode completely as an image: the executor's check of a result, the scan's check of an output;
and a result in another format made the PNG that pixmake writes.

Pillow is imported on first use, so ``validate`` and a no-op ``plan`` never load it.
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING, Final

from pixmake.errors import BadResultError

if TYPE_CHECKING:
    from PIL.Image import Image

__all__ = ["MAX_RESULT_PIXELS", "RESULT_FORMATS", "as_png", "image_size", "is_whole_image", "pixel_digest"]

RESULT_FORMATS: Final = ("PNG", "JPEG", "WEBP", "GIF", "TIFF", "BMP", "AVIF")
"""What a result may be (Pillow's names; JPEG takes MPO too): what image APIs and their CDNs serve. Other
formats are not even tried: EPS, which Pillow renders with Ghostscript, or PSD, ICO and the like."""

MAX_RESULT_PIXELS: Final = 64 * 2**20
"""The most pixels a result may have: four times the largest any model makes (a 4K square, 16.8 million),
far under Pillow's own limit, so a server's 13,000-pixel square is refused from its header, not decoded
into 700 MB (nor warned about in Pillow's words)."""

# Modes whose pixels RGBA holds exactly: a re-save may move between them (a palette made of a few colours,
# an opaque alpha channel dropped, grey stored as RGB) and the image is the same.
_RGBA_EXACT: Final = frozenset({"1", "L", "LA", "La", "P", "PA", "RGB", "RGBA", "RGBa"})
_ORIENTATION: Final = 0x0112  # the EXIF tag that turns an image when it is shown
_DIGEST_MAX_PIXELS: Final = 4096 * 4096  # a reference's; past it, no digest (its RGBA alone would be 64 MB)
_DIGEST_ROWS: Final = 256

# Modes a PNG holds as they are; an image in another (CMYK, YCbCr, LAB, I, F, PA, RGBa ...) is converted.
_PNG_MODES: Final = frozenset({"1", "L", "LA", "I;16", "I;16B", "P", "RGB", "RGBA"})


def _decoded(blob: bytes, what: str, formats: tuple[str, ...] | None = None, max_pixels: int | None = None) -> Image:
    """The image in ``blob``, decoded whole (the first frame of an animation); raises BadResultError.

    An image too large to decode safely (Pillow's decompression-bomb limit, or ``max_pixels``) is refused
    as well. The error's message names the bytes as ``what`` ("result 1"). ``formats``: the only ones tried.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        image = Image.open(io.BytesIO(blob), formats=formats)
        width, height = image.size
        if max_pixels is not None and width * height > max_pixels:
            image.close()
            raise BadResultError(
                f"{what} is {width}×{height} pixels, more than any image model makes ({max_pixels >> 20} Mpx)"
            )
        image.load()
    except Image.DecompressionBombError as error:
        raise BadResultError(f"{what} is too large to decode safely: {error}") from error
    except UnidentifiedImageError as error:  # its text names a BytesIO object: say what the bytes are instead
        raise BadResultError(f"{what} is not an image ({_kind(blob)})") from error
    except (OSError, ValueError, SyntaxError) as error:
        raise BadResultError(f"{what} does not decode: {error}") from error
    return image


def _kind(blob: bytes) -> str:
    """What bytes that are no image look like: a binary format's magic number, but of text only its kind (a
    result URL may be any server's, an internal one's with a secret, and the message goes to CI logs)."""
    if not blob:
        return "is empty"
    start = blob[:512].lstrip().lower()
    if start.startswith((b"<!doctype html", b"<html")) or b"<body" in start:
        return "an HTML page"
    if start.startswith((b"{", b"[")):
        return "JSON"
    if start.startswith(b"%!ps"):
        return "PostScript"
    if start.startswith(b"<"):
        return "XML"
    try:
        blob[:512].decode("utf-8")
    except UnicodeDecodeError:
        return f"starts with {blob[:8]!r}"
    return "text"


def image_size(blob: bytes, what: str = "the file") -> tuple[int, int]:
    """Pixel size of an image that decodes completely; raises BadResultError for bytes that do not (see
    :func:`_decoded`)."""
    with _decoded(blob, what) as image:
        return image.size


def as_png(blob: bytes, what: str) -> tuple[bytes, tuple[int, int]]:
    """A result as the PNG pixmake writes, and its pixel size; raises BadResultError for bytes that do not
    decode whole as one of :data:`RESULT_FORMATS`.

    A PNG is kept byte for byte. Another format is converted: the same pixels (a JPEG's as decoded, so
    nothing of the paid image is lost), transparency and an ICC profile that still fits them. A JPEG's EXIF
    orientation is applied, since a PNG viewer would not; other metadata and later frames are not kept.
    """
    with _decoded(blob, what, RESULT_FORMATS, MAX_RESULT_PIXELS) as image:
        if image.format == "PNG":
            return blob, image.size
        try:
            png = _png(image)
        except Exception as error:  # a server's bytes (its EXIF, say): whatever Pillow raises, the result is bad
            raise BadResultError(f"{what} does not convert to PNG: {error}") from error
        return png, image.size  # as turned upright


def _png(image: Image) -> bytes:
    """A decoded image as PNG bytes; turned upright in place (its size may change)."""
    from PIL import ImageOps

    ImageOps.exif_transpose(image, in_place=True)
    if image.mode not in _PNG_MODES:
        converted = image.convert("RGBA" if "A" in image.getbands() or "a" in image.getbands() else "RGB")
        if not image.mode.startswith(("RGB", "P")):  # a CMYK, grey or LAB profile does not describe RGB
            converted.info.pop("icc_profile", None)
        image = converted
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def is_whole_image(blob: bytes) -> bool:
    """False for bytes that do not decode whole (empty, zeros, most cuts); True for any image that decodes,
    and for one larger than any result (:data:`MAX_RESULT_PIXELS`) whose header is whole, not decoded: that
    is a person's file, not debris.

    A PNG cut inside its last chunk still decodes: only a comparison with the bytes it came from shows
    the cut (:mod:`pixmake.scan` makes it).
    """
    from PIL import Image

    from pixmake.inputs import sniff

    header = sniff(blob[:32])  # PNG, GIF, WebP: a JPEG's size is read by decoding it
    if header.width * header.height > MAX_RESULT_PIXELS:  # no result is this large: a person's file, whole or
        return True  # not, and the scan is spared decoding it (seconds and hundreds of MB each, on every plan)
    try:
        image_size(blob)
    except BadResultError as error:
        return isinstance(error.__cause__, Image.DecompressionBombError)
    return True


def pixel_digest(blob: bytes) -> str | None:
    """sha256 of what an image shows: its size, its pixels (as RGBA where that holds them exactly), its colour
    profile (ICC, gamma, chromaticities, sRGB intent) and its EXIF orientation; None for bytes that do not
    decode whole, hold several frames or 16-bit samples (Pillow reads 8 of them), have more than
    :data:`_DIGEST_MAX_PIXELS`, or make Pillow raise anything at all (a malformed EXIF block, say).

    Two files with one digest differ only in how they are stored (compression, chunk order, other metadata,
    a palette or a colour type that holds the same colours): a reference re-saved by an editor or an
    optimiser (``oxipng``, ``pngcrush``) is the same image. A JPEG saved again is not: its pixels change.
    """
    import hashlib

    from PIL import Image

    try:
        with Image.open(io.BytesIO(blob)) as image:
            width, height = image.size
            if width * height > _DIGEST_MAX_PIXELS or getattr(image, "n_frames", 1) > 1:
                return None  # too large to decode for this; or an animation, more than its first frame
            if any(";16" in str(tile[3]) for tile in image.tile):  # decoded to 8 bits: a change could hide
                return None
            image.load()
            info = image.info
            profile = info.get("icc_profile") or b""
            colour = repr((info.get("gamma"), info.get("chromaticity"), info.get("srgb")))
            orientation = image.getexif().get(_ORIENTATION, 1)
            shown = image.convert("RGBA") if image.mode in _RGBA_EXACT else image
            digest = hashlib.sha256(b"pixmake pixels 1\0")
            head = f"{shown.mode}\0{width}x{height}\0{orientation}\0{colour}\0{len(profile)}\0"
            digest.update(head.encode())
            digest.update(profile)
            for top in range(0, height, _DIGEST_ROWS):  # a strip at a time: never a second copy of it all
                digest.update(shown.crop((0, top, width, min(height, top + _DIGEST_ROWS))).tobytes())
            return digest.hexdigest()
    except Exception:  # whatever Pillow raises on a file someone made: no digest, so a re-save is a change
        return None
