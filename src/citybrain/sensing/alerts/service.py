"""Alert lifecycle: raise, update, clear, de-duplicate and suppress, acknowledge and assign.

The rules say when a subject goes into and out of alert (rules.spec.Transitions); this turns those
transitions into alert rows and events. One alert is open per (device type, rule, subject); a raise
within the rule's `suppress_s` after that subject's clear reopens the cleared alert (its `raises` grows)
instead of opening a new one, so a flapping sensor is one alert, not hundreds.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import sqlalchemy as sa
from sqlalchemy.orm import Session

from citybrain.core.context import Context, new_id
from citybrain.core.errors import Conflict, InvalidInput
from citybrain.core.events import Event
from citybrain.db.base import get_or_404
from citybrain.sensing.alerts.events import AlertCleared, AlertRaised, AlertUpdated
from citybrain.sensing.alerts.models import AlertRow
from citybrain.sensing.batch import ReadingBatch
from citybrain.sensing.devices import service as devices
from citybrain.sensing.rules.spec import SEVERITIES, Transitions

STATUSES = ("active", "acknowledged", "cleared")


def alert_view(row: AlertRow) -> dict[str, Any]:
    def moment(value: datetime | None) -> str | None:
        return None if value is None else value.astimezone(UTC).isoformat().replace("+00:00", "Z")

    return {
        "id": row.id,
        "deviceType": row.device_type,
        "ruleId": row.rule_id,
        "subject": row.subject,
        "subjectKind": row.subject_kind,
        "orgUnit": row.org_unit,
        "severity": row.severity,
        "status": row.status,
        "title": row.title,
        "raisedAt": moment(row.raised_at),
        "updatedAt": moment(row.updated_at),
        "clearedAt": moment(row.cleared_at),
        "raises": row.raises,
        "value": row.value,
        "reading": row.reading,
        "assignee": row.assignee,
        "acknowledgedBy": row.acknowledged_by,
        "acknowledgedAt": moment(row.acknowledged_at),
    }


# Our severities on the Smart Data Models Alert scale.
SDM_SEVERITY = {"info": "informational", "minor": "low", "major": "high", "critical": "critical"}


def alert_entity(view: dict[str, Any]) -> dict[str, Any]:
    """The alert as a hub entity (Smart Data Models `Alert`), which subscriptions and the entity API see."""
    source = (
        f"urn:ngsi-ld:Device:{view['subject']}"
        if view["subjectKind"] == "device"
        else f"urn:ngsi-ld:OrgUnit:{view['subject']}"
    )
    entity: dict[str, Any] = {
        "id": f"urn:ngsi-ld:Alert:{view['id']}",
        "type": "Alert",
        "category": {"type": "Property", "value": view["deviceType"]},
        "subCategory": {"type": "Property", "value": view["ruleId"]},
        "severity": {"type": "Property", "value": SDM_SEVERITY[view["severity"]]},
        "description": {"type": "Property", "value": view["title"]},
        "alertSource": {"type": "Relationship", "object": source},
        "dateIssued": {"type": "Property", "value": view["raisedAt"]},
        "status": {"type": "Property", "value": view["status"]},
    }
    if view["clearedAt"]:
        entity["validTo"] = {"type": "Property", "value": view["clearedAt"]}
    if view["value"] is not None:
        entity["value"] = {"type": "Property", "value": view["value"]}
    if view["orgUnit"]:
        entity["orgUnit"] = {"type": "Relationship", "object": f"urn:ngsi-ld:OrgUnit:{view['orgUnit']}"}
    return entity


def mirror(platform: Any, session: Session, views: Sequence[dict[str, Any]], *, ctx: Context) -> list[Event]:
    """Write the alerts' hub entities in the caller's transaction; returns the hub's events to publish."""
    from citybrain.hub.entities.flows import write_entities_in

    latest = {view["id"]: view for view in views}  # one batch may raise and clear the same alert
    if not latest:
        return []
    result, events = write_entities_in(
        platform, session, [alert_entity(v) for v in latest.values()], mode="replace", ctx=ctx
    )
    if result.errors:
        raise RuntimeError(f"an alert entity was refused: {result.errors[0]}")
    return list(events)


def _utc(ts: float) -> datetime:
    return datetime.fromtimestamp(float(ts), UTC)


@dataclass(slots=True)
class Outcome:
    """What applying transitions did: rows written and the events to publish once they commit."""

    events: list[Event]
    raised: int = 0
    reopened: int = 0
    cleared: int = 0


