"""Questions to the telemetry lake and the shape of their answers, the same for every lake.

A `TelemetryQuery` selects rows by time (`start` inclusive, `end` exclusive, both aware datetimes),
optionally by device numbers, device type and measurements, and either returns them raw or aggregates
them into time buckets of `bucket_s` seconds, aligned to the Unix epoch (a bucket starts at a multiple of
`bucket_s` seconds since 1970-01-01T00:00:00Z).

Result (a `pyarrow.Table`, `TelemetryQuery.result_schema()`):

- raw (`bucket_s` is None): `ts`, `device_num`, `measurement`, `value`, `text`, ordered by
  (ts, device_num, measurement, value, text).
- bucketed: `bucket`, `device_num`, `measurement`, then the requested aggregates in the fixed order
  `avg`, `min`, `max`, `count`, `last` (+ `last_text`), ordered by (bucket, device_num, measurement):
  - `avg`, `min`, `max` (float64) over the numeric values (null for a text measurement),
  - `count` (int64): readings of the measurement in the bucket, numeric or text,
  - `last` (float64) / `last_text` (string): the value / text of the bucket's latest row — the one
    with the latest `ts`; among rows sharing it, the largest value, then the largest text (byte order),
    so every lake gives the same answer.

`limit` cuts the ordered result. `export_table` writes a result to Parquet or CSV.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa
import pyarrow.compute as pc

from citybrain.core.errors import ErrorCollector, InvalidInput
from citybrain.sensing.devices.spec import MEASUREMENT, SLUG

AGGREGATIONS = ("avg", "min", "max", "count", "last")
ExportFormat = Literal["parquet", "csv"]

DEFAULT_LIMIT = 100_000
MAX_LIMIT = 1_000_000
MAX_DEVICES = 10_000
MAX_MEASUREMENTS = 100
# Raw rows of a whole fleet pile up fast (Pudong: 500 k rows a second), so a raw query spans at most a
# day; longer ranges must say how to aggregate.
MAX_RAW_RANGE = timedelta(days=1)
MAX_RANGE = timedelta(days=400)
MAX_BUCKET_S = 366 * 86_400
MAX_BUCKETS_PER_SERIES = 100_000

UTC_MICROS = pa.timestamp("us", tz="UTC")
RAW_RESULT_SCHEMA = pa.schema([
    pa.field("ts", UTC_MICROS, nullable=False),
    pa.field("device_num", pa.int32(), nullable=False),
    pa.field("measurement", pa.string(), nullable=False),
    pa.field("value", pa.float64()),
    pa.field("text", pa.string()),
])
AGGREGATE_FIELDS: dict[str, list[pa.Field]] = {
    "avg": [pa.field("avg", pa.float64())],
    "min": [pa.field("min", pa.float64())],
    "max": [pa.field("max", pa.float64())],
    "count": [pa.field("count", pa.int64(), nullable=False)],
    "last": [pa.field("last", pa.float64()), pa.field("last_text", pa.string())],
}

_SLUG_RE = re.compile(SLUG)
_MEASUREMENT_RE = re.compile(MEASUREMENT)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def epoch_us(moment: datetime) -> int:
    """Microseconds since the Unix epoch of an aware datetime (exact, no float rounding)."""
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


@dataclass(frozen=True, kw_only=True)
class TelemetryQuery:
    """What to read from the lake. Invalid combinations raise `InvalidInput` naming every bad field.

    - `start`, `end`: aware datetimes, `end` exclusive; a raw query spans at most a day, a bucketed one
      at most 400 days and 100,000 buckets.
    - `device_nums`: only these devices (at most 10,000); `device_type`: only this type.
    - `measurements`: only these measurement names.
    - `bucket_s`: bucket width in whole seconds (≥ 1); None returns raw rows.
    - `aggregations`: subset of avg/min/max/count/last (bucketed queries only; default all five).
    - `limit`: most rows returned (1 … 1,000,000).
    """

    start: datetime
    end: datetime
    device_nums: list[int] | None = None
    device_type: str | None = None
    measurements: list[str] | None = None
    bucket_s: int | None = None
    aggregations: list[str] | None = None
    limit: int = DEFAULT_LIMIT
    _aggregates: tuple[str, ...] = field(init=False, repr=False, compare=False, default=())

    def __post_init__(self) -> None:
        errors = ErrorCollector()
        aware = True
        for name in ("start", "end"):
            moment = getattr(self, name)
            if not isinstance(moment, datetime) or moment.tzinfo is None or moment.utcoffset() is None:
                errors.add(name, "must be a datetime with a time zone")
                aware = False
        if aware and self.start >= self.end:
            errors.add("start", "must be before end (end is exclusive)")
            aware = False

        bucket_ok = True
        if self.bucket_s is not None:
            if isinstance(self.bucket_s, bool) or not isinstance(self.bucket_s, int):
                errors.add("bucket_s", "must be a whole number of seconds")
                bucket_ok = False
            elif self.bucket_s < 1:
                errors.add("bucket_s", "must be at least 1 second")
                bucket_ok = False
            elif self.bucket_s > MAX_BUCKET_S:
                errors.add("bucket_s", f"must be at most {MAX_BUCKET_S} seconds (366 days)")
                bucket_ok = False
        if aware:
            span = self.end - self.start
            if self.bucket_s is None and span > MAX_RAW_RANGE:
                errors.add("bucket_s", f"required for a range longer than {_days(MAX_RAW_RANGE)} "
                                       f"(this one spans {_days(span)}): aggregate or narrow start/end")
            elif span > MAX_RANGE:
                errors.add("end", f"the range spans {_days(span)}, more than the {_days(MAX_RANGE)} allowed")
            elif self.bucket_s is not None and bucket_ok:
                buckets = span.total_seconds() / self.bucket_s
                if buckets > MAX_BUCKETS_PER_SERIES:
                    errors.add("bucket_s", f"{buckets:,.0f} buckets per series, more than the "
                                           f"{MAX_BUCKETS_PER_SERIES:,} allowed: widen the bucket")

        if self.device_nums is not None:
            nums = _as_list(self.device_nums)
            if nums is None or not nums:
                errors.add("device_nums", "must be a non-empty list of device numbers (or absent)")
            elif len(nums) > MAX_DEVICES:
                errors.add("device_nums", f"at most {MAX_DEVICES:,} devices per query")
            else:
                for i, num in enumerate(nums):
                    if isinstance(num, bool) or not isinstance(num, int) or not 1 <= num <= 2**31 - 1:
                        errors.add(f"device_nums[{i}]", "must be a device number (an integer ≥ 1)")
                object.__setattr__(self, "device_nums", sorted(set(nums)))
        if self.device_type is not None and (not isinstance(self.device_type, str)
                                             or not _SLUG_RE.match(self.device_type)):
            errors.add("device_type", f"must be a device type slug matching {SLUG}")
        if self.measurements is not None:
            names = _as_list(self.measurements)
            if names is None or not names:
                errors.add("measurements", "must be a non-empty list of measurement names (or absent)")
            elif len(names) > MAX_MEASUREMENTS:
                errors.add("measurements", f"at most {MAX_MEASUREMENTS} measurements per query")
            else:
                for i, name in enumerate(names):
                    if not isinstance(name, str) or not _MEASUREMENT_RE.match(name):
                        errors.add(f"measurements[{i}]", f"must be a measurement name matching {MEASUREMENT}")
                object.__setattr__(self, "measurements", list(dict.fromkeys(names)))

        aggregates: tuple[str, ...] = ()
        if self.aggregations is not None:
            names = _as_list(self.aggregations)
            if self.bucket_s is None:
                errors.add("aggregations", "apply to bucketed queries only: give bucket_s too")
            elif names is None or not names:
                errors.add("aggregations", f"must be a non-empty subset of {', '.join(AGGREGATIONS)}")
            else:
                for i, name in enumerate(names):
                    if name not in AGGREGATIONS:
                        errors.add(f"aggregations[{i}]",
                                   f"unknown aggregation {name!r}; known: {', '.join(AGGREGATIONS)}")
                aggregates = tuple(a for a in AGGREGATIONS if a in names)
                object.__setattr__(self, "aggregations", list(aggregates))
        elif self.bucket_s is not None:
            aggregates = AGGREGATIONS
        object.__setattr__(self, "_aggregates", aggregates)

        limit = self.limit
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
            errors.add("limit", f"must be an integer from 1 to {MAX_LIMIT:,}")
        errors.raise_if_any("The telemetry query has invalid fields")

    # ------------------------------------------------------------------ derived values

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> TelemetryQuery:
        """A query from loosely typed input (HTTP parameters, JSON, CLI): RFC 3339 text for `start`/`end`
        (a `Z` suffix is fine), comma-separated text or lists for the list fields, numeric text for the
        numbers. Unknown keys are an error."""
        errors = ErrorCollector()
        known = {"start", "end", "device_nums", "device_type", "measurements", "bucket_s", "aggregations",
                 "limit"}
        for key in data:
            if key not in known:
                errors.add(str(key), "unknown field")
        values: dict[str, Any] = {}
        for name in ("start", "end"):
            raw = data.get(name)
            if isinstance(raw, str):
                try:
                    values[name] = datetime.fromisoformat(raw.strip())
                except ValueError:
                    errors.add(name, "must be an RFC 3339 date-time with a time zone")
            elif raw is None:
                errors.add(name, "is required")
            else:
                values[name] = raw
        for name, convert in (("device_nums", int), ("measurements", str), ("aggregations", str)):
            raw = data.get(name)
            if raw is None:
                continue
            items = [p.strip() for p in raw.split(",") if p.strip()] if isinstance(raw, str) else raw
            try:
                values[name] = [convert(item) for item in items]
            except (TypeError, ValueError):
                errors.add(name, "must be a list (or comma-separated text)")
        for name in ("bucket_s", "limit"):
            raw = data.get(name)
            if raw is None:
                continue
            try:
                values[name] = int(raw) if isinstance(raw, str) else raw
            except ValueError:
                errors.add(name, "must be an integer")
        if data.get("device_type") is not None:
            values["device_type"] = data["device_type"]
        errors.raise_if_any("The telemetry query has invalid fields")
        return cls(**values)

    @property
    def start_us(self) -> int:
        """`start` in microseconds since the Unix epoch."""
        return epoch_us(self.start)

    @property
    def end_us(self) -> int:
        """`end` (exclusive) in microseconds since the Unix epoch."""
        return epoch_us(self.end)

    @property
    def aggregates(self) -> tuple[str, ...]:
        """The aggregations computed, in the fixed result order (empty for a raw query)."""
        return self._aggregates

    def days(self) -> list[date]:
        """The UTC days the range touches (the Parquet partitions a query must read)."""
        first = datetime.fromtimestamp(self.start_us // 1_000_000, UTC).date()
        last = datetime.fromtimestamp((self.end_us - 1) // 1_000_000, UTC).date()
        return [first + timedelta(days=i) for i in range((last - first).days + 1)]

    def result_schema(self) -> pa.Schema:
        """The columns of this query's answer, the same for every lake."""
        if self.bucket_s is None:
            return RAW_RESULT_SCHEMA
        fields = [pa.field("bucket", UTC_MICROS, nullable=False), RAW_RESULT_SCHEMA.field("device_num"),
                  RAW_RESULT_SCHEMA.field("measurement")]
        for name in self._aggregates:
            fields += AGGREGATE_FIELDS[name]
        return pa.schema(fields)

    def empty_result(self) -> pa.Table:
        """A result without rows (for queries that touch no stored data)."""
        return self.result_schema().empty_table()


