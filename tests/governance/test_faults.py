"""kill -9 of a real server under concurrent writes, a few cycles (bench/faults.py runs 20 and more):
no acknowledged write or audit record lost or duplicated, and the audit chain intact."""

from __future__ import annotations

from pathlib import Path

from tests.faults import kill9_cycles


def test_kill9_under_load_loses_and_duplicates_nothing_acknowledged(tmp_path: Path) -> None:
    report = kill9_cycles(tmp_path, cycles=3)
    assert report.cycles == 3 and report.acknowledged > 0
    assert report.lost == [] and report.duplicated == []
    assert report.chain_intact and report.audit_records >= report.acknowledged
