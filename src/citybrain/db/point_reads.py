"""Point reads (one row by primary key) on the driver, from the event loop.

The API's hottest read is one entity by id. Through the ORM and a worker thread it cost ~0.35 ms of Python
per request (session set-up, identity map, the thread hop) for a lookup SQLite answers in ~7 µs; that
capped single-entity GETs at under a thousand a second. These readers skip both:

- SQLite: one read-only connection per event-loop thread, queried inline. An indexed point read in WAL
  mode never waits for writers and takes microseconds, less than handing it to a thread would.
- PostgreSQL: two connections of the reader's own, awaited from the loop, with concurrent lookups of the
  same key column coalesced into one `= ANY` round trip (see `PostgresPointReader`).

Only statements that touch a bounded number of rows through an index belong here; anything that may scan
goes through the ORM in a worker thread (`Platform.run`).
"""

from __future__ import annotations

import abc
import asyncio
import collections
import copy
import logging
import re
import select
import sqlite3
import threading
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import orjson
import sqlalchemy as sa

if TYPE_CHECKING:
    from psycopg import AsyncConnection

log = logging.getLogger(__name__)


class PointReader(abc.ABC):
    """Runs short indexed SELECTs written with `?` placeholders. The caller names which columns hold JSON
    and which hold timestamps, so both come back as Python values on every backend."""

    @abc.abstractmethod
    async def start(self) -> None: ...

    @abc.abstractmethod
    async def stop(self) -> None: ...

    @abc.abstractmethod
    async def fetch_one(self, sql: str, params: tuple[Any, ...], *, json_columns: tuple[int, ...] = (),
                        time_columns: tuple[int, ...] = ()) -> tuple[Any, ...] | None: ...


class SqlitePointReader(PointReader):
    def __init__(self, path: str) -> None:
        self.path = path
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._lock = threading.Lock()

    async def start(self) -> None:
        pass

    def _connection(self) -> sqlite3.Connection:
        connection = getattr(self._local, "connection", None)
        if connection is None:
            connection = sqlite3.connect(self.path, timeout=30, check_same_thread=False)
            connection.execute("PRAGMA query_only=1")
            connection.execute("PRAGMA cache_size=-65536")
            self._local.connection = connection
            with self._lock:
                self._connections.append(connection)
        return connection

    async def fetch_one(self, sql: str, params: tuple[Any, ...], *, json_columns: tuple[int, ...] = (),
                        time_columns: tuple[int, ...] = ()) -> tuple[Any, ...] | None:
        row = self._connection().execute(sql, params).fetchone()
        if row is None or not (json_columns or time_columns):
            return row
        values = list(row)
        for index in json_columns:
            if values[index] is not None:
                values[index] = orjson.loads(values[index])
        for index in time_columns:  # SQLAlchemy keeps UTC as 'YYYY-MM-DD HH:MM:SS.ffffff' in SQLite
            if values[index] is not None:
                values[index] = datetime.fromisoformat(values[index]).replace(tzinfo=UTC)
        return tuple(values)

    async def stop(self) -> None:
        with self._lock:
            for connection in self._connections:
                connection.close()
            self._connections.clear()
        self._local = threading.local()


# Connections are few and fixed, each running one statement at a time. With lookups coalesced, one already
# keeps up with a worker process; the second is there so that one slow statement or lost connection does
# not stall every read. More would only split the batches, and each round trip costs the same Python
# however many keys it carries.
_CONNECTIONS = 2
_MAX_BATCH = 64  # keys per `= ANY` round trip: bounds what one slow batch holds up
_STATEMENT_CACHE = 256
_APPLICATION_NAME = "citybrain-point-reads"

# `SELECT <columns> FROM <table> WHERE <column> = ?` and nothing else: the only shape whose rewrite to
# `= ANY(%s)` returns, per key, exactly the row the statement would. Columns are plain (qualified)
# identifiers, so there are no aggregates, DISTINCT, joins, ORDER BY or LIMIT to change the meaning.
_IDENT = r'(?:"[^"]+"|[A-Za-z_]\w*)(?:\.(?:"[^"]+"|[A-Za-z_]\w*))*'
_SINGLE_KEY_LOOKUP = re.compile(
    rf"\s*SELECT\s+(?P<columns>{_IDENT}(?:\s*,\s*{_IDENT})*)\s+FROM\s+(?P<table>{_IDENT})"
    rf"\s+WHERE\s+(?P<key>{_IDENT})\s*=\s*\?\s*;?\s*", re.IGNORECASE)

