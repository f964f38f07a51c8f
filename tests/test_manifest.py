"""The manifest language: a corpus of valid and invalid manifests, expansion, interpolation, robustness.

Corpus layout (``tests/data/manifests``): ``valid/NAME.yaml`` or ``valid/NAME/pixmake.yaml`` must
validate; ``invalid/NAME.yaml`` + ``invalid/NAME.expect`` (or ``invalid/NAME/pixmake.yaml`` +
``pixmake.expect``) must fail with exactly the diagnostics listed, one per line as
``LINE FRAGMENT``: a diagnostic on that line whose text contains the fragment.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import EXAMPLES, REPO, run_cli
from pixmake import api
from pixmake.errors import Diagnostic, ManifestError, UnsafePathError, UserError
from pixmake.manifest import Manifest, Target, interpolate, output_paths, parse_manifest
from pixmake.models import MODELS

CORPUS = Path(__file__).parent / "data" / "manifests"


def _cases(kind: str) -> list[tuple[Path, str]]:
    """(directory, manifest file name) of every corpus case of one kind."""
    root = CORPUS / kind
    cases = [(root, p.name) for p in sorted(root.glob("*.yaml"))]
    # Not .pixmake: validate keeps its manifest cache there (a run of the suite in this tree made one)
    cases += [(p, "pixmake.yaml") for p in sorted(root.iterdir()) if p.is_dir() and not p.name.startswith(".")]
    return cases


def _case_id(case: tuple[Path, str]) -> str:
    directory, name = case
    return name.removesuffix(".yaml") if name != "pixmake.yaml" else directory.name


def _expectations(directory: Path, name: str) -> list[tuple[int, str]]:
    text = (directory / name.replace(".yaml", ".expect")).read_text(encoding="utf-8")
    found = []
    for line in text.splitlines():
        if line.strip():
            number, _, fragment = line.partition(" ")
            found.append((int(number), fragment))
    return found


@pytest.mark.parametrize("case", _cases("valid"), ids=_case_id)
def test_valid_corpus_validates(case: tuple[Path, str]) -> None:
    directory, name = case
    manifest = api.validate(api.open_project(directory, name))
    assert manifest.targets


@pytest.mark.parametrize("case", _cases("invalid"), ids=_case_id)
def test_invalid_corpus_reports_each_expected_problem(case: tuple[Path, str]) -> None:
    directory, name = case
    expected = _expectations(directory, name)
    with pytest.raises(ManifestError) as caught:
        api.validate(api.open_project(directory, name))
    diagnostics = caught.value.diagnostics
    shown = "\n".join(str(d) for d in diagnostics)
    assert len(diagnostics) == len(expected), shown
    for line, fragment in expected:
        assert any(d.line == line and fragment in str(d) for d in diagnostics), f"{line} {fragment!r} not in\n{shown}"
    assert [d.line for d in diagnostics if d.file == diagnostics[0].file] == sorted(
        d.line for d in diagnostics if d.file == diagnostics[0].file
    )


@pytest.mark.parametrize("case", _cases("invalid"), ids=_case_id)
def test_invalid_corpus_through_the_cli_is_one_line_per_problem_and_exit_3(case: tuple[Path, str]) -> None:
    directory, name = case
    outcome = run_cli("-C", str(directory), "-f", name, "validate")
    assert outcome.exit_code == 3
    assert "Traceback" not in outcome.stderr
    lines = outcome.stderr.strip().splitlines()
    assert len(lines) == len(_expectations(directory, name))
    assert all(line.startswith("pixmake: error: ") for line in lines)


@pytest.mark.parametrize("case", _cases("invalid"), ids=_case_id)
def test_validate_json_emits_machine_readable_diagnostics(case: tuple[Path, str]) -> None:
    directory, name = case
    outcome = run_cli("-C", str(directory), "-f", name, "validate", "--json")
    assert outcome.exit_code == 3
    items = json.loads(outcome.stdout)
    assert len(items) == len(_expectations(directory, name))
    for item in items:
        assert {"file", "line", "column", "field", "message", "severity"} <= set(item)
        assert item["severity"] == "error" and item["line"] >= 1 and item["column"] >= 1


def test_validate_json_on_a_valid_manifest_lists_warnings_only() -> None:
    outcome = run_cli("-C", str(CORPUS / "valid"), "-f", "unknown_param_is_a_warning.yaml", "validate", "--json")
    assert outcome.exit_code == 0, outcome.stdout
    (warning,) = json.loads(outcome.stdout)
    assert warning["severity"] == "warning" and "did you mean 'quality'?" in warning["message"]
    assert warning["field"] == "targets.hero.params.qualty" and warning["line"] == 6


def test_validate_json_reports_a_missing_manifest_as_a_diagnostic(tmp_path: Path) -> None:
    outcome = run_cli("-C", str(tmp_path), "validate", "--json")
    assert outcome.exit_code == 3
    (item,) = json.loads(outcome.stdout)
    assert "manifest not found" in item["message"]


def test_examples_validate_and_start_with_the_schema_line() -> None:
    manifests = sorted(p for p in EXAMPLES.rglob("*.yaml") if not {"assets", ".pixmake"} & set(p.parts))
    assert len(manifests) >= 2
    for path in manifests:
        first = path.read_text(encoding="utf-8").splitlines()[0]
        assert first.startswith("# yaml-language-server: $schema="), path
        schema = (path.parent / first.split("$schema=", 1)[1]).resolve()
        assert schema == REPO / "schemas" / "pixmake.schema.json"
        assert api.validate(api.open_project(path.parent, path.name)).targets


def test_x_keys_in_a_target_never_reach_its_key() -> None:
    from pixmake.fingerprint import target_key

    plain = "version: 1\ntargets:\n  a:\n    prompt: p\n    out: a.png\n"
    noted = plain.replace("    prompt", "    x-note: why ${this}\n    x-anchor: &s '1:1'\n    prompt")
    (before,), (after,) = parse_manifest(plain, file="m.yaml").targets, parse_manifest(noted, file="m.yaml").targets
    assert after == before and target_key(after, {}) == target_key(before, {})


# --- unsafe paths -----------------------------------------------------------------------------------


def test_lexical_escapes_raise_unsafe_path_error_naming_the_field() -> None:
    text = "version: 1\ntargets:\n  a:\n    prompt: p\n    references: [/etc/passwd]\n    out: ../x.png\n"
    with pytest.raises(UnsafePathError) as caught:
        parse_manifest(text, file="m.yaml")
    assert caught.value.field == "targets.a.references[0]"
    assert [d.kind for d in caught.value.diagnostics] == ["unsafe-path", "unsafe-path"]
    assert isinstance(caught.value, ManifestError)


# --- expansion --------------------------------------------------------------------------------------


def _refused(text: str, **options: Any) -> tuple[Diagnostic, ...]:
    """The diagnostics of a manifest that must not parse."""
    with pytest.raises(ManifestError) as caught:
        parse_manifest(text, **options)
    return caught.value.diagnostics


def _matrix_manifest(axes: dict[str, list[str]]) -> str:
    name = "-".join(f"${{{axis}}}" for axis in axes)
    document = {
        "version": 1,
        "targets": {f"t-{name}": {"matrix": axes, "prompt": f"shot {name}", "out": f"out/{name}.png"}},
    }
    return yaml.safe_dump(document, sort_keys=False)


_axis_value = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789_", min_size=1, max_size=6)
_axes = st.dictionaries(
    st.from_regex(r"[a-z][a-z0-9_]{0,5}", fullmatch=True),
    st.lists(_axis_value, min_size=1, max_size=4, unique=True),
    min_size=1,
    max_size=3,
)


@given(_axes)
@settings(max_examples=60, deadline=None)
def test_a_matrix_expands_to_exactly_the_product_of_its_axes(axes: dict[str, list[str]]) -> None:
    manifest = parse_manifest(_matrix_manifest(axes), file="m.yaml")
    assert len(manifest.targets) == math.prod(len(values) for values in axes.values())
    combos = {tuple(combo) for combo in itertools.product(*axes.values())}
    assert {tuple(t.origin.split(", ")) for t in manifest.targets} == {
        tuple(f"{axis}={value}" for axis, value in zip(axes, combo, strict=True)) for combo in combos
    }
    assert len({t.out for t in manifest.targets}) == len(manifest.targets)


@given(st.text().filter(lambda s: "${" not in s), st.dictionaries(st.text(min_size=1), st.text()))
def test_interpolation_is_the_identity_and_idempotent_on_text_without_a_template(
    text: str, variables: dict[str, str]
) -> None:
    once, problems = interpolate(text, variables)
    assert once == text and problems == []
    assert interpolate(once, variables) == (once, [])


def test_interpolation_escape_and_values() -> None:
    assert interpolate("a ${x} $${x} $5", {"x": "1"}) == ("a 1 ${x} $5", [])
    assert interpolate("${y}", {"x": "1"})[1] == ["undefined variable 'y' (defined: x; $${y} is the text ${y})"]


def _catalog_manifest(rows: int) -> tuple[str, Callable[[str], bytes]]:
    text = (
        "version: 1\ntargets:\n  sku-${sku}:\n    rows: skus.csv\n"
        "    prompt: Packshot of ${name}\n    out: assets/${sku}.png\n"
    )
    csv = "sku,name\n" + "".join(f"s{i},product {i}\n" for i in range(rows))
    return text, lambda rel: csv.encode() if rel == "skus.csv" else b""


def test_rows_make_one_target_per_row_in_file_order() -> None:
    text, read = _catalog_manifest(5000)
    manifest = parse_manifest(text, file="m.yaml", read_file=read)
    assert len(manifest.targets) == 5000
    assert manifest.targets[4711].name == "sku-s4711"
    assert manifest.targets[4711].prompt == "Packshot of product 4711"
    assert manifest.targets[4711].origin == "row skus.csv:4713"
    assert manifest.catalogs == ("skus.csv",)


def test_editing_one_catalog_row_changes_only_that_rows_target() -> None:
    from pixmake.fingerprint import target_key

    text, read = _catalog_manifest(50)
    before = parse_manifest(text, file="m.yaml", read_file=read)
    edited = read("skus.csv").replace(b"s7,product 7\n", b"s7,product seven\n")
    after = parse_manifest(text, file="m.yaml", read_file=lambda rel: edited)
    changed = [
        a.name for a, b in zip(before.targets, after.targets, strict=True) if target_key(a, {}) != target_key(b, {})
    ]
    assert changed == ["sku-s7"]


def test_a_multi_line_cell_makes_one_key_whatever_the_checkout_ends_lines_with() -> None:
    """git's core.autocrlf gives a Windows checkout CRLF: inside a quoted cell too, where csv keeps it."""
    from pixmake.fingerprint import target_key

    text = "version: 1\ntargets:\n  s-${sku}:\n    rows: c.csv\n    prompt: ${p}\n    out: o/${sku}.png\n"
    linux = b'sku,p\na1,"line one\nline two"\nb2,x\n'
    checkouts = (linux, linux.replace(b"\n", b"\r\n"), linux.replace(b"\n", b"\r"))
    manifests = [parse_manifest(text, file="m.yaml", read_file={"c.csv": data}.__getitem__) for data in checkouts]
    assert {m.targets[0].prompt for m in manifests} == {"line one\nline two"}
    assert len({tuple(target_key(t, {}) for t in m.targets) for m in manifests}) == 1
    assert {tuple(t.origin for t in m.targets) for m in manifests} == {("row c.csv:2", "row c.csv:4")}


