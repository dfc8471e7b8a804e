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
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from tests.servers import free_port, make_key, start_citybrain


@dataclass
class FaultReport:
    cycles: int = 0
    acknowledged: int = 0  # writes answered 201
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
    # the writers sign in as a connected system would; no rate limit, so the load is what four clients send
    environment = {**os.environ, "CITYBRAIN_AUTH_REQUIRED": "true", "CITYBRAIN_RATE_LIMIT_PER_S": "0"}
    key = ""
    for cycle in range(cycles):
        server = start_citybrain(home, port, "serve", env=environment)
        key = key or make_key(home, "kill-9 writers", ["system"])
        stop = threading.Event()

        def load(worker: int, cycle: int = cycle, stop: threading.Event = stop, key: str = key) -> None:
            number = 0
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10, headers={"X-API-Key": key}) as client:
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
    _check(home, acknowledged, report)
    return report


def _check(home: Path, acknowledged: dict[str, str], report: FaultReport) -> None:
    import sqlalchemy as sa

    from citybrain.governance import audit
    from citybrain.governance.models import AuditRecordRow
    from citybrain.hub.entities.models import EntityRow
    from citybrain.platform import Platform
    from citybrain.settings import Settings

    platform = Platform(Settings(home=home, bus="memory"))
    try:
        with platform.session() as session:
            stored = set(session.scalars(sa.select(EntityRow.id).where(EntityRow.id.in_(list(acknowledged.values())))))
            recorded = Counter(session.scalars(sa.select(AuditRecordRow.context_id)
                                               .where(AuditRecordRow.action == "POST /api/v1/entities")))
            result = audit.verify(session)
        report.lost = sorted({entity for request, entity in acknowledged.items()
                              if entity not in stored or recorded[request] == 0})
        report.duplicated = sorted(request for request, count in recorded.items() if count > 1)
        report.chain_intact = result.intact
        report.audit_records = result.records
    finally:
        platform.dispose()
