"""The big closed loop (大闭环): how well departments and places dispose of cases, where problems keep
coming back, and the supervision tasks that follow.

Rates are computed in the store (one grouped query), so a district's year of cases is one scan:

* response rate (响应率): reports whose case was received by its handler within the respond deadline,
  of the reports whose case reached receipt or breached it;
* resolution rate (解决率) and satisfaction rate (满意率): of the reports whose reporter gave a verdict
  after closure, those who said resolved, and those who said satisfied;
* on-time rates per stage (respond, handle, close): cases that finished the stage by its deadline, of the
  cases that finished it or breached it;
* closed share, mean hours from report to closure, escalations, returns, reopenings and breaches.

A hotspot is an H3 cell (or, for cases without a position, a village) where one event type recurred at
least `min_cases` times in the window; a recurring problem of that size opens a supervision task for the
event type's lead department, once (an open task with the same key is not opened again).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

import sqlalchemy as sa
from sqlalchemy.orm import Session

from citybrain.core.context import Context, new_id
from citybrain.core.errors import Conflict, InvalidInput, NotFound
from citybrain.disposal.catalogue.spec import Duration
from citybrain.disposal.events import SupervisionTaskOpened
from citybrain.disposal.models import CaseReportRow, CaseRow, SupervisionTaskRow

if TYPE_CHECKING:
    from citybrain.disposal.runtime import Disposal
    from citybrain.platform import Platform

GroupBy = Literal["department", "org_unit", "town", "event_type", "category", "channel", "handling_unit", "all"]
SUPERVISION_DEADLINE = Duration.parse("10wd")  # a department answers a supervision task in two weeks
GROUPS: tuple[str, ...] = ("department", "org_unit", "town", "event_type", "category", "channel",
                           "handling_unit", "all")


def _rate(numerator: Any, denominator: Any) -> float | None:
    return round(float(numerator) / float(denominator), 4) if denominator else None


def _true(column: Any) -> Any:
    return sa.func.sum(sa.case((column.is_(True), 1), else_=0))


def _known(column: Any) -> Any:
    return sa.func.sum(sa.case((column.is_not(None), 1), else_=0))


def _group_column(group_by: str) -> Any:
    return {"department": CaseRow.lead_department, "org_unit": CaseRow.org_unit,
            "event_type": CaseRow.event_type, "category": CaseRow.category, "channel": CaseRow.channel,
            "handling_unit": CaseRow.handling_unit, "town": CaseRow.org_unit,
            "all": sa.literal("all")}[group_by]


def rates(session: Session, *, start: datetime, end: datetime, group_by: str = "department",
          towns_of: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """The supervision figures of the cases reported in [start, end), one row per group (merged cases
    count in the case they joined). `town` groups by each case's town (`towns_of`: org unit → town).

    The store returns counts and sums per group key; keys that fold together (org units into their town)
    add those up, and every rate is taken from the sums last, so a town's rate is exact, not an average of
    its villages' rates."""
    if group_by not in GROUPS:
        raise InvalidInput.at("by", f"one of {', '.join(GROUPS)}")
    key = _group_column(group_by).label("key")
    window = sa.and_(CaseRow.created_at >= start, CaseRow.created_at < end, CaseRow.status != "merged")
    hours = (sa.func.extract("epoch", CaseRow.closed_at) - sa.func.extract("epoch", CaseRow.created_at)) / 3600.0 \
        if session.get_bind().dialect.name == "postgresql" else \
        (sa.func.julianday(CaseRow.closed_at) - sa.func.julianday(CaseRow.created_at)) * 24.0
    resolved = CaseRow.resolution == "resolved"
    case_sums = session.execute(
        sa.select(key, sa.func.count().label("cases"),
                  sa.func.sum(sa.case((CaseRow.status == "closed", 1), else_=0)).label("closed"),
                  sa.func.sum(sa.case((CaseRow.resolution == "dismissed", 1), else_=0)).label("dismissed"),
                  sa.func.sum(sa.case((resolved, 1), else_=0)).label("resolved"),
                  sa.func.sum(sa.case((resolved, hours), else_=None)).label("hours"),
                  _true(CaseRow.responded_on_time).label("respond_ok"), _known(CaseRow.responded_on_time).label("respond_n"),
                  _true(CaseRow.handled_on_time).label("handle_ok"), _known(CaseRow.handled_on_time).label("handle_n"),
                  _true(CaseRow.closed_on_time).label("close_ok"), _known(CaseRow.closed_on_time).label("close_n"),
                  sa.func.sum(CaseRow.escalations).label("escalations"), sa.func.sum(CaseRow.returns).label("returns"),
                  sa.func.sum(CaseRow.reopens).label("reopens"),
                  sa.func.sum(sa.case((CaseRow.breaches > 0, 1), else_=0)).label("breached"))
        .where(window).group_by(key)).mappings().all()
    report_sums = session.execute(
        sa.select(key, sa.func.count().label("reports"),
                  _true(CaseRow.responded_on_time).label("responded"),
                  _known(CaseRow.responded_on_time).label("report_respond_n"),
                  _true(CaseReportRow.resolved).label("resolved_verdicts"),
                  _known(CaseReportRow.resolved).label("verdicts"),
                  _true(CaseReportRow.satisfied).label("satisfied"))
        .join(CaseRow, CaseRow.id == CaseReportRow.case_id).where(window).group_by(key)).mappings().all()

    def folded(raw: Any) -> Any:
        if group_by != "town":
            return raw
        return (towns_of or {}).get(raw, raw) if raw else "unlocated"

    sums: dict[Any, dict[str, float]] = {}
    for row in [*case_sums, *report_sums]:
        totals = sums.setdefault(folded(row["key"]), {})
        for name, value in row.items():
            if name != "key":
                totals[name] = totals.get(name, 0) + (value or 0)
    out = [_figures(group, totals) for group, totals in sums.items()]
    return sorted(out, key=lambda e: (-(e.get("cases") or 0), str(e["key"])))