# Coalescing relies on Python's `==` on the returned key naming the row PostgreSQL matched, which holds for
# text columns compared byte by byte; any other type or a nondeterministic collation keeps one round trip
# per key.
_KEY_COLUMN_TYPE = """
SELECT format_type(a.atttypid, NULL), coalesce(c.collisdeterministic, true)
FROM pg_attribute a LEFT JOIN pg_collation c ON c.oid = a.attcollation
WHERE a.attrelid = to_regclass(%s) AND a.attname = %s AND a.attnum > 0 AND NOT a.attisdropped
"""
_EXACT_KEY_TYPES = frozenset({"text", "character varying"})


class _Statement:
    """One SQL text as the reader runs it: as given (`?` → `%s`) and, for a single-key lookup, the
    `= ANY` form that answers many keys in one round trip (None once found not to be exact)."""

    __slots__ = ("batch_sql", "checked", "key_column", "source", "sql", "table")

    def __init__(self, sql: str) -> None:
        self.source = sql
        self.sql = sql.replace("?", "%s")
        self.batch_sql: str | None = None
        self.table = self.key_column = ""
        self.checked = True
        match = _SINGLE_KEY_LOOKUP.fullmatch(sql)
        if match is None:
            return
        columns = [c.strip() for c in match["columns"].split(",")]
        key = match["key"]
        name = key.rsplit(".", 1)[-1]
        self.table, self.key_column = match["table"], name[1:-1] if name.startswith('"') else name.lower()
        self.batch_sql = f"SELECT {key}, {', '.join(columns)} FROM {match['table']} WHERE {key} = ANY(%s)"
        self.checked = False


class _Lookup:
    """Callers waiting on one batchable statement, by key; identical keys share one answer."""

    __slots__ = ("statement", "waiters")

    def __init__(self, statement: _Statement) -> None:
        self.statement = statement
        self.waiters: dict[str, list[asyncio.Future[Any]]] = {}

    def live_keys(self) -> list[str]:  # keys someone still waits for (callers may have gone away)
        return [key for key, futures in self.waiters.items() if not all(f.done() for f in futures)]

    def fail(self, exc: BaseException) -> None:
        for futures in self.waiters.values():
            _fail(futures, exc)


class _Query:
    """One caller's statement that cannot be coalesced."""

    __slots__ = ("futures", "params", "statement")

    def __init__(self, statement: _Statement, params: tuple[Any, ...], future: asyncio.Future[Any]) -> None:
        self.statement, self.params, self.futures = statement, params, [future]

    def fail(self, exc: BaseException) -> None:
        _fail(self.futures, exc)


def _deliver(futures: list[asyncio.Future[Any]], value: Any) -> None:
    for future in futures:
        if not future.done():
            future.set_result(value)


def _deliver_row(futures: list[asyncio.Future[Any]], row: tuple[Any, ...] | None) -> None:
    """Callers of one key each get a row of their own, as if each had read it: decoded JSON is mutable, and
    one caller changing its entity must not change another's."""
    delivered = False
    for future in futures:
        if not future.done():
            future.set_result(copy.deepcopy(row) if delivered else row)
            delivered = True


def _fail(futures: list[asyncio.Future[Any]], exc: BaseException) -> None:
    for future in futures:
        if not future.done():
            future.set_exception(exc)


