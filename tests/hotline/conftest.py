"""Fixtures of the hotline tests: org trees of the packaged districts, the shared data folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from citybrain.hub.org.divisions import read_divisions
from citybrain.hub.org.tree import OrgTree, Unit

LEVEL = {"district": 1, "town": 2, "village": 3}
SHARED = Path(__file__).resolve().parents[3] / "shared"
TIPDM_MESSAGES = SHARED / "data" / "complaints" / "tipdm2020c_messages_unlabelled.csv"


def district_tree(name: str) -> OrgTree:
    return OrgTree.build(Unit(d.code, d.name, d.kind, LEVEL[d.kind], d.parent_code) for d in read_divisions(name))


@pytest.fixture(scope="session")
def pudong() -> OrgTree:
    return district_tree("pudong")


@pytest.fixture(scope="session")
def haidian() -> OrgTree:
    return district_tree("haidian")


@pytest.fixture(scope="session")
def xihu() -> OrgTree:
    return district_tree("xihu")


@pytest.fixture(scope="session")
def tipdm_messages() -> Path:
    if not TIPDM_MESSAGES.exists():
        pytest.skip(f"the shared TipDM messages are not at {TIPDM_MESSAGES} (../shared is absent)")
    return TIPDM_MESSAGES
