"""Files on disk: the object cache keeps every paid image intact."""

from __future__ import annotations

from pathlib import Path

from pixmake.store import ObjectCache


def test_the_object_cache_writes_again_a_copy_cut_short(tmp_path: Path) -> None:
    """After a power cut an object file may exist but hold fewer bytes; storing the result again repairs it."""
    objects = ObjectCache(tmp_path / "objects")
    digest = objects.put(b"paid image bytes")
    objects.path(digest).write_bytes(b"")  # what a power cut can leave behind
    assert objects.put(b"paid image bytes") == digest
    assert objects.get(digest) == b"paid image bytes"
