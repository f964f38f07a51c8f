"""A result in another format than PNG becomes the PNG pixmake writes: same pixels, nothing but PNGs on disk.

Pure Pillow: each format and mode an image API (or a CDN in front of it) may serve, converted and read back.
"""

from __future__ import annotations

import io
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image, ImageChops

from conftest import png_of_size
from pixmake.decode import MAX_RESULT_PIXELS, as_png, image_size, is_whole_image, pixel_digest
from pixmake.errors import BadResultError


def _encoded(image: Image.Image, fmt: str, **options: object) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **options)
    return out.getvalue()


def _gradient(mode: str = "RGB", size: tuple[int, int] = (24, 16)) -> Image.Image:
    """An image whose every pixel differs: a wrong turn or a lost channel shows."""
    image = Image.new("RGB", size)
    image.putdata([(x * 10 % 256, y * 15 % 256, (x * y) % 256) for y in range(size[1]) for x in range(size[0])])
    return image if mode == "RGB" else image.convert(mode)


def _png(blob: bytes) -> Image.Image:
    converted, size = as_png(blob, "result 1")
    image = Image.open(io.BytesIO(converted))
    image.load()
    assert image.format == "PNG" and image.size == size
    return image


def _same_pixels(a: Image.Image, b: Image.Image) -> bool:
    return a.size == b.size and ImageChops.difference(a.convert("RGBA"), b.convert("RGBA")).getbbox() is None


def test_a_png_is_kept_byte_for_byte() -> None:
    blob = _encoded(_gradient(), "PNG")
    assert as_png(blob, "result 1") == (blob, (24, 16))


@pytest.mark.parametrize(
    ("fmt", "mode", "options"),
    [
        ("JPEG", "RGB", {"quality": 90}),
        ("JPEG", "L", {}),
        ("WEBP", "RGB", {"lossless": True}),
        ("WEBP", "RGBA", {"lossless": True}),
        ("GIF", "P", {}),
        ("TIFF", "RGB", {}),
        ("TIFF", "RGBA", {}),
        ("BMP", "RGB", {}),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_another_format_becomes_a_png_of_the_same_pixels(fmt: str, mode: str, options: dict[str, object]) -> None:
    """The pixels as decoded from the paid file: a lossy JPEG's are kept exactly as any viewer shows them."""
    original = _gradient(mode)
    if mode == "RGBA":
        original.putalpha(Image.linear_gradient("L").resize(original.size))
    blob = _encoded(original, fmt, **options)
    with Image.open(io.BytesIO(blob)) as decoded:
        decoded.load()
        assert _same_pixels(_png(blob), decoded)


def test_a_cmyk_jpeg_becomes_rgb_without_its_cmyk_profile() -> None:
    blob = _encoded(_gradient("CMYK"), "JPEG", quality=95, icc_profile=b"a CMYK profile, not an RGB one")
    image = _png(blob)
    assert image.mode == "RGB" and "icc_profile" not in image.info


def test_an_rgb_profile_and_gif_transparency_are_kept() -> None:
    profile = b"an sRGB profile"
    assert _png(_encoded(_gradient(), "JPEG", icc_profile=profile)).info["icc_profile"] == profile
    gif = Image.new("P", (4, 4), 1)
    gif.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    gif.putpixel((0, 0), 0)
    image = _png(_encoded(gif, "GIF", transparency=0)).convert("RGBA")
    assert (image.getpixel((0, 0)), image.getpixel((1, 1))) == ((0, 0, 0, 0), (255, 0, 0, 255))


def test_a_16_bit_tiff_keeps_its_depth() -> None:
    image = Image.new("I;16", (4, 4))
    image.putpixel((1, 1), 40_000)
    assert _png(_encoded(image, "TIFF")).getpixel((1, 1)) == 40_000


def test_a_jpeg_turned_by_exif_is_written_upright() -> None:
    """A PNG viewer does not apply EXIF orientation: the converted pixels are turned as the JPEG was shown."""
    exif = Image.Exif()
    exif[0x0112] = 6  # turned 90° clockwise to show
    original = _gradient(size=(30, 10))
    image = _png(_encoded(original, "JPEG", quality=100, exif=exif.tobytes()))
    assert image.size == (10, 30)


def test_an_animation_keeps_its_first_frame() -> None:
    frames = [Image.new("RGB", (8, 8), color) for color in ("red", "blue")]
    out = io.BytesIO()
    frames[0].save(out, "GIF", save_all=True, append_images=frames[1:])
    assert _png(out.getvalue()).convert("RGB").getpixel((0, 0)) == (255, 0, 0)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (
            lambda: b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 8 8\n",
            r"result 1 is not an image \(PostScript\)",
        ),
        (
            lambda: _encoded(_gradient(), "ICO"),
            r"result 1 is not an image \(starts with b'\\x00\\x00\\x01\\x00",
        ),
        (lambda: b"", r"result 1 is not an image \(is empty\)"),
        (lambda: _encoded(_gradient(), "JPEG")[:300], "result 1 does not decode: "),
    ],
    ids=["eps", "ico", "empty", "cut"],
)
def test_what_no_image_api_serves_is_never_opened(make: Callable[[], bytes], message: str) -> None:
    """EPS would be rendered by Ghostscript: a result is tried only as the formats image APIs serve."""
    with pytest.raises(BadResultError, match=f"^{message}"):
        as_png(make(), "result 1")


