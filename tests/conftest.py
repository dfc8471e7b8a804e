"""Shared fixtures: a Platform on each store backend (SQLite file and the real PostgreSQL), an API client,
and a frozen clock. Tests that take `platform` or `client` run once per backend."""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from citybrain.api.app import create_app
from citybrain.core.clock import FrozenClock
from citybrain.db.base import import_all_models
from citybrain.db.migrate import upgrade
from citybrain.platform import Platform
from citybrain.settings import Settings
from tests.services import postgres_admin_url, require_postgres

# The capabilities' tests call the API as an open installation's anonymous caller, and so do the servers they
# start (they inherit this); sign-in and access control are tested with it on (tests/governance).
os.environ.setdefault("CITYBRAIN_AUTH_REQUIRED", "false")

TEST_DISTRICT = "xihu"  # 1 district, 12 streets, 222 communities: small enough to load per test


def _pg_database_name() -> str:
    # The pid too: two test runs on one machine (a developer's and a CI clone) must not drop each other's.
    return f"citybrain_test_{os.environ.get('PYTEST_XDIST_WORKER', 'main')}_{os.getpid()}"


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this test session, migrated once."""
    require_postgres()
    name = _pg_database_name()
    admin = sa.create_engine(postgres_admin_url(), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = postgres_admin_url(name)
    engine = sa.create_engine(url)
    upgrade(engine)
    engine.dispose()
    yield url
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def _truncate_postgres(url: str) -> None:
    engine = sa.create_engine(url)
    tables = [t.name for t in import_all_models().sorted_tables]
    with engine.begin() as conn:
        conn.execute(sa.text("TRUNCATE " + ", ".join(f'"{t}"' for t in tables) + " RESTART IDENTITY CASCADE"))
    engine.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.integration)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'citybrain.db'}"
    url = request.getfixturevalue("postgres_url")
    _truncate_postgres(url)
    return url


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock(datetime(2026, 11, 25, 8, 0, tzinfo=UTC))


@pytest.fixture
def settings(db_url: str, tmp_path: Path) -> Settings:
    return Settings(db=db_url, home=tmp_path, bus="memory")


@pytest.fixture
def platform(settings: Settings, clock: FrozenClock) -> Iterator[Platform]:
    """A migrated platform holding the test district's org tree (not started: the client starts it)."""
    from citybrain.hub.org.flows import import_district

    platform = Platform(settings, clock=clock)
    platform.migrate()
    platform.load_state()
    import_district(platform, TEST_DISTRICT)
    yield platform
    platform.dispose()


@pytest.fixture
def client(platform: Platform) -> Iterator[TestClient]:
    with TestClient(create_app(platform)) as test_client:
        yield test_client
