"""The digests of what input files show, kept by content in .pixmake/pixels.json: decoded once, damage-proof."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from conftest import write_png
from pixmake.decode import pixel_digest
from pixmake.pixelcache import PixelDigests


def test_a_digest_is_kept_by_content_and_read_back(tmp_path: Path) -> None:
    image = write_png(tmp_path / "ref.png")
    sha = hashlib.sha256(image.read_bytes()).hexdigest()
    cache = tmp_path / ".pixmake" / "pixels.json"
    digests = PixelDigests(cache)
    assert digests.of(image, sha) == pixel_digest(image.read_bytes()) is not None
    digests.save()
    assert (tmp_path / ".pixmake" / ".gitignore").exists()  # the state folder as pixmake makes it
    image.write_bytes(b"not an image any more")
    assert PixelDigests(cache).of(image, sha) == pixel_digest(write_png(tmp_path / "again.png").read_bytes())


def test_a_file_changed_since_it_was_hashed_gets_no_digest_and_none_is_kept(tmp_path: Path) -> None:
    image = write_png(tmp_path / "ref.png")
    digests = PixelDigests(tmp_path / "pixels.json")
    assert digests.of(image, "0" * 64) is None
    digests.save()
    assert not (tmp_path / "pixels.json").exists()
    assert digests.of(tmp_path / "gone.png", "0" * 64) is None


def test_a_damaged_cache_is_an_empty_one(tmp_path: Path) -> None:
    image = write_png(tmp_path / "ref.png")
    sha = hashlib.sha256(image.read_bytes()).hexdigest()
    cache = tmp_path / "pixels.json"
    for damage in (b"{not json", b"[" * 100_000, b'{"version": 1, "digests": []}', b'{"version": 9, "digests": {}}'):
        cache.write_bytes(damage)
        assert PixelDigests(cache).of(image, sha) == pixel_digest(image.read_bytes())
    junk = {sha: "x" * 1000, "not-a-sha": "0" * 64, "f" * 64: 12}  # the last fuzz: a 150 MB value was kept
    cache.write_text(json.dumps({"version": 1, "digests": junk}))
    digests = PixelDigests(cache)
    assert digests.of(image, sha) == pixel_digest(image.read_bytes()) and dict(digests.known()) == {
        sha: pixel_digest(image.read_bytes())
    }
