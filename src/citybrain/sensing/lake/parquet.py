"""The embedded telemetry lake: Parquet files on the local disk, queried with DuckDB.

Layout under the lake's root (the embedded default is `<home>/lake/telemetry/`), hive style:

```
day=2026-11-25/                          one folder per UTC day of the readings' `ts`
  device_type=air_quality/               one folder per device type (its slug)
    part-<ns>-<pid>-<n>-<token>.parquet  one file per flush of this process (zstd; columns ts,
                                         device_num, measurement, value, text — see base.LONG_SCHEMA)
    compact-<ns>-<pid>-<n>-<token>.parquet   what `compact(day)` merged the small files into
    .part-….tmp / .compact-….tmp         files being written (every reader ignores names starting
                                         with "." or "_")
    _compaction.json                     the journal of a compaction that has not finished
_locks/day=2026-11-25.lock               readers share it, a compaction's swap takes it alone
_locks/day=2026-11-25.compact.lock       one compaction of a day at a time
```

Writing: a flush writes each partition's rows to a temporary name, fsyncs it, then renames every file
into place and fsyncs the folders, so a reader sees a flush's file complete or not at all and a crash
loses nothing that `flush()` reported. File names carry the wall-clock nanoseconds, the process id, a
counter and a random token, so several writer processes may share one lake without ever colliding.

Reading: a query lists only the folders of the days its range touches and of its device type (partition
pruning by listing: other days' files are never opened, not even their footers), and hands that file
list to DuckDB's `read_parquet(…, hive_partitioning = true)`; within files, DuckDB skips row groups by
their `ts` / `device_num` statistics.

Compaction (`compact(day)`) merges a day's files per partition into one, sorted by (hour, device_num,
measurement, ts) so that, in big partitions, both "one device over a day" and "one type over an hour"
queries skip most row groups. It is atomic for every reader that goes through `ParquetLake`:

1. under the day's compaction lock (one compactor per day), list the partition's live files and write
   their merged rows to a temporary file (DuckDB streams it; memory stays bounded), check the row count,
   fsync;
2. write the journal `_compaction.json` (merged file + the files it replaces);
3. take the day's read lock exclusively — it waits for queries that already listed the day's files to
   finish reading them, so none of them loses a file under its feet (no gaps) — rename the merged file
   into place and delete the replaced ones, then release: a query that lists the folder afterwards sees
   the merged file only (no duplicates);
4. delete the journal.

A crash after step 3's rename leaves the journal: readers then ignore the files it names as replaced
(no duplicates even before recovery), and the next `compact` of that day (or `recover()`) finishes the
deletion; a crash before the rename leaves a temporary file that recovery deletes. Files flushed while
a compaction runs are not among its sources and stay as they are. Outside readers (a bare DuckDB glob
over the folders) do not take the locks and may briefly see both the merged and the small files.
Locks are `flock(2)`: one machine, local disk — not NFS or object storage.

Measured by `bench/lake.py` on this 2-core machine (10 M rows of 3 M devices, 1 M-row flushes): append +
flush 3.3–4.6 M rows/s, ≈ 12 bytes a row on disk; one device over a day (300 s buckets) ≈ 35 ms over
the day's 46 flush files, ≈ 20 ms once compacted; one type over an hour (60 s buckets, ≈ 80 k result
rows) ≈ 85–125 ms; compacting a 6.7 M-row day ≈ 5 s.
"""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import json
import logging
import os
import re
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from citybrain.sensing.devices.spec import SLUG
from citybrain.sensing.lake.base import DEFAULT_MAX_BUFFERED_ROWS, TelemetryLake
from citybrain.sensing.lake.query import TelemetryQuery, result_from_columns

log = logging.getLogger(__name__)

DAY_US = 86_400_000_000
JOURNAL = "_compaction.json"
LOCKS = "_locks"
COMPACTED_ROW_GROUP_ROWS = 122_880
# A flush never takes this long; an older temporary file of a flush is a crashed writer's leftover.
STALE_TEMPORARY_S = 3_600
_SLUG_RE = re.compile(SLUG)


