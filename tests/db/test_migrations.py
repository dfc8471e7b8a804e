"""Migrations: they build exactly the schema the models describe, on both backends, and re-run safely."""

from __future__ import annotations

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from citybrain.db.base import import_all_models
from citybrain.db.migrate import current_revision, head_revision, upgrade


def test_migrated_schema_matches_the_models(db_url):
    engine = sa.create_engine(db_url)
    upgrade(engine)
    assert current_revision(engine) == head_revision()
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        diff = compare_metadata(context, import_all_models())
    engine.dispose()
    assert diff == []


def test_upgrade_is_idempotent(db_url):
    engine = sa.create_engine(db_url)
    upgrade(engine)
    before, after = upgrade(engine)
    engine.dispose()
    assert before == after == head_revision()