def test_a_json_lines_value_may_hold_the_line_separators_json_allows_in_a_string() -> None:
    """U+2028, U+2029 and U+0085 are text inside a JSON string, not ends of a JSON Lines line."""
    text = "version: 1\ntargets:\n  s-${sku}:\n    rows: c.jsonl\n    prompt: ${p}\n    out: o/${sku}.png\n"
    data = '{"sku": "a", "p": "one\u2028two"}\r\n{"sku": "b", "p": "x\u0085y\u2029z"}\n\n{"sku": "c", "p": "q"}\n'
    manifest = parse_manifest(text, file="m.yaml", read_file={"c.jsonl": data.encode()}.__getitem__)
    assert [(t.prompt, t.origin) for t in manifest.targets] == [
        ("one\u2028two", "row c.jsonl:1"),
        ("x\u0085y\u2029z", "row c.jsonl:2"),
        ("q", "row c.jsonl:4"),
    ]


def test_rows_without_a_reader_is_a_diagnostic_not_a_crash() -> None:
    text, _ = _catalog_manifest(1)
    with pytest.raises(ManifestError, match="without file access"):
        parse_manifest(text, file="m.yaml")


def test_one_problem_in_every_row_is_reported_once() -> None:
    text, read = _catalog_manifest(300)
    diagnostics = _refused(text.replace("${name}", "${nmae}"), file="m.yaml", read_file=read)
    (diagnostic,) = diagnostics
    assert "did you mean 'name'?" in diagnostic.message and "and 299 more" in diagnostic.message


