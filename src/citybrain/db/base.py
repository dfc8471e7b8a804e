"""Declarative base and column types shared by every capability's models."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Session
from sqlalchemy.types import TypeDecorator

from citybrain.core.errors import Conflict, NotFound

M = TypeVar("M")

# JSONB on PostgreSQL (indexable, compact); JSON text on SQLite.
JSONType = sa.JSON().with_variant(JSONB(), "postgresql")

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC timestamps on every backend (SQLite keeps no zone of its own)."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


class Base(DeclarativeBase):
    metadata = sa.MetaData(naming_convention=NAMING)


def import_all_models() -> sa.MetaData:
    """Import every capability's models so the metadata is complete (Alembic, tests)."""
    import citybrain.disposal.catalogue.models
    import citybrain.disposal.models
    import citybrain.hub.commands.models
    import citybrain.hub.entities.models
    import citybrain.hub.org.models
    import citybrain.hub.subscriptions.models
    import citybrain.sensing.alerts.models
    import citybrain.sensing.devices.models
    import citybrain.sensing.vitals.models
    import citybrain.governance.models
    import citybrain.traffic.models  # noqa: F401

    return Base.metadata


def get_or_404(session: Session, model: type[M], key: Any, what: str) -> M:
    """The row with this primary key, or NotFound naming it (`what` reads like "entity urn:…")."""
    row = session.get(model, key)
    if row is None:
        raise NotFound(f"{what} does not exist")
    return row


def add_new(session: Session, row: M, what: str) -> M:
    """Insert a row whose primary key must be new, or Conflict naming it."""
    identity = sa.inspect(row).mapper.primary_key_from_instance(row)
    if session.get(type(row), tuple(identity) if len(identity) > 1 else identity[0]) is not None:
        raise Conflict(f"{what} already exists")
    session.add(row)
    session.flush()
    return row
