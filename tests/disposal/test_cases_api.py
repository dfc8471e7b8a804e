"""Cases over HTTP on both stores with the shipped catalogue: open, list and page, act (409 naming the
allowed actions, 422 naming missing evidence), follow, the inbox, routing rules as data, cases opened from
sensing alerts through the bus, and the supervision routes."""

from __future__ import annotations

import time

from fastapi.testclient import TestClient

from citybrain.platform import Platform

POSTER = "CG-01-002"  # 乱涂写乱张贴: village level, evidence photo_before + photo_after
EVIDENCE = [{"kind": "photo_before", "url": "https://files.example/b.jpg"},
            {"kind": "photo_after", "url": "https://files.example/a.jpg"}]


def _villages(platform: Platform) -> list[str]:
    return [code for code, unit in platform.org_tree.units.items() if unit.kind == "village"]


def _open(client: TestClient, village: str, **extra) -> dict:
    body = {"eventType": POSTER, "orgUnit": village, "description": "墙上小广告，联系人王芳 13912345678",
            "reporter": {"name": "王芳", "phone": "13912345678"}, **extra}
    answer = client.post("/api/v1/cases", json=body)
    assert answer.status_code == 201, answer.text
    assert answer.headers["location"] == f"/api/v1/cases/{answer.json()['id']}"
    return answer.json()


def _act(client: TestClient, case: dict, action: str, **body) -> dict:
    answer = client.post(f"/api/v1/cases/{case['number']}/transitions", json={"action": action, **body})
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_a_case_over_http_from_report_to_closure(client: TestClient, platform: Platform) -> None:
    village = _villages(platform)[0]
    case = _open(client, village)
    assert case["status"] == "dispatched" and case["handlingUnit"] == village and case["level"] == "village"
    assert "13912345678" not in case["description"] and "[手机号]" in case["description"]  # no role: redacted
    illegal = client.post(f"/api/v1/cases/{case['id']}/transitions", json={"action": "close"})
    assert illegal.status_code == 409 and illegal.headers["content-type"].startswith("application/problem+json")
    assert illegal.json()["detail"] == ("a dispatched case cannot close; allowed: receive, return, escalate, "
                                        "suspend, merge")
    case = _act(client, case, "receive")
    no_evidence = client.post(f"/api/v1/cases/{case['id']}/transitions",
                              json={"action": "handle", "attachments": EVIDENCE[1:]})
    assert no_evidence.status_code == 422 and no_evidence.json()["errors"][0]["field"] == "attachments"
    assert "photo_before" in no_evidence.json()["detail"]
    for action, extra in (("handle", {"attachments": EVIDENCE}), ("verify", {}), ("close", {})):
        case = _act(client, case, action, **extra)
    assert case["status"] == "closed" and case["allowedActions"] == ["reopen"]
    steps = client.get(f"/api/v1/cases/{case['id']}/transitions").json()["items"]
    assert [s["action"] for s in steps] == ["report", "triage", "dispatch", "receive", "handle", "verify", "close"]
    assert steps[4]["attachments"][0]["url"] == "https://files.example/b.jpg"
    reports = client.get(f"/api/v1/cases/{case['id']}/reports").json()["items"]
    assert reports[0]["contact"] == {"name": "[姓名]", "phone": "[手机号]", "email": None}
    unhappy = client.post(f"/api/v1/reports/{reports[0]['id']}/feedback",
                          json={"resolved": True, "satisfied": False, "comment": "态度不好"})
    assert unhappy.status_code == 200 and unhappy.json()["status"] == "reopened"


