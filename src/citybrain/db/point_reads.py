"""Point reads (one row by primary key) on the driver, from the event loop.

The API's hottest read is one entity by id. Through the ORM and a worker thread it cost ~0.35 ms of Python
per request (session set-up, identity map, the thread hop) for a lookup SQLite answers in ~7 µs; that
capped single-entity GETs at under a thousand a second. These readers skip both:

- SQLite: one read-only connection per event-loop thread, queried inline. An indexed point read in WAL
  mode never waits for writers and takes microseconds, less than handing it to a thread would.
- PostgreSQL: an asyncio connection pool (psycopg_pool), so the loop awaits the round trip instead of
  blocking a thread on it.

Only statements that touch a bounded number of rows through an index belong here; anything that may scan
goes through the ORM in a worker thread (`Platform.run`).
"""

from __future__ import annotations

import abc
import logging
import sqlite3
import threading
from datetime import UTC, datetime
from typing import Any

import orjson
import sqlalchemy as sa

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


class PostgresPointReader(PointReader):
    def __init__(self, conninfo: str, *, max_size: int = 8) -> None:
        self.conninfo = conninfo
        self.max_size = max_size
        self._pool: Any = None

    async def start(self) -> None:
        from psycopg.types.json import set_json_loads
        from psycopg_pool import AsyncConnectionPool

        async def configure(connection: Any) -> None:
            set_json_loads(orjson.loads, connection)  # the stdlib decoder is several times slower
            await connection.set_autocommit(True)

        self._pool = AsyncConnectionPool(self.conninfo, min_size=1, max_size=self.max_size, open=False,
                                         configure=configure, name="citybrain-point-reads")
        await self._pool.open(wait=True, timeout=10)

    async def fetch_one(self, sql: str, params: tuple[Any, ...], *, json_columns: tuple[int, ...] = (),
                        time_columns: tuple[int, ...] = ()) -> tuple[Any, ...] | None:
        if self._pool is None:
            raise RuntimeError("the point reader is not started")
        async with self._pool.connection() as connection:
            cursor = await connection.execute(sql.replace("?", "%s"), params, prepare=True)
            return await cursor.fetchone()

    async def stop(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None


def point_reader_for(engine: sa.Engine) -> PointReader:
    url = engine.url
    if url.get_backend_name() == "sqlite":
        if not url.database or url.database == ":memory:":
            raise ValueError("point reads need a SQLite file, not an in-memory database")
        return SqlitePointReader(url.database)
    conninfo = url.set(drivername="postgresql").render_as_string(hide_password=False)
    return PostgresPointReader(conninfo)
