"""The telemetry lake: every accepted reading, kept in long format, one row per measurement value.

Long format (`LONG_SCHEMA`), the same in both implementations:

| column        | type                        | notes                                                  |
|---------------|-----------------------------|--------------------------------------------------------|
| `ts`          | timestamp µs, UTC           | the device's own timestamp, rounded to the microsecond |
| `device_num`  | int32                       | the registry's global device number                    |
| `measurement` | string (dictionary-encoded) | a measurement of the device type                       |
| `value`       | float64                     | null for text measurements                             |
| `text`        | string                      | null for numeric measurements                          |

The device type is a partition (Parquet: `device_type=slug/` folders) or a column (PostgreSQL). A
measurement absent from a reading (NaN in the `ReadingBatch`, or a missing text) is not stored at all:
the lake holds what devices said, never placeholders.

Two implementations sit behind `TelemetryLake`:

- `parquet.ParquetLake` (embedded, the default): Parquet files under `<home>/lake/telemetry/`,
  queried with DuckDB.
- `postgres.PostgresLake` (scaled out): the `telemetry` table, written by binary COPY.

`open_lake(target)` picks one from a settings value. Writers call `append(batch)` on the hot path (cheap:
a vectorised conversion and a list append) and `flush()` on a timer; only flushed rows are durable and
visible to `query()`, in this process and in every other one.
"""

from __future__ import annotations

import logging
import re
import threading
from abc import ABC, abstractmethod
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import numpy as np
import pyarrow as pa

from citybrain.sensing.batch import ReadingBatch
from citybrain.sensing.devices.spec import SLUG
from citybrain.sensing.lake.query import ExportFormat, TelemetryQuery, export_table

log = logging.getLogger(__name__)

UTC_MICROS = pa.timestamp("us", tz="UTC")
LONG_SCHEMA = pa.schema([
    pa.field("ts", UTC_MICROS, nullable=False),
    pa.field("device_num", pa.int32(), nullable=False),
    pa.field("measurement", pa.dictionary(pa.int32(), pa.string()), nullable=False),
    pa.field("value", pa.float64()),
    pa.field("text", pa.string()),
])
INT32_MAX = 2**31 - 1
_SLUG_RE = re.compile(SLUG)
# A writer that never flushes must not grow without bound: past this many buffered rows `append` flushes
# by itself (about 60 MB of Arrow buffers).
DEFAULT_MAX_BUFFERED_ROWS = 2_000_000


def to_long(batch: ReadingBatch) -> pa.Table:
    """A batch in long format (`LONG_SCHEMA`): numeric measurements first, then text ones, each in the
    batch's row order. Absent values (NaN, None) produce no row. One NumPy/Arrow operation per
    measurement, none per row."""
    device_num = np.asarray(batch.device_num)
    if device_num.size and (int(device_num.min()) < 0 or int(device_num.max()) > INT32_MAX):
        raise ValueError(f"device_num outside int32 in a {batch.device_type} batch")
    device_num = device_num.astype(np.int32, copy=False)
    # Epoch seconds in float64 carry ~0.2 µs of resolution today, so rounding to µs loses nothing real.
    ts_us = np.rint(np.asarray(batch.ts, dtype=np.float64) * 1e6).astype(np.int64)

    names: list[str] = []
    counts: list[int] = []
    nums: list[np.ndarray] = []
    stamps: list[np.ndarray] = []
    numbers: list[np.ndarray] = []
    for name, column in batch.values.items():
        column = np.asarray(column, dtype=np.float64)
        present = ~np.isnan(column)
        if present.all():
            nums.append(device_num)
            stamps.append(ts_us)
            numbers.append(column)
        else:
            rows = np.flatnonzero(present)
            nums.append(device_num[rows])
            stamps.append(ts_us[rows])
            numbers.append(column[rows])
        names.append(name)
        counts.append(int(numbers[-1].shape[0]))

    texts: list[pa.Array] = []
    for name, strings in batch.texts.items():
        column = pa.array(strings, pa.string()) if not isinstance(strings, pa.Array) else strings
        present = column.is_valid().to_numpy(zero_copy_only=False)
        rows = np.flatnonzero(present)
        nums.append(device_num[rows])
        stamps.append(ts_us[rows])
        texts.append(column.filter(pa.array(present)) if rows.size != len(column) else column)
        names.append(name)
        counts.append(int(rows.size))

    number_rows = sum(int(a.shape[0]) for a in numbers)
    text_rows = sum(len(a) for a in texts)
    total = number_rows + text_rows
    codes = np.repeat(np.arange(len(names), dtype=np.int32), counts)
    measurement = pa.DictionaryArray.from_arrays(pa.array(codes, pa.int32()), pa.array(names, pa.string()))
    ts = pa.array(np.concatenate(stamps) if stamps else np.empty(0, np.int64), pa.int64()).cast(UTC_MICROS)
    nums_array = pa.array(np.concatenate(nums) if nums else np.empty(0, np.int32), pa.int32())
    number_array = np.concatenate(numbers) if numbers else np.empty(0, np.float64)
    if text_rows:
        value = pa.concat_arrays([pa.array(number_array, pa.float64()), pa.nulls(text_rows, pa.float64())])
        text = pa.concat_arrays([pa.nulls(number_rows, pa.string()), *texts])
    else:
        value = pa.array(number_array, pa.float64())
        text = pa.nulls(total, pa.string())
    return pa.Table.from_arrays([ts, nums_array, measurement, value, text], schema=LONG_SCHEMA)


