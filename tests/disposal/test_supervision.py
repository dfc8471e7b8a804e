"""The big loop: 三率 and on-time rates per department and place, hotspots, and recurring problems that
open supervision tasks once."""

from __future__ import annotations

from datetime import timedelta

import pytest

from citybrain.core.context import Context
from citybrain.core.errors import Conflict
from citybrain.disposal import flows, service, supervision
from citybrain.disposal.runtime import Disposal
from citybrain.disposal.schemas import Attachment, CaseCreate, Feedback, Point, TransitionRequest
from citybrain.platform import Platform
from tests.disposal.support import CATALOGUE, JOINT, ROUTINE

CTX = Context(actor="dispatcher:li")
PHOTO = Attachment(kind="photo_after", url="https://files.example/after.jpg")
RECORD = Attachment(kind="inspection_record", url="https://files.example/record.pdf")


@pytest.fixture
def disposal(platform: Platform) -> Disposal:
    return Disposal(platform, catalogue=CATALOGUE)


def _village(platform: Platform, index: int = 0) -> str:
    return [c for c, u in platform.org_tree.units.items() if u.kind == "village"][index]


def _open(platform: Platform, disposal: Disposal, spec=ROUTINE, *, village: int = 0, at=None) -> dict:
    request = CaseCreate(eventType=spec.code, orgUnit=_village(platform, village), description="x",
                         location=Point(type="Point", coordinates=at) if at else None)
    return flows.open_case(platform, disposal, request, ctx=CTX).case


def _do(platform: Platform, disposal: Disposal, case: dict, *actions: str) -> dict:
    for action in actions:
        attachments = [PHOTO, RECORD] if action == "handle" else []
        case = flows.transition(platform, disposal, case["id"], TransitionRequest(action=action,
                                attachments=attachments), ctx=CTX).case
    return case


def _feedback(platform: Platform, disposal: Disposal, case: dict, resolved: bool, satisfied: bool) -> None:
    with platform.session() as session:
        report = service.reports(session, case_id=case["id"])[0].id
    flows.record_feedback(platform, disposal, report, Feedback(resolved=resolved, satisfied=satisfied), ctx=CTX)


def test_rates_per_department_count_reports_stages_and_verdicts(platform: Platform, disposal: Disposal) -> None:
    start = platform.clock.now()
    quick = _open(platform, disposal)
    platform.clock.advance(minutes=10)
    quick = _do(platform, disposal, quick, "receive", "handle", "verify", "close")
    _feedback(platform, disposal, quick, True, True)
    slow = _open(platform, disposal)
    platform.clock.advance(hours=3)  # received after its 2 h respond deadline
    slow = _do(platform, disposal, slow, "receive", "handle", "verify", "close")
    _feedback(platform, disposal, slow, True, False)  # resolved but not satisfied: reopened
    open_joint = _open(platform, disposal, JOINT)
    _open(platform, disposal)  # dispatched, never touched
    end = platform.clock.now() + timedelta(seconds=1)
    with platform.session() as session:
        rows = {r["key"]: r for r in supervision.rates(session, start=start, end=end, group_by="department")}
        everything = supervision.rates(session, start=start, end=end, group_by="all")[0]
    chengguan = rows["chengguan"]
    assert chengguan["cases"] == 3 and chengguan["closed"] == 1 and chengguan["closedShare"] == pytest.approx(1 / 3, abs=1e-4)
    assert chengguan["respondOnTime"] == 0.5  # quick in time, slow late; the untouched one is still running
    assert chengguan["handleOnTime"] == 1.0 and chengguan["reopens"] == 1
    assert chengguan["resolutionRate"] == 1.0 and chengguan["satisfactionRate"] == 0.5
    assert chengguan["responseRate"] == 0.5 and chengguan["verdicts"] == 2
    assert chengguan["meanHoursToClose"] == pytest.approx(10 / 60, abs=0.01)  # only the quick one is closed
    assert rows["fangguan"]["cases"] == 1 and rows["fangguan"]["respondOnTime"] is None
    assert everything["cases"] == 4 and everything["reports"] == 4
    assert open_joint["assisting"] == ["gongan", "xiaofang"]
    with platform.session() as session:
        towns = {code: unit.parent_code for code, unit in platform.org_tree.units.items() if unit.kind == "village"}
        by_town = supervision.rates(session, start=start, end=end, group_by="town", towns_of=towns)
    assert sum(r["cases"] for r in by_town) == 4 and by_town[0]["key"] == platform.org_tree.units[_village(platform)].parent_code


def test_recurring_problems_become_one_supervision_task(platform: Platform, disposal: Disposal) -> None:
    spot = (120.1551, 30.2741)
    for _ in range(5):
        _open(platform, disposal, at=spot)
        platform.clock.advance(days=1)
    _open(platform, disposal, at=(120.20, 30.30))  # elsewhere
    for _ in range(3):
        _open(platform, disposal, JOINT, village=1)  # no position: grouped by village
    now = platform.clock.now()
    with platform.session() as session:
        found = supervision.hotspots(session, start=now - timedelta(days=30), end=now + timedelta(seconds=1),
                                     min_cases=3)
    assert [(h.event_type, h.cases, h.cell is not None) for h in found] == [("CG-01-001", 5, True),
                                                                           ("SQ-02-001", 3, False)]
    assert found[1].org_unit == _village(platform, 1)
    opened = supervision.open_recurring_tasks(platform, disposal, min_cases=5)
    assert len(opened) == 1 and opened[0]["department"] == "chengguan" and opened[0]["evidence"]["cases"] == 5
    assert supervision.open_recurring_tasks(platform, disposal, min_cases=5) == []  # once
    task = supervision.move_task(platform, opened[0]["id"], "close", note="摊点已取缔")
    assert task["status"] == "closed"
    with pytest.raises(Conflict, match="allowed: none"):
        supervision.move_task(platform, opened[0]["id"], "acknowledge", note=None)
    assert len(supervision.open_recurring_tasks(platform, disposal, min_cases=5)) == 1  # it recurs still
