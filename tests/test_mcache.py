"""The manifest cache: the same Manifest back, without parsing, exactly while its files are unchanged."""

from __future__ import annotations

import os
import time
from pathlib import Path

from pixmake.manifest import Manifest, parse_manifest
from pixmake.mcache import load_manifest

MANIFEST = """\
version: 1
vars: {style: soft light}
targets:
  hero:
    prompt: A mug, ${style}
    out: out/hero.png
    tags: [q4]
    params: {quality: high, odd_param: {nested: [1, 2.5, null, true]}}
  sku-${sku}:
    rows: skus.csv
    prompt: Product ${sku}, ${style}
    references: [ref.png]
    out: out/${sku}.png
"""


class Parser:
    """Counts parses, so a test can tell a cache hit from a miss."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.calls = 0

    def __call__(self) -> Manifest:
        self.calls += 1
        text = (self.root / "pixmake.yaml").read_text()
        return parse_manifest(text, file="pixmake.yaml", read_file=lambda rel: (self.root / rel).read_bytes())


def project(tmp_path: Path) -> tuple[Path, Path, Parser]:
    (tmp_path / "pixmake.yaml").write_text(MANIFEST)
    (tmp_path / "skus.csv").write_text("sku\na100\nb200\n")
    past = 1_600_000_000 * 10**9
    for name in ("pixmake.yaml", "skus.csv"):
        os.utime(tmp_path / name, ns=(past, past))  # older than any cache written now: not racy
    return tmp_path / "pixmake.yaml", tmp_path / ".pixmake/manifest.cache", Parser(tmp_path)


def load(manifest: Path, cache: Path, parse: Parser) -> Manifest:
    return load_manifest(manifest, cache, file="pixmake.yaml", parse=parse)[0]


def test_a_hit_returns_an_equal_manifest_without_parsing(tmp_path: Path) -> None:
    manifest, cache, parse = project(tmp_path)
    first = load(manifest, cache, parse)
    assert first.warnings and first.catalogs == ("skus.csv",)  # the odd parameter is a warning
    again = load(manifest, cache, parse)
    assert parse.calls == 1
    assert again == first and again.warnings == first.warnings
    assert [t.fields for t in again.targets] == [t.fields for t in first.targets]  # compare=False fields too
    assert dict(again.targets[0].params) == {"quality": "high", "odd_param": {"nested": [1, 2.5, None, True]}}


def test_a_changed_catalog_or_manifest_is_parsed_again(tmp_path: Path) -> None:
    manifest, cache, parse = project(tmp_path)
    load(manifest, cache, parse)
    (tmp_path / "skus.csv").write_text("sku\na100\nb200\nc300\n")
    assert [t.name for t in load(manifest, cache, parse).targets][-1] == "sku-c300"
    manifest.write_text(MANIFEST.replace("A mug", "A cup"))
    assert load(manifest, cache, parse).targets[0].prompt == "A cup, soft light"
    assert parse.calls == 3


def test_a_touched_manifest_with_the_same_bytes_is_a_hit(tmp_path: Path) -> None:
    manifest, cache, parse = project(tmp_path)
    load(manifest, cache, parse)
    manifest.write_text(MANIFEST)  # new mtime and ctime, same content (a git checkout does this)
    load(manifest, cache, parse)
    assert parse.calls == 1


def test_racy_a_manifest_not_older_than_the_cache_is_checked_by_hash(tmp_path: Path) -> None:
    manifest, cache, parse = project(tmp_path)
    load(manifest, cache, parse)
    written = cache.stat().st_mtime_ns
    text = MANIFEST.replace("A mug", "A pot")  # same size
    manifest.write_text(text)
    st = manifest.stat()
    os.utime(manifest, ns=(written, written))
    assert manifest.stat().st_size == st.st_size
    assert load(manifest, cache, parse).targets[0].prompt == "A pot, soft light"


def test_another_display_name_or_a_corrupt_cache_is_a_miss(tmp_path: Path) -> None:
    manifest, cache, parse = project(tmp_path)
    load(manifest, cache, parse)
    load_manifest(manifest, cache, file="other/pixmake.yaml", parse=parse)
    assert parse.calls == 2
    cache.write_bytes(b"\x00garbage")
    assert load(manifest, cache, parse).targets[0].name == "hero"
    assert parse.calls == 3


def test_a_catalog_edited_while_the_manifest_is_parsed_is_read_again(tmp_path: Path) -> None:
    manifest, cache, parse = project(tmp_path)

    def parse_then_edit() -> Manifest:  # the catalog changes after the parser read it
        parsed = parse()
        catalog = tmp_path / "skus.csv"
        catalog.write_text("sku\na100\nc300\n")
        second_ago = time.time_ns() - 10**9  # well before the cache is written: not racy
        os.utime(catalog, ns=(second_ago, second_ago))
        return parsed

    first = load_manifest(manifest, cache, file="pixmake.yaml", parse=parse_then_edit)[0]
    assert [t.name for t in first.targets][-1] == "sku-b200"
    assert [t.name for t in load(manifest, cache, parse).targets][-1] == "sku-c300"
