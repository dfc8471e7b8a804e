"""The scaled-out telemetry lake: one PostgreSQL table, written by binary COPY.

```
telemetry (device_type text, device_num integer, measurement text, ts timestamptz,
           value double precision, text text)
  telemetry_device_ts       btree (device_num, ts)       "one device over a day"
  telemetry_type_ts_brin    brin (device_type, ts)       "one type over an hour"
```

The table and its indexes are created when missing (several processes may start at once: an advisory
lock serialises the DDL). A flush is one transaction: one binary COPY of the numeric rows, encoded with
NumPy straight into PostgreSQL's COPY BINARY wire format (a fixed-size record per (device type,
measurement) group, no Python object per row), and one COPY of the text rows through psycopg's
`write_row` with `set_types`.

Why these indexes. COPY rows/s measured on this 2-core machine (PostgreSQL 15, writer and server on the
same cores), first with one device type and 5 measurements in 1 M-row flushes into a table growing to
6 M rows, then with `bench/lake.py` (10 M rows of the seven built-in types, 1 M-row flushes):

| indexes                                                  | one type | bench/lake.py |
|----------------------------------------------------------|----------|---------------|
| none                                                     | ≈ 0.9 M  |               |
| brin                                                     | ≈ 0.75 M | ≈ 0.44 M      |
| btree (device_num, ts), rows in arrival order            | ≈ 0.14 M |               |
| btree (device_num, ts), each flush sorted by it          | ≈ 0.27 M |               |
| btree (device_num, ts), sorted, + brin                   | ≈ 0.24 M | ≈ 0.19 M      |
| btree (device_num, ts) + btree (device_type, ts), sorted | ≈ 0.09 M |               |

A device's readings over a day cannot be found without a device-first B-tree (a sequential scan of
millions of rows takes seconds; with it the bench's device-day query takes ≈ 2 ms), so it stays, and
each flush is sorted by (measurement, device_num, ts) before the COPY: neighbouring rows then land on
the same index leaf pages, which doubles the rate. A type's readings over an hour are served by a BRIN
index: telemetry arrives in time order, so block ranges have tight `ts` bounds, and it costs little to
maintain, where a second B-tree would cost more than half of what is left. Each flush summarises the
BRIN ranges it filled (otherwise every query reads them until autovacuum gets there).
`device_index=False` drops the B-tree for an ingest-heavy deployment (≈ 2.3× faster COPY; device
queries then use the BRIN index and filter a whole time range).
"""

from __future__ import annotations

import logging
import threading
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import psycopg
import pyarrow as pa
import pyarrow.compute as pc
from psycopg import sql

from citybrain.sensing.lake.base import DEFAULT_MAX_BUFFERED_ROWS, TelemetryLake
from citybrain.sensing.lake.query import TelemetryQuery, result_from_columns

log = logging.getLogger(__name__)

COLUMNS = ("device_type", "device_num", "measurement", "ts", "value", "text")
# `ts` goes out as a naive UTC datetime with the `timestamp` dumper: its binary form (µs since 2000-01-01)
# is exactly timestamptz's, and NumPy makes naive datetimes ~70× faster than Arrow makes aware ones.
COPY_TYPES = ["text", "int4", "text", "timestamp", "float8", "text"]
_PG_EPOCH_US = 946_684_800_000_000  # 2000-01-01T00:00:00Z, PostgreSQL's timestamp origin, in Unix µs
_SIGNATURE = b"PGCOPY\n\xff\r\n\x00" + (0).to_bytes(4, "big") + (0).to_bytes(4, "big")
_TRAILER = (-1).to_bytes(2, "big", signed=True)
# Rows per COPY BINARY chunk handed to psycopg: bounds the transient copy of the encoded records.
_CHUNK_ROWS = 262_144


