#!/usr/bin/env python3
"""Hub benchmark: entity batch upserts/s, single-entity GETs/s and query latency over HTTP, on SQLite and
PostgreSQL side by side in one run, with the load generator on the same machine as the server.

For each backend: a fresh store, `citybrain import divisions pudong`, `citybrain serve` on a free port, then

1. load   — N realistic NGSI-LD entities (5 Smart Data Model types, 3–6 attributes each with observedAt, a
            Point in Pudong, a real village as orgUnit) POSTed as 1,000-entity batches to
            /api/v1/entityOperations/upsert over several connections; request bodies are generated (orjson)
            before the clock starts. This phase is the upsert measurement (entities/s).
2. get    — wrk, 32 connections, GET /api/v1/entities/{id} for random ids among the N.
3. query  — wrk, light concurrency, per query kind: type+village (limit 100), a ~1 km bbox, and a q filter
            with type+village.

It prints a table, appends the figures (machine facts, date, exact command) to BENCHMARKS.md and writes the
headline figures as a flat JSON object to bench/results/hub.json.

    .venv/bin/python bench/hub.py                      # 1,000,000 entities, both backends (≈ 15–25 min)
    .venv/bin/python bench/hub.py --quick              # 20,000 entities, short phases, nothing recorded
    .venv/bin/python bench/hub.py --backends sqlite --entities 200000 --duration 10

wrk is needed (Debian: `apt-get install -y wrk`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform as py_platform
import random
import resource
import shlex
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
RESULTS_JSON = BENCH_DIR / "results" / "hub.json"
BENCHMARKS_MD = REPO / "BENCHMARKS.md"
UPSERT_PATH = "/api/v1/entityOperations/upsert"
BATCH = 1000  # the API's maximum batch size
BENCH_STREAM = "CITYBRAIN_BENCH"  # JetStream stream of the multi-worker setups, deleted after each

# Targets from issue 2, and FIWARE Orion-LD's published load-test figures (1 CPU for the broker).
TARGET_UPSERTS_PER_S = 20_000
TARGET_GETS_PER_S = 4_000
TARGET_QUERY_P99_MS = 50.0
ORION_LD_UPDATES_PER_S = 1_800
ORION_LD_GETS_PER_S = 4_200

# Pudong's extent, roughly (lon, lat).
PUDONG_LON = (121.45, 121.95)
PUDONG_LAT = (30.85, 31.40)
ENTITY_TYPES = ("AirQualityObserved", "Streetlight", "WasteContainer", "TrafficFlowObserved", "Device")
QUERY_KINDS = {
    "type_org": "type + village orgUnit, limit 100",
    "bbox": "bbox ≈ 1 km × 1 km, limit 100",
    "q_type_org": "q pm25>75 + type + village orgUnit, limit 100",
}

console = Console()


# ------------------------------------------------------------------------------------------ data


def village_codes() -> list[str]:
    from citybrain.hub.org.divisions import read_divisions

    return [d.code for d in read_divisions("pudong") if d.kind == "village"]


def entity_id(index: int) -> str:
    return f"urn:ngsi-ld:{ENTITY_TYPES[index % len(ENTITY_TYPES)]}:PD-{index:07d}"


def make_entity(index: int, rng: random.Random, villages: list[str], base: datetime) -> dict[str, Any]:
    """One realistic entity: the type rotates with the index (so ids alone tell the type)."""
    kind = ENTITY_TYPES[index % len(ENTITY_TYPES)]
    observed = (base - timedelta(seconds=rng.randrange(86_400))).strftime("%Y-%m-%dT%H:%M:%SZ")
    lon = round(rng.uniform(*PUDONG_LON), 6)
    lat = round(rng.uniform(*PUDONG_LAT), 6)
    attrs: dict[str, Any]

    def prop(value: Any, unit: str | None = None) -> dict[str, Any]:
        out = {"type": "Property", "value": value, "observedAt": observed}
        if unit:
            out["unitCode"] = unit
        return out

    if kind == "AirQualityObserved":
        pm25 = round(rng.lognormvariate(3.5, 0.6), 1)
        attrs = {"pm25": prop(pm25, "GQ"), "pm10": prop(round(pm25 * rng.uniform(1.2, 1.9), 1), "GQ"),
                 "no2": prop(round(rng.uniform(5, 90), 1), "GQ"),
                 "airQualityIndex": prop(min(500, int(pm25 * 1.4))),
                 "dateObserved": {"type": "Property", "value": observed}}
    elif kind == "Streetlight":
        attrs = {"status": prop(rng.choices(("ok", "defectiveLamp", "columnIssue"), (96, 3, 1))[0]),
                 "powerState": prop(rng.choice(("on", "off", "low"))),
                 "illuminanceLevel": prop(round(rng.random(), 3))}
    elif kind == "WasteContainer":
        attrs = {"fillingLevel": prop(round(rng.random(), 3)),
                 "wasteType": {"type": "Property", "value": rng.choice(("recyclable", "kitchen", "hazardous", "residual"))},
                 "status": prop(rng.choices(("ok", "lidOpen", "dropped"), (97, 2, 1))[0]),
                 "dateLastEmptying": {"type": "Property", "value": observed}}
    elif kind == "TrafficFlowObserved":
        attrs = {"intensity": prop(rng.randrange(0, 2400)), "averageVehicleSpeed": prop(round(rng.uniform(5, 80), 1), "KMH"),
                 "occupancy": prop(round(rng.random(), 3)), "congested": prop(rng.random() < 0.15),
                 "laneId": {"type": "Property", "value": rng.randrange(1, 6)},
                 "dateObserved": {"type": "Property", "value": observed}}
    else:
        attrs = {"deviceCategory": {"type": "Property", "value": rng.choice(("sensor", "actuator", "meter"))},
                 "deviceState": prop(rng.choices(("ok", "lowBattery", "error", "offline"), (90, 5, 3, 2))[0]),
                 "batteryLevel": prop(round(rng.random(), 3)),
                 "serialNumber": {"type": "Property", "value": f"SN{rng.randrange(10**9):09d}"}}
    return {"id": entity_id(index), "type": kind, **attrs,
            "location": {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [lon, lat]}},
            "orgUnit": {"type": "Relationship", "object": f"urn:ngsi-ld:OrgUnit:{rng.choice(villages)}"}}


def generate_batches(entities: int, villages: list[str], seed: int) -> list[bytes]:
    """Request bodies (JSON arrays of ≤ 1,000 entities), built before any clock starts."""
    rng = random.Random(seed)
    base = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
    bodies: list[bytes] = []
    with _progress() as progress:
        task = progress.add_task("generating entities", total=entities)
        for start in range(0, entities, BATCH):
            stop = min(entities, start + BATCH)
            bodies.append(orjson.dumps([make_entity(i, rng, villages, base) for i in range(start, stop)]))
            progress.advance(task, stop - start)
    return bodies


def generate_updates(bodies: list[bytes], entities: int, seed: int) -> list[bytes]:
    """The steady state after the load: the first `entities` entities report again an hour later, with new
    readings (every numeric observed Property moves a little, within its type's range) and the same place
    and org unit, as devices do."""
    rng = random.Random(seed + 1)
    later = timedelta(hours=1)
    updates: list[bytes] = []
    done = 0
    with _progress() as progress:
        task = progress.add_task("generating updates", total=entities)
        for body in bodies:
            if done >= entities:
                break
            batch = orjson.loads(body)[: entities - done]
            for entity in batch:
                for attr in entity.values():
                    if not isinstance(attr, dict) or attr.get("type") != "Property" or "observedAt" not in attr:
                        continue  # static properties (serial numbers, waste type) do not change
                    value = attr["value"]
                    if isinstance(value, float) and 0 <= value <= 1:  # fractions: fill level, occupancy …
                        attr["value"] = round(min(1.0, max(0.0, value + rng.uniform(-0.05, 0.05))), 3)
                    elif isinstance(value, float):
                        attr["value"] = round(value * rng.uniform(0.9, 1.1), 1)
                    elif isinstance(value, int) and not isinstance(value, bool):
                        attr["value"] = min(500, max(0, value + rng.randint(-5, 5)))  # 500: the AQI's top
                    observed = datetime.fromisoformat(attr["observedAt"]) + later
                    attr["observedAt"] = observed.strftime("%Y-%m-%dT%H:%M:%SZ")
            updates.append(orjson.dumps(batch))
            done += len(batch)
            progress.advance(task, len(batch))
    return updates


def query_paths(kind: str, villages: list[str], rng: random.Random, count: int = 2000) -> list[str]:
    paths = []
    for _ in range(count):
        village = rng.choice(villages)
        if kind == "type_org":
            params = {"type": rng.choice(ENTITY_TYPES), "orgUnit": village, "limit": 100}
        elif kind == "bbox":
            lon = rng.uniform(PUDONG_LON[0], PUDONG_LON[1] - 0.01)
            lat = rng.uniform(PUDONG_LAT[0], PUDONG_LAT[1] - 0.009)
            params = {"bbox": f"{lon:.5f},{lat:.5f},{lon + 0.01:.5f},{lat + 0.009:.5f}", "limit": 100}
        else:
            params = {"type": "AirQualityObserved", "orgUnit": village, "q": "pm25>75", "limit": 100}
        paths.append("/api/v1/entities?" + urllib.parse.urlencode(params))
    return paths


# ------------------------------------------------------------------------------------ processes


def _progress() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TaskProgressColumn(),
                    TimeElapsedColumn(), TimeRemainingColumn(), console=console, transient=False)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def cpu_seconds(pid: int) -> float:
    """User + system CPU of one process (0 if it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def tree_cpu_seconds(pid: int) -> float:
    """CPU of a process and its live children (the uvicorn workers of `serve --workers N`)."""
    total = cpu_seconds(pid)
    with contextlib.suppress(FileNotFoundError, ProcessLookupError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(FileNotFoundError, ProcessLookupError):
                for child in (task / "children").read_text().split():
                    total += tree_cpu_seconds(int(child))
    return total


def postgres_cpu_seconds() -> dict[int, float]:
    """CPU of every postgres process on the machine (server backends, WAL writer, checkpointer, autovacuum),
    by pid: a phase counts what each process alive at its end spent during it (a process that started
    meanwhile counts whole), so a backend that exits mid-phase cannot make the total negative."""
    seconds = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() == "postgres":
                    seconds[int(entry.name)] = cpu_seconds(int(entry.name))
            except (FileNotFoundError, ProcessLookupError, PermissionError):
                continue
    return seconds


def postgres_cpu_since(start: dict[int, float]) -> float:
    return sum(max(0.0, now - start.get(pid, 0.0)) for pid, now in postgres_cpu_seconds().items())


def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def self_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class CpuMeter:
    """CPU seconds spent by the server, PostgreSQL and the load generator during one phase."""

    def __init__(self, server_pid: int, postgres: bool) -> None:
        self.server_pid, self.postgres = server_pid, postgres

    def __enter__(self) -> CpuMeter:
        self._start = (time.perf_counter(), tree_cpu_seconds(self.server_pid),
                       postgres_cpu_seconds() if self.postgres else {}, self_cpu_seconds() + children_cpu_seconds())
        return self

    def __exit__(self, *_: object) -> None:
        wall, server, pg, gen = self._start
        self.wall_s = time.perf_counter() - wall
        self.server_s = tree_cpu_seconds(self.server_pid) - server
        self.postgres_s = postgres_cpu_since(pg) if self.postgres else 0.0
        self.generator_s = self_cpu_seconds() + children_cpu_seconds() - gen

    def shares(self) -> dict[str, float]:
        """Cores used on average by each party during the phase."""
        return {"server_cores": self.server_s / self.wall_s, "postgres_cores": self.postgres_s / self.wall_s,
                "generator_cores": self.generator_s / self.wall_s}


def run_cli(args: list[str], log: Path) -> None:
    with log.open("ab") as out:
        proc = subprocess.run([sys.executable, "-m", "citybrain", *args], stdout=out, stderr=subprocess.STDOUT,
                              cwd=REPO)
    if proc.returncode != 0:
        sys.exit(f"`citybrain {' '.join(args)}` failed; see {log}:\n{log.read_text()[-3000:]}")


def http_get(url: str, timeout: float = 30) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_server(store_args: list[str], log: Path, extra: list[str]) -> Server:
    port = free_port()
    out = log.open("ab")
    proc = subprocess.Popen([sys.executable, "-m", "citybrain", "serve", *store_args, "--port", str(port), *extra],
                            stdout=out, stderr=subprocess.STDOUT, cwd=REPO)
    server = Server(proc, port, log)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"the server exited with {proc.returncode}; see {log}:\n{log.read_text()[-3000:]}")
        with contextlib.suppress(OSError):
            status, body = http_get(server.base + "/health", timeout=2)
            if status == 200 and orjson.loads(body).get("status") == "ok":
                return server
        time.sleep(0.2)
    server.stop()
    sys.exit(f"the server did not become healthy within 60 s; see {log}")


# -------------------------------------------------------------------------------- load (upserts)


@dataclass
class LoadResult:
    entities: int
    written: int
    wall_s: float
    batch_p50_ms: float | None
    batch_p99_ms: float | None
    problems: list[str] = field(default_factory=list)
    cpu: dict[str, float] = field(default_factory=dict)
    generator_cpu_s: float = 0.0

    @property
    def per_s(self) -> float:
        return self.written / self.wall_s


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    status_line = await reader.readline()
    if not status_line:
        raise ConnectionError("the server closed the connection")
    status = int(status_line.split()[1])
    length = 0
    while True:
        line = await reader.readline()
        if line in (b"\r\n", b"\n", b""):
            break
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    return status, await reader.readexactly(length)


async def _upsert_all(port: int, bodies: list[bytes], sizes: list[int], connections: int, on_done: Any) -> tuple[int, list[float], list[str]]:
    """POST every body once over `connections` keep-alive connections (raw asyncio streams: cheaper in CPU
    than any Python HTTP client library)."""
    pending = iter(range(len(bodies)))
    latencies: list[float] = []
    problems: list[str] = []
    written = 0

    async def worker() -> None:
        nonlocal written
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            for index in pending:
                body = bodies[index]
                head = (f"POST {UPSERT_PATH} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
                        f"Content-Length: {len(body)}\r\n\r\n").encode()
                started = time.perf_counter()
                writer.writelines((head, body))
                await writer.drain()
                status, answer = await _read_response(reader)
                latencies.append(time.perf_counter() - started)
                if status in (200, 207):
                    result = orjson.loads(answer)
                    written += len(result["success"])
                    for error in result.get("errors", [])[:1]:
                        problems.append(f"batch {index}: item {error['index']}: {error['error'].get('detail')}")
                else:
                    problems.append(f"batch {index}: HTTP {status}: {answer[:300]!r}")
                on_done(sizes[index])
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    await asyncio.gather(*(worker() for _ in range(connections)))
    return written, latencies, problems


def load_python(server: Server, bodies: list[bytes], entities: int, connections: int, postgres: bool,
                label: str = "upserting (python client)") -> LoadResult:
    try:
        import uvloop

        runner: Any = uvloop.run
    except ImportError:
        runner = asyncio.run
    sizes = [min(BATCH, entities - i * BATCH) for i in range(len(bodies))]  # for the progress bar
    with _progress() as progress:
        task = progress.add_task(label, total=entities)
        with CpuMeter(server.proc.pid, postgres) as meter:
            written, latencies, problems = runner(_upsert_all(server.port, bodies, sizes, connections,
                                                              lambda n: progress.advance(task, n)))
    latencies.sort()
    return LoadResult(entities, written, meter.wall_s, _pct(latencies, 50), _pct(latencies, 99), problems,
                      meter.shares(), meter.generator_s)


def load_wrk(server: Server, bodies: list[bytes], entities: int, connections: int, postgres: bool, work: Path) -> LoadResult:
    """The same load through wrk (each body sent once; see bench/wrk_upsert.lua)."""
    body_dir = work / "bodies"
    if not body_dir.exists():
        body_dir.mkdir()
        for index, body in enumerate(bodies):
            (body_dir / f"{index:06d}.json").write_bytes(body)
    for marker in list(body_dir.glob("started-*")) + list(body_dir.glob("done-*")):
        marker.unlink()
    threads = max(1, min(2, connections, len(bodies)))
    cmd = [_wrk(), f"-t{threads}", f"-c{max(connections, threads)}", "-d3600s", "--timeout", "120s",
           "-s", str(BENCH_DIR / "wrk_upsert.lua"), server.base, "--", str(body_dir), str(len(bodies)), str(threads)]
    with _progress() as progress:
        task = progress.add_task("upserting (wrk)", total=entities)
        before_children = children_cpu_seconds()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        started = None
        with CpuMeter(server.proc.pid, postgres) as meter:
            while len(list(body_dir.glob("done-*"))) < threads:
                if proc.poll() is not None:
                    sys.exit(f"wrk exited early:\n{proc.stdout.read().decode() if proc.stdout else ''}")
                if started is None and any(body_dir.glob("started-*")):
                    started = time.perf_counter()
                time.sleep(0.005)
            finished = time.perf_counter()
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=60)
        progress.update(task, completed=entities)
    wrk_cpu = children_cpu_seconds() - before_children
    answered = not_ok = 0
    for done in body_dir.glob("done-*"):
        counts = json.loads(done.read_text())
        answered += counts["answered"]
        not_ok += counts["not_ok"]
    wall = finished - (started or finished)
    written = _count_entities(server)
    problems = [f"{not_ok} batches answered other than 200"] if not_ok else []
    shares = {"server_cores": meter.server_s / wall, "postgres_cores": meter.postgres_s / wall,
              "generator_cores": wrk_cpu / wall}
    return LoadResult(entities, written, wall, None, None, problems, shares, wrk_cpu)


def _count_entities(server: Server) -> int:
    status, body = http_get(server.base + "/api/v1/entities?limit=1&count=true")
    return orjson.loads(body).get("count", 0) if status == 200 else 0


def _pct(sorted_values: list[float], pct: float) -> float | None:
    if not sorted_values:
        return None
    index = min(len(sorted_values) - 1, max(0, round(pct / 100 * len(sorted_values)) - 1))
    return sorted_values[index] * 1000


# ------------------------------------------------------------------------------------------ wrk


def _wrk() -> str:
    path = shutil.which("wrk")
    if path is None:
        sys.exit("wrk is not installed. On Debian/Ubuntu: `apt-get install -y wrk` (as root), then run again.")
    return path


@dataclass
class WrkResult:
    requests: int
    per_s: float
    p50_ms: float
    p99_ms: float
    errors: int
    cpu: dict[str, float] = field(default_factory=dict)


def run_wrk(server: Server, paths_file: Path, *, threads: int, connections: int, duration: int, label: str,
            postgres: bool) -> WrkResult:
    cmd = [_wrk(), f"-t{threads}", f"-c{connections}", f"-d{duration}s", "--latency", "--timeout", "10s",
           "-s", str(BENCH_DIR / "wrk_paths.lua"), server.base, "--", str(paths_file)]
    with _progress() as progress:
        task = progress.add_task(label, total=duration)
        with CpuMeter(server.proc.pid, postgres) as meter:
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            started = time.monotonic()
            while proc.poll() is None:
                time.sleep(0.25)
                progress.update(task, completed=min(duration, time.monotonic() - started))
            output = proc.stdout.read().decode() if proc.stdout else ""
        progress.update(task, completed=duration)
    line = next((ln for ln in output.splitlines() if ln.startswith("WRK_JSON ")), None)
    if proc.returncode != 0 or line is None:
        sys.exit(f"wrk failed ({' '.join(cmd)}):\n{output}")
    figures = json.loads(line.removeprefix("WRK_JSON "))
    errors = sum(v for k, v in figures.items() if k.startswith("errors_"))
    return WrkResult(figures["requests"], figures["requests"] / (figures["duration_us"] / 1e6),
                     figures["p50_us"] / 1000, figures["p99_us"] / 1000, errors, meter.shares())


# ---------------------------------------------------------------------------------------- backends


@dataclass
class BackendResult:
    name: str
    load: LoadResult
    update: LoadResult
    get: WrkResult
    queries: dict[str, WrkResult]
    query_hits: dict[str, float]
    version: str


def fresh_postgres(admin_url: str, name: str) -> str:
    import psycopg

    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    parts = urllib.parse.urlsplit(admin_url)
    return urllib.parse.urlunsplit(parts._replace(path=f"/{name}"))


def drop_postgres(admin_url: str, name: str) -> None:
    import psycopg

    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def delete_nats_stream(url: str, stream: str) -> None:
    """The events the benchmark published are of no further use; do not leave a GB of them in NATS."""
    import nats

    async def delete() -> None:
        connection = await nats.connect(url, connect_timeout=2, max_reconnect_attempts=1)
        try:
            with contextlib.suppress(Exception):
                await connection.jetstream().delete_stream(stream)
        finally:
            await connection.close()

    asyncio.run(delete())


def postgres_version(admin_url: str) -> str:
    import psycopg

    with psycopg.connect(admin_url) as conn:
        return conn.execute("SHOW server_version").fetchone()[0]  # type: ignore[index]


def check_queries(server: Server, paths: dict[str, list[str]]) -> dict[str, float]:
    """Before timing: every query kind answers 200 with results (mean items per page over a sample)."""
    hits = {}
    for kind, kind_paths in paths.items():
        counts = []
        for path in kind_paths[:20]:
            status, body = http_get(server.base + path)
            if status != 200:
                sys.exit(f"query {path} answered {status}: {body[:500]!r}")
            counts.append(len(orjson.loads(body)["items"]))
        hits[kind] = sum(counts) / len(counts)
        if hits[kind] == 0:
            sys.exit(f"query kind {kind} found nothing in 20 samples: the data or the query is wrong")
    return hits


@contextlib.contextmanager
def profiled(server: Server, out_dir: Path | None, name: str) -> Any:
    """With --profile DIR: sample the server with py-spy during one phase (collapsed stacks, for flame graphs
    or `sort | head`)."""
    if out_dir is None:
        yield
        return
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    out_dir.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen([spy, "record", "--pid", str(server.proc.pid), "--format", "raw", "--rate", "200",
                             "--nonblocking", "-o", str(out_dir / f"{name}.txt")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    try:
        yield
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)


def report_phase(name: str, what: str, result: LoadResult, expected: int) -> None:
    """Print an upsert phase's rate; stop the benchmark when the server did not accept every entity."""
    for problem in result.problems[:5]:
        console.print(f"[yellow]{what} problem:[/yellow] {problem}")
    if result.written != expected:
        sys.exit(f"{name}: {result.written} of {expected} {what} were accepted")
    console.print(f"{name}: {result.written:,} {what} in {result.wall_s:.1f} s = [bold]{result.per_s:,.0f}[/bold] "
                  "entities/s")


def run_backend(backend: str, workers: int, args: argparse.Namespace, bodies: list[bytes], updates: list[bytes],
                paths: dict[str, list[str]], ids_file: Path, work: Path) -> BackendResult:
    name = backend if workers == 1 else f"{backend}_{workers}w"
    home = work / name
    home.mkdir()
    log = work / f"{name}-server.log"
    postgres = backend == "postgresql"
    server_args = list(args.server_arg or [])
    if workers > 1:  # several API processes need the shared bus (see `citybrain serve --help`)
        server_args += ["--workers", str(workers), "--bus", args.nats_url]
        os.environ["CITYBRAIN_BUS_STREAM"] = BENCH_STREAM  # the server inherits it; deleted when done
    if postgres:
        url = fresh_postgres(args.pg_admin_url, args.pg_database)
        store_args = ["--db", url, "--home", str(home)]
        version = postgres_version(args.pg_admin_url)
    else:
        store_args = ["--home", str(home)]
        version = sqlite3.sqlite_version
    console.rule(f"[bold]{name}[/bold] ({version})")
    try:
        run_cli(["import", "divisions", "pudong", *store_args], log)
        server = start_server(store_args, log, server_args)
        try:
            with profiled(server, args.profile, f"{name}-load"):
                if args.upsert_client == "wrk":
                    load = load_wrk(server, bodies, args.entities, args.upsert_connections, postgres, work)
                else:
                    load = load_python(server, bodies, args.entities, args.upsert_connections, postgres)
            report_phase(name, "entities", load, args.entities)
            with profiled(server, args.profile, f"{name}-update"):
                update = load_python(server, updates, args.updates, args.upsert_connections, postgres,
                                     label="updating (python client)")
            report_phase(name, "updates", update, args.updates)
            hits = check_queries(server, paths)
            with profiled(server, args.profile, f"{name}-get"):
                get = run_wrk(server, ids_file, threads=2, connections=args.get_connections, duration=args.duration,
                              label=f"{name}: GET one entity", postgres=postgres)
            queries = {}
            for kind in QUERY_KINDS:
                with profiled(server, args.profile, f"{name}-query-{kind}"):
                    queries[kind] = run_wrk(server, work / f"query-{kind}.txt", threads=1,
                                            connections=args.query_connections, duration=args.query_duration,
                                            label=f"{name}: query {kind}", postgres=postgres)
        finally:
            server.stop()
    finally:
        if workers > 1:
            delete_nats_stream(args.nats_url, BENCH_STREAM)
        if postgres and not args.keep:
            drop_postgres(args.pg_admin_url, args.pg_database)
    return BackendResult(name, load, update, get, queries, hits, version)


# ------------------------------------------------------------------------------------------ report


def _fmt(value: float | None, digits: int = 0) -> str:
    return "–" if value is None else f"{value:,.{digits}f}"


def figures(results: list[BackendResult], args: argparse.Namespace, load_generator: str) -> dict[str, Any]:
    out: dict[str, Any] = {"entities": args.entities}
    for r in results:
        p = r.name
        worst_p99 = max(q.p99_ms for q in r.queries.values())
        worst_p50 = max(q.p50_ms for q in r.queries.values())
        out.update({
            f"{p}_create_upserts_per_s": round(r.load.per_s, 1),
            f"{p}_create_batch_p50_ms": _round(r.load.batch_p50_ms),
            f"{p}_create_batch_p99_ms": _round(r.load.batch_p99_ms),
            f"{p}_update_upserts_per_s": round(r.update.per_s, 1),
            f"{p}_update_batch_p50_ms": _round(r.update.batch_p50_ms),
            f"{p}_update_batch_p99_ms": _round(r.update.batch_p99_ms),
            f"{p}_get_per_s": round(r.get.per_s, 1),
            f"{p}_get_p50_ms": round(r.get.p50_ms, 2),
            f"{p}_get_p99_ms": round(r.get.p99_ms, 2),
            f"{p}_query_p50_ms": round(worst_p50, 2),
            f"{p}_query_p99_ms": round(worst_p99, 2),
        })
        for kind, q in r.queries.items():
            out[f"{p}_query_{kind}_per_s"] = round(q.per_s, 1)
            out[f"{p}_query_{kind}_p50_ms"] = round(q.p50_ms, 2)
            out[f"{p}_query_{kind}_p99_ms"] = round(q.p99_ms, 2)
        out.update({
            f"{p}_create_vs_target_ratio": round(r.load.per_s / TARGET_UPSERTS_PER_S, 3),
            f"{p}_update_vs_target_ratio": round(r.update.per_s / TARGET_UPSERTS_PER_S, 3),
            f"{p}_get_vs_target_ratio": round(r.get.per_s / TARGET_GETS_PER_S, 3),
            f"{p}_query_p99_target_headroom_ratio": round(TARGET_QUERY_P99_MS / worst_p99, 3),
            f"{p}_update_vs_orion_ld_ratio": round(r.update.per_s / ORION_LD_UPDATES_PER_S, 3),
            f"{p}_get_vs_orion_ld_ratio": round(r.get.per_s / ORION_LD_GETS_PER_S, 3),
            f"{p}_meets_targets": bool(min(r.load.per_s, r.update.per_s) >= TARGET_UPSERTS_PER_S
                                        and r.get.per_s >= TARGET_GETS_PER_S and worst_p99 < TARGET_QUERY_P99_MS),
            f"{p}_create_server_cores": round(r.load.cpu.get("server_cores", 0), 2),
            f"{p}_create_postgres_cores": round(r.load.cpu.get("postgres_cores", 0), 2),
            f"{p}_create_generator_cores": round(r.load.cpu.get("generator_cores", 0), 3),
            f"{p}_update_server_cores": round(r.update.cpu.get("server_cores", 0), 2),
            f"{p}_update_postgres_cores": round(r.update.cpu.get("postgres_cores", 0), 2),
            f"{p}_get_server_cores": round(r.get.cpu.get("server_cores", 0), 2),
            f"{p}_get_generator_cores": round(r.get.cpu.get("generator_cores", 0), 2),
        })
    out.update({"target_upserts_per_s": TARGET_UPSERTS_PER_S, "target_get_per_s": TARGET_GETS_PER_S,
                "target_query_p99_ms": TARGET_QUERY_P99_MS, "orion_ld_updates_per_s": ORION_LD_UPDATES_PER_S,
                "orion_ld_get_per_s": ORION_LD_GETS_PER_S, "upsert_load_generator": load_generator,
                "date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"), "cpu_count": os.cpu_count()})
    return out


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def rows(results: list[BackendResult]) -> list[tuple[str, list[str], str, str]]:
    """(metric, value per backend, target, Orion-LD)."""
    out = [
        ("upserts/s creating the entities (1,000-entity batches)", [_fmt(r.load.per_s) for r in results],
         f"≥ {TARGET_UPSERTS_PER_S:,}", ""),
        ("create batch latency p50 / p99 (ms)",
         [f"{_fmt(r.load.batch_p50_ms)} / {_fmt(r.load.batch_p99_ms)}" for r in results], "", ""),
        ("upserts/s updating them (new readings, same place)", [_fmt(r.update.per_s) for r in results],
         f"≥ {TARGET_UPSERTS_PER_S:,}", f"{ORION_LD_UPDATES_PER_S:,} updates/s"),
        ("update batch latency p50 / p99 (ms)",
         [f"{_fmt(r.update.batch_p50_ms)} / {_fmt(r.update.batch_p99_ms)}" for r in results], "", ""),
        ("GET one entity /s (32 conn.)", [_fmt(r.get.per_s) for r in results], f"≥ {TARGET_GETS_PER_S:,}",
         f"{ORION_LD_GETS_PER_S:,}"),
        ("GET p50 / p99 (ms)", [f"{r.get.p50_ms:.1f} / {r.get.p99_ms:.1f}" for r in results], "", ""),
    ]
    for kind, title in QUERY_KINDS.items():
        out.append((f"query {title}: p50 / p99 (ms)",
                    [f"{r.queries[kind].p50_ms:.1f} / {r.queries[kind].p99_ms:.1f}" for r in results],
                    f"p99 < {TARGET_QUERY_P99_MS:.0f}", ""))
        out.append((f"query {kind}: req/s (items/page)",
                    [f"{r.queries[kind].per_s:,.0f} ({r.query_hits[kind]:.0f})" for r in results], "", ""))
    out.append(("CPU cores while updating: server / PostgreSQL / generator",
                [f"{r.update.cpu['server_cores']:.2f} / {r.update.cpu['postgres_cores']:.2f} / "
                 f"{r.update.cpu['generator_cores']:.3f}" for r in results], "", ""))
    out.append(("CPU cores while creating: server / PostgreSQL / generator",
                [f"{r.load.cpu['server_cores']:.2f} / {r.load.cpu['postgres_cores']:.2f} / "
                 f"{r.load.cpu['generator_cores']:.3f}" for r in results], "", ""))
    out.append(("CPU cores during GETs: server / PostgreSQL / wrk",
                [f"{r.get.cpu['server_cores']:.2f} / {r.get.cpu['postgres_cores']:.2f} / "
                 f"{r.get.cpu['generator_cores']:.2f}" for r in results], "", ""))
    return out


def print_table(results: list[BackendResult], entities: int) -> None:
    table = Table(title=f"hub over HTTP, {entities:,} entities")
    table.add_column("metric")
    for r in results:
        table.add_column(r.name, justify="right")
    table.add_column("target", justify="right")
    table.add_column("Orion-LD (1 CPU)", justify="right")
    for metric, values, target, orion in rows(results):
        table.add_row(metric, *values, target, orion)
    console.print(table)


def machine_facts(results: list[BackendResult]) -> str:
    cpu = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    from importlib.metadata import version

    versions = ", ".join(f"{pkg} {version(pkg)}" for pkg in ("uvicorn", "fastapi", "sqlalchemy", "psycopg", "orjson"))
    stores = ", ".join(f"{r.name} {r.version}" for r in results)
    wrk_version = subprocess.run([_wrk(), "-v"], capture_output=True, text=True).stdout.splitlines()[:1]
    return (f"{os.cpu_count()} × {cpu}, {mem_gib:.0f} GiB, Linux {py_platform.release()}, Python "
            f"{py_platform.python_version()}; {stores}; {versions}; {' '.join(wrk_version)}")


def record(results: list[BackendResult], args: argparse.Namespace, out: dict[str, Any], load_generator: str) -> None:
    RESULTS_JSON.parent.mkdir(parents=True, exist_ok=True)
    RESULTS_JSON.write_text(json.dumps(out, indent=2, ensure_ascii=False) + "\n")
    if not BENCHMARKS_MD.exists():
        BENCHMARKS_MD.write_text(
            "# Benchmarks\n\nFigures measured on the project's 2-core machine by the scripts in `bench/`; each "
            "script appends a section (machine facts, date, exact command). The latest headline figures of each "
            "benchmark are in `bench/results/*.json`. The load generator runs on the same 2 cores as the "
            "server, so every figure includes its cost.\n")
    lines = [
        "", f"## hub — {out['date']}", "",
        f"- command: `{args.command_line}`",
        f"- machine: {machine_facts(results)}",
        f"- server: `citybrain serve` ({args.server_description}); load generator on the same machine",
        f"- load: {args.entities:,} entities ({', '.join(ENTITY_TYPES)}; 3–6 attributes with observedAt, a Point "
        f"in Pudong, a real village orgUnit) as {BATCH:,}-entity batches over {args.upsert_connections} connections "
        f"by {load_generator}; then {args.updates:,} of them report again (new readings, same place and org "
        f"unit); bodies generated before timing; a fresh store per backend",
        f"- GET: wrk, 2 threads, {args.get_connections} connections, {args.duration} s, random ids among all "
        f"entities; queries: wrk, 1 thread, {args.query_connections} connections, {args.query_duration} s per kind",
        "",
        "| metric | " + " | ".join(r.name for r in results) + " | target | Orion-LD (1 CPU) |",
        "|---|" + "---:|" * (len(results) + 2),
    ]
    for metric, values, target, orion in rows(results):
        lines.append(f"| {metric} | " + " | ".join(values) + f" | {target} | {orion} |")
    verdicts = []
    for r in results:
        missed = [name for name, ok in (
            ("create upserts/s", r.load.per_s >= TARGET_UPSERTS_PER_S),
            ("update upserts/s", r.update.per_s >= TARGET_UPSERTS_PER_S), ("GETs/s", r.get.per_s >= TARGET_GETS_PER_S),
            ("query p99", max(q.p99_ms for q in r.queries.values()) < TARGET_QUERY_P99_MS)) if not ok]
        verdicts.append(f"{r.name}: " + ("all targets met" if not missed else "missed " + ", ".join(missed)))
    lines += ["", "Verdict: " + "; ".join(verdicts) + ".", ""]
    with BENCHMARKS_MD.open("a") as handle:
        handle.write("\n".join(lines))
    console.print(f"appended to {BENCHMARKS_MD.relative_to(REPO)}; wrote {RESULTS_JSON.relative_to(REPO)}")


# -------------------------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench/hub.py", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Needs wrk (Debian: apt-get install -y wrk) and, for the postgresql backend, a PostgreSQL server "
               "that the admin URL can create databases on.")
    parser.add_argument("--entities", type=int, default=None, help="entities to load (default 1,000,000; --quick 20,000)")
    parser.add_argument("--updates", type=int, default=None,
                        help="entities that report again after the load (default 300,000; --quick 10,000)")
    parser.add_argument("--backends", default="sqlite,postgresql", help="comma-separated: sqlite, postgresql")
    parser.add_argument("--duration", type=int, default=None, help="seconds of the GET phase (default 20; --quick 3)")
    parser.add_argument("--query-duration", type=int, default=None,
                        help="seconds per query kind (default 15; --quick 3)")
    parser.add_argument("--quick", action="store_true", help="a small smoke run; records nothing unless --record")
    parser.add_argument("--record", action=argparse.BooleanOptionalAction, default=None,
                        help="append to BENCHMARKS.md and write bench/results/hub.json (default: yes, no with --quick)")
    parser.add_argument("--upsert-client", choices=("python", "wrk"), default="python",
                        help="load generator for the upsert phase (python: raw asyncio streams on uvloop)")
    parser.add_argument("--upsert-connections", type=int, default=16,
                        help="concurrent connections for the load (many systems and gateways post at once; the "
                             "kernel spreads connections over worker processes by address, so with 4 one of two "
                             "workers often got three or all of them)")
    parser.add_argument("--get-connections", type=int, default=32)
    parser.add_argument("--query-connections", type=int, default=4)
    parser.add_argument("--pg-admin-url", default="postgresql://postgres@127.0.0.1:5432/postgres",
                        help="where to create the fresh benchmark database")
    parser.add_argument("--pg-database", default="citybrain_bench")
    parser.add_argument("--workers", default="1,2",
                        help="API server processes, comma-separated: each count is its own setup (more than one "
                             "runs with --bus on NATS)")
    parser.add_argument("--nats-url", default="nats://127.0.0.1:4222", help="bus for multi-worker setups")
    parser.add_argument("--server-arg", action="append", help="extra argument for `citybrain serve` (repeatable)")
    parser.add_argument("--profile", type=Path, default=None,
                        help="sample the server with py-spy during the load and GET phases; collapsed stacks go here")
    parser.add_argument("--keep", action="store_true", help="keep the work folder and the PostgreSQL database")
    parser.add_argument("--seed", type=int, default=20261101)
    args = parser.parse_args(argv)
    args.entities = args.entities or (20_000 if args.quick else 1_000_000)
    args.updates = min(args.entities, args.updates or (10_000 if args.quick else 300_000))
    args.duration = args.duration or (3 if args.quick else 20)
    args.query_duration = args.query_duration or (3 if args.quick else 15)
    args.record = (not args.quick) if args.record is None else args.record
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    unknown = set(backends) - {"sqlite", "postgresql"}
    if unknown or not backends:
        parser.error(f"--backends takes sqlite and/or postgresql, not {', '.join(sorted(unknown)) or 'nothing'}")
    args.backend_list = backends
    try:
        args.worker_list = [int(w) for w in args.workers.split(",") if w.strip()]
    except ValueError:
        parser.error(f"--workers takes counts like 1,2, not {args.workers!r}")
    if not args.worker_list or min(args.worker_list) < 1:
        parser.error("--workers needs at least one count of 1 or more")
    if args.entities < 1:
        parser.error("--entities must be positive")
    args.command_line = " ".join(shlex.quote(a) for a in [".venv/bin/python", "bench/hub.py", *(argv or sys.argv[1:])])
    args.server_description = ("uvicorn; `_Nw` columns run N worker processes with the NATS bus"
                               + (f"; extra: {' '.join(args.server_arg)}" if args.server_arg else ""))
    return args


