"""Tables for subscriptions and their notification outbox."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from citybrain.db.base import Base, JSONType, UTCDateTime
from citybrain.hub.entities.models import BigIntPK


class SubscriptionRow(Base):
    """A filter over entity changes and the webhook its notifications go to.

    The columns from `next_attempt_at` on are the delivery state: only the delivery worker writes them,
    and the change hook never touches this row, so entity writers never wait on a subscription's lock.
    """

    __tablename__ = "subscriptions"

    id: Mapped[str] = mapped_column(sa.String(512), primary_key=True)
    name: Mapped[str | None] = mapped_column(sa.String(200))
    description: Mapped[str | None] = mapped_column(sa.Text)
    entity_types: Mapped[list[str]] = mapped_column(JSONType)
    entity_ids: Mapped[list[str]] = mapped_column(JSONType)
    q: Mapped[str | None] = mapped_column(sa.Text)
    bbox: Mapped[list[float] | None] = mapped_column(JSONType)
    near: Mapped[dict[str, float] | None] = mapped_column(JSONType)
    org_unit: Mapped[str | None] = mapped_column(sa.String(64))
    watched_attributes: Mapped[list[str]] = mapped_column(JSONType)
    notify_attributes: Mapped[list[str]] = mapped_column(JSONType)
    triggers: Mapped[list[str]] = mapped_column(JSONType)
    endpoint: Mapped[str] = mapped_column(sa.String(2048))
    throttling_s: Mapped[float | None] = mapped_column(sa.Float)
    status: Mapped[str] = mapped_column(sa.String(16))  # active | paused
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    org_scope: Mapped[list[str] | None] = mapped_column(JSONType)
    owner: Mapped[str] = mapped_column(sa.String(256))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    modified_at: Mapped[datetime] = mapped_column(UTCDateTime)

    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    lease_owner: Mapped[str | None] = mapped_column(sa.String(64))
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_success_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_failure_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_error: Mapped[str | None] = mapped_column(sa.Text)
    delivered_count: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    failed_count: Mapped[int] = mapped_column(sa.BigInteger, default=0)


class NotificationRow(Base):
    """The transactional outbox: one row per (subscription, entity change), written in the entity's own
    write transaction and sent later by the delivery worker.

    No foreign key to `subscriptions`: deleting a subscription must never make a concurrent entity write
    fail; rows of a deleted subscription are never claimed and are swept by the retention clean-up.
    """

    __tablename__ = "subscription_notifications"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    subscription_id: Mapped[str] = mapped_column(sa.String(512))
    entity_id: Mapped[str] = mapped_column(sa.String(512))
    entity_type: Mapped[str] = mapped_column(sa.String(128))
    operation: Mapped[str] = mapped_column(sa.String(16))
    payload: Mapped[dict[str, Any]] = mapped_column(JSONType)
    status: Mapped[str] = mapped_column(sa.String(16))  # pending | delivered | failed
    attempts: Mapped[int] = mapped_column(sa.Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_error: Mapped[str | None] = mapped_column(sa.Text)

    __table_args__ = (
        sa.Index("ix_subscription_notifications_sub_status_id", "subscription_id", "status", "id"),
        sa.Index("ix_subscription_notifications_status_created", "status", "created_at"),
    )