def test_listing_filters_pages_and_refuses_bad_filters(client: TestClient, platform: Platform) -> None:
    villages = _villages(platform)
    made = [_open(client, villages[i % 2]) for i in range(5)]
    page = client.get("/api/v1/cases", params={"limit": 2, "status": "open"}).json()
    assert [c["id"] for c in page["items"]] == [c["id"] for c in reversed(made)][:2] and page["next_cursor"]
    rest = client.get("/api/v1/cases", params={"limit": 10, "cursor": page["next_cursor"]}).json()
    assert len(rest["items"]) == 3 and rest["next_cursor"] is None
    town = platform.org_tree.units[villages[0]].parent_code
    under = client.get("/api/v1/cases", params={"orgUnit": villages[0]}).json()["items"]
    assert {c["orgUnit"] for c in under} == {villages[0]} and len(under) == 3
    assert len(client.get("/api/v1/cases", params={"orgUnit": town}).json()["items"]) >= 3
    inbox = client.get("/api/v1/cases/inbox", params={"handlingUnit": villages[1]}).json()["items"]
    assert len(inbox) == 2 and inbox[0]["actions"][0] == "receive" and inbox[0]["dueAt"] <= inbox[1]["dueAt"]
    for params, field in (({"status": "opened"}, "status"), ({"orgUnit": "000"}, "orgUnit"),
                          ({"cursor": "x"}, "cursor"), ({"createdFrom": "2026-01-01T00:00:00"}, "createdFrom")):
        answer = client.get("/api/v1/cases", params=params)
        assert answer.status_code == 422 and answer.json()["errors"][0]["field"] == field, (params, answer.text)
    bad = client.post("/api/v1/cases", json={"eventType": "ZZ-00-000", "orgUnit": villages[0]})
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "eventType"
    assert client.get("/api/v1/cases/20261125-999999").status_code == 404
    wrong = client.post(f"/api/v1/cases/{made[0]['id']}/transitions", json={"action": "fly"})
    assert wrong.status_code == 422 and wrong.json()["errors"][0]["field"] == "body.action"


def test_routing_rules_are_data_and_take_effect(client: TestClient, platform: Platform) -> None:
    village = _villages(platform)[0]
    town = platform.org_tree.units[village].parent_code
    assert client.get("/api/v1/routing/rules").json() == {"version": 0, "rules": []}
    rules = {"rules": [{"name": "posters in this town go to its sub-centre and the landscaping bureau",
                        "when": {"event_types": ["CG-01-*"], "org_units": [town]}, "level": "town",
                        "department": "lvrong", "add_assisting": ["chengguan"]}]}
    put = client.put("/api/v1/routing/rules", json=rules)
    assert put.status_code == 200 and put.json()["version"] == 1
    case = _open(client, village)
    assert case["level"] == "town" and case["handlingUnit"] == town
    assert case["leadDepartment"] == "lvrong" and case["assisting"] == ["chengguan"]
    steps = client.get(f"/api/v1/cases/{case['id']}/transitions").json()["items"]
    assert steps[1]["data"]["rules"] == [rules["rules"][0]["name"]] and steps[1]["data"]["routingVersion"] == 1
    bad = client.put("/api/v1/routing/rules", json={"rules": [{"name": "x", "when": {"org_units": ["000"]}}]})
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "rules[0].when.org_units"
    bad = client.put("/api/v1/routing/rules", json={"rules": [{"name": "x", "department": "nasa"}]})
    assert bad.status_code == 422 and "unknown department nasa" in bad.json()["detail"]
    assert client.get("/api/v1/routing/rules").json()["version"] == 1  # nothing accepted was lost


