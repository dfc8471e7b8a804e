#!/usr/bin/env python3
"""Telemetry lake benchmark: append+flush rows/s and query latency, Parquet+DuckDB and PostgreSQL side by
side in one run, on the same generated readings.

The readings look like Pudong's fleet: 3,000,000 devices of the seven built-in device types (their real
measurements and ranges; 2 % of values absent; streetlights report a text `status`), arriving in
`ReadingBatch`es of 20,000 readings of one type, in time order over 36 hours (so two day partitions).
All batches are generated before the clock starts. For each lake:

1. load  — append every batch, flush every `--flush-every` batches (and at the end); rows/s counts
           stored long-format rows (one per measurement value) over append + flush wall time.
2. query — a bucketed query (300 s buckets, all five aggregations) for one device over a day, for 20
           devices that have readings that day; and one (60 s buckets) for one type (the biggest) over an
           hour, for 5 different hours. Latency p50 / max in ms.
3. Parquet only: `compact(day)` of the first day, then the same queries again.

PostgreSQL runs twice: with the lake's indexes (btree (device_num, ts) + brin (device_type, ts)) and
with `device_index=False`, to show what the device index costs at COPY time. Before querying, the table
is ANALYZEd (autovacuum would do it after such a load).

    .venv/bin/python bench/lake.py                     # 10,000,000 rows, both lakes (≈ 2–3 min)
    .venv/bin/python bench/lake.py --rows 1000000      # quick
    .venv/bin/python bench/lake.py --backends parquet

Prints a table, appends the figures (date, command, machine) to BENCHMARKS.md and writes them as a flat
JSON object to bench/results/lake.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform as py_platform
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from recording import append_section, figure_table, write_json

from citybrain.sensing.batch import ReadingBatch
from citybrain.sensing.devices.spec import DeviceTypeSpec
from citybrain.sensing.lake.base import TelemetryLake
from citybrain.sensing.lake.parquet import ParquetLake
from citybrain.sensing.lake.postgres import PostgresLake
from citybrain.sensing.lake.query import TelemetryQuery

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
RESULTS_JSON = BENCH_DIR / "results" / "lake.json"
START = datetime(2026, 11, 25, tzinfo=UTC)
SPAN_S = 36 * 3_600
# Share of the fleet per device type (Pudong-like: many smoke detectors and streetlights, few stations).
FLEET_SHARE = {"smoke_detector": 0.30, "streetlight": 0.25, "manhole_cover": 0.15, "air_quality": 0.08,
               "waste_bin": 0.12, "traffic_detector": 0.05, "water_level": 0.05}
STATUS_TEXTS = np.array(["ok", "ok", "ok", "ok", "dimmed", "fault"], dtype=object)


@dataclass
class Fleet:
    specs: dict[str, DeviceTypeSpec]
    first_num: dict[str, int]
    devices: dict[str, int]


def build_fleet(total_devices: int) -> Fleet:
    from citybrain.scenarios import scenario_device_types

    specs = {spec.slug: spec for spec in scenario_device_types() if spec.slug in FLEET_SHARE}
    first_num, devices, next_num = {}, {}, 1
    for slug, share in FLEET_SHARE.items():
        count = max(1, int(total_devices * share))
        first_num[slug], devices[slug] = next_num, count
        next_num += count
    return Fleet(specs, first_num, devices)


def rows_per_reading(spec: DeviceTypeSpec) -> int:
    return len(spec.measurements)


def generate(fleet: Fleet, target_rows: int, batch_size: int, seed: int = 1) -> list[ReadingBatch]:
    """Batches of one type each, about `target_rows` long rows in all. Every type reports all the time:
    a type's batches split the 36 hours into consecutive slices, and all batches are ordered by their
    slice's start, as an ingest pipeline would hand them over."""
    rng = np.random.default_rng(seed)
    total_share = sum(FLEET_SHARE.values())
    planned: list[tuple[float, str, float]] = []  # (slice start, type, slice length)
    for slug, share in FLEET_SHARE.items():
        readings = target_rows * share / total_share / 0.98 / sum(
            FLEET_SHARE[s] / total_share * rows_per_reading(fleet.specs[s]) for s in FLEET_SHARE)
        count = max(1, round(readings / batch_size))
        planned += [(i * SPAN_S / count, slug, SPAN_S / count) for i in range(count)]
    planned.sort()
    batches = []
    for offset, slug, slice_s in planned:
        spec = fleet.specs[slug]
        nums = fleet.first_num[slug] + rng.integers(0, fleet.devices[slug], batch_size)
        ts = START.timestamp() + offset + np.sort(rng.random(batch_size)) * slice_s
        values: dict[str, np.ndarray] = {}
        texts: dict[str, list[str | None]] = {}
        for name, measurement in spec.measurements.items():
            if measurement.kind == "string":
                column = STATUS_TEXTS[rng.integers(0, len(STATUS_TEXTS), batch_size)]
                column[rng.random(batch_size) < 0.02] = None
                texts[name] = column.tolist()
                continue
            if measurement.kind == "boolean":
                column = (rng.random(batch_size) < 0.1).astype(np.float64)
            else:
                low = measurement.minimum if measurement.minimum is not None else 0.0
                high = measurement.maximum if measurement.maximum is not None else 100.0
                column = low + rng.random(batch_size) * (high - low) * 0.2
                if measurement.kind == "integer":
                    column = np.floor(column)
            column[rng.random(batch_size) < 0.02] = np.nan
            values[name] = column
        batches.append(ReadingBatch(slug, nums.astype(np.int64), nums - fleet.first_num[slug], ts, ts + 0.2,
                                    np.full(batch_size, -1, np.int64), values, texts))
    return batches


