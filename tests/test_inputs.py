"""Input files checked against the model table at validate and plan time: headers, sizes, symlinks."""

from __future__ import annotations

import io
import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from conftest import run_cli, write_png
from pixmake import api
from pixmake.errors import ManifestError, UnsafePathError
from pixmake.inputs import HeaderCache, ImageInfo, check_inputs, read_header, sniff
from pixmake.manifest import parse_manifest

MakeProject = Callable[..., Path]


def _encode(fmt: str, size: tuple[int, int], *, mode: str | None = None, **options: object) -> bytes:
    """Real image bytes; WebP comes out as VP8 (lossy RGB), VP8L (lossless) or VP8X (lossy with alpha)."""
    buffer = io.BytesIO()
    mode = mode or ("RGBA" if fmt == "PNG" else "RGB")
    Image.new(mode, size, (1, 2, 3, 255) if mode == "RGBA" else (1, 2, 3)).save(buffer, fmt, **options)
    return buffer.getvalue()


@given(
    st.sampled_from(["PNG", "JPEG", "WEBP", "GIF"]),
    st.integers(1, 3000),
    st.integers(1, 3000),
    st.booleans(),
    st.sampled_from(["RGB", "RGBA"]),
)
@settings(max_examples=40, deadline=None)
def test_header_reader_agrees_with_pillow(fmt: str, width: int, height: int, lossless: bool, mode: str) -> None:
    options: dict[str, object] = {"lossless": lossless} if fmt == "WEBP" else {}
    data = _encode(fmt, (width, height), mode=mode if fmt in {"PNG", "WEBP"} else "RGB", **options)
    info = sniff(data[:64]) if fmt != "JPEG" else None
    if info is not None:
        assert info == ImageInfo(fmt.lower(), width, height)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP", "GIF"])
def test_read_header_reads_real_files(tmp_path: Path, fmt: str) -> None:
    path = tmp_path / f"image.{fmt.lower()}"
    path.write_bytes(_encode(fmt, (321, 123)))
    info = read_header(path)
    assert (info.format, info.width, info.height) == (fmt.lower(), 321, 123)


@pytest.mark.parametrize(
    ("mode", "options", "transparent"),
    [
        ("RGBA", {}, True),
        ("LA", {}, True),
        ("RGB", {}, False),
        ("L", {}, False),
        ("1", {}, False),
        ("P", {}, False),
        ("P", {"transparency": 0}, True),  # a tRNS chunk: a palette entry is transparent
        ("RGB", {"transparency": (0, 0, 0)}, True),
    ],
)
def test_a_pngs_header_says_whether_it_can_be_transparent(
    tmp_path: Path, mode: str, options: dict[str, object], transparent: bool
) -> None:
    """What a mask needs (its transparent pixels are repainted), read from chunk headers alone."""
    path = tmp_path / "mask.png"
    Image.new(mode, (8, 8)).save(path, "PNG", **options)
    assert read_header(path) == ImageInfo("png", 8, 8, transparent)


def test_a_mask_with_no_transparency_is_warned_of_by_validate_plan_and_build(tmp_path: Path) -> None:
    """The review: a black-and-white RGB mask (what designers paint) validated fine: a paid edit that may
    repaint nothing. A warning, not an error: gpt-4o-image does not document its mask's meaning."""
    write_png(tmp_path / "photo.png", (64, 64))
    write_png(tmp_path / "mask.png", (64, 64), (0, 0, 0))
    (tmp_path / "pixmake.yaml").write_text(
        "version: 1\ntargets:\n  edit:\n    prompt: x\n    references: [photo.png]\n    mask: mask.png\n"
        "    out: a.png\n"
    )
    warning = (
        f"pixmake: warning: {tmp_path / 'pixmake.yaml'}:6:11: targets.edit.mask: mask.png has no transparency "
        "(no alpha channel): a mask's transparent pixels mark what is repainted, so this one may repaint "
        "nothing; paint that area transparent and save with alpha"
    )
    for command in (("validate",), ("plan",), ("build", "--emulator"), ("plan",), ("plan", "--check")):
        outcome = run_cli("-C", str(tmp_path), *command)
        assert outcome.exit_code == 0 and outcome.stderr.splitlines().count(warning) == 1, (command, outcome.stderr)
    planned = json.loads(run_cli("-C", str(tmp_path), "plan", "--json").stdout)
    assert [w["field"] for w in planned["warnings"]] == ["targets.edit.mask"]
    write_png(tmp_path / "mask.png", (64, 64), (0, 0, 0, 0), mode="RGBA")  # fixed: the manifest unchanged
    assert "mask.png has no transparency" not in run_cli("-C", str(tmp_path), "plan").stderr


