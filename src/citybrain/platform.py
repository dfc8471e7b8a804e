"""One running City Brain: settings, store, bus, clock, registries and background services.

The API app and the CLI both build a `Platform`; tests build one per backend. Nothing here runs at import.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Protocol, TypeVar

import anyio
from sqlalchemy.orm import Session

from citybrain.core.bus import Bus, create_bus
from citybrain.core.clock import Clock, SystemClock
from citybrain.core.events import EntityTypesChanged, OrgTreeChanged
from citybrain.db.migrate import upgrade
from citybrain.db.point_reads import PointReader, point_reader_for
from citybrain.db.session import (
    SqliteMaintenance,
    WriterQueue,
    create_db_engine,
    make_session_factory,
)
from citybrain.hub.entities.types import TypeRegistry
from citybrain.hub.org.tree import OrgTree
from citybrain.settings import Settings

log = logging.getLogger(__name__)
T = TypeVar("T")

# Called inside the write transaction with the changes it makes, so that work which must not be lost
# (subscription notifications) commits or rolls back together with the entities (transactional outbox).
ChangeHook = Callable[[Session, list[Any]], None]


class BackgroundService(Protocol):
    name: str

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


class Platform:
    def __init__(self, settings: Settings, *, clock: Clock | None = None, bus: Bus | None = None) -> None:
        self.settings = settings
        self.clock: Clock = clock or SystemClock()
        self.engine = create_db_engine(settings.database_url, pool_size=settings.store_concurrency)
        if self.engine.dialect.name == "postgresql":
            from sqlalchemy import event

            from citybrain.hub.entities.service import stage_entity_writes

            event.listen(self.engine, "connect", stage_entity_writes)
        self.sessions = make_session_factory(self.engine)
        self.point_reads: PointReader = point_reader_for(self.engine)
        self._sqlite = self.engine.dialect.name == "sqlite"
        self._writers = WriterQueue(self.engine.url.database) if self._sqlite else None
        self._maintenance = (SqliteMaintenance(self.engine.url.database, self._writers)
                             if self._writers is not None else None)
        self.bus: Bus = bus or create_bus(settings.bus, stream=settings.bus_stream)
        self.types = TypeRegistry()
        self.org_tree = OrgTree()
        self.change_hooks: list[ChangeHook] = []
        self.services: list[BackgroundService] = []
        self._store_slots: anyio.CapacityLimiter | None = None
        self._started = False
        self._unsubscribers: list[Callable[[], Any]] = []

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    # ------------------------------------------------------------------ lifecycle

    def migrate(self) -> tuple[str | None, str | None]:
        return upgrade(self.engine)

    def load_state(self) -> None:
        """Read the org tree and entity types into memory (after migrate)."""
        from citybrain.hub.entities import flows as entity_flows
        from citybrain.hub.org import service as org_service

        with self.session() as session:
            self.org_tree = org_service.load_tree(session)
        self.types = entity_flows.load_types(self)

    async def start(self) -> None:
        if self._started:
            return
        self._started = True
        await self.bus.start()
        await self.point_reads.start()
        if self._maintenance is not None:
            self._maintenance.start()
        # Plain (not group) subscriptions: with several API processes on a shared bus, each reloads its own.
        self._unsubscribers.append(await self.bus.subscribe(OrgTreeChanged, self._reload_tree))
        self._unsubscribers.append(await self.bus.subscribe(EntityTypesChanged, self._reload_types))
        from citybrain.hub import background

        self.services = background.services_for(self)
        for service in self.services:
            await service.start()
            log.info("started %s", service.name)

    async def stop(self) -> None:
        if not self._started:
            return
        self._started = False
        for service in reversed(self.services):
            try:
                await service.stop()
            except Exception:
                log.exception("stopping %s failed", service.name)
        for unsubscribe in self._unsubscribers:
            await unsubscribe()
        self._unsubscribers.clear()
        await self.point_reads.stop()
        if self._maintenance is not None:
            await anyio.to_thread.run_sync(self._maintenance.stop)
        await self.bus.stop()

    def dispose(self) -> None:
        self.engine.dispose()
        if self._writers is not None:
            self._writers.close()

    async def _reload_tree(self, _event: OrgTreeChanged) -> None:
        from citybrain.hub.org import service as org_service

        def load() -> OrgTree:
            with self.session() as session:
                return org_service.load_tree(session)

        self.org_tree = await anyio.to_thread.run_sync(load)

    async def _reload_types(self, _event: EntityTypesChanged) -> None:
        from citybrain.hub.entities import flows as entity_flows

        self.types = await anyio.to_thread.run_sync(entity_flows.load_types, self)

    # ------------------------------------------------------------------ data access

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A read session (no transaction kept open beyond the block)."""
        with self.sessions() as session:
            yield session

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """A write transaction: commits when the block ends, rolls back on any error."""
        if self._writers is None:
            with self.sessions() as session, session.begin():
                yield session
            return
        with self._writers.turn(), self.sessions() as session, session.begin():
            # Take SQLite's write lock before the first read (BEGIN IMMEDIATE). A deferred transaction reads
            # a snapshot another writer (thread or process) may change before this one writes, so an upsert
            # would diff against stale rows, or fail with SQLITE_BUSY_SNAPSHOT across processes.
            session.connection().exec_driver_sql("BEGIN IMMEDIATE")
            yield session
        if self._maintenance is not None:
            self._maintenance.committed()

    async def run(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        """Run blocking store work off the event loop, at most settings.store_concurrency at once (one pooled
        connection each)."""
        if self._store_slots is None:  # made on first use: a CapacityLimiter belongs to a running loop
            self._store_slots = anyio.CapacityLimiter(self.settings.store_concurrency)
        return await anyio.to_thread.run_sync(lambda: fn(*args, **kwargs), limiter=self._store_slots)
