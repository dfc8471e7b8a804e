"""City vital signs (城市运行体征) as time series: one value per org unit, indicator and moment."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from citybrain.db.base import Base, UTCDateTime


class VitalSignRow(Base):
    __tablename__ = "vital_signs"

    org_unit: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    indicator: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    ts: Mapped[datetime] = mapped_column(UTCDateTime, primary_key=True)
    value: Mapped[float | None] = mapped_column(sa.Float)


class VitalSignPartRow(Base):
    """One shard's share of an indicator for an org unit whose devices several ingest workers split (the
    district): the numerator and denominator over the shard's devices. When every shard's part of a moment
    is in, the value is written to `vital_signs` and the parts are dropped."""

    __tablename__ = "vital_sign_parts"

    org_unit: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    indicator: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    ts: Mapped[datetime] = mapped_column(UTCDateTime, primary_key=True)
    shard: Mapped[int] = mapped_column(sa.Integer, primary_key=True)
    shards: Mapped[int] = mapped_column(sa.Integer)
    numerator: Mapped[float] = mapped_column(sa.Float)
    denominator: Mapped[float | None] = mapped_column(sa.Float)
