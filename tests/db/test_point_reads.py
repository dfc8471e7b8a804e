"""Point readers on both backends: the right row for every key under concurrency, and, on PostgreSQL, errors
that reach only their own callers, lost connections that are replaced, callers that go away, and a clean
stop."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
import sqlalchemy as sa

from citybrain.db.migrate import upgrade
from citybrain.db.point_reads import PointReader, PostgresPointReader, point_reader_for
from citybrain.db.session import create_db_engine
from citybrain.hub.entities.models import EntityRow

SQL = "SELECT id, type, org_unit, location, attrs, created_at, modified_at FROM entities WHERE id = ?"
BASE = datetime(2026, 11, 25, 8, 0, 0, 123456, tzinfo=UTC)
N = 300
APPLICATION = "citybrain-point-reads-test"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def entity_id(i: int) -> str:
    return f"urn:ngsi-ld:Streetlight:T-{i:04d}"


def expected(i: int) -> tuple:
    location = None if i % 7 == 0 else {"type": "Point", "coordinates": [120.1 + i / 1000, 30.2]}
    attrs = {"status": {"type": "Property", "value": "ok" if i % 2 else "defective", "n": i},
             "tags": {"type": "Property", "value": ["a", {"b": [i, None, True]}]}}
    return (entity_id(i), "Streetlight", f"unit-{i % 5}", location, attrs,
            BASE + timedelta(seconds=i), BASE + timedelta(seconds=i, microseconds=7))


def _insert(engine: sa.Engine) -> None:
    rows = []
    for i in range(N):
        eid, kind, org, location, attrs, created, modified = expected(i)
        rows.append({"id": eid, "type": kind, "org_unit": org, "location": location, "attrs": attrs,
                     "created_at": created, "modified_at": modified, "version": 1 + i % 3})
    with engine.begin() as conn:
        conn.execute(sa.delete(EntityRow.__table__))
        conn.execute(sa.insert(EntityRow.__table__), rows)


@pytest.fixture
def engine(db_url: str) -> Iterator[sa.Engine]:
    engine = create_db_engine(db_url)
    upgrade(engine)
    _insert(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def pg_engine(postgres_url: str) -> Iterator[sa.Engine]:
    engine = create_db_engine(postgres_url)
    _insert(engine)
    yield engine
    engine.dispose()


def _pg_reader(engine: sa.Engine, **kwargs) -> PostgresPointReader:
    # Its own application name, so that terminating its connections touches nothing else on the server.
    url = engine.url.set(drivername="postgresql", query={"application_name": APPLICATION})
    return PostgresPointReader(url.render_as_string(hide_password=False), **kwargs)


async def _read(reader: PointReader, key: str, *, times: bool = True):
    return await reader.fetch_one(SQL, (key,), json_columns=(3, 4), time_columns=(5, 6) if times else ())


async def _backends(engine: sa.Engine, *, terminate: bool = True) -> int:
    """The reader's server processes (terminated first if asked)."""
    conninfo = engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
    what = "pg_terminate_backend(pid)" if terminate else "pid"
    async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as admin:
        cursor = await admin.execute(f"SELECT {what} FROM pg_stat_activity WHERE application_name = %s "
                                     "AND datname = current_database()", (APPLICATION,))
        return len(await cursor.fetchall())


# ------------------------------------------------------------------------------------------ both backends


@pytest.mark.anyio
async def test_concurrent_reads_of_different_and_identical_keys(engine):
    reader = point_reader_for(engine)
    await reader.start()
    try:
        rng = random.Random(7)
        keys = [rng.randrange(N + 50) for _ in range(2000)]  # repeats, and some ids that do not exist
        keys += [3] * 100  # many callers of one key at once
        rows = await asyncio.gather(*(_read(reader, entity_id(k)) for k in keys))
        for k, row in zip(keys, rows, strict=True):
            assert row == (expected(k) if k < N else None)
    finally:
        await reader.stop()


