"""Migrations: they build exactly the schema the models describe, on both backends, and re-run safely."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from citybrain.db.base import import_all_models
from citybrain.db.migrate import current_revision, head_revision, include_name, include_object, upgrade
from tests.conftest import _pg_database_name
from tests.services import postgres_admin_url, require_postgres


def test_migrated_schema_matches_the_models(db_url):
    engine = sa.create_engine(db_url)
    upgrade(engine)
    assert current_revision(engine) == head_revision()
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True, "include_name": include_name,
                                                    "include_object": include_object})
        diff = compare_metadata(context, import_all_models())
    engine.dispose()
    assert diff == []


def test_upgrade_is_idempotent(db_url):
    engine = sa.create_engine(db_url)
    upgrade(engine)
    before, after = upgrade(engine)
    engine.dispose()
    assert before == after == head_revision()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.integration)])
def empty_db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A store no migration has touched (the shared test database is already at head)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'empty.db'}"
        return
    require_postgres()
    name = f"{_pg_database_name()}_empty"
    admin = sa.create_engine(postgres_admin_url(), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    yield postgres_admin_url(name)
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def test_0003_carries_attribute_history_and_boxes_over(empty_db_url):
    """Rows of the per-attribute history become one-attribute changes with their seq; existing shapes enter
    the spatial index."""
    db_url = empty_db_url
    from datetime import UTC, datetime

    from sqlalchemy.orm import Session

    from citybrain.hub.entities import service
    from citybrain.hub.entities.service import EntityQuery

    engine = sa.create_engine(db_url)
    upgrade(engine, "0002")
    at = "2026-11-25 08:00:00.000000" if engine.dialect.name == "sqlite" else "2026-11-25T08:00:00Z"
    with engine.begin() as conn:
        conn.execute(sa.text(
            "INSERT INTO attribute_history (seq, entity_id, attribute, instance, observed_at, recorded_at, actor) "
            "VALUES (7, 'urn:x:1', 'pm25', :a, NULL, :at, 'api'), (9, 'urn:x:1', 'no2', :b, :at, :at, 'api')"),
            {"a": '{"type": "Property", "value": 1}', "b": '{"type": "Property", "value": 2}', "at": at})
        conn.execute(sa.text(
            "INSERT INTO entities (id, type, org_unit, location, min_lon, min_lat, max_lon, max_lat, attrs, "
            "created_at, modified_at, version) VALUES ('urn:x:road', 'Road', NULL, :loc, 120.1, 30.2, 120.3, "
            "30.2, '{}', :at, :at, 1), ('urn:x:lamp', 'Lamp', NULL, :lamp, 120.2555, 30.25, 120.2555, 30.25, '{}', "
            ":at, :at, 1)"), {"loc": '{"type": "LineString", "coordinates": [[120.1, 30.2], [120.3, 30.2]]}',
                             "lamp": '{"type": "Point", "coordinates": [120.2555, 30.25]}', "at": at})
    upgrade(engine)
    with Session(engine) as session:
        items = service.attribute_history(session, entity_id="urn:x:1")
        assert [(i.seq, i.attribute, i.instance["value"]) for i in items] == [(7, "pm25", 1), (9, "no2", 2)]
        assert items[0].recorded_at == datetime(2026, 11, 25, 8, tzinfo=UTC)
        middle = EntityQuery(bbox=(120.19, 30.19, 120.21, 30.21))  # the road passes through, its ends do not
        assert [row.id for row in service.query_entities(session, query=middle, after=None, limit=10)[0]] == ["urn:x:road"]
        by_lamp = EntityQuery(bbox=(120.255, 30.249, 120.256, 30.251))  # found through its backfilled band
        assert [row.id for row in service.query_entities(session, query=by_lamp, after=None, limit=10)[0]] == ["urn:x:lamp"]
    with engine.begin() as conn:  # new history rows number after the old ones
        conn.execute(sa.text("INSERT INTO entity_history (entity_id, instances, observed_from, observed_to, "
                             "recorded_at, actor) VALUES ('urn:x:1', '{}', :at, :at, :at, 'api')"), {"at": at})
        assert conn.execute(sa.text("SELECT max(seq) FROM entity_history")).scalar() == 10
    engine.dispose()