def _figures(group: Any, t: dict[str, float]) -> dict[str, Any]:
    """A group's public figures from its counts and sums."""
    return {
        "key": group, "cases": int(t.get("cases", 0)), "closed": int(t.get("closed", 0)),
        "dismissed": int(t.get("dismissed", 0)), "closedShare": _rate(t.get("closed", 0), t.get("cases", 0)),
        "meanHoursToClose": round(t["hours"] / t["resolved"], 2) if t.get("resolved") else None,
        "respondOnTime": _rate(t.get("respond_ok", 0), t.get("respond_n", 0)),
        "handleOnTime": _rate(t.get("handle_ok", 0), t.get("handle_n", 0)),
        "closeOnTime": _rate(t.get("close_ok", 0), t.get("close_n", 0)),
        "escalations": int(t.get("escalations", 0)), "returns": int(t.get("returns", 0)),
        "reopens": int(t.get("reopens", 0)), "breached": int(t.get("breached", 0)),
        "reports": int(t.get("reports", 0)), "responseRate": _rate(t.get("responded", 0), t.get("report_respond_n", 0)),
        "resolutionRate": _rate(t.get("resolved_verdicts", 0), t.get("verdicts", 0)),
        "satisfactionRate": _rate(t.get("satisfied", 0), t.get("verdicts", 0)), "verdicts": int(t.get("verdicts", 0)),
    }


def towns_of(tree: Any) -> dict[str, str]:
    """Org unit → the town it lies in (a unit above the towns maps to itself)."""
    out = {}
    for code in tree.units:
        chain = [code, *reversed(tree.ancestors(code))]
        out[code] = next((c for c in chain if tree.units[c].kind == "town"), code)
    return out


@dataclass(frozen=True, slots=True)
class Hotspot:
    event_type: str
    cell: str | None
    org_unit: str | None
    cases: int
    reports: int
    first: datetime
    last: datetime
    case_ids: tuple[str, ...]

    def view(self) -> dict[str, Any]:
        return {"eventType": self.event_type, "cell": self.cell, "orgUnit": self.org_unit, "cases": self.cases,
                "reports": self.reports, "first": self.first.isoformat(), "last": self.last.isoformat(),
                "caseIds": list(self.case_ids)}


def hotspots(session: Session, *, start: datetime, end: datetime, min_cases: int = 3,
             limit: int = 100) -> list[Hotspot]:
    """Places where one event type recurred at least `min_cases` times in [start, end): H3 cells for
    positioned cases, villages (or the most precise unit) for the others; most cases first."""
    window = sa.and_(CaseRow.created_at >= start, CaseRow.created_at < end, CaseRow.status != "merged")
    place = sa.func.coalesce(CaseRow.cell, CaseRow.org_unit)
    groups = session.execute(
        sa.select(CaseRow.event_type, place.label("place"), sa.func.count().label("cases"),
                  sa.func.sum(CaseRow.reports).label("reports"), sa.func.min(CaseRow.created_at).label("first"),
                  sa.func.max(CaseRow.created_at).label("last"))
        .where(window, place.is_not(None)).group_by(CaseRow.event_type, place)
        .having(sa.func.count() >= min_cases)
        .order_by(sa.func.count().desc(), CaseRow.event_type).limit(limit)).all()
    out = []
    for group in groups:
        ids = session.scalars(
            sa.select(CaseRow.id).where(window, CaseRow.event_type == group.event_type, place == group.place)
            .order_by(CaseRow.id).limit(200)).all()
        first, last = (_aware(group.first), _aware(group.last))
        cell = group.place if _is_cell(group.place) else None
        out.append(Hotspot(group.event_type, cell, None if cell else group.place, int(group.cases),
                           int(group.reports or 0), first, last, tuple(ids)))
    return out


