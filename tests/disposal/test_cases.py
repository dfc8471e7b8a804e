"""Cases through the flows on both stores: the small closed loop with evidence, routing by level and
department, returns, escalation, suspension, merging, reporters' feedback, and SLA timers with a frozen
clock across a restart (never lost, never fired twice)."""

from __future__ import annotations

from datetime import timedelta

import pytest
import sqlalchemy as sa

from citybrain.core.context import Context
from citybrain.core.errors import Conflict, InvalidInput
from citybrain.disposal import flows, service
from citybrain.disposal.calendar import CHINA
from citybrain.disposal.models import CaseTransitionRow
from citybrain.disposal.runtime import Disposal
from citybrain.disposal.schemas import Attachment, CaseCreate, Feedback, Reporter, TransitionRequest
from citybrain.platform import Platform
from tests.disposal.support import CATALOGUE, EMERGENCY, JOINT, ROUTINE

INSPECTOR = Context(actor="inspector:wang")
PHOTO = Attachment(kind="photo_after", url="https://files.example/after.jpg")


def _village(platform: Platform) -> tuple[str, str, str]:
    tree = platform.org_tree
    village = next(code for code, unit in tree.units.items() if unit.kind == "village")
    town = tree.units[village].parent_code
    district = tree.units[town].parent_code
    return village, town, district


@pytest.fixture
def disposal(platform: Platform) -> Disposal:
    return Disposal(platform, catalogue=CATALOGUE)


def _open(platform: Platform, disposal: Disposal, spec=ROUTINE, **extra) -> dict:
    village, _, _ = _village(platform)
    request = CaseCreate(eventType=spec.code, description="西湖边有人占道经营", orgUnit=village,
                         reporter=Reporter(name="张三", phone="13812345678"), **extra)
    return flows.open_case(platform, disposal, request, ctx=INSPECTOR).case


def _act(platform: Platform, disposal: Disposal, case: dict, action: str, **fields) -> dict:
    return flows.transition(platform, disposal, case["id"], TransitionRequest(action=action, **fields),
                            ctx=INSPECTOR).case


def test_a_case_goes_round_the_small_loop(platform: Platform, disposal: Disposal) -> None:
    village, _, _ = _village(platform)
    case = _open(platform, disposal)
    assert case["status"] == "dispatched" and case["level"] == "village" and case["handlingUnit"] == village
    assert case["leadDepartment"] == "chengguan" and case["stage"] == "respond"
    assert case["number"].startswith("20261125-")  # 16:00 in Hangzhou on the frozen day
    assert case["dueAt"] == (platform.clock.now() + timedelta(hours=2)).isoformat()
    platform.clock.advance(minutes=30)
    case = _act(platform, disposal, case, "receive")
    assert case["stage"] == "handle" and case["onTime"]["respond"] is True
    case = _act(platform, disposal, case, "start")
    with pytest.raises(InvalidInput) as missing:
        _act(platform, disposal, case, "handle")
    assert missing.value.errors[0].field == "attachments" and "photo_after" in missing.value.detail
    case = _act(platform, disposal, case, "handle", attachments=[PHOTO], reason="摊位已清理")
    assert case["status"] == "handled" and case["onTime"]["handle"] is True and case["stage"] == "close"
    case = _act(platform, disposal, case, "verify")
    case = _act(platform, disposal, case, "close")
    assert case["status"] == "closed" and case["resolution"] == "resolved" and case["stage"] is None
    assert case["onTime"] == {"respond": True, "handle": True, "close": True}
    with platform.session() as session:
        steps = [(t.action, t.from_status, t.to_status, t.actor) for t in service.transitions(session, case_id=case["id"])]
    assert [s[:3] for s in steps] == [
        ("report", None, "reported"), ("triage", "reported", "triaged"), ("dispatch", "triaged", "dispatched"),
        ("receive", "dispatched", "received"), ("start", "received", "in_progress"),
        ("handle", "in_progress", "handled"), ("verify", "handled", "verified"), ("close", "verified", "closed")]
    assert {s[3] for s in steps} == {"inspector:wang"}
    with pytest.raises(Conflict) as illegal:
        _act(platform, disposal, case, "receive")
    assert illegal.value.detail == "a closed case cannot receive; allowed: reopen"