def load(lake: TelemetryLake, batches: list[ReadingBatch], flush_every: int) -> dict[str, float]:
    rows = 0
    append_s = 0.0
    started = time.perf_counter()
    for index, batch in enumerate(batches, 1):
        before = time.perf_counter()
        lake.append(batch)
        append_s += time.perf_counter() - before
        if index % flush_every == 0:
            rows += lake.flush()
    rows += lake.flush()
    elapsed = time.perf_counter() - started
    return {"rows": rows, "seconds": elapsed, "rows_per_s": rows / elapsed, "append_s": append_s}


def probe_devices(batches: list[ReadingBatch], count: int) -> list[int]:
    """Devices that report on the first day, spread over the types."""
    end_of_day = (START + timedelta(days=1)).timestamp()
    chosen: list[int] = []
    for batch in batches[:: max(1, len(batches) // count)]:
        if batch.ts[0] < end_of_day:
            chosen.append(int(batch.device_num[len(batch) // 2]))
    return chosen[:count]


def timed(lake: TelemetryLake, queries: list[TelemetryQuery]) -> tuple[list[float], int]:
    latencies, rows = [], 0
    for query in queries:
        before = time.perf_counter()
        result = lake.query(query)
        latencies.append((time.perf_counter() - before) * 1e3)
        rows += result.num_rows
    return latencies, rows


def query_figures(lake: TelemetryLake, prefix: str, devices: list[int], busiest_type: str) -> dict[str, Any]:
    device_day = [TelemetryQuery(start=START, end=START + timedelta(days=1), device_nums=[num], bucket_s=300)
                  for num in devices]
    type_hour = [TelemetryQuery(start=START + timedelta(hours=h), end=START + timedelta(hours=h + 1),
                                device_type=busiest_type, bucket_s=60, limit=1_000_000)
                 for h in (3, 8, 13, 18, 23)]
    timed(lake, device_day[:2] + type_hour[:1])  # warm caches (file footers, plans)
    day_ms, day_rows = timed(lake, device_day)
    hour_ms, hour_rows = timed(lake, type_hour)
    return {
        f"{prefix}_device_day_query_ms": round(statistics.median(day_ms), 2),
        f"{prefix}_device_day_query_max_ms": round(max(day_ms), 2),
        f"{prefix}_device_day_result_rows_mean": round(day_rows / len(device_day), 1),
        f"{prefix}_type_hour_query_ms": round(statistics.median(hour_ms), 2),
        f"{prefix}_type_hour_query_max_ms": round(max(hour_ms), 2),
        f"{prefix}_type_hour_result_rows_mean": round(hour_rows / len(type_hour), 1),
    }


def run_parquet(batches: list[ReadingBatch], flush_every: int, devices: list[int], busiest: str,
                keep: bool) -> dict[str, Any]:
    folder = Path(tempfile.mkdtemp(prefix="citybrain-bench-lake-"))
    lake = ParquetLake(folder / "telemetry")
    try:
        loaded = load(lake, batches, flush_every)
        files = list(lake.root.rglob("*.parquet"))
        figures: dict[str, Any] = {
            "parquet_rows": loaded["rows"],
            "parquet_rows_per_s": round(loaded["rows_per_s"]),
            "parquet_load_s": round(loaded["seconds"], 2),
            "parquet_append_share_ratio": round(loaded["append_s"] / loaded["seconds"], 3),
            "parquet_files": len(files),
            "parquet_bytes_per_row": round(sum(f.stat().st_size for f in files) / loaded["rows"], 2),
        }
        figures |= query_figures(lake, "parquet", devices, busiest)
        before = time.perf_counter()
        report = lake.compact(START.date())
        figures["parquet_compact_day_s"] = round(time.perf_counter() - before, 2)
        figures["parquet_compact_day_rows"] = report.rows
        figures["parquet_compact_files_before"] = report.files_before
        figures["parquet_compact_files_after"] = report.files_after
        figures |= query_figures(lake, "parquet_compacted", devices, busiest)
        return figures
    finally:
        lake.close(flush=False)
        if keep:
            print(f"Parquet lake kept at {folder}")
        else:
            shutil.rmtree(folder, ignore_errors=True)


def run_postgres(batches: list[ReadingBatch], flush_every: int, devices: list[int], busiest: str,
                 admin_url: str, keep: bool) -> dict[str, Any]:
    import psycopg

    database = "citybrain_bench_lake"
    base = admin_url.rstrip("/").rsplit("/", 1)[0] if admin_url.count("/") > 2 else admin_url.rstrip("/")
    with psycopg.connect(f"{base}/postgres", autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{database}"')
        version = admin.execute("SHOW server_version").fetchone()[0]
    url = f"{base}/{database}"
    figures: dict[str, Any] = {"postgres_version": version}
    try:
        for label, device_index in (("postgres_no_device_index", False), ("postgres", True)):
            with psycopg.connect(url, autocommit=True) as connection:
                connection.execute("DROP TABLE IF EXISTS telemetry")
            lake = PostgresLake(url, device_index=device_index)
            try:
                loaded = load(lake, batches, flush_every)
                figures[f"{label}_rows_per_s"] = round(loaded["rows_per_s"])
                figures[f"{label}_load_s"] = round(loaded["seconds"], 2)
                if device_index:
                    figures["postgres_rows"] = loaded["rows"]
                    figures["postgres_append_share_ratio"] = round(loaded["append_s"] / loaded["seconds"], 3)
                    with psycopg.connect(url, autocommit=True) as connection:
                        connection.execute("ANALYZE telemetry")
                        size = connection.execute("SELECT pg_total_relation_size('telemetry')").fetchone()[0]
                    figures["postgres_bytes_per_row"] = round(size / loaded["rows"], 2)
                    figures |= query_figures(lake, "postgres", devices, busiest)
            finally:
                lake.close(flush=False)
        return figures
    finally:
        if not keep:
            with psycopg.connect(f"{base}/postgres", autocommit=True) as admin:
                admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        else:
            print(f"PostgreSQL lake kept in {url}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=10_000_000, help="long-format rows to append (≈)")
    parser.add_argument("--devices", type=int, default=3_000_000)
    parser.add_argument("--batch", type=int, default=20_000, help="readings per ReadingBatch")
    parser.add_argument("--flush-every", type=int, default=10, help="batches between flushes")
    parser.add_argument("--backends", default="parquet,postgres")
    parser.add_argument("--pg-url",
                        default=os.environ.get("CITYBRAIN_BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432"),
                        help="server to create the throw-away database citybrain_bench_lake on")
    parser.add_argument("--keep", action="store_true", help="keep the lakes afterwards")
    args = parser.parse_args()
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]

    fleet = build_fleet(args.devices)
    started = time.perf_counter()
    batches = generate(fleet, args.rows, args.batch)
    print(f"generated {len(batches)} batches of {args.batch:,} readings "
          f"in {time.perf_counter() - started:.1f} s")
    devices = probe_devices(batches, 20)
    busiest = max(FLEET_SHARE, key=lambda s: FLEET_SHARE[s] * rows_per_reading(fleet.specs[s]))

    import duckdb
    import pyarrow

    figures: dict[str, Any] = {
        "rows_requested": args.rows, "devices": args.devices, "batch_readings": args.batch,
        "batches": len(batches), "flush_every_batches": args.flush_every,
        "readings": sum(len(b) for b in batches), "type_hour_device_type": busiest,
    }
    if "parquet" in backends:
        print("parquet: loading …", flush=True)
        figures |= run_parquet(batches, args.flush_every, devices, busiest, args.keep)
    if "postgres" in backends:
        print("postgres: loading (twice: without and with the device index) …", flush=True)
        figures |= run_postgres(batches, args.flush_every, devices, busiest, args.pg_url, args.keep)
    figures |= {"duckdb_version": duckdb.__version__, "pyarrow_version": pyarrow.__version__,
                "python_version": py_platform.python_version(), "cpu_count": os.cpu_count(),
                "date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                "command": " ".join(["bench/lake.py", *sys.argv[1:]])}

    print_table(figures, backends)
    write_json("lake", figures)
    append_section("lake", "lake.py", figure_table(figures))
    print(f"wrote {RESULTS_JSON.relative_to(REPO)} and appended to BENCHMARKS.md")
    return 0


def print_table(figures: dict[str, Any], backends: list[str]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"Telemetry lake: {figures['readings']:,} readings of {figures['devices']:,} devices")
    table.add_column("figure")
    columns = [("parquet", "Parquet+DuckDB"), ("parquet_compacted", "Parquet compacted"),
               ("postgres", "PostgreSQL"), ("postgres_no_device_index", "PostgreSQL, no device index")]
    columns = [(key, title) for key, title in columns if key.split("_")[0] in backends]
    for _, title in columns:
        table.add_column(title, justify="right")
    rows = [("rows", "rows stored"), ("rows_per_s", "append+flush rows/s"), ("bytes_per_row", "bytes/row"),
            ("device_day_query_ms", "device × day query p50 ms"), ("device_day_query_max_ms", "… max ms"),
            ("type_hour_query_ms", "type × hour query p50 ms"), ("type_hour_query_max_ms", "… max ms"),
            ("type_hour_result_rows_mean", "type × hour result rows")]
    for key, label in rows:
        cells = []
        for prefix, _ in columns:
            value = figures.get(f"{prefix}_{key}")
            cells.append("" if value is None else f"{value:,}")
        table.add_row(label, *cells)
    Console().print(table)
    if "parquet" in backends:
        print(f"compaction of one day: {figures['parquet_compact_files_before']} → "
              f"{figures['parquet_compact_files_after']} files, {figures['parquet_compact_day_rows']:,} rows "
              f"in {figures['parquet_compact_day_s']} s")


if __name__ == "__main__":
    sys.exit(main())
