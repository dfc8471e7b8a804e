#!/usr/bin/env python3
"""Rules benchmark: readings/s through `RuleEngine.observe` and state bytes per million devices.

3,000,000 devices split over the seven shipped device types (roughly Pudong's mix: streetlights and smoke
detectors dominate), each type running its shipped rule file, with villages and towns as areas. Random
readings in batches of 20,000 of one type, the types in proportion to their devices; each device's
readings move forward in time, some devices appear more than once in a batch, 5 % of values are missing.
Values are drawn near the low end of each measurement's range, so thresholds are crossed often (about
40 % of readings cause a transition, far more than a real city: a stress figure, not a typical one).

The readings are generated before the clock starts (a pool replayed with later timestamps and the
devices rotated, so the readings spread over the whole fleet); only `observe` is timed. Three ticks are
timed separately: one that scans every device, one in which every device is silent, one with nothing due.

It prints a table, appends the figures to BENCHMARKS.md and writes them as a flat JSON object to
bench/results/rules.json.

    .venv/bin/python bench/rules.py                         # 3 M devices, 6 M readings (≈ 1 min)
    .venv/bin/python bench/rules.py --devices 300000 --readings 1000000
"""

from __future__ import annotations

import argparse
import os
import platform as py_platform
import resource
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from recording import append_section, figure_table, write_json

from citybrain.scenarios import scenario_device_types
from citybrain.sensing.batch import ReadingBatch
from citybrain.sensing.devices.spec import DeviceTypeSpec
from citybrain.sensing.rules.engine import RuleEngine

ROOT = Path(__file__).resolve().parent.parent
RESULTS_JSON = ROOT / "bench" / "results" / "rules.json"
SHARE = {"streetlight": 0.30, "smoke_detector": 0.25, "waste_bin": 0.14, "manhole_cover": 0.12,
         "traffic_detector": 0.08, "water_level": 0.07, "air_quality": 0.04}
VILLAGES, TOWNS = 1_300, 36
POOL_PER_TYPE = 4
T0 = 1_764_590_400.0


def split_devices(types: list[DeviceTypeSpec], devices: int) -> dict[str, int]:
    weights = np.array([SHARE.get(t.slug, 1 / len(types)) for t in types])
    counts = np.floor(weights / weights.sum() * devices).astype(int)
    counts[0] += devices - counts.sum()
    return {t.slug: int(n) for t, n in zip(types, counts, strict=True)}