def test_joint_cases_go_to_the_town_with_their_assisting_departments(platform: Platform, disposal: Disposal) -> None:
    _, town, district = _village(platform)
    case = _open(platform, disposal, JOINT)
    assert case["level"] == "town" and case["handlingUnit"] == town
    assert case["leadDepartment"] == "fangguan" and case["assisting"] == ["gongan", "xiaofang"]
    emergency = _open(platform, disposal, EMERGENCY)
    assert emergency["handlingUnit"] == district and emergency["priority"] == "emergency"
    assert emergency["dueAt"] == (platform.clock.now() + timedelta(minutes=10)).isoformat()


def test_returns_keep_the_dispatch_clock_and_escalation_moves_up_a_level(
    platform: Platform, disposal: Disposal
) -> None:
    _, town, district = _village(platform)
    case = _open(platform, disposal)
    due = case["dueAt"]
    platform.clock.advance(minutes=20)
    with pytest.raises(InvalidInput) as no_reason:
        _act(platform, disposal, case, "return")
    assert no_reason.value.errors[0].field == "reason"
    case = _act(platform, disposal, case, "return", reason="不在本站辖区")
    assert case["status"] == "returned" and case["returns"] == 1 and case["dueAt"] == due
    case = _act(platform, disposal, case, "dispatch", department="lvrong")
    assert case["status"] == "dispatched" and case["leadDepartment"] == "lvrong" and case["dueAt"] == due
    case = _act(platform, disposal, case, "escalate", reason="超出村居处置能力")
    assert case["status"] == "escalated" and case["level"] == "town" and case["handlingUnit"] == town
    assert case["dueAt"] == (platform.clock.now() + timedelta(hours=2)).isoformat()  # the town's own clock
    case = _act(platform, disposal, case, "dispatch")
    case = _act(platform, disposal, case, "escalate", reason="需区级协调")
    assert case["level"] == "district" and case["handlingUnit"] == district and case["escalations"] == 2
    case = _act(platform, disposal, case, "dispatch")
    with pytest.raises(Conflict, match="top level"):
        _act(platform, disposal, case, "escalate", reason="again")
    with pytest.raises(InvalidInput) as bad_unit:
        _act(platform, disposal, case, "return", reason="x")
        _act(platform, disposal, case, "dispatch", handlingUnit="000000")
    assert bad_unit.value.errors[0].field == "handlingUnit"


def test_a_suspension_pauses_the_clock(platform: Platform, disposal: Disposal) -> None:
    from datetime import UTC, datetime

    case = _act(platform, disposal, _open(platform, disposal), "receive")  # Wed 25 Nov, 16:00 in Hangzhou
    assert case["dueAt"] == datetime(2026, 11, 30, 17, 30, tzinfo=CHINA).astimezone(UTC).isoformat()  # handle: 3wd
    case = _act(platform, disposal, case, "suspend", reason="等待产权单位确认")
    platform.clock.advance(days=7)  # paused for 40 office hours (Wed 16:00 → next Wed 16:00)
    case = _act(platform, disposal, case, "resume")
    assert case["status"] == "received"
    assert case["dueAt"] == datetime(2026, 12, 7, 17, 30, tzinfo=CHINA).astimezone(UTC).isoformat()  # 40 office hours later


def test_duplicates_merge_with_their_reporters(platform: Platform, disposal: Disposal) -> None:
    first = _open(platform, disposal)
    second = _open(platform, disposal)
    third = _open(platform, disposal)
    merged = _act(platform, disposal, second, "merge", into=first["number"], reason="同一摊位")
    assert merged["status"] == "merged" and merged["mergedInto"] == first["id"] and merged["stage"] is None
    _act(platform, disposal, third, "merge", into=first["id"], reason="同一摊位")
    with platform.session() as session:
        kept = service.get_case(session, case_ref=first["id"])
        assert kept.reports == 3 and len(service.reports(session, case_id=first["id"])) == 3
        assert service.reports(session, case_id=second["id"]) == []
    with pytest.raises(InvalidInput) as itself:
        _act(platform, disposal, first, "merge", into=first["id"])
    assert itself.value.errors[0].field == "into"
    with pytest.raises(Conflict):
        _act(platform, disposal, _open(platform, disposal), "merge", into=second["id"])  # merged: not open


