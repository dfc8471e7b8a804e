"""Storage of connected systems and commands: CRUD, compare-and-set transitions, claiming due work.

Every state change of a command is one UPDATE conditioned on the status it was read in (compare-and-set),
so an acknowledgement, the dispatcher and the ack-timeout sweep can race without losing or doubling a
transition. Pushing a command is claimed with a lease (`lease_owner`, `lease_until`) taken by a
conditional UPDATE, which works the same on SQLite (serialised writers) and PostgreSQL (the loser's
UPDATE re-checks its condition after the winner commits and matches nothing).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from citybrain.core.errors import Conflict
from citybrain.db.base import add_new, get_or_404
from citybrain.hub.commands.models import CommandRow, ConnectedSystemRow

OPEN_STATUSES = ("pending", "sent")


# ------------------------------------------------------------------------------------------- systems


def get_system(session: Session, *, system_id: str) -> ConnectedSystemRow:
    return get_or_404(session, ConnectedSystemRow, system_id, f"connected system {system_id}")


def add_system(session: Session, *, row: ConnectedSystemRow) -> ConnectedSystemRow:
    return add_new(session, row, f"connected system {row.id}")


def delete_system(session: Session, *, system_id: str) -> None:
    """Delete a system that has no command in flight (its finished commands keep naming it)."""
    row = get_system(session, system_id=system_id)
    open_commands = session.scalar(
        sa.select(sa.func.count()).select_from(CommandRow)
        .where(CommandRow.system_id == system_id, CommandRow.status.in_(OPEN_STATUSES))
    ) or 0
    if open_commands:
        raise Conflict(f"connected system {system_id} has {open_commands} pending or sent commands; "
                       "wait for them or fail them first")
    session.delete(row)


def list_systems(
    session: Session, *, after: str | None, limit: int, kind: str | None = None, status: str | None = None,
    department: str | None = None,
) -> list[ConnectedSystemRow]:
    stmt = sa.select(ConnectedSystemRow).order_by(ConnectedSystemRow.id)
    if after is not None:
        stmt = stmt.where(ConnectedSystemRow.id > after)
    if kind is not None:
        stmt = stmt.where(ConnectedSystemRow.kind == kind)
    if status is not None:
        stmt = stmt.where(ConnectedSystemRow.status == status)
    if department is not None:
        stmt = stmt.where(ConnectedSystemRow.department == department)
    return list(session.scalars(stmt.limit(limit)))


def set_health(session: Session, *, system_id: str, status: str, error: str | None, now: datetime,
               seen: bool, checked: bool = False) -> None:
    values: dict[str, Any] = {"status": status, "last_error": error}
    if seen:
        values["last_seen_at"] = now
    if checked:
        values["last_check_at"] = now
    session.execute(sa.update(ConnectedSystemRow).where(ConnectedSystemRow.id == system_id).values(**values)
                    .execution_options(synchronize_session=False))


def systems_due_for_check(session: Session, *, cutoff: datetime, limit: int) -> list[str]:
    """Systems with a health URL not checked since `cutoff`."""
    return list(session.scalars(
        sa.select(ConnectedSystemRow.id)
        .where(ConnectedSystemRow.health_url.is_not(None),
               sa.or_(ConnectedSystemRow.last_check_at.is_(None), ConnectedSystemRow.last_check_at <= cutoff))
        .order_by(sa.nulls_first(ConnectedSystemRow.last_check_at), ConnectedSystemRow.id).limit(limit)
    ))


def claim_health_check(session: Session, *, system_id: str, now: datetime, cutoff: datetime) -> bool:
    """Stamp the check time first, so that of several checkers exactly one checks the system this round."""
    result = session.execute(
        sa.update(ConnectedSystemRow)
        .where(ConnectedSystemRow.id == system_id,
               sa.or_(ConnectedSystemRow.last_check_at.is_(None), ConnectedSystemRow.last_check_at <= cutoff))
        .values(last_check_at=now).execution_options(synchronize_session=False)
    )
    return result.rowcount == 1


def silent_systems(session: Session, *, seen_before: datetime, limit: int = 500) -> list[ConnectedSystemRow]:
    """Systems believed up (or degraded) that gave no sign of life since `seen_before`."""
    return list(session.scalars(
        sa.select(ConnectedSystemRow)
        .where(ConnectedSystemRow.status.in_(("up", "degraded")), ConnectedSystemRow.last_seen_at <= seen_before)
        .limit(limit)
    ))


def mark_down_if_silent(session: Session, *, system_id: str, seen_before: datetime, reason: str) -> bool:
    result = session.execute(
        sa.update(ConnectedSystemRow)
        .where(ConnectedSystemRow.id == system_id, ConnectedSystemRow.status.in_(("up", "degraded")),
               ConnectedSystemRow.last_seen_at <= seen_before)
        .values(status="down", last_error=reason).execution_options(synchronize_session=False)
    )
    return result.rowcount == 1


# ------------------------------------------------------------------------------------------ commands


def get_command(session: Session, *, command_id: str) -> CommandRow:
    return get_or_404(session, CommandRow, command_id, f"command {command_id}")


def list_commands(
    session: Session, *, cursor_id: str | None, limit: int, newest_first: bool, status: str | None = None,
    target: str | None = None, system_id: str | None = None,
) -> list[CommandRow]:
    """Commands in id order (ids are time-ordered, so this is issue order)."""
    stmt = sa.select(CommandRow)
    if status is not None:
        stmt = stmt.where(CommandRow.status == status)
    if target is not None:
        stmt = stmt.where(CommandRow.target == target)
    if system_id is not None:
        stmt = stmt.where(CommandRow.system_id == system_id)
    if cursor_id is not None:
        stmt = stmt.where(CommandRow.id < cursor_id if newest_first else CommandRow.id > cursor_id)
    order = CommandRow.id.desc() if newest_first else CommandRow.id
    return list(session.scalars(stmt.order_by(order).limit(limit)))


def transition(session: Session, *, command_id: str, expected: str, values: dict[str, Any],
               lease_token: str | None = None) -> bool:
    """Compare-and-set: apply `values` (which include the new status and history) only if the command is
    still in `expected` status (and, for the dispatcher, still leased to it)."""
    stmt = sa.update(CommandRow).where(CommandRow.id == command_id, CommandRow.status == expected)
    if lease_token is not None:
        stmt = stmt.where(CommandRow.lease_owner == lease_token)
    result = session.execute(stmt.values(**values).execution_options(synchronize_session=False))
    return result.rowcount == 1


def claim_commands(session: Session, *, now: datetime, token: str, lease_until: datetime,
                   limit: int) -> list[tuple[CommandRow, str]]:
    """Lease pending commands that are due and whose system has a command endpoint; returns each with
    that endpoint."""
    lease_free = sa.or_(CommandRow.lease_until.is_(None), CommandRow.lease_until <= now)
    pushed = CommandRow.system_id.in_(
        sa.select(ConnectedSystemRow.id).where(ConnectedSystemRow.command_url.is_not(None)))
    due = (sa.select(CommandRow.id)
           .where(CommandRow.status == "pending", CommandRow.next_attempt_at <= now, lease_free, pushed)
           .order_by(CommandRow.next_attempt_at, CommandRow.id).limit(limit)
           .correlate(None))  # the same table as the UPDATE's: select from it, do not correlate to it
    session.execute(
        sa.update(CommandRow)
        .where(CommandRow.id.in_(due.scalar_subquery()), CommandRow.status == "pending", lease_free)
        .values(lease_owner=token, lease_until=lease_until).execution_options(synchronize_session=False)
    )
    rows = session.execute(
        sa.select(CommandRow, ConnectedSystemRow.command_url)
        .join(ConnectedSystemRow, ConnectedSystemRow.id == CommandRow.system_id)
        .where(CommandRow.lease_owner == token, CommandRow.status == "pending")
        .order_by(CommandRow.id)
    ).all()
    return [(row, url) for row, url in rows if url is not None]


def retry_later(session: Session, *, command_id: str, token: str, attempts: int, next_attempt_at: datetime,
                error: str, now: datetime) -> None:
    """A push failed but may succeed later: count the attempt and give the lease back."""
    session.execute(
        sa.update(CommandRow)
        .where(CommandRow.id == command_id, CommandRow.status == "pending", CommandRow.lease_owner == token)
        .values(attempts=attempts, next_attempt_at=next_attempt_at, last_error=error, lease_owner=None,
                lease_until=None, updated_at=now)
        .execution_options(synchronize_session=False)
    )


def overdue_commands(session: Session, *, now: datetime, limit: int) -> list[CommandRow]:
    """Sent commands whose acknowledgement deadline has passed."""
    return list(session.scalars(
        sa.select(CommandRow).where(CommandRow.status == "sent", CommandRow.ack_deadline <= now)
        .order_by(CommandRow.ack_deadline).limit(limit)
    ))