def connection_url(url: str) -> str:
    """A libpq URL from the forms settings use (`postgresql+psycopg://` is SQLAlchemy's spelling)."""
    for prefix in ("postgresql+psycopg://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql://" + url.removeprefix(prefix)
    return url


class PostgresLake(TelemetryLake):
    """Telemetry in a PostgreSQL table (`schema`.`table`, default `telemetry` on the search path).

    One connection writes (flushes), another reads, so queries never wait behind a long COPY."""

    def __init__(self, url: str, *, schema: str | None = None, table: str = "telemetry",
                 device_index: bool = True, max_buffered_rows: int = DEFAULT_MAX_BUFFERED_ROWS,
                 connect_timeout_s: float = 10.0) -> None:
        super().__init__(max_buffered_rows=max_buffered_rows)
        self.url = connection_url(url)
        self.schema = schema
        self.table_name = table
        self.device_index = device_index
        self.connect_timeout_s = connect_timeout_s
        self.table = sql.Identifier(schema, table) if schema else sql.Identifier(table)
        brin = f"{table}_type_ts_brin"
        self._brin_index = sql.Identifier(brin)  # an index lives in its table's schema: never qualified
        self._brin_name = ".".join(_quoted(part) for part in ((schema, brin) if schema else (brin,)))
        self._writer: psycopg.Connection[Any] | None = None
        self._reader: psycopg.Connection[Any] | None = None
        self._reader_lock = threading.Lock()
        self.create_table()

    # ------------------------------------------------------------------ connections and DDL

    def _connect(self, *, autocommit: bool, options: str = "") -> psycopg.Connection[Any]:
        return psycopg.connect(self.url, autocommit=autocommit, connect_timeout=int(self.connect_timeout_s),
                               application_name="citybrain-lake", options=options)

    def _writer_connection(self) -> psycopg.Connection[Any]:
        if self._writer is None or self._writer.closed or self._writer.broken:
            self._writer = self._connect(autocommit=False)
        return self._writer

    def _reader_connection(self) -> psycopg.Connection[Any]:
        if self._reader is None or self._reader.closed or self._reader.broken:
            # Bucketed queries sort tens of thousands of rows: 4 MB of work_mem spills them to disk, and
            # JIT compilation costs more than it saves on queries this short.
            self._reader = self._connect(autocommit=True, options="-c jit=off -c work_mem=64MB")
        return self._reader

    def create_table(self) -> None:
        """Create the schema, table and indexes where missing (safe to race with other processes)."""
        name = self.table_name
        statements = []
        if self.schema:
            statements.append(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(self.schema)))
        statements.append(sql.SQL(
            "CREATE TABLE IF NOT EXISTS {} (device_type text NOT NULL, device_num integer NOT NULL, "
            "measurement text NOT NULL, ts timestamptz NOT NULL, value double precision, text text)"
        ).format(self.table))
        if self.device_index:
            statements.append(sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} (device_num, ts)").format(
                sql.Identifier(f"{name}_device_ts"), self.table))
        statements.append(sql.SQL(
            "CREATE INDEX IF NOT EXISTS {} ON {} USING brin (device_type, ts) WITH (autosummarize = on)"
        ).format(self._brin_index, self.table))
        connection = self._writer_connection()
        with connection.transaction(), connection.cursor() as cursor:
            # Concurrent CREATE … IF NOT EXISTS can still collide in the catalog; take turns.
            cursor.execute("SELECT pg_advisory_xact_lock(hashtext(%s))",
                           [f"citybrain.lake.{self.schema or ''}.{name}"])
            for statement in statements:
                cursor.execute(statement)

    # ------------------------------------------------------------------ writing

    def _write(self, tables: dict[str, pa.Table]) -> None:
        copy_sql = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(
            self.table, sql.SQL(", ").join(map(sql.Identifier, COLUMNS)))
        numeric = [chunk for device_type, table in tables.items()
                   for chunk in _numeric_records(device_type, table, by_device=self.device_index)]
        text_rows = [row for device_type, table in tables.items() for row in _text_rows(device_type, table)]
        connection = self._writer_connection()
        try:
            with connection.transaction(), connection.cursor() as cursor:
                if numeric:
                    with cursor.copy(copy_sql) as copy:
                        copy.write(_SIGNATURE)
                        for chunk in numeric:
                            copy.write(chunk)
                        copy.write(_TRAILER)
                if text_rows:
                    with cursor.copy(copy_sql) as copy:
                        copy.set_types(COPY_TYPES)
                        for row in text_rows:
                            copy.write_row(row)
        except psycopg.OperationalError:
            connection.close()  # reconnect at the next flush
            raise
        self._summarize(connection)

    def _summarize(self, connection: psycopg.Connection[Any]) -> None:
        """Summarise the BRIN block ranges this flush filled. Until a range is summarised, every query
        must read it (autosummarize only queues the work for autovacuum, a minute or more later); the
        flush's pages are still in memory, so doing it now is cheap. Failing here loses nothing."""
        try:
            with connection.transaction(), connection.cursor() as cursor:
                cursor.execute("SELECT brin_summarize_new_values(%s::regclass)", [self._brin_name])
        except psycopg.Error as error:
            log.warning("lake: summarising %s failed (%s); autovacuum will do it", self._brin_name, error)

    # ------------------------------------------------------------------ reading

    def _query(self, query: TelemetryQuery) -> pa.Table:
        statement, parameters = _select_sql(self.table, query)
        with self._reader_lock:
            connection = self._reader_connection()
            try:
                with connection.cursor(binary=True) as cursor:
                    cursor.execute(statement, parameters)
                    rows = cursor.fetchall()
                    names = [column.name for column in cursor.description or []]
            except psycopg.OperationalError:
                connection.close()
                raise
        if not rows:
            return query.empty_result()
        columns = dict(zip(names, zip(*rows, strict=True), strict=True))
        return result_from_columns(query, {name: list(values) for name, values in columns.items()})

    def _newest(self, since: datetime) -> tuple[np.ndarray, np.ndarray]:
        statement = sql.SQL("SELECT device_num, extract(epoch FROM max(ts))::float8 FROM {} "
                            "WHERE ts >= %s GROUP BY device_num").format(self.table)
        with self._reader_lock:
            connection = self._reader_connection()
            with connection.cursor() as cursor:
                cursor.execute(statement, (since,))
                rows = cursor.fetchall()
        if not rows:
            return np.empty(0, np.int64), np.empty(0, np.float64)
        nums, newest = zip(*rows, strict=True)
        return np.array(nums, np.int64), np.array(newest, np.float64)

    def _close(self) -> None:
        for connection in (self._writer, self._reader):
            if connection is not None and not connection.closed:
                connection.close()


