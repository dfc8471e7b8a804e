"""The access-control matrix, shared by its test (tests/governance/test_access.py) and its benchmark
(bench/access.py): every role, district-wide and scoped to one street, against every route family, reading
and writing data that lies inside that street, in another street, or nowhere in particular.

What it holds the platform to, stated here apart from the policy it checks:
- a caller scoped to a street never reaches data of another street, nor a district-wide family;
- a caller never reads data classified above its role's clearance (below: `CLEARANCE`);
- every refusal is on the audit log, under the request's id;
- what the policy grants is let through (so "deny everything" does not pass either).
Which role may use which family is the policy's to say (`governance.access.POLICY`); the matrix checks the
API does what the policy says.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from fastapi.testclient import TestClient

from citybrain.core.context import ROLES
from citybrain.governance import access, auth
from citybrain.governance.models import AuditRecordRow
from citybrain.platform import Platform

TOWN_A, TOWN_B = "330106002", "330106004"  # 北山街道 and 西溪街道 of Xihu
VILLAGE_A = "330106002052"  # 宝石社区
LEVELS = ("public", "internal", "personal", "sensitive")
# What each role may read at most, as the platform's operators would state it: nobody outside the people who
# handle cases sees citizens' data; analysts and administrators work with internal data only.
CLEARANCE = {"district_leader": "personal", "dispatcher": "personal", "department_handler": "personal",
             "village_station": "personal", "analyst": "internal", "auditor": "sensitive", "system": "sensitive",
             "admin": "internal"}
SMOKE = "烧烤店每天晚上油烟很大，熏得整栋楼都是味道，请有关部门管一管。我姓王，电话13812345678。"
PROBE_TYPE = {"name": "AccessProbe", "title": "Access probe", "attributes": {"note": {"kind": "string"}}}
POSTER = "CG-01-002"


@dataclass
class World:
    """What the matrix reads and writes: one of each thing in street A and in street B."""

    villages: dict[str, str]
    cases: dict[str, str] = field(default_factory=dict)
    reports: dict[str, int] = field(default_factory=dict)
    alerts: dict[str, str] = field(default_factory=dict)
    subscriptions: dict[str, str] = field(default_factory=dict)
    system: str = "urn:ngsi-ld:ConnectedSystem:access-matrix"
    routing: dict[str, Any] = field(default_factory=dict)
    counter: int = 0

    def next(self) -> int:
        self.counter += 1
        return self.counter


@dataclass(frozen=True)
class Probe:
    family: str
    method: str
    path: Callable[[World, str], str]
    area: str | None = None  # "A" or "B": where the data lies; None: not placed (or the whole district)
    level: str | None = None  # how the data is classified, when above its family's
    body: Callable[[World, str], Any] | None = None
    params: Callable[[World, str], dict[str, Any]] | None = None
    must_succeed: bool = True  # an admitted call must answer 2xx (else it only has to be let through)
    batch: bool = False  # refusals come per item (status 403 or "outside your org scope")

    @property
    def writing(self) -> bool:
        return self.method not in ("GET", "HEAD")

    def name(self, area: str | None) -> str:
        return f"{self.method} {self.family}" + (f" ({area})" if area else "")


def _town(area: str) -> str:
    return TOWN_A if area == "A" else TOWN_B


def _entity(area: str) -> str:
    return f"urn:ngsi-ld:AccessProbe:{area}"


def _window(_w: World, _a: str) -> dict[str, Any]:
    now = datetime.now(UTC)
    return {"start": (now - timedelta(hours=12)).isoformat(), "end": (now + timedelta(hours=1)).isoformat()}


PLACED = (
    Probe("entities", "GET", lambda w, a: f"/api/v1/entities/{_entity(a)}"),
    Probe("entities", "GET", lambda w, a: "/api/v1/entities",
          params=lambda w, a: {"type": "AccessProbe", "orgUnit": _town(a)}),
    Probe("entities", "PATCH", lambda w, a: f"/api/v1/entities/{_entity(a)}/attrs",
          body=lambda w, a: {"note": {"type": "Property", "value": f"checked {w.next()}"}}),
    Probe("entities", "GET", lambda w, a: f"/api/v1/entities/urn:ngsi-ld:ServiceRequest:{a}", level="personal"),
    Probe("subscriptions", "GET", lambda w, a: f"/api/v1/subscriptions/{w.subscriptions[a]}"),
    Probe("subscriptions", "PATCH", lambda w, a: f"/api/v1/subscriptions/{w.subscriptions[a]}",
          body=lambda w, a: {"description": f"checked {w.next()}"}),
    Probe("sensing", "GET", lambda w, a: f"/api/v1/devices/AQ-{a}"),
    Probe("sensing", "GET", lambda w, a: "/api/v1/devices", params=lambda w, a: {"orgUnit": _town(a)}),
    Probe("sensing", "GET", lambda w, a: "/api/v1/telemetry",
          params=lambda w, a: {"deviceId": f"AQ-{a}", **_window(w, a)}),
    Probe("sensing", "GET", lambda w, a: "/api/v1/vitals", params=lambda w, a: {"orgUnit": _town(a)}),
    Probe("sensing", "POST", lambda w, a: "/api/v1/devices", batch=True,
          body=lambda w, a: [{"deviceId": f"P-{w.next()}", "deviceType": "air_quality",
                              "orgUnit": w.villages[a]}]),
    Probe("sensing", "POST", lambda w, a: "/api/v1/telemetry", batch=True,
          body=lambda w, a: [{"deviceId": f"AQ-{a}", "ts": time.time(), "seq": w.next() + 10, "pm25": 20.0}]),
    Probe("alerts", "GET", lambda w, a: "/api/v1/alerts", params=lambda w, a: {"orgUnit": _town(a)}),
    Probe("alerts", "POST", lambda w, a: f"/api/v1/alerts/{w.alerts[a]}/assign",
          body=lambda w, a: {"assignee": "duty officer"}),
    Probe("disposal", "GET", lambda w, a: f"/api/v1/cases/{w.cases[a]}"),
    Probe("disposal", "GET", lambda w, a: f"/api/v1/cases/{w.cases[a]}/reports"),
    Probe("disposal", "GET", lambda w, a: "/api/v1/cases", params=lambda w, a: {"orgUnit": _town(a)}),
    Probe("disposal", "GET", lambda w, a: "/api/v1/cases/export", params=lambda w, a: {"orgUnit": _town(a)}),
    Probe("disposal", "POST", lambda w, a: "/api/v1/cases",
          body=lambda w, a: {"eventType": POSTER, "orgUnit": w.villages[a], "description": "墙上小广告",
                             "dispatch": False}),
    Probe("disposal", "POST", lambda w, a: f"/api/v1/cases/{w.cases[a]}/transitions",
          body=lambda w, a: {"action": "receive"}, must_succeed=False),
    Probe("hotline", "GET", lambda w, a: f"/api/v1/hotline/complaints/{w.reports[a]}"),
    Probe("hotline", "POST", lambda w, a: "/api/v1/hotline/complaints",
          body=lambda w, a: {"text": SMOKE, "orgUnit": w.villages[a], "deduplicate": False}),
)
UNPLACED = (
    Probe("entity types", "GET", lambda w, a: "/api/v1/types"),
    Probe("entity types", "PUT", lambda w, a: "/api/v1/types/AccessProbe", body=lambda w, a: PROBE_TYPE),
    Probe("org tree", "GET", lambda w, a: f"/api/v1/org/units/{TOWN_B}"),
    Probe("connected systems", "GET", lambda w, a: "/api/v1/systems"),
    Probe("connected systems", "PATCH", lambda w, a: f"/api/v1/systems/{w.system}",
          body=lambda w, a: {"name": f"Xihu lighting {w.next()}"}),
    Probe("commands", "GET", lambda w, a: "/api/v1/commands"),
    Probe("commands", "POST", lambda w, a: "/api/v1/commands", must_succeed=False,
          body=lambda w, a: {"target": _entity("A"), "name": "switch", "system": w.system}),
    Probe("catalogue", "GET", lambda w, a: "/api/v1/catalogue"),
    Probe("routing", "GET", lambda w, a: "/api/v1/routing/rules"),
    Probe("routing", "PUT", lambda w, a: "/api/v1/routing/rules", body=lambda w, a: w.routing),
    Probe("supervision", "GET", lambda w, a: "/api/v1/supervision/rates"),
    Probe("supervision", "POST", lambda w, a: "/api/v1/supervision/scan"),
    Probe("hotline tools", "POST", lambda w, a: "/api/v1/hotline/classify", body=lambda w, a: {"text": SMOKE}),
    Probe("traffic", "GET", lambda w, a: "/api/v1/traffic/status"),
    Probe("traffic", "POST", lambda w, a: "/api/v1/traffic/plans", body=lambda w, a: {}, must_succeed=False),
    Probe("audit", "GET", lambda w, a: "/api/v1/audit"),
    Probe("data catalog", "GET", lambda w, a: "/api/v1/datasets"),
    Probe("data sharing", "GET", lambda w, a: "/api/v1/shares"),
    Probe("data catalog", "PUT", lambda w, a: "/api/v1/datasets/cases/rules",
          body=lambda w, a: {"rules": [{"id": "fresh", "check": "freshness", "max_age": "1d"}]}),
    Probe("authentication", "GET", lambda w, a: "/api/v1/auth/me"),
    Probe("open311", "GET", lambda w, a: "/open311/v2/services.json"),
    Probe("operations", "GET", lambda w, a: "/health"),
)


@dataclass(frozen=True)
class Caller:
    role: str
    scoped: bool  # scoped to street A, else district-wide
    key: str

    @property
    def name(self) -> str:
        return f"{self.role}@{'street A' if self.scoped else 'district'}"


@dataclass
class Attempt:
    caller: Caller
    probe: Probe
    area: str | None
    status: int
    admitted: bool  # what the policy and the rules above say
    refused: bool  # what the API did
    audited: bool
    cross_scope: bool
    over_classified: bool
    detail: str

    def describe(self) -> str:
        return (f"{self.caller.name} {self.probe.name(self.area)}: {self.status}, "
                f"expected {'admitted' if self.admitted else 'refused'}: {self.detail[:300]}")


def build_world(client: TestClient, platform: Platform) -> World:
    """Data in both streets, made by an unrestricted caller (an open installation's anonymous one)."""
    villages = {"A": VILLAGE_A, "B": next(code for code, unit in sorted(platform.org_tree.units.items())
                                          if unit.parent_code == TOWN_B)}
    world = World(villages=villages)

    def ok(answer: Any) -> Any:
        assert answer.status_code < 300, answer.text
        return answer.json() if answer.content else None

    ok(client.put("/api/v1/types/AccessProbe", json=PROBE_TYPE))
    ok(client.post("/api/v1/systems", json={"id": world.system, "name": "Xihu lighting", "kind": "iot-platform"}))
    for area, village in villages.items():
        org = {"type": "Relationship", "object": f"urn:ngsi-ld:OrgUnit:{village}"}
        ok(client.post("/api/v1/entities", json={"id": _entity(area), "type": "AccessProbe", "orgUnit": org,
                                                 "note": {"type": "Property", "value": "made"}}))
        ok(client.post("/api/v1/entities", json={
            "id": f"urn:ngsi-ld:ServiceRequest:{area}", "type": "ServiceRequest", "orgUnit": org,
            "description": {"type": "Property", "value": "路灯不亮，电话13812345678"}}))
        case = ok(client.post("/api/v1/cases", json={"eventType": POSTER, "orgUnit": village,
                                                     "description": "墙上小广告，联系人王芳 13912345678",
                                                     "reporter": {"name": "王芳", "phone": "13912345678"}}))
        world.cases[area] = case["id"]
        taken = ok(client.post("/api/v1/hotline/complaints", json={
            "text": SMOKE, "orgUnit": village, "deduplicate": False,
            "contact": {"name": "王先生", "phone": "13812345678"}}))
        world.reports[area] = taken["reportId"]
        ok(client.post("/api/v1/devices", json=[{"deviceId": f"AQ-{area}", "deviceType": "air_quality",
                                                 "orgUnit": village, "lon": 120.13, "lat": 30.27}]))
    now = time.time()
    ok(client.post("/api/v1/telemetry", json=[{"deviceId": f"AQ-{area}", "ts": now - 5, "seq": 1, "pm25": 180.0}
                                              for area in villages]))
    deadline = time.monotonic() + 10
    while len(world.alerts) < 2 and time.monotonic() < deadline:
        for alert in ok(client.get("/api/v1/alerts", params={"status": "active"}))["items"]:
            if alert["subject"] in ("AQ-A", "AQ-B"):
                world.alerts[alert["subject"][-1]] = alert["id"]
        time.sleep(0.05)
    assert len(world.alerts) == 2, "the readings raised no alert in one of the streets"
    rules = ok(client.get("/api/v1/routing/rules"))
    rules.pop("version")
    world.routing = rules
    for area in villages:  # each street's own system key makes that street's subscription
        key = auth.create_key(platform, name=f"subscriber {area}", roles=["system"], org_scope=[_town(area)]).secret
        made = ok(client.post("/api/v1/subscriptions", headers={"X-API-Key": key}, json={
            "entityTypes": ["AccessProbe"], "endpoint": "http://127.0.0.1:9/unreachable"}))
        world.subscriptions[area] = made["id"]
    return world


def callers(platform: Platform) -> list[Caller]:
    """Every role, once for the whole district and once for street A (API keys: signing in is tested apart)."""
    out = []
    for role in ROLES:
        for scoped in (False, True):
            made = auth.create_key(platform, name=f"matrix {role}", roles=[role],
                                   org_scope=[TOWN_A] if scoped else None)
            out.append(Caller(role, scoped, made.secret))
    return out


def _admitted(caller: Caller, probe: Probe, area: str | None) -> tuple[bool, bool, bool]:
    """(admitted, cross-scope, over-classified) for this caller on this probe."""
    family = access.POLICY[probe.family]
    if family.open:
        return True, False, False
    level = max(family.classification, probe.level or "public", key=LEVELS.index)
    over = LEVELS.index(CLEARANCE[caller.role]) < LEVELS.index(level)
    cross = caller.scoped and (area == "B" or family.district_wide)
    granted = caller.role in (family.write if probe.writing else family.read)
    return granted and not over and not cross, cross, over


def _refused(probe: Probe, answer: Any) -> bool:
    if answer.status_code in (401, 403):
        return True
    if answer.status_code == 404 and answer.headers.get("content-type", "").startswith("application/problem"):
        return True  # hidden as not found: everything the matrix asks for exists
    if probe.batch and answer.status_code in (207, 422):
        errors = answer.json().get("errors") or []
        return bool(errors) and all(e.get("status") == 403 or "org scope" in str(e.get("reason")) for e in errors)
    return False


def run_matrix(client: TestClient, platform: Platform, world: World, people: list[Caller]) -> list[Attempt]:
    attempts: list[Attempt] = []
    plan = [(probe, area) for probe in PLACED for area in ("A", "B")] + [(probe, None) for probe in UNPLACED]
    for caller in people:
        for probe, area in plan:
            place = area or "A"
            kwargs: dict[str, Any] = {"headers": {"X-API-Key": caller.key, "X-Purpose": "access matrix"}}
            if probe.body is not None:
                kwargs["json"] = probe.body(world, place)
            if probe.params is not None:
                kwargs["params"] = probe.params(world, place)
            answer = client.request(probe.method, probe.path(world, place), **kwargs)
            admitted, cross, over = _admitted(caller, probe, area)
            attempts.append(Attempt(caller, probe, area, answer.status_code, admitted, _refused(probe, answer),
                                    _audited(platform, answer, probe), cross, over, answer.text))
    return attempts


def _audited(platform: Platform, answer: Any, probe: Probe) -> bool:
    """Whether the request is on the audit log: by the id it answered with, as a refusal or a write."""
    request_id = answer.headers.get("x-request-id")
    if not request_id:
        return False
    with platform.session() as session:
        rows = session.scalars(sa.select(AuditRecordRow).where(AuditRecordRow.context_id == request_id)).all()
    return any(row.detail.get("denied") or probe.writing for row in rows)


def summary(attempts: list[Attempt]) -> dict[str, Any]:
    """The headline figures: attempts that must be refused, and the share that was (and audited)."""
    must_refuse = [a for a in attempts if a.cross_scope or a.over_classified]
    denied = [a for a in must_refuse if a.refused and a.audited]
    return {
        "access_attempts": len(attempts),
        "cross_scope_attempts": sum(a.cross_scope for a in attempts),
        "over_classified_attempts": sum(a.over_classified for a in attempts),
        "must_refuse": len(must_refuse),
        "denied_share": round(len(denied) / len(must_refuse), 4) if must_refuse else None,
        "admitted_ok": sum(a.admitted and not a.refused for a in attempts),
        "mismatches": sum(a.admitted == a.refused for a in attempts),
    }