def _long_rows(batch: ReadingBatch) -> int:
    """The rows `to_long` makes of a batch: its present values."""
    numbers = sum(int(np.count_nonzero(~np.isnan(np.asarray(c, np.float64)))) for c in batch.values.values())
    texts = sum(len(c) - (c.null_count if isinstance(c, pa.Array) else c.count(None))
                for c in batch.texts.values())
    return numbers + texts


class TelemetryLake(ABC):
    """Where accepted readings are kept. Thread-safe: `append` may run on the ingest thread while `flush`
    and `query` run on others.

    Subclasses implement `_write` (make one flush's tables durable, all or nothing), `_query` and
    `_close`; buffering, the flush protocol and export live here.
    """

    def __init__(self, *, max_buffered_rows: int = DEFAULT_MAX_BUFFERED_ROWS) -> None:
        self.max_buffered_rows = max_buffered_rows
        self._pending: dict[str, list[ReadingBatch]] = {}
        self._pending_rows = 0
        self._buffer_lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._closed = False

    # ------------------------------------------------------------------ writing

    def append(self, batch: ReadingBatch) -> None:
        """Buffer a batch's readings. They become durable and queryable at `flush()`, which turns all
        buffered batches of a type into one long table: per-batch conversion would cost the same few
        array operations for every small batch the ingest hands over."""
        self._check_open()
        if not _SLUG_RE.match(batch.device_type):
            # Refused now: buffered, it would make every later flush fail.
            raise ValueError(f"device type {batch.device_type!r} is not a device type slug")
        if not len(batch):
            return
        rows = _long_rows(batch)
        if not rows:
            return
        with self._buffer_lock:
            self._pending.setdefault(batch.device_type, []).append(batch)
            self._pending_rows += rows
            overflowing = self._pending_rows >= self.max_buffered_rows
        if overflowing:
            log.debug("lake buffer reached %d rows: flushing", self.max_buffered_rows)
            self.flush()

    @property
    def buffered_rows(self) -> int:
        """Rows appended and not flushed yet."""
        return self._pending_rows

    def flush(self) -> int:
        """Make every row appended so far durable and queryable; returns how many rows that was.

        All or nothing: if writing fails, the rows go back to the buffer (ahead of rows appended since)
        and the error propagates, so a later flush retries them."""
        self._check_open()
        with self._flush_lock:
            with self._buffer_lock:
                pending, self._pending = self._pending, {}
                rows, self._pending_rows = self._pending_rows, 0
            if not rows:
                return 0
            try:
                tables = {device_type: to_long(ReadingBatch.concat(batches))
                          for device_type, batches in pending.items()}
                tables = {device_type: table for device_type, table in tables.items() if table.num_rows}
                if tables:
                    self._write(tables)
            except BaseException:
                with self._buffer_lock:
                    for device_type, batches in pending.items():
                        self._pending[device_type] = batches + self._pending.get(device_type, [])
                    self._pending_rows += rows
                raise
            log.debug("lake flushed %d rows of %d device types", rows, len(pending))
            return rows

    @abstractmethod
    def _write(self, tables: dict[str, pa.Table]) -> None:
        """Store one flush: device type → long table (`LONG_SCHEMA`, contiguous). Durable when it returns;
        on failure nothing of it may become visible."""

    # ------------------------------------------------------------------ reading

    def query(self, query: TelemetryQuery) -> pa.Table:
        """Answer a query over flushed rows (see `TelemetryQuery` for the result's columns and order)."""
        self._check_open()
        return self._query(query)

    @abstractmethod
    def _query(self, query: TelemetryQuery) -> pa.Table:
        """The query's result with exactly `query.result_schema()`, ordered as `TelemetryQuery` says."""

    def newest(self, since: datetime) -> tuple[np.ndarray, np.ndarray]:
        """Each device's newest stored timestamp since `since`: (device_num int64, epoch seconds float64).
        What an ingest pipeline resumes from after a restart, so readings the broker resends are known."""
        self._check_open()
        return self._newest(since)

    @abstractmethod
    def _newest(self, since: datetime) -> tuple[np.ndarray, np.ndarray]:
        """See `newest`."""

    def export(self, query: TelemetryQuery, path: str | Path, *, format: ExportFormat | None = None) -> int:
        """Write a query's result to a Parquet or CSV file (format from `format` or the file's suffix);
        returns the number of rows written. The file appears complete or not at all."""
        return export_table(self.query(query), Path(path), format=format)

    # ------------------------------------------------------------------ lifecycle

    def close(self, *, flush: bool = True) -> int:
        """Release the lake's resources, first flushing what is buffered unless `flush=False` (then the
        buffered rows are dropped). Returns the rows flushed. Closing twice is harmless; if the flush
        fails the lake stays open and the error propagates."""
        if self._closed:
            return 0
        flushed = 0
        if flush:
            # A failed flush leaves the lake open (and the rows buffered), so the caller may retry.
            flushed = self.flush()
        else:
            with self._buffer_lock:
                dropped, self._pending, self._pending_rows = self._pending_rows, {}, 0
            if dropped:
                log.warning("lake closed without flushing: %d buffered rows dropped", dropped)
        self._closed = True
        self._close()
        return flushed

    @abstractmethod
    def _close(self) -> None:
        """Release connections and other resources."""

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError(f"{type(self).__name__} is closed")

    def __enter__(self) -> Self:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.close(flush=kind is None)


