"""Subscription storage and the notification outbox: CRUD, claiming due work, recording delivery outcomes.

Claiming is a lease on the subscription row, taken with one conditional UPDATE (`… WHERE lease is free`):
on PostgreSQL the second of two racing UPDATEs re-checks the condition after the first commits and
matches nothing; on SQLite writers are serialised. Whoever holds the lease sends that subscription's
oldest pending notifications, so no two workers send the same one and each subscription's notifications
go out in order. A worker that dies leaves a lease that expires; its notifications are then sent again
(at least once).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from citybrain.db.base import add_new, get_or_404
from citybrain.hub.subscriptions.models import NotificationRow, SubscriptionRow

PENDING, DELIVERED, FAILED = "pending", "delivered", "failed"


def get_subscription(session: Session, *, subscription_id: str) -> SubscriptionRow:
    return get_or_404(session, SubscriptionRow, subscription_id, f"subscription {subscription_id}")


def add_subscription(session: Session, *, row: SubscriptionRow) -> SubscriptionRow:
    return add_new(session, row, f"subscription {row.id}")


def delete_subscription(session: Session, *, subscription_id: str) -> None:
    """Delete a subscription and its outbox rows."""
    row = get_subscription(session, subscription_id=subscription_id)
    session.execute(sa.delete(NotificationRow).where(NotificationRow.subscription_id == subscription_id))
    session.delete(row)


def list_subscriptions(
    session: Session, *, after: str | None, limit: int, status: str | None = None, entity_type: str | None = None,
    keep: Callable[[SubscriptionRow], bool] | None = None,
) -> list[SubscriptionRow]:
    """Subscriptions in id order after `after`; `limit` rows at most. `entity_type` is checked in Python
    because the type list is a JSON array (one query shape for both backends), and so is `keep` (the
    caller's scope); pages stay id-ordered."""
    stmt = sa.select(SubscriptionRow).order_by(SubscriptionRow.id)
    if after is not None:
        stmt = stmt.where(SubscriptionRow.id > after)
    if status in ("active", "paused"):
        stmt = stmt.where(SubscriptionRow.status == status)
    if entity_type is None and keep is None:
        return list(session.scalars(stmt.limit(limit)))
    out: list[SubscriptionRow] = []
    for row in session.scalars(stmt.execution_options(yield_per=500)):
        if (entity_type is None or not row.entity_types or entity_type in row.entity_types) and (
                keep is None or keep(row)):
            out.append(row)
            if len(out) >= limit:
                break
    return out


def active_subscriptions(session: Session, *, now: datetime) -> list[SubscriptionRow]:
    """What the change hook must match against: active and not expired."""
    return list(session.scalars(
        sa.select(SubscriptionRow).where(
            SubscriptionRow.status == "active",
            sa.or_(SubscriptionRow.expires_at.is_(None), SubscriptionRow.expires_at > now),
        )
    ))


def count_pending(session: Session, *, subscription_ids: Sequence[str]) -> dict[str, int]:
    """Pending outbox rows per subscription (delivered and failed are counters on the subscription, which
    outlive the retention of the rows)."""
    counts = dict.fromkeys(subscription_ids, 0)
    if not subscription_ids:
        return counts
    stmt = (sa.select(NotificationRow.subscription_id, sa.func.count())
            .where(NotificationRow.subscription_id.in_(subscription_ids), NotificationRow.status == PENDING)
            .group_by(NotificationRow.subscription_id))
    for sid, count in session.execute(stmt):
        counts[sid] = count
    return counts


def add_notifications(session: Session, *, rows: list[dict[str, Any]]) -> None:
    """Write outbox rows (one multi-row INSERT) in the caller's transaction."""
    session.execute(sa.insert(NotificationRow), rows)


def list_notifications(
    session: Session, *, subscription_id: str, status: str | None, before: int | None, limit: int
) -> list[NotificationRow]:
    """Newest first."""
    stmt = sa.select(NotificationRow).where(NotificationRow.subscription_id == subscription_id)
    if status is not None:
        stmt = stmt.where(NotificationRow.status == status)
    if before is not None:
        stmt = stmt.where(NotificationRow.id < before)
    return list(session.scalars(stmt.order_by(NotificationRow.id.desc()).limit(limit)))


# ------------------------------------------------------------------------------------------- delivery


def _lease_free(now: datetime) -> Any:
    return sa.or_(SubscriptionRow.lease_until.is_(None), SubscriptionRow.lease_until <= now)


def _due(now: datetime) -> list[Any]:
    return [SubscriptionRow.status == "active",
            sa.or_(SubscriptionRow.next_attempt_at.is_(None), SubscriptionRow.next_attempt_at <= now),
            _lease_free(now)]


def due_subscriptions(session: Session, *, now: datetime, limit: int) -> list[str]:
    """Subscriptions with pending notifications, not held back (back-off, throttling) nor leased."""
    has_pending = (sa.select(NotificationRow.id)
                   .where(NotificationRow.subscription_id == SubscriptionRow.id, NotificationRow.status == PENDING)
                   .exists())
    stmt = (sa.select(SubscriptionRow.id).where(*_due(now), has_pending)
            .order_by(sa.nulls_first(SubscriptionRow.next_attempt_at), SubscriptionRow.id).limit(limit))
    return list(session.scalars(stmt))


def claim_subscription(session: Session, *, subscription_id: str, now: datetime, token: str,
                       lease_until: datetime) -> bool:
    """Take the delivery lease of one subscription; False when someone else got it first."""
    result = session.execute(
        sa.update(SubscriptionRow)
        .where(SubscriptionRow.id == subscription_id, *_due(now))
        .values(lease_owner=token, lease_until=lease_until)
        .execution_options(synchronize_session=False)
    )
    return result.rowcount == 1


def pending_batch(session: Session, *, subscription_id: str, limit: int) -> list[NotificationRow]:
    """The oldest pending notifications of a subscription."""
    return list(session.scalars(
        sa.select(NotificationRow)
        .where(NotificationRow.subscription_id == subscription_id, NotificationRow.status == PENDING)
        .order_by(NotificationRow.id).limit(limit)
    ))


def release_lease(session: Session, *, subscription_id: str, token: str, next_attempt_at: datetime | None) -> None:
    """Give the lease back (only if still ours) and say when the subscription may be tried next."""
    session.execute(
        sa.update(SubscriptionRow)
        .where(SubscriptionRow.id == subscription_id, SubscriptionRow.lease_owner == token)
        .values(lease_owner=None, lease_until=None, next_attempt_at=next_attempt_at)
        .execution_options(synchronize_session=False)
    )


def mark_delivered(session: Session, *, subscription_id: str, ids: Sequence[int], now: datetime) -> int:
    """Record a successful POST; returns how many notifications it delivered for the first time."""
    result = session.execute(
        sa.update(NotificationRow)
        .where(NotificationRow.id.in_(ids), NotificationRow.status == PENDING)
        .values(status=DELIVERED, attempts=NotificationRow.attempts + 1, last_attempt_at=now, delivered_at=now,
                last_error=None)
        .execution_options(synchronize_session=False)
    )
    delivered = result.rowcount
    session.execute(
        sa.update(SubscriptionRow).where(SubscriptionRow.id == subscription_id)
        .values(delivered_count=SubscriptionRow.delivered_count + delivered, last_success_at=now)
        .execution_options(synchronize_session=False)
    )
    return delivered


def mark_attempt_failed(session: Session, *, subscription_id: str, ids: Sequence[int], now: datetime, error: str,
                        max_attempts: int) -> int:
    """Record a failed POST: each notification's attempts go up; those reaching `max_attempts` fail for
    good. Returns how many failed for good."""
    session.execute(
        sa.update(NotificationRow)
        .where(NotificationRow.id.in_(ids), NotificationRow.status == PENDING)
        .values(attempts=NotificationRow.attempts + 1, last_attempt_at=now, last_error=error,
                status=sa.case((NotificationRow.attempts + 1 >= max_attempts, FAILED), else_=PENDING))
        .execution_options(synchronize_session=False)
    )
    failed = session.scalar(
        sa.select(sa.func.count()).select_from(NotificationRow)
        .where(NotificationRow.id.in_(ids), NotificationRow.status == FAILED)  # they were all pending before
    ) or 0
    session.execute(
        sa.update(SubscriptionRow).where(SubscriptionRow.id == subscription_id)
        .values(failed_count=SubscriptionRow.failed_count + failed, last_failure_at=now, last_error=error)
        .execution_options(synchronize_session=False)
    )
    return failed


def purge_notifications(session: Session, *, older_than: datetime) -> int:
    """Drop settled notifications older than the retention, and any whose subscription is gone."""
    settled = session.execute(
        sa.delete(NotificationRow)
        .where(NotificationRow.status.in_((DELIVERED, FAILED)), NotificationRow.created_at < older_than)
        .execution_options(synchronize_session=False)
    ).rowcount
    orphaned = session.execute(
        sa.delete(NotificationRow)
        .where(NotificationRow.subscription_id.not_in(sa.select(SubscriptionRow.id)))
        .execution_options(synchronize_session=False)
    ).rowcount
    return settled + orphaned