def test_a_matrix_too_large_is_refused_before_expanding() -> None:
    """10^12 combinations: the test can only finish if the size is checked before anything is expanded."""
    axes = {f"a{i}": [str(v) for v in range(10)] for i in range(12)}
    with pytest.raises(ManifestError, match="matrix expands to 1000000000000 targets"):
        parse_manifest(_matrix_manifest(axes), file="m.yaml")


def test_each_field_of_a_target_is_located_where_the_source_put_it() -> None:
    """What the disk checks and the plan point at after the parse: the target's key and its path fields."""
    text = (
        "version: 1\n"
        "targets:\n"
        "  'hero shot':\n"
        "    prompt: a mug\n"
        "    references:\n"
        "      - refs/a.png\n"
        "      -   refs/b.png\n"
        "    mask: masks/m.png\n"
        "    out:    out/hero.png\n"
    )
    (target,) = parse_manifest(text, file="m.yaml").targets
    assert target.where("name") == ("targets.hero shot", 3, 3)
    assert target.where("references[0]") == ("targets.hero shot.references[0]", 6, 9)
    assert target.where("references[1]") == ("targets.hero shot.references[1]", 7, 11)
    assert target.where("mask") == ("targets.hero shot.mask", 8, 11)
    assert target.where("out") == ("targets.hero shot.out", 9, 13)
    assert target.where("prompt") == ("targets.hero shot.prompt", 3, 1)  # not kept: the target's line


def test_problems_in_every_entry_are_located_though_each_entry_is_dropped_once_read() -> None:
    prompts = ["a mug in ${colour}" if i % 3 == 1 else "a mug" for i in range(30)]
    text = "version: 1\ntargets:\n" + "".join(
        f"  t{i}:\n    out: o{i}.png\n    prompt: {prompt}\n" for i, prompt in enumerate(prompts)
    )
    diagnostics = _refused(text, file="m.yaml")
    found = [(d.line, d.column, d.field) for d in diagnostics]
    assert found == [(5 + 3 * i, 13, f"targets.t{i}.prompt") for i in range(1, 30, 3)]  # each at its own prompt


# --- robustness -------------------------------------------------------------------------------------


def test_a_50_mb_manifest_is_refused_quickly(tmp_path: Path) -> None:
    manifest = tmp_path / "pixmake.yaml"
    with manifest.open("w") as handle:
        handle.write("version: 1\ntargets:\n")
        handle.write(("  # " + "x" * 1020 + "\n") * 50 * 1024)
    outcome = run_cli("-C", str(tmp_path), "validate")
    assert outcome.exit_code == 3
    assert "larger than 32 MB" in outcome.stderr and len(outcome.stderr.strip().splitlines()) == 1


def test_schema_errors_and_model_errors_are_reported_together_sorted_by_line() -> None:
    text = (
        "version: 1\ntargets:\n  a:\n    prompt: p\n    n: 3\n    out: a.png\n"
        "  b:\n    prompt: q\n    n: '2'\n    out: b.png\n  c:\n    prompt: r\n    size: '16:9'\n    out: c.png\n"
    )
    diagnostics = _refused(text, file="m.yaml")
    assert [(d.line, d.field) for d in diagnostics] == [
        (5, "targets.a.n"),
        (9, "targets.b.n"),
        (13, "targets.c.size"),
    ]


def test_an_output_may_not_overwrite_the_manifest_or_the_lockfile() -> None:
    text = "version: 1\ntargets:\n  a:\n    prompt: p\n    out: ./m.png\n  b:\n    prompt: q\n    out: lock.png\n"
    diagnostics = _refused(text, file="sub/m.png", manifest_name="m.png", lockfile_name="lock.png")
    assert [(d.line, d.message) for d in diagnostics] == [
        (
            5,
            "output 'm.png' would overwrite the manifest; each build would change an input and pay again "
            "(choose another out)",
        ),
        (
            8,
            "output 'lock.png' would overwrite the lockfile; each build would change an input and pay again "
            "(choose another out)",
        ),
    ]
    assert parse_manifest(text, file="m.yaml").targets  # the defaults, pixmake.yaml and pixmake.lock: no clash


def test_a_target_with_a_schema_error_in_one_field_still_has_its_other_fields_checked() -> None:
    text = "version: 1\ntargets:\n  a:\n    prompt: ${nope}\n    sise: '3:2'\n    out: ../a.png\n"
    seen: list[tuple[str, ...]] = []

    def check_targets(targets: tuple[Target, ...]) -> list[Diagnostic]:
        seen.append(tuple(t.name for t in targets))
        return [Diagnostic("m.yaml", 6, 10, "targets.a.out", "from the disk, already reported")]

    with pytest.raises(UnsafePathError) as caught:
        parse_manifest(text, file="m.yaml", check_targets=check_targets)
    assert [(d.line, d.field) for d in caught.value.diagnostics] == [
        (4, "targets.a.prompt"),
        (5, "targets.a.sise"),
        (6, "targets.a.out"),
    ]
    assert seen == [("a",)]  # the disk checks saw the target, and a field reported once is not reported twice