POSTGRES_SCHEMES = ("postgresql://", "postgres://", "postgresql+psycopg://")


def default_lake_folder(home: Path) -> Path:
    """The embedded deployment's lake folder, `<home>/lake` (the telemetry table lives in `telemetry/`)."""
    return home / "lake"


def open_lake(url_or_path: str | Path = "", *, home: Path | None = None, **options: Any) -> TelemetryLake:
    """The lake a settings value names.

    - `""`: the embedded default, Parquet under `<home>/lake/telemetry/` (`home` defaults to the
      settings' home).
    - a folder path: Parquet under `<folder>/telemetry/` (the folder is the lake; `telemetry` its table).
    - `postgresql://…` (also `postgres://`, `postgresql+psycopg://`): the `telemetry` table there.

    `options` go to the implementation's constructor (e.g. `max_buffered_rows`, `schema`)."""
    target = str(url_or_path)
    if target.startswith(POSTGRES_SCHEMES):
        from citybrain.sensing.lake.postgres import PostgresLake

        return PostgresLake(target, **options)
    if "://" in target and not target.startswith("file://"):
        raise ValueError(f"unsupported telemetry lake {target!r}: use a folder or a postgresql:// URL")
    from citybrain.sensing.lake.parquet import ParquetLake

    if not target:
        if home is None:
            from citybrain.settings import get_settings

            home = get_settings().home
        folder = default_lake_folder(home)
    else:
        folder = Path(target.removeprefix("file://"))
    return ParquetLake(folder / "telemetry", **options)
