"""kill -9 under load: a real `citybrain serve` takes writes from concurrent clients and is killed with
SIGKILL at a random moment, then started again, cycle after cycle. Afterwards every write the server
acknowledged must be in the store once, and its audit record in the log once (the answer carries the
record's id as X-Request-Id, and the record is committed before the answer is sent); the audit chain must
verify. Shared by `tests/governance/test_faults.py` (a few cycles) and `bench/faults.py` (N ≥ 20).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from citybrain.governance import audit
from tests.servers import free_port, make_key, start_citybrain


@dataclass
class FaultReport:
    cycles: int = 0
    acknowledged: int = 0  # writes answered 201
    transitions: int = 0  # case transitions answered 200
    unanswered: int = 0  # writes cut off by a kill (may or may not have been stored: both are fine)
    lost: list[str] = field(default_factory=list)  # acknowledged, not in the store or without audit record
    duplicated: list[str] = field(default_factory=list)  # audit records of one request more than once
    chain_intact: bool = False
    audit_records: int = 0


def kill9_cycles(home: Path, cycles: int, *, clients: int = 4, seed: int = 1,
                 load_seconds: tuple[float, float] = (0.5, 2.5), progress=None) -> FaultReport:
    rng = random.Random(seed)
    port = free_port()
    acknowledged: dict[str, str] = {}  # request id -> entity id
    report = FaultReport()
    lock = threading.Lock()
    acted: dict[str, str] = {}  # request id -> case id, of case transitions answered 200
    # the writers sign in as a connected system would; no rate limit, so the load is what four clients send
    environment = {**os.environ, "CITYBRAIN_AUTH_REQUIRED": "true", "CITYBRAIN_RATE_LIMIT_PER_S": "0"}
    subprocess.run([sys.executable, "-m", "citybrain", "import", "divisions", "xihu", "--home", str(home)],
                   check=True, capture_output=True, timeout=300)  # cases need places
    key = ""
    for cycle in range(cycles):
        server = start_citybrain(home, port, "serve", env=environment)
        key = key or make_key(home, "kill-9 writers", ["system"])
        stop = threading.Event()

        def load(worker: int, cycle: int = cycle, stop: threading.Event = stop, key: str = key) -> None:
            number = 0
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10, headers={"X-API-Key": key}) as client:
                if worker == 0:  # one client takes cases through their steps instead
                    _act_on_cases(client, stop, acted, lock, report)
                    return
                while not stop.is_set():
                    entity_id = f"urn:ngsi-ld:Streetlight:c{cycle}-w{worker}-{number}"
                    number += 1
                    try:
                        answer = client.post("/api/v1/entities", json={
                            "id": entity_id, "type": "Streetlight", "powerState": {"type": "Property", "value": "on"}})
                    except httpx.TransportError:
                        with lock:
                            report.unanswered += 1
                        return
                    if answer.status_code == 201:
                        with lock:
                            acknowledged[answer.headers["x-request-id"]] = entity_id

        workers = [threading.Thread(target=load, args=(w,)) for w in range(clients)]
        for worker in workers:
            worker.start()
        time.sleep(rng.uniform(*load_seconds))
        os.kill(server.pid, signal.SIGKILL)
        server.wait()
        stop.set()
        for worker in workers:
            worker.join()
        report.cycles += 1
        if progress is not None:
            progress(cycle)
    report.acknowledged = len(acknowledged)
    report.transitions = len(acted)
    report.lost, report.duplicated, verification = _check(home, acknowledged, acted=acted)
    report.chain_intact, report.audit_records = verification.intact, verification.records
    return report


def _act_on_cases(client: httpx.Client, stop: threading.Event, acted: dict[str, str], lock: threading.Lock,
                  report: FaultReport) -> None:
    """Open a case (dispatched at once), then receive it and start work on it, over and over."""
    while not stop.is_set():
        try:
            opened = client.post("/api/v1/cases", json={"eventType": "CG-01-002", "orgUnit": "330106002052",
                                                        "description": "墙上小广告"})
            if opened.status_code != 201:
                continue
            for action in ("receive", "start"):
                answer = client.post(f"/api/v1/cases/{opened.json()['id']}/transitions", json={"action": action})
                if answer.status_code == 200:
                    with lock:
                        acted[answer.headers["x-request-id"]] = opened.json()["id"]
        except httpx.TransportError:
            with lock:
                report.unanswered += 1
            return


def _check(home: Path, acknowledged: dict[str, str], *, db: str = "", acted: Mapping[str, str] | None = None
           ) -> tuple[list[str], list[str], audit.Verification]:
    """What the store holds after the faults: (lost, duplicated, the audit chain's verification). Lost: a
    write answered 201 missing from the store or without its audit record, or a case transition answered 200
    not stored (each kept with the request's context id); duplicated: either recorded twice."""
    import sqlalchemy as sa

    from citybrain.disposal.models import CaseTransitionRow
    from citybrain.governance.models import AuditRecordRow
    from citybrain.hub.entities.models import EntityRow
    from citybrain.platform import Platform
    from citybrain.settings import Settings

    acted = acted or {}
    platform = Platform(Settings(db=db, home=home, bus="memory"))
    try:
        with platform.session() as session:
            stored = set(session.scalars(sa.select(EntityRow.id).where(EntityRow.id.in_(list(acknowledged.values())))))
            recorded = Counter(session.scalars(sa.select(AuditRecordRow.context_id)
                                               .where(AuditRecordRow.action == "POST /api/v1/entities")))
            steps = Counter(session.scalars(sa.select(CaseTransitionRow.context_id).where(
                CaseTransitionRow.context_id.in_(list(acted))))) if acted else Counter()
            verification = audit.verify(session)
    finally:
        platform.dispose()
    lost = sorted({entity for request, entity in acknowledged.items() if entity not in stored or recorded[request] == 0})
    lost += sorted(f"transition {request}" for request in acted if steps[request] == 0)
    duplicated = sorted(request for request, count in recorded.items() if count > 1)
    duplicated += sorted(f"transition {request}" for request, count in steps.items() if count > 1)
    return lost, duplicated, verification


@dataclass
class StoreOutageReport:
    cycles: int = 0
    acknowledged: int = 0  # writes answered 201
    unavailable: int = 0  # writes answered 503 while the store was down (the client may retry)
    server_errors: list[str] = field(default_factory=list)  # any other 5xx, or the server not answering
    degraded_seen: int = 0  # outages during which /health said "degraded"
    recovery_s: list[float] = field(default_factory=list)  # store back → first write answered 201
    lost: list[str] = field(default_factory=list)
    duplicated: list[str] = field(default_factory=list)
    chain_intact: bool = False


def store_outage_cycles(home: Path, cycles: int, *, clients: int = 4, up_s: float = 1.5, down_s: float = 2.0,
                        progress=None) -> StoreOutageReport:
    """`citybrain serve` on a PostgreSQL of the test's own, which is stopped (fast shutdown: connections cut,
    open transactions rolled back) and started again under writes, cycle after cycle, the server left
    running. While the store is down writes must be answered 503 and /health must say degraded; once it is
    back the server must take writes again by itself; every write answered 201 must be stored once, with its
    audit record, and the audit chain must verify."""
    from tests.servers import PrivatePostgres

    with PrivatePostgres() as store:
        return _outage_cycles(home, store, {"CITYBRAIN_DB": store.url}, store.url, cycles, clients=clients,
                              up_s=up_s, down_s=down_s, degraded=lambda h: not h["store"]["ok"], progress=progress)


def bus_outage_cycles(home: Path, cycles: int, *, clients: int = 4, up_s: float = 1.5, down_s: float = 2.0,
                      progress=None) -> StoreOutageReport:
    """The same with the NATS JetStream bus stopped and started (the store, SQLite, stays up): /health must
    say the bus is disconnected meanwhile, writes wait for the reconnection (nats-py buffers their events)
    and none may fail or be lost."""
    from tests.servers import PrivateNats

    with PrivateNats() as bus:
        return _outage_cycles(home, bus, {"CITYBRAIN_BUS": bus.url}, "", cycles, clients=clients, up_s=up_s,
                              down_s=down_s, degraded=lambda h: not h["bus_connected"], progress=progress)


def _outage_cycles(home: Path, service, environment: dict[str, str], db: str, cycles: int, *, clients: int,
                   up_s: float, down_s: float, degraded, progress) -> StoreOutageReport:
    from tests.servers import stop

    report = StoreOutageReport()
    acknowledged: dict[str, str] = {}
    lock = threading.Lock()
    environment = {**os.environ, **environment, "CITYBRAIN_AUTH_REQUIRED": "true", "CITYBRAIN_RATE_LIMIT_PER_S": "0"}
    port = free_port()
    server = start_citybrain(home, port, "serve", env=environment)
    key = make_key(home, "outage writers", ["system"], db=db)
    base = f"http://127.0.0.1:{port}"
    done = threading.Event()
    last_ok = [0.0]

    def write(worker: int) -> None:
        number = 0
        with httpx.Client(base_url=base, timeout=60, headers={"X-API-Key": key}) as client:
            while not done.is_set():
                entity_id = f"urn:ngsi-ld:Streetlight:o-w{worker}-{number}"
                number += 1
                try:
                    answer = client.post("/api/v1/entities", json={
                        "id": entity_id, "type": "Streetlight", "powerState": {"type": "Property", "value": "on"}})
                except httpx.TransportError as exc:
                    with lock:
                        report.server_errors.append(f"no answer: {exc!r}")
                    time.sleep(0.2)
                    continue
                with lock:
                    if answer.status_code == 201:
                        acknowledged[answer.headers["x-request-id"]] = entity_id
                        last_ok[0] = time.monotonic()
                    elif answer.status_code == 503:
                        report.unavailable += 1
                    elif answer.status_code >= 500:
                        report.server_errors.append(f"{answer.status_code}: {answer.text[:300]}")
                if answer.status_code == 503:
                    time.sleep(0.05)

    workers = [threading.Thread(target=write, args=(w,)) for w in range(clients)]
    for worker in workers:
        worker.start()
    try:
        for cycle in range(cycles):
            time.sleep(up_s)
            service.stop()
            deadline, seen = time.monotonic() + down_s, False
            while time.monotonic() < deadline:
                try:
                    health = httpx.get(f"{base}/health", timeout=5).json()
                    seen = seen or (health["status"] == "degraded" and degraded(health))
                except httpx.TransportError as exc:
                    report.server_errors.append(f"/health did not answer: {exc!r}")
                time.sleep(0.2)
            report.degraded_seen += seen
            service.start()
            back = time.monotonic()
            while last_ok[0] < back and time.monotonic() - back < 60:
                time.sleep(0.05)
            report.recovery_s.append(round(last_ok[0] - back, 2) if last_ok[0] >= back else float("inf"))
            report.cycles += 1
            if progress is not None:
                progress(cycle)
        time.sleep(up_s)  # writes after the last outage, which move any spooled audit record into the log
    finally:
        done.set()
        for worker in workers:
            worker.join()
        stop(server)
    report.acknowledged = len(acknowledged)
    report.lost, report.duplicated, verification = _check(home, acknowledged, db=db)
    report.chain_intact = verification.intact
    return report


@dataclass
class IngestFaultReport:
    cycles: int = 0
    sent: int = 0  # QoS 1 readings the broker acknowledged to the devices
    stored: int = 0  # distinct readings in the lake afterwards
    lost: int = 0
    duplicated: int = 0
    disconnect_reported: int = 0  # broker outages during which /health said the ingest was disconnected


def ingest_fault_cycles(folder: Path, cycles: int, *, devices: int = 100, per_cycle: int = 400,
                        faults: tuple[str, ...] = ("kill", "broker"), progress=None) -> IngestFaultReport:
    """QoS 1 telemetry into a real `citybrain serve` reading a Mosquitto of its own (persistence on), and
    each cycle one fault mid-stream, alternately: the ingest process killed with SIGKILL and started again,
    or the broker stopped and started under it (`faults`). Afterwards every reading the broker acknowledged to the
    devices must be in the lake exactly once."""
    import asyncio

    import orjson

    from tests.sensing.processes import RestartableBroker, Server, prepare_home, publish_qos1, stored_readings

    home, device_ids, district = prepare_home(folder, devices)
    start_ts = time.time() - 43_200  # readings a second apart per device: a cycle spans minutes
    report = IngestFaultReport()
    broker = RestartableBroker(folder)
    broker.start()
    environment = {"CITYBRAIN_MQTT": broker.url, "CITYBRAIN_MQTT_QOS": "1", "CITYBRAIN_MQTT_CLIENT_ID": "fault-ingest",
                   "CITYBRAIN_AUTH_REQUIRED": "false"}  # /health and the sensing status, read by the test

    def connected(status: dict) -> bool:
        return bool((status.get("mqtt") or {}).get("connected"))

    log = folder / "ingest-server.log"
    server = Server(home, environment, log, connected)
    number = 0

    def readings(count: int) -> list[tuple[str, bytes]]:
        nonlocal number
        out = []
        for _ in range(count):
            device = device_ids[number % len(device_ids)]
            step = number // len(device_ids)
            out.append((f"city/{district}/air_quality/{device}/telemetry",
                        orjson.dumps({"ts": start_ts + step, "seq": step, "pm25": 10.0 + step % 7})))
            number += 1
        return out

    try:
        for cycle in range(cycles):
            asyncio.run(publish_qos1(broker.url, readings(per_cycle // 2)))
            if faults[cycle % len(faults)] == "kill":
                server.kill()  # mid-stream: some batches acknowledged, some buffered, some unread
                asyncio.run(publish_qos1(broker.url, readings(per_cycle // 2)))  # kept for the absent session
                server = Server(home, environment, log, connected)
            else:
                broker.stop()
                deadline = time.monotonic() + 30
                while connected(server.status()) and time.monotonic() < deadline:
                    time.sleep(0.05)
                health = server.get("/health")
                report.disconnect_reported += health["ingest"].get("mqtt_connected") is False
                broker.start()
                asyncio.run(publish_qos1(broker.url, readings(per_cycle // 2)))
            report.cycles += 1
            if progress is not None:
                progress(cycle)
        deadline = time.monotonic() + 120
        previous = -1
        while True:  # until everything sent has been taken in
            status = server.status()
            taken = status["counts"].get("accepted", 0) + status["counts"].get("duplicates", 0)
            if connected(status) and status["mqtt"]["pending"] == 0 and taken == previous:
                break
            if time.monotonic() > deadline:
                raise AssertionError(f"the ingest did not settle: {status}")
            previous = taken
            time.sleep(0.5)
    finally:
        server.stop()
        broker.stop()
    report.sent = number
    stored = stored_readings(home, start_ts, 43_200)
    report.stored = len(set(stored))
    report.lost = report.sent - report.stored
    report.duplicated = len(stored) - len(set(stored))
    return report
