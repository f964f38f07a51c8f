"""scan_project: the stat cache is trusted exactly when git would trust its index, and hashing is right."""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path
from types import MappingProxyType

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pixmake.errors import ManifestError, UnsafePathError
from pixmake.lockfile import Lock, LockedOutput, LockEntry
from pixmake.manifest import Target
from pixmake.scan import StatCache, hash_files, scan_project
from pixmake.store import ObjectCache, hash_file

SECOND = 1_000_000_000
POISON = bytes(32)  # a digest no real file has: seeing it proves the cache was trusted


def target(*refs: str, out: str = "out/a.png") -> Target:
    return Target("a", "p", "gpt-4o-image", "1:1", 1, out, references=refs)


def scan(root: Path, *targets: Target, cache: bool = True) -> dict[str, str]:
    disk = scan_project(
        root,
        targets,
        Lock(),
        ObjectCache(root / ".pixmake" / "objects"),
        file="pixmake.yaml",
        stat_cache=root / ".pixmake" / "statcache" if cache else None,
    )
    return dict(disk.file_hashes)


def write(root: Path, rel: str, data: bytes, mtime_ns: int | None = None) -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    if mtime_ns is not None:
        os.utime(path, ns=(mtime_ns, mtime_ns))
    return path


def poison(root: Path, rel: str, cache_mtime_ns: int) -> None:
    """Record a fake digest for ``rel`` under its current stat; date the cache file ``cache_mtime_ns``."""
    st = os.stat(root / rel)
    cache = StatCache(root / ".pixmake" / "statcache")
    cache.store(rel, (st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns), POISON)
    cache.save()
    os.utime(root / ".pixmake" / "statcache", ns=(cache_mtime_ns, cache_mtime_ns))


def test_hashes_are_sha256_of_the_bytes(tmp_path: Path) -> None:
    write(tmp_path, "ref/a.png", b"alpha")
    write(tmp_path, "out/a.png", b"image")
    assert scan(tmp_path, target("ref/a.png")) == {
        "ref/a.png": hashlib.sha256(b"alpha").hexdigest(),
        "out/a.png": hashlib.sha256(b"image").hexdigest(),
    }


def test_an_unchanged_file_is_not_read_again(tmp_path: Path) -> None:
    old = 1_600_000_000 * SECOND
    write(tmp_path, "ref/a.png", b"alpha", mtime_ns=old)
    poison(tmp_path, "ref/a.png", old + 5 * SECOND)
    assert scan(tmp_path, target("ref/a.png"))["ref/a.png"] == POISON.hex()


