"""Tables of the device registry and of telemetry that could not be accepted."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from citybrain.db.base import Base, UTCDateTime


class DeviceRow(Base):
    """A registered device. `num` is the integer id the hot path uses (global, dense from 1); `local` the
    device's position within its type, the index into that type's state arrays. Both are assigned once at
    registration and never reused, so state arrays and lake rows stay attributable."""

    __tablename__ = "devices"

    num: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=True)
    device_id: Mapped[str] = mapped_column(sa.String(64), unique=True)
    device_type: Mapped[str] = mapped_column(sa.String(41))
    local: Mapped[int] = mapped_column(sa.Integer)
    org_unit: Mapped[str | None] = mapped_column(sa.String(64))
    lon: Mapped[float | None] = mapped_column(sa.Float)
    lat: Mapped[float | None] = mapped_column(sa.Float)
    # SHA-256 of the device's secret: secrets are 32 random bytes, so a slow password hash buys nothing.
    secret_hash: Mapped[str] = mapped_column(sa.String(64))
    enabled: Mapped[bool] = mapped_column(sa.Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # Written back from the pipeline's arrays now and then, not per message.
    last_seen_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    __table_args__ = (
        sa.UniqueConstraint("device_type", "local"),
        sa.Index("ix_devices_org_unit_device_type", "org_unit", "device_type"),
    )


class DeadLetterRow(Base):
    """A message the ingest could not accept, kept with the reason so an operator can see and replay it."""

    __tablename__ = "telemetry_dead_letters"

    id: Mapped[int] = mapped_column(
        sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=True
    )
    received_at: Mapped[datetime] = mapped_column(UTCDateTime)
    source: Mapped[str] = mapped_column(sa.String(16))  # mqtt | http
    topic: Mapped[str] = mapped_column(sa.String(512))
    device_id: Mapped[str | None] = mapped_column(sa.String(64))
    reason: Mapped[str] = mapped_column(sa.String(512))
    payload: Mapped[bytes] = mapped_column(sa.LargeBinary)  # the first 4 KB of what arrived

    __table_args__ = (sa.Index("ix_telemetry_dead_letters_received_at", "received_at"),)
