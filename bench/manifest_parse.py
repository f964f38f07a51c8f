"""Benchmark: parse + validate a 10,000-target manifest, and a 10,000-row catalog, against plain YAML loading.

Run: ``PYTHONPATH=src python bench/manifest_parse.py [--targets N] [--repeat R]``

Prints, for each case, the best of R runs of :func:`pixmake.manifest.parse_manifest` (YAML with marks,
duplicate keys refused, schema, vars, model table, unique outputs) beside the best of R runs of
``yaml.load(text, Loader=yaml.CSafeLoader)`` of the same text in the same process, and their ratio.
The bar (issue 3) is a ratio ≤ 1.5. For the catalog case the baseline is the CSafeLoader load of the
equivalent manifest with every target written out, so the ratio says what ``rows:`` costs against
writing the targets by hand.
"""

from __future__ import annotations

import argparse
import csv
import io
import time
from collections.abc import Callable

import yaml

from pixmake.manifest import parse_manifest
from pixmake.schema import validate_document

LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
HEADER = """\
# yaml-language-server: $schema=../schemas/pixmake.schema.json
version: 1
provider: {name: toapis, concurrency: 8, rate: 60/min}
defaults: {model: gpt-4o-image, size: "1:1", n: 1}
vars:
  style: soft key light, minimal background, commercial photography
targets:
"""
SIZES = ("1:1", "2:3", "3:2")


def explicit_manifest(count: int) -> str:
    """A manifest with ``count`` targets written out, varied like a real product catalogue."""
    parts = [HEADER]
    for i in range(count):
        parts.append(
            f"  sku-{i:05d}:\n"
            f"    prompt: Packshot of product {i:05d} in colour {i % 17}, ${{style}}\n"
            f'    size: "{SIZES[i % 3]}"\n'
            f"    n: {1 if i % 5 else 2}\n"
            f"    references: [photos/p{i % 300:03d}.png]\n"
            f"    out: assets/products/sku-{i:05d}.png\n"
            f"    tags: [catalogue, batch-{i % 20}]\n"
        )
    return "".join(parts)


def catalog(count: int) -> tuple[str, bytes]:
    """A manifest with one ``rows:`` block and its CSV catalog of ``count`` rows (same targets as above)."""
    text = (
        HEADER + "  sku-${sku}:\n    rows: catalog/skus.csv\n"
        "    prompt: Packshot of product ${sku} in colour ${colour}, ${style}\n"
        '    references: ["photos/${photo}.png"]\n'
        "    out: assets/products/sku-${sku}.png\n"
        "    tags: [catalogue]\n"
    )
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["sku", "colour", "photo"])
    for i in range(count):
        writer.writerow([f"{i:05d}", i % 17, f"p{i % 300:03d}"])
    return text, out.getvalue().encode()


def timed(fn: Callable[[], object]) -> float:
    """Wall time of one run, in seconds."""
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def paired(ours: Callable[[], object], plain: Callable[[], object], repeat: int) -> tuple[float, float, float]:
    """Best time of each, and the median ratio of back-to-back pairs (robust on a busy machine)."""
    pairs = [(timed(ours), timed(plain)) for _ in range(repeat)]
    ratios = sorted(o / p for o, p in pairs)
    return min(o for o, _ in pairs), min(p for _, p in pairs), ratios[len(ratios) // 2]


def report(label: str, ours: float, plain: float, median: float | None = None) -> None:
    """One result line."""
    extra = f"   median paired ratio {median:5.2f}x" if median is not None else ""
    print(
        f"{label:<34} pixmake {ours * 1000:8.1f} ms   CSafeLoader {plain * 1000:8.1f} ms   "
        f"ratio {ours / plain:5.2f}x{extra}"
    )


def main() -> None:
    """Run both cases and print their figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    count, repeat = args.targets, args.repeat

    text = explicit_manifest(count)
    parse_manifest(text, file="bench.yaml")  # warm up: compile the schema checker once, as a process does

    def load() -> object:
        return yaml.load(text, Loader=LOADER)

    ours, plain, median = paired(lambda: parse_manifest(text, file="bench.yaml"), load, repeat)
    print(f"{count} explicit targets, {len(text) / 1e6:.1f} MB of YAML; best of {repeat}, runs interleaved")
    report("parse + validate", ours, plain, median)
    doc = load()
    schema_time = min(timed(lambda: validate_document(doc, file="b")) for _ in range(3))
    report("  of which: schema (fast path)", schema_time, plain)

    manifest_text, rows = catalog(count)
    manifest = parse_manifest(manifest_text, file="bench.yaml", read_file=lambda rel: rows)
    assert len(manifest.targets) == count
    ours, plain, median = paired(
        lambda: parse_manifest(manifest_text, file="bench.yaml", read_file=lambda rel: rows), load, repeat
    )
    print(f"{count}-row catalog ({len(rows) / 1e3:.0f} kB CSV) vs the same targets written out")
    report("rows: parse + validate + expand", ours, plain, median)


if __name__ == "__main__":
    main()
