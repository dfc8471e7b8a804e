"""QoS 1 ingest through the whole server loses nothing when the server is killed with SIGKILL mid-stream:
what was acknowledged is in the lake, what was not comes again from the broker's session, and what came
again after it had been stored is recognised as a duplicate (the pipeline resumes from the lake)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import orjson
import pytest

from tests.sensing.processes import Server, own_broker, prepare_home, publish_qos1, stored_readings

pytestmark = pytest.mark.integration

DEVICES = 100
READINGS_PER_DEVICE = 40


def _readings(district: str, device_ids: list[str], start_ts: float) -> list[tuple[str, bytes]]:
    return [
        (f"city/{district}/air_quality/{device_id}/telemetry",
         orjson.dumps({"ts": start_ts + i, "seq": i, "pm25": 10.0 + (i % 7)}))
        for i in range(READINGS_PER_DEVICE)
        for device_id in device_ids
    ]


def test_qos1_ingest_loses_nothing_when_the_server_is_killed(tmp_path: Path) -> None:
    home, device_ids, district = prepare_home(tmp_path, DEVICES)
    start_ts = time.time() - 3600
    sent = _readings(district, device_ids, start_ts)
    half = len(sent) // 2
    log = tmp_path / "server.log"

    with own_broker(tmp_path) as url:
        environment = {
            "CITYBRAIN_MQTT": url,
            "CITYBRAIN_MQTT_QOS": "1",
            "CITYBRAIN_MQTT_CLIENT_ID": "crash-test-ingest",
            "CITYBRAIN_LAKE_FLUSH_S": "600",  # only the group commits of QoS 1 make readings durable
        }

        def subscribed(status: dict) -> bool:
            return bool((status.get("mqtt") or {}).get("connected"))

        server = Server(home, environment, log, subscribed)
        try:
            asyncio.run(publish_qos1(url, sent[:half]))
            deadline = time.monotonic() + 30
            while server.status()["counts"].get("accepted", 0) < half // 2:
                assert time.monotonic() < deadline, server.status()
                time.sleep(0.01)
            server.kill()  # mid-stream: some batches acknowledged, some in the lake's buffer, some unread
            asyncio.run(publish_qos1(url, sent[half:]))  # the broker holds these for the absent session

            server = Server(home, environment, log, subscribed)
            deadline = time.monotonic() + 60
            previous = -1
            while True:  # until the redelivered and the new readings have all been taken in
                status = server.status()
                taken = status["counts"].get("accepted", 0) + status["counts"].get("duplicates", 0)
                if taken == previous and status["mqtt"]["pending"] == 0 and taken >= len(sent) - half:
                    break
                assert time.monotonic() < deadline, status
                previous = taken
                time.sleep(0.5)
        finally:
            server.stop()

    stored = stored_readings(home, start_ts, 3600)
    assert len(set(stored)) == len(sent), f"{len(sent) - len(set(stored))} of {len(sent)} readings lost"
    assert len(stored) == len(sent), f"{len(stored) - len(set(stored))} readings stored twice"


def test_kills_and_broker_restarts_in_turn_lose_and_repeat_no_reading(tmp_path: Path) -> None:
    """Four faults mid-stream, alternately the ingest killed and the broker restarted (bench/faults.py runs
    20): every reading the broker acknowledged is in the lake once. A reading sent again after a restart
    that the previous process had stored is recognised in the lake, not stored twice."""
    from tests.faults import ingest_fault_cycles

    report = ingest_fault_cycles(tmp_path, 4)
    assert report.cycles == 4 and report.sent == 1600
    assert (report.lost, report.duplicated) == (0, 0), report
    assert report.disconnect_reported == 2


def test_qos1_ingest_loses_nothing_when_the_broker_is_stopped_and_started(tmp_path: Path) -> None:
    """The broker goes away mid-stream and comes back: the ingest reports itself disconnected meanwhile
    (sensing status and /health), reconnects by itself, and every reading is stored once."""
    from tests.sensing.processes import RestartableBroker

    home, device_ids, district = prepare_home(tmp_path, DEVICES)
    start_ts = time.time() - 3600
    sent = _readings(district, device_ids, start_ts)
    third = len(sent) // 3
    broker = RestartableBroker(tmp_path)
    broker.start()
    environment = {"CITYBRAIN_MQTT": broker.url, "CITYBRAIN_MQTT_QOS": "1",
                   "CITYBRAIN_MQTT_CLIENT_ID": "outage-test-ingest"}
    server = Server(home, environment, tmp_path / "server.log",
                    lambda status: bool((status.get("mqtt") or {}).get("connected")))
    try:
        asyncio.run(publish_qos1(broker.url, sent[:third]))
        broker.stop()
        deadline = time.monotonic() + 30
        while server.status()["mqtt"]["connected"]:
            assert time.monotonic() < deadline, "the ingest never noticed the broker had gone"
            time.sleep(0.1)
        health = server.get("/health")
        assert health["status"] == "degraded" and health["ingest"]["mqtt_connected"] is False
        broker.start()
        asyncio.run(publish_qos1(broker.url, sent[third:]))
        deadline = time.monotonic() + 60
        while True:
            status = server.status()
            taken = status["counts"].get("accepted", 0) + status["counts"].get("duplicates", 0)
            if status["mqtt"]["connected"] and status["mqtt"]["pending"] == 0 and taken >= len(sent):
                break
            assert time.monotonic() < deadline, status
            time.sleep(0.2)
        assert status["mqtt"]["reconnects"] >= 1 and server.get("/health")["status"] == "ok"
    finally:
        server.stop()
        broker.stop()
    stored = stored_readings(home, start_ts, 3600)
    assert len(set(stored)) == len(sent), f"{len(sent) - len(set(stored))} of {len(sent)} readings lost"
    assert len(stored) == len(sent), f"{len(stored) - len(set(stored))} readings stored twice"