def main(argv: list[str] | None = None) -> None:
    # an open installation (no sign-in): these figures are the capability's own; bench/access.py times what
    # the access decision adds to a signed-in request
    os.environ.setdefault("CITYBRAIN_AUTH_REQUIRED", "false")
    args = parse_args(argv)
    _wrk()
    load_generator = ("wrk (bench/wrk_upsert.lua)" if args.upsert_client == "wrk"
                      else "a Python asyncio raw-stream client on uvloop")
    villages = village_codes()
    rng = random.Random(args.seed)
    bodies = generate_batches(args.entities, villages, args.seed)
    updates = generate_updates(bodies, args.updates, args.seed)
    work = Path(tempfile.mkdtemp(prefix="citybrain-bench-"))
    try:
        sample = min(args.entities, 100_000)
        ids_file = work / "get-paths.txt"
        ids_file.write_text("\n".join(f"/api/v1/entities/{entity_id(i)}" for i in rng.sample(range(args.entities), sample)) + "\n")
        paths = {kind: query_paths(kind, villages, rng) for kind in QUERY_KINDS}
        for kind, kind_paths in paths.items():
            (work / f"query-{kind}.txt").write_text("\n".join(kind_paths) + "\n")
        results = [run_backend(name, workers, args, bodies, updates, paths, ids_file, work)
                   for name in args.backend_list for workers in args.worker_list]
    finally:
        if args.keep:
            console.print(f"work folder kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    print_table(results, args.entities)
    out = figures(results, args, load_generator)
    if args.record:
        record(results, args, out, load_generator)
    else:
        console.print_json(data=out)


if __name__ == "__main__":
    main()
