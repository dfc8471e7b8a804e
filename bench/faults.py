#!/usr/bin/env python3
"""kill -9 a real server under concurrent writes N times, then stop and start its PostgreSQL under writes M
times (tests/faults.py): count acknowledged writes, any acknowledged write or audit record lost or
duplicated, answers other than 201/503 while the store is down, and how fast writes resume.

Prints a table, appends to BENCHMARKS.md and merges kill9_cycles, acknowledged_writes, lost, duplicated,
audit_chain_intact and the pg_outage_* figures into bench/results/security.json.

    .venv/bin/python bench/faults.py [--cycles 20] [--outages 20] [--clients 4] [--no-record]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import recording
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from tests.faults import bus_outage_cycles, ingest_fault_cycles, kill9_cycles, store_outage_cycles


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=20, help="kill -9 cycles (at least 20 for the record)")
    parser.add_argument("--clients", type=int, default=4, help="concurrent writing clients")
    parser.add_argument("--seed", type=int, default=1, help="seed of the random kill moments")
    parser.add_argument("--outages", type=int, default=20, help="PostgreSQL and NATS stop/start cycles under writes")
    parser.add_argument("--ingest-faults", type=int, default=20,
                        help="ingest killed / MQTT broker restarted, in turn, under QoS 1 telemetry")
    parser.add_argument("--no-record", action="store_true", help="print only; leave BENCHMARKS.md alone")
    args = parser.parse_args()
    console = Console()
    with tempfile.TemporaryDirectory() as home, Progress(console=console) as progress:
        task = progress.add_task("kill -9 cycles", total=args.cycles)
        report = kill9_cycles(Path(home), args.cycles, clients=args.clients, seed=args.seed,
                              progress=lambda _cycle: progress.advance(task))
    with tempfile.TemporaryDirectory() as home, Progress(console=console) as progress:
        task = progress.add_task("PostgreSQL outages", total=args.outages)
        outage = store_outage_cycles(Path(home), args.outages, clients=args.clients,
                                     progress=lambda _cycle: progress.advance(task))
    with tempfile.TemporaryDirectory() as home, Progress(console=console) as progress:
        task = progress.add_task("NATS outages", total=args.outages)
        bus = bus_outage_cycles(Path(home), args.outages, clients=args.clients,
                                progress=lambda _cycle: progress.advance(task))
    with tempfile.TemporaryDirectory() as folder, Progress(console=console) as progress:
        task = progress.add_task("ingest kills and broker restarts", total=args.ingest_faults)
        ingest = ingest_fault_cycles(Path(folder), args.ingest_faults, progress=lambda _cycle: progress.advance(task))
    figures = {"kill9_cycles": report.cycles, "acknowledged_writes": report.acknowledged,
               "acknowledged_case_transitions": report.transitions,
               "unanswered_writes": report.unanswered, "lost": len(report.lost) + len(outage.lost),
               "duplicated": len(report.duplicated) + len(outage.duplicated),
               "audit_records": report.audit_records,
               "audit_chain_intact": report.chain_intact and outage.chain_intact,
               "pg_outage_cycles": outage.cycles, "pg_outage_acknowledged_writes": outage.acknowledged,
               "pg_outage_503_answers": outage.unavailable, "pg_outage_other_5xx": len(outage.server_errors),
               "pg_outage_degraded_reported": outage.degraded_seen,
               "pg_recovery_max_s": max(outage.recovery_s, default=0.0),
               "nats_outage_cycles": bus.cycles, "nats_outage_acknowledged_writes": bus.acknowledged,
               "nats_outage_5xx": len(bus.server_errors), "nats_outage_degraded_reported": bus.degraded_seen,
               "nats_recovery_max_s": max(bus.recovery_s, default=0.0),
               "ingest_fault_cycles": ingest.cycles, "telemetry_readings_sent": ingest.sent,
               "telemetry_lost": ingest.lost, "telemetry_duplicated": ingest.duplicated}
    figures["lost"] += len(bus.lost)
    figures["duplicated"] += len(bus.duplicated)
    figures["audit_chain_intact"] = figures["audit_chain_intact"] and bus.chain_intact
    table = Table("figure", "value", title="kill -9 under load (SQLite) and PostgreSQL stopped under load")
    for key, value in figures.items():
        table.add_row(key, str(value))
    console.print(table)
    if not args.no_record:
        recording.merge_json("security", figures)
        recording.append_section("faults", "faults.py", [
            *recording.figure_table(figures), "",
            (f"`citybrain serve` on SQLite, {args.clients} clients creating entities, killed with SIGKILL after a "
            "random 0.5–2.5 s and started again, each cycle. Acknowledged = answered 201; each answer carries "
            "its audit record's id (X-Request-Id). Lost = acknowledged but missing from the store or the audit "
            "log; duplicated = an audit record twice. Then a PostgreSQL of the bench's own stopped (fast "
            f"shutdown) for 2 s and started again, {args.outages} times, under the same writers, the server "
            "left running: 503 answers while it is down, degraded reported by /health, recovery = store back "
            "to the first write answered 201. Then the same with a NATS JetStream bus of the bench's own "
            "(store SQLite). Lost and duplicated count every part. Then QoS 1 telemetry from 100 devices into a "
            f"server reading a Mosquitto of its own, with {args.ingest_faults} faults mid-stream, in turn the "
            "ingest killed with SIGKILL and the broker restarted: every reading the broker acknowledged must "
            "be in the lake once.")])
    if (report.lost or report.duplicated or not report.chain_intact or outage.lost or outage.server_errors
            or bus.lost or bus.server_errors or ingest.lost or ingest.duplicated):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
