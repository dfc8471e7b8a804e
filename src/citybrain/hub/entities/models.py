"""Tables for entities, their attribute history and operator-defined entity types."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from citybrain.db.base import Base, JSONType, UTCDateTime

BigIntPK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")  # SQLite autoincrements only INTEGER PKs


class EntityRow(Base):
    """One city entity. `attrs` holds the NGSI-LD attributes in normalized form; location and org unit
    are lifted into columns (with the geometry's bounding box) so they can be indexed."""

    __tablename__ = "entities"

    id: Mapped[str] = mapped_column(sa.String(512), primary_key=True)
    type: Mapped[str] = mapped_column(sa.String(128))
    org_unit: Mapped[str | None] = mapped_column(sa.String(64))
    location: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    min_lon: Mapped[float | None] = mapped_column(sa.Float)
    min_lat: Mapped[float | None] = mapped_column(sa.Float)
    max_lon: Mapped[float | None] = mapped_column(sa.Float)
    max_lat: Mapped[float | None] = mapped_column(sa.Float)
    attrs: Mapped[dict[str, Any]] = mapped_column(JSONType)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    modified_at: Mapped[datetime] = mapped_column(UTCDateTime)
    version: Mapped[int] = mapped_column(sa.Integer, default=1)

    __table_args__ = (
        sa.Index("ix_entities_type_id", "type", "id"),
        sa.Index("ix_entities_org_unit", "org_unit"),
        sa.Index("ix_entities_min_lon_min_lat", "min_lon", "min_lat"),
    )


class AttributeHistoryRow(Base):
    """Every attribute instance the hub accepted, in arrival order: the temporal view of an entity.
    Kept after the entity is deleted, because the history is evidence."""

    __tablename__ = "attribute_history"

    seq: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    entity_id: Mapped[str] = mapped_column(sa.String(512))
    attribute: Mapped[str] = mapped_column(sa.String(128))
    instance: Mapped[dict[str, Any]] = mapped_column(JSONType)
    observed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime)
    actor: Mapped[str] = mapped_column(sa.String(256))

    __table_args__ = (sa.Index("ix_attribute_history_entity_attr_seq", "entity_id", "attribute", "seq"),)


class EntityTypeRow(Base):
    """An entity type an operator defined at run time (scenario plug-ins define theirs in code)."""

    __tablename__ = "entity_types"

    name: Mapped[str] = mapped_column(sa.String(128), primary_key=True)
    spec: Mapped[dict[str, Any]] = mapped_column(JSONType)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
