"""Alerts raised by the sensing rules."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from citybrain.db.base import Base, JSONType, UTCDateTime


class AlertRow(Base):
    """One alert: a rule's subject (a device, or an area for area rules) in alert, from raise to clear.
    At most one is open per (rule, subject); a raise soon after a clear reopens it (`raises` counts)."""

    __tablename__ = "alerts"

    id: Mapped[str] = mapped_column(sa.String(36), primary_key=True)
    device_type: Mapped[str] = mapped_column(sa.String(41))
    rule_id: Mapped[str] = mapped_column(sa.String(64))
    subject: Mapped[str] = mapped_column(sa.String(64))  # device id, or the area's org-unit code
    subject_kind: Mapped[str] = mapped_column(sa.String(8))  # device | area
    org_unit: Mapped[str | None] = mapped_column(sa.String(64))
    severity: Mapped[str] = mapped_column(sa.String(8))
    status: Mapped[str] = mapped_column(sa.String(16))  # active | acknowledged | cleared
    title: Mapped[str] = mapped_column(sa.String(256))
    raised_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    cleared_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    raises: Mapped[int] = mapped_column(sa.Integer, default=1)
    value: Mapped[float | None] = mapped_column(sa.Float)
    reading: Mapped[dict[str, Any]] = mapped_column(JSONType)  # what caused the (last) raise
    assignee: Mapped[str | None] = mapped_column(sa.String(256))
    acknowledged_by: Mapped[str | None] = mapped_column(sa.String(256))
    acknowledged_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    __table_args__ = (
        sa.Index("ix_alerts_status_severity", "status", "severity"),
        sa.Index("ix_alerts_org_unit_status", "org_unit", "status"),
        sa.Index("ix_alerts_rule_subject", "device_type", "rule_id", "subject"),
    )
