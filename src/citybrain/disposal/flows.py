"""Case flows: open a case, move it through the transition table with its SLA stages, merge duplicates,
take a reporter's feedback, and fire the SLA timers.

Every change of a case is one transaction: the case row (with an optimistic version check), its
transition record and, for merges, the reports that move. Events go on the bus after the commit.

SLA stages: `respond` runs from dispatch until the handling unit receives the case, `handle` from receipt
until it is handled, `close` from handled until closed. A return keeps the respond clock running (the
time lost on a wrong owner counts against the dispatch); an escalation or a reopening starts it anew for
whoever takes the case next; a suspension pauses it. The running stage's deadline and warning time are
columns of the case, so the timer scan and a restart need nothing else.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from citybrain.core.context import Context, new_id
from citybrain.core.errors import Conflict, FieldError, Forbidden, InvalidInput, NotFound
from citybrain.core.events import Event
from citybrain.disposal import service
from citybrain.disposal.catalogue.spec import DEPARTMENT_SLUGS, LEVELS, EventTypeSpec
from citybrain.disposal.events import CaseSlaBreached, CaseSlaWarning, CaseTransitioned
from citybrain.disposal.lifecycle import Action, Status, allowed_actions, target
from citybrain.disposal.models import CaseReportRow, CaseRow
from citybrain.disposal.schemas import Attachment, CaseCreate, Feedback, TransitionRequest
from citybrain.disposal.service import CaseState
from citybrain.governance import access

if TYPE_CHECKING:
    from citybrain.disposal.runtime import Disposal
    from citybrain.platform import Platform

log = logging.getLogger(__name__)
Record = dict[str, Any]  # a case_transitions row to insert
SLA_ACTOR = "system:sla"
H3_RESOLUTION = 9  # ~0.1 km² cells: a block, the scale at which the same problem recurs


@dataclass(slots=True)
class Outcome:
    """What a flow did: the case after it, and the events to publish once committed."""

    case: dict[str, Any]
    events: list[Event] = field(default_factory=list)
    created: bool = False
    report_id: int | None = None  # the report a flow recorded (opening a case, adding a report)


# ---------------------------------------------------------------------------------------------- opening

def open_case(platform: Platform, disposal: Disposal, request: CaseCreate, *, ctx: Context,
              report_text: str | None = None, classified_as: str | None = None,
              confidence: float | None = None, report_data: dict[str, Any] | None = None) -> Outcome:
    """Open a case (reported), record its first report, and — when `request.dispatch` — triage it by the
    catalogue and routing rules and dispatch it, all in one transaction."""
    spec = disposal.event_type(request.eventType, field="eventType")
    org_unit = _check_org_unit(platform, request.orgUnit)
    if ctx.org_scope is not None and not access.within_scope(platform, ctx, org_unit):
        raise Forbidden(f"orgUnit: a case you open lies in your area ({', '.join(ctx.org_scope)})",
                        errors=[FieldError("orgUnit", "outside your org scope" if org_unit else "required")])
    now = platform.clock.now()
    lon, lat = request.location.coordinates if request.location is not None else (None, None)
    with platform.transaction() as session:
        row = service.CaseState({
            "id": new_id(), "number": service.next_number(session, now=now), "event_type": spec.code,
            "category": spec.category, "title": (request.title or spec.name.zh)[:200],
            "description": request.description, "status": Status.REPORTED.value, "suspended_from": None,
            "priority": spec.priority, "level": spec.level, "org_unit": org_unit, "handling_unit": None,
            "lead_department": spec.department, "assisting": list(spec.assisting), "channel": request.channel,
            "source_ref": request.sourceRef, "lon": lon, "lat": lat, "cell": cell_of(lon, lat),
            "address": request.address, "escalations": 0, "returns": 0, "reopens": 0, "reports": 1, "breaches": 0,
            "created_at": now, "updated_at": now, "version": 1}, new=True)
        reporter = request.reporter
        report_id = service.insert_report(session, {
            "case_id": row.id, "channel": request.channel, "external_id": request.externalId,
            "text": report_text if report_text is not None else request.description,
            "contact_name": reporter.name if reporter else None, "contact_phone": reporter.phone if reporter else None,
            "contact_email": reporter.email if reporter else None, "address": request.address, "lon": lon,
            "lat": lat, "org_unit": org_unit, "reported_at": request.occurredAt or now,
            "classified_as": classified_as, "confidence": confidence, "data": report_data or {}})
        transitions = [_record(row, None, "report", ctx, now, reason=None,
                               attachments=request.attachments, data={"channel": request.channel})]
        if request.dispatch:
            transitions += _triage_and_dispatch(platform, disposal, session, row, spec, ctx, now)
        service.insert_case(session, row)
        service.insert_transitions(session, transitions)
        view = service.case_view(row)
    events = [_transitioned(row.id, row.number, t, view, ctx) for t in transitions]
    return Outcome(view, events, created=True, report_id=report_id)


def _triage_and_dispatch(platform: Platform, disposal: Disposal, session: Session, row: CaseState,
                         spec: EventTypeSpec, ctx: Context, now: datetime) -> list[Record]:
    route = disposal.router.route(spec, org_unit=row.org_unit, channel=row.channel)
    _apply_route(row, route.level, route.handling_unit, route.department, list(route.assisting))
    records = [_move(row, Action.TRIAGE, ctx, now, data={"rules": list(route.rules),
                                                        "routingVersion": disposal.router.version})]
    records.append(_dispatch(disposal, row, spec, ctx, now, data={}))
    return records


# ---------------------------------------------------------------------------------------------- transitions

def transition(platform: Platform, disposal: Disposal, case_ref: str, request: TransitionRequest, *,
               ctx: Context) -> Outcome:
    """Apply one action to a case; Conflict (409) naming the allowed actions when the table forbids it."""
    now = platform.clock.now()
    with platform.transaction() as session:
        row = service.load_case(session, case_ref=case_ref)
        access.require_in_scope(platform, ctx, row.org_unit, row.handling_unit, what="case")
        if request.expectedVersion is not None and request.expectedVersion != row.version:
            raise Conflict(f"case {row.number} is at version {row.version}, not {request.expectedVersion}")
        records, extra_events = _act(platform, disposal, session, row, request, ctx, now)
        service.save_case(session, row)
        service.insert_transitions(session, records)
        view = service.case_view(row)
    events = [_transitioned(row.id, row.number, t, view, ctx) for t in records]
    return Outcome(view, events + extra_events)


def _act(platform: Platform, disposal: Disposal, session: Session, row: CaseState, request: TransitionRequest,
         ctx: Context, now: datetime) -> tuple[list[Record], list[Event]]:
    action = request.action
    status = Status(row.status)
    # Checked before anything else, so an illegal action is a 409 whatever else the request says.
    target(action, status, suspended_from=Status(row.suspended_from) if row.suspended_from else None)
    spec = disposal.event_type(row.event_type, field="eventType")
    reason, attachments = request.reason, request.attachments
    if action in (Action.RETURN, Action.SUSPEND, Action.REJECT, Action.DISMISS, Action.REOPEN) and not reason:
        raise InvalidInput.at("reason", f"{action.value} needs a reason")
    if action == Action.TRIAGE:
        if request.eventType and request.eventType != row.event_type:
            spec = disposal.event_type(request.eventType, field="eventType")
            row.event_type, row.category, row.priority = spec.code, spec.category, spec.priority
        route = disposal.router.route(spec, org_unit=row.org_unit, channel=row.channel, level=request.level)
        _apply_route(row, route.level, request.handlingUnit or route.handling_unit,
                     request.department or route.department,
                     request.assisting if request.assisting is not None else list(route.assisting))
        _check_route(platform, row)
        return [_move(row, action, ctx, now, reason=reason, attachments=attachments,
                      data={"rules": list(route.rules), "routingVersion": disposal.router.version})], []
    if action == Action.DISPATCH:
        if request.handlingUnit or request.department or request.assisting is not None or request.level:
            level = request.level or row.level
            unit = request.handlingUnit or (disposal.router.unit_at(row.org_unit, level) if request.level
                                            else row.handling_unit)
            _apply_route(row, level, unit, request.department or row.lead_department,
                         request.assisting if request.assisting is not None else list(row.assisting or []))
            _check_route(platform, row)
        return [_dispatch(disposal, row, spec, ctx, now, reason=reason, attachments=attachments, data={})], []
    if action == Action.RECEIVE:
        on_time = _end_stage(row, now)
        if row.responded_on_time is None:  # the first response is the one the reporter waited for
            row.responded_on_time = on_time
        row.received_at = row.received_at or now
        record = _move(row, action, ctx, now, reason=reason, attachments=attachments)
        _start_stage(disposal, row, spec, "handle", now)
        return [record], []
    if action == Action.HANDLE:
        missing = [kind for kind in spec.evidence if kind not in {a.kind for a in attachments}]
        if missing:
            raise InvalidInput.at("attachments", f"handling a {spec.code} case needs evidence: {', '.join(missing)}")
        row.handled_on_time = _end_stage(row, now)
        row.handled_at = now
        record = _move(row, action, ctx, now, reason=reason, attachments=attachments)
        _start_stage(disposal, row, spec, "close", now)
        return [record], []
    if action == Action.REJECT:  # rework: a new handle stage
        row.handled_at = None
        record = _move(row, action, ctx, now, reason=reason, attachments=attachments)
        _start_stage(disposal, row, spec, "handle", now)
        return [record], []
    if action == Action.CLOSE:
        row.closed_on_time = _end_stage(row, now)
        row.closed_at, row.resolution = now, "resolved"
        _clear_stage(row)
        return [_move(row, action, ctx, now, reason=reason, attachments=attachments)], []
    if action == Action.RETURN:
        row.returns += 1
        record = _move(row, action, ctx, now, reason=reason, attachments=attachments,
                       data={"from": row.handling_unit})
        if row.stage != "respond":  # returned after receipt: the dispatch clock starts again
            _start_stage(disposal, row, spec, "respond", now)
        return [record], []
    if action == Action.ESCALATE:
        return [_escalate(disposal, row, spec, ctx, now, reason=reason, attachments=attachments)], []
    if action == Action.SUSPEND:
        row.suspended_from, row.suspended_at = row.status, now
        row.due_at = row.warn_at = None  # paused: the timer scan leaves it alone
        return [_move(row, action, ctx, now, reason=reason, attachments=attachments)], []
    if action == Action.RESUME:
        resumed = Status(row.suspended_from)  # type: ignore[arg-type]
        _resume_stage(disposal, row, spec, now)
        record = _move(row, action, ctx, now, reason=reason, attachments=attachments, to=resumed)
        row.suspended_from = None
        return [record], []
    if action == Action.MERGE:
        return _merge(session, row, request, ctx, now)
    if action == Action.DISMISS:
        row.closed_at, row.resolution = now, "dismissed"
        _clear_stage(row)
        return [_move(row, action, ctx, now, reason=reason, attachments=attachments)], []
    if action == Action.REOPEN:
        row.reopens += 1
        row.closed_at = row.resolution = None
        row.closed_on_time = None
        record = _move(row, action, ctx, now, reason=reason, attachments=attachments)
        _start_stage(disposal, row, spec, "respond", now)
        return [record], []
    # START, VERIFY: a step with no clock of its own
    return [_move(row, action, ctx, now, reason=reason, attachments=attachments)], []


def _dispatch(disposal: Disposal, row: CaseState, spec: EventTypeSpec, ctx: Context, now: datetime, *,
              reason: str | None = None, attachments: list[Attachment] | None = None,
              data: dict[str, Any]) -> Record:
    row.dispatched_at = row.dispatched_at or now
    record = _move(row, Action.DISPATCH, ctx, now, reason=reason, attachments=attachments or [],
                   data={**data, "handlingUnit": row.handling_unit, "department": row.lead_department,
                         "assisting": list(row.assisting or []), "level": row.level})
    if row.stage != "respond":  # from triage; after a return, escalation or reopening it runs already
        _start_stage(disposal, row, spec, "respond", now)
    return record


def _escalate(disposal: Disposal, row: CaseState, spec: EventTypeSpec, ctx: Context, now: datetime, *,
              reason: str | None, attachments: list[Attachment] | None = None) -> Record:
    above = disposal.router.level_above(row.level)
    if above is None:
        raise Conflict(f"case {row.number} is already handled at the top level ({row.level})")
    previous = row.handling_unit
    row.level = above
    row.handling_unit = disposal.router.unit_at(row.org_unit, above)
    row.escalations += 1
    record = _move(row, Action.ESCALATE, ctx, now, reason=reason, attachments=attachments or [],
                   data={"from": previous, "to": row.handling_unit, "level": above})
    _start_stage(disposal, row, spec, "respond", now)
    return record


def _merge(session: Session, row: CaseState, request: TransitionRequest, ctx: Context,
           now: datetime) -> tuple[list[Record], list[Event]]:
    if not request.into:
        raise InvalidInput.at("into", "merge needs the id or number of the case to join")
    try:
        into = service.load_case(session, case_ref=request.into)
    except NotFound:
        raise InvalidInput.at("into", f"case {request.into} does not exist") from None
    if into.id == row.id:
        raise InvalidInput.at("into", "a case cannot be merged into itself")
    if into.status in (Status.CLOSED.value, Status.MERGED.value):
        raise Conflict(f"case {into.number} is {into.status}: merge into an open case")
    moved = session.execute(sa.update(CaseReportRow).where(CaseReportRow.case_id == row.id)
                            .values(case_id=into.id)).rowcount
    into.reports += moved
    into.updated_at, into.version = now, into.version + 1
    row.merged_into, row.resolution = into.id, "merged"
    _clear_stage(row)
    record = _move(row, Action.MERGE, ctx, now, reason=request.reason, attachments=request.attachments,
                   data={"into": into.id, "intoNumber": into.number, "reports": moved})
    note = _note(into, ctx, now, f"case {row.number} merged in ({moved} report(s))",
                 data={"merged": row.id, "mergedNumber": row.number, "reports": moved})
    service.save_case(session, into)
    into_view = service.case_view(into)
    return [record, note], [_transitioned(into.id, into.number, note, into_view, ctx)]


# ---------------------------------------------------------------------------------------------- reports

def add_report(platform: Platform, case_ref: str, *, channel: str, text: str, reporter: Any, ctx: Context,
               external_id: str | None = None, address: str | None = None, lon: float | None = None,
               lat: float | None = None, org_unit: str | None = None, reported_at: datetime | None = None,
               classified_as: str | None = None, confidence: float | None = None,
               data: dict[str, Any] | None = None) -> tuple[Outcome, int]:
    """Attach another report of the same problem to an open case (a duplicate, or a sensing alert that
    fired again); returns the outcome and the report id."""
    now = platform.clock.now()
    with platform.transaction() as session:
        row = service.load_case(session, case_ref=case_ref)
        if row.status == Status.MERGED.value and row.merged_into:
            row = service.load_case(session, case_ref=row.merged_into)
        if row.status == Status.CLOSED.value:
            raise Conflict(f"case {row.number} is closed: a new report of its problem opens a new case")
        report_id = service.insert_report(session, {
            "case_id": row.id, "channel": channel, "external_id": external_id, "text": text,
            "contact_name": getattr(reporter, "name", None), "contact_phone": getattr(reporter, "phone", None),
            "contact_email": getattr(reporter, "email", None), "address": address, "lon": lon, "lat": lat,
            "org_unit": org_unit, "reported_at": reported_at or now, "classified_as": classified_as,
            "confidence": confidence, "data": data or {}})
        row.reports += 1
        row.updated_at, row.version = now, row.version + 1
        note = _note(row, ctx, now, f"another report by {channel}", data={"channel": channel})
        service.save_case(session, row)
        service.insert_transitions(session, [note])
        view = service.case_view(row)
    return Outcome(view, [_transitioned(row.id, row.number, note, view, ctx)], report_id=report_id), report_id


def record_feedback(platform: Platform, disposal: Disposal, report_id: int, feedback: Feedback, *,
                    ctx: Context) -> Outcome:
    """A reporter's verdict after closure (回访). An unresolved or unsatisfied verdict on a closed case
    reopens it (the loop is not closed until the citizen says so)."""
    now = platform.clock.now()
    with platform.transaction() as session:
        report = session.get(CaseReportRow, report_id, with_for_update=True)
        if report is None:
            raise NotFound(f"report {report_id} does not exist")
        row = service.load_case(session, case_ref=report.case_id)
        access.require_in_scope(platform, ctx, row.org_unit, row.handling_unit, what="report")
        if row.status != Status.CLOSED.value:
            raise Conflict(f"case {row.number} is {row.status}: feedback is taken once it is closed")
        report.resolved, report.satisfied = feedback.resolved, feedback.satisfied
        report.feedback, report.feedback_at = feedback.comment, now
        records = [_note(row, ctx, now, "feedback: " + ("resolved" if feedback.resolved else "not resolved") +
                         ", " + ("satisfied" if feedback.satisfied else "not satisfied"),
                         data={"report": report_id, "resolved": feedback.resolved,
                               "satisfied": feedback.satisfied})]
        if not (feedback.resolved and feedback.satisfied):
            spec = disposal.event_type(row.event_type, field="eventType")
            row.reopens += 1
            row.closed_at = row.resolution = row.closed_on_time = None
            records.append(_move(row, Action.REOPEN, ctx, now, reason=feedback.comment or "reporter not satisfied"))
            _start_stage(disposal, row, spec, "respond", now)
        row.updated_at = now
        service.save_case(session, row)
        service.insert_transitions(session, records)
        view = service.case_view(row)
    return Outcome(view, [_transitioned(row.id, row.number, r, view, ctx) for r in records])


# ---------------------------------------------------------------------------------------------- SLA timers

def due_warnings(session: Session, *, now: datetime, limit: int) -> list[tuple[str, int]]:
    statement = (sa.select(CaseRow.id, CaseRow.version).where(CaseRow.warn_at <= now)
                 .order_by(CaseRow.warn_at).limit(limit))
    return [(r.id, r.version) for r in session.execute(statement)]


def due_breaches(session: Session, *, now: datetime, limit: int) -> list[tuple[str, int]]:
    statement = (sa.select(CaseRow.id, CaseRow.version).where(CaseRow.due_at <= now)
                 .order_by(CaseRow.due_at).limit(limit))
    return [(r.id, r.version) for r in session.execute(statement)]


def fire_timer(platform: Platform, disposal: Disposal, case_id: str, version: int) -> list[Event]:
    """Fire what is due on one case: a warning, or a breach (escalated one level up when there is one).
    A case changed since it was found due (another process fired it, or someone acted on it) is left
    alone: its version no longer matches, so a timer never fires twice."""
    now = platform.clock.now()
    ctx = Context(actor=SLA_ACTOR)
    with platform.transaction() as session:
        try:
            row = service.load_case(session, case_ref=case_id)
        except NotFound:
            return []
        if row.version != version:
            return []
        stage = row.stage or ""
        due = row.stage_due_at
        events: list[Event] = []
        records: list[Record] = []
        if row.due_at is not None and row.due_at <= now:
            row.breached_at, row.breaches = now, row.breaches + 1
            row.due_at = row.warn_at = None
            row.version += 1
            if stage == "respond":
                row.responded_on_time = False
            elif stage == "handle":
                row.handled_on_time = False
            elif stage == "close":
                row.closed_on_time = False
            records.append(_note(row, ctx, now, f"SLA breached: {stage} was due {due.isoformat() if due else '?'}",
                                 data={"stage": stage, "breach": True}))
            spec = disposal.event_type(row.event_type, field="eventType")
            above = disposal.router.level_above(row.level)
            escalable = Action.ESCALATE in allowed_actions(Status(row.status))
            if above is not None and escalable:
                records.append(_escalate(disposal, row, spec, ctx, now,
                                         reason=f"SLA breach: the {stage} stage passed its deadline"))
            breached = True
        elif row.warn_at is not None and row.warn_at <= now:
            row.warned_at, row.warn_at = now, None
            row.version += 1
            records.append(_note(row, ctx, now, f"SLA warning: {stage} is due {due.isoformat() if due else '?'}",
                                 data={"stage": stage, "warning": True}))
            breached = False
        else:
            return []
        row.updated_at = now
        service.save_case(session, row)
        service.insert_transitions(session, records)
        view = service.case_view(row)
    kind = CaseSlaBreached if breached else CaseSlaWarning
    events.append(kind(context=ctx, case_id=row.id, number=row.number, stage=stage,
                       due_at=due.isoformat() if due else "", case=view))
    events += [_transitioned(row.id, row.number, r, view, ctx) for r in records if r["action"] != "note"]
    return events


# ---------------------------------------------------------------------------------------------- helpers

def _start_stage(disposal: Disposal, row: CaseState, spec: EventTypeSpec, stage: str, now: datetime) -> None:
    duration = getattr(spec.sla, stage)
    calendar = disposal.calendar
    row.stage, row.stage_started_at = stage, now
    row.stage_due_at = row.due_at = calendar.deadline(now, duration)
    row.warn_at = calendar.deadline(now, duration, share=spec.sla.warn_at)
    row.warned_at = row.breached_at = None


def _resume_stage(disposal: Disposal, row: CaseState, spec: EventTypeSpec, now: datetime) -> None:
    if row.stage is None or row.stage_due_at is None or row.suspended_at is None:
        return
    duration = getattr(spec.sla, row.stage)
    due = disposal.calendar.shift(row.stage_due_at, row.suspended_at, now, duration)
    started = disposal.calendar.shift(row.stage_started_at or row.suspended_at, row.suspended_at, now, duration)
    row.stage_due_at, row.stage_started_at = due, started
    if row.breached_at is None:
        row.due_at = due
        if row.warned_at is None:
            row.warn_at = due - (due - started) * (1 - spec.sla.warn_at)
    row.suspended_at = None


def _end_stage(row: CaseState, now: datetime) -> bool | None:
    """Whether the running stage ended in time (None when no stage ran)."""
    on_time = None if row.stage_due_at is None else (row.breached_at is None and now <= row.stage_due_at)
    _clear_stage(row)
    return on_time


def _clear_stage(row: CaseState) -> None:
    row.stage = row.stage_started_at = row.due_at = row.warn_at = None
    row.stage_due_at = None


def _apply_route(row: CaseState, level: str, unit: str | None, department: str, assisting: list[str]) -> None:
    row.level, row.handling_unit, row.lead_department = level, unit, department
    row.assisting = [slug for slug in assisting if slug != department]


def _check_route(platform: Platform, row: CaseState) -> None:
    if row.level not in LEVELS:
        raise InvalidInput.at("level", f"one of {', '.join(LEVELS)}")
    if row.handling_unit is not None and row.handling_unit not in platform.org_tree:
        raise InvalidInput.at("handlingUnit", f"unknown org unit {row.handling_unit!r}")
    for where, slug in [("department", row.lead_department), *(("assisting", s) for s in row.assisting or [])]:
        if slug not in DEPARTMENT_SLUGS:
            raise InvalidInput.at(where, f"unknown department {slug!r}")


def _check_org_unit(platform: Platform, code: str | None) -> str | None:
    if code is not None and code not in platform.org_tree:
        raise InvalidInput.at("orgUnit", f"unknown org unit {code!r}")
    return code


def cell_of(lon: float | None, lat: float | None) -> str | None:
    if lon is None or lat is None:
        return None
    import h3

    return h3.latlng_to_cell(lat, lon, H3_RESOLUTION)


def _move(row: CaseState, action: Action, ctx: Context, now: datetime, *, reason: str | None = None,
          attachments: list[Attachment] | None = None, data: dict[str, Any] | None = None,
          to: Status | None = None) -> Record:
    """Move the case by the table and record the step (the row's version goes up: stale timers skip it)."""
    before = Status(row.status)
    after = to or target(action, before, suspended_from=Status(row.suspended_from) if row.suspended_from else None)
    row.status = after.value
    row.updated_at, row.version = now, row.version + 1
    return _record(row, before, action, ctx, now, reason=reason, attachments=attachments or [], data=data or {})


def _note(row: CaseState, ctx: Context, now: datetime, reason: str, *, data: dict[str, Any]) -> Record:
    """A record on the case that changes no status (a warning, another report, a merged duplicate)."""
    return {"case_id": row.id, "at": now, "action": "note", "from_status": row.status, "to_status": row.status,
            "actor": ctx.actor, "reason": reason, "data": data, "attachments": [], "context_id": ctx.id}


def _record(row: CaseState, before: Status | None, action: Action | str, ctx: Context, now: datetime, *,
            reason: str | None, attachments: list[Attachment], data: dict[str, Any]) -> Record:
    return {"case_id": row.id, "at": now, "action": str(action), "from_status": before.value if before else None,
            "to_status": row.status, "actor": ctx.actor, "reason": reason, "data": data,
            "attachments": [a.model_dump(exclude_none=True) for a in attachments], "context_id": ctx.id}


def _transitioned(case_id: str, number: str, record: Record, view: dict[str, Any],
                  ctx: Context) -> CaseTransitioned:
    return CaseTransitioned(context=ctx.child(), case_id=case_id, number=number, action=record["action"],
                            from_status=record["from_status"], to_status=record["to_status"], case=view)

