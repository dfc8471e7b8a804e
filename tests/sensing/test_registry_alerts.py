"""Device registration (both stores) and the alert lifecycle: raise, de-duplicate, suppress, clear."""

from __future__ import annotations

import numpy as np
import pytest

from citybrain.core.context import SYSTEM
from citybrain.core.errors import Conflict, InvalidInput, NotFound
from citybrain.platform import Platform
from citybrain.sensing.alerts import service as alerts
from citybrain.sensing.alerts.events import AlertCleared, AlertRaised, AlertUpdated
from citybrain.sensing.alerts.models import AlertRow
from citybrain.sensing.devices import flows as device_flows
from citybrain.sensing.devices import service as devices
from citybrain.sensing.devices.index import DeviceIndex
from citybrain.sensing.rules.spec import RuleSpec, Transitions
from citybrain.sensing.runtime import device_types

TYPES = device_types()


def _village(platform: Platform) -> str:
    return next(code for code, unit in platform.org_tree.units.items() if unit.kind == "village")


def _register(
    platform: Platform, items: list[devices.DeviceInput], index: DeviceIndex
) -> devices.Registration:
    outcome, _ = device_flows.register(platform, items=items, types=TYPES, index=index, ctx=SYSTEM)
    devices.add_to_index(index, outcome.rows)
    return outcome


def test_registration_assigns_numbers_and_positions_and_reports_each_bad_item(platform: Platform) -> None:
    village = _village(platform)
    index = DeviceIndex(list(TYPES), list(platform.org_tree.units))
    outcome = _register(
        platform,
        [
            devices.DeviceInput("AQ-1", "air_quality", village, 121.5, 31.2),
            devices.DeviceInput("WL-1", "water_level", None),
            devices.DeviceInput("AQ-2", "air_quality", village, 121.6, 31.1, secret="provisioned-secret"),
            devices.DeviceInput("bad id!", "air_quality"),
            devices.DeviceInput("X-1", "no_such_type"),
            devices.DeviceInput("X-2", "air_quality", "000000"),
            devices.DeviceInput("X-3", "air_quality", None, 121.5, None),
            devices.DeviceInput("AQ-1", "air_quality"),
        ],
        index,
    )
    assert [(d, n) for d, n, _ in outcome.created] == [("AQ-1", 1), ("WL-1", 2), ("AQ-2", 3)]
    assert [(e.index, e.field) for e in outcome.errors] == [
        (3, "[3].device_id"),
        (4, "[4].device_type"),
        (5, "[5].org_unit"),
        (6, "[6].lon"),
        (7, "[7].device_id"),
    ]
    assert dict((d, s) for d, _, s in outcome.created)["AQ-2"] == "provisioned-secret"
    assert [r["local"] for r in outcome.rows] == [0, 0, 1]  # positions count per type
    assert index.lookup(["AQ-2", "WL-1", "nope"]).tolist() == [3, 2, 0]
    again = _register(
        platform,
        [devices.DeviceInput("AQ-1", "air_quality"), devices.DeviceInput("AQ-3", "air_quality")],
        index,
    )
    assert again.existing == ["AQ-1"] and [(d, n) for d, n, _ in again.created] == [("AQ-3", 4)]
    assert again.rows[0]["local"] == 2
    with platform.session() as session:
        reloaded = devices.load_index(session, types=list(TYPES), org_tree=platform.org_tree, chunk=2)
        stored = session.get(devices.DeviceRow, 3)
    assert reloaded.lookup(["AQ-1", "AQ-2", "AQ-3", "WL-1"]).tolist() == [1, 3, 4, 2]
    assert reloaded.capacity("air_quality") == 3 and reloaded.capacity("water_level") == 1
    assert devices.check_secret(stored.secret_hash, "provisioned-secret")
    assert not devices.check_secret(stored.secret_hash, "guess")