class AlertManager:
    """Keeps the open alerts' keys in memory (a few thousand at most, unlike the devices) and writes the
    rows. `org_units` maps an area id (the device index's org position) to its code."""

    def __init__(self, org_units: Sequence[str]) -> None:
        self.org_units = list(org_units)
        # (device type, rule, subject) → (alert id, org unit, severity)
        self._open: dict[tuple[str, str, str], tuple[str, str | None, str]] = {}
        self._cleared: dict[tuple[str, str, str], tuple[str, float]] = {}  # → (alert id, cleared epoch s)

    def load(self, session: Session) -> None:
        """Recover the open alerts after a restart, so a subject still in alert updates its alert."""
        self._open.clear()
        for row in session.execute(
            sa.select(
                AlertRow.id,
                AlertRow.device_type,
                AlertRow.rule_id,
                AlertRow.subject,
                AlertRow.org_unit,
                AlertRow.severity,
            ).where(AlertRow.status != "cleared")
        ):
            self._open[(row.device_type, row.rule_id, row.subject)] = (row.id, row.org_unit, row.severity)

    @property
    def open_count(self) -> int:
        return len(self._open)

    def open_alerts(self) -> list[tuple[str, str, str | None, str]]:
        """(device type, rule, org unit, severity) of each open alert, for the vital signs."""
        return [(key[0], key[1], org_unit, severity) for key, (_, org_unit, severity) in self._open.items()]

    def apply(
        self,
        session: Session,
        device_type: str,
        transitions: Sequence[Transitions],
        batch: ReadingBatch | None,
        *,
        ctx: Context,
        now: datetime,
    ) -> Outcome:
        """Write the alerts these transitions imply (inside the caller's transaction)."""
        outcome = Outcome(events=[])
        wanted = {
            int(v)
            for t in transitions
            if t.subject == "device"
            for v in (*t.raised.tolist(), *t.cleared.tolist())
        }
        stored = (
            devices.devices_by_local(session, device_type=device_type, locals_=sorted(wanted))
            if wanted
            else {}
        )
        for t in transitions:
            rule = t.rule
            for position, value, ts in zip(
                t.raised.tolist(), t.raised_value.tolist(), t.raised_ts.tolist(), strict=True
            ):
                subject, org_unit = self._subject(t, position, stored)
                if subject is None:
                    continue
                reading = (
                    _reading(batch, position, rule.measurement, value, ts)
                    if t.subject == "device"
                    else {"ts": ts, "value": value}
                )
                if subject is not None and t.subject == "device":
                    reading["deviceId"] = subject
                event = self._raise(
                    session,
                    device_type,
                    rule,
                    t.subject,
                    subject,
                    org_unit,
                    value,
                    ts,
                    reading,
                    ctx,
                    now,
                    outcome,
                )
                outcome.events.append(event)
            for position, ts in zip(t.cleared.tolist(), t.cleared_ts.tolist(), strict=True):
                subject, _ = self._subject(t, position, stored)
                if subject is None:
                    continue
                event = self._clear(session, device_type, rule.id, subject, ts, ctx, now)
                if event is not None:
                    outcome.cleared += 1
                    outcome.events.append(event)
        return outcome

    def _subject(
        self, t: Transitions, position: int, stored: dict[int, Any]
    ) -> tuple[str | None, str | None]:
        if t.subject == "area":
            code = self.org_units[position] if 0 <= position < len(self.org_units) else None
            return code, code
        row = stored.get(position)
        return (None, None) if row is None else (row.device_id, row.org_unit)

    def _raise(
        self,
        session: Session,
        device_type: str,
        rule: Any,
        kind: str,
        subject: str,
        org_unit: str | None,
        value: float,
        ts: float,
        reading: dict[str, Any],
        ctx: Context,
        now: datetime,
        outcome: Outcome,
    ) -> Event:
        key = (device_type, rule.id, subject)
        value_or_none = None if np.isnan(value) else float(value)
        found = self._open.get(key)
        alert_id = found[0] if found is not None else None
        reopened = False
        if alert_id is None:
            recent = self._cleared.get(key)
            if recent is not None and ts - recent[1] <= rule.suppress_s:
                alert_id, reopened = recent[0], True
        if alert_id is not None:
            row = session.get(AlertRow, alert_id)
            if row is not None:
                row.status = "active" if row.status == "cleared" else row.status
                row.cleared_at = None
                row.raises += 1
                row.value, row.reading, row.updated_at = value_or_none, reading, now
                self._open[key] = (row.id, row.org_unit, row.severity)
                self._cleared.pop(key, None)
                outcome.reopened += int(reopened)
                return AlertUpdated(context=ctx, alert=alert_view(row))
        row = AlertRow(
            id=new_id(),
            device_type=device_type,
            rule_id=rule.id,
            subject=subject,
            subject_kind=kind,
            org_unit=org_unit,
            severity=rule.severity,
            status="active",
            title=rule.title,
            raised_at=_utc(ts),
            updated_at=now,
            cleared_at=None,
            raises=1,
            value=value_or_none,
            reading=reading,
        )
        session.add(row)
        self._open[key] = (row.id, org_unit, rule.severity)
        outcome.raised += 1
        return AlertRaised(context=ctx, alert=alert_view(row))

    def _clear(
        self,
        session: Session,
        device_type: str,
        rule_id: str,
        subject: str,
        ts: float,
        ctx: Context,
        now: datetime,
    ) -> Event | None:
        key = (device_type, rule_id, subject)
        found = self._open.pop(key, None)
        if found is None:
            return None
        row = session.get(AlertRow, found[0])
        if row is None:
            return None
        row.status, row.cleared_at, row.updated_at = "cleared", _utc(ts), now
        self._cleared[key] = (row.id, ts)
        return AlertCleared(context=ctx, alert=alert_view(row))


