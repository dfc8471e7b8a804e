"""The live twin as a platform service: detectors and signals in the hub, readings through sensing,
congestion alerts on the bus, the congestion vital sign, and a twin that survives its child dying."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from citybrain.core.errors import InvalidInput
from citybrain.platform import Platform
from citybrain.sensing.alerts.events import AlertRaised
from citybrain.settings import Settings
from tests.hub.receiver import wait_until

GUDANG = "330106007"  # 古荡街道, Xihu


def wait_for(check: Callable[[], Any], timeout: float = 25.0, every: float = 0.1) -> Any:
    """The live twin starts a SUMO child process: its first reports take longer than a receiver's."""
    return wait_until(check, timeout=timeout, what="the live twin", every=every)


@pytest.fixture
def settings(db_url: str, tmp_path: Path) -> Settings:
    return Settings(db=db_url, home=tmp_path, bus="memory", traffic_scenario="cologne1", traffic_org_unit=GUDANG,
                    traffic_speedup=600, traffic_report_s=30)


def test_detectors_signals_alerts_and_vital_signs(client: TestClient, platform: Platform) -> None:
    raised: list[AlertRaised] = []

    async def on_alert(event: AlertRaised) -> None:
        raised.append(event)

    client.portal.call(platform.bus.subscribe, AlertRaised, on_alert)
    status = wait_for(lambda: (s := client.get("/api/v1/traffic/status").json())["reports"] >= 3 and s)
    assert status["scenario"] == "cologne1" and status["controller"] == "fixed" and not status["degraded"]
    assert status["simTime"] > 25200 and status["orgUnit"] == GUDANG

    devices = client.get("/api/v1/devices", params={"deviceType": "traffic_detector", "orgUnit": GUDANG}).json()
    assert len(devices["items"]) == status["roads"] >= 3
    signals = client.get("/api/v1/entities", params={"type": "TrafficSignal"}).json()
    items = signals if isinstance(signals, list) else signals["items"]
    assert len(items) == 1
    entity = items[0]
    assert entity["controlMode"]["value"] == "fixed" and entity["orgUnit"]["object"].endswith(GUDANG)
    assert entity["controlledBy"]["object"].startswith("urn:ngsi-ld:ConnectedSystem:traffic-twin")
    lon, lat = entity["location"]["value"]["coordinates"]
    assert 6.5 < lon < 7.2 and 50.7 < lat < 51.1  # cologne1 is georeferenced: it stays in Cologne

    # Cologne at 7 am under fixed time: a red approach's queue crawls below 10 km/h -> the congestion rule
    wait_for(lambda: any(e.alert["ruleId"] == "congestion" for e in raised))
    alert = next(e.alert for e in raised if e.alert["ruleId"] == "congestion")
    assert alert["deviceType"] == "traffic_detector"

    from citybrain.hub.background import find_service
    from citybrain.sensing.runtime import SensingRuntime

    sensing = find_service(platform, SensingRuntime)
    assert client.portal.call(sensing.record_vitals) > 0
    vitals = {v["indicator"]: v["value"]
              for v in client.get("/api/v1/vitals", params={"orgUnit": GUDANG}).json()["indicators"]}
    assert vitals["congestion_index"] >= 1.0
    assert 0 < vitals["congested_detector_rate"] <= 1

    lights = client.get("/api/v1/traffic/intersections").json()["items"]
    assert lights[0]["greenPhases"] == [0, 2, 4, 6] and lights[0]["controlMode"] == "fixed"


def test_the_service_restarts_a_killed_twin_and_reports_degraded(client: TestClient) -> None:
    first = wait_for(lambda: (s := client.get("/api/v1/traffic/status").json())["reports"] >= 1 and s)
    os.kill(first["pid"], signal.SIGKILL)
    seen_degraded = wait_for(lambda: client.get("/api/v1/traffic/status").json()["degraded"], every=0.02)
    assert seen_degraded
    again = wait_for(lambda: (s := client.get("/api/v1/traffic/status").json())["pid"] != first["pid"]
                     and not s["degraded"] and s["running"] and s)
    assert again["restarts"] == 1 and ("gone" in again["lastError"] or "died" in again["lastError"])
    later = wait_for(lambda: (s := client.get("/api/v1/traffic/status").json())["simTime"] > again["simTime"] and s)
    assert later["running"]


def test_an_unknown_scenario_is_a_clear_error(db_url: str, tmp_path: Path, clock: Any) -> None:
    platform = Platform(Settings(db=db_url, home=tmp_path, traffic_scenario="atlantis"), clock=clock)
    platform.migrate()
    platform.load_state()
    from citybrain.traffic.live import LiveTraffic

    with pytest.raises(InvalidInput) as caught:
        client_loop_start(LiveTraffic(platform))
    assert caught.value.errors[0].field == "traffic_scenario" and "atlantis" in caught.value.detail
    platform.dispose()


def client_loop_start(service: Any) -> None:
    import asyncio

    asyncio.run(service.start())


def test_a_bad_command_fails_and_the_twin_runs_on(client: TestClient) -> None:
    wait_for(lambda: client.get("/api/v1/traffic/status").json()["reports"] >= 1)
    light = client.get("/api/v1/traffic/intersections").json()["items"][0]
    issued = client.post("/api/v1/commands", json={"target": light["entityId"], "name": "applySignalPlan",
                                                   "parameters": {"timing": {"1": 20}}})
    assert issued.status_code == 201, issued.text
    failed = wait_for(lambda: (c := client.get(f"/api/v1/commands/{issued.json()['id']}").json())["status"]
                      == "failed" and c)
    assert "not a green phase" in failed["reason"] and "0, 2, 4, 6" in failed["reason"]
    before = client.get("/api/v1/traffic/status").json()
    later = wait_for(lambda: (s := client.get("/api/v1/traffic/status").json())["simTime"] > before["simTime"] and s)
    assert later["running"] and not later["degraded"] and later["restarts"] == 0
    good = client.post("/api/v1/commands", json={"target": light["entityId"], "name": "applySignalPlan",
                                                 "parameters": {"timing": {"0": 40, "4": 40}}}).json()
    done = wait_for(lambda: (c := client.get(f"/api/v1/commands/{good['id']}").json())["status"] != "pending" and c)
    assert done["status"] == "acknowledged" and done["result"]["simTime"] > 25200
    wait_for(lambda: client.get("/api/v1/traffic/intersections").json()["items"][0]["controlMode"] == "manual")
