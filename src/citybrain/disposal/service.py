"""Data access for cases: numbers, reads, listings, transitions and reports, and the views the API and the
bus show. Keyword-only functions over a session; the flows decide what changes."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from citybrain.core.errors import InvalidInput, NotFound
from citybrain.disposal.lifecycle import Status, allowed_actions
from citybrain.disposal.models import CaseCounterRow, CaseReportRow, CaseRow, CaseTransitionRow

NUMBER_ZONE = ZoneInfo("Asia/Shanghai")  # case numbers carry the local day, as 12345 tickets do
Masker = Callable[[str], str]


def next_number(session: Session, *, now: datetime) -> str:
    """The next case number of the local day, e.g. 20261203-000042 (atomic across processes)."""
    day = now.astimezone(NUMBER_ZONE).strftime("%Y%m%d")
    value = session.execute(_next_number_statement(session.get_bind().dialect.name), {"day": day}).scalar_one()
    return f"{day}-{value:06d}"


@functools.cache
def _next_number_statement(dialect: str) -> sa.Executable:
    table = CaseCounterRow.__table__
    insert = sqlite_insert if dialect == "sqlite" else postgresql_insert
    return (insert(table).values(day=sa.bindparam("day"), next=1)
            .on_conflict_do_update(index_elements=["day"], set_={"next": table.c.next + 1})
            .returning(table.c.next))


def _is_number(case_ref: str) -> bool:
    """A case number (20261203-000042) rather than an id (a UUID)."""
    return len(case_ref) == 15 and "-" in case_ref


def get_case(session: Session, *, case_ref: str) -> CaseRow:
    """A case by id or by number, to read; NotFound naming it otherwise."""
    column = CaseRow.number if _is_number(case_ref) else CaseRow.id
    row = session.scalars(sa.select(CaseRow).where(column == case_ref)).one_or_none()
    if row is None:
        raise NotFound(f"case {case_ref} does not exist")
    return row


def list_cases(
    session: Session,
    *,
    status: Sequence[str] = (),
    event_type: str | None = None,
    department: str | None = None,
    handling_units: Sequence[str] | None = None,
    org_units: Sequence[str] | None = None,
    channel: str | None = None,
    breached: bool | None = None,
    created_from: datetime | None = None,
    created_to: datetime | None = None,
    before_id: str | None = None,
    limit: int = 100,
) -> list[CaseRow]:
    """Cases newest first (ids are time-ordered), keyset-paged by id."""
    statement = sa.select(CaseRow)
    if status:
        statement = statement.where(CaseRow.status.in_(list(status)))
    if event_type:
        statement = statement.where(CaseRow.event_type == event_type)
    if department:
        statement = statement.where(CaseRow.lead_department == department)
    if handling_units is not None:
        statement = statement.where(CaseRow.handling_unit.in_(list(handling_units)))
    if org_units is not None:
        statement = statement.where(CaseRow.org_unit.in_(list(org_units)))
    if channel:
        statement = statement.where(CaseRow.channel == channel)
    if breached is not None:
        statement = statement.where(CaseRow.breaches > 0 if breached else CaseRow.breaches == 0)
    if created_from is not None:
        statement = statement.where(CaseRow.created_at >= created_from)
    if created_to is not None:
        statement = statement.where(CaseRow.created_at < created_to)
    if before_id is not None:
        statement = statement.where(CaseRow.id < before_id)
    return list(session.scalars(statement.order_by(CaseRow.id.desc()).limit(limit)))


def transitions(session: Session, *, case_id: str) -> list[CaseTransitionRow]:
    statement = sa.select(CaseTransitionRow).where(CaseTransitionRow.case_id == case_id)
    return list(session.scalars(statement.order_by(CaseTransitionRow.id)))


def reports(session: Session, *, case_id: str) -> list[CaseReportRow]:
    statement = sa.select(CaseReportRow).where(CaseReportRow.case_id == case_id)
    return list(session.scalars(statement.order_by(CaseReportRow.id)))


def find_open_by_source(session: Session, *, source_ref: str, event_type: str) -> CaseRow | None:
    """The open case already raised from the same source (an alert's device or area) for the same type."""
    statement = (sa.select(CaseRow)
                 .where(CaseRow.source_ref == source_ref, CaseRow.event_type == event_type,
                        CaseRow.status.not_in([Status.CLOSED.value, Status.MERGED.value]))
                 .order_by(CaseRow.id.desc()).limit(1))
    return session.scalars(statement).first()


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None


def case_view(row: CaseRow, *, mask: Masker | None = None) -> dict[str, Any]:
    """The API's view of a case (CaseRead); `mask` hides personal data in free text for the reader."""
    location = ({"type": "Point", "coordinates": [row.lon, row.lat]}
                if row.lon is not None and row.lat is not None else None)
    description = mask(row.description) if mask is not None else row.description
    return {
        "id": row.id, "number": row.number, "eventType": row.event_type, "category": row.category,
        "title": mask(row.title) if mask is not None else row.title, "description": description,
        "status": row.status, "allowedActions": [a.value for a in allowed_actions(Status(row.status))],
        "priority": row.priority, "level": row.level, "orgUnit": row.org_unit,
        "handlingUnit": row.handling_unit, "leadDepartment": row.lead_department,
        "assisting": list(row.assisting or []), "channel": row.channel, "sourceRef": row.source_ref,
        "location": location, "address": mask(row.address) if mask is not None and row.address else row.address,
        "stage": row.stage, "dueAt": _iso(row.stage_due_at if row.stage else None),
        "warnedAt": _iso(row.warned_at), "breachedAt": _iso(row.breached_at),
        "onTime": {"respond": row.responded_on_time, "handle": row.handled_on_time, "close": row.closed_on_time},
        "escalations": row.escalations, "returns": row.returns, "reopens": row.reopens, "reports": row.reports,
        "mergedInto": row.merged_into, "resolution": row.resolution,
        "createdAt": _iso(row.created_at), "updatedAt": _iso(row.updated_at),
        "dispatchedAt": _iso(row.dispatched_at), "receivedAt": _iso(row.received_at),
        "handledAt": _iso(row.handled_at), "closedAt": _iso(row.closed_at), "version": row.version,
    }


def transition_view(row: CaseTransitionRow, *, mask: Masker | None = None) -> dict[str, Any]:
    reason = mask(row.reason) if mask is not None and row.reason else row.reason
    return {"id": row.id, "at": _iso(row.at), "action": row.action, "fromStatus": row.from_status,
            "toStatus": row.to_status, "actor": row.actor, "reason": reason, "data": row.data or {},
            "attachments": row.attachments or []}


def report_view(row: CaseReportRow, *, mask_contact: Callable[[dict[str, str | None]], dict[str, str | None]]
                | None = None, mask: Masker | None = None) -> dict[str, Any]:
    contact = {"name": row.contact_name, "phone": row.contact_phone, "email": row.contact_email}
    return {
        "id": row.id, "channel": row.channel, "externalId": row.external_id,
        "text": mask(row.text) if mask is not None else row.text,
        "contact": mask_contact(contact) if mask_contact is not None else contact,
        "address": mask(row.address) if mask is not None and row.address else row.address,
        "orgUnit": row.org_unit, "reportedAt": _iso(row.reported_at), "classifiedAs": row.classified_as,
        "confidence": row.confidence, "resolved": row.resolved, "satisfied": row.satisfied,
        "feedbackAt": _iso(row.feedback_at),
    }


def check_page_cursor(cursor: str | None) -> str | None:
    if cursor is None:
        return None
    if len(cursor) != 36 or cursor.count("-") != 4:
        raise InvalidInput.at("cursor", "not a cursor this API returned")
    return cursor


def routing_rules(session: Session) -> tuple[int, dict[str, Any]]:
    """The routing rules in force: (version, rules as stored); version 0 and no rules before the first."""
    from citybrain.disposal.models import RoutingRulesRow

    row = session.scalars(sa.select(RoutingRulesRow).order_by(RoutingRulesRow.version.desc()).limit(1)).first()
    return (row.version, row.rules) if row is not None else (0, {"rules": []})


def store_routing_rules(session: Session, *, rules: dict[str, Any], actor: str, now: datetime) -> int:
    """Keep a new version of the routing rules; returns its number."""
    from citybrain.disposal.models import RoutingRulesRow

    version, _ = routing_rules(session)
    session.add(RoutingRulesRow(version=version + 1, rules=rules, created_at=now, actor=actor))
    return version + 1


def inbox(session: Session, *, handling_unit: str, department: str | None, statuses: Sequence[str],
          limit: int) -> list[CaseRow]:
    """What a unit must act on, soonest due first (cases with no running clock last)."""
    statement = sa.select(CaseRow).where(CaseRow.handling_unit == handling_unit, CaseRow.status.in_(list(statuses)))
    if department:
        statement = statement.where(CaseRow.lead_department == department)
    order = (CaseRow.stage_due_at.is_(None), CaseRow.stage_due_at, CaseRow.id)
    return list(session.scalars(statement.order_by(*order).limit(limit)))


def inbox_view(row: CaseRow, *, mask: Masker | None = None) -> dict[str, Any]:
    """A compact view for a handler's phone."""
    return {"id": row.id, "number": row.number, "title": mask(row.title) if mask else row.title,
            "eventType": row.event_type, "status": row.status, "priority": row.priority,
            "actions": [a.value for a in allowed_actions(Status(row.status))], "stage": row.stage,
            "dueAt": _iso(row.stage_due_at if row.stage else None), "breached": row.breached_at is not None,
            "orgUnit": row.org_unit, "address": mask(row.address) if mask and row.address else row.address,
            "location": [row.lon, row.lat] if row.lon is not None else None}


# -------------------------------------------------------------------------------------------- the write path
# Flows change a case as a plain object and write only what changed with one Core UPDATE: through ORM
# instances a transition cost about three times as much Python, and the single SQLite writer waits for it.
# The statements are built once and given their values as parameters: SQLAlchemy memoises a statement
# object's cache key, while a statement built anew with its values inlined paid ~100 µs to key each time.

_CASE_COLUMNS = tuple(c.name for c in CaseRow.__table__.columns)


class CaseState:
    """A case row the flows change in place; `changes()` is what differs from what was read."""

    def __init__(self, values: dict[str, Any], *, new: bool = False) -> None:
        if new:  # every column, unset ones empty
            values = {**dict.fromkeys(_CASE_COLUMNS), **values}
        self.__dict__.update(values)
        self._read = {} if new else dict(values)

    def changes(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in _CASE_COLUMNS
                if name in self.__dict__ and self._read.get(name, _UNSET) != getattr(self, name)}

    def values(self) -> dict[str, Any]:
        return {name: getattr(self, name, None) for name in _CASE_COLUMNS}


_UNSET = object()


def load_case(session: Session, *, case_ref: str, lock: bool = True) -> CaseState:
    """A case by id or number, to change; NotFound naming it otherwise. `lock` takes PostgreSQL's row lock
    (SQLite's write transaction is the lock there)."""
    statement = _load_statement(_is_number(case_ref), lock and session.get_bind().dialect.name == "postgresql")
    row = session.execute(statement, {"ref": case_ref}).mappings().first()
    if row is None:
        raise NotFound(f"case {case_ref} does not exist")
    return CaseState(dict(row))


@functools.cache
def _load_statement(by_number: bool, lock: bool) -> sa.Executable:
    table = CaseRow.__table__
    statement = sa.select(table).where((table.c.number if by_number else table.c.id) == sa.bindparam("ref"))
    return statement.with_for_update() if lock else statement


_INSERT_CASE = CaseRow.__table__.insert()
_INSERT_REPORT = CaseReportRow.__table__.insert().returning(CaseReportRow.__table__.c.id)
_INSERT_TRANSITIONS = CaseTransitionRow.__table__.insert()


def insert_case(session: Session, state: CaseState) -> None:
    session.execute(_INSERT_CASE, state.values())
    state._read = state.values()


def save_case(session: Session, state: CaseState) -> None:
    changed = state.changes()
    if changed:
        session.execute(_update_statement(frozenset(changed)), {**changed, "case_id_": state.id})
        state._read.update(changed)


@functools.cache
def _update_statement(columns: frozenset[str]) -> sa.Executable:
    """The UPDATE of one set of changed columns (a flow changes one of a few dozen sets)."""
    table = CaseRow.__table__
    return (sa.update(table).where(table.c.id == sa.bindparam("case_id_"))
            .values({name: sa.bindparam(name) for name in sorted(columns)}))


def insert_report(session: Session, values: dict[str, Any]) -> int:
    return int(session.execute(_INSERT_REPORT, values).scalar_one())


def insert_transitions(session: Session, records: list[dict[str, Any]]) -> None:
    if records:
        # One record as a plain execute: a list takes psycopg's executemany (pipeline) path, dearer for one row.
        session.execute(_INSERT_TRANSITIONS, records[0] if len(records) == 1 else records)