def make_batch(spec: DeviceTypeSpec, capacity: int, size: int, rng: np.random.Generator) -> ReadingBatch:
    local = rng.integers(0, capacity, size)
    ts = T0 + np.sort(rng.uniform(0, 0.2, size))  # arrival order is time order, as the pipeline delivers
    values = {}
    for name in spec.numeric():
        m = spec.measurements[name]
        if m.kind == "boolean":
            column = (rng.random(size) < 0.02).astype(np.float64)
        else:
            lo = m.minimum if m.minimum is not None else 0.0
            hi = m.maximum if m.maximum is not None else lo + 100.0
            column = np.clip(rng.normal(lo + 0.1 * (hi - lo), 0.05 * (hi - lo), size), lo, hi)
        column[rng.random(size) < 0.05] = np.nan
        values[name] = column
    return ReadingBatch(spec.slug, local + 1, local, ts, ts + 0.05, np.full(size, -1, np.int64), values,
                        {name: [None] * size for name in spec.textual()})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=3_000_000)
    parser.add_argument("--readings", type=int, default=6_000_000)
    parser.add_argument("--batch", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--no-record", action="store_true", help="do not write bench/results/rules.json")
    args = parser.parse_args()
    console = Console(width=120)
    rng = np.random.default_rng(args.seed)

    types = scenario_device_types()
    capacity = split_devices(types, args.devices)
    specs = {t.slug: t for t in types}
    engines: dict[str, RuleEngine] = {}
    for slug, n in capacity.items():
        areas = {"village": rng.integers(0, VILLAGES, n).astype(np.int32),
                 "town": rng.integers(0, TOWNS, n).astype(np.int32)}
        engines[slug] = RuleEngine.for_device_type(specs[slug], n, areas=areas)
        engines[slug].register_devices(np.arange(n), since_ts=T0)

    pools = {slug: [make_batch(specs[slug], n, args.batch, rng) for _ in range(POOL_PER_TYPE)]
             for slug, n in capacity.items()}
    batches = max(1, args.readings // args.batch)
    share = np.array([capacity[s] for s in capacity], dtype=float) / args.devices
    schedule = rng.choice(list(capacity), size=batches, p=share)

    elapsed = dict.fromkeys(capacity, 0.0)
    readings = dict.fromkeys(capacity, 0)
    transitions = dict.fromkeys(capacity, 0)
    used = dict.fromkeys(capacity, 0)
    clock = T0

    def run_once(slug: str, timed: bool) -> None:
        nonlocal clock
        template = pools[slug][used[slug] % POOL_PER_TYPE]
        used[slug] += 1
        clock += 0.2
        shift = clock - T0
        # Rotating the devices on every replay spreads the readings over the whole fleet, as a city would.
        local = (template.local + int(rng.integers(0, capacity[slug]))) % capacity[slug]
        batch = ReadingBatch(slug, local + 1, local, template.ts + shift, template.received + shift,
                             template.seq, template.values, template.texts)
        start = time.perf_counter()
        found = engines[slug].observe(batch)
        spent = time.perf_counter() - start
        if timed:
            elapsed[slug] += spent
            readings[slug] += len(batch)
            transitions[slug] += sum(t.raised.size + t.cleared.size for t in found)

    for slug in capacity:  # untimed: first touch of every state array, zscore warm-up begins
        for _ in range(POOL_PER_TYPE):
            run_once(slug, timed=False)
    for slug in schedule:
        run_once(str(slug), timed=True)

    # A tick that scans every device (the devices never heard from since registration go silent), then
    # the worst case: every device silent at once, 3 M raises in one tick.
    start = time.perf_counter()
    raised_on_scan = sum(t.raised.size for e in engines.values() for t in e.tick(T0 + 121.0))
    scan_ms = (time.perf_counter() - start) * 1000
    start = time.perf_counter()
    raised_on_tick = sum(t.raised.size for e in engines.values() for t in e.tick(clock + 121.0))
    tick_ms = (time.perf_counter() - start) * 1000
    start = time.perf_counter()
    for engine in engines.values():
        engine.tick(clock + 122.0)
    idle_tick_us = (time.perf_counter() - start) * 1e6

    total_readings, total_s = sum(readings.values()), sum(elapsed.values())
    state_bytes = sum(e.nbytes for e in engines.values())
    per_million = state_bytes / (args.devices / 1e6)
    figures: dict[str, Any] = {
        "devices": args.devices,
        "device_types": len(capacity),
        "batch_readings": args.batch,
        "readings": total_readings,
        "readings_per_s": round(total_readings / total_s, 1),
        "observe_us_per_batch": round(total_s / batches * 1e6, 1),
        "transitions_per_s": round(sum(transitions.values()) / total_s, 1),
        "state_bytes": state_bytes,
        "state_bytes_per_million_devices": round(per_million),
        "state_mb_per_million_devices": round(per_million / 1e6, 2),
        "tick_scan_all_types_ms": round(scan_ms, 1),
        "tick_scan_raised": raised_on_scan,
        "tick_every_device_raised_ms": round(tick_ms, 1),
        "tick_every_device_raised": raised_on_tick,
        "tick_nothing_due_us": round(idle_tick_us, 1),
        "max_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
    for slug in capacity:
        figures[f"{slug}_devices"] = capacity[slug]
        figures[f"{slug}_rules"] = len(engines[slug].detectors)
        rate = readings[slug] / elapsed[slug] if elapsed[slug] else 0.0
        figures[f"{slug}_readings_per_s"] = round(rate, 1)
        figures[f"{slug}_state_bytes_per_device"] = round(engines[slug].nbytes / capacity[slug], 2)
    figures |= {"numpy": np.__version__, "python": py_platform.python_version(), "cpu_count": os.cpu_count(),
                "date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")}

    table = Table(title=f"RuleEngine.observe — {args.devices:,} devices, batches of {args.batch:,}")
    for column in ("device type", "devices", "rules", "readings", "readings/s", "transitions",
                   "state B/device"):
        table.add_column(column, justify="right" if column != "device type" else "left")
    for slug in capacity:
        rate = readings[slug] / elapsed[slug] if elapsed[slug] else 0.0
        table.add_row(slug, f"{capacity[slug]:,}", str(len(engines[slug].detectors)), f"{readings[slug]:,}",
                      f"{rate:,.0f}", f"{transitions[slug]:,}",
                      f"{engines[slug].nbytes / capacity[slug]:.1f}")
    table.add_row("all", f"{args.devices:,}", "", f"{total_readings:,}", f"{figures['readings_per_s']:,.0f}",
                  f"{sum(transitions.values()):,}", f"{state_bytes / args.devices:.1f}", style="bold")
    console.print(table)
    console.print(f"state: {per_million / 1e6:.2f} MB per million devices "
                  f"({state_bytes / 1e6:.1f} MB in all); "
                  f"max RSS {figures['max_rss_mb']} MB")
    console.print(f"tick over all types: scan {scan_ms:.1f} ms ({raised_on_scan:,} raised), every device "
                  f"silent {tick_ms:.1f} ms ({raised_on_tick:,} raised), nothing due {idle_tick_us:.0f} µs")
    if not args.no_record:
        write_json("rules", figures)
        append_section("rules", "rules.py", [
            f"- load: {args.devices:,} devices of 7 types, batches of {figures['batch_readings']:,} readings", "",
            *figure_table(figures)])
        console.print(f"wrote {RESULTS_JSON.relative_to(ROOT)} and appended to BENCHMARKS.md")


if __name__ == "__main__":
    main()