def test_an_unsatisfied_reporter_reopens_the_case(platform: Platform, disposal: Disposal) -> None:
    case = _open(platform, disposal)
    for action, extra in [("receive", {}), ("handle", {"attachments": [PHOTO]}), ("verify", {}), ("close", {})]:
        case = _act(platform, disposal, case, action, **extra)
    with platform.session() as session:
        report = service.reports(session, case_id=case["id"])[0].id
    case = flows.record_feedback(platform, disposal, report, Feedback(resolved=False, satisfied=False,
                                                                       comment="摊贩第二天又来了"), ctx=INSPECTOR).case
    assert case["status"] == "reopened" and case["reopens"] == 1 and case["stage"] == "respond"
    with pytest.raises(Conflict):
        flows.record_feedback(platform, disposal, report, Feedback(resolved=True, satisfied=True), ctx=INSPECTOR)
    case = _act(platform, disposal, case, "dispatch")
    assert case["status"] == "dispatched" and case["handlingUnit"] == _village(platform)[0]


def test_a_stale_version_is_refused(platform: Platform, disposal: Disposal) -> None:
    case = _open(platform, disposal)
    _act(platform, disposal, case, "receive")
    with pytest.raises(Conflict, match="version"):
        _act(platform, disposal, case, "start", expectedVersion=case["version"])


def _scan(platform: Platform, catalogue=CATALOGUE) -> list[str]:
    """One timer scan by a fresh disposal, as after a restart: what fired, by kind and case number."""
    disposal = Disposal(platform, catalogue=catalogue)
    fired = []
    now = platform.clock.now()
    with platform.session() as session:
        due = flows.due_warnings(session, now=now, limit=1000) + flows.due_breaches(session, now=now, limit=1000)
    for case_id, version in due:
        for event in flows.fire_timer(platform, disposal, case_id, version):
            fired.append(f"{type(event).__name__}:{getattr(event, 'action', getattr(event, 'stage', ''))}")
    return fired


def test_sla_timers_fire_once_across_restarts_and_escalate_to_the_top(platform: Platform, settings) -> None:
    disposal = Disposal(platform, catalogue=CATALOGUE)
    case = _open(platform, disposal)  # respond: 2 h, warning at 80 %
    assert _scan(platform) == []
    platform.clock.advance(minutes=97)
    assert _scan(platform) == ["CaseSlaWarning:respond"]
    restarted = Platform(settings, clock=platform.clock)  # a new process on the same store
    restarted.load_state()
    try:
        assert _scan(restarted) == []  # the warning is not sent twice
        platform.clock.advance(minutes=30)  # past due
        assert _scan(restarted) == ["CaseSlaBreached:respond", "CaseTransitioned:escalate"]
        assert _scan(platform) == []
        with restarted.session() as session:
            row = service.get_case(session, case_ref=case["id"])
            assert row.level == "town" and row.status == "escalated" and row.responded_on_time is False
        platform.clock.advance(hours=3)  # the town did not dispatch it either: past its warning and its due
        assert _scan(restarted) == ["CaseSlaBreached:respond", "CaseTransitioned:escalate"]
        platform.clock.advance(hours=3)
        assert _scan(platform) == ["CaseSlaBreached:respond"]  # the district: nowhere higher to go
        with restarted.session() as session:
            row = service.get_case(session, case_ref=case["id"])
            escalations = session.execute(sa.select(sa.func.count()).select_from(CaseTransitionRow).where(
                CaseTransitionRow.case_id == case["id"], CaseTransitionRow.action == "escalate")).scalar_one()
        assert row.level == "district" and escalations == 2 and row.breaches == 3 and row.due_at is None
        assert _scan(platform) == []  # at the top and breached: nothing left to fire
    finally:
        restarted.dispose()


def test_a_stale_timer_does_not_fire(platform: Platform, disposal: Disposal) -> None:
    case = _open(platform, disposal)
    platform.clock.advance(hours=3)
    with platform.session() as session:
        found = flows.due_breaches(session, now=platform.clock.now(), limit=10)
    assert [c for c, _ in found] == [case["id"]]
    _act(platform, disposal, case, "receive")  # the handler acted between the scan and the firing
    assert flows.fire_timer(platform, disposal, *found[0]) == []


def test_numbers_count_per_local_day(platform: Platform, disposal: Disposal) -> None:
    first = _open(platform, disposal)["number"]
    second = _open(platform, disposal)["number"]
    assert int(second[-6:]) == int(first[-6:]) + 1
    platform.clock.set(platform.clock.now().astimezone(CHINA).replace(hour=23, minute=59) + timedelta(minutes=2))
    assert _open(platform, disposal)["number"] == "20261126-000001"
