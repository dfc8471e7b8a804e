"""Authorisation on both stores: the access-control matrix (tests/access_matrix.py) — every role, for the
whole district and scoped to one street, against every route family — and the rules that hold whatever the
policy says: no cross-scope read or write, nothing above a role's clearance, every refusal audited."""

from __future__ import annotations

from fastapi.testclient import TestClient

from citybrain.api.app import create_app
from citybrain.governance import access
from citybrain.platform import Platform
from tests import access_matrix as matrix


def test_every_route_belongs_to_a_family_of_the_policy(platform: Platform) -> None:
    """A route nobody decided about is refused to everyone; the policy must cover the API as it stands."""
    app = create_app(platform, manage_lifecycle=False)
    families = {access.family_of_operation(op) for ops in app.openapi()["paths"].values() for op in ops.values()}
    assert families <= set(access.POLICY), families - set(access.POLICY)


def test_the_access_matrix(platform: Platform) -> None:
    with TestClient(create_app(platform)) as client:
        world = matrix.build_world(client, platform)
        attempts = matrix.run_matrix(client, platform, world, matrix.callers(platform))
    wrong = [a.describe() for a in attempts if a.admitted == a.refused]
    assert not wrong, f"{len(wrong)} of {len(attempts)} attempts went the wrong way:\n" + "\n".join(wrong[:40])
    unaudited = [a.describe() for a in attempts if a.refused and not a.audited]
    assert not unaudited, "refusals missing from the audit log:\n" + "\n".join(unaudited[:40])
    failed = [a.describe() for a in attempts if a.admitted and a.probe.must_succeed and a.status >= 300]
    assert not failed, "admitted calls that failed:\n" + "\n".join(failed[:40])
    figures = matrix.summary(attempts)
    assert figures["denied_share"] == 1.0
    assert figures["cross_scope_attempts"] > 100 and figures["over_classified_attempts"] > 50
    assert figures["admitted_ok"] > 150  # the matrix also proves what is granted works


def test_a_street_keys_subscriptions_are_its_own(platform: Platform) -> None:
    """A scoped caller neither sees nor changes another street's subscriptions, and its list shows its own."""
    with TestClient(create_app(platform)) as client:
        world = matrix.build_world(client, platform)
        key = access_key(platform, ["dispatcher"], [matrix.TOWN_A])
        listed = client.get("/api/v1/subscriptions", headers={"X-API-Key": key}).json()["items"]
        assert [s["id"] for s in listed] == [world.subscriptions["A"]]
        everything = client.get("/api/v1/subscriptions").json()["items"]  # the open installation's anonymous
        assert {s["id"] for s in everything} == set(world.subscriptions.values())


def test_classified_entity_types_are_left_out_of_what_a_caller_may_not_see(platform: Platform) -> None:
    with TestClient(create_app(platform)) as client:
        matrix.build_world(client, platform)
        analyst = {"X-API-Key": access_key(platform, ["analyst"], None)}
        dispatcher = {"X-API-Key": access_key(platform, ["dispatcher"], None)}
        seen = {e["type"] for e in client.get("/api/v1/entities", headers=analyst,
                                               params={"limit": 1000}).json()["items"]}
        assert "AccessProbe" in seen and "ServiceRequest" not in seen
        seen = {e["type"] for e in client.get("/api/v1/entities", headers=dispatcher,
                                               params={"limit": 1000}).json()["items"]}
        assert "ServiceRequest" in seen
        refused = client.get("/api/v1/entities", headers=analyst, params={"type": "ServiceRequest"})
        assert refused.status_code == 403 and "personal" in refused.json()["detail"]
        # a feed carries only what its maker may read
        made = client.post("/api/v1/subscriptions", headers=analyst,
                           json={"watchedAttributes": ["description"], "endpoint": "http://127.0.0.1:9/"})
        assert made.status_code == 403 and made.json()["errors"][0]["field"] == "entityTypes"


def test_a_refusal_says_why_and_is_on_the_audit_log(platform: Platform) -> None:
    with TestClient(create_app(platform)) as client:
        analyst = access_key(platform, ["analyst"], [matrix.TOWN_A])
        answer = client.get("/api/v1/audit", headers={"X-API-Key": analyst, "X-Purpose": "curiosity"})
        assert answer.status_code == 403
        assert answer.headers["content-type"].startswith("application/problem+json")
        assert "may not read audit" in answer.json()["detail"] and "auditor" in answer.json()["detail"]
        auditor = access_key(platform, ["auditor"], None)
        records = client.get("/api/v1/audit", headers={"X-API-Key": auditor},
                             params={"action": "GET /api/v1/audit"}).json()["items"]
        refused = [r for r in records if r["outcome"] == "403"]
        assert len(refused) == 1 and refused[0]["purpose"] == "curiosity"
        assert refused[0]["detail"]["denied"] == "forbidden" and refused[0]["actor"].startswith("key:")


def access_key(platform: Platform, roles: list[str], scope: list[str] | None) -> str:
    from citybrain.governance import auth

    return auth.create_key(platform, name="test", roles=roles, org_scope=scope).secret


