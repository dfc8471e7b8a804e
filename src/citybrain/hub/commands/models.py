"""Tables for connected systems and the commands sent to them."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from citybrain.db.base import Base, JSONType, UTCDateTime


class ConnectedSystemRow(Base):
    """A department system, IoT platform or signal controller the hub talks to, and its last known health."""

    __tablename__ = "connected_systems"

    id: Mapped[str] = mapped_column(sa.String(512), primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(200))
    kind: Mapped[str] = mapped_column(sa.String(32))
    department: Mapped[str | None] = mapped_column(sa.String(64))
    description: Mapped[str | None] = mapped_column(sa.Text)
    command_url: Mapped[str | None] = mapped_column(sa.String(2048))
    health_url: Mapped[str | None] = mapped_column(sa.String(2048))
    status: Mapped[str] = mapped_column(sa.String(16))  # unknown | up | degraded | down
    last_seen_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_check_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_error: Mapped[str | None] = mapped_column(sa.Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    modified_at: Mapped[datetime] = mapped_column(UTCDateTime)

    __table_args__ = (sa.Index("ix_connected_systems_kind", "kind"),)


class CommandRow(Base):
    """One command (feedback execution) and its life: pending → sent → acknowledged | failed.

    `history` lists every transition with its time, reason and actor. Transitions are compare-and-set on
    `status`, so a concurrent acknowledgement and dispatch can never both win; `lease_*` let exactly one
    dispatcher (of any process) push a pending command at a time.
    """

    __tablename__ = "commands"

    id: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(128))
    parameters: Mapped[dict[str, Any]] = mapped_column(JSONType)
    target: Mapped[str] = mapped_column(sa.String(512))
    target_kind: Mapped[str] = mapped_column(sa.String(16))  # entity | system
    system_id: Mapped[str] = mapped_column(sa.String(512))
    status: Mapped[str] = mapped_column(sa.String(16))
    reason: Mapped[str | None] = mapped_column(sa.Text)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    history: Mapped[list[dict[str, Any]]] = mapped_column(JSONType)
    attempts: Mapped[int] = mapped_column(sa.Integer, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    lease_owner: Mapped[str | None] = mapped_column(sa.String(64))
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    ack_deadline: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_error: Mapped[str | None] = mapped_column(sa.Text)
    issued_by: Mapped[str] = mapped_column(sa.String(256))
    context_id: Mapped[str] = mapped_column(sa.String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)

    __table_args__ = (
        sa.Index("ix_commands_status_next_attempt_at", "status", "next_attempt_at"),
        sa.Index("ix_commands_status_ack_deadline", "status", "ack_deadline"),
        sa.Index("ix_commands_system_id_status_id", "system_id", "status", "id"),
        sa.Index("ix_commands_target_id", "target", "id"),
    )
