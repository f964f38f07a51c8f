"""What .pixmake/lookups.json keeps of each provider's lookups by client_business_id (pixmake.lookups)."""

from __future__ import annotations

import time
from pathlib import Path

from pixmake.lookups import LookupRecord, Witness
from pixmake.models import RESULT_LIFETIME


def test_each_base_url_keeps_its_own_witness_and_verdict(tmp_path: Path) -> None:
    """The review: a build against another server (an emulator) that found lookups working erased the real
    provider's "they find nothing", and its next unknown submit was paid twice."""
    path = tmp_path / "lookups.json"
    provider, emulator = LookupRecord(path, "https://toapis.com"), LookupRecord(path, "http://127.0.0.1:8787")
    seen = Witness("pixmake-a-1", "task_a", time.time())
    provider.saw_created(seen)
    provider.judged(False)
    emulator.saw_created(Witness("pixmake-b-1", "task_b", time.time()))
    emulator.judged(True)
    again = LookupRecord(path, "https://toapis.com")
    assert (again.verdict(), again.witness()) == (False, seen)
    assert LookupRecord(path, "http://127.0.0.1:8787").verdict() is True
    assert LookupRecord(path, "https://elsewhere.example").verdict() is None


def test_a_witness_older_than_the_results_lifetime_is_not_asked_about(tmp_path: Path) -> None:
    """The provider may have let its task go: "not found" would then say nothing of its lookups."""
    record = LookupRecord(tmp_path / "lookups.json", "https://toapis.com")
    record.saw_created(Witness("pixmake-a-1", "task_a", time.time() - RESULT_LIFETIME - 1))
    assert LookupRecord(tmp_path / "lookups.json", "https://toapis.com").witness() is None


def test_the_newest_base_urls_are_kept_and_an_unreadable_file_is_no_record(tmp_path: Path) -> None:
    path = tmp_path / "lookups.json"
    for port in range(20):
        LookupRecord(path, f"http://127.0.0.1:{port}").saw_created(Witness("c", "t", time.time() - 100 + port))
    kept = [port for port in range(20) if LookupRecord(path, f"http://127.0.0.1:{port}").witness() is not None]
    assert kept == list(range(12, 20))
    path.write_text("{not json")
    assert LookupRecord(path, "http://127.0.0.1:19").verdict() is None
    path.write_text("[" * 100_000)  # nested past json's depth (the damage review: a build crashed after a submit)
    assert LookupRecord(path, "http://127.0.0.1:19").verdict() is None