def test_smoke_alarms_open_one_case_per_place(client: TestClient, platform: Platform) -> None:
    village = _villages(platform)[0]
    devices = [{"deviceId": f"SM-{i}", "deviceType": "smoke_detector", "orgUnit": village} for i in range(3)]
    assert client.post("/api/v1/devices", json=devices).status_code == 201
    now = time.time()
    readings = [{"deviceId": f"SM-{i}", "ts": now - 5, "smokeDensity": 35.0} for i in range(3)]
    assert client.post("/api/v1/telemetry", json=readings).status_code == 200

    def sensing_cases() -> list[dict]:
        return client.get("/api/v1/cases", params={"channel": "sensing"}).json()["items"]

    deadline = time.monotonic() + 10
    while (not sensing_cases() or sensing_cases()[0]["reports"] < 3) and time.monotonic() < deadline:
        time.sleep(0.05)
    cases = sensing_cases()
    assert len(cases) == 1, cases  # three detectors in one village: one case, three reports
    case = cases[0]
    assert case["eventType"] == "XF-01-001" and case["reports"] == 3 and case["priority"] == "emergency"
    assert case["leadDepartment"] == "xiaofang" and case["status"] == "dispatched"
    assert case["handlingUnit"] == platform.org_tree.units[village].parent_code  # town level
    reports = client.get(f"/api/v1/cases/{case['id']}/reports").json()["items"]
    assert sorted(r["text"].split(", ")[1] for r in reports) == ["SM-0", "SM-1", "SM-2"]


def test_supervision_routes(client: TestClient, platform: Platform) -> None:
    village = _villages(platform)[0]
    for _ in range(5):
        _open(client, village, location={"type": "Point", "coordinates": [120.1551, 30.2741]})
    rates = client.get("/api/v1/supervision/rates", params={"by": "department"}).json()
    assert rates["items"][0]["key"] == "chengguan" and rates["items"][0]["cases"] == 5
    assert client.get("/api/v1/supervision/rates", params={"by": "planet"}).json()["errors"][0]["field"] == "by"
    spots = client.get("/api/v1/supervision/hotspots", params={"minCases": 5}).json()["items"]
    assert len(spots) == 1 and spots[0]["eventType"] == POSTER and spots[0]["cell"]
    opened = client.post("/api/v1/supervision/scan", params={"minCases": 5}).json()["opened"]
    assert len(opened) == 1 and opened[0]["department"] == "chengguan"
    tasks = client.get("/api/v1/supervision/tasks", params={"status": "open"}).json()["items"]
    assert [t["id"] for t in tasks] == [opened[0]["id"]]
    closed = client.post(f"/api/v1/supervision/tasks/{tasks[0]['id']}/close", json={"note": "已整治"})
    assert closed.status_code == 200 and closed.json()["status"] == "closed"
    day = platform.clock.now().date().isoformat()
    page = client.get("/api/v1/supervision/brief", params={"date": day})
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "城市运行日报" in page.text and "<svg" in page.text
    pdf = client.get("/api/v1/supervision/brief", params={"date": day, "format": "pdf", "lang": "en"})
    assert pdf.status_code == 200 and pdf.content.startswith(b"%PDF") and len(pdf.content) > 5000
    assert client.get("/api/v1/supervision/brief", params={"date": "2026-13-01"}).status_code == 422


def test_evidence_uploaded_from_the_field_is_attached_by_its_hash(client: TestClient, platform: Platform) -> None:
    photo = b"\xff\xd8\xff\xe0" + b"jpeg bytes of a cleaned wall" * 100
    uploaded = client.post("/api/v1/attachments", content=photo, headers={"content-type": "image/jpeg"})
    assert uploaded.status_code == 201, uploaded.text
    digest = uploaded.json()["sha256"]
    again = client.post("/api/v1/attachments", content=photo, headers={"content-type": "image/jpeg"})
    assert again.json()["sha256"] == digest  # stored once
    assert client.get(f"/api/v1/attachments/{digest}").content == photo
    case = _act(client, _open(client, _villages(platform)[0]), "receive")
    evidence = [{"kind": "photo_before", "sha256": digest}, {"kind": "photo_after", "sha256": digest}]
    handled = _act(client, case, "handle", attachments=evidence)
    assert handled["status"] == "handled"
    refused = client.post("/api/v1/attachments", content=b"MZ\x90", headers={"content-type": "application/x-msdownload"})
    assert refused.status_code == 422 and refused.json()["errors"][0]["field"] == "content-type"
    assert client.get("/api/v1/attachments/" + "0" * 64).status_code == 404
