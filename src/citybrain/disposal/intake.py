"""Cases from sensing alerts: an alert whose rule the catalogue links to an event type opens a case, or
joins the open one of the same device, or of the same place (the same H3 cell, or the same village when
the device has no position), so twenty smoke detectors in one building make one case with twenty
reports, not twenty cases."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from citybrain.core.context import Context
from citybrain.disposal import flows, service
from citybrain.disposal.flows import Outcome
from citybrain.disposal.lifecycle import Status
from citybrain.disposal.models import CaseRow
from citybrain.disposal.schemas import CaseCreate, Point

if TYPE_CHECKING:
    from citybrain.disposal.runtime import Disposal
    from citybrain.platform import Platform


def _device_position(session: Session, device_id: str) -> tuple[float | None, float | None]:
    from citybrain.sensing.devices.models import DeviceRow

    row = session.execute(sa.select(DeviceRow.lon, DeviceRow.lat).where(DeviceRow.device_id == device_id)).first()
    return (row.lon, row.lat) if row is not None else (None, None)


def _open_case_at_place(session: Session, *, event_type: str, cell: str | None,
                        org_unit: str | None) -> CaseRow | None:
    closed = [Status.CLOSED.value, Status.MERGED.value]
    statement = sa.select(CaseRow).where(CaseRow.event_type == event_type, CaseRow.status.not_in(closed),
                                         CaseRow.channel == "sensing")
    if cell is not None:
        statement = statement.where(CaseRow.cell == cell)
    elif org_unit is not None:
        statement = statement.where(CaseRow.org_unit == org_unit, CaseRow.cell.is_(None))
    else:
        return None
    return session.scalars(statement.order_by(CaseRow.id.desc()).limit(1)).first()


def case_from_alert(platform: Platform, disposal: Disposal, alert: dict[str, Any], *,
                    ctx: Context) -> Outcome | None:
    """Open or join the case an alert calls for; None when its rule opens no case."""
    spec = disposal.for_sensing(alert["deviceType"], alert["ruleId"])
    if spec is None:
        return None
    device = alert["subjectKind"] == "device"
    source_ref = f"{'device' if device else 'area'}:{alert['subject']}"
    reading = alert.get("reading") or {}
    text = f"{alert['title']} ({alert['deviceType']}/{alert['ruleId']}, {alert['subject']}"
    text += f", value {alert['value']})" if alert.get("value") is not None else ")"
    data = {"alert": alert["id"], "severity": alert["severity"], "reading": reading}
    with platform.session() as session:  # one read for where the device is and what is open there
        lon, lat = _device_position(session, alert["subject"]) if device else (None, None)
        existing = (service.find_open_by_source(session, source_ref=source_ref, event_type=spec.code)
                    or _open_case_at_place(session, event_type=spec.code, cell=flows.cell_of(lon, lat),
                                           org_unit=alert.get("orgUnit")))
    if existing is not None:
        outcome, _report = flows.add_report(platform, existing.id, channel="sensing", text=text, reporter=None,
                                            ctx=ctx, external_id=alert["id"], lon=lon, lat=lat,
                                            org_unit=alert.get("orgUnit"), data=data)
        return outcome
    request = CaseCreate(
        eventType=spec.code, title=f"{spec.name.zh}：{alert['title']}"[:200], description=text, channel="sensing",
        orgUnit=alert.get("orgUnit") if alert.get("orgUnit") in platform.org_tree else None,
        location=Point(type="Point", coordinates=(lon, lat)) if lon is not None and lat is not None else None,
        sourceRef=source_ref, externalId=alert["id"], dispatch=True)
    return flows.open_case(platform, disposal, request, ctx=ctx, report_data=data)
