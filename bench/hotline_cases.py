#!/usr/bin/env python3
"""Case throughput and the SLA scan, on SQLite and PostgreSQL side by side, with the Pudong tree (1 district,
42 towns, 1,526 villages) and a store that already holds `--closed` closed cases (default 1,000,000, each
with its report and its seven steps, bulk-loaded before anything is timed).

For each backend:

1. scan — `--open` open cases (default 100,000) dispatched over the last day with deadlines spread so a
   share is due; the timer scan's query (every due warning and breach) is timed, then firing `--fire`
   of them (each a transaction: breach, note, escalation).
2. flow — `citybrain serve` on the store; `--workers` concurrent clients each take cases from report to
   closure over HTTP: POST /cases (report, triage, dispatch), then receive, handle (with the catalogue's
   evidence), verify, close. Cases/s and case transitions/s (7 per case) for the whole run.

Run as the `cases` section of bench/hotline.py, or alone:

    .venv/bin/python bench/hotline_cases.py                         # both backends, 1 M closed, 100 k open
    .venv/bin/python bench/hotline_cases.py --closed 20000 --open 5000 --cases 300   # a quick check
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent))
from hub import run_cli, start_server

console = Console()
PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
STEPS = ("report", "triage", "dispatch", "receive", "handle", "verify", "close")
CHUNK = 20_000


def _platform(url: str) -> Any:
    from citybrain.platform import Platform
    from citybrain.settings import Settings

    platform = Platform(Settings(db=url, home=Path(tempfile.gettempdir())))
    platform.load_state()
    return platform


def _fresh_store(backend: str, work: Path) -> tuple[str, list[str]]:
    """(store URL, CLI store arguments) of an empty, migrated store holding Pudong's org tree."""
    import sqlalchemy as sa

    if backend == "sqlite":
        home = work / "sqlite"
        home.mkdir(parents=True, exist_ok=True)
        args = ["--home", str(home)]
        url = f"sqlite:///{home / 'citybrain.db'}"
    else:
        name = "citybrain_bench_cases"
        admin = sa.create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        admin.dispose()
        url = f"postgresql://postgres@127.0.0.1:5432/{name}"
        args = ["--db", url, "--home", str(work / "pg-home")]
    run_cli(["import", "divisions", "pudong", *args], work / f"{backend}-cli.log")
    return url, args


def _catalogue() -> list[Any]:
    from citybrain.scenarios import scenario_catalogue

    return list(scenario_catalogue())