def _aware(moment: Any) -> datetime:
    from datetime import UTC

    if isinstance(moment, str):  # SQLite returns aggregates of dates as text
        moment = datetime.fromisoformat(moment)
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _is_cell(place: str) -> bool:
    try:
        import h3

        return bool(h3.is_valid_cell(place))
    except (ValueError, TypeError):
        return False


def open_recurring_tasks(platform: Platform, disposal: Disposal, *, window_days: float = 30.0,
                         min_cases: int = 5) -> list[dict[str, Any]]:
    """Open a recurring-problem task for every hotspot of the last `window_days` with at least
    `min_cases` cases that has no open task yet; returns the new tasks (their events are the caller's)."""
    now = platform.clock.now()
    opened = []
    with platform.transaction() as session:
        for spot in hotspots(session, start=now - timedelta(days=window_days), end=now + timedelta(seconds=1),
                             min_cases=min_cases):
            key = f"recurring:{spot.event_type}:{spot.cell or spot.org_unit}"
            exists = session.scalars(sa.select(SupervisionTaskRow.id).where(
                SupervisionTaskRow.key == key, SupervisionTaskRow.status != "closed").limit(1)).first()
            if exists is not None:
                continue
            spec = disposal.specs.get(spot.event_type)
            name = spec.name.zh if spec else spot.event_type
            where = spot.org_unit and platform.org_tree.units.get(spot.org_unit)
            place = where.name if where else (f"H3 {spot.cell}" if spot.cell else "未定位")
            task = SupervisionTaskRow(
                id=new_id(), kind="recurring_problem", key=key,
                department=spec.department if spec else "chengguan", event_type=spot.event_type,
                org_unit=spot.org_unit, cell=spot.cell,
                title=f"{place}：{name}在{window_days:g}天内反复发生{spot.cases}次", status="open", opened_at=now,
                due_at=disposal.calendar.deadline(now, SUPERVISION_DEADLINE),
                evidence={"cases": spot.cases, "reports": spot.reports, "first": spot.first.isoformat(),
                          "last": spot.last.isoformat(), "caseIds": list(spot.case_ids),
                          "windowDays": window_days, "minCases": min_cases})
            session.add(task)
            session.flush()
            opened.append(task_view(task))
    return opened


def opened_events(tasks: Sequence[dict[str, Any]], ctx: Context) -> list[SupervisionTaskOpened]:
    return [SupervisionTaskOpened(context=ctx, task=task) for task in tasks]


def task_view(row: SupervisionTaskRow) -> dict[str, Any]:
    return {"id": row.id, "kind": row.kind, "key": row.key, "department": row.department,
            "eventType": row.event_type, "orgUnit": row.org_unit, "cell": row.cell, "title": row.title,
            "evidence": row.evidence, "status": row.status, "openedAt": row.opened_at.isoformat(),
            "dueAt": row.due_at.isoformat() if row.due_at else None,
            "closedAt": row.closed_at.isoformat() if row.closed_at else None, "note": row.note}


def list_tasks(session: Session, *, status: str | None, department: str | None, limit: int) -> list[SupervisionTaskRow]:
    statement = sa.select(SupervisionTaskRow)
    if status:
        statement = statement.where(SupervisionTaskRow.status == status)
    if department:
        statement = statement.where(SupervisionTaskRow.department == department)
    return list(session.scalars(statement.order_by(SupervisionTaskRow.opened_at.desc()).limit(limit)))


TASK_MOVES = {"acknowledge": ({"open"}, "acknowledged"), "close": ({"open", "acknowledged"}, "closed")}


def move_task(platform: Platform, task_id: str, action: str, *, note: str | None) -> dict[str, Any]:
    if action not in TASK_MOVES:
        raise InvalidInput.at("action", f"one of {', '.join(TASK_MOVES)}")
    sources, to = TASK_MOVES[action]
    with platform.transaction() as session:
        row = session.get(SupervisionTaskRow, task_id, with_for_update=True)
        if row is None:
            raise NotFound(f"supervision task {task_id} does not exist")
        if row.status not in sources:
            allowed = [a for a, (s, _) in TASK_MOVES.items() if row.status in s]
            raise Conflict(f"a {row.status} task cannot {action}; allowed: {', '.join(allowed) or 'none'}")
        row.status, row.note = to, note or row.note
        if to == "closed":
            row.closed_at = platform.clock.now()
        return task_view(row)

