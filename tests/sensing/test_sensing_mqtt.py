"""Sensing over the real Mosquitto: telemetry published by devices reaches the rules, the alert comes back
out on MQTT (and on the bus), and the readings land in the lake."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import gmqtt
import orjson
import pytest
from fastapi.testclient import TestClient

from citybrain.api.app import create_app
from citybrain.core.clock import FrozenClock
from citybrain.hub.background import find_service
from citybrain.platform import Platform
from citybrain.sensing.lake.query import TelemetryQuery
from citybrain.sensing.runtime import SensingRuntime
from citybrain.settings import Settings
from tests.services import MQTT_HOST, MQTT_PORT, require_mqtt

pytestmark = pytest.mark.integration


async def _publish_and_listen(district: str, readings: list[tuple[str, dict]], wait_for: int) -> list[dict]:
    """Publish readings as devices would, and collect alert messages until `wait_for` arrived (or 15 s)."""
    alerts: list[dict] = []
    got_all = asyncio.Event()
    listener = gmqtt.Client(f"test-alerts-{uuid.uuid4().hex[:8]}")

    def on_message(_client, _topic, payload, _qos, _props):
        alerts.append({"topic": _topic, **orjson.loads(payload)})
        if len(alerts) >= wait_for:
            got_all.set()
        return 0

    listener.on_message = on_message
    await listener.connect(MQTT_HOST, MQTT_PORT)
    listener.subscribe(f"city/{district}/alerts/#", qos=1)
    await asyncio.sleep(0.3)
    device = gmqtt.Client(f"test-devices-{uuid.uuid4().hex[:8]}")
    await device.connect(MQTT_HOST, MQTT_PORT)
    for device_id, payload in readings:
        device.publish(f"city/{district}/smoke_detector/{device_id}/telemetry", orjson.dumps(payload), qos=1)
    try:
        await asyncio.wait_for(got_all.wait(), timeout=15)
    except asyncio.TimeoutError:
        pass
    await device.disconnect()
    await listener.disconnect()
    return alerts


def test_mqtt_telemetry_raises_an_alert_published_back_on_mqtt(tmp_path: Path) -> None:
    require_mqtt()
    from tests.conftest import TEST_DISTRICT
    from citybrain.hub.org.flows import import_district

    settings = Settings(
        home=tmp_path,
        bus="memory",
        mqtt=f"mqtt://{MQTT_HOST}:{MQTT_PORT}",
        mqtt_qos=1,
        mqtt_share_group=f"t{uuid.uuid4().hex[:8]}",
        mqtt_client_id=f"test-ingest-{uuid.uuid4().hex[:8]}",
    )
    platform = Platform(settings, clock=FrozenClock(datetime(2026, 11, 25, 8, 0, tzinfo=UTC)))
    platform.migrate()
    platform.load_state()
    import_district(platform, TEST_DISTRICT)
    district = next(code for code, unit in platform.org_tree.units.items() if unit.kind == "district")
    village = next(code for code, unit in platform.org_tree.units.items() if unit.kind == "village")
    with TestClient(create_app(platform)) as client:
        created = client.post(
            "/api/v1/devices",
            json=[
                {"deviceId": f"SM-{i}", "deviceType": "smoke_detector", "orgUnit": village} for i in range(2)
            ],
        )
        assert created.status_code == 201, created.text
        now = time.time()
        readings = [
            ("SM-0", {"ts": now - 2, "seq": 1, "smokeDensity": 0.5, "temperature": 22.0}),
            ("SM-1", {"ts": now - 2, "seq": 1, "smokeDensity": 0.4}),
            ("SM-0", {"ts": now - 1, "seq": 2, "smokeDensity": 35.0, "temperature": 30.0}),
            ("SM-1", {"ts": now - 1, "seq": 2, "smokeDensity": "dense"}),
        ]  # a dead letter
        alerts = client.portal.call(_publish_and_listen, district, readings, 1)
        assert [(a["event"], a["ruleId"], a["subject"]) for a in alerts] == [("raised", "smoke", "SM-0")]
        assert alerts[0]["topic"] == f"city/{district}/alerts/critical/smoke_detector/smoke"
        assert alerts[0]["reading"]["value"] == 35.0
        runtime = find_service(platform, SensingRuntime)
        status = client.get("/api/v1/sensing/status").json()
        # Other publishers on this broker (other test runs) only add dead letters of unknown devices.
        assert status["counts"]["accepted"] == 3 and status["counts"]["dead_letters"] >= 1
        assert status["mqtt"]["connected"] is True
        dead = client.get("/api/v1/telemetry/dead-letters", params={"deviceId": "SM-1"}).json()["items"]
        assert len(dead) == 1 and "smokeDensity" in dead[0]["reason"]
        # The alert goes out before the readings' group-commit flush (lake_commit_s), which the QoS 1
        # acknowledgements wait for.
        deadline = time.monotonic() + 5
        while True:
            table = runtime.lake.query(
                TelemetryQuery(
                    start=datetime.fromtimestamp(now - 60, UTC),
                    end=datetime.fromtimestamp(now + 60, UTC),
                    measurements=["smokeDensity"],
                )
            )
            if table.num_rows >= 3 or time.monotonic() > deadline:
                break
            time.sleep(0.02)
        assert sorted(table.column("value").to_pylist()) == [0.4, 0.5, 35.0]
        assert client.get("/api/v1/sensing/status").json()["lake_commits"] >= 1
    platform.dispose()
