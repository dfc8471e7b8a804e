#!/usr/bin/env python3
"""Run the access-control matrix (tests/access_matrix.py) and report it per route family.

Every role, for the whole district and scoped to one street, tries every route family on data in its own
street, in another street and nowhere in particular, through the real app on the chosen store. Prints one row
per family (attempts, refused, admitted, cross-scope and over-classified attempts, how many of those were
refused and audited), times the policy decision itself, appends to BENCHMARKS.md and merges the headline
figures (denied_share, access_attempts, …) into bench/results/security.json.

    .venv/bin/python bench/access.py [--db postgresql://127.0.0.1:5432/citybrain_bench] [--no-record]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import timeit
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import recording
from fastapi.testclient import TestClient
from rich.console import Console
from rich.table import Table

from citybrain.api.app import create_app
from citybrain.core.context import Context
from citybrain.governance import access
from citybrain.hub.org.flows import import_district
from citybrain.platform import Platform
from citybrain.settings import Settings
from tests import access_matrix as matrix


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", default="", help="store URL (an empty database); default a SQLite file")
    parser.add_argument("--no-record", action="store_true", help="print only; leave BENCHMARKS.md alone")
    args = parser.parse_args()
    console = Console()
    with tempfile.TemporaryDirectory() as home:
        # the data is made by an open installation's anonymous caller; every attempt signs in with its key
        platform = Platform(Settings(home=Path(home), db=args.db or f"sqlite:///{home}/citybrain.db",
                                     auth_required=False))
        platform.migrate()
        platform.load_state()
        import_district(platform, "xihu")
        with TestClient(create_app(platform)) as client, console.status("running the access matrix"):
            world = matrix.build_world(client, platform)
            attempts = matrix.run_matrix(client, platform, world, matrix.callers(platform))
        decision_us = _decision_cost(platform)
        platform.dispose()

    rows: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for attempt in attempts:
        row = rows[attempt.probe.family]
        row["attempts"] += 1
        row["refused"] += attempt.refused
        row["admitted"] += attempt.admitted and not attempt.refused
        row["must refuse"] += attempt.cross_scope or attempt.over_classified
        row["refused + audited"] += (attempt.cross_scope or attempt.over_classified) and attempt.refused \
            and attempt.audited
        row["wrong way"] += attempt.admitted == attempt.refused
    columns = ["attempts", "refused", "admitted", "must refuse", "refused + audited", "wrong way"]
    table = Table("family", *columns, title="Access-control matrix: 8 roles × (district, street) × families")
    for family, row in sorted(rows.items()):
        table.add_row(family, *(f"{row[c]:,}" for c in columns))
    console.print(table)
    figures = {**matrix.summary(attempts), "access_decision_us": decision_us}
    for key, value in figures.items():
        console.print(f"{key}: {value}")
    if not args.no_record:
        recording.merge_json("security", figures)
        recording.append_section("access", "access.py" + (" --db …" if args.db else ""), [
            *recording.figure_table(figures), "",
            (f"The access-control matrix on {'PostgreSQL' if args.db else 'SQLite'}: every role, district-wide "
             "and scoped to one street, against every route family, on data inside and outside the street. "
             "denied_share = cross-scope and over-classified attempts refused and audited / all such "
             "attempts; access_decision_us = one policy decision (roles, clearance, district-wide) on this "
             "machine.")])
    if figures["mismatches"] or figures["denied_share"] != 1.0:
        raise SystemExit(1)


def _decision_cost(platform: Platform) -> float:
    """Microseconds one authorisation decision takes (what every authenticated request pays)."""
    ctx = Context(actor="key:bench", roles=("dispatcher",), org_scope=(matrix.TOWN_A,))
    runs = 20_000
    seconds = min(timeit.repeat(lambda: access.authorize(platform, ctx, "disposal", "GET"), number=runs, repeat=3))
    return round(seconds / runs * 1e6, 2)


if __name__ == "__main__":
    main()