def test_a_target_without_a_usable_prompt_or_model_still_has_its_other_fields_checked() -> None:
    text = (
        "version: 1\ntargets:\n"
        "  a:\n    n: 3\n    references: [../r.png]\n    out: a-${nope}.png\n"  # no prompt
        "  b:\n    prompt: ${nope}\n    model: 4\n    size: '16:9'\n    out: b.png\n"  # a model of no model's rules
    )
    seen: list[tuple[str, str]] = []

    def check_targets(targets: tuple[Target, ...]) -> list[Diagnostic]:
        seen.extend((t.name, t.model) for t in targets)
        return []

    diagnostics = _refused(text, file="m.yaml", check_targets=check_targets)
    assert [(d.line, d.field, d.message.split(" (")[0]) for d in diagnostics] == [
        (3, "targets.a", "missing required field 'prompt'"),
        (4, "targets.a.n", "expected n in {1, 2, 4} for gpt-4o-image, found 3"),
        (5, "targets.a.references[0]", "path '../r.png' leaves the project root"),
        (6, "targets.a.out", "undefined variable 'nope'"),
        (8, "targets.b.prompt", "undefined variable 'nope'"),
        (9, "targets.b.model", "expected a string, found integer 4"),
    ]  # not b's size: 16:9 is refused by gpt-4o-image, which b does not name
    assert seen == [("a", "gpt-4o-image"), ("b", "")]  # the disk checks see b, with no model's rules to apply


_YAMLISH = st.lists(
    st.one_of(
        st.sampled_from(
            [
                "version: 1",
                "targets:",
                "  hero:",
                "    prompt: a mug ${style}",
                "    out: a.png",
                "    n: 2",
                "    n: '2'",
                "    size: '3:2'",
                "    references: [photos/a.png, ../x.png]",
                "    mask: m.png",
                "    matrix: {sku: [a, b]}",
                "    rows: skus.csv",
                "vars: {style: x}",
                "defaults: {model: nope}",
                "  - item",
                "&a [*a]",
                "\t- tab",
                "? [complex]",
                "key: !!binary aGk=",
                "{",
                "]",
                "<<: *missing",
            ]
        ),
        st.text(max_size=30),
    ),
    max_size=14,
).map("\n".join)


@given(_YAMLISH)
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_fuzz_parse_raises_nothing_but_manifest_error(text: str) -> None:
    try:
        result = parse_manifest(text, file="fuzz.yaml", read_file=lambda rel: b"sku\na\n")
    except ManifestError as error:
        assert error.diagnostics
        assert all(d.line >= 1 and d.column >= 1 for d in error.diagnostics)
    else:
        assert isinstance(result, Manifest)
        for target in result.targets:
            assert output_paths(target)


def _outcome(text: str, read_file: Callable[[str], bytes], *, stream: bool) -> object:
    """What parse_manifest makes of ``text``: the manifest with every target's field marks, or the diagnostics."""
    try:
        manifest = parse_manifest(text, file="m.yaml", read_file=read_file, stream=stream)
    except ManifestError as error:
        return type(error), error.diagnostics
    fields = ("name", "references[0]", "references[1]", "mask", "out")
    return manifest, [[t.where(f) for f in fields] for t in manifest.targets]


def _corpus_reader(directory: Path) -> Callable[[str], bytes]:
    return lambda rel: (directory / rel).read_bytes()


@pytest.mark.parametrize("case", _cases("valid") + _cases("invalid"), ids=_case_id)
def test_entries_made_as_they_are_read_give_what_the_whole_document_gives(case: tuple[Path, str]) -> None:
    directory, name = case
    text = (directory / name).read_bytes().decode("utf-8", errors="replace")  # as text, the case not_utf8 too
    read = _corpus_reader(directory)
    assert _outcome(text, read, stream=True) == _outcome(text, read, stream=False)


@given(_YAMLISH)
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_fuzz_entries_made_as_they_are_read_give_what_the_whole_document_gives(text: str) -> None:
    read = lambda rel: b"sku\na\n"  # noqa: E731
    assert _outcome(text, read, stream=True) == _outcome(text, read, stream=False)


@pytest.mark.parametrize(
    "layout",
    [
        "version: 1\ntargets:\n{entries}defaults:\n  size: '3:2'\nvars:\n  c: red\n",  # read after targets
        "targets:\n{entries}version: 1\n",  # a required field after targets
        "version: 1\ndefaults: {{size: 7}}\nvars:\n  c: red\ntargets:\n{entries}",  # a problem before targets
        "version: 1\nvars:\n  c: red\ntargets:\n{entries}x-late: 1\n",
        "version: 1\nvars:\n  c: red\ntargets:\n{entries}surprise: 1\n",  # an unknown field after targets
    ],
)
def test_what_follows_the_targets_counts_as_if_read_first(layout: str) -> None:
    entries = "".join(f"  t{i}:\n    prompt: a ${{c}} mug\n    out: o{i}.png\n" for i in range(3))
    text = layout.format(entries=entries)
    read = _corpus_reader(Path("."))
    streamed = _outcome(text, read, stream=True)
    assert streamed == _outcome(text, read, stream=False)
    if isinstance(streamed, tuple) and isinstance(streamed[0], Manifest):
        assert {t.prompt for t in streamed[0].targets} == {"a red mug"}


@given(_YAMLISH)
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_fuzz_validate_from_disk_raises_only_user_errors(tmp_path: Path, text: str) -> None:
    (tmp_path / "pixmake.yaml").write_text(text, encoding="utf-8", errors="surrogateescape")
    with contextlib.suppress(UserError):  # any other exception fails the test
        api.validate(api.open_project(tmp_path))