def _quoted(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


# ---------------------------------------------------------------------- COPY BINARY encoding


def _record_dtype(device_type: bytes, measurement: bytes) -> np.dtype:
    """One COPY BINARY tuple of a numeric row: field count, then (length, big-endian bytes) per column;
    `text` is null (length -1)."""
    return np.dtype([
        ("fields", ">i2"),
        ("type_length", ">i4"), ("device_type", f"S{len(device_type)}"),
        ("num_length", ">i4"), ("device_num", ">i4"),
        ("measurement_length", ">i4"), ("measurement", f"S{len(measurement)}"),
        ("ts_length", ">i4"), ("ts", ">i8"),
        ("value_length", ">i4"), ("value", ">f8"),
        ("text_length", ">i4"),
    ])


def _numeric_records(device_type: str, table: pa.Table, *, by_device: bool) -> list[bytes]:
    """The table's numeric rows as COPY BINARY tuples grouped by measurement, in chunks of at most
    `_CHUNK_ROWS` rows; `by_device` sorts each group by (device_num, ts), so the B-tree on them is
    written in order."""
    value = table.column("value").combine_chunks()
    numeric = value.is_valid().to_numpy(zero_copy_only=False)
    if not numeric.any():
        return []
    measurement = table.column("measurement").combine_chunks()
    codes = measurement.indices.to_numpy(zero_copy_only=False)
    names = measurement.dictionary.to_pylist()
    nums = table.column("device_num").to_numpy()
    stamps = table.column("ts").cast(pa.int64()).to_numpy()
    values = value.to_numpy(zero_copy_only=False)
    rows = np.flatnonzero(numeric)
    if by_device:
        order = rows[np.lexsort((stamps[rows], nums[rows], codes[rows]))]
    else:
        order = rows[np.argsort(codes[rows], kind="stable")]
    sorted_codes = codes[order]
    bounds = np.searchsorted(sorted_codes, np.arange(len(names) + 1))
    type_bytes = device_type.encode()
    chunks: list[bytes] = []
    for code, name in enumerate(names):
        group = order[bounds[code]:bounds[code + 1]]
        if not group.size:
            continue
        name_bytes = name.encode()
        dtype = _record_dtype(type_bytes, name_bytes)
        for start in range(0, group.size, _CHUNK_ROWS):
            part = group[start:start + _CHUNK_ROWS]
            records = np.empty(part.size, dtype)
            records["fields"] = len(COLUMNS)
            records["type_length"] = len(type_bytes)
            records["device_type"] = type_bytes
            records["num_length"] = 4
            records["device_num"] = nums[part]
            records["measurement_length"] = len(name_bytes)
            records["measurement"] = name_bytes
            records["ts_length"] = 8
            records["ts"] = stamps[part] - _PG_EPOCH_US
            records["value_length"] = 8
            records["value"] = values[part]
            records["text_length"] = -1
            chunks.append(records.tobytes())
    return chunks


def _text_rows(device_type: str, table: pa.Table) -> list[tuple[Any, ...]]:
    """The table's text rows as Python tuples for `write_row` (text measurements are few and short)."""
    text = table.column("text").combine_chunks()
    present = text.is_valid()
    if not pc.any(present).as_py():
        return []
    rows = table.filter(present)
    stamps = rows.column("ts").cast(pa.int64()).to_numpy().astype("datetime64[us]").astype(object)
    return [(device_type, num, measurement, ts, None, value) for num, measurement, ts, value in zip(
        rows.column("device_num").to_pylist(), rows.column("measurement").to_pylist(),
        stamps.tolist(), rows.column("text").to_pylist(), strict=True)]


# ---------------------------------------------------------------------- queries


def _select_sql(table: sql.Identifier, query: TelemetryQuery) -> tuple[sql.Composed, dict[str, Any]]:
    """The statement answering `query`; text ordering in the "C" collation (byte order, as DuckDB)."""
    parameters: dict[str, Any] = {"start": query.start, "end": query.end, "limit": query.limit}
    conditions = [sql.SQL("ts >= %(start)s"), sql.SQL("ts < %(end)s")]
    if query.device_type is not None:
        conditions.append(sql.SQL("device_type = %(device_type)s"))
        parameters["device_type"] = query.device_type
    if query.device_nums is not None:
        conditions.append(sql.SQL("device_num = ANY(%(device_nums)s::int4[])"))
        parameters["device_nums"] = list(query.device_nums)
    if query.measurements is not None:
        conditions.append(sql.SQL("measurement = ANY(%(measurements)s::text[])"))
        parameters["measurements"] = list(query.measurements)
    where = sql.SQL(" AND ").join(conditions)
    if query.bucket_s is None:
        return sql.SQL(
            "SELECT (extract(epoch FROM ts) * 1000000)::int8 AS ts, device_num, measurement, value, text "
            "FROM {} WHERE {} "
            'ORDER BY 1, device_num, measurement COLLATE "C", value, text COLLATE "C" LIMIT %(limit)s'
        ).format(table, where), parameters
    parameters["width"] = timedelta(seconds=query.bucket_s)
    bin_expression = "date_bin(%(width)s::interval, ts, TIMESTAMPTZ '1970-01-01 00:00:00+00')"
    aggregates = []
    for name in query.aggregates:
        if name == "count":
            aggregates.append("count(*) AS count")
        elif name == "last":
            aggregates.append("max(value) FILTER (WHERE latest = 1) AS last")
            aggregates.append("max(text) FILTER (WHERE latest = 1) AS last_text")
        else:
            aggregates.append(f"{name}(value) AS {name}")
    if "last" in query.aggregates:
        # The bucket's latest row is ranked 1 by a window over the same order the grouping needs: one
        # sort in all, where array_agg(… ORDER BY …) would sort every group again (≈ 35 % slower).
        inner = (f"SELECT {bin_expression} AS bin, device_num, measurement COLLATE \"C\" AS measurement, "
                 f"value, text, row_number() OVER (PARTITION BY {bin_expression}, device_num, "
                 f"measurement COLLATE \"C\" ORDER BY ts DESC, value DESC NULLS LAST, "
                 f"text COLLATE \"C\" DESC NULLS LAST) AS latest FROM {{}} WHERE {{}}")
    else:
        inner = (f"SELECT {bin_expression} AS bin, device_num, measurement COLLATE \"C\" AS measurement, "
                 f"value, text FROM {{}} WHERE {{}}")
    # Grouping on the timestamptz bin and converting only the groups to epoch µs keeps numeric
    # arithmetic (extract returns numeric) off the per-row path.
    statement = (f"SELECT (extract(epoch FROM bin) * 1000000)::int8 AS bucket, device_num, measurement, "
                 f"{', '.join(aggregates)} FROM ({inner}) AS selected GROUP BY bin, device_num, measurement "
                 f"ORDER BY bin, device_num, measurement LIMIT %(limit)s")
    return sql.SQL(statement).format(table, where), parameters