def result_from_columns(query: TelemetryQuery, columns: Mapping[str, Any]) -> pa.Table:
    """A result table from backend columns: time columns (`ts` / `bucket`) as int64 epoch microseconds,
    the others as anything `pyarrow.array` takes; cast to the query's result schema."""
    schema = query.result_schema()
    arrays = []
    for column in schema:
        data = columns[column.name]
        if pa.types.is_timestamp(column.type):
            array = pa.array(data, pa.int64()) if not isinstance(data, (pa.Array, pa.ChunkedArray)) else data
            arrays.append(array.cast(pa.int64()).cast(column.type))
        elif isinstance(data, (pa.Array, pa.ChunkedArray)):
            arrays.append(data.cast(column.type))
        else:
            arrays.append(pa.array(data, column.type))
    return pa.Table.from_arrays(arrays, schema=schema)


def export_table(table: pa.Table, path: Path, *, format: ExportFormat | None = None) -> int:
    """Write a query result to `path` as Parquet (zstd) or CSV (header row, RFC 3339 UTC timestamps,
    empty fields for nulls); the format comes from `format` or the suffix (.parquet/.pq, .csv). The file
    is written under a temporary name and renamed, so it appears complete or not at all. Returns rows."""
    kind = format or {".parquet": "parquet", ".pq": "parquet", ".csv": "csv"}.get(path.suffix.lower())
    if kind not in ("parquet", "csv"):
        raise InvalidInput.at("format", f"cannot tell the export format of {path.name!r}: use parquet or csv")
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        if kind == "parquet":
            import pyarrow.parquet as pq

            pq.write_table(table, temporary, compression="zstd")
        else:
            import pyarrow.csv as pacsv

            pacsv.write_csv(_csv_ready(table), temporary)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    return table.num_rows


def _csv_ready(table: pa.Table) -> pa.Table:
    """Timestamps as RFC 3339 text (Arrow's CSV default puts a space between date and time)."""
    columns = []
    for column in table.columns:
        if pa.types.is_timestamp(column.type):
            column = pc.strftime(column.cast(UTC_MICROS), format="%Y-%m-%dT%H:%M:%SZ")
        columns.append(column)
    return pa.Table.from_arrays(columns, names=table.column_names)


def _as_list(value: Any) -> list[Any] | None:
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        return None
    return list(value)


def _days(span: timedelta) -> str:
    days = span.total_seconds() / 86_400
    return f"{days:g} day" + ("" if days == 1 else "s")