def test_outputs_that_are_one_file_on_macos_and_windows_are_warned_about() -> None:
    """Case twins are distinct files on Linux (a sprite font's A.png and a.png): a warning, not an error."""
    text = (
        "version: 1\ntargets:\n  a: {prompt: a, out: Hero.png}\n  b: {prompt: b, out: hero.png}\n"
        '  c: {prompt: c, out: "caf\\u00e9.png"}\n  d: {prompt: d, out: "cafe\\u0301.png"}\n'
        "  e: {prompt: e, out: signs/stra\u00dfe.png}\n  f: {prompt: f, out: signs/strasse.png}\n"
        "  g: {prompt: g, references: [Logo.png], out: logo.png}\n"
    )
    manifest = parse_manifest(text, file="m.yaml")
    assert len(manifest.targets) == 7
    assert [(w.line, w.field, w.message.split(" differ only")[0]) for w in manifest.warnings] == [
        (4, "targets.b.out", "output 'hero.png' of target 'b' and 'Hero.png' of target 'a'"),
        (6, "targets.d.out", "output 'cafe\\u0301.png' of target 'd' and 'caf\\xe9.png' of target 'c'"),
        (9, "targets.g.out", "output 'logo.png' and 'Logo.png', a reference of target 'g' (line 9),"),
    ]  # not straße.png and strasse.png: no file system makes those one
    assert all(w.severity == "warning" and w.message.endswith("rename one if the project is built there")
               for w in manifest.warnings)  # fmt: skip
    where = [w.message.split(": ")[1].split(",")[0] for w in manifest.warnings]
    assert where == [
        "on macOS and Windows they are one file",
        "on macOS they are one file",
        "on macOS and Windows they are one file",
    ]  # fmt: skip  (NTFS keeps Unicode forms apart)


