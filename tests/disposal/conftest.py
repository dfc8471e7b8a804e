"""Fixtures of the disposal tests: the complaint data in ../shared, and a small valid catalogue entry."""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any

import pytest

COMPLAINTS = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "complaints"


@pytest.fixture(scope="session")
def complaints() -> Path:
    """The shared complaint data (not shipped in the package: its licences differ)."""
    if not (COMPLAINTS / "tipdm2020c_taxonomy.csv").exists():
        message = f"{COMPLAINTS} is absent"
        if os.environ.get("CITYBRAIN_REQUIRE_SERVICES") == "1":
            pytest.fail(f"{message} (CI has ../shared)")
        pytest.skip(message)
    return COMPLAINTS


def column(path: Path, name: str) -> list[str]:
    with path.open(encoding="utf-8", newline="") as handle:
        return [row[name] for row in csv.DictReader(handle)]


def entry(code: str = "CG-01-901", **changes: Any) -> dict[str, Any]:
    """A valid event type as YAML would give it, with fields replaced by `changes`."""
    base: dict[str, Any] = {
        "code": code,
        "name": {"zh": "测试事项", "en": "Test matter"},
        "category": "city_management",
        "department": "chengguan",
        "sla": {"respond": "2h", "handle": "3wd", "close": "1wd"},
        "refs": {"open311_code": code.lower()},
    }
    base.update(changes)
    return base
