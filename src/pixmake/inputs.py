"""Check a manifest's input files against the model table, before any money is spent.

Shell: reads the disk. Runs at ``validate`` and ``plan`` time (``api.validate``, ``api.plan``) and
enforces the rules of :data:`pixmake.models.MODELS` that need the files themselves:

* every path resolves inside the project root, symlinks followed (else an ``unsafe-path`` diagnostic,
  raised as :class:`~pixmake.errors.UnsafePathError`);
* a reference exists, is JPEG/PNG/WebP (per model) and within the model's byte limit;
* a mask is a PNG within its byte limit with exactly the pixel size of the first reference.

Only image *headers* are read, by a small parser for the formats that matter (PNG IHDR, JPEG SOF,
WebP VP8/VP8L/VP8X, GIF); no pixel data is decoded and Pillow is not imported, which keeps
``pixmake plan`` free of it; except by :func:`opaque_masks`, which decodes the masks of the edits a
plan is about to pay for (a mask that can be transparent but is not). Header facts are cached by
content hash (sha256), and the hash by ``stat`` identity, so ``validate`` followed by ``plan`` in one
process reads each file once.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import struct
from collections.abc import Container, Iterable
from dataclasses import dataclass
from pathlib import Path
from stat import S_ISDIR, S_ISLNK, S_ISREG
from typing import BinaryIO, Final

from pixmake.errors import Diagnostic, ManifestError, UnsafePathError
from pixmake.manifest import Manifest, Target, is_url, output_paths, portable_path
from pixmake.models import MB, MODELS, ModelSpec
from pixmake.store import STATE_DIR, RootGuard, safe_path

__all__ = ["HeaderCache", "ImageInfo", "check_inputs", "input_warnings", "opaque_masks", "read_header", "sniff"]

_JPEG_SOF: Final = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})
_NAMES: Final = {
    "jpeg": "JPEG",
    "png": "PNG",
    "webp": "WebP",
    "gif": "GIF",
    "bmp": "BMP",
    "tiff": "TIFF",
    "heic": "HEIC",
    "avif": "AVIF",
}


@dataclass(frozen=True, slots=True)
class ImageInfo:
    """What an image header says: format (``"png"``, ``"jpeg"``…, None if not an image) and pixel size."""

    format: str | None
    width: int = 0
    height: int = 0
    transparent: bool | None = None  # a PNG: whether it can hold a transparent pixel (None: not known)


_PNG_ALPHA: Final = frozenset({4, 6})  # colour types with an alpha channel: grey + alpha, RGBA


def _png_transparency(handle: BinaryIO, colour_type: int) -> bool | None:
    """Whether a PNG can hold a transparent pixel: an alpha channel, or a tRNS chunk before its image data.
    Chunk headers only (at most 64 of them); None when the file ends or is malformed first."""
    if colour_type in _PNG_ALPHA:
        return True
    handle.seek(33)  # the signature and IHDR
    for _ in range(64):
        header = handle.read(8)
        if len(header) < 8:
            return None
        length, kind = struct.unpack(">I4s", header)
        if kind == b"tRNS":
            return True
        if kind in (b"IDAT", b"IEND"):
            return False
        handle.seek(length + 4, os.SEEK_CUR)  # the data and its CRC
    return None


def sniff(head: bytes) -> ImageInfo:
    """Format and size from the first bytes of a file (enough for PNG, GIF and WebP; JPEG needs :func:`read_header`)."""
    if head.startswith(b"\x89PNG\r\n\x1a\n") and head[12:16] == b"IHDR" and len(head) >= 24:
        width, height = struct.unpack(">II", head[16:24])
        return ImageInfo("png", width, height)
    if head[:6] in {b"GIF87a", b"GIF89a"} and len(head) >= 10:
        width, height = struct.unpack("<HH", head[6:10])
        return ImageInfo("gif", width, height)
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return _webp(head)
    if head.startswith(b"\xff\xd8\xff"):
        return ImageInfo("jpeg")
    if head.startswith(b"BM"):
        return ImageInfo("bmp")
    if head[:4] in {b"II*\0", b"MM\0*"}:
        return ImageInfo("tiff")
    if head[4:8] == b"ftyp" and head[8:12] in {b"heic", b"heix", b"mif1", b"avif"}:
        return ImageInfo("avif" if head[8:12] == b"avif" else "heic")
    return ImageInfo(None)


def _webp(head: bytes) -> ImageInfo:
    chunk = head[12:16]
    if chunk == b"VP8 " and len(head) >= 30:
        width, height = struct.unpack("<HH", head[26:30])
        return ImageInfo("webp", width & 0x3FFF, height & 0x3FFF)
    if chunk == b"VP8L" and len(head) >= 25:
        b0, b1, b2, b3 = head[21:25]
        return ImageInfo("webp", 1 + (b0 | (b1 & 0x3F) << 8), 1 + (b1 >> 6 | b2 << 2 | (b3 & 0x0F) << 10))
    if chunk == b"VP8X" and len(head) >= 30:
        return ImageInfo("webp", 1 + int.from_bytes(head[24:27], "little"), 1 + int.from_bytes(head[27:30], "little"))
    return ImageInfo("webp")


def _jpeg_size(handle: BinaryIO) -> tuple[int, int]:
    """Walk JPEG segments to the first SOF marker; (0, 0) when the file is truncated or malformed."""
    handle.seek(2)
    for _ in range(10_000):  # bounded: a corrupt file cannot make this loop forever
        byte = handle.read(1)
        while byte == b"\xff":
            byte = handle.read(1)
        if not byte:
            return 0, 0
        marker = byte[0]
        if marker in {0x01, *range(0xD0, 0xD9)}:
            continue
        length_bytes = handle.read(2)
        if len(length_bytes) < 2:
            return 0, 0
        (length,) = struct.unpack(">H", length_bytes)
        if marker in _JPEG_SOF:
            data = handle.read(5)
            if len(data) < 5:
                return 0, 0
            height, width = struct.unpack(">HH", data[1:5])
            return width, height
        if length < 2:
            return 0, 0
        handle.seek(length - 2, os.SEEK_CUR)
    return 0, 0


def read_header(path: Path) -> ImageInfo:
    """Format, pixel size and (a PNG) whether it can be transparent, of an image file, from its header."""
    with path.open("rb") as handle:
        head = handle.read(64)
        info = sniff(head)
        if info.format == "jpeg":
            width, height = _jpeg_size(handle)
            info = ImageInfo("jpeg", width, height)
        elif info.format == "png" and len(head) > 25:
            info = ImageInfo("png", info.width, info.height, _png_transparency(handle, head[25]))
    return info


def _no_transparent_pixel(path: Path, info: ImageInfo) -> bool:
    """Whether every pixel of a PNG that can be transparent is opaque (False when it cannot be told: too
    large to decode, or not decodable; the header checks say what is wrong with such a file)."""
    from PIL import Image

    from pixmake.decode import MAX_RESULT_PIXELS

    if info.width * info.height > MAX_RESULT_PIXELS:
        return False
    try:
        with Image.open(path) as image:
            alpha = image.getchannel("A") if "A" in image.getbands() else image.convert("RGBA").getchannel("A")
            low, _ = alpha.getextrema()
    except (OSError, ValueError, Image.DecompressionBombError):
        return False
    return bool(low == 255)


class HeaderCache:
    """Image header facts cached by content hash; the hash cached by (device, inode, size, mtime)."""

    def __init__(self) -> None:
        self._hashes: dict[tuple[int, int, int, int], str] = {}
        self._infos: dict[str, ImageInfo] = {}
        self._opaque: dict[str, bool] = {}

    def info(self, path: Path, stat: os.stat_result) -> ImageInfo:
        """Header facts of ``path`` (whose ``stat`` the caller already has)."""
        key = (stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns)
        digest = self._hashes.get(key)
        if digest is None:
            with path.open("rb") as handle:
                digest = hashlib.file_digest(handle, "sha256").hexdigest()
            self._hashes[key] = digest
        info = self._infos.get(digest)
        if info is None:
            info = self._infos[digest] = read_header(path)
        return info

    def opaque(self, path: Path, stat: os.stat_result, info: ImageInfo) -> bool:
        """Whether the image ``path`` (whose header is ``info``) has no transparent pixel; decodes it once
        per content (a mask's alpha, 20–30 ms at 1024×1536)."""
        digest = self._hashes.get((stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns))
        opaque = self._opaque.get(digest) if digest is not None else None
        if opaque is None:
            opaque = _no_transparent_pixel(path, info)
            if digest is not None:
                self._opaque[digest] = opaque
        return opaque

    def statistics(self) -> dict[str, int]:
        """How many files were hashed and how many distinct contents had their header read."""
        return {"hashed": len(self._hashes), "headers": len(self._infos)}


_CACHE: Final = HeaderCache()


@dataclass(frozen=True, slots=True)
class _File:
    """One input file as found on disk: its size and header, or why it could not be used."""

    size: int = 0
    info: ImageInfo = ImageInfo(None)
    problem: str | None = None
    unsafe: bool = False
    identity: tuple[int, int] | None = None  # (st_dev, st_ino): which file it is, whatever the name


def _look(root: Path, rel: str, cache: HeaderCache) -> _File:
    try:
        path = safe_path(root, rel, field="")
    except UnsafePathError:
        return _File(problem=f"path {rel!r} leads outside the project root through a symlink", unsafe=True)
    try:
        stat = path.stat()
    except FileNotFoundError:
        return _File(problem=f"file not found: {rel}")
    except OSError as error:
        return _File(problem=f"cannot read {rel}: {error.strerror or error}")
    if not path.is_file():
        return _File(problem=f"{rel} is not a file")
    try:
        return _File(stat.st_size, cache.info(path, stat), identity=(stat.st_dev, stat.st_ino))
    except OSError as error:
        return _File(problem=f"cannot read {rel}: {error.strerror or error}")


def _megabytes(size: int) -> str:
    return f"{size / MB:.1f} MB" if size >= MB else f"{size / 1024:.0f} KB"


def _format_list(formats: Iterable[str]) -> str:
    names = sorted(_NAMES.get(f, f) for f in formats)
    return ", ".join(names[:-1]) + f" or {names[-1]}" if len(names) > 1 else names[0]


def _found(info: ImageInfo) -> str:
    return f"a {_NAMES.get(info.format, info.format)} image" if info.format else "a file that is not an image"


def _lstat(path: str) -> os.stat_result | None:
    """``lstat(path)``, None where ``os.path.islink`` is False for an error but one of its folders being
    a file (:class:`NotADirectoryError` is raised)."""
    try:
        return os.lstat(path)
    except NotADirectoryError:
        raise
    except (OSError, ValueError):
        return None


def _stat(path: str) -> os.stat_result | None:
    """``stat(path)``, None where ``os.path.isdir`` is False for an error."""
    try:
        return os.stat(path)
    except (OSError, ValueError):
        return None


def _file_above(root: Path, rel: str) -> str | None:
    """The first folder of ``rel`` that is a file on disk (a symlinked folder checked out as a text file
    by git with ``core.symlinks`` off): no output can be written under it."""
    parts = rel.split("/")[:-1]
    for depth in range(1, len(parts) + 1):  # from the top down
        folder = "/".join(parts[:depth])
        found = _stat(os.path.join(root, folder))
        if found is None:
            return None
        if not S_ISDIR(found.st_mode):
            return folder
    return None


class _Checker:
    def __init__(self, root: Path, manifest: Manifest, cache: HeaderCache, only: Container[str] | None = None) -> None:
        self.root = root
        self.manifest = manifest
        self.only = only
        self.cache = cache
        self.files: dict[str, _File] = {}
        self.guard = RootGuard(root)
        self.problems: dict[tuple[str, int, int, str, str], list[str]] = {}
        self.warnings: dict[tuple[str, int, int, str, str], list[str]] = {}
        self.existing: dict[str, tuple[int, int]] = {}  # outputs on disk: their (st_dev, st_ino)

    def file(self, rel: str) -> _File:
        found = self.files.get(rel)
        if found is None:
            found = self.files[rel] = _look(self.root, rel, self.cache)
        return found

    def add(self, target: Target, name: str, message: str, kind: str = "input") -> None:
        field_name, line, column = target.where(name)
        self.problems.setdefault((field_name, line, column, message, kind), []).append(target.origin)

    def warn(self, target: Target, name: str, message: str) -> None:
        field_name, line, column = target.where(name)
        self.warnings.setdefault((field_name, line, column, message, "input"), []).append(target.origin)

    def reference(self, target: Target, spec: ModelSpec, index: int, rel: str) -> _File:
        found = self.file(rel)
        name = f"references[{index}]"
        if found.problem is not None:
            self.add(target, name, found.problem, "unsafe-path" if found.unsafe else "input")
        elif found.info.format not in spec.reference_formats:
            allowed = _format_list(spec.reference_formats)
            self.add(target, name, f"expected a {allowed} image for {spec.id}, found {_found(found.info)} ({rel})")
        elif found.size > spec.reference_max_bytes:
            self.add(
                target,
                name,
                f"expected at most {_megabytes(spec.reference_max_bytes)} for a {spec.id} reference, "
                f"found {_megabytes(found.size)} ({rel})",
            )
        return found

    def mask(self, target: Target, spec: ModelSpec, rel: str, first: _File | None) -> None:
        found = self.file(rel)
        if found.problem is not None:
            self.add(target, "mask", found.problem, "unsafe-path" if found.unsafe else "input")
        elif found.info.format not in spec.mask_formats:
            self.add(target, "mask", f"expected a {_format_list(spec.mask_formats)} mask, found {_found(found.info)}")
        elif found.size > spec.mask_max_bytes:
            self.add(
                target,
                "mask",
                f"expected a mask of at most {_megabytes(spec.mask_max_bytes)}, found {_megabytes(found.size)}",
            )
        elif (
            spec.mask_matches_first_reference
            and first is not None
            and first.problem is None
            and first.info.width
            and (found.info.width, found.info.height) != (first.info.width, first.info.height)
        ):
            self.add(
                target,
                "mask",
                f"expected {first.info.width}×{first.info.height} pixels (the size of {target.references[0]}), "
                f"found {found.info.width}×{found.info.height}",
            )
        self.opaque_mask(target, rel, found)

    def opaque_mask(self, target: Target, rel: str, found: _File) -> None:
        if found.problem is None and found.info.transparent is False:  # a paid edit that may change nothing
            self.warn(
                target,
                "mask",
                f"{rel} has no transparency (no alpha channel): a mask's transparent pixels mark what is "
                "repainted, so this one may repaint nothing; paint that area transparent and save with alpha",
            )

    def opaque_pixels(self, target: Target, rel: str, found: _File) -> None:
        if found.problem is not None or found.info.transparent is not True:
            return  # not a mask, or opaque_mask said so from its header
        path = safe_path(self.root, rel, field="mask")
        if self.cache.opaque(path, path.stat(), found.info):
            self.warn(
                target,
                "mask",
                f"{rel} has no transparent pixel (every pixel is opaque): a mask's transparent "
                "pixels mark what is repainted, so this one may repaint nothing; paint that area transparent",
            )

    def outputs(self, target: Target) -> None:
        for rel in output_paths(target):
            try:
                path = self.guard.absolute(rel, "out")
                found = _lstat(path)  # one lstat answers os.path.islink and, for a non-link, os.path.isdir
                if found is not None and S_ISLNK(found.st_mode):
                    self.guard.check_link(rel, path, "out")
                    found = _stat(path)
            except UnsafePathError:
                self.add(target, "out", f"path {rel!r} leads outside the project root through a symlink", "unsafe-path")
                continue
            except NotADirectoryError:
                folder = _file_above(self.root, rel) or os.path.dirname(rel)
                self.add(target, "out", f"{rel} cannot be written: {folder} is a file, not a folder")
                continue
            if found is None:
                continue
            if S_ISDIR(found.st_mode):
                self.add(target, "out", f"{rel} is a directory; out names a .png file")
            elif not S_ISREG(found.st_mode):  # reading a FIFO would wait for a writer for good
                self.add(target, "out", f"{rel} is not a file (a FIFO, a socket or a device); out names a .png file")
            else:
                self.existing[rel] = (found.st_dev, found.st_ino)

    def aliases(self) -> None:
        """No output reaches an input, another output or the local state through a symlinked folder.

        The manifest's checks compare path strings; ``pics/mug.png`` with ``pics`` a link to ``photos``
        is ``photos/mug.png`` all the same, and a build would overwrite that reference (or fight the
        other target over one file) and pay again on every build after.
        """
        inputs: dict[str, tuple[str, str]] = {}
        files: dict[tuple[int, int], tuple[str, str]] = {}  # the same, by which file it is on disk
        for target in self.manifest.targets:
            for role, rel in [*(("a reference", r) for r in target.references), ("the mask", target.mask)]:
                if rel is not None and not is_url(rel) and (real := self.guard.real(rel)) is not None:
                    inputs.setdefault(real, (rel, f"{role} of target {target.name!r}"))
                    if (identity := self.file(rel).identity) is not None:
                        files.setdefault(identity, inputs[real])
        outs: dict[tuple[int, int], str] = {}
        outputs: dict[str, tuple[str, Target]] = {}
        for target in self.manifest.targets:
            for rel in output_paths(target):
                real = self.guard.real(rel)
                if real is None:
                    continue  # outputs() said so
                via = f"output {rel!r} is the file {real!r} (through a symlinked folder)"
                if self.only is not None and target.name not in self.only:
                    pass  # not built: it overwrites nothing
                elif real in inputs and inputs[real][0] != rel:
                    self.add(target, "out", f"{via}, {inputs[real][1]}; choose another out")
                elif real in outputs and outputs[real][0] != rel:
                    self.add(target, "out", f"{via}, which target {outputs[real][1].name!r} writes as well")
                elif real.lower().startswith(STATE_DIR + "/") and rel != real:
                    self.add(target, "out", f"{via}, inside pixmake's local state; choose another out")
                else:
                    self.one_file(target, rel, files, outs)
                outputs.setdefault(real, (rel, target))

    def one_file(
        self,
        target: Target,
        rel: str,
        inputs: dict[tuple[int, int], tuple[str, str]],
        outputs: dict[tuple[int, int], str],
    ) -> None:
        """An output whose name differs from an input's or another output's only in letter case or Unicode
        form, where the file system makes them one file (macOS, Windows: the manifest only warns of the
        names, since elsewhere they are two): a build would overwrite the input and pay on every build after."""
        identity = self.existing.get(rel)
        if identity is None:
            return
        same = "are one file on this disk (its file system ignores letter case and Unicode form): choose another out"
        other = inputs.get(identity)
        if other is not None and other[0] != rel and portable_path(other[0]) == portable_path(rel):
            self.add(target, "out", f"output {rel!r} and {other[1]} ({other[0]!r}) {same}")
        elif (first := outputs.setdefault(identity, rel)) != rel and portable_path(first) == portable_path(rel):
            self.add(target, "out", f"output {rel!r} and {first!r}, which another target writes, {same}")

    def run(self) -> list[Diagnostic]:
        for target in self.manifest.targets:
            spec = MODELS.get(target.model)
            if spec is None or (self.only is not None and target.name not in self.only):
                continue
            first: _File | None = None
            for index, ref in enumerate(target.references):
                if is_url(ref):
                    continue
                found = self.reference(target, spec, index, ref)
                if index == 0:
                    first = found
            if target.mask is not None:
                self.mask(target, spec, target.mask, first)
            self.outputs(target)
        self.aliases()
        return self.told(self.problems, "error")

    def told(self, grouped: dict[tuple[str, int, int, str, str], list[str]], severity: str) -> list[Diagnostic]:
        out: list[Diagnostic] = []
        for (field_name, line, column, message, kind), origins in grouped.items():
            named = [o for o in origins if o]
            if named:
                message += f" (in {named[0]}" + (f" and {len(named) - 1} more)" if len(named) > 1 else ")")
            out.append(Diagnostic(self.manifest.file, line, column, field_name, message, severity, kind))
        return out


def input_warnings(root: Path, manifest: Manifest) -> tuple[Diagnostic, ...]:
    """The warnings :func:`check_inputs` gives (a mask with no transparency), reading only the masks'
    headers (cached): what a command that checked its inputs before (a build) prints."""
    checker = _Checker(root, manifest, _CACHE)
    for target in manifest.targets:
        if target.mask is not None and not is_url(target.mask):
            checker.opaque_mask(target, target.mask, checker.file(target.mask))
    return tuple(checker.told(checker.warnings, "warning"))


def opaque_masks(root: Path, manifest: Manifest, targets: Iterable[Target]) -> tuple[Diagnostic, ...]:
    """A warning for each mask of ``targets`` that can be transparent but has no transparent pixel. Its
    pixels are read (once per content): only for the edits a plan would pay for."""
    checker = _Checker(root, manifest, _CACHE)
    for target in targets:
        if target.mask is not None and not is_url(target.mask):
            with contextlib.suppress(OSError, UnsafePathError):  # gone since: the plan's scan said so
                checker.opaque_pixels(target, target.mask, checker.file(target.mask))
    return tuple(checker.told(checker.warnings, "warning"))


def check_inputs(
    root: Path, manifest: Manifest, *, cache: HeaderCache | None = None, only: Container[str] | None = None
) -> tuple[Diagnostic, ...]:
    """Check every local reference, mask and output of ``manifest`` on disk; returns the warnings (a mask
    with no transparency). ``only`` names the targets whose files are checked (a selection: the others are
    not built); no output of theirs may reach an input or another output through a symlinked folder.

    Raises :class:`~pixmake.errors.ManifestError` listing every problem, an
    :class:`~pixmake.errors.UnsafePathError` when a path leaves ``root``.
    """
    checker = _Checker(root, manifest, cache or _CACHE, only)
    problems = checker.run()
    if problems:
        raise ManifestError.of(problems)
    return tuple(checker.told(checker.warnings, "warning"))
