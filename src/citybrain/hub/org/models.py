"""The org-unit table: one row per district, town/street, village/community or department."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from citybrain.db.base import Base, JSONType, UTCDateTime


class OrgUnitRow(Base):
    __tablename__ = "org_units"

    code: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(200))
    name_en: Mapped[str | None] = mapped_column(sa.String(200))
    kind: Mapped[str] = mapped_column(sa.String(32))  # district | town | village | department
    level: Mapped[int] = mapped_column(sa.Integer)  # 1 district (and its departments), 2 town, 3 village
    parent_code: Mapped[str | None] = mapped_column(sa.String(64), sa.ForeignKey("org_units.code"))
    path: Mapped[str] = mapped_column(sa.String(400))  # "/310115/310115004/" — ancestors then self
    attributes: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)

    __table_args__ = (
        sa.Index("ix_org_units_parent_code", "parent_code"),
        sa.Index("ix_org_units_kind", "kind"),
    )