@settings(max_examples=40, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(offset_ns=st.integers(-3 * SECOND, 3 * SECOND))
def test_racy_rule_a_file_not_older_than_the_cache_is_hashed_again(tmp_path: Path, offset_ns: int) -> None:
    root = tmp_path / f"racy{offset_ns}"
    mtime = 1_600_000_000 * SECOND + 123_456_789
    write(root, "ref/a.png", b"alpha", mtime_ns=mtime)
    cache_mtime = mtime + offset_ns
    poison(root, "ref/a.png", cache_mtime)
    got = scan(root, target("ref/a.png"))["ref/a.png"]
    if mtime < cache_mtime:
        assert got == POISON.hex()
    else:
        assert got == hashlib.sha256(b"alpha").hexdigest()


def test_a_racy_entry_not_hashed_again_does_not_outlive_a_rewrite_of_the_cache(tmp_path: Path) -> None:
    mtime = 1_600_000_000 * SECOND
    write(tmp_path, "ref/a.png", b"alpha", mtime_ns=mtime)
    poison(tmp_path, "ref/a.png", mtime)  # cached in the tick the file was written: racy
    write(tmp_path, "ref/b.png", b"beta")
    scan(tmp_path, Target("b", "p", "gpt-4o-image", "1:1", 1, "out/b.png", references=("ref/b.png",)))  # not a.png
    assert os.stat(tmp_path / ".pixmake" / "statcache").st_mtime_ns > mtime  # rewritten, later than a.png
    assert scan(tmp_path, target("ref/a.png"))["ref/a.png"] == hashlib.sha256(b"alpha").hexdigest()


@pytest.mark.parametrize("change", ["content same size", "size", "replaced (new inode)"])
def test_any_stat_change_means_hash_again(tmp_path: Path, change: str) -> None:
    old = 1_600_000_000 * SECOND
    path = write(tmp_path, "ref/a.png", b"alpha", mtime_ns=old)
    poison(tmp_path, "ref/a.png", old + 60 * SECOND)
    if change == "content same size":
        path.write_bytes(b"ALPHA")  # same inode and size; ctime moves even though mtime is put back
    elif change == "size":
        path.write_bytes(b"alpha!")
    else:
        write(tmp_path, "ref/b.png", b"alpha").replace(path)
    os.utime(path, ns=(old, old))
    assert scan(tmp_path, target("ref/a.png"))["ref/a.png"] == hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_no_op_scan_does_not_rewrite_the_cache(tmp_path: Path) -> None:
    write(tmp_path, "ref/a.png", b"alpha", mtime_ns=1_600_000_000 * SECOND)
    write(tmp_path, "out/a.png", b"image", mtime_ns=1_600_000_000 * SECOND)
    scan(tmp_path, target("ref/a.png"))
    cache = tmp_path / ".pixmake" / "statcache"
    before = cache.stat()
    disk = scan_project(
        tmp_path, (target("ref/a.png"),), Lock(), ObjectCache(tmp_path / "o"), file="f", stat_cache=cache
    )
    assert disk.statistics.hashed == 0 and disk.statistics.stated == 2
    assert (cache.stat().st_mtime_ns, cache.stat().st_ino) == (before.st_mtime_ns, before.st_ino)


def test_a_corrupt_cache_is_ignored(tmp_path: Path) -> None:
    write(tmp_path, "ref/a.png", b"alpha")
    write(tmp_path, ".pixmake/statcache", b"not marshal data \x00\xff")
    assert scan(tmp_path, target("ref/a.png"))["ref/a.png"] == hashlib.sha256(b"alpha").hexdigest()


def test_deleted_files_leave_the_cache(tmp_path: Path) -> None:
    write(tmp_path, "ref/a.png", b"alpha")
    write(tmp_path, "out/a.png", b"image")
    scan(tmp_path, target("ref/a.png"))
    (tmp_path / "out/a.png").unlink()
    assert "out/a.png" not in scan(tmp_path, target("ref/a.png"))
    assert "out/a.png" not in StatCache(tmp_path / ".pixmake" / "statcache").entries


def test_missing_reference_is_a_manifest_error_naming_the_field(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match=r"targets\.a\.references\[0\].*file not found: ref/none\.png"):
        scan(tmp_path, target("ref/none.png"))


def test_a_symlink_out_of_the_root_is_refused(tmp_path: Path) -> None:
    outside = write(tmp_path, "outside/secret.png", b"secret")
    root = tmp_path / "project"
    (root / "ref").mkdir(parents=True)
    (root / "ref" / "a.png").symlink_to(outside)
    with pytest.raises(UnsafePathError):
        scan(root, target("ref/a.png"))
    (root / "linked").symlink_to(tmp_path / "outside", target_is_directory=True)
    with pytest.raises(UnsafePathError):
        scan(root, target("linked/secret.png"))


def test_a_symlink_inside_the_root_is_followed(tmp_path: Path) -> None:
    write(tmp_path, "ref/real.png", b"alpha")
    (tmp_path / "ref" / "alias.png").symlink_to(tmp_path / "ref" / "real.png")
    assert scan(tmp_path, target("ref/alias.png"))["ref/alias.png"] == hashlib.sha256(b"alpha").hexdigest()


@given(st.lists(st.binary(max_size=3000), max_size=12), st.integers(1, 4))
@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], max_examples=25)
def test_threaded_hashing_matches_hashlib(tmp_path: Path, blobs: list[bytes], threads: int) -> None:
    paths = []
    for i, blob in enumerate(blobs):
        path = tmp_path / f"h{threads}-{i}.bin"
        path.write_bytes(blob)
        paths.append(str(path))
    paths.append(str(tmp_path / "does-not-exist"))
    expected = [hashlib.sha256(b).digest() for b in blobs] + [None]
    assert hash_files(paths, threads=threads) == expected
    assert all(hash_file(p) == hashlib.sha256(b).hexdigest() for p, b in zip(paths, blobs, strict=False))