class PostgresPointReader(PointReader):
    """A few connections of its own, each owned by one worker task, instead of a pool: a pool checkout and
    return cost more Python than the query. Concurrent lookups of the same single-key statement wait in
    one `_Lookup` and go to the server as one `= ANY` statement, so under load a round trip answers many
    requests; at low load a lookup runs alone, as given, with one loop iteration of added latency.

    A statement that fails in a batch is retried key by key so the error reaches only the callers whose
    key causes it; a batch whose connection drops is retried once on a new connection (reads are
    idempotent). A caller that goes away only stops waiting: the statement finishes on its connection,
    which stays usable."""

    def __init__(self, conninfo: str, *, connections: int = _CONNECTIONS, max_batch: int = _MAX_BATCH) -> None:
        self.conninfo = conninfo
        self.connections = connections
        self.max_batch = max_batch
        self._connect_kwargs: dict[str, Any] = {}
        self._statements: dict[str, _Statement] = {}
        self._jobs: collections.deque[_Lookup | _Query] = collections.deque()
        self._open: dict[str, _Lookup] = {}  # per SQL, the lookup still taking keys
        self._idle: collections.deque[asyncio.Future[None]] = collections.deque()
        self._workers: list[asyncio.Task[None]] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def start(self) -> None:
        if self._workers is not None:
            return
        from psycopg.conninfo import conninfo_to_dict

        given = conninfo_to_dict(self.conninfo)
        # psycopg's default connect timeout is 130 s: far longer than a caller should wait for a read.
        defaults = {"application_name": _APPLICATION_NAME, "connect_timeout": 10}
        self._connect_kwargs = {k: v for k, v in defaults.items() if k not in given}
        self._loop = asyncio.get_running_loop()
        opened = await asyncio.gather(*(self._connect() for _ in range(self.connections)),
                                      return_exceptions=True)
        failures = [c for c in opened if isinstance(c, BaseException)]
        if failures:
            for connection in opened:
                if not isinstance(connection, BaseException):
                    await connection.close()
            raise failures[0]
        self._workers = [self._loop.create_task(self._serve(connection), name=f"point-reads-{i}")
                         for i, connection in enumerate(opened)]

    async def stop(self) -> None:
        workers, self._workers = self._workers, None
        if workers is None:
            return
        for worker in workers:
            worker.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
        stopped = RuntimeError("the point reader stopped")
        while self._jobs:
            self._jobs.popleft().fail(stopped)
        self._open.clear()
        self._idle.clear()

    async def fetch_one(self, sql: str, params: tuple[Any, ...], *, json_columns: tuple[int, ...] = (),
                        time_columns: tuple[int, ...] = ()) -> tuple[Any, ...] | None:
        # psycopg already decodes jsonb and timestamptz, so the column hints are not needed here.
        if self._workers is None or self._loop is None:
            raise RuntimeError("the point reader is not started")
        statement = self._statements.get(sql)
        if statement is None:
            statement = _Statement(sql)
            if len(self._statements) < _STATEMENT_CACHE:
                self._statements[sql] = statement
        future: asyncio.Future[Any] = self._loop.create_future()
        if statement.batch_sql is not None and len(params) == 1 and type(params[0]) is str:
            lookup = self._open.get(sql)
            if lookup is None:
                lookup = self._open[sql] = _Lookup(statement)
                self._jobs.append(lookup)
            waiting = lookup.waiters.get(params[0])
            if waiting is None:
                lookup.waiters[params[0]] = [future]
                if len(lookup.waiters) >= self.max_batch:
                    del self._open[sql]
            else:
                waiting.append(future)
        else:
            self._jobs.append(_Query(statement, params, future))
        self._wake()
        return await future

    # ------------------------------------------------------------------ workers

    def _wake(self) -> None:
        while self._idle:
            waiter = self._idle.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    async def _take(self) -> _Lookup | _Query:
        assert self._loop is not None
        while not self._jobs:
            waiter: asyncio.Future[None] = self._loop.create_future()
            self._idle.append(waiter)
            await waiter
        job = self._jobs.popleft()
        if type(job) is _Lookup and self._open.get(job.statement.source) is job:
            del self._open[job.statement.source]
        return job

    async def _serve(self, connection: AsyncConnection[Any] | None) -> None:
        job: _Lookup | _Query | None = None
        try:
            while True:
                job = await self._take()
                connection = await self._run(job, connection)
                job = None
        finally:
            if job is not None:
                job.fail(RuntimeError("the point reader stopped"))
            if connection is not None:
                await _close_quietly(connection)

    async def _run(self, job: _Lookup | _Query, connection: AsyncConnection[Any] | None,
                   ) -> AsyncConnection[Any] | None:
        """Runs one job and returns the connection to keep (None once it is lost)."""
        if connection is not None and _found_lost(connection):
            log.warning("point-read connection was closed by the server; reconnecting")
            await _close_quietly(connection)
            connection = None
        for attempt in range(2):
            if connection is None:
                try:
                    connection = await self._connect()
                except Exception as exc:  # noqa: BLE001 - the server is unreachable: tell these callers now
                    job.fail(exc)
                    return None
            try:
                await self._execute(job, connection)
                return connection
            except Exception as exc:  # noqa: BLE001 - a worker must outlive any one job's failure
                if not _usable(connection):
                    log.warning("point-read connection lost (%s); reconnecting", exc)
                    await _close_quietly(connection)
                    connection = None
                    if attempt == 0:
                        continue
                elif type(job) is _Lookup and len(job.live_keys()) > 1:
                    self._split(job)
                    return connection
                job.fail(exc)
                return connection
        return connection

    async def _execute(self, job: _Lookup | _Query, connection: AsyncConnection[Any]) -> None:
        statement = job.statement
        if type(job) is _Query:
            cursor = await connection.execute(statement.sql, job.params, prepare=True)
            _deliver(job.futures, await cursor.fetchone())
            return
        assert type(job) is _Lookup
        keys = job.live_keys()
        if not keys:
            return
        if len(keys) > 1 and not statement.checked:
            await self._check(statement, connection)
        if len(keys) == 1 or statement.batch_sql is None:
            if len(keys) > 1:
                self._split(job)
                return
            cursor = await connection.execute(statement.sql, (keys[0],), prepare=True)
            _deliver_row(job.waiters[keys[0]], await cursor.fetchone())
            return
        cursor = await connection.execute(statement.batch_sql, (keys,), prepare=True)
        found: dict[str, tuple[Any, ...]] = {}
        for row in await cursor.fetchall():
            found.setdefault(row[0], row[1:])
        waiters = job.waiters
        for key in keys:
            _deliver_row(waiters[key], found.get(key))

    def _split(self, job: _Lookup) -> None:
        """Requeues each key of a lookup on its own, first in line, so whatever fails fails alone."""
        parts = []
        for key in job.live_keys():
            part = _Lookup(job.statement)
            part.waiters[key] = job.waiters[key]
            parts.append(part)
        self._jobs.extendleft(reversed(parts))
        for _ in parts:
            self._wake()

    async def _check(self, statement: _Statement, connection: AsyncConnection[Any]) -> None:
        cursor = await connection.execute(_KEY_COLUMN_TYPE, (statement.table, statement.key_column))
        row = await cursor.fetchone()
        if row is None or row[0] not in _EXACT_KEY_TYPES or not row[1]:
            statement.batch_sql = None
        statement.checked = True

    async def _connect(self) -> AsyncConnection[Any]:
        import psycopg
        from psycopg.types.json import set_json_loads

        connection = await psycopg.AsyncConnection.connect(self.conninfo, autocommit=True,
                                                           **self._connect_kwargs)
        set_json_loads(orjson.loads, connection)  # the stdlib decoder is several times slower
        return connection