@pytest.mark.parametrize("platform", ["linux", "darwin", "win32"])
def test_outputs_windows_cannot_hold_are_warned_about_and_refused_on_windows(
    platform: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Git for Windows refuses to check such a path out, and a build there would pay and then fail its write."""
    monkeypatch.setattr(sys, "platform", platform)
    text = (
        "version: 1\ntargets:\n  a: {prompt: a, out: 'x/a:b.png'}\n  b: {prompt: b, out: assets/con.png}\n"
        "  c: {prompt: c, out: 'what?.png'}\n  d: {prompt: d, out: 'dir./d.png'}\n  e: {prompt: e, out: console.png}\n"
        "  f: {prompt: f, out: 'Aux/f.png'}\n"
    )
    try:
        diagnostics = parse_manifest(text, file="m.yaml").warnings
    except ManifestError as error:
        diagnostics = error.diagnostics
    found = [(d.line, d.field, d.severity, d.message.split(" (")[1].split(")")[0]) for d in diagnostics]
    severity = "error" if platform == "win32" else "warning"
    assert found == [
        (3, "targets.a.out", severity, "':' is not allowed in a file name there"),
        (4, "targets.b.out", severity, "'con' is a device name there"),
        (5, "targets.c.out", severity, "'?' is not allowed in a file name there"),
        (6, "targets.d.out", severity, "a name there cannot end in a dot or a space"),
        (8, "targets.f.out", severity, "'Aux' is a device name there"),
    ]


def test_a_backslash_in_a_path_is_named_as_such() -> None:
    diagnostics = _refused("version: 1\ntargets:\n  a: {prompt: a, out: 'assets\\hero.png'}\n", file="m.yaml")
    (diagnostic,) = diagnostics
    assert diagnostic.message == r"path 'assets\\hero.png' has a backslash: separate folders with / (on every system)"


def test_a_variable_whose_value_holds_a_template_is_warned_about_where_it_is_written() -> None:
    """The damage review: ``style: ${brand} house style`` sends the text ${brand} in the paid prompt, without a
    word. Substituting it now would change the prompt, and so the key, of targets built as it was (the diff
    review: an upgrade would pay for them again): a warning says so instead, and the prompt stays as built."""
    text = (
        "version: 1\nvars:\n  brand: Acme\n  style: ${brand} house style\n  tmpl: use $${name}\n"
        "targets:\n  a: {prompt: 'ad, ${style}', out: a.png}\n"
    )
    manifest = parse_manifest(text, file="m.yaml")
    assert manifest.targets[0].prompt == "ad, ${brand} house style"  # as every earlier version sent it
    assert [(w.line, w.field, w.severity) for w in manifest.warnings] == [
        (4, "vars.style", "warning"),
        (5, "vars.tmpl", "warning"),
    ]
    assert "the ${…} in it is not substituted" in manifest.warnings[0].message


def test_an_out_path_longer_than_a_file_system_takes_is_refused_by_validate() -> None:
    """The damage review: 3,000 folders deep passed validate, then plan and build failed with the whole
    6,000-character path as the message (exit 1, no manifest line)."""
    deep = "a/" * 3000 + "x.png"  # 6,005 bytes
    (diagnostic,) = _refused(f"version: 1\ntargets:\n  a: {{prompt: a, out: {deep}}}\n", file="m.yaml")
    assert diagnostic.line == 3 and diagnostic.field == "targets.a.out"
    assert diagnostic.message.endswith("the path is 6005 bytes in UTF-8; file systems take at most 4096 (shorten it)")
    assert len(diagnostic.message) < 200
    longest = ("c" * 250 + "/") * 16 + "x" * 76 + ".png"  # 4,096 bytes: taken; as n: 4, image 4's is 2 more
    assert parse_manifest(f"version: 1\ntargets:\n  a: {{prompt: a, out: {longest}}}\n", file="m.yaml").targets
    (diagnostic,) = _refused(f"version: 1\ntargets:\n  a: {{prompt: a, out: {longest}, n: 4}}\n", file="m.yaml")
    assert "the path of image 4 is 4098 bytes" in diagnostic.message


@pytest.mark.parametrize("stream", [True, False])
def test_variables_yaml_reads_as_numbers_or_booleans_are_warned_about(stream: bool) -> None:
    """``ratio: 3:2`` is 182 in YAML 1.1 (base 60), and that is what the prompt got: say so, where it is written."""
    text = (
        "version: 1\nvars:\n  ratio: 3:2\n  code: 010\n  flag: yes\n  count: 5\n  price: 9.90\n  kept: '3:2'\n"
        "targets:\n  hero-${r}:\n    matrix: {r: [16:9, 2, 'on']}\n    n: 2\n"
        "    prompt: ${ratio} ${code} ${flag} ${count} ${price} ${kept} ${r}\n    out: hero-${r}.png\n"
    )
    manifest = parse_manifest(text, file="m.yaml", stream=stream)
    assert [(w.line, w.column, w.field, w.message.split(" (YAML")[0]) for w in manifest.warnings] == [
        (3, 10, "vars.ratio", "3:2 is read as the number 182"),
        (4, 9, "vars.code", "010 is read as the number 8"),
        (5, 9, "vars.flag", "yes is read as the boolean true"),
        (7, 10, "vars.price", "9.90 is read as the number 9.9"),
        (11, 18, "targets.hero-${r}.matrix.r[0]", "16:9 is read as the number 969"),
    ]  # not count: 5, n: 2 (not text), nor anything quoted
    assert manifest.warnings[0].message.endswith('quote it ("3:2") to keep the text')
    assert manifest.targets[0].prompt == "182 8 true 5 9.9 3:2 969"  # unchanged: the keys of built targets stand


def test_a_retyped_value_reached_through_an_alias_is_warned_about_where_it_is_used() -> None:
    text = "version: 1\nx-common: &r 3:2\nvars:\n  ratio: *r\ntargets:\n  hero: {prompt: '${ratio}', out: a.png}\n"
    manifest = parse_manifest(text, file="m.yaml")
    assert [(w.line, w.field, w.message.split(" (YAML")[0]) for w in manifest.warnings] == [
        (2, "vars.ratio", "3:2 is read as the number 182")
    ]  # the line where it is written; not the x- key itself, which nothing substitutes


@pytest.mark.parametrize("stream", [True, False])
def test_text_a_comment_cuts_short_is_warned_about(stream: bool) -> None:
    """``prompt: Poster #3 for the sale`` is "Poster": the prompt paid for is not the one written."""
    text = (
        "version: 1\ntargets:\n"
        "  a:\n    prompt: Poster #3 for the summer sale, blue mug\n    out: a.png   # the hero shot\n"
        "  b:\n    prompt: 'Hex #ff0000 background'\n    n: 2 #two\n    out: b.png\n"
        "  c:\n    prompt: A red mug\t# a comment, written as one\n    out: c.png\n"
    )
    manifest = parse_manifest(text, file="m.yaml", stream=stream)
    assert [(w.line, w.column, w.field, w.message) for w in manifest.warnings] == [
        (4, 13, "targets.a.prompt", "the value ends at 'Poster': YAML reads the rest of the line, "
         "'#3 for the summer sale, blue mug', as a comment (' #' starts one); quote the whole value to keep it, "
         "or write '# ' if it is a comment"),
    ]  # fmt: skip
    assert [t.prompt for t in manifest.targets] == ["Poster", "Hex #ff0000 background", "A red mug"]


def test_paths_with_the_invisible_characters_real_file_names_have_are_accepted() -> None:
    """A macOS screenshot's name holds U+202F; emoji and Persian names hold joiners. Locks an earlier
    pixmake wrote with them must stay readable, so the manifest refuses only what can harm a terminal."""
    from types import MappingProxyType

    from pixmake.lockfile import Lock, LockedOutput, LockEntry, parse_lock, render_lock

    out = "assets/Screenshot 9.41.12\u202fAM \u00a0\U0001f469\u200d\U0001f3a8 \u0645\u06cc\u200c\u062e.png"
    text = f"version: 1\ntargets:\n  t: {{prompt: p, out: {json.dumps(out, ensure_ascii=False)}}}\n"
    manifest = parse_manifest(text, file="m.yaml")
    assert [t.out for t in manifest.targets] == [out]
    entry = LockEntry("k" * 64, "gpt-4o-image", "p", "1:1", 1, (LockedOutput(out, "0" * 64, 1, 1, 1),))
    lock = Lock(MappingProxyType({"t": entry}))
    assert parse_lock(render_lock(lock)) == lock


def test_an_undefined_variable_in_a_matrix_targets_name_is_one_error_not_one_per_expansion() -> None:
    """The half-made names ('shot-a-${shape}') each failed the name rule too: 5,001 lines for one typo."""
    text = (
        "version: 1\ntargets:\n  shot-${sku}-${shape}:\n    matrix: {sku: [a, b, c]}\n    prompt: x\n"
        "    out: ${sku}.png\n"
    )
    diagnostics = _refused(text, file="m.yaml")
    assert [str(d) for d in diagnostics] == [
        "m.yaml:3:3: targets.shot-${sku}-${shape}: undefined variable 'shape' (defined: sku; $${shape} is the text "
        "${shape}) (in sku=a and 2 more)"
    ]


@pytest.mark.parametrize("stream", [True, False])
def test_a_matrix_axis_of_mappings_sets_size_and_model_per_combination(stream: bool) -> None:
    """One hero in three crops: a label for the name and file, a ratio for ``size``, from one axis."""
    text = (
        "version: 1\ntargets:\n  hero-${format.label}-${m}:\n    matrix:\n      format:\n"
        "        - {label: square, size: '1:1'}\n        - {label: wide, size: '3:2'}\n"
        "      m: [gpt-4o-image, flux-2-pro]\n"
        "    model: ${m}\n    size: ${format.size}\n    prompt: Our mug, ${format.label} crop\n"
        "    out: hero/${format.label}-${m}.png\n"
        "  plain:\n    prompt: Our mug, wide crop\n    size: '3:2'\n    out: plain.png\n"
    )
    manifest = parse_manifest(text, file="m.yaml", stream=stream)
    made = {t.name: (t.model, t.size, t.out, t.origin) for t in manifest.targets}
    assert made == {
        "hero-square-gpt-4o-image": ("gpt-4o-image", "1:1", "hero/square-gpt-4o-image.png",
                                     "format.label=square, format.size=1:1, m=gpt-4o-image"),
        "hero-square-flux-2-pro": ("flux-2-pro", "1:1", "hero/square-flux-2-pro.png",
                                   "format.label=square, format.size=1:1, m=flux-2-pro"),
        "hero-wide-gpt-4o-image": ("gpt-4o-image", "3:2", "hero/wide-gpt-4o-image.png",
                                   "format.label=wide, format.size=3:2, m=gpt-4o-image"),
        "hero-wide-flux-2-pro": ("flux-2-pro", "3:2", "hero/wide-flux-2-pro.png",
                                 "format.label=wide, format.size=3:2, m=flux-2-pro"),
        "plain": ("gpt-4o-image", "3:2", "plain.png", ""),
    }  # fmt: skip
    from pixmake.fingerprint import target_key

    by_name = {t.name: t for t in manifest.targets}
    assert target_key(by_name["hero-wide-gpt-4o-image"], {}) == target_key(by_name["plain"], {})  # nothing new to pay


def test_a_size_from_a_template_is_checked_against_the_model_once_filled_in() -> None:
    text = (
        "version: 1\ndefaults:\n  size: ${f.ratio}\ntargets:\n  a-${f.k}:\n"
        "    matrix: {f: [{k: square, ratio: '1:1'}, {k: wide, ratio: '16:9'}]}\n    prompt: x\n    out: a-${f.k}.png\n"
    )
    diagnostics = _refused(text, file="m.yaml")
    assert [str(d) for d in diagnostics] == [
        "m.yaml:3:9: defaults.size: expected one of 1:1, 2:3, 3:2 for gpt-4o-image, found '16:9' "
        f"(models that make 16:9: {', '.join(sorted(m for m, spec in MODELS.items() if '16:9' in spec.sizes))}) "
        "(in f.k=wide, f.ratio=16:9)"
    ]
    assert "gpt-image-2" in str(diagnostics[0])  # where a new user's 16:9 is at home


def test_an_axis_of_mappings_is_read_by_field_and_its_retyped_fields_are_warned_about() -> None:
    text = (
        "version: 1\ntargets:\n  t-${f.label}:\n    matrix:\n"
        "      f: [{label: a, size: 3:2}, {label: b, size: '2:3'}]\n"
        "    prompt: ${f}\n    size: ${f.size}\n    out: ${f.label}.png\n"
    )
    diagnostics = _refused(text, file="m.yaml")
    assert [(d.line, d.message) for d in diagnostics if d.severity == "error"] == [
        (6, "'f' stands for several values: write one of ${f.label}, ${f.size} (in f.label=a, f.size=182 and 1 more)"),
        (7, "expected one of 1:1, 2:3, 3:2 for gpt-4o-image, found '182' (in f.label=a, f.size=182)"),
    ]
    fixed = parse_manifest(text.replace("${f}", "${f.label}").replace("3:2}", "'3:2'}"), file="m.yaml")
    assert [(t.name, t.size, t.prompt) for t in fixed.targets] == [("t-a", "3:2", "a"), ("t-b", "2:3", "b")]
    retyped = parse_manifest(text.replace("${f}", "${f.size}").replace("size: ${f.size}", "size: '1:1'"), file="m.yaml")
    assert [(w.line, w.column, w.field, w.message.split(" (YAML")[0]) for w in retyped.warnings] == [
        (5, 28, "targets.t-${f.label}.matrix.f[0].size", "3:2 is read as the number 182")
    ]


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("[{label: a, size: {w: 3, h: 2}}]", "matrix.f[0]"),
        ("[{}]", "matrix.f[0]"),
        ("[{1x: a}]", "matrix.f[0]"),
    ],
)
def test_an_axis_value_mapping_holds_named_scalar_fields_only(value: str, fragment: str) -> None:
    text = f"version: 1\ntargets:\n  t-${{f.label}}:\n    matrix:\n      f: {value}\n    prompt: x\n    out: a.png\n"
    diagnostics = _refused(text, file="m.yaml")
    assert any(fragment in str(d) for d in diagnostics), diagnostics