@pytest.mark.parametrize(
    ("blob", "kind"),
    [
        (b"AKIAIOSFODNN7EXAMPLE secret", "text"),
        (b'{"token": "s3cret"}', "JSON"),
        (b"  <!DOCTYPE html><title>s3cret</title>", "an HTML page"),
        (b"<?xml version='1.0'?><s3cret/>", "XML"),
    ],
)
def test_of_text_that_is_no_image_only_its_kind_is_said(blob: bytes, kind: str) -> None:
    """The review's repro: a result URL on an internal host had the first 16 bytes of its answer printed."""
    with pytest.raises(BadResultError) as caught:
        as_png(blob, "result 1")
    assert str(caught.value) == f"result 1 is not an image ({kind})"


def test_the_decompression_bomb_limit_holds_for_results(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # 24 x 16 pixels is then past twice the limit
    for fmt in ("PNG", "JPEG"):
        with pytest.raises(BadResultError, match=r"^result 1 is too large to decode safely"):
            as_png(_encoded(_gradient(), fmt), "result 1")


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")  # Pillow's, at open: the CLI hides it
def test_a_result_with_more_pixels_than_any_model_makes_is_refused_from_its_header(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The review's repro: a 657 KB PNG of 13,000 × 13,000 pixels decoded into 724 MB, with Pillow's raw
    DecompressionBombWarning on stderr. The header says enough (this one's pixels are never decoded)."""
    bomb = png_of_size(13_000, 13_000)
    decoded: list[object] = []
    monkeypatch.setattr(Image.Image, "load", lambda self: decoded.append(self))
    with pytest.raises(BadResultError) as caught:
        as_png(bomb, "result 1")
    assert str(caught.value) == "result 1 is 13000×13000 pixels, more than any image model makes (64 Mpx)"
    assert decoded == []
    assert MAX_RESULT_PIXELS >= 4 * 4096 * 4096  # a 4K square, the largest a model makes, is far from it


def test_image_size_still_reads_what_a_person_saved() -> None:
    """The scan's check of an output is not limited to the formats of results."""
    ppm = _encoded(_gradient(), "PPM")
    assert image_size(ppm) == (24, 16)
    with pytest.raises(BadResultError, match="is not an image"):
        as_png(ppm, "result 1")


# --- pixel_digest: what a reference shows, whatever way it is stored ------------------------------

_COLOURS = st.tuples(st.integers(0, 255), st.integers(0, 255), st.integers(0, 255))


@st.composite
def _images(draw: st.DrawFn) -> Image.Image:
    """A small RGB image of a few colours (so a palette holds it exactly)."""
    width, height = draw(st.integers(1, 12)), draw(st.integers(1, 12))
    palette = draw(st.lists(_COLOURS, min_size=1, max_size=6))
    image = Image.new("RGB", (width, height))
    image.putdata([draw(st.sampled_from(palette)) for _ in range(width * height)])
    return image


def _stored(image: Image.Image, how: str) -> bytes:
    """``image`` saved the ways editors and optimisers save the same pixels."""
    if how == "palette":
        return _encoded(image.quantize(colors=256, method=Image.Quantize.MAXCOVERAGE, dither=Image.Dither.NONE), "PNG")
    if how == "opaque alpha":
        return _encoded(image.convert("RGBA"), "PNG")
    if how == "webp lossless":
        return _encoded(image, "WEBP", lossless=True)
    if how == "text chunk":
        from PIL import PngImagePlugin

        info = PngImagePlugin.PngInfo()
        info.add_text("Software", "an editor")
        return _encoded(image, "PNG", pnginfo=info)
    return _encoded(image, "PNG", compress_level=int(how))


@settings(max_examples=40, deadline=None)
@given(_images(), st.sampled_from(["0", "9", "palette", "opaque alpha", "webp lossless", "text chunk"]))
def test_the_same_pixels_stored_another_way_have_one_digest(image: Image.Image, how: str) -> None:
    original = _encoded(image, "PNG", compress_level=6)
    again = _stored(image, how)
    assert pixel_digest(again) == pixel_digest(original) is not None


@settings(max_examples=40, deadline=None)
@given(_images(), st.data())
def test_one_pixel_changed_changes_the_digest(image: Image.Image, data: st.DataObject) -> None:
    x, y = data.draw(st.integers(0, image.width - 1)), data.draw(st.integers(0, image.height - 1))
    was = image.getpixel((x, y))
    changed = image.copy()
    changed.putpixel((x, y), data.draw(_COLOURS.filter(lambda colour: colour != was)))
    assert pixel_digest(_encoded(changed, "PNG")) != pixel_digest(_encoded(image, "PNG"))


def test_what_changes_how_an_image_is_shown_changes_the_digest() -> None:
    image = _gradient()
    plain = pixel_digest(_encoded(image, "PNG"))
    turned = image.getexif()
    turned[0x0112] = 6  # shown turned a quarter
    assert pixel_digest(_encoded(image, "PNG", exif=turned)) != plain
    assert pixel_digest(_encoded(image, "PNG", icc_profile=b"not sRGB")) != plain
    assert pixel_digest(_encoded(image.transpose(Image.Transpose.ROTATE_90), "PNG")) != plain
    assert pixel_digest(_encoded(image, "JPEG", quality=95)) != plain  # a JPEG's pixels are not the PNG's


def test_no_digest_for_what_is_no_single_whole_image() -> None:
    blob = _encoded(_gradient(), "PNG")
    assert pixel_digest(blob[: len(blob) // 2]) is None
    assert pixel_digest(b"") is None and pixel_digest(b"<html>") is None
    frames = [_gradient(), _gradient().transpose(Image.Transpose.FLIP_LEFT_RIGHT)]
    out = io.BytesIO()
    frames[0].save(out, "WEBP", save_all=True, append_images=frames[1:], lossless=True)
    assert pixel_digest(out.getvalue()) is None  # an animation: more than its first frame was sent
    huge = _encoded(Image.new("1", (8_200, 8_200)), "PNG")  # a few kB; 270 MB as RGBA: not decoded at all
    assert pixel_digest(huge) is None


def test_a_file_larger_than_any_result_is_a_persons_and_is_not_decoded(monkeypatch: pytest.MonkeyPatch) -> None:
    """The security review: a committed 13000² PNG at an output path was decoded whole on every plan (2 s and
    690 MB each; a matrix of them, half an hour). No result is that large: the file is not debris."""
    import pixmake.decode

    def decoded(*args: object, **kwargs: object) -> object:
        raise AssertionError("decoded")

    assert not is_whole_image(png_of_size(13_000, 13_000)[:20])  # no whole header: not an image
    assert not is_whole_image(png_of_size(64, 64))  # a header, and no pixels: debris
    monkeypatch.setattr(pixmake.decode, "image_size", decoded)
    assert is_whole_image(png_of_size(13_000, 13_000))
    assert is_whole_image(png_of_size(8_200, 8_200))  # just past MAX_RESULT_PIXELS


def test_a_digest_is_never_an_exception_and_never_hides_what_pillow_cannot_show() -> None:
    """The diff review: a malformed EXIF block made Pillow raise SyntaxError from inside the digest, after a
    paid image was written and before its lock entry; and 16-bit samples differing in their low byte, or a
    gamma chunk added, kept one digest (Pillow reads 16-bit RGB as 8-bit, and gAMA was not counted)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    plain = _encoded(_gradient(), "PNG")
    assert pixel_digest(plain[:33] + chunk(b"eXIf", b"garbage!garbage") + plain[33:]) is None
    assert pixel_digest(plain[:33] + chunk(b"gAMA", struct.pack(">I", 100_000)) + plain[33:]) not in (
        None,
        pixel_digest(plain),
    )
    deep = Image.new("I;16", (8, 8))
    deep.putdata([257 * v for v in range(64)])
    assert pixel_digest(_encoded(deep, "PNG")) is None  # 16-bit samples: no digest (a re-save is a change)