@dataclass(frozen=True, slots=True)
class CompactionReport:
    """What `ParquetLake.compact` did to one day."""

    day: date
    partitions: int
    files_before: int
    files_after: int
    rows: int


class ParquetLake(TelemetryLake):
    """Telemetry as hive-partitioned Parquet files under `root` (see the module docstring for the layout,
    the write protocol and compaction). `durable=False` skips the fsyncs (tests, throw-away lakes)."""

    def __init__(self, root: str | Path, *, max_buffered_rows: int = DEFAULT_MAX_BUFFERED_ROWS,
                 durable: bool = True, duckdb_threads: int | None = None,
                 duckdb_memory_limit: str | None = None) -> None:
        super().__init__(max_buffered_rows=max_buffered_rows)
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.durable = durable
        self._token = uuid.uuid4().hex[:8]
        self._counter = itertools.count()
        self._duck = duckdb.connect(":memory:")
        # Files are never rewritten in place (every write has a new name), so cached footers stay true.
        self._duck.execute("SET parquet_metadata_cache = true")
        if duckdb_threads:
            self._duck.execute(f"SET threads = {int(duckdb_threads)}")
        if duckdb_memory_limit:
            self._duck.execute(f"SET memory_limit = {_quote(duckdb_memory_limit)}")
        self._duck_lock = threading.Lock()

    # ------------------------------------------------------------------ writing

    def _write(self, tables: dict[str, pa.Table]) -> None:
        staged: list[tuple[Path, Path]] = []
        created: set[Path] = set()
        try:
            for device_type, table in tables.items():
                if not _SLUG_RE.match(device_type):
                    raise ValueError(f"device type {device_type!r} is not a slug; it cannot name a partition")
                for day, rows in _split_by_day(table):
                    folder = self.partition(day, device_type)
                    if not folder.is_dir():
                        created.update(self._make_folder(folder))
                    name = self._file_name("part")
                    temporary = folder / f".{name}.tmp"
                    pq.write_table(rows, temporary, compression="zstd",
                                   use_dictionary=["measurement", "text"], write_statistics=True)
                    if self.durable:
                        _fsync(temporary)
                    staged.append((temporary, folder / name))
        except BaseException:
            for temporary, _ in staged:
                temporary.unlink(missing_ok=True)
            raise
        renamed: list[Path] = []
        try:
            for temporary, final in staged:
                os.rename(temporary, final)
                renamed.append(final)
        except BaseException:
            # All or nothing: the base class puts the rows back in the buffer, so a half-visible flush
            # must disappear again or its rows would be stored twice.
            for final in renamed:
                final.unlink(missing_ok=True)
            for temporary, _ in staged:
                temporary.unlink(missing_ok=True)
            raise
        if self.durable:
            for folder in sorted({final.parent for _, final in staged} | created, key=lambda p: len(p.parts)):
                _fsync(folder)

    def _make_folder(self, folder: Path) -> list[Path]:
        """Create a partition folder; returns the folders whose entries changed (to fsync them)."""
        missing = [p for p in [folder, *folder.parents] if not p.exists() and self.root in p.parents]
        folder.mkdir(parents=True, exist_ok=True)
        return [p.parent for p in missing]

    def _file_name(self, kind: str) -> str:
        return f"{kind}-{time.time_ns():019d}-{os.getpid()}-{next(self._counter):06d}-{self._token}.parquet"

    def partition(self, day: date, device_type: str) -> Path:
        """The folder holding one day's files of one device type."""
        return self.root / f"day={day.isoformat()}" / f"device_type={device_type}"

    # ------------------------------------------------------------------ reading

    def files_for(self, query: TelemetryQuery, *, days: list[date] | None = None) -> list[Path]:
        """The live files a query reads: only its days' folders (or those of `days`), only its device
        type's. Queries list them under the days' read locks, so compaction cannot change the list while
        DuckDB reads it."""
        files: list[Path] = []
        for day in query.days() if days is None else days:
            day_folder = self.root / f"day={day.isoformat()}"
            if query.device_type is not None:
                partitions = [day_folder / f"device_type={query.device_type}"]
            else:
                try:
                    partitions = sorted(p for p in day_folder.iterdir()
                                        if p.name.startswith("device_type=") and p.is_dir())
                except FileNotFoundError:
                    continue
            for folder in partitions:
                files += _live_files(folder)
        return files

    @contextlib.contextmanager
    def _reading(self, days: list[date]) -> Iterator[list[date]]:
        """Hold the shared read lock of every existing day among `days` (ascending, so no deadlock);
        yields those days. A day whose folder appears later is not read: no flush of it had finished
        when the query began."""
        with contextlib.ExitStack() as stack:
            locked = []
            for day in days:
                if (self.root / f"day={day.isoformat()}").is_dir():
                    stack.enter_context(self._day_lock(day, "read", exclusive=False))
                    locked.append(day)
            yield locked

    def _query(self, query: TelemetryQuery) -> pa.Table:
        with self._reading(query.days()) as days:
            files = self.files_for(query, days=days)
            if not files:
                return query.empty_result()
            sql = _select_sql(query, files)
            found = self._arrow(sql)
        return result_from_columns(query, {name: found.column(name) for name in found.column_names})

    @contextlib.contextmanager
    def _cursor(self) -> Iterator[Any]:
        """A DuckDB cursor of its own (the shared connection hands them out under a lock), closed after."""
        with self._duck_lock:
            cursor = self._duck.cursor()
        try:
            yield cursor
        finally:
            cursor.close()

    def _arrow(self, sql: str) -> pa.Table:
        with self._cursor() as cursor:
            return cursor.sql(sql).to_arrow_table()

    def _newest(self, since: datetime) -> tuple[np.ndarray, np.ndarray]:
        probe = TelemetryQuery(start=since, end=datetime.now(UTC) + timedelta(days=1), bucket_s=86_400)
        with self._reading(probe.days()) as days:
            files = self.files_for(probe, days=days)
            if not files:
                return np.empty(0, np.int64), np.empty(0, np.float64)
            listing = ", ".join(_quote(str(f)) for f in files)
            sql = (f"SELECT device_num, epoch_us(max(ts)) AS newest FROM read_parquet([{listing}]) "
                   f"WHERE ts >= {_timestamp(since)} GROUP BY device_num")
            found = self._arrow(sql)
        return (found.column("device_num").to_numpy().astype(np.int64),
                found.column("newest").to_numpy().astype(np.float64) / 1e6)

    # ------------------------------------------------------------------ compaction

    def days(self) -> list[date]:
        """The days that hold files, ascending."""
        found = []
        for folder in self.root.glob("day=*"):
            with contextlib.suppress(ValueError):
                found.append(date.fromisoformat(folder.name.removeprefix("day=")))
        return sorted(found)

    def compact(self, day: date | str) -> CompactionReport:
        """Merge each partition of `day` into one file sorted by (hour, device_num, measurement, ts);
        queries give the same answer before, during and after (see the module docstring). Meant for
        days that writers have moved past: compacting today works, but rewrites the whole day each time."""
        self._check_open()
        day = date.fromisoformat(day) if isinstance(day, str) else day
        day_folder = self.root / f"day={day.isoformat()}"
        partitions = files_before = files_after = rows = 0
        if not day_folder.is_dir():
            return CompactionReport(day, 0, 0, 0, 0)
        with self._day_lock(day, "compact", exclusive=True):
            for folder in sorted(p for p in day_folder.iterdir() if p.name.startswith("device_type=")):
                self._recover_partition(day, folder)
                sources = _live_files(folder)
                partitions += 1
                files_before += len(sources)
                if len(sources) < 2:
                    files_after += len(sources)
                    continue
                rows += self._merge(day, folder, sources)
                files_after += 1
        log.info("lake: compacted %s: %d files → %d in %d partitions (%d rows)", day, files_before,
                 files_after, partitions, rows)
        return CompactionReport(day, partitions, files_before, files_after, rows)

    def _merge(self, day: date, folder: Path, sources: list[Path]) -> int:
        expected = sum(pq.read_metadata(source).num_rows for source in sources)
        name = self._file_name("compact")
        temporary = folder / f".{name}.tmp"
        merged = folder / name
        source_list = ", ".join(_quote(str(s)) for s in sources)
        sql = (f"COPY (SELECT ts, device_num, measurement, value, text "
               f"FROM read_parquet([{source_list}], hive_partitioning = false) "
               f"ORDER BY date_trunc('hour', ts), device_num, measurement, ts, value, text) "
               f"TO {_quote(str(temporary))} (FORMAT parquet, COMPRESSION zstd, "
               f"ROW_GROUP_SIZE {COMPACTED_ROW_GROUP_ROWS})")
        try:
            with self._cursor() as cursor:
                cursor.execute("SET TimeZone = 'UTC'")  # date_trunc('hour') of a timestamptz follows it
                cursor.execute(sql)
            written = pq.read_metadata(temporary).num_rows
            if written != expected:
                raise RuntimeError(f"compaction of {folder} wrote {written} rows instead of {expected}")
            if self.durable:
                _fsync(temporary)
            journal = {"merged": name, "temporary": temporary.name, "replaces": [s.name for s in sources]}
            _write_json_atomically(folder / JOURNAL, journal, durable=self.durable)
        except BaseException:
            temporary.unlink(missing_ok=True)
            (folder / JOURNAL).unlink(missing_ok=True)
            raise
        with self._day_lock(day, "read", exclusive=True):
            os.rename(temporary, merged)  # the commit point
            for source in sources:
                source.unlink(missing_ok=True)
            if self.durable:
                _fsync(folder)
        (folder / JOURNAL).unlink(missing_ok=True)
        if self.durable:
            _fsync(folder)
        return written

    def recover(self) -> None:
        """Finish or undo what crashed compactions and flushes left behind, on every day."""
        for day in self.days():
            with self._day_lock(day, "compact", exclusive=True):
                for folder in (self.root / f"day={day.isoformat()}").glob("device_type=*"):
                    self._recover_partition(day, folder)

    def _recover_partition(self, day: date, folder: Path) -> None:
        """Under the day's compaction lock: roll an interrupted compaction forward (its merged file is in
        place) or back (it is not), and delete temporary files nobody is writing any more."""
        journal_path = folder / JOURNAL
        if journal_path.exists():
            journal = json.loads(journal_path.read_text())
            if (folder / journal["merged"]).exists():
                with self._day_lock(day, "read", exclusive=True):
                    for name in journal["replaces"]:
                        (folder / name).unlink(missing_ok=True)
                log.warning("lake: finished an interrupted compaction of %s", folder)
            else:
                (folder / journal["temporary"]).unlink(missing_ok=True)
                log.warning("lake: undid an interrupted compaction of %s", folder)
            journal_path.unlink()
        now = time.time()
        for entry in os.scandir(folder):
            if not entry.name.endswith(".tmp"):
                continue
            # No compaction of this day runs (we hold its lock); a flush's file may still be in the works.
            ours = entry.name.startswith((".compact-", f".{JOURNAL}"))
            if ours or now - entry.stat().st_mtime > STALE_TEMPORARY_S:
                os.unlink(entry.path)

    @contextlib.contextmanager
    def _day_lock(self, day: date, kind: str, *, exclusive: bool) -> Iterator[None]:
        folder = self.root / LOCKS
        folder.mkdir(exist_ok=True)
        suffix = "" if kind == "read" else f".{kind}"
        descriptor = os.open(folder / f"day={day.isoformat()}{suffix}.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
            yield
        finally:
            os.close(descriptor)  # closing the descriptor releases the lock

    def _close(self) -> None:
        self._duck.close()


# ---------------------------------------------------------------------- helpers


def _split_by_day(table: pa.Table) -> Iterator[tuple[date, pa.Table]]:
    """A flush's rows per UTC day of their `ts`, each in the flush's row order."""
    stamps = table.column("ts").cast(pa.int64()).to_numpy()
    days = stamps // DAY_US
    first, last = int(days.min()), int(days.max())
    if first == last:
        yield _day(first), table
        return
    order = np.argsort(days, kind="stable")
    ordered = table.take(pa.array(order))
    values, starts = np.unique(days[order], return_index=True)
    ends = [*starts[1:].tolist(), len(order)]
    for value, start, end in zip(values.tolist(), starts.tolist(), ends, strict=True):
        yield _day(value), ordered.slice(start, end - start)


def _day(days_since_epoch: int) -> date:
    return date(1970, 1, 1) + timedelta(days=days_since_epoch)


def _live_files(folder: Path) -> list[Path]:
    """The partition's readable files: complete Parquet files, minus those a finished-but-not-cleaned-up
    compaction replaced."""
    try:
        names = {entry.name for entry in os.scandir(folder)}
    except FileNotFoundError:
        return []
    live = {n for n in names if n.endswith(".parquet") and not n.startswith((".", "_"))}
    if JOURNAL in names:
        try:
            journal = json.loads((folder / JOURNAL).read_text())
        except (FileNotFoundError, ValueError):
            journal = None  # removed (or being replaced) between listing and reading: nothing to hide
        if journal and journal["merged"] in live:
            live -= set(journal["replaces"])
    return [folder / name for name in sorted(live)]


def _select_sql(query: TelemetryQuery, files: list[Path]) -> str:
    """The DuckDB statement answering `query` over `files` (every value inlined as a literal: the query
    validated them, and literals let DuckDB prune row groups by statistics)."""
    file_list = ", ".join(_quote(str(f)) for f in files)
    source = (f"read_parquet([{file_list}], hive_partitioning = true, "
              f"hive_types = {{'day': DATE, 'device_type': VARCHAR}})")
    conditions = [f"ts >= {_timestamp(query.start)}", f"ts < {_timestamp(query.end)}"]
    if query.device_type is not None:
        conditions.append(f"device_type = {_quote(query.device_type)}")
    if query.device_nums is not None:
        conditions.append(f"device_num IN ({', '.join(str(int(n)) for n in query.device_nums)})")
    if query.measurements is not None:
        conditions.append(f"measurement IN ({', '.join(_quote(m) for m in query.measurements)})")
    where = " AND ".join(conditions)
    if query.bucket_s is None:
        return (f"SELECT epoch_us(ts) AS ts, device_num, measurement, value, text FROM {source} "
                f"WHERE {where} ORDER BY ts, device_num, measurement, value, text LIMIT {int(query.limit)}")
    width = int(query.bucket_s) * 1_000_000
    aggregates = []
    for name in query.aggregates:
        if name == "count":
            aggregates.append("count(*) AS count")
        elif name == "last":
            # Both from one row: the latest ts, on a tie the largest value, then the largest text (nulls
            # lowest), as PostgreSQL's ORDER BY ts DESC, value DESC NULLS LAST, text DESC NULLS LAST.
            # arg_max_null keeps the null a text row has for its value (and a numeric row for its text).
            latest = "(us, coalesce(value, '-infinity'::DOUBLE), coalesce(text, ''))"
            aggregates.append(f"arg_max_null(value, {latest}) AS last")
            aggregates.append(f"arg_max_null(text, {latest}) AS last_text")
        else:
            aggregates.append(f"{name}(value) AS {name}")
    # Floor division that stays right before 1970 (DuckDB's % keeps the dividend's sign).
    bucket = f"us - (((us % {width}) + {width}) % {width})"
    return (f"WITH selected AS (SELECT epoch_us(ts) AS us, device_num, measurement, value, text "
            f"FROM {source} WHERE {where}) "
            f"SELECT {bucket} AS bucket, device_num, measurement, {', '.join(aggregates)} FROM selected "
            f"GROUP BY ALL ORDER BY bucket, device_num, measurement LIMIT {int(query.limit)}")


def _timestamp(moment: datetime) -> str:
    return f"TIMESTAMPTZ '{moment.astimezone(UTC).strftime('%Y-%m-%d %H:%M:%S.%f')}+00'"


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _fsync(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _write_json_atomically(path: Path, content: object, *, durable: bool) -> None:
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    temporary.write_text(json.dumps(content))
    if durable:
        _fsync(temporary)
    os.rename(temporary, path)
    if durable:
        _fsync(path.parent)