def test_a_bad_default_is_not_blamed_on_the_catalog_rows_that_inherit_it() -> None:
    """The review's repro: `defaults.model: gpt-4o-imag` read as a problem of the CSV's rows."""
    text = (
        "version: 1\ndefaults:\n  model: gpt-4o-imag\n  size: ${f.size}\ntargets:\n  p-${sku}-${f.k}:\n"
        "    rows: s.csv\n    matrix: {f: [{k: a, size: '1:1'}, {k: b, size: '5:4'}]}\n    prompt: x\n"
        "    out: p/${sku}-${f.k}.png\n"
    )
    with pytest.raises(ManifestError) as caught:
        parse_manifest(text, file="m.yaml", read_file=lambda rel: b"sku\na1\nb2\n")
    [model] = [str(d) for d in caught.value.diagnostics]
    assert model.startswith("m.yaml:3:10: defaults.model: unknown model 'gpt-4o-imag'") and "(in " not in model
    fixed = text.replace("gpt-4o-imag\n", "gpt-4o-image\n")
    diagnostics = _refused(fixed, file="m.yaml", read_file=lambda rel: b"sku\na1\nb2\n")
    [size] = [str(d) for d in diagnostics]  # a templated default: the row and combination say which
    assert size.endswith("(in row s.csv:2, f.k=b, f.size=5:4 and 1 more)"), size


@pytest.mark.parametrize(
    ("sep", "what"), [(";", "semicolons (as Excel writes in some languages)"), ("\t", "tabs")], ids=["excel", "tsv"]
)
def test_a_catalog_saved_with_another_separator_says_so_once(sep: str, what: str) -> None:
    """The review: an Excel CSV with ';' read as one column named 'sku;name;tagline', and every row failed."""
    from pixmake.catalog import parse_catalog

    data = sep.join(["sku", "name", "tagline"]) + "\n" + sep.join(["a1", "mug", "new"]) + "\n"
    rows, problems = parse_catalog(data.encode(), file="skus.csv")
    assert rows == [] and [p.message for p in problems] == [
        f"the header is one column holding {what}: pixmake reads comma-separated CSV; save it so"
    ]


def test_a_size_or_model_template_that_cannot_be_filled_in_is_one_error_each() -> None:
    """The diff review: an axis value lacking the field gave "undefined variable" and then "expected one of
    1:1, 2:3, 3:2 …, found '${f.size}'", and advice to write $${f.size}, which no size can be."""
    text = (
        "version: 1\ntargets:\n  t-${f.label}:\n    matrix:\n      f: [{label: a, size: '1:1'}, {label: b}]\n"
        "    size: ${f.size}\n    model: ${mm}\n    prompt: x\n    out: ${f.label}.png\n"
    )
    diagnostics = _refused(text, file="m.yaml")
    assert [(d.line, d.message) for d in diagnostics] == [
        (6, "undefined variable 'f.size' (defined: f.label) (in f.label=b)"),
        (7, "undefined variable 'mm' (defined: f.label, f.size) (in f.label=a, f.size=1:1)"),
        (7, "undefined variable 'mm' (defined: f.label) (in f.label=b)"),
    ]


