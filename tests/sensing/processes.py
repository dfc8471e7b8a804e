"""Helpers for tests that run City Brain processes (servers, relays) and a Mosquitto of their own."""

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
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson

from citybrain.sensing.ingest.mqtt import parse_broker_url
from citybrain.sim import wire
from tests.services import require_mqtt, require_service

CLI = str(Path(sys.executable).with_name("citybrain"))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def require_mosquitto_binary() -> None:
    """A test that starts brokers of its own needs the binary (fails under CITYBRAIN_REQUIRE_SERVICES=1)."""
    require_mqtt()  # the system broker's presence says Mosquitto is installed here
    if shutil.which("mosquitto") is None:
        require_service("mosquitto binary", "127.0.0.1", 1)


class RestartableBroker:
    """A Mosquitto of the test's own: it keeps every QoS 1 message of an absent session (the system broker's
    default keeps 1,000), and nobody else publishes there. It can be stopped and started on the same port;
    with `persistence` (as a production broker runs) its sessions and their queued messages survive that."""

    def __init__(self, folder: Path, *, persistence: bool = True) -> None:
        require_mosquitto_binary()
        self.port = free_port()
        self.config = folder / "mosquitto.conf"
        self.config.write_text(f"listener {self.port} 127.0.0.1\nallow_anonymous true\n"
                               f"persistence {'true' if persistence else 'false'}\n"
                               f"persistence_location {folder}/\nmax_queued_messages 0\nmax_inflight_messages 0\n"
                               "user root\n")  # root: the broker writes its sessions into the test's private folder
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.proc = subprocess.Popen([shutil.which("mosquitto") or "mosquitto", "-c", str(self.config)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), 0.2):
                return
            assert time.monotonic() < deadline and self.proc.poll() is None, "the test broker did not start"
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()  # Mosquitto saves its sessions and queued messages on the way out
            self.proc.wait(timeout=10)
            self.proc = None


@contextlib.contextmanager
def own_broker(folder: Path) -> Iterator[str]:
    """A broker of the test's own for one test (no persistence): its URL."""
    broker = RestartableBroker(folder, persistence=False)
    broker.start()
    try:
        yield broker.url
    finally:
        broker.stop()


def stored_readings(home: Path, start_ts: float, span_s: float) -> list[tuple[int, float]]:
    """Every pm25 reading the home's lake holds from `start_ts` on, as (device number, epoch seconds): what
    the fault tests count lost and duplicated readings by."""
    from datetime import UTC, datetime

    from citybrain.sensing.lake.base import open_lake
    from citybrain.sensing.lake.query import TelemetryQuery

    with open_lake("", home=home) as lake:
        table = lake.query(TelemetryQuery(start=datetime.fromtimestamp(start_ts - 1, UTC),
                                          end=datetime.fromtimestamp(start_ts + span_s, UTC), measurements=["pm25"]))
    return list(zip(table.column("device_num").to_pylist(),
                    [t.timestamp() for t in table.column("ts").to_pylist()], strict=True))


def prepare_home(tmp_path: Path, devices: int, *, mix: str = "air_quality=1") -> tuple[Path, list[str], str]:
    """A home with the Xihu district and `devices` registered devices: (home, device ids, district code)."""
    home = tmp_path / "home"
    subprocess.run([CLI, "import", "divisions", "xihu", "--home", str(home)], check=True, capture_output=True)
    fleet = tmp_path / "fleet.csv"
    subprocess.run([CLI, "simulate", "fleet", "--count", str(devices), "--district", "xihu", "--mix", mix,
                    "--out", str(fleet)], check=True, capture_output=True)
    subprocess.run([CLI, "devices", "import", str(fleet), "--home", str(home)], check=True,
                   capture_output=True)
    lines = fleet.read_text().splitlines()[1:]
    return home, [line.split(",")[0] for line in lines], lines[0].split(",")[2][:6]


class Server:
    """`citybrain serve` in a subprocess, ready once `ready(status)` holds."""

    def __init__(self, home: Path, environment: dict[str, str], log: Path,
                 ready: Callable[[dict[str, Any]], bool]) -> None:
        self.port = free_port()
        with log.open("ab") as out:
            self.proc = subprocess.Popen([CLI, "serve", "--home", str(home), "--port", str(self.port)],
                                         env={**os.environ, **environment}, stdout=out,
                                         stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while not ready(self.status_or_none() or {}):
            assert self.proc.poll() is None, f"the server exited: {log.read_text()[-2000:]}"
            assert time.monotonic() < deadline, f"the server was not ready in time: {log.read_text()[-2000:]}"
            time.sleep(0.1)

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=5) as answer:
            return orjson.loads(answer.read())

    def status_or_none(self) -> dict[str, Any] | None:
        try:
            return self.get("/api/v1/sensing/status")
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


async def publish_qos1(url: str, messages: list[tuple[str, bytes]], *, chunk: int = 200) -> None:
    """Publish at QoS 1 in chunks, each once the broker acknowledged the one before (as devices would)."""
    [publisher] = await wire.open_publishers(parse_broker_url(url), 1, client_id_prefix="test-pub")
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


def wait_until(condition: Callable[[], bool], seconds: float, describe: Callable[[], object]) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, describe()
        time.sleep(0.1)