def _found_lost(connection: AsyncConnection[Any]) -> bool:
    """An idle connection has nothing to say, so a readable socket means the server most likely closed it
    (termination, restart). Finding that out before sending spares the caller a failed round trip and
    keeps the one retry for connections lost mid-statement."""
    import psycopg
    from psycopg import pq

    if connection.closed:
        return True
    pgconn = connection.pgconn
    # A termination arrives as an error message and then end-of-file, which libpq sees on its next read;
    # a notice or a parameter change also wakes the socket, and leaves it quiet once read.
    readable = select.poll()  # not select.select: a busy server may hold descriptors above FD_SETSIZE
    readable.register(pgconn.socket, select.POLLIN)
    for _ in range(3):
        if not readable.poll(0):
            return False
        try:
            pgconn.consume_input()
        except psycopg.Error:
            return True
        if pgconn.status != pq.ConnStatus.OK:
            return True
    return False


def _usable(connection: AsyncConnection[Any]) -> bool:
    from psycopg import pq

    return (not connection.closed and connection.pgconn.status == pq.ConnStatus.OK
            and connection.info.transaction_status == pq.TransactionStatus.IDLE)


async def _close_quietly(connection: AsyncConnection[Any]) -> None:
    try:
        await connection.close()
    except Exception:  # it is being thrown away because it is already broken
        log.debug("closing a lost point-read connection failed", exc_info=True)


def point_reader_for(engine: sa.Engine) -> PointReader:
    url = engine.url
    if url.get_backend_name() == "sqlite":
        if not url.database or url.database == ":memory:":
            raise ValueError("point reads need a SQLite file, not an in-memory database")
        return SqlitePointReader(url.database)
    conninfo = url.set(drivername="postgresql").render_as_string(hide_password=False)
    return PostgresPointReader(conninfo)