def _png(colour: tuple[int, int, int]) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (32, 32), colour).save(buffer, "PNG")
    return buffer.getvalue()


LOCKED_PNG = _png((200, 10, 10))


@pytest.mark.parametrize("cached", [True, False], ids=["object-cached", "not-cached"])
@pytest.mark.parametrize(
    ("on_disk", "damaged"),
    [
        (b"", True),  # a power cut left the unsynced output empty
        (LOCKED_PNG[:-40], True),  # or cut it short
        (bytes(300), True),  # or left zeros
        (_png((10, 200, 10)), False),  # a whole image that is not the locked one: a hand edit
        (LOCKED_PNG + b"\n", False),  # bytes appended: whole, and no crash leaves that
    ],
)
def test_an_output_that_is_not_a_whole_image_is_damaged_not_edited(
    tmp_path: Path, on_disk: bytes, damaged: bool, cached: bool
) -> None:
    output = LockedOutput("out/a.png", hashlib.sha256(LOCKED_PNG).hexdigest(), len(LOCKED_PNG), 32, 32)
    entry = LockEntry("k", "gpt-4o-image", "p", "1:1", 1, (output,))
    write(tmp_path, "out/a.png", on_disk)
    objects = ObjectCache(tmp_path / ".pixmake" / "objects")
    if cached:
        objects.put(LOCKED_PNG)
    disk = scan_project(tmp_path, (target(),), Lock(MappingProxyType({"a": entry})), objects, file="pixmake.yaml")
    assert disk.damaged == (frozenset({"out/a.png"}) if damaged else frozenset())


def test_an_output_cut_inside_its_last_chunk_is_damaged_when_its_object_shows_it(tmp_path: Path) -> None:
    """Pillow decodes a PNG that lost only its end chunk; only the locked bytes show it was cut short."""
    output = LockedOutput("out/a.png", hashlib.sha256(LOCKED_PNG).hexdigest(), len(LOCKED_PNG), 32, 32)
    entry = LockEntry("k", "gpt-4o-image", "p", "1:1", 1, (output,))
    write(tmp_path, "out/a.png", LOCKED_PNG[:-4])
    objects = ObjectCache(tmp_path / ".pixmake" / "objects")
    lock = Lock(MappingProxyType({"a": entry}))
    # Decoding alone passes it (so this test exercises the prefix rule, not the decode check) ...
    assert scan_project(tmp_path, (target(),), lock, objects, file="pixmake.yaml").damaged == frozenset()
    objects.put(LOCKED_PNG)  # ... the locked bytes in the object cache show it was cut short
    assert scan_project(tmp_path, (target(),), lock, objects, file="pixmake.yaml").damaged == {"out/a.png"}


def test_an_output_too_large_to_decode_is_a_hand_edit_not_damage(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Pillow refuses to decode past its pixel limit; such a file is someone's work, never restored over."""
    from PIL import Image

    from pixmake.decode import image_size
    from pixmake.errors import BadResultError

    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # 32 x 32 pixels is then past twice the limit
    locked = b"the locked bytes"
    output = LockedOutput("out/a.png", hashlib.sha256(locked).hexdigest(), len(locked), 32, 32)
    entry = LockEntry("k", "gpt-4o-image", "p", "1:1", 1, (output,))
    write(tmp_path, "out/a.png", _png((10, 200, 10)))
    objects = ObjectCache(tmp_path / ".pixmake" / "objects")
    disk = scan_project(tmp_path, (target(),), Lock(MappingProxyType({"a": entry})), objects, file="pixmake.yaml")
    assert disk.damaged == frozenset()
    with pytest.raises(BadResultError, match="too large"):  # as a provider's result, it is refused
        image_size(_png((10, 200, 10)))