def test_csv_and_ngsi_imports_report_bad_rows() -> None:
    items, errors = devices.parse_csv(
        "device_id,device_type,org_unit,lon,lat\nA-1,air_quality,,121.5,31.2\nA-2,air_quality,,east,31\n"
    )
    assert items == [devices.DeviceInput("A-1", "air_quality", None, 121.5, 31.2)]
    assert errors[0].field == "line 3.lon"
    assert devices.parse_csv("id,type\n")[1][0].reason == "missing column(s): device_id, device_type"
    spec = TYPES["air_quality"]
    entity = devices.device_entity(
        {"device_id": "A-1", "lon": 121.5, "lat": 31.2, "org_unit": "310115001001"}, spec
    )
    parsed, problems = devices.from_ngsi([entity, {"id": "urn:ngsi-ld:Device:B"}, 7])
    assert parsed == [devices.DeviceInput("A-1", "air_quality", "310115001001", 121.5, 31.2)]
    assert [p.field for p in problems] == ["[1].deviceType", "[2].id"]


def _rule(**overrides: object) -> RuleSpec:
    return RuleSpec(
        **{
            "id": "pm25-heavy",
            "title": "PM2.5 heavy",
            "detector": "threshold",
            "measurement": "pm25",
            "severity": "major",
            "suppress_s": 600,
            **overrides,
        }
    )


def _transitions(
    rule: RuleSpec,
    raised: list[int] = (),
    cleared: list[int] = (),
    ts: float = 1000.0,
    subject: str = "device",
) -> Transitions:
    return Transitions(
        rule,
        subject,
        np.array(raised, np.int64),
        np.full(len(raised), 180.0),
        np.full(len(raised), ts),
        np.array(cleared, np.int64),
        np.full(len(cleared), ts),
    )


def test_alerts_raise_once_reopen_within_suppression_and_clear(platform: Platform) -> None:
    village = _village(platform)
    index = DeviceIndex(list(TYPES), list(platform.org_tree.units))
    _register(platform, [devices.DeviceInput(f"AQ-{i}", "air_quality", village) for i in range(3)], index)
    manager = alerts.AlertManager(index.org_units)
    rule = _rule()
    now = platform.clock.now()

    def apply(t: Transitions) -> alerts.Outcome:
        with platform.transaction() as session:
            return manager.apply(session, "air_quality", [t], None, ctx=SYSTEM, now=now)

    first = apply(_transitions(rule, raised=[0, 2]))
    assert [type(e) for e in first.events] == [AlertRaised, AlertRaised]
    assert [e.alert["subject"] for e in first.events] == ["AQ-0", "AQ-2"]
    assert first.events[0].alert["orgUnit"] == village and first.events[0].alert["value"] == 180.0
    assert manager.open_count == 2
    duplicate = apply(_transitions(rule, raised=[0]))  # still open: the same alert, not a second one
    assert [type(e) for e in duplicate.events] == [AlertUpdated] and duplicate.events[0].alert["raises"] == 2
    cleared = apply(_transitions(rule, cleared=[0], ts=1100.0))
    assert [type(e) for e in cleared.events] == [AlertCleared] and cleared.events[0].alert[
        "status"
    ] == "cleared"
    flap = apply(_transitions(rule, raised=[0], ts=1200.0))  # 100 s after the clear, within 600 s: reopened
    assert [type(e) for e in flap.events] == [AlertUpdated] and flap.reopened == 1
    assert flap.events[0].alert["id"] == first.events[0].alert["id"]
    apply(_transitions(rule, cleared=[0], ts=1300.0))
    later = apply(_transitions(rule, raised=[0], ts=5000.0))  # long after: a new alert
    assert [type(e) for e in later.events] == [AlertRaised]
    assert later.events[0].alert["id"] != first.events[0].alert["id"]
    nothing = apply(_transitions(rule, cleared=[1]))  # never raised: nothing to clear
    assert nothing.events == []
    area = apply(
        _transitions(
            _rule(id="pm25-area", detector="composite", measurement=None),
            raised=[index.org_codes[village]],
            subject="area",
        )
    )
    assert area.events[0].alert["subject"] == village and area.events[0].alert["subjectKind"] == "area"

    restarted = alerts.AlertManager(index.org_units)
    with platform.session() as session:
        restarted.load(session)
    assert restarted.open_count == manager.open_count == 3