@pytest.mark.parametrize(
    ("mode", "colour", "options"),
    [
        ("RGBA", (0, 0, 0, 255), {}),  # an alpha channel opaque everywhere: what a flattened layer exports
        ("LA", (0, 255), {}),
        ("RGB", (0, 0, 0), {"transparency": (9, 9, 9)}),  # a transparent colour no pixel has
    ],
)
def test_a_mask_that_can_be_transparent_but_has_no_transparent_pixel_is_warned_of_before_paying(
    tmp_path: Path, mode: str, colour: tuple[int, ...], options: dict[str, object]
) -> None:
    """Its header says it can be transparent; its pixels say it is not: the edit may repaint nothing. The
    pixels are read before paying only (validate of 10,000 masked edits would decode 10,000 masks, 23 ms
    each); once the edit is built, plans read them no more."""
    write_png(tmp_path / "photo.png", (64, 64))
    Image.new(mode, (64, 64), colour).save(tmp_path / "mask.png", "PNG", **options)
    (tmp_path / "pixmake.yaml").write_text(
        "version: 1\ntargets:\n  edit:\n    prompt: x\n    references: [photo.png]\n    mask: mask.png\n"
        "    out: a.png\n"
    )
    warning = (
        f"pixmake: warning: {tmp_path / 'pixmake.yaml'}:6:11: targets.edit.mask: mask.png has no transparent "
        "pixel (every pixel is opaque): a mask's transparent pixels mark what is repainted, "
        "so this one may repaint nothing; paint that area transparent"
    )
    assert warning not in run_cli("-C", str(tmp_path), "validate").stderr
    for command in (("plan",), ("build", "--emulator")):
        outcome = run_cli("-C", str(tmp_path), *command)
        assert outcome.exit_code == 0 and outcome.stderr.splitlines().count(warning) == 1, (command, outcome.stderr)
    assert warning not in run_cli("-C", str(tmp_path), "plan").stderr  # built: nothing to pay for
    planned = json.loads(run_cli("-C", str(tmp_path), "plan", "--json", "--replace", "edit").stdout)
    assert [w["field"] for w in planned["warnings"]] == ["targets.edit.mask"]
    image = Image.new(mode, (64, 64), colour)
    image.putpixel((3, 3), (0, 0, 0, 0) if mode == "RGBA" else (0, 0) if mode == "LA" else (9, 9, 9))
    image.save(tmp_path / "mask.png", "PNG", **options)  # one transparent pixel: a mask that may work
    assert "no transparent pixel" not in run_cli("-C", str(tmp_path), "plan", "--replace", "edit").stderr


def test_jpeg_size_is_found_after_a_large_exif_segment(tmp_path: Path) -> None:
    exif = Image.Exif()
    exif[0x010E] = "x" * 60_000  # ImageDescription: pushes the SOF marker far from the start
    buffer = io.BytesIO()
    Image.new("RGB", (40, 30)).save(buffer, "JPEG", exif=exif.tobytes())
    path = tmp_path / "exif.jpg"
    path.write_bytes(buffer.getvalue())
    assert read_header(path) == ImageInfo("jpeg", 40, 30)


