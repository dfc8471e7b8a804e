"""Run Alembic programmatically so `citybrain migrate` and `citybrain up` need no alembic.ini on disk."""

from __future__ import annotations

import logging
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

MIGRATIONS = Path(__file__).with_name("migrations")
log = logging.getLogger(__name__)
# Tables the migrations create that no model describes: SQLite's R*Tree over entity shapes and its shadow
# tables (entity_shapes_node, _parent, _rowid). Autogenerate must neither drop nor report them.
UNMODELLED_TABLE_PREFIXES = ("entity_shapes",)


# Indexes the migrations create that no model declares: PostgreSQL's partial GiST over entity shapes.
UNMODELLED_INDEXES = ("ix_entities_shape_box",)


def include_name(name: str | None, type_: str, _parent_names: object) -> bool:
    """Alembic's filter of reflected names: everything but the unmodelled tables."""
    return not (type_ == "table" and name is not None and name.startswith(UNMODELLED_TABLE_PREFIXES))


def include_object(_object: object, name: str | None, type_: str, _reflected: bool, _compare_to: object) -> bool:
    """Alembic's filter of schema objects: everything but the unmodelled indexes."""
    return not (type_ == "index" and name in UNMODELLED_INDEXES)


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def current_revision(engine: sa.Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()


def upgrade(engine: sa.Engine, revision: str = "head") -> tuple[str | None, str | None]:
    """Upgrade the database in place; returns (before, after) revisions."""
    before = current_revision(engine)
    config = alembic_config(engine.url.render_as_string(hide_password=False))
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, revision)
    after = current_revision(engine)
    if before != after:
        log.info("database migrated from %s to %s", before or "empty", after)
    return before, after
