"""The data catalog on both stores: the datasets the code defines are registered with owner, classification
and fields; lineage; declarative quality rules checked on save, scored as records arrive (entity writes)
and in rounds (cases), by the hour; imports join the catalog; rule changes are audited."""

from __future__ import annotations

from pathlib import Path

import orjson
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from citybrain.api.app import create_app
from citybrain.cli import app as cli
from citybrain.core.clock import FrozenClock
from citybrain.governance import catalog
from citybrain.platform import Platform

VILLAGE = "330106002052"


def _streetlight(n: int, *, power: str | None = "on", level: float | None = None) -> dict:
    entity: dict = {"id": f"urn:ngsi-ld:Streetlight:{n}", "type": "Streetlight",
                    "orgUnit": {"type": "Relationship", "object": f"urn:ngsi-ld:OrgUnit:{VILLAGE}"}}
    if power is not None:
        entity["powerState"] = {"type": "Property", "value": power}
    if level is not None:
        entity["illuminanceLevel"] = {"type": "Property", "value": level}
    return entity


def test_the_datasets_the_platform_defines_are_registered_with_their_owner_and_lineage(platform: Platform) -> None:
    with TestClient(create_app(platform)) as client:
        items = {d["id"]: d for d in client.get("/api/v1/datasets").json()["items"]}
        for dataset_id in ("cases", "reports", "alerts", "entities:Streetlight", "entities:ServiceRequest",
                           "telemetry:air_quality", "telemetry:water_level"):
            assert dataset_id in items, dataset_id
        assert items["telemetry:air_quality"]["owner"] == "shengtai"  # the air scenario's department
        assert items["telemetry:water_level"]["owner"] == "shuiwu"
        assert items["telemetry:air_quality"]["fields"]["pm25"]["minimum"] == 0
        assert items["entities:ServiceRequest"]["classification"] == "personal"
        assert items["cases"]["classification"] == "personal" and "org_unit" in items["cases"]["fields"]
        assert {r["id"] for r in items["cases"]["rules"]} == {"located", "number-unique"}  # shipped defaults
        water = [d["id"] for d in client.get("/api/v1/datasets", params={"owner": "shuiwu"}).json()["items"]]
        assert "telemetry:water_level" in water and "entities:WaterObserved" in water and "cases" not in water
        graph = client.get("/api/v1/datasets/telemetry:air_quality/lineage").json()
        edges = {(e["from"], e["to"]) for e in graph["edges"]}
        assert {("telemetry:air_quality", "entities:AirQualityObserved"), ("telemetry:air_quality", "alerts"),
                ("alerts", "cases")} <= edges
        chart = client.get("/api/v1/datasets/cases/lineage", params={"format": "mermaid"}).text
        assert chart.startswith("flowchart LR") and "a report opens a case" in chart
        assert client.get("/api/v1/datasets/entities:Nope").status_code == 404
    assert catalog.sync(platform) == 0  # again at the next start: nothing new, nothing duplicated


def test_rules_are_checked_as_a_whole_on_save(platform: Platform) -> None:
    with TestClient(create_app(platform)) as client:
        url = "/api/v1/datasets/entities:Streetlight/rules"
        bad = client.put(url, json={"rules": [
            {"id": "power", "check": "completeness", "field": "nope"},
            {"id": "range", "check": "range", "field": "powerState"},
            {"id": "fresh", "check": "freshness", "max_age": "soon"}]})
        assert bad.status_code == 422
        assert {e["field"] for e in bad.json()["errors"]} == {"rules[1]", "rules[2].max_age"}
        unknown_field = client.put(url, json={"rules": [{"id": "p", "check": "completeness", "field": "nope"}]})
        assert unknown_field.status_code == 422 and unknown_field.json()["errors"][0]["field"] == "rules[0].field"
        twice = client.put(url, json={"rules": [{"id": "p", "check": "freshness", "max_age": "1h"}] * 2})
        assert twice.status_code == 422 and "twice" in twice.json()["detail"]
        telemetry = client.put("/api/v1/datasets/telemetry:air_quality/rules",
                               json={"rules": [{"id": "p", "check": "completeness", "field": "pm25"}]})
        assert telemetry.status_code == 422 and "on ingest" in telemetry.json()["detail"]
        assert client.get("/api/v1/datasets/entities:Streetlight").json()["rules"] == []  # nothing half-saved


