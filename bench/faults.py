#!/usr/bin/env python3
"""kill -9 a real server under concurrent writes, N times (tests/faults.py): count acknowledged writes,
and any acknowledged write or audit record lost or duplicated, and check the audit chain after it all.

Prints a table, appends to BENCHMARKS.md and merges kill9_cycles, acknowledged_writes, lost, duplicated
and audit_chain_intact into bench/results/security.json.

    .venv/bin/python bench/faults.py [--cycles 20] [--clients 4] [--no-record]
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

from tests.faults import kill9_cycles


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=20, help="kill -9 cycles (at least 20 for the record)")
    parser.add_argument("--clients", type=int, default=4, help="concurrent writing clients")
    parser.add_argument("--seed", type=int, default=1, help="seed of the random kill moments")
    parser.add_argument("--no-record", action="store_true", help="print only; leave BENCHMARKS.md alone")
    args = parser.parse_args()
    console = Console()
    with tempfile.TemporaryDirectory() as home, Progress(console=console) as progress:
        task = progress.add_task("kill -9 cycles", total=args.cycles)
        report = kill9_cycles(Path(home), args.cycles, clients=args.clients, seed=args.seed,
                              progress=lambda _cycle: progress.advance(task))
    figures = {"kill9_cycles": report.cycles, "acknowledged_writes": report.acknowledged,
               "unanswered_writes": report.unanswered, "lost": len(report.lost), "duplicated": len(report.duplicated),
               "audit_records": report.audit_records, "audit_chain_intact": report.chain_intact}
    table = Table("figure", "value", title="kill -9 under load (SQLite store)")
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
            "log; duplicated = an audit record twice.")])
    if report.lost or report.duplicated or not report.chain_intact:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
