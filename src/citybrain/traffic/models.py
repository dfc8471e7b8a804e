"""Tables of the traffic capability: signal plans with their predicted and measured effect."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from citybrain.db.base import Base, JSONType, UTCDateTime


class SignalPlanRow(Base):
    """A change of signal control for some intersections, checked on a forked twin before it is applied.

    proposed → simulating → applied | rejected | failed; applied → measured | failed. `prediction` holds
    the baseline's and the candidate's simulated delay and throughput over the horizon; `outcome` what
    the live twin measured over the same horizon after the plan was applied, next to it.
    """

    __tablename__ = "traffic_plans"

    id: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    scenario: Mapped[str] = mapped_column(sa.String(128))
    intersections: Mapped[list[str]] = mapped_column(JSONType)
    controller: Mapped[str | None] = mapped_column(sa.String(64))
    timing: Mapped[dict[str, float] | None] = mapped_column(JSONType)
    horizon_s: Mapped[float] = mapped_column(sa.Float)
    status: Mapped[str] = mapped_column(sa.String(16))
    reason: Mapped[str | None] = mapped_column(sa.Text)
    prediction: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    outcome: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    commands: Mapped[list[str]] = mapped_column(JSONType)
    applied_sim_time: Mapped[float | None] = mapped_column(sa.Float)
    history: Mapped[list[dict[str, Any]]] = mapped_column(JSONType)
    created_by: Mapped[str] = mapped_column(sa.String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)

    __table_args__ = (sa.Index("ix_traffic_plans_status", "status"),)
