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