@given(st.binary(max_size=200))
@settings(max_examples=300, deadline=None)
def test_garbage_and_truncated_headers_never_raise(data: bytes) -> None:
    for prefix in (b"", b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR", b"\xff\xd8\xff", b"RIFF\0\0\0\0WEBPVP8L", b"GIF89a"):
        sniff(prefix + data)


def test_truncated_jpeg_does_not_loop_or_raise(tmp_path: Path) -> None:
    path = tmp_path / "cut.jpg"
    path.write_bytes(_encode("JPEG", (50, 50))[:20])
    assert read_header(path) == ImageInfo("jpeg", 0, 0)


def _manifest(body: str) -> str:
    return f"version: 1\ntargets:\n  hero:\n    prompt: a mug\n{body}    out: assets/hero.png\n"


def test_a_reference_over_the_models_byte_limit_is_refused(make_project: MakeProject) -> None:
    root = make_project(_manifest("    references: [photos/big.png]\n"))
    big = root / "photos" / "big.png"
    write_png(big)
    with big.open("r+b") as handle:
        handle.truncate(10 * 1024 * 1024 + 1)  # sparse: a valid PNG header, 10 MB + 1 byte
    with pytest.raises(ManifestError, match=r"expected at most 10.0 MB for a gpt-4o-image reference"):
        api.validate(api.open_project(root))


def test_gpt_image_2_takes_larger_references_but_no_webp(make_project: MakeProject) -> None:
    root = make_project(
        _manifest("    model: gpt-image-2\n    references: [photos/big.png, photos/w.webp]\n"),
        {"photos/w.webp": _encode("WEBP", (8, 8))},
    )
    write_png(root / "photos" / "big.png")
    with (root / "photos" / "big.png").open("r+b") as handle:
        handle.truncate(20 * 1024 * 1024)
    with pytest.raises(ManifestError) as caught:
        api.validate(api.open_project(root))
    (diagnostic,) = caught.value.diagnostics
    assert diagnostic.field == "targets.hero.references[1]" and "found a WebP image" in diagnostic.message


def test_a_mask_over_4_mb_is_refused(make_project: MakeProject) -> None:
    root = make_project(_manifest("    references: [photos/mug.png]\n    mask: masks/m.png\n"))
    write_png(root / "photos" / "mug.png")
    write_png(root / "masks" / "m.png", mode="RGBA", color=(0, 0, 0, 0))
    with (root / "masks" / "m.png").open("r+b") as handle:
        handle.truncate(4 * 1024 * 1024 + 1)
    with pytest.raises(ManifestError, match=r"expected a mask of at most 4\.0 MB"):
        api.validate(api.open_project(root))


def test_a_mask_after_a_url_reference_is_not_size_checked(make_project: MakeProject) -> None:
    root = make_project(_manifest("    references: [https://example.com/a.png]\n    mask: masks/m.png\n"))
    write_png(root / "masks" / "m.png", size=(7, 9), mode="RGBA", color=(0, 0, 0, 0))
    assert api.validate(api.open_project(root)).targets


def test_a_symlinked_reference_leading_outside_is_an_unsafe_path(make_project: MakeProject, tmp_path: Path) -> None:
    outside = write_png(tmp_path / "elsewhere" / "secret.png")
    root = make_project(_manifest("    references: [photos/mug.png]\n"))
    (root / "photos").mkdir()
    os.symlink(outside, root / "photos" / "mug.png")
    with pytest.raises(UnsafePathError) as caught:
        api.validate(api.open_project(root))
    assert caught.value.field == "targets.hero.references[0]"
    (diagnostic,) = caught.value.diagnostics
    assert diagnostic.kind == "unsafe-path" and diagnostic.line == 5 and "symlink" in diagnostic.message
    outcome = run_cli("-C", str(root), "validate")
    assert outcome.exit_code == 3 and "Traceback" not in outcome.stderr


def test_a_symlinked_output_directory_leading_outside_is_an_unsafe_path(
    make_project: MakeProject, tmp_path: Path
) -> None:
    (tmp_path / "elsewhere").mkdir()
    root = make_project(_manifest(""))
    os.symlink(tmp_path / "elsewhere", root / "assets")
    with pytest.raises(UnsafePathError) as caught:
        api.validate(api.open_project(root))
    assert caught.value.field == "targets.hero.out"


def test_an_output_that_reaches_an_input_another_output_or_the_local_state_through_a_symlinked_folder(
    make_project: MakeProject,
) -> None:
    text = (
        "version: 1\ntargets:\n  a: {prompt: a, out: a.png}\n  b: {prompt: b, out: self/a.png}\n"
        "  user: {prompt: u, references: [photos/mug.png], out: u.png}\n  clobber: {prompt: c, out: pics/mug.png}\n"
        "  st: {prompt: s, out: st/x.png}\n"
    )
    root = make_project(text)
    write_png(root / "photos" / "mug.png")
    os.symlink("photos", root / "pics")
    os.symlink(".", root / "self")
    (root / ".pixmake").mkdir()
    os.symlink(".pixmake", root / "st")
    with pytest.raises(ManifestError) as caught:
        api.validate(api.open_project(root))
    assert [(d.line, d.field, d.message) for d in caught.value.diagnostics] == [
        (4, "targets.b.out", "output 'self/a.png' is the file 'a.png' (through a symlinked folder), which target 'a' "
         "writes as well"),
        (6, "targets.clobber.out", "output 'pics/mug.png' is the file 'photos/mug.png' (through a symlinked folder), "
         "a reference of target 'user'; choose another out"),
        (7, "targets.st.out", "output 'st/x.png' is the file '.pixmake/x.png' (through a symlinked folder), inside "
         "pixmake's local state; choose another out"),
    ]  # fmt: skip
    before = (root / "photos" / "mug.png").read_bytes()
    assert run_cli("-C", str(root), "build", "--emulator").exit_code == 3  # nothing is built, nothing overwritten
    assert (root / "photos" / "mug.png").read_bytes() == before


def test_an_output_that_is_an_input_or_another_output_on_a_case_insensitive_disk_is_refused(
    make_project: MakeProject,
) -> None:
    """Names differing only in letter case are two files on Linux (the manifest warns) and one on macOS's
    and Windows' file systems, simulated with a hard link: there a build would overwrite the reference."""
    text = (
        "version: 1\ntargets:\n  user: {prompt: u, references: [photos/mug.png], out: u.png}\n"
        "  clobber: {prompt: c, out: photos/Mug.png}\n  a: {prompt: a, out: a.png}\n  b: {prompt: b, out: A.png}\n"
    )
    root = make_project(text)
    write_png(root / "photos" / "mug.png")
    write_png(root / "a.png")
    if (root / "A.png").exists():
        pytest.skip("a case-insensitive file system: a.png and A.png are one file already")
    write_png(root / "A.png")
    api.validate(api.open_project(root))  # two files each: warnings only
    (root / "A.png").unlink()
    os.link(root / "a.png", root / "A.png")
    os.link(root / "photos" / "mug.png", root / "photos" / "Mug.png")
    with pytest.raises(ManifestError) as caught:
        api.validate(api.open_project(root))
    same = "are one file on this disk (its file system ignores letter case and Unicode form): choose another out"
    assert [(d.line, d.field, d.message) for d in caught.value.diagnostics] == [
        (
            4,
            "targets.clobber.out",
            f"output 'photos/Mug.png' and a reference of target 'user' ('photos/mug.png') {same}",
        ),
        (6, "targets.b.out", f"output 'A.png' and 'a.png', which another target writes, {same}"),
    ]
    before = (root / "photos" / "mug.png").read_bytes()
    assert run_cli("-C", str(root), "build", "--emulator").exit_code == 3
    assert (root / "photos" / "mug.png").read_bytes() == before


def test_an_output_under_a_file_is_refused_before_anything_is_paid(make_project: MakeProject) -> None:
    """A symlinked folder that git checked out as a text file (core.symlinks off): no output fits under it."""
    root = make_project("version: 1\ntargets:\n  hero: {prompt: h, out: assets/sku/hero.png}\n")
    (root / "assets").write_text("../shared/assets")
    outcome = run_cli("-C", str(root), "build", "--emulator")
    assert outcome.exit_code == 3, outcome.stderr
    assert "assets/sku/hero.png cannot be written: assets is a file, not a folder" in outcome.stderr
    assert not (root / ".pixmake" / "objects").exists()


def test_a_symlinked_catalog_leading_outside_is_an_unsafe_path(make_project: MakeProject, tmp_path: Path) -> None:
    (tmp_path / "skus.csv").write_text("sku\na\n")
    text = "version: 1\ntargets:\n  p-${sku}:\n    rows: skus.csv\n    prompt: ${sku}\n    out: p/${sku}.png\n"
    root = make_project(text)
    os.symlink(tmp_path / "skus.csv", root / "skus.csv")
    with pytest.raises(UnsafePathError) as caught:
        api.validate(api.open_project(root))
    assert caught.value.field == "targets.p-${sku}.rows"


def test_a_symlink_that_stays_inside_is_fine(make_project: MakeProject) -> None:
    root = make_project(_manifest("    references: [photos/link.png]\n"))
    write_png(root / "photos" / "mug.png")
    os.symlink(root / "photos" / "mug.png", root / "photos" / "link.png")
    assert api.validate(api.open_project(root)).targets


def test_headers_are_cached_by_content_hash(tmp_path: Path) -> None:
    data = _encode("PNG", (5, 5))
    (tmp_path / "a.png").write_bytes(data)
    (tmp_path / "b.png").write_bytes(data)
    text = _manifest("    references: [a.png]\n") + "  other:\n    prompt: p\n    references: [b.png]\n    out: o.png\n"
    manifest = parse_manifest(text, file="m.yaml")
    cache = HeaderCache()
    check_inputs(tmp_path, manifest, cache=cache)
    check_inputs(tmp_path, manifest, cache=cache)
    assert cache.statistics() == {"hashed": 2, "headers": 1}


def test_plan_checks_inputs_even_when_given_a_parsed_manifest(make_project: MakeProject) -> None:
    root = make_project(_manifest("    references: [photos/mug.png]\n"), {"photos/mug.png": b"not an image"})
    project = api.open_project(root)
    manifest = parse_manifest(project.manifest.read_text(), file="pixmake.yaml")
    with pytest.raises(ManifestError, match="found a file that is not an image"):
        api.plan(project, manifest=manifest)