def test_a_case_export_keeps_to_the_callers_area_masks_by_role_and_is_audited(platform: Platform) -> None:
    import csv
    import io

    import orjson

    with TestClient(create_app(platform)) as client:
        world = matrix.build_world(client, platform)
        station = {"X-API-Key": access_key(platform, ["village_station"], [matrix.TOWN_A]),
                   "X-Purpose": "monthly report"}
        answer = client.get("/api/v1/cases/export", headers=station, params={"reports": "true"})
        assert answer.status_code == 200 and answer.headers["content-type"] == "application/x-ndjson"
        assert answer.headers["content-disposition"].startswith('attachment; filename="cases-')
        cases = [orjson.loads(line) for line in answer.content.splitlines()]
        assert {case["id"] for case in cases} >= {world.cases["A"]} and world.cases["B"] not in {
            case["id"] for case in cases}
        assert all(platform.org_tree.within(case["orgUnit"], [matrix.TOWN_A]) for case in cases)
        text = answer.text
        assert "13912345678" not in text and "13812345678" not in text  # partial: 139****5678
        assert any(r["contact"]["phone"] for case in cases for r in case["reportItems"])
        table = client.get("/api/v1/cases/export", headers=station, params={"format": "csv"})
        rows = list(csv.DictReader(io.StringIO(table.text)))
        assert len(rows) == len(cases) and rows[0]["number"] and "13912345678" not in table.text
        assert client.get("/api/v1/cases/export", headers=station,
                          params={"orgUnit": matrix.TOWN_B}).status_code == 403
        assert client.get("/api/v1/cases/export", headers={
            "X-API-Key": access_key(platform, ["analyst"], None)}).status_code == 403
        assert client.get("/api/v1/cases/export", headers=station,
                          params={"format": "csv", "reports": "true"}).json()["errors"][0]["field"] == "reports"
        handler = {"X-API-Key": access_key(platform, ["department_handler"], None)}
        assert "13912345678" in client.get("/api/v1/cases/export", headers=handler,
                                           params={"reports": "true"}).text  # handlers call citizens back
        auditor = {"X-API-Key": access_key(platform, ["auditor"], None)}
        exports = client.get("/api/v1/audit", headers=auditor,
                             params={"action": "GET /api/v1/cases/export"}).json()["items"]
        assert [r["outcome"] for r in exports] == ["200", "200", "403", "403", "422", "200"]
        assert exports[0]["purpose"] == "monthly report" and exports[0]["detail"]["personal_data"] is True
        assert "reports=true" in exports[0]["detail"]["query"]


def test_every_request_of_a_key_has_its_own_request_id(platform: Platform) -> None:
    """The key's holder is cached between requests; the request's context (its audit id) is not."""
    with TestClient(create_app(platform)) as client:
        key = {"X-API-Key": access_key(platform, ["system"], None)}
        ids = {client.put("/api/v1/types/AccessProbe", headers=key, json=matrix.PROBE_TYPE).headers["x-request-id"]
               for _ in range(3)}
        assert len(ids) == 3


def test_attributes_classified_above_their_type_are_left_out_or_masked_by_role(platform: Platform) -> None:
    household = {"name": "Household", "attributes": {
        "floors": {"kind": "integer"},
        "headName": {"kind": "string", "classification": "personal"},
        "idNumber": {"kind": "string", "classification": "sensitive"}}}
    entity = {"id": "urn:ngsi-ld:Household:1", "type": "Household",
              "orgUnit": {"type": "Relationship", "object": f"urn:ngsi-ld:OrgUnit:{matrix.VILLAGE_A}"},
              "floors": {"type": "Property", "value": 6},
              "headName": {"type": "Property", "value": "王芳 13912345678"},
              "idNumber": {"type": "Property", "value": "33010619900101123X"}}
    with TestClient(create_app(platform)) as client:
        assert client.put("/api/v1/types/Household", json=household).status_code == 200
        assert client.post("/api/v1/entities", json=entity).status_code == 201
        assert client.patch("/api/v1/entities/urn:ngsi-ld:Household:1/attrs", json={
            "headName": {"type": "Property", "value": "李雷 13812345678"}}).status_code == 200
        seen = {}
        for role in ("analyst", "dispatcher", "system"):
            key = {"X-API-Key": access_key(platform, [role], None)}
            one = client.get("/api/v1/entities/urn:ngsi-ld:Household:1", headers=key).json()
            listed = client.get("/api/v1/entities", headers=key, params={"type": "Household"}).json()["items"]
            history = client.get("/api/v1/entities/urn:ngsi-ld:Household:1/history", headers=key).json()["items"]
            assert listed == [one]
            seen[role] = (one, {item["attribute"] for item in history}, str(history))
        analyst, analyst_history, _ = seen["analyst"]
        assert analyst["floors"]["value"] == 6 and "headName" not in analyst and "idNumber" not in analyst
        assert analyst_history == {"floors"}
        dispatcher, dispatcher_history, dispatcher_text = seen["dispatcher"]
        assert "idNumber" not in dispatcher and dispatcher_history == {"floors", "headName"}
        assert "13812345678" not in str(dispatcher) and "5678" in dispatcher["headName"]["value"]  # partial
        assert "13912345678" not in dispatcher_text
        system, system_history, _ = seen["system"]  # cleared for it; the platform's services get it hashed
        assert "idNumber" in system and system_history == {"floors", "headName", "idNumber"}
        assert "33010619900101123X" not in str(system)
        client.post("/api/v1/datasets/quality-check")  # a round registers the type added since the start
        fields = client.get("/api/v1/datasets/entities:Household").json()["fields"]
        assert fields["headName"]["classification"] == "personal" and "classification" not in fields["floors"]