def test_a_bad_field_of_an_axis_value_is_named_and_no_sentence_is_cut_at_a_dot() -> None:
    """The diff review: "expected one axis value: … read as ${axis, found a mapping" (cut at ${axis.field}'s
    dot), naming no field."""
    text = "version: 1\ntargets:\n  t-${f.k}:\n    matrix:\n      f: [{k: a, size: {w: 3}}, [1]]\n    prompt: x\n"
    text += "    out: ${f.k}.png\n"
    diagnostics = _refused(text, file="m.yaml")
    assert [(d.field, d.message) for d in diagnostics] == [
        ("targets.t-${f.k}.matrix.f[0].size", "expected a string or a number or true or false, found a mapping"),
        (
            "targets.t-${f.k}.matrix.f[1]",
            "expected one axis value: a string, number or boolean, or a mapping of such fields read as "
            "${axis.field}, found a list",
        ),
    ]


@pytest.mark.parametrize(
    ("yaml_text", "line", "hint"),
    [
        ("  hero-square\n    prompt: x\n    out: a.png\n", 4, "the line above, 'hero-square', has no ':'"),
        ("  hero:\n    size: '1:1'\n  prompt: x\n    out: a.png\n", 6, "check this line's indentation"),
        ("  hero:\n    prompt: x\n      out: a.png\n", 5, "check this line's indentation"),
        ("  hero:\n    prompt: x\n   out: a.png\n", 5, "check this line's indentation"),
        ('  hero:\n    prompt: "Autumn" edition bottle\n    out: a.png\n', 4, "a value that starts with a quote must"),
        ("  hero:\n    prompt: @northwind bottle\n    out: a.png\n", 4, "a plain value cannot start with @; quote"),
    ],
    ids=["no-colon", "dedented", "indented", "half-indented", "quoted-then-more", "at-sign"],
)
def test_a_newcomers_yaml_mistakes_get_a_hint_on_what_to_fix(yaml_text: str, line: int, hint: str) -> None:
    """The review: PyYAML's words alone ("mapping values are not allowed in this context") for the usual
    slips: a missing ':', a field indented wrong, a quote that ends before the value does, a leading @."""
    diagnostics = _refused("version: 1\ntargets:\n" + yaml_text, file="m.yaml")
    [problem] = diagnostics
    assert problem.line == line and hint in problem.message, problem


def test_a_tag_naming_an_undefined_variable_is_told_once() -> None:
    """The review (a studio): a catalog column renamed under `tags: ["${rarity}"]` also gave a bogus "tag
    '${rarity}' (after ${…}) may use only ASCII letters…" for the half-made value."""
    text = 'version: 1\ntargets:\n  a:\n    prompt: x\n    tags: ["${rarity}", "ok", "${x}-${y}"]\n    out: a.png\n'
    diagnostics = _refused(text, file="m.yaml")
    assert [(d.field, d.message.split(" (")[0]) for d in diagnostics] == [
        ("targets.a.tags[0]", "undefined variable 'rarity'"),
        ("targets.a.tags[2]", "undefined variable 'x'"),
        ("targets.a.tags[2]", "undefined variable 'y'"),
    ]
    with_defaults = text.replace("version: 1\n", 'version: 1\ndefaults: {tags: ["${nope}"]}\n').replace(
        "  a:\n", "  a:\n    prompt: x\n    tags: [ok]\n    out: a.png\n  b:\n", 1
    )
    assert [(d.field, d.line, d.message.split(" (")[0]) for d in _refused(with_defaults, file="m.yaml")] == [
        ("defaults.tags[0]", 2, "undefined variable 'nope'"),  # once, not once per target
        ("targets.b.tags[0]", 10, "undefined variable 'rarity'"),
        ("targets.b.tags[2]", 10, "undefined variable 'x'"),
        ("targets.b.tags[2]", 10, "undefined variable 'y'"),
    ]
    defined = _refused(text.replace("version: 1\n", "version: 1\nvars: {rarity: rare, x: a b, y: c}\n"), file="m.yaml")
    assert [(d.field, d.message) for d in defined] == [
        ("targets.a.tags", "tag 'a b-c' (after ${…}) may use only ASCII letters, digits and _ . -")
    ]


@pytest.mark.parametrize("suffix", ["csv", "jsonl"])
def test_a_catalog_a_merge_left_unresolved_is_told_once_at_its_first_marker(suffix: str) -> None:
    """The review (a studio): a CSV with git's conflict markers gave "row has 1 column; the header has 5"
    for every marker line; the manifest says what happened, and so does a catalog now."""
    from pixmake.catalog import parse_catalog

    header = "id,prompt\n" if suffix == "csv" else ""
    ours, theirs = ("a,red mug\n", "a,blue mug\n") if suffix == "csv" else ('{"id": "a"}\n', '{"id": "b"}\n')
    text = f"{header}<<<<<<< HEAD\n{ours}=======\n{theirs}>>>>>>> art-pass\n"
    rows, problems = parse_catalog(text.encode(), file=f"cards.{suffix}")
    assert rows == [] and [(d.line, d.message) for d in problems] == [
        (
            2 if suffix == "csv" else 1,
            "git conflict marker <<<<<<<: a merge left this catalog unresolved; resolve the conflict (keep the "
            "lines you want, delete the marker lines), then run again",
        )
    ]


@pytest.mark.parametrize(
    ("value", "said"),
    [
        ("", "path is empty (an empty catalog cell, or a variable with no value?)"),
        ("./", "path './' names the project folder, not a file"),
        ("..", "path '..' leaves the project root (use a relative path inside the project)"),
    ],
)
def test_a_mask_path_that_names_no_file_says_why(value: str, said: str) -> None:
    """The review (a studio): a catalog row with an empty mask cell gave "path '' leaves the project root"."""
    text = (
        f'version: 1\nvars: {{m: "{value}"}}\ntargets:\n  a:\n    prompt: x\n    references: [r.png]\n'
        '    mask: "${m}"\n    out: a.png\n'
    )
    assert [d.message for d in _refused(text, file="m.yaml") if d.field == "targets.a.mask"] == [said]
