"""Data sharing on both stores: a department asks for another's dataset, the owner grants it no wider than
asked, the grant is the only way to read (its fields, its units, while it lasts), it expires by itself,
and every step and every read is audited."""

from __future__ import annotations

from datetime import timedelta

from fastapi.testclient import TestClient

from citybrain.api.app import create_app
from citybrain.core.clock import FrozenClock
from citybrain.governance import auth, sharing
from citybrain.platform import Platform

TOWN_A, TOWN_B = "330106002", "330106004"
VILLAGE_A, VILLAGE_B = "330106002052", "330106004053"


def _key(platform: Platform, roles: list[str], scope: list[str] | None) -> dict[str, str]:
    return {"X-API-Key": auth.create_key(platform, name="t", roles=roles, org_scope=scope).secret}


def _lights(client: TestClient) -> None:
    for n, village in enumerate((VILLAGE_A, VILLAGE_A, VILLAGE_B)):
        answer = client.post("/api/v1/entities", json={
            "id": f"urn:ngsi-ld:Streetlight:{n}", "type": "Streetlight",
            "orgUnit": {"type": "Relationship", "object": f"urn:ngsi-ld:OrgUnit:{village}"},
            "powerState": {"type": "Property", "value": "on"}, "illuminanceLevel": {"type": "Property", "value": 0.5}})
        assert answer.status_code == 201, answer.text


def test_a_grant_no_wider_than_asked_is_the_only_way_in_until_it_ends(platform: Platform, clock: FrozenClock) -> None:
    ecology = _key(platform, ["department_handler"], ["330106-shengtai"])  # 生态环境局 asks
    lighting = _key(platform, ["department_handler"], ["330106-chengguan"])  # 城管 owns street lighting
    water = _key(platform, ["department_handler"], ["330106-shuiwu"])
    auditor = _key(platform, ["auditor"], None)
    until = (clock.now() + timedelta(days=30)).isoformat()
    with TestClient(create_app(platform)) as client:
        _lights(client)
        ask = {"requester": "shengtai", "purpose": "light pollution study", "fields": ["powerState"],
               "orgScope": [TOWN_A], "until": until}
        assert client.post("/api/v1/datasets/entities:Streetlight/shares", json={**ask, "requester": "chengguan"},
                           headers=lighting).json()["errors"][0]["field"] == "requester"  # its own data
        assert client.post("/api/v1/datasets/entities:Streetlight/shares", json=ask, headers=water).status_code == 403
        made = client.post("/api/v1/datasets/entities:Streetlight/shares", json=ask, headers=ecology)
        assert made.status_code == 201, made.text
        share = made.json()
        assert share["status"] == "requested" and share["owner"] == "chengguan"
        records = f"/api/v1/shares/{share['id']}/records"
        assert client.get(records, headers=ecology).status_code == 403  # not granted yet
        decision = f"/api/v1/shares/{share['id']}/decision"
        assert client.post(decision, json={"approve": True}, headers=ecology).status_code == 403  # not the owner
        wider = client.post(decision, json={"approve": True, "fields": ["powerState", "illuminanceLevel"],
                                            "orgScope": [TOWN_B]}, headers=lighting)
        assert wider.status_code == 422
        assert {e["field"] for e in wider.json()["errors"]} == {"fields[1]", "orgScope[0]"}
        granted = client.post(decision, json={"approve": True, "until": (clock.now() + timedelta(days=7)).isoformat(),
                                              "reason": "for the study"}, headers=lighting)
        assert granted.status_code == 200 and granted.json()["status"] == "approved"
        page = client.get(records, headers=ecology, params={"limit": 10})
        assert page.status_code == 200
        items = page.json()["items"]
        assert sorted(i["id"] for i in items) == ["urn:ngsi-ld:Streetlight:0", "urn:ngsi-ld:Streetlight:1"]  # town A
        assert all(set(i) == {"id", "type", "powerState"} for i in items)  # the granted field only
        assert client.get(records, headers=water).status_code == 403  # another department
        listed = client.get("/api/v1/shares", headers=water).json()["items"]
        assert listed == []  # not its business
        assert [s["id"] for s in client.get("/api/v1/shares", headers=lighting).json()["items"]] == [share["id"]]
        clock.advance(days=8)
        assert client.get(records, headers=ecology).status_code == 403
        assert sharing.expire_due(platform) == 1
        assert client.get("/api/v1/shares", headers=lighting).json()["items"][0]["status"] == "expired"
        trail = client.get("/api/v1/audit", params={"resource": f"share:{share['id']}"}, headers=auditor).json()
        assert [r["action"] for r in trail["items"]] == ["share.request", "share.approve", "share.expire"]
        reads = client.get("/api/v1/audit", params={"resource": records}, headers=auditor).json()["items"]
        assert [(r["outcome"], r["detail"].get("denied")) for r in reads] == [
            ("403", "forbidden"), ("200", None), ("403", "forbidden"), ("403", "forbidden")]
        assert all(r["detail"]["personal_data"] for r in reads)


def test_a_grant_can_be_revoked_and_clearance_still_applies(platform: Platform, clock: FrozenClock) -> None:
    owner = _key(platform, ["dispatcher"], None)  # the district centre acts for the operations centre
    analyst = _key(platform, ["analyst"], None)
    handler = _key(platform, ["district_leader"], ["330106-chengguan"])  # leaders see contacts partly
    until = (clock.now() + timedelta(days=3)).isoformat()
    with TestClient(create_app(platform)) as client:
        assert client.post("/api/v1/cases", json={"eventType": "CG-01-002", "orgUnit": VILLAGE_A,
                                                  "description": "墙上小广告 13912345678"}).status_code == 201
        shares = []
        for requester in ("chengguan", "jiaotong"):
            made = client.post("/api/v1/datasets/cases/shares", headers=owner, json={
                "requester": requester, "purpose": "monthly review", "fields": ["number", "description"],
                "until": until})
            assert made.status_code == 201, made.text
            decided = client.post(f"/api/v1/shares/{made.json()['id']}/decision", json={"approve": True},
                                  headers=owner)
            assert decided.json()["status"] == "approved"
            shares.append(made.json()["id"])
        page = client.get(f"/api/v1/shares/{shares[0]}/records", headers=handler).json()
        assert page["items"][0]["number"] and "13912345678" not in str(page["items"])  # masked for the reader
        # an analyst at the district level acts for every department, but is not cleared for personal data
        refused = client.get(f"/api/v1/shares/{shares[1]}/records", headers=analyst)
        assert refused.status_code == 403 and "not cleared" in refused.json()["detail"]
        revoked = client.post(f"/api/v1/shares/{shares[0]}/revoke", json={"reason": "done"}, headers=handler)
        assert revoked.status_code == 200 and revoked.json()["status"] == "revoked"
        assert client.get(f"/api/v1/shares/{shares[0]}/records", headers=handler).status_code == 403
        assert client.post(f"/api/v1/shares/{shares[0]}/revoke", json={}, headers=handler).status_code == 409