def _reading(
    batch: ReadingBatch | None,
    local: int,
    measurement: str | None,
    value: float,
    ts: float,
) -> dict[str, Any]:
    out: dict[str, Any] = {"ts": ts}
    if measurement is not None:
        out["measurement"] = measurement
        out["value"] = None if np.isnan(value) else float(value)
    if batch is not None and len(batch):
        rows = np.flatnonzero((batch.local == local) & (batch.ts == ts))
        if rows.size:
            row = int(rows[-1])
            out["values"] = {
                name: float(column[row]) for name, column in batch.values.items() if not np.isnan(column[row])
            }
            if batch.seq[row] >= 0:
                out["seq"] = int(batch.seq[row])
    return out


# ------------------------------------------------------------------------------------------ queries


def list_alerts(
    session: Session,
    *,
    status: str | None,
    severity: str | None,
    org_units: Sequence[str] | None,
    device_type: str | None,
    after: str | None,
    limit: int,
) -> tuple[list[AlertRow], str | None]:
    """A page of alerts, newest id last; `after` is the last id of the previous page (ids sort by time)."""
    if status is not None and status not in STATUSES:
        raise InvalidInput.at("status", f"one of {', '.join(STATUSES)}")
    if severity is not None and severity not in SEVERITIES:
        raise InvalidInput.at("severity", f"one of {', '.join(SEVERITIES)}")
    stmt = sa.select(AlertRow)
    if status is not None:
        stmt = stmt.where(AlertRow.status == status)
    if severity is not None:
        stmt = stmt.where(AlertRow.severity == severity)
    if org_units is not None:
        stmt = stmt.where(AlertRow.org_unit.in_(list(org_units)))
    if device_type is not None:
        stmt = stmt.where(AlertRow.device_type == device_type)
    if after is not None:
        stmt = stmt.where(AlertRow.id > after)
    rows = list(session.scalars(stmt.order_by(AlertRow.id).limit(limit + 1)))
    if len(rows) > limit:
        return rows[:limit], rows[limit - 1].id
    return rows, None


def acknowledge(session: Session, *, alert_id: str, actor: str, now: datetime) -> AlertRow:
    row = get_or_404(session, AlertRow, alert_id, f"alert {alert_id}")
    if row.status == "cleared":
        raise Conflict(f"alert {alert_id} is cleared; only an open alert can be acknowledged")
    row.status, row.acknowledged_by, row.acknowledged_at, row.updated_at = "acknowledged", actor, now, now
    return row


def assign(session: Session, *, alert_id: str, assignee: str, now: datetime) -> AlertRow:
    if not assignee.strip():
        raise InvalidInput.at("assignee", "must not be empty")
    row = get_or_404(session, AlertRow, alert_id, f"alert {alert_id}")
    row.assignee, row.updated_at = assignee.strip()[:256], now
    return row
