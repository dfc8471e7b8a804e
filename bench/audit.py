#!/usr/bin/env python3
"""What the audit log costs and how fast it verifies.

Writes: the same HTTP write (POST /api/v1/entities, a new Streetlight each time) through the whole app with
the audit middleware and without it, in alternating blocks in one run (the ratio is the figure; this
machine is shared and noisy): one client after another (each write pays its own audit transaction), and
`--concurrency` clients at once in one event loop (their records share transactions). Verify: `audit.verify` over the records the audited blocks left plus a bulk
of appended ones, in records per second. Embedded store (SQLite) unless --db names another.

    .venv/bin/python bench/audit.py [--writes 2000] [--blocks 4] [--records 20000] [--db postgresql://…]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import recording
from fastapi import FastAPI
from fastapi.testclient import TestClient
from rich.console import Console
from rich.progress import track
from rich.table import Table

from citybrain.api.app import create_app
from citybrain.core.context import Context
from citybrain.governance import audit
from citybrain.governance.middleware import AuditMiddleware
from citybrain.platform import Platform
from citybrain.settings import Settings


def app_for(platform: Platform, *, audited: bool) -> FastAPI:
    app = create_app(platform, manage_lifecycle=False)
    if not audited:  # before the first request: the middleware stack is built then
        app.user_middleware = [m for m in app.user_middleware if m.cls is not AuditMiddleware]
    return app


def streetlight(prefix: str, number: int) -> dict[str, object]:
    """The body of one write: a new Streetlight."""
    return {"id": f"urn:ngsi-ld:Streetlight:{prefix}-{number}", "type": "Streetlight",
            "powerState": {"type": "Property", "value": "on"}}


def concurrent_block(app: FastAPI, prefix: str, count: int, concurrency: int) -> float:
    import asyncio

    import httpx

    async def run() -> float:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
            async def worker(offset: int) -> None:
                for number in range(offset, count, concurrency):
                    answer = await client.post("/api/v1/entities", json=streetlight(prefix, number))
                    if answer.status_code != 201:
                        raise SystemExit(f"write refused: {answer.status_code} {answer.text}")

            started = time.perf_counter()
            await asyncio.gather(*(worker(offset) for offset in range(concurrency)))
            return count / (time.perf_counter() - started)

    return asyncio.run(run())


def write_block(client: TestClient, prefix: str, count: int) -> float:
    started = time.perf_counter()
    for number in range(count):
        answer = client.post("/api/v1/entities", json=streetlight(prefix, number))
        if answer.status_code != 201:
            raise SystemExit(f"write refused: {answer.status_code} {answer.text}")
    return count / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--writes", type=int, default=2000, help="writes per block")
    parser.add_argument("--blocks", type=int, default=4, help="blocks per variant, alternating")
    parser.add_argument("--records", type=int, default=20_000, help="records to append before verifying")
    parser.add_argument("--concurrency", type=int, default=32, help="clients at once in the concurrent blocks")
    parser.add_argument("--db", default="", help="store URL (default: SQLite in a temporary folder)")
    parser.add_argument("--no-record", action="store_true", help="print only; leave BENCHMARKS.md alone")
    args = parser.parse_args()
    console = Console()
    with tempfile.TemporaryDirectory() as home:
        settings = Settings(home=Path(home), bus="memory", **({"db": args.db} if args.db else {}))
        platform = Platform(settings)
        platform.migrate()
        platform.load_state()
        rates: dict[bool, list[float]] = {True: [], False: []}
        clients = {audited: TestClient(app_for(platform, audited=audited)) for audited in (True, False)}
        for block in track(range(args.blocks * 2), description="writes", console=console):
            audited = block % 2 == 0
            rates[audited].append(write_block(clients[audited], f"b{block}", args.writes))
        together: dict[bool, list[float]] = {True: [], False: []}
        apps = {audited: app_for(platform, audited=audited) for audited in (True, False)}
        for block in track(range(args.blocks * 2), description="concurrent writes", console=console):
            audited = block % 2 == 0
            together[audited].append(concurrent_block(apps[audited], f"c{block}", args.writes, args.concurrency))
        entry = audit.AuditEntry.of(Context(actor="bench"), action="POST /api/v1/entities", resource="/bench",
                                    outcome="201", detail={"n": 1})
        started = time.perf_counter()
        for _ in track(range(args.records), description="appends", console=console):
            audit.append(platform, entry)
        append_rate = args.records / (time.perf_counter() - started)
        with platform.session() as session:
            started = time.perf_counter()
            result = audit.verify(session)
            verify_rate = result.records / (time.perf_counter() - started)
        platform.dispose()
    if not result.intact:
        raise SystemExit(f"the chain is broken at {result.broken_at}: {result.reason}")
    audited_rate, plain_rate = statistics.median(rates[True]), statistics.median(rates[False])
    audited_together, plain_together = statistics.median(together[True]), statistics.median(together[False])
    figures = {"store": platform.dialect, "writes_audited_per_s": round(audited_rate, 1),
               "writes_unaudited_per_s": round(plain_rate, 1),
               "audited_vs_unaudited_ratio": round(audited_rate / plain_rate, 3),
               "concurrent_writes_audited_per_s": round(audited_together, 1),
               "concurrent_writes_unaudited_per_s": round(plain_together, 1),
               "concurrent_audited_vs_unaudited_ratio": round(audited_together / plain_together, 3),
               "appends_per_s": round(append_rate, 1), "verify_records_per_s": round(verify_rate, 1),
               "verified_records": result.records}
    table = Table("figure", "value", title="audit log")
    for key, value in figures.items():
        table.add_row(key, f"{value:,}" if isinstance(value, (int, float)) else str(value))
    console.print(table)
    if not args.no_record:
        recording.write_json("audit", figures)
        recording.append_section("audit", "audit.py", [
            *recording.figure_table(figures),
            "",
            (f"Medians of {args.blocks} alternating blocks of {args.writes} HTTP writes each, through the whole "
            "app: one client at a time (TestClient; each audited write adds its own audit transaction before "
            f"the response goes out) and {args.concurrency} clients at once in one event loop (httpx over "
            "ASGI; concurrent records share a transaction).")])


if __name__ == "__main__":
    main()
