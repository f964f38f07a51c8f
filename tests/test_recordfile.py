"""Record files: a record and its items back as written, or nothing at all (a cache only saves work)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from pixmake.recordfile import read_record, write_record

FORMAT = (1, "test")

values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text() | st.binary(),
    lambda inner: st.lists(inner, max_size=4).map(tuple) | st.dictionaries(st.text(max_size=5), inner, max_size=4),
    max_leaves=12,
)


@settings(max_examples=60, deadline=None)
@given(extra=values, items=st.lists(values, max_size=6))
def test_a_record_and_its_items_read_back_as_written(tmp_path_factory: Any, extra: Any, items: list[Any]) -> None:
    path = tmp_path_factory.mktemp("r") / "cache"
    write_record(path, {"format": FORMAT, "extra": extra}, iter(items))
    loaded = read_record(path, FORMAT)
    assert loaded is not None
    record, _, read_items = loaded
    assert record == {"format": FORMAT, "extra": extra}
    assert list(read_items) == items


def test_a_file_cut_short_anywhere_reads_as_no_record(tmp_path: Path) -> None:
    path = tmp_path / "cache"
    write_record(path, {"format": FORMAT}, ["a", ("b", 2), {"c": None}])
    whole = path.read_bytes()
    for end in range(len(whole)):
        path.write_bytes(whole[:end])
        assert read_record(path, FORMAT) is None, end


def test_an_item_marshal_cannot_store_leaves_the_old_file_and_no_temporary_one(tmp_path: Path) -> None:
    path = tmp_path / "cache"
    write_record(path, {"format": FORMAT}, ["kept"])
    write_record(path, {"format": FORMAT}, ["first", object()])  # fails after a piece was written
    loaded = read_record(path, FORMAT)
    assert loaded is not None and list(loaded[2]) == ["kept"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache"]


def test_another_format_reads_as_no_record(tmp_path: Path) -> None:
    path = tmp_path / "cache"
    write_record(path, {"format": (2, "test")})
    assert read_record(path, FORMAT) is None
