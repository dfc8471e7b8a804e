#!/usr/bin/env python3
"""Fuzz the running API from its OpenAPI document (Schemathesis), more cases than CI runs.

Starts a real `citybrain up` (Xihu district, a live cologne1 traffic twin) on a free port, sends
`--per-operation` generated requests to every operation, and counts the 5xx answers (each one listed).
Prints a table, appends to BENCHMARKS.md and writes bench/results/security.json (fuzz_cases, fuzz_5xx,
fuzz_operations; the fault-test figures join it when those land).

    .venv/bin/python bench/fuzz.py [--per-operation 100] [--no-record]
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
from rich.table import Table

from tests.fuzzing import fuzz, running_server


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-operation", type=int, default=100, help="generated requests per operation")
    parser.add_argument("--no-record", action="store_true", help="print only; leave BENCHMARKS.md alone")
    args = parser.parse_args()
    console = Console()
    with tempfile.TemporaryDirectory() as home, running_server(Path(home)) as (base, key), \
            console.status("fuzzing") as status:
        report = fuzz(base, key, args.per_operation, progress=lambda label: status.update(f"fuzzing: {label}"))
    figures = {"fuzz_operations": report.operations, "fuzz_cases": report.cases,
               "fuzz_5xx": len(report.server_errors), "fuzz_schema_violations": len(report.schema_violations),
               "fuzz_seconds": round(report.seconds, 1)}
    table = Table("figure", "value", title="API fuzz (Schemathesis)")
    for key, value in figures.items():
        table.add_row(key, f"{value:,}")
    console.print(table)
    for failure in report.server_errors:
        console.print(f"[red]5xx[/red] {failure}", highlight=False)
    for failure in report.schema_violations:
        console.print(f"[red]schema[/red] {failure}", highlight=False)
    if not args.no_record:
        recording.merge_json("security", figures)
        recording.append_section("fuzz", "fuzz.py", [
            *recording.figure_table(figures), "",
            (f"{args.per_operation} generated requests per operation of the OpenAPI document against a real "
            "`citybrain up` (Xihu, live cologne1 twin), signed in with every role; a 5xx is a failure, and so "
            "is an answer whose body or media type the OpenAPI document does not declare.")])
    if report.server_errors or report.schema_violations:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