@pytest.mark.anyio
async def test_callers_of_one_key_get_rows_of_their_own(engine):
    reader = point_reader_for(engine)
    await reader.start()
    try:
        first, second = await asyncio.gather(_read(reader, entity_id(8)), _read(reader, entity_id(8)))
        first[4]["status"]["value"] = "changed by the first caller"
        assert second == expected(8)
    finally:
        await reader.stop()


@pytest.mark.anyio
async def test_missing_key_is_none_and_columns_decode(engine):
    reader = point_reader_for(engine)
    await reader.start()
    try:
        assert await _read(reader, "urn:ngsi-ld:Streetlight:nope") is None
        row = await _read(reader, entity_id(14))
        assert row == expected(14)
        assert row[3] is None  # a NULL JSON column stays None
        assert isinstance(row[4], dict) and row[4]["tags"]["value"][1] == {"b": [14, None, True]}
        assert row[5].utcoffset() == timedelta(0) and row[6] - row[5] == timedelta(microseconds=7)
    finally:
        await reader.stop()


@pytest.mark.anyio
async def test_statements_of_other_shapes_and_key_types(engine):
    reader = point_reader_for(engine)
    await reader.start()
    try:
        by_version = "SELECT id FROM entities WHERE version = ? ORDER BY id LIMIT 1"
        by_two = "SELECT id, type FROM entities WHERE org_unit = ? AND id = ?"
        results = await asyncio.gather(
            *(reader.fetch_one(by_version, (v,)) for v in (1, 2, 3, 9)),
            *(reader.fetch_one(by_two, (f"unit-{i % 5}", entity_id(i))) for i in range(40)),
            *(reader.fetch_one(by_two, ("unit-x", entity_id(i))) for i in range(5)))
        assert results[:4] == [(entity_id(0),), (entity_id(1),), (entity_id(2),), None]
        assert results[4:44] == [(entity_id(i), "Streetlight") for i in range(40)]
        assert results[44:] == [None] * 5
    finally:
        await reader.stop()


# ---------------------------------------------------------------------------------------------- PostgreSQL


@pytest.mark.integration
@pytest.mark.anyio
async def test_only_key_columns_compared_exactly_are_coalesced(pg_engine):
    reader = _pg_reader(pg_engine)
    await reader.start()
    try:
        by_version = "SELECT id, version FROM entities WHERE version = ?"  # the shape, but an integer key
        rows = await asyncio.gather(*(reader.fetch_one(by_version, (str(v),)) for v in (1, 2, 3, 9)))
        assert [r and r[1] for r in rows] == [1, 2, 3, None]  # '1' matches 1: one query per key, as written
        await asyncio.gather(*(_read(reader, entity_id(i)) for i in range(20)))
        assert reader._statements[SQL].batch_sql is not None
        assert reader._statements[by_version].batch_sql is None
    finally:
        await reader.stop()


@pytest.mark.integration
@pytest.mark.anyio
async def test_a_failing_statement_raises_for_its_callers_only(pg_engine):
    reader = _pg_reader(pg_engine)
    await reader.start()
    try:
        bad_column = "SELECT id, no_such_column FROM entities WHERE id = ?"
        results = await asyncio.gather(
            *(_read(reader, entity_id(i)) for i in range(50)),
            _read(reader, "urn:bad\x00key"),  # refused for this key alone, in the middle of a batch
            *(reader.fetch_one(bad_column, (entity_id(i),)) for i in range(5)),
            reader.fetch_one("SELECT id FROM no_such_table WHERE id = ?", ("x",)),
            reader.fetch_one("SELEC nonsense", ()),
            *(_read(reader, entity_id(i)) for i in range(50, 100)),
            return_exceptions=True)
        assert results[:50] == [expected(i) for i in range(50)]
        assert isinstance(results[50], psycopg.DataError)
        assert all(isinstance(r, psycopg.errors.UndefinedColumn) for r in results[51:56])
        assert isinstance(results[56], psycopg.errors.UndefinedTable)
        assert isinstance(results[57], psycopg.errors.SyntaxError)
        assert results[58:] == [expected(i) for i in range(50, 100)]
        assert await _read(reader, entity_id(1)) == expected(1)
    finally:
        await reader.stop()