def bulk_load(url: str, *, closed: int, open_cases: int, seed: int = 7) -> dict[str, float]:
    """Write closed and open cases straight into the store (not timed as throughput: the precondition)."""
    from citybrain.core.context import new_id
    from citybrain.disposal.models import CaseReportRow, CaseRow, CaseTransitionRow

    platform = _platform(url)
    rng = random.Random(seed)
    specs = _catalogue()
    villages = [code for code, unit in platform.org_tree.units.items() if unit.kind == "village"]
    towns = {code: platform.org_tree.units[code].parent_code for code in villages}
    now = datetime.now(UTC)
    started = time.perf_counter()
    total = closed + open_cases
    with Progress(TextColumn("loading cases"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console) as progress:
        task = progress.add_task("load", total=total)
        for first in range(0, total, CHUNK):
            cases, reports, steps = [], [], []
            for i in range(first, min(total, first + CHUNK)):
                spec = specs[rng.randrange(len(specs))]
                village = villages[rng.randrange(len(villages))]
                is_open = i >= closed
                created = now - timedelta(days=rng.uniform(0, 1) if is_open else rng.uniform(1, 365))
                case_id = new_id()
                unit = village if spec.level == "village" else towns[village] if spec.level == "town" else "310115"
                # Open cases' deadlines run from half an hour ago to two days ahead: about 1 % are due when the
                # server starts (a city's steady trickle of breaches, not a backlog that swamps the flow).
                due = now + timedelta(hours=rng.uniform(-0.5, 48))
                row = {"id": case_id, "number": f"B{i:014d}", "event_type": spec.code, "category": spec.category,
                       "title": spec.name.zh, "description": "", "status": "dispatched" if is_open else "closed",
                       "priority": spec.priority, "level": spec.level, "org_unit": village, "handling_unit": unit,
                       "lead_department": spec.department, "assisting": list(spec.assisting), "channel": "phone",
                       "created_at": created, "updated_at": created, "escalations": 0, "returns": 0, "reopens": 0,
                       "reports": 1, "breaches": 0, "version": 1, "dispatched_at": created}
                if is_open:
                    warn = created + (due - created) * 0.8
                    row |= {"stage": "respond", "stage_started_at": created, "stage_due_at": due, "due_at": due,
                            "warn_at": warn}
                    if warn < now - timedelta(minutes=5):  # warned already
                        row |= {"warn_at": None, "warned_at": warn}
                else:
                    closed_at = created + timedelta(hours=rng.uniform(2, 200))
                    row |= {"received_at": created + timedelta(hours=1), "handled_at": closed_at - timedelta(hours=1),
                            "closed_at": closed_at, "resolution": "resolved", "responded_on_time": rng.random() < 0.9,
                            "handled_on_time": rng.random() < 0.85, "closed_on_time": rng.random() < 0.95}
                cases.append(row)
                reports.append({"case_id": case_id, "channel": "phone", "text": spec.name.zh, "reported_at": created,
                                "org_unit": village, "data": {},
                                "resolved": None if is_open else rng.random() < 0.8,
                                "satisfied": None if is_open else rng.random() < 0.75})
                for step, action in enumerate(STEPS[: 3 if is_open else 7]):
                    steps.append({"case_id": case_id, "at": created + timedelta(minutes=step), "action": action,
                                  "from_status": None if step == 0 else "x", "to_status": "y", "actor": "bench",
                                  "data": {}, "attachments": []})
            with platform.transaction() as session:
                session.execute(CaseRow.__table__.insert(), cases)
                session.execute(CaseReportRow.__table__.insert(), reports)
                session.execute(CaseTransitionRow.__table__.insert(), steps)
            progress.update(task, advance=len(cases))
    if platform.dialect == "postgresql":
        with platform.engine.connect() as conn:
            conn.exec_driver_sql("ANALYZE")
    platform.dispose()
    return {"load_s": time.perf_counter() - started}


def scan(url: str, *, fire: int) -> dict[str, float]:
    """Time the timer scan over the open cases, then firing `fire` of the due ones."""
    from citybrain.disposal import flows
    from citybrain.disposal.runtime import Disposal

    platform = _platform(url)
    disposal = Disposal(platform)
    now = datetime.now(UTC)
    timings = []
    for _ in range(5):
        started = time.perf_counter()
        with platform.session() as session:
            warnings = flows.due_warnings(session, now=now, limit=1_000_000)
            breaches = flows.due_breaches(session, now=now, limit=1_000_000)
        timings.append(time.perf_counter() - started)
    started = time.perf_counter()
    fired = 0
    for case_id, version in breaches[:fire]:
        fired += bool(flows.fire_timer(platform, disposal, case_id, version))
    fire_s = time.perf_counter() - started
    platform.dispose()
    return {"scan_ms": min(timings) * 1000, "scan_due_warnings": len(warnings), "scan_due_breaches": len(breaches),
            "fired": fired, "fired_per_s": fired / fire_s if fire_s else 0.0}


class _Connection:
    """A keep-alive HTTP/1.1 connection that sends JSON and reads JSON, with as little client work as can
    be: the load generator shares the server's two cores, and httpx spent ~2 ms of them per request."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        payload = orjson.dumps(body) if body is not None else b""
        head = (f"{method} {path} HTTP/1.1\r\nHost: {self.host}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(payload)}\r\n\r\n").encode()
        self.writer.write(head + payload)
        assert self.reader is not None
        status_line = await self.reader.readline()
        status = int(status_line.split()[1])
        length = 0
        while True:
            line = await self.reader.readline()
            if line in (b"\r\n", b""):
                break
            name, _, value = line.partition(b":")
            if name.lower() == b"content-length":
                length = int(value)
        data = await self.reader.readexactly(length) if length else b""
        return status, orjson.loads(data) if data else None


async def _flow(base: str, cases: int, workers: int, seed: int) -> dict[str, float]:
    import urllib.parse

    rng = random.Random(seed)
    address = urllib.parse.urlsplit(base)
    setup = _Connection(address.hostname or "127.0.0.1", address.port or 80)
    specs, cursor = [], None
    while True:
        query = "?limit=500" + (f"&cursor={cursor}" if cursor else "")
        _status, page = await setup.request("GET", "/api/v1/catalogue" + query)
        specs += page["items"]
        cursor = page.get("next_cursor")
        if not cursor:
            break
    _status, villages = await setup.request("GET", "/api/v1/org/units?kind=village&limit=1000")
    codes = [v["code"] for v in villages["items"]]
    remaining = cases
    failures: list[str] = []
    done = 0

    async def worker() -> None:
        nonlocal done, remaining
        connection = _Connection(address.hostname or "127.0.0.1", address.port or 80)
        while remaining > 0:
            remaining -= 1
            spec = specs[rng.randrange(len(specs))]
            status, created = await connection.request(
                "POST", "/api/v1/cases", {"eventType": spec["code"], "orgUnit": rng.choice(codes), "description": "bench"})
            if status != 201:
                failures.append(str(created)[:200])
                continue
            evidence = [{"kind": kind, "url": "https://files.example/e.jpg"} for kind in spec.get("evidence", [])]
            for body in ({"action": "receive"}, {"action": "handle", "attachments": evidence},
                         {"action": "verify"}, {"action": "close"}):
                status, answer = await connection.request("POST", f"/api/v1/cases/{created['id']}/transitions", body)
                if status != 200:
                    failures.append(str(answer)[:200])
                    break
            else:
                done += 1

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(workers)))
    elapsed = time.perf_counter() - started
    if failures:
        console.print(f"[red]{len(failures)} cases failed[/red], e.g. {failures[0]}")
    return {"cases_per_s": done / elapsed, "transitions_per_s": done * len(STEPS) / elapsed,
            "requests_per_s": done * 5 / elapsed, "flow_cases": done, "flow_failures": len(failures)}


def run_backend(backend: str, args: argparse.Namespace, work: Path) -> dict[str, float]:
    url, store_args = _fresh_store(backend, work)
    figures = bulk_load(url, closed=args.closed, open_cases=args.open)
    figures |= scan(url, fire=args.fire)
    extra = ["--workers", str(args.server_workers), "--bus", args.nats] if args.server_workers > 1 else []
    server = start_server(store_args, work / f"{backend}-server.log", extra)
    try:
        figures |= asyncio.run(_flow(server.base, args.cases, args.workers, args.cases_seed))
    finally:
        server.stop()
    return figures


def run_cases(args: argparse.Namespace) -> tuple[dict[str, Any], list[str]]:
    # an open installation (no sign-in): these figures are the capability's own; bench/access.py times what
    # the access decision adds to a signed-in request
    os.environ.setdefault("CITYBRAIN_AUTH_REQUIRED", "false")
    """The `cases` section: figures per backend (flat keys prefixed by backend) and Markdown lines."""
    figures: dict[str, Any] = {}
    rows = []
    with tempfile.TemporaryDirectory(prefix="citybrain-bench-cases-") as tmp:
        for backend in args.backends.split(","):
            console.rule(f"cases on {backend}")
            result = run_backend(backend, args, Path(tmp))
            rows.append((backend, result))
            for key, value in result.items():
                figures[f"{backend}_{key}"] = value
    table = Table("backend", "closed in store", "scan over open (ms)", "due found", "timers fired/s", "cases/s",
                  "transitions/s", "failures")
    lines = ["| backend | closed cases in store | open cases | SLA scan (ms) | due found | timers fired/s | "
             "cases/s | case transitions/s | failures |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for backend, r in rows:
        table.add_row(backend, f"{args.closed:,}", f"{r['scan_ms']:.1f}", f"{r['scan_due_breaches']:,}",
                      f"{r['fired_per_s']:.0f}", f"{r['cases_per_s']:.1f}", f"{r['transitions_per_s']:.0f}",
                      str(r["flow_failures"]))
        lines.append(f"| {backend} | {args.closed:,} | {args.open:,} | {r['scan_ms']:.1f} | {r['scan_due_breaches']:,} | "
                     f"{r['fired_per_s']:.0f} | {r['cases_per_s']:.1f} | {r['transitions_per_s']:.0f} | "
                     f"{r['flow_failures']} |")
    console.print(table)
    lines.append("")
    lines.append(f"Flow: {args.cases:,} cases per backend from report to closure over HTTP by {args.workers} "
                 "concurrent clients (5 requests, 7 case transitions each), the client on the same 2 cores. "
                 "Targets: ≥ 500 case transitions/s; an SLA scan over 100,000 open cases under 1 s.")
    return figures, lines


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--closed", type=int, default=1_000_000, help="closed cases bulk-loaded first")
    parser.add_argument("--open", type=int, default=100_000, help="open cases the SLA scan runs over")
    parser.add_argument("--fire", type=int, default=1000, help="due timers fired (timed)")
    parser.add_argument("--cases", type=int, default=2000, help="cases taken from report to closure over HTTP")
    parser.add_argument("--workers", type=int, default=16, help="concurrent HTTP clients")
    parser.add_argument("--cases-seed", dest="cases_seed", type=int, default=7)
    parser.add_argument("--server-workers", type=int, default=1, help="API processes (more than one need --nats)")
    parser.add_argument("--nats", default="nats://127.0.0.1:4222", help="the bus of several API processes")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    run_cases(parser.parse_args())