def test_alert_queries_acknowledge_and_assign(platform: Platform) -> None:
    village = _village(platform)
    index = DeviceIndex(list(TYPES), list(platform.org_tree.units))
    _register(platform, [devices.DeviceInput(f"AQ-{i}", "air_quality", village) for i in range(5)], index)
    manager = alerts.AlertManager(index.org_units)
    with platform.transaction() as session:
        manager.apply(
            session,
            "air_quality",
            [_transitions(_rule(), raised=[0, 1, 2, 3, 4])],
            None,
            ctx=SYSTEM,
            now=platform.clock.now(),
        )
    with platform.session() as session:
        page, cursor = alerts.list_alerts(
            session,
            status="active",
            severity="major",
            org_units=[village],
            device_type="air_quality",
            after=None,
            limit=3,
        )
        rest, end = alerts.list_alerts(
            session, status=None, severity=None, org_units=None, device_type=None, after=cursor, limit=3
        )
        with pytest.raises(InvalidInput):
            alerts.list_alerts(
                session, status="open", severity=None, org_units=None, device_type=None, after=None, limit=3
            )
    assert len(page) == 3 and len(rest) == 2 and end is None
    open_one = next(r for r in [*page, *rest] if r.subject != "AQ-1")
    cleared_id = next(r.id for r in [*page, *rest] if r.subject == "AQ-1")
    with platform.transaction() as session:
        row = alerts.acknowledge(
            session, alert_id=open_one.id, actor="dispatcher:li", now=platform.clock.now()
        )
        assert row.status == "acknowledged" and row.acknowledged_by == "dispatcher:li"
        assert (
            alerts.assign(
                session, alert_id=open_one.id, assignee=" 城管 team 3 ", now=platform.clock.now()
            ).assignee
            == "城管 team 3"
        )
        with pytest.raises(NotFound):
            alerts.acknowledge(session, alert_id="nope", actor="x", now=platform.clock.now())
        with pytest.raises(InvalidInput):
            alerts.assign(session, alert_id=open_one.id, assignee=" ", now=platform.clock.now())
    with platform.transaction() as session:
        manager.apply(
            session,
            "air_quality",
            [_transitions(_rule(), cleared=[1])],
            None,
            ctx=SYSTEM,
            now=platform.clock.now(),
        )
    with platform.transaction() as session:
        with pytest.raises(Conflict):
            alerts.acknowledge(session, alert_id=cleared_id, actor="x", now=platform.clock.now())
        assert session.get(AlertRow, cleared_id).status == "cleared"


def test_alerts_are_mirrored_as_hub_alert_entities(platform: Platform) -> None:
    from citybrain.hub.entities import service as entity_service

    village = _village(platform)
    index = DeviceIndex(list(TYPES), list(platform.org_tree.units))
    _register(platform, [devices.DeviceInput("AQ-0", "air_quality", village)], index)
    manager = alerts.AlertManager(index.org_units)
    with platform.transaction() as session:
        outcome = manager.apply(
            session,
            "air_quality",
            [_transitions(_rule(), raised=[0])],
            None,
            ctx=SYSTEM,
            now=platform.clock.now(),
        )
        events = alerts.mirror(platform, session, [e.alert for e in outcome.events], ctx=SYSTEM)
    alert_id = outcome.events[0].alert["id"]
    assert [e.entity_id for e in events] == [f"urn:ngsi-ld:Alert:{alert_id}"]
    with platform.transaction() as session:
        cleared = manager.apply(
            session,
            "air_quality",
            [_transitions(_rule(), cleared=[0], ts=2000.0)],
            None,
            ctx=SYSTEM,
            now=platform.clock.now(),
        )
        alerts.mirror(platform, session, [e.alert for e in cleared.events], ctx=SYSTEM)
    with platform.session() as session:
        entity = entity_service.row_to_ngsi(
            entity_service.get_entity(session, entity_id=f"urn:ngsi-ld:Alert:{alert_id}")
        )
    assert entity["severity"]["value"] == "high" and entity["status"]["value"] == "cleared"
    assert entity["alertSource"]["object"] == "urn:ngsi-ld:Device:AQ-0"
    assert entity["validTo"]["value"].startswith("1970-01-01T00:33:20")
    assert entity["orgUnit"]["object"] == f"urn:ngsi-ld:OrgUnit:{village}"
