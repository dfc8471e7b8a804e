"""The telemetry lake: both implementations (Parquet + DuckDB, PostgreSQL), through their public API.

PostgreSQL tests are marked `integration`; they run in a database of their own, created for the test
session and dropped after it, with a fresh schema per test."""

from __future__ import annotations

import json
import os
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np
import psycopg
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from citybrain.core.errors import InvalidInput
from citybrain.sensing.batch import ReadingBatch
from citybrain.sensing.lake.base import LONG_SCHEMA, TelemetryLake, open_lake, to_long
from citybrain.sensing.lake.parquet import JOURNAL, ParquetLake
from citybrain.sensing.lake.postgres import PostgresLake, connection_url
from citybrain.sensing.lake.query import TelemetryQuery
from tests.services import postgres_admin_url, require_postgres

DAY = datetime(2026, 11, 25, tzinfo=UTC)
T0 = DAY.timestamp()
AIR = ["pm25", "pm10", "no2"]


# ---------------------------------------------------------------------- fixtures and helpers


@pytest.fixture(scope="session")
def lake_database() -> Iterator[str]:
    """A PostgreSQL database for this session's lake tests, dropped afterwards."""
    require_postgres()
    name = f"citybrain_lake_test_{os.environ.get('PYTEST_XDIST_WORKER', 'main')}"
    admin = connection_url(postgres_admin_url())
    with psycopg.connect(admin, autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        connection.execute(f'CREATE DATABASE "{name}"')
    yield connection_url(postgres_admin_url(name))
    with psycopg.connect(admin, autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def pg_schema(lake_database: str) -> Iterator[str]:
    """A fresh schema name in the lake database; the schema is dropped after the test."""
    schema = f"lake_{uuid.uuid4().hex[:12]}"
    yield schema
    with psycopg.connect(lake_database, autocommit=True) as connection:
        connection.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def _pg_lake(request: pytest.FixtureRequest) -> PostgresLake:
    url = request.getfixturevalue("lake_database")
    return PostgresLake(url, schema=request.getfixturevalue("pg_schema"))


@pytest.fixture(params=["parquet", pytest.param("postgresql", marks=pytest.mark.integration)])
def lake(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[TelemetryLake]:
    """A fresh, empty lake of each kind."""
    opened = ParquetLake(tmp_path / "telemetry") if request.param == "parquet" else _pg_lake(request)
    yield opened
    opened.close(flush=False)


@pytest.fixture
def parquet_lake(tmp_path: Path) -> Iterator[ParquetLake]:
    opened = ParquetLake(tmp_path / "telemetry")
    yield opened
    opened.close(flush=False)


def make_batch(device_type: str, device_nums, ts, values: dict | None = None,
               texts: dict | None = None) -> ReadingBatch:
    nums = np.asarray(device_nums, np.int64)
    return ReadingBatch(device_type, nums, nums - 1, np.asarray(ts, np.float64), np.asarray(ts, np.float64),
                        np.full(nums.shape[0], -1, np.int64),
                        {k: np.asarray(v, np.float64) for k, v in (values or {}).items()}, texts or {})


def random_batch(rng: np.random.Generator, rows: int, *, devices: int = 20, start: float = T0,
                 span_s: float = 3_600.0, nan_share: float = 0.1,
                 device_type: str = "air_quality") -> ReadingBatch:
    values = {}
    for name in AIR:
        column = np.round(rng.normal(50, 20, rows), 3)
        column[rng.random(rows) < nan_share] = np.nan
        values[name] = column
    return make_batch(device_type, rng.integers(1, devices + 1, rows),
                      start + np.round(rng.random(rows) * span_s, 3), values)


def day_query(**fields) -> TelemetryQuery:
    return TelemetryQuery(start=DAY, end=DAY + timedelta(days=1), **fields)


def reference_rows(batches: list[ReadingBatch]) -> list[tuple]:
    """What the lake must hold: (ts µs, device_num, measurement, value, text), NaN and None left out."""
    rows = []
    for batch in batches:
        stamps = np.rint(batch.ts * 1e6).astype(np.int64)
        for name, column in batch.values.items():
            for i in np.flatnonzero(~np.isnan(column)):
                rows.append((int(stamps[i]), int(batch.device_num[i]), name, float(column[i]), None))
        for name, strings in batch.texts.items():
            for i, text in enumerate(strings):
                if text is not None:
                    rows.append((int(stamps[i]), int(batch.device_num[i]), name, None, text))
    return sorted(rows, key=lambda r: (r[0], r[1], r[2], r[3] is None, r[3] or 0.0, r[4] is None, r[4] or ""))


def result_rows(table: pa.Table) -> list[tuple]:
    stamps = table.column("ts").cast(pa.int64()).to_pylist()
    others = (table.column(c).to_pylist() for c in ("device_num", "measurement", "value", "text"))
    return list(zip(stamps, *others, strict=True))


def numpy_buckets(batches: list[ReadingBatch], bucket_s: int) -> dict[tuple[int, int, str], dict]:
    """Reference bucket aggregates computed with NumPy: (bucket µs, device, measurement) → aggregates."""
    width = bucket_s * 1_000_000
    out: dict[tuple[int, int, str], dict] = {}
    names = sorted({name for b in batches for name in b.values})
    for name in names:
        parts = [(np.rint(b.ts * 1e6).astype(np.int64), b.device_num, b.values[name]) for b in batches
                 if name in b.values]
        stamps = np.concatenate([p[0] for p in parts])
        nums = np.concatenate([p[1] for p in parts])
        values = np.concatenate([p[2] for p in parts])
        keep = ~np.isnan(values)
        stamps, nums, values = stamps[keep], nums[keep], values[keep]
        if not stamps.size:
            continue
        buckets = stamps - stamps % width
        # Sorted by group, then ts, then value: a group's last row is its `last` (latest ts, largest value).
        order = np.lexsort((values, stamps, nums, buckets))
        buckets, nums, stamps, values = buckets[order], nums[order], stamps[order], values[order]
        starts = np.flatnonzero(np.r_[True, (np.diff(buckets) != 0) | (np.diff(nums) != 0)])
        ends = np.r_[starts[1:], buckets.size]
        sums, counts = np.add.reduceat(values, starts), ends - starts
        lows, highs = np.minimum.reduceat(values, starts), np.maximum.reduceat(values, starts)
        for i, (start, end) in enumerate(zip(starts, ends, strict=True)):
            out[(int(buckets[start]), int(nums[start]), name)] = {
                "avg": sums[i] / counts[i], "min": lows[i], "max": highs[i], "count": int(counts[i]),
                "last": float(values[end - 1])}
    return out


def as_buckets(table: pa.Table) -> dict[tuple[int, int, str], dict]:
    stamps = table.column("bucket").cast(pa.int64()).to_pylist()
    rows = table.drop_columns(["bucket"]).to_pylist()
    return {(stamp, row.pop("device_num"), row.pop("measurement")): row
            for stamp, row in zip(stamps, rows, strict=True)}


def assert_buckets_match(found: dict, expected: dict) -> None:
    assert found.keys() == expected.keys()
    for key, want in expected.items():
        got = found[key]
        assert got["count"] == want["count"], key
        for name in ("avg", "min", "max", "last"):
            assert got[name] == pytest.approx(want[name], rel=1e-12, abs=1e-9), (key, name)


def assert_same_answer(left: pa.Table, right: pa.Table) -> None:
    """Equal results; averages to 12 digits (a sum's rounding depends on the order rows are read in)."""
    assert left.schema == right.schema
    assert left.num_rows == right.num_rows
    for name in left.column_names:
        mine, theirs = left.column(name).to_pylist(), right.column(name).to_pylist()
        if name == "avg":
            assert [a is None for a in mine] == [b is None for b in theirs]
            assert [a for a in mine if a is not None] == pytest.approx([b for b in theirs if b is not None],
                                                                      rel=1e-12, abs=1e-12)
        else:
            assert mine == theirs, name


def parquet_files(lake: ParquetLake) -> list[Path]:
    return sorted(p for p in lake.root.rglob("*.parquet") if not p.name.startswith((".", "_")))


# ---------------------------------------------------------------------- long format


def test_long_format_leaves_out_absent_values_without_a_row_per_reading():
    batch = make_batch("air_quality", [1, 2, 3], [T0, T0 + 1, T0 + 2],
                       {"pm25": [1.0, np.nan, 3.0], "pm10": [np.nan, np.nan, np.nan]},
                       {"level": ["good", None, "bad"]})
    table = to_long(batch)
    assert table.schema == LONG_SCHEMA
    assert table.column("measurement").to_pylist() == ["pm25", "pm25", "level", "level"]
    assert table.column("device_num").to_pylist() == [1, 3, 1, 3]
    assert table.column("value").to_pylist() == [1.0, 3.0, None, None]
    assert table.column("text").to_pylist() == [None, None, "good", "bad"]
    assert table.column("ts").cast(pa.int64()).to_pylist() == [int(T0 * 1e6), int((T0 + 2) * 1e6)] * 2


def test_long_format_rejects_device_numbers_beyond_int32():
    with pytest.raises(ValueError, match="int32"):
        to_long(make_batch("air_quality", [2**31], [T0], {"pm25": [1.0]}))


# ---------------------------------------------------------------------- both lakes


def test_round_trip_of_appended_batches(lake: TelemetryLake):
    rng = np.random.default_rng(7)
    batches = [random_batch(rng, 500), random_batch(rng, 300, device_type="water_level")]
    for batch in batches:
        lake.append(batch)
    expected = reference_rows(batches)
    assert lake.buffered_rows == len(expected)
    assert lake.flush() == len(expected)
    assert lake.buffered_rows == 0
    assert lake.flush() == 0
    result = lake.query(day_query(limit=1_000_000))
    assert result.schema == day_query().result_schema()
    assert result_rows(result) == expected


def test_text_measurements_round_trip(lake: TelemetryLake):
    batch = make_batch("manhole_cover", [1, 2, 3], [T0, T0 + 30, T0 + 60], {"tilt": [1.5, 2.5, np.nan]},
                       {"state": ["closed", None, "lifted"]})
    lake.append(batch)
    lake.flush()
    rows = result_rows(lake.query(day_query(measurements=["state"])))
    assert rows == [(int(T0 * 1e6), 1, "state", None, "closed"),
                    (int((T0 + 60) * 1e6), 3, "state", None, "lifted")]
    buckets = lake.query(day_query(bucket_s=3600, measurements=["state"], aggregations=["count", "last"]))
    assert buckets.to_pylist() == [{"bucket": DAY, "device_num": 1, "measurement": "state", "count": 1,
                                    "last": None, "last_text": "closed"},
                                   {"bucket": DAY, "device_num": 3, "measurement": "state", "count": 1,
                                    "last": None, "last_text": "lifted"}]


def test_nan_values_are_not_stored(lake: TelemetryLake):
    lake.append(make_batch("air_quality", [1, 2], [T0, T0],
                           {"pm25": [np.nan, 4.0], "pm10": [np.nan, np.nan]}))
    assert lake.flush() == 1
    assert result_rows(lake.query(day_query())) == [(int(T0 * 1e6), 2, "pm25", 4.0, None)]


def test_filters_by_device_type_measurement_and_limit(lake: TelemetryLake):
    rng = np.random.default_rng(11)
    air, water = random_batch(rng, 200), random_batch(rng, 200, device_type="water_level")
    lake.append(air)
    lake.append(water)
    lake.flush()
    expected_air = reference_rows([air])
    assert result_rows(lake.query(day_query(device_type="air_quality"))) == expected_air
    wanted = [3, 5]
    narrow = day_query(device_type="air_quality", device_nums=wanted, measurements=["no2"])
    assert result_rows(lake.query(narrow)) == [r for r in expected_air if r[1] in wanted and r[2] == "no2"]
    everything = reference_rows([air, water])
    assert result_rows(lake.query(day_query(limit=10))) == everything[:10]
    hour = TelemetryQuery(start=DAY + timedelta(minutes=10), end=DAY + timedelta(minutes=20))
    low, high = int(hour.start.timestamp() * 1e6), int(hour.end.timestamp() * 1e6)
    assert result_rows(lake.query(hour)) == [r for r in everything if low <= r[0] < high]


def test_bucket_aggregations_match_numpy(lake: TelemetryLake):
    rng = np.random.default_rng(3)
    batches = [random_batch(rng, 2_000, devices=8), random_batch(rng, 2_000, devices=8)]
    for batch in batches:
        lake.append(batch)
    lake.flush()
    for bucket_s in (60, 900, 86_400):
        found = lake.query(day_query(bucket_s=bucket_s, limit=1_000_000))
        assert found.column_names == ["bucket", "device_num", "measurement", "avg", "min", "max", "count",
                                      "last", "last_text"]
        assert_buckets_match(as_buckets(found), numpy_buckets(batches, bucket_s))
        order = list(zip(found.column("bucket").cast(pa.int64()).to_pylist(),
                         found.column("device_num").to_pylist(), found.column("measurement").to_pylist(),
                         strict=True))
        assert order == sorted(order)


def test_aggregation_subset_gives_only_those_columns(lake: TelemetryLake):
    lake.append(make_batch("air_quality", [1, 1], [T0, T0 + 10], {"pm25": [2.0, 4.0]}))
    lake.flush()
    found = lake.query(day_query(bucket_s=60, aggregations=["max", "avg"]))
    assert found.column_names == ["bucket", "device_num", "measurement", "avg", "max"]
    assert found.to_pylist() == [
        {"bucket": DAY, "device_num": 1, "measurement": "pm25", "avg": 3.0, "max": 4.0}]


def test_last_is_the_value_at_the_latest_ts_not_the_latest_appended(lake: TelemetryLake):
    # Out-of-order history: the reading appended last is the oldest; a tie on ts keeps the largest value.
    lake.append(make_batch("air_quality", [1, 1, 2, 2], [T0 + 50, T0 + 10, T0 + 20, T0 + 20],
                           {"pm25": [5.0, 1.0, 7.0, 9.0]}))
    lake.flush()
    lake.append(make_batch("air_quality", [1, 2], [T0 + 5, T0 + 20], {"pm25": [100.0, 8.0]}))
    lake.flush()
    answer = lake.query(day_query(bucket_s=60, aggregations=["last", "count"]))
    found = {row["device_num"]: row for row in answer.to_pylist()}
    assert found[1]["last"] == 5.0 and found[1]["count"] == 3
    assert found[2]["last"] == 9.0 and found[2]["count"] == 3


def test_flushed_rows_are_durable_and_unflushed_ones_are_not(lake: TelemetryLake, request, tmp_path):
    lake.append(make_batch("air_quality", [1], [T0], {"pm25": [1.0]}))
    lake.flush()
    lake.append(make_batch("air_quality", [2], [T0 + 1], {"pm25": [2.0]}))  # never flushed
    other = ParquetLake(tmp_path / "telemetry") if isinstance(lake, ParquetLake) else PostgresLake(
        request.getfixturevalue("lake_database"), schema=request.getfixturevalue("pg_schema"))
    try:
        assert result_rows(other.query(day_query())) == [(int(T0 * 1e6), 1, "pm25", 1.0, None)]
        assert result_rows(lake.query(day_query())) == [(int(T0 * 1e6), 1, "pm25", 1.0, None)]
    finally:
        other.close()


def test_export_to_parquet_and_csv(lake: TelemetryLake, tmp_path: Path):
    lake.append(make_batch("air_quality", [1, 2], [T0, T0 + 0.5], {"pm25": [1.25, 2.5]},
                           {"level": ["ok", "a,b"]}))
    lake.flush()
    query = day_query()
    expected = lake.query(query)
    assert lake.export(query, tmp_path / "out" / "rows.parquet") == 4
    assert pq.read_table(tmp_path / "out" / "rows.parquet").equals(expected)
    assert lake.export(query, tmp_path / "rows.csv") == 4
    text = (tmp_path / "rows.csv").read_text()
    assert text.splitlines()[0] == '"ts","device_num","measurement","value","text"'
    assert "2026-11-25T00:00:00.500000Z" in text
    nulls = pacsv.ConvertOptions(strings_can_be_null=True)
    back = pacsv.read_csv(tmp_path / "rows.csv", convert_options=nulls)
    assert back.column("device_num").to_pylist() == expected.column("device_num").to_pylist()
    assert back.column("text").to_pylist() == expected.column("text").to_pylist()
    bucketed = day_query(bucket_s=3600)
    assert lake.export(bucketed, tmp_path / "buckets.pq") == lake.query(bucketed).num_rows
    assert not [p for p in tmp_path.rglob("*.tmp")]
    with pytest.raises(InvalidInput) as caught:
        lake.export(query, tmp_path / "rows.xlsx")
    assert caught.value.errors[0].field == "format"


def test_a_device_type_that_is_not_a_slug_is_refused_at_append(lake: TelemetryLake):
    with pytest.raises(ValueError, match="slug"):
        lake.append(make_batch("../../etc", [1], [T0], {"pm25": [1.0]}))
    assert lake.buffered_rows == 0


def test_closed_lake_refuses_work(lake: TelemetryLake):
    lake.append(make_batch("air_quality", [1], [T0], {"pm25": [1.0]}))
    assert lake.close() == 1
    assert lake.close() == 0
    with pytest.raises(RuntimeError, match="closed"):
        lake.append(make_batch("air_quality", [1], [T0], {"pm25": [1.0]}))


# ---------------------------------------------------------------------- the same answers from both lakes


@pytest.mark.integration
def test_both_lakes_give_the_same_answers(request, tmp_path: Path):
    rng = np.random.default_rng(2026)
    batches = [random_batch(rng, 3_000, devices=30, span_s=6 * 3600, device_type=t)
               for t in ("air_quality", "water_level", "air_quality")]
    batches.append(make_batch("manhole_cover", [40, 41, 40], [T0 + 5, T0 + 7, T0 + 5],
                              {"tilt": [1.0, 2.0, 3.0]}, {"state": ["b", "a", "c"]}))
    lakes = [ParquetLake(tmp_path / "telemetry"), _pg_lake(request)]
    queries = [
        day_query(limit=1_000_000),
        day_query(bucket_s=300, limit=1_000_000),
        day_query(bucket_s=7, device_type="air_quality", measurements=["pm25", "no2"], limit=1_000_000),
        day_query(bucket_s=3600, device_nums=[3, 40], aggregations=["last", "count"]),
        TelemetryQuery(start=DAY + timedelta(hours=1), end=DAY + timedelta(hours=2), bucket_s=60,
                       device_type="water_level"),
        TelemetryQuery(start=DAY - timedelta(days=3), end=DAY + timedelta(days=3), bucket_s=86_400),
        day_query(limit=17),
        day_query(bucket_s=60, limit=5),
    ]
    try:
        for target in lakes:
            for batch in batches:
                target.append(batch)
            target.flush()
        for query in queries:
            parquet_answer, postgres_answer = (target.query(query) for target in lakes)
            assert parquet_answer.schema == query.result_schema()
            assert parquet_answer.num_rows > 0
            assert_same_answer(parquet_answer, postgres_answer)
    finally:
        for target in lakes:
            target.close(flush=False)


# ---------------------------------------------------------------------- the Parquet lake


def test_layout_is_hive_partitioned_by_day_and_type(parquet_lake: ParquetLake):
    # One flush spanning midnight writes one file per (day, type) partition.
    parquet_lake.append(make_batch("air_quality", [1, 2], [T0 - 1, T0 + 1], {"pm25": [1.0, 2.0]}))
    parquet_lake.append(make_batch("water_level", [3], [T0 + 2], {"level": [0.5]}))
    parquet_lake.flush()
    relative = [p.relative_to(parquet_lake.root).parts[:2] for p in parquet_files(parquet_lake)]
    assert sorted(relative) == [("day=2026-11-24", "device_type=air_quality"),
                                ("day=2026-11-25", "device_type=air_quality"),
                                ("day=2026-11-25", "device_type=water_level")]
    (path,) = [p for p in parquet_files(parquet_lake) if "water_level" in str(p)]
    stored = pq.read_table(path)
    assert stored.column_names == ["ts", "device_num", "measurement", "value", "text"]
    assert pq.read_metadata(path).row_group(0).column(0).compression == "ZSTD"


def test_a_query_for_one_day_reads_no_other_day(parquet_lake: ParquetLake):
    parquet_lake.append(make_batch("air_quality", [1, 2], [T0 + 60, T0 + 86_400 + 60], {"pm25": [1.0, 2.0]}))
    parquet_lake.flush()
    next_day = parquet_lake.partition(date(2026, 11, 26), "air_quality")
    (next_day / "part-garbage.parquet").write_bytes(b"this is not parquet")
    assert parquet_lake.files_for(day_query()) == [
        p for p in parquet_files(parquet_lake) if "day=2026-11-25" in str(p)]
    assert result_rows(parquet_lake.query(day_query())) == [(int((T0 + 60) * 1e6), 1, "pm25", 1.0, None)]
    with pytest.raises(Exception, match=r"(?i)parquet|magic"):
        parquet_lake.query(TelemetryQuery(start=DAY + timedelta(days=1), end=DAY + timedelta(days=2)))


def test_a_query_for_one_type_reads_no_other_type(parquet_lake: ParquetLake):
    parquet_lake.append(make_batch("air_quality", [1], [T0], {"pm25": [1.0]}))
    parquet_lake.append(make_batch("water_level", [2], [T0], {"level": [2.0]}))
    parquet_lake.flush()
    (parquet_lake.partition(DAY.date(), "water_level") / "part-garbage.parquet").write_bytes(b"garbage")
    assert result_rows(parquet_lake.query(day_query(device_type="air_quality"))) == [
        (int(T0 * 1e6), 1, "pm25", 1.0, None)]
    assert parquet_lake.query(day_query(device_type="streetlight")).num_rows == 0


def test_files_being_written_are_invisible(parquet_lake: ParquetLake):
    parquet_lake.append(make_batch("air_quality", [1], [T0], {"pm25": [1.0]}))
    parquet_lake.flush()
    folder = parquet_lake.partition(DAY.date(), "air_quality")
    (folder / ".part-1-2-3-half-written.parquet.tmp").write_bytes(b"PAR1 half")
    assert parquet_lake.query(day_query()).num_rows == 1


def test_each_flush_writes_new_files_and_concurrent_writers_never_collide(tmp_path: Path):
    writers = [ParquetLake(tmp_path / "telemetry") for _ in range(3)]
    rng = np.random.default_rng(5)
    batches = [random_batch(rng, 100) for _ in range(12)]

    def write(lake: ParquetLake, mine: list[ReadingBatch]) -> None:
        for batch in mine:
            lake.append(batch)
            lake.flush()

    threads = [threading.Thread(target=write, args=(w, batches[i::3])) for i, w in enumerate(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(parquet_files(writers[0])) == 12
    assert result_rows(writers[0].query(day_query(limit=1_000_000))) == reference_rows(batches)
    for writer in writers:
        writer.close()


def test_a_failed_flush_keeps_the_rows_for_the_next_one(parquet_lake: ParquetLake, monkeypatch):
    parquet_lake.append(make_batch("air_quality", [1], [T0], {"pm25": [1.0]}))
    parquet_lake.append(make_batch("water_level", [2], [T0], {"level": [2.0]}))
    real_write = pq.write_table
    calls = []

    def failing_second_write(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise OSError("disk full")
        return real_write(*args, **kwargs)

    monkeypatch.setattr(pq, "write_table", failing_second_write)
    with pytest.raises(OSError, match="disk full"):
        parquet_lake.flush()
    assert parquet_lake.query(day_query()).num_rows == 0  # nothing of the failed flush is visible
    assert parquet_lake.buffered_rows == 2
    monkeypatch.setattr(pq, "write_table", real_write)
    parquet_lake.append(make_batch("air_quality", [3], [T0 + 1], {"pm25": [3.0]}))
    assert parquet_lake.flush() == 3
    assert [r[1] for r in result_rows(parquet_lake.query(day_query()))] == [1, 2, 3]
    assert not list(parquet_lake.root.rglob("*.tmp"))


def test_the_buffer_flushes_itself_when_full(tmp_path: Path):
    lake = ParquetLake(tmp_path / "telemetry", max_buffered_rows=10)
    lake.append(make_batch("air_quality", range(1, 5), [T0] * 4, {"pm25": [1.0] * 4, "pm10": [2.0] * 4}))
    assert lake.buffered_rows == 8
    lake.append(make_batch("air_quality", range(1, 5), [T0 + 1] * 4, {"pm25": [1.0] * 4}))
    assert lake.buffered_rows == 0
    assert lake.query(day_query()).num_rows == 12
    lake.close()


def _fill_for_compaction(lake: ParquetLake, flushes: int = 6) -> list[ReadingBatch]:
    rng = np.random.default_rng(17)
    batches = []
    for i in range(flushes):
        for device_type in ("air_quality", "water_level"):
            batch = random_batch(rng, 400, devices=12, start=T0 + i * 3_000, span_s=9_000,
                                 device_type=device_type)
            batches.append(batch)
            lake.append(batch)
        lake.flush()
    return batches


def test_compaction_merges_small_files_and_keeps_every_answer(parquet_lake: ParquetLake):
    batches = _fill_for_compaction(parquet_lake)
    parquet_lake.append(make_batch("air_quality", [1], [T0 + 86_400], {"pm25": [1.0]}))  # another day
    parquet_lake.flush()
    queries = [day_query(limit=1_000_000), day_query(bucket_s=600, limit=1_000_000),
               day_query(bucket_s=60, device_nums=[4], device_type="air_quality")]
    before = [parquet_lake.query(q) for q in queries]
    assert len(parquet_files(parquet_lake)) == 13
    report = parquet_lake.compact(DAY.date())
    assert (report.partitions, report.files_before, report.files_after) == (2, 12, 2)
    assert report.rows == len(reference_rows(batches))
    assert len(parquet_files(parquet_lake)) == 3
    for query, answer in zip(queries, before, strict=True):
        assert_same_answer(parquet_lake.query(query), answer)
    assert result_rows(before[0]) == reference_rows(batches)
    # Compacting again has nothing to merge; the next day's single file is left alone.
    assert parquet_lake.compact("2026-11-25").files_after == 2
    assert parquet_lake.compact(date(2026, 11, 26)).files_before == 1
    assert parquet_lake.compact(date(2020, 1, 1)).partitions == 0
    # Flushes after a compaction add files next to the merged one, and a second compaction folds them in.
    parquet_lake.append(make_batch("air_quality", [1], [T0 + 5], {"pm25": [42.0]}))
    parquet_lake.flush()
    assert parquet_lake.compact(DAY.date()).files_before == 3
    assert parquet_lake.query(day_query(limit=1_000_000)).num_rows == before[0].num_rows + 1


def test_compaction_sorts_by_hour_then_device(parquet_lake: ParquetLake):
    _fill_for_compaction(parquet_lake)
    parquet_lake.compact(DAY.date())
    (merged,) = parquet_lake.partition(DAY.date(), "air_quality").glob("compact-*.parquet")
    stored = pq.read_table(merged)
    stamps = stored.column("ts").cast(pa.int64()).to_numpy()
    keys = list(zip((stamps // 3_600_000_000).tolist(), stored.column("device_num").to_pylist(),
                    stored.column("measurement").to_pylist(), stamps.tolist(), strict=True))
    assert keys == sorted(keys)


def test_readers_see_no_duplicates_or_gaps_while_compacting(parquet_lake: ParquetLake):
    _fill_for_compaction(parquet_lake, flushes=10)
    query = day_query(bucket_s=900, limit=1_000_000)
    expected = parquet_lake.query(query)
    seen: list[pa.Table] = []
    failures: list[BaseException] = []
    done, reading = threading.Event(), threading.Event()

    def read() -> None:
        reader = ParquetLake(parquet_lake.root)  # another lake object, as another process would have
        try:
            while not done.is_set():
                seen.append(reader.query(query))
                reading.set()
        except BaseException as error:  # noqa: BLE001 - reported below
            failures.append(error)
        finally:
            reading.set()
            reader.close()

    thread = threading.Thread(target=read)
    thread.start()
    reading.wait(timeout=30)  # compact while the reader is in full swing
    try:
        for _ in range(6):
            parquet_lake.compact(DAY.date())
            parquet_lake.append(make_batch("air_quality", [1], [T0 - 86_400], {"pm25": [1.0]}))  # other day
            parquet_lake.flush()
    finally:
        done.set()
        thread.join()
    assert not failures
    assert seen
    for answer in seen:
        assert_same_answer(answer, expected)


def test_compaction_waits_for_queries_that_already_listed_the_files(parquet_lake: ParquetLake):
    _fill_for_compaction(parquet_lake, flushes=3)
    folder = parquet_lake.partition(DAY.date(), "air_quality")
    listed = sorted(folder.glob("part-*.parquet"))
    reader = ParquetLake(parquet_lake.root)
    with reader._reading([DAY.date()]):  # what a query holds between listing the files and reading them
        compaction = threading.Thread(target=parquet_lake.compact, args=(DAY.date(),))
        compaction.start()
        compaction.join(timeout=1.0)
        assert compaction.is_alive()  # the merged file is ready, but the swap waits for the reader
        assert all(path.exists() for path in listed)
    compaction.join(timeout=30)
    assert not compaction.is_alive()
    assert not any(path.exists() for path in listed)
    reader.close()


def test_a_compaction_that_crashed_after_its_commit_is_finished_without_duplicates(parquet_lake: ParquetLake):
    _fill_for_compaction(parquet_lake, flushes=3)
    folder = parquet_lake.partition(DAY.date(), "air_quality")
    sources = sorted(p.name for p in folder.glob("part-*.parquet"))
    expected = parquet_lake.query(day_query(limit=1_000_000))
    # What a crash between the rename and the deletions leaves: merged file + journal + the old files.
    merged = "compact-0000000000000000001-1-000000-crashed.parquet"
    pq.write_table(pa.concat_tables([pq.read_table(folder / s) for s in sources]), folder / merged)
    journal = {"merged": merged, "temporary": f".{merged}.tmp", "replaces": sources}
    (folder / JOURNAL).write_text(json.dumps(journal))
    assert parquet_lake.query(day_query(limit=1_000_000)).num_rows == expected.num_rows
    parquet_lake.recover()
    assert sorted(p.name for p in folder.glob("*.parquet")) == [merged]
    assert not (folder / JOURNAL).exists()
    assert parquet_lake.query(day_query(limit=1_000_000)).equals(expected)


def test_a_compaction_that_crashed_before_its_commit_is_undone(parquet_lake: ParquetLake):
    _fill_for_compaction(parquet_lake, flushes=3)
    folder = parquet_lake.partition(DAY.date(), "air_quality")
    sources = sorted(p.name for p in folder.glob("part-*.parquet"))
    expected = parquet_lake.query(day_query(limit=1_000_000))
    temporary = folder / ".compact-5-5-000000-crashed.parquet.tmp"
    temporary.write_bytes(b"half a file")
    journal = {"merged": "compact-5-5-000000-crashed.parquet", "temporary": temporary.name, "replaces": []}
    (folder / JOURNAL).write_text(json.dumps(journal))
    assert parquet_lake.query(day_query(limit=1_000_000)).equals(expected)
    report = parquet_lake.compact(DAY.date())  # recovers first, then compacts
    assert report.files_after == 2
    assert not temporary.exists() and not (folder / JOURNAL).exists()
    assert sorted(p.name for p in folder.glob("part-*.parquet")) == []
    assert len(sources) == 3
    assert parquet_lake.query(day_query(limit=1_000_000)).equals(expected)


# ---------------------------------------------------------------------- the PostgreSQL lake


@pytest.mark.integration
def test_postgres_table_and_indexes_are_created_once(lake_database: str, pg_schema: str):
    first = PostgresLake(lake_database, schema=pg_schema)
    second = PostgresLake(lake_database, schema=pg_schema)  # an existing table is used as it is
    with psycopg.connect(lake_database) as connection:
        columns = connection.execute(
            "SELECT column_name, data_type FROM information_schema.columns WHERE table_schema = %s "
            "AND table_name = 'telemetry' ORDER BY ordinal_position", [pg_schema]).fetchall()
        indexes = {name: definition for name, definition in connection.execute(
            "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = %s", [pg_schema]).fetchall()}
    assert columns == [("device_type", "text"), ("device_num", "integer"), ("measurement", "text"),
                       ("ts", "timestamp with time zone"), ("value", "double precision"), ("text", "text")]
    assert "(device_num, ts)" in indexes["telemetry_device_ts"]
    assert "brin (device_type, ts)" in indexes["telemetry_type_ts_brin"]
    first.close()
    second.close()


@pytest.mark.integration
def test_postgres_stores_the_device_type_as_a_column(lake_database: str, pg_schema: str, caplog):
    lake = PostgresLake(lake_database, schema=pg_schema)
    lake.append(make_batch("air_quality", [1], [T0 + 0.000001], {"pm25": [1.0]}))
    lake.append(make_batch("manhole_cover", [2], [T0], texts={"state": ["lifted"]}))
    lake.flush()
    with psycopg.connect(lake_database) as connection:
        rows = connection.execute(f'SELECT device_type, device_num, measurement, ts, value, text '
                                  f'FROM "{pg_schema}".telemetry ORDER BY device_num').fetchall()
        # The flush summarised the BRIN ranges it filled, so time-range queries need not read them all.
        brin = f'"{pg_schema}".telemetry_type_ts_brin'
        assert connection.execute("SELECT brin_summarize_new_values(%s::regclass)", [brin]).fetchone() == (0,)
    assert rows == [("air_quality", 1, "pm25", DAY + timedelta(microseconds=1), 1.0, None),
                    ("manhole_cover", 2, "state", DAY, None, "lifted")]
    assert "summarising" not in caplog.text
    lake.close()


def test_open_lake_picks_the_implementation(tmp_path: Path, monkeypatch):
    embedded = open_lake("", home=tmp_path)
    assert isinstance(embedded, ParquetLake) and embedded.root == tmp_path / "lake" / "telemetry"
    embedded.close()
    folder = open_lake(str(tmp_path / "elsewhere"))
    assert isinstance(folder, ParquetLake) and folder.root == tmp_path / "elsewhere" / "telemetry"
    folder.close()
    with pytest.raises(ValueError, match="unsupported"):
        open_lake("s3://bucket/lake")
    opened = []
    monkeypatch.setattr(PostgresLake, "create_table", lambda self: opened.append(self.url))
    for url in ("postgresql://u@h/db", "postgres://u@h/db", "postgresql+psycopg://u@h/db"):
        assert isinstance(open_lake(url), PostgresLake)
    assert opened == ["postgresql://u@h/db"] * 3


# ---------------------------------------------------------------------- query validation


@pytest.mark.parametrize(("fields", "field"), [
    ({"start": DAY + timedelta(hours=2), "end": DAY + timedelta(hours=1)}, "start"),
    ({"start": DAY, "end": DAY}, "start"),
    ({"start": datetime(2026, 11, 25), "end": DAY + timedelta(hours=1)}, "start"),
    ({"end": "2026-11-26"}, "end"),
    ({"bucket_s": 0}, "bucket_s"),
    ({"bucket_s": 0.5}, "bucket_s"),
    ({"bucket_s": 60, "aggregations": ["avg", "median"]}, "aggregations[1]"),
    ({"bucket_s": 60, "aggregations": []}, "aggregations"),
    ({"aggregations": ["avg"]}, "aggregations"),
    ({"end": DAY + timedelta(days=2)}, "bucket_s"),
    ({"end": DAY + timedelta(days=500), "bucket_s": 86_400}, "end"),
    ({"end": DAY + timedelta(days=30), "bucket_s": 1}, "bucket_s"),
    ({"limit": 0}, "limit"),
    ({"limit": 10_000_000}, "limit"),
    ({"device_nums": []}, "device_nums"),
    ({"device_nums": [1, -4]}, "device_nums[1]"),
    ({"device_type": "Air Quality"}, "device_type"),
    ({"measurements": ["pm25", "2bad"]}, "measurements[1]"),
])
def test_bad_queries_name_the_field(fields: dict, field: str):
    arguments = {"start": DAY, "end": DAY + timedelta(hours=1), **fields}
    with pytest.raises(InvalidInput) as caught:
        TelemetryQuery(**arguments)
    assert field in [error.field for error in caught.value.errors]


def test_every_bad_field_is_reported_at_once():
    with pytest.raises(InvalidInput) as caught:
        TelemetryQuery(start=DAY, end=DAY + timedelta(hours=1), bucket_s=-1, limit=0, device_type="X")
    assert {e.field for e in caught.value.errors} == {"bucket_s", "limit", "device_type"}


def test_query_from_loose_input():
    query = TelemetryQuery.from_mapping({"start": "2026-11-25T00:00:00Z", "end": "2026-11-25T09:00:00+08:00",
                                         "device_nums": "7,3,7", "bucket_s": "60",
                                         "aggregations": "last,avg"})
    assert query.end == DAY + timedelta(hours=1) and query.device_nums == [3, 7] and query.bucket_s == 60
    assert query.aggregates == ("avg", "last")
    with pytest.raises(InvalidInput) as caught:
        TelemetryQuery.from_mapping({"start": "yesterday", "colour": "red"})
    assert {e.field for e in caught.value.errors} == {"start", "end", "colour"}


def test_query_days_cover_the_range_with_end_exclusive():
    assert day_query().days() == [date(2026, 11, 25)]
    query = TelemetryQuery(start=DAY - timedelta(seconds=1), end=DAY + timedelta(days=1, microseconds=1),
                           bucket_s=60)
    assert query.days() == [date(2026, 11, 24), date(2026, 11, 25), date(2026, 11, 26)]


# ---------------------------------------------------------------------- property: buckets vs NumPy


@st.composite
def readings(draw) -> tuple[list[ReadingBatch], int]:
    batches = []
    for _ in range(draw(st.integers(1, 3))):
        rows = draw(st.integers(1, 40))
        nums = draw(st.lists(st.integers(1, 4), min_size=rows, max_size=rows))
        # Whole and half seconds within a few hours: ties on ts and bucket edges happen often.
        ts = draw(st.lists(st.integers(-7_200, 14_400), min_size=rows, max_size=rows))
        values = {}
        for name in draw(st.lists(st.sampled_from(AIR), min_size=1, max_size=3, unique=True)):
            value = st.one_of(st.just(float("nan")), st.integers(-50, 50).map(float),
                              st.floats(-1e3, 1e3, allow_nan=False, allow_infinity=False))
            values[name] = draw(st.lists(value, min_size=rows, max_size=rows))
        batches.append(make_batch("air_quality", nums, T0 + np.array(ts) / 2, values))
    return batches, draw(st.sampled_from([1, 7, 60, 600, 3_600, 86_400]))


def _check_buckets_against_numpy(lake: TelemetryLake, batches: list[ReadingBatch], bucket_s: int) -> None:
    for batch in batches:
        lake.append(batch)
    lake.flush()
    query = TelemetryQuery(start=DAY - timedelta(hours=2), end=DAY + timedelta(hours=3), bucket_s=bucket_s,
                           limit=1_000_000)
    assert_buckets_match(as_buckets(lake.query(query)), numpy_buckets(batches, bucket_s))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=readings())
def test_property_parquet_buckets_match_numpy(tmp_path_factory, data):
    batches, bucket_s = data
    lake = ParquetLake(tmp_path_factory.mktemp("lake"), durable=False)
    try:
        _check_buckets_against_numpy(lake, batches, bucket_s)
    finally:
        lake.close(flush=False)


@pytest.mark.integration
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=readings())
def test_property_postgres_buckets_match_numpy(lake_database, pg_schema, data):
    batches, bucket_s = data
    lake = PostgresLake(lake_database, schema=pg_schema)
    try:
        with psycopg.connect(lake_database, autocommit=True) as connection:
            connection.execute(f'TRUNCATE "{pg_schema}".telemetry')
        _check_buckets_against_numpy(lake, batches, bucket_s)
    finally:
        lake.close(flush=False)