def test_entity_writes_are_scored_as_they_arrive_by_the_hour(platform: Platform, clock: FrozenClock) -> None:
    with TestClient(create_app(platform)) as client:
        saved = client.put("/api/v1/datasets/entities:Streetlight/rules", json={"rules": [
            {"id": "power", "check": "completeness", "field": "powerState", "min_share": 0.9},
            {"id": "level-unique", "check": "uniqueness", "field": "illuminanceLevel"},
            {"id": "fresh", "check": "freshness", "max_age": "15m"}]})
        assert saved.status_code == 200, saved.text
        client.post("/api/v1/datasets/quality-check")  # the hook learns the rules at a round
        for n in range(10):
            body = _streetlight(n, power=None if n % 5 == 0 else "on", level=0.05 if n < 2 else n / 10)
            assert client.post("/api/v1/entities", json=body).status_code == 201
        assert client.post("/api/v1/datasets/quality-check").status_code == 200
        quality = {q["id"]: q for q in client.get("/api/v1/datasets/entities:Streetlight").json()["quality"]}
        assert (quality["power"]["checked"], quality["power"]["passed"]) == (10, 8)
        assert quality["power"]["share"] == 0.8 and quality["power"]["status"] == "failing"  # below 90 %
        assert (quality["level-unique"]["checked"], quality["level-unique"]["passed"]) == (10, 8)
        assert quality["fresh"]["status"] == "met"
        clock.advance(hours=1)
        client.post("/api/v1/datasets/quality-check")  # an hour without writes: stale
        series = client.get("/api/v1/datasets/entities:Streetlight/quality", params={"rule": "fresh"}).json()
        assert [p["share"] for p in series["points"]] == [1.0, 0.0]
        assert series["points"][1]["hour"] > series["points"][0]["hour"]


def test_cases_are_scored_in_rounds_without_counting_one_twice(platform: Platform, clock: FrozenClock) -> None:
    with TestClient(create_app(platform)) as client:
        for org_unit in (VILLAGE, VILLAGE, None):
            body = {"eventType": "CG-01-002", "description": "墙上小广告", "dispatch": False,
                    **({"orgUnit": org_unit} if org_unit else {})}
            assert client.post("/api/v1/cases", json=body).status_code == 201
        # too fresh to check: a record is checked once it is a few seconds old (its transaction has settled)
        assert client.post("/api/v1/datasets/quality-check").json()["recordsChecked"] == 0
        clock.advance(seconds=10)
        # the service's own round may run meanwhile: whoever checks a case, it is counted once
        client.post("/api/v1/datasets/quality-check")
        assert client.post("/api/v1/datasets/quality-check").json()["recordsChecked"] == 0
        located = next(q for q in client.get("/api/v1/datasets/cases").json()["quality"] if q["id"] == "located")
        assert (located["checked"], located["passed"], located["status"]) == (3, 2, "failing")


def test_a_rule_change_is_audited_and_only_the_governance_roles_make_it(platform: Platform) -> None:
    from citybrain.governance import auth

    with TestClient(create_app(platform)) as client:
        station = auth.create_key(platform, name="s", roles=["village_station"], org_scope=None).secret
        analyst = auth.create_key(platform, name="a", roles=["analyst"], org_scope=None).secret
        rules = {"rules": [{"id": "fresh", "check": "freshness", "max_age": "1d"}]}
        assert client.put("/api/v1/datasets/cases/rules", json=rules, headers={"X-API-Key": station}).status_code == 403
        assert client.get("/api/v1/datasets/cases", headers={"X-API-Key": station}).status_code == 200
        assert client.put("/api/v1/datasets/cases/rules", json=rules, headers={"X-API-Key": analyst}).status_code == 200
        auditor = auth.create_key(platform, name="au", roles=["auditor"], org_scope=None).secret
        records = client.get("/api/v1/audit", params={"action": "dataset.rules"},
                             headers={"X-API-Key": auditor}).json()["items"]
        assert len(records) == 1 and records[0]["resource"] == "dataset:cases"
        assert records[0]["actor"].startswith("key:") and records[0]["detail"]["rules"] == ["fresh"]


def test_an_import_joins_the_catalog_with_its_lineage(platform: Platform, tmp_path: Path) -> None:
    source = tmp_path / "lights.ndjson"
    source.write_bytes(b"\n".join(orjson.dumps(_streetlight(n)) for n in range(3)))
    settings = platform.settings
    result = CliRunner().invoke(cli, ["import", "entities", str(source), "--db", settings.db,
                                      "--home", str(settings.home)])
    assert result.exit_code == 0, result.output
    with platform.session() as session:
        row = catalog.get_dataset(session, "import:lights.ndjson")
        assert row.kind == "import" and "3 records" in row.source
        graph = catalog.lineage(session, "import:lights.ndjson")
    assert graph["edges"] == [{"from": "import:lights.ndjson", "to": "entities:Streetlight",
                               "process": "citybrain import entities"}]
    shown = CliRunner().invoke(cli, ["datasets", "show", "entities:Streetlight", "--db", settings.db,
                                     "--home", str(settings.home)])
    assert shown.exit_code == 0 and "import:lights.ndjson → entities:Streetlight" in shown.output
