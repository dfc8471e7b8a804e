"""Tables for entities, their attribute history and operator-defined entity types."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from citybrain.db.base import Base, JSONType, UTCDateTime

# The entity's bounding box as a PostgreSQL box, and the condition of a box with extent (not a point): the
# expression and the predicate of the partial GiST index over shapes.
POSTGRES_BOX = "box(point(min_lon, min_lat), point(max_lon, max_lat))"
HAS_EXTENT = "(min_lon < max_lon OR min_lat < max_lat)"
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
    lon_band: Mapped[int | None] = mapped_column(sa.Integer)  # geo.lon_band(min_lon): see the point index
    attrs: Mapped[dict[str, Any]] = mapped_column(JSONType)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    modified_at: Mapped[datetime] = mapped_column(UTCDateTime)
    version: Mapped[int] = mapped_column(sa.Integer, default=1)

    __table_args__ = (
        sa.Index("ix_entities_type_id", "type", "id"),
        # Org-unit queries usually name a type too, and page in id order: this index answers both.
        sa.Index("ix_entities_org_unit_type_id", "org_unit", "type", "id"),
        # Points (min = max) are found through this B-tree: a box names a few longitude bands and bounds
        # the latitude within each.
        sa.Index("ix_entities_lon_band_min_lat_min_lon", "lon_band", "min_lat", "min_lon"),
        # Shapes with extent have a spatial index that differs by backend, so it is not declared here: a
        # partial GiST index `ix_entities_shape_box` over POSTGRES_BOX on PostgreSQL, the R*Tree
        # `entity_shapes` kept in step by triggers on SQLite. Migration 0003 creates them;
        # `service._spatial_candidates` queries them.
    )


class EntityHistoryRow(Base):
    """One accepted change of an entity, in arrival order: the attribute instances it wrote (all of them
    when the entity was created), the temporal view of the entity. Kept after the entity is deleted,
    because the history is evidence.

    One row per change rather than per attribute: a batch of devices reporting five readings each then
    writes one history row per entity, not five, which halved what PostgreSQL spent on history.
    `observed_from`/`observed_to` bound the instances' observation times (observedAt, or recorded_at for
    an instance without one) so time windows are filtered in SQL before any instance is decoded.
    """

    __tablename__ = "entity_history"

    seq: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    entity_id: Mapped[str] = mapped_column(sa.String(512))
    # attribute name → NGSI-LD attribute. Plain json (text) on PostgreSQL, not jsonb: history is read
    # whole and never filtered by content, and jsonb's conversion was a fifth of what a write cost there.
    instances: Mapped[dict[str, Any]] = mapped_column(sa.JSON)
    observed_from: Mapped[datetime] = mapped_column(UTCDateTime)
    observed_to: Mapped[datetime] = mapped_column(UTCDateTime)
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime)
    actor: Mapped[str] = mapped_column(sa.String(256))

    __table_args__ = (sa.Index("ix_entity_history_entity_id_seq", "entity_id", "seq"),)


class EntityTypeRow(Base):
    """An entity type an operator defined at run time (scenario plug-ins define theirs in code)."""

    __tablename__ = "entity_types"

    name: Mapped[str] = mapped_column(sa.String(128), primary_key=True)
    spec: Mapped[dict[str, Any]] = mapped_column(JSONType)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
