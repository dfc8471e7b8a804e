"""Sensing over HTTP, through the running platform: register devices, post telemetry, see alerts raised and
cleared (as rows, events and hub entities), dead letters, status and vital signs."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest
from fastapi.testclient import TestClient

from citybrain.hub.background import find_service
from citybrain.platform import Platform
from citybrain.sensing.runtime import SensingRuntime


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


def _village(platform: Platform) -> str:
    return next(code for code, unit in platform.org_tree.units.items() if unit.kind == "village")


def _register(client: TestClient, platform: Platform) -> str:
    village = _village(platform)
    devices = [
        {
            "deviceId": f"AQ-{i}",
            "deviceType": "air_quality",
            "orgUnit": village,
            "lon": 121.5 + i / 100,
            "lat": 31.2,
        }
        for i in range(3)
    ]
    devices.append({"deviceId": "WL-1", "deviceType": "water_level", "orgUnit": village})
    response = client.post("/api/v1/devices", json=devices)
    assert response.status_code == 201, response.text
    body = response.json()
    assert [d["deviceId"] for d in body["created"]] == ["AQ-0", "AQ-1", "AQ-2", "WL-1"]
    assert all(len(d["secret"]) >= 32 for d in body["created"])
    return village


def test_telemetry_raises_and_clears_alerts_end_to_end(client: TestClient, platform: Platform) -> None:
    village = _register(client, platform)
    now = time.time()
    normal = [{"deviceId": f"AQ-{i}", "ts": now - 60, "seq": 1, "pm25": 40.0, "pm10": 60} for i in range(3)]
    response = client.post("/api/v1/telemetry", json=normal)
    assert response.status_code == 200 and response.json()["accepted"] == 3
    assert client.get("/api/v1/alerts", params={"status": "active"}).json()["items"] == []

    polluted = [{"deviceId": f"AQ-{i}", "ts": now - 30, "seq": 2, "pm25": 180.0} for i in range(3)]
    polluted.append({"deviceId": "AQ-0", "ts": now - 29, "pm25": -3})  # below the physical minimum
    polluted.append({"deviceId": "NOPE", "ts": now, "pm25": 1})
    response = client.post("/api/v1/telemetry", json=polluted)
    assert response.status_code == 207
    body = response.json()
    assert body["accepted"] == 3
    assert [(e["index"], e["reason"]) for e in body["errors"]] == [
        (3, "pm25: -3 is below the minimum 0"),
        (4, "unknown device"),
    ]
    active = client.get("/api/v1/alerts", params={"status": "active"}).json()["items"]
    assert sorted((a["ruleId"], a["subject"]) for a in active) == [
        ("pm25-area", village),
        ("pm25-heavy", "AQ-0"),
        ("pm25-heavy", "AQ-1"),
        ("pm25-heavy", "AQ-2"),
    ]
    heavy = next(a for a in active if a["subject"] == "AQ-1")
    assert heavy["severity"] == "major" and heavy["value"] == 180.0 and heavy["orgUnit"] == village
    assert heavy["reading"]["deviceId"] == "AQ-1" and heavy["reading"]["measurement"] == "pm25"

    entities = client.get("/api/v1/entities", params={"type": "Alert"}).json()["items"]
    assert len(entities) == 4 and {e["status"]["value"] for e in entities} == {"active"}
    device = client.get("/api/v1/entities/urn:ngsi-ld:Device:AQ-1").json()
    assert device["deviceType"]["value"] == "air_quality" and device["location"]["value"]["coordinates"] == [
        121.51,
        31.2,
    ]

    acknowledged = client.post(f"/api/v1/alerts/{heavy['id']}/acknowledge").json()
    assert acknowledged["status"] == "acknowledged"
    assigned = client.post(
        f"/api/v1/alerts/{heavy['id']}/assign", json={"assignee": "生态环境 duty officer"}
    ).json()
    assert assigned["assignee"] == "生态环境 duty officer"

    clean = [{"deviceId": f"AQ-{i}", "ts": now - 10, "seq": 3, "pm25": 50.0} for i in range(3)]
    assert client.post("/api/v1/telemetry", json=clean).status_code == 200
    assert client.get("/api/v1/alerts", params={"status": "active"}).json()["items"] == []
    cleared = client.get("/api/v1/alerts", params={"status": "cleared"}).json()["items"]
    assert len(cleared) == 4

    again = client.post("/api/v1/telemetry", json=clean).json()  # the same readings once more
    assert again["accepted"] == 0 and again["duplicates"] == 3

    dead = client.get("/api/v1/telemetry/dead-letters").json()["items"]
    assert [d["reason"] for d in dead] == ["unknown device", "pm25: -3 is below the minimum 0"]
    assert dead[1]["deviceId"] == "AQ-0" and '"pm25":-3' in dead[1]["payload"]

    status = client.get("/api/v1/sensing/status").json()
    assert status["devices"] == 4 and status["online"] == 3
    assert status["counts"]["accepted"] == 9 and status["counts"]["dead_letters"] == 2
    assert status["alert_latency_ms"]["count"] >= 3

    runtime = find_service(platform, SensingRuntime)
    assert runtime is not None
    window = {"start": _iso(now - 3600), "end": _iso(now + 60)}
    raw = client.get("/api/v1/telemetry", params={**window, "deviceId": "AQ-1", "measurement": "pm25"}).json()
    assert [(r["device_id"], r["value"]) for r in raw["items"]] == [
        ("AQ-1", 40.0),
        ("AQ-1", 180.0),
        ("AQ-1", 50.0),
    ]
    buckets = client.get(
        "/api/v1/telemetry",
        params={
            **window,
            "deviceType": "air_quality",
            "measurement": "pm25",
            "bucket": 3600,
            "agg": "max,count",
        },
    ).json()["items"]
    assert {(r["device_id"], r["max"]) for r in buckets} >= {("AQ-0", 180.0), ("AQ-2", 180.0)}
    assert sum(r["count"] for r in buckets) == 9
    bad = client.get("/api/v1/telemetry", params={**window, "bucket": 0})
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "bucket"
    assert (
        client.get("/api/v1/telemetry", params={**window, "deviceId": "NOPE"}).json()["errors"][0]["field"]
        == "deviceId"
    )

    assert client.portal.call(runtime.record_vitals) > 0
    vitals = {
        v["indicator"]: v["value"]
        for v in client.get("/api/v1/vitals", params={"orgUnit": village}).json()["indicators"]
    }
    assert vitals["device_online_rate"] == 0.75 and vitals["pm25_mean"] == 50.0
    assert vitals["alerts_open_major"] == 0


def test_devices_are_listed_and_found(client: TestClient, platform: Platform) -> None:
    _register(client, platform)
    page = client.get("/api/v1/devices", params={"deviceType": "air_quality", "limit": 2}).json()
    assert [d["deviceId"] for d in page["items"]] == ["AQ-0", "AQ-1"] and page["next_cursor"]
    rest = client.get(
        "/api/v1/devices", params={"deviceType": "air_quality", "cursor": page["next_cursor"]}
    ).json()
    assert [d["deviceId"] for d in rest["items"]] == ["AQ-2"] and rest["next_cursor"] is None
    one = client.get("/api/v1/devices/WL-1").json()
    assert one["deviceType"] == "water_level" and one["online"] is False
    assert client.get("/api/v1/devices/NOPE").status_code == 404
    again = client.post(
        "/api/v1/devices",
        json=[{"deviceId": "AQ-0", "deviceType": "air_quality"}, {"deviceId": "AQ-9", "deviceType": "nope"}],
    )
    assert again.status_code == 207
    assert again.json()["existing"] == ["AQ-0"] and again.json()["errors"][0]["field"] == "[1].device_type"


def test_dead_letters_are_replayed_once_their_device_is_registered(client: TestClient, platform: Platform) -> None:
    village = _register(client, platform)
    now = time.time()
    early = [{"deviceId": "AQ-7", "ts": now - 120 + i, "seq": i, "pm25": 200.0} for i in range(3)]
    early.append({"deviceId": "AQ-0", "ts": now - 100, "pm25": -3})  # out of range: refused again later
    assert client.post("/api/v1/telemetry", json=early).status_code == 207
    dead = client.get("/api/v1/telemetry/dead-letters").json()["items"]
    assert sorted(d["reason"] for d in dead) == ["pm25: -3 is below the minimum 0"] + ["unknown device"] * 3

    registered = client.post("/api/v1/devices", json=[{"deviceId": "AQ-7", "deviceType": "air_quality",
                                                       "orgUnit": village}])
    assert registered.status_code == 201
    replay = client.post("/api/v1/telemetry/dead-letters/replay", json={"since": _iso(now - 3600)})
    assert replay.status_code == 200, replay.text
    assert replay.json() == {"replayed": 4, "accepted": 3, "refused": 1, "duplicates": 0, "outOfOrder": 0}
    left = client.get("/api/v1/telemetry/dead-letters").json()["items"]
    assert [(d["deviceId"], d["reason"]) for d in left] == [("AQ-0", "pm25: -3 is below the minimum 0")]
    active = client.get("/api/v1/alerts", params={"status": "active", "deviceType": "air_quality"}).json()
    assert ("pm25-heavy", "AQ-7") in {(a["ruleId"], a["subject"]) for a in active["items"]}
    window = {"start": _iso(now - 3600), "end": _iso(now + 60), "deviceId": "AQ-7", "measurement": "pm25"}
    assert len(client.get("/api/v1/telemetry", params=window).json()["items"]) == 3

    again = client.post("/api/v1/telemetry/dead-letters/replay", json={"deviceId": "AQ-7"}).json()
    assert again["replayed"] == 0  # nothing of AQ-7 is left to replay
    assert client.post("/api/v1/telemetry/dead-letters/replay", json={}).status_code == 422


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "field"),
    [
        ("post", "/api/v1/telemetry", {"deviceId": "x"}, 422, "body"),
        ("post", "/api/v1/telemetry", [{}] * 10_001, 413, None),
        ("get", "/api/v1/devices?deviceType=nope", None, 422, "deviceType"),
        ("get", "/api/v1/devices?cursor=abc", None, 422, "cursor"),
        ("get", "/api/v1/alerts?status=open", None, 422, "status"),
        ("get", "/api/v1/alerts?orgUnit=000", None, 422, "orgUnit"),
        ("post", "/api/v1/alerts/nope/acknowledge", None, 404, None),
        ("post", "/api/v1/alerts/nope/assign", {"assignee": 3}, 422, "assignee"),
        ("get", "/api/v1/vitals?orgUnit=000", None, 422, "orgUnit"),
        ("get", "/api/v1/vitals/history?orgUnit=000&indicator=x", None, 422, "orgUnit"),
        (
            "post",
            "/api/v1/devices",
            [{"deviceId": "A", "deviceType": "air_quality", "lon": "east", "lat": 1}],
            422,
            None,
        ),
    ],
)
def test_bad_requests_answer_problem_json(
    client: TestClient, method: str, path: str, body: object, status: int, field: str | None
) -> None:
    response = client.request(method.upper(), path, json=body)
    assert response.status_code == status, response.text
    if status != 422 or field is not None:
        assert response.headers["content-type"].startswith("application/problem+json")
        if field is not None:
            assert response.json()["errors"][0]["field"] == field


def test_a_restarted_platform_knows_the_readings_it_stored(platform: Platform) -> None:
    from citybrain.api.app import create_app

    with TestClient(create_app(platform)) as client:
        _register(client, platform)
        now = time.time()
        readings = [
            {"deviceId": f"AQ-{i}", "ts": now - 20 + 0.123456789, "seq": 7, "pm25": 30.0} for i in range(3)
        ]
        assert client.post("/api/v1/telemetry", json=readings).json()["accepted"] == 3
    # A new process on the same store and lake: what a broker resends after a crash is not stored twice.
    with TestClient(create_app(platform)) as client:
        again = client.post("/api/v1/telemetry", json=readings).json()
        assert again["accepted"] == 0 and again["duplicates"] == 3
        newer = [{**r, "ts": now - 10, "seq": 8} for r in readings]
        assert client.post("/api/v1/telemetry", json=newer).json()["accepted"] == 3
