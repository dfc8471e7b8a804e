"""QoS 1 ingest through the whole server loses nothing when the server is killed with SIGKILL mid-stream:
what was acknowledged is in the lake, what was not comes again from the broker's session, and what came
again after it had been stored is recognised as a duplicate (the pipeline resumes from the lake)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from citybrain.sensing.ingest.mqtt import parse_broker_url
from citybrain.sensing.lake.base import open_lake
from citybrain.sensing.lake.query import TelemetryQuery
from citybrain.sim import wire
from tests.services import require_mqtt, require_service

pytestmark = pytest.mark.integration

CLI = str(Path(sys.executable).with_name("citybrain"))
DEVICES = 100
READINGS_PER_DEVICE = 40


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextlib.contextmanager
def _broker(tmp_path: Path) -> Iterator[str]:
    """A Mosquitto of this test's own: it keeps every QoS 1 message of an absent session (the system
    broker's default keeps 1,000)."""
    require_mqtt()
    if shutil.which("mosquitto") is None:
        require_service("mosquitto binary", "127.0.0.1", 1)
    port = _free_port()
    config = tmp_path / "mosquitto.conf"
    config.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
                      "max_queued_messages 0\nmax_inflight_messages 0\n")
    broker = subprocess.Popen([shutil.which("mosquitto") or "mosquitto", "-c", str(config)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while True:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            break
        assert time.monotonic() < deadline and broker.poll() is None, "the test broker did not start"
        time.sleep(0.05)
    try:
        yield f"mqtt://127.0.0.1:{port}"
    finally:
        broker.terminate()
        broker.wait(timeout=10)


class _Server:
    def __init__(self, home: Path, broker: str, log: Path) -> None:
        self.port = _free_port()
        environment = {
            **os.environ,
            "CITYBRAIN_MQTT": broker,
            "CITYBRAIN_MQTT_QOS": "1",
            "CITYBRAIN_MQTT_CLIENT_ID": "crash-test-ingest",
            "CITYBRAIN_LAKE_FLUSH_S": "600",  # only the group commits of QoS 1 make readings durable
        }
        with log.open("ab") as out:
            self.proc = subprocess.Popen([CLI, "serve", "--home", str(home), "--port", str(self.port)],
                                         env=environment, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while not (self.status_or_none() or {}).get("mqtt", {}).get("connected"):
            assert self.proc.poll() is None, f"the server exited: {log.read_text()[-2000:]}"
            assert time.monotonic() < deadline, "the server did not subscribe in time"
            time.sleep(0.1)

    def status_or_none(self) -> dict[str, Any] | None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/api/v1/sensing/status", timeout=5) as r:
                return orjson.loads(r.read())
        except OSError:
            return None

    def status(self) -> dict[str, Any]:
        found = self.status_or_none()
        assert found is not None
        return found

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def _readings(district: str, device_ids: list[str], start_ts: float) -> list[tuple[str, bytes]]:
    return [
        (f"city/{district}/air_quality/{device_id}/telemetry",
         orjson.dumps({"ts": start_ts + i, "seq": i, "pm25": 10.0 + (i % 7)}))
        for i in range(READINGS_PER_DEVICE)
        for device_id in device_ids
    ]


async def _publish(url: str, messages: list[tuple[str, bytes]], *, chunk: int = 200) -> None:
    """Publish at QoS 1 in chunks, each once the broker acknowledged the one before (as devices would)."""
    [publisher] = await wire.open_publishers(parse_broker_url(url), 1, client_id_prefix="crash-test-pub")
    try:
        assert publisher.transport is not None
        for start in range(0, len(messages), chunk):
            part = messages[start:start + chunk]
            publisher.transport.write(b"".join(
                wire.publish_packet(t, p, qos=1, packet_id=(start + i) % 65535 + 1)
                for i, (t, p) in enumerate(part)))
            deadline = time.monotonic() + 20
            while publisher.acks < start + len(part):
                assert time.monotonic() < deadline, "the broker did not acknowledge the readings"
                await asyncio.sleep(0.005)
    finally:
        publisher.close()


def test_qos1_ingest_loses_nothing_when_the_server_is_killed(tmp_path: Path) -> None:
    home = tmp_path / "home"
    subprocess.run([CLI, "import", "divisions", "xihu", "--home", str(home)], check=True, capture_output=True)
    subprocess.run([CLI, "simulate", "fleet", "--count", str(DEVICES), "--district", "xihu",
                    "--mix", "air_quality=1", "--out", str(tmp_path / "fleet.csv")], check=True,
                   capture_output=True)
    subprocess.run([CLI, "devices", "import", str(tmp_path / "fleet.csv"), "--home", str(home)], check=True,
                   capture_output=True)
    lines = (tmp_path / "fleet.csv").read_text().splitlines()[1:]
    device_ids = [line.split(",")[0] for line in lines]
    district = next(line.split(",")[2][:6] for line in lines)
    start_ts = time.time() - 3600
    sent = _readings(district, device_ids, start_ts)
    half = len(sent) // 2
    log = tmp_path / "server.log"

    with _broker(tmp_path) as url:
        server = _Server(home, url, log)
        try:
            asyncio.run(_publish(url, sent[:half]))
            deadline = time.monotonic() + 30
            while server.status()["counts"].get("accepted", 0) < half // 2:
                assert time.monotonic() < deadline, server.status()
                time.sleep(0.01)
            server.kill()  # mid-stream: some batches acknowledged, some in the lake's buffer, some unread
            asyncio.run(_publish(url, sent[half:]))  # the broker holds these for the absent session

            server = _Server(home, url, log)
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

    with open_lake("", home=home) as lake:
        table = lake.query(TelemetryQuery(start=datetime.fromtimestamp(start_ts - 1, UTC),
                                          end=datetime.fromtimestamp(start_ts + 3600, UTC),
                                          measurements=["pm25"]))
    stored = list(zip(table.column("device_num").to_pylist(),
                      [t.timestamp() for t in table.column("ts").to_pylist()], strict=True))
    assert len(set(stored)) == len(sent), f"{len(sent) - len(set(stored))} of {len(sent)} readings lost"
    assert len(stored) == len(sent), f"{len(stored) - len(set(stored))} readings stored twice"