@pytest.mark.integration
@pytest.mark.anyio
async def test_recovers_after_its_connections_are_killed(pg_engine):
    reader = _pg_reader(pg_engine)
    await reader.start()
    try:
        assert await _read(reader, entity_id(1)) == expected(1)
        assert await _backends(pg_engine) == 2  # idle connections, closed under the reader
        await asyncio.sleep(0.1)
        # A worker finds its connection closed before sending, so the statement still has its retry when
        # the new connection is killed in the middle of it.
        sleeping = asyncio.ensure_future(reader.fetch_one("SELECT pg_sleep(?), 'slept'", (0.5,)))
        await asyncio.sleep(0.2)
        assert await _backends(pg_engine) == 1
        assert (await asyncio.wait_for(sleeping, 5))[1] == "slept"
        rows = await asyncio.gather(*(_read(reader, entity_id(i)) for i in range(200)))
        assert rows == [expected(i) for i in range(200)]
        assert await _backends(pg_engine, terminate=False) == 2  # both replaced
    finally:
        await reader.stop()


@pytest.mark.integration
@pytest.mark.anyio
async def test_a_caller_that_goes_away_leaves_the_others_served(pg_engine):
    reader = _pg_reader(pg_engine, connections=1)
    await reader.start()
    try:
        slow = asyncio.ensure_future(reader.fetch_one("SELECT pg_sleep(?), 1", (0.3,)))
        await asyncio.sleep(0.05)
        # These queue behind the slow statement on the one connection; one of two identical callers leaves.
        leaving = asyncio.ensure_future(_read(reader, entity_id(5)))
        staying = asyncio.ensure_future(_read(reader, entity_id(5)))
        others = [asyncio.ensure_future(_read(reader, entity_id(i))) for i in range(10, 20)]
        await asyncio.sleep(0.05)
        leaving.cancel()
        slow.cancel()
        with pytest.raises(asyncio.CancelledError):
            await slow
        with pytest.raises(asyncio.CancelledError):
            await leaving
        assert await asyncio.wait_for(staying, 5) == expected(5)
        assert await asyncio.gather(*others) == [expected(i) for i in range(10, 20)]
        assert await _read(reader, entity_id(1)) == expected(1)
        assert await _backends(pg_engine, terminate=False) == 1  # the connection was kept
    finally:
        await reader.stop()


@pytest.mark.integration
@pytest.mark.anyio
async def test_stop_fails_waiting_callers_and_closes_every_connection(pg_engine):
    reader = _pg_reader(pg_engine)
    await reader.start()
    assert await _read(reader, entity_id(1)) == expected(1)
    busy = [asyncio.ensure_future(reader.fetch_one("SELECT pg_sleep(?), 1", (5,))) for _ in range(2)]
    queued = asyncio.ensure_future(_read(reader, entity_id(2)))
    await asyncio.sleep(0.1)
    await asyncio.wait_for(reader.stop(), 5)
    for waiting in (*busy, queued):
        with pytest.raises(RuntimeError, match="stopped"):
            await waiting
    with pytest.raises(RuntimeError, match="not started"):
        await _read(reader, entity_id(1))
    for _ in range(50):  # the server notices closed sockets a moment later
        if await _backends(pg_engine, terminate=False) == 0:
            break
        await asyncio.sleep(0.05)
    assert await _backends(pg_engine, terminate=False) == 0
    await reader.stop()  # a second stop is harmless
    await reader.start()  # and the reader can start again
    try:
        assert await _read(reader, entity_id(3)) == expected(3)
    finally:
        await reader.stop()


@pytest.mark.integration
@pytest.mark.anyio
async def test_start_fails_when_the_server_is_unreachable():
    reader = PostgresPointReader("postgresql://postgres@127.0.0.1:1/none?connect_timeout=2")
    with pytest.raises(psycopg.OperationalError):
        await reader.start()
    with pytest.raises(RuntimeError, match="not started"):
        await reader.fetch_one(SQL, ("x",))
