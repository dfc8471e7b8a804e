"""The event bus contract and its in-process implementation.

Contract (checked by one test suite for every implementation):
- `publish(*events)` delivers each event to every plain subscriber of its type (or of all types), in
  publish order per subscriber;
- subscribers that share a `group` name split the events: each event reaches one member of the group;
- a handler that raises is logged and counted; it never stops the bus or other subscribers;
- `subscribe` returns an async unsubscribe callable;
- `drain()` waits until everything published so far has been handled (tests and shutdown use it).

The NATS JetStream implementation (`citybrain.core.nats_bus`) adds durability across restarts.
"""

from __future__ import annotations

import abc
import asyncio
import itertools
import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from citybrain.core.events import Event

log = logging.getLogger(__name__)

Handler = Callable[[Event], Awaitable[None] | None]
Unsubscribe = Callable[[], Awaitable[None]]


@dataclass
class BusStats:
    published: int = 0
    delivered: int = 0
    handler_errors: int = 0


class Bus(abc.ABC):
    """What every module talks to. Implementations: `InProcessBus` (default) and `NatsBus`."""

    stats: BusStats

    async def start(self) -> None:
        """Connect / start delivery. Idempotent."""

    async def stop(self) -> None:
        """Finish in-flight deliveries and disconnect. Idempotent."""

    @abc.abstractmethod
    async def publish(self, *events: Event) -> None:
        """Publish events; returns once the bus has accepted them (durably, for a durable bus)."""

    @abc.abstractmethod
    async def subscribe(
        self, event_type: type[Event] | None, handler: Handler, *, group: str | None = None
    ) -> Unsubscribe:
        """Call `handler` for each event of `event_type` (None: every type)."""

    @abc.abstractmethod
    async def drain(self, timeout: float = 10.0) -> None:
        """Wait until every event published so far has been handled."""

    @property
    def describe(self) -> str:
        return type(self).__name__

    @property
    def connected(self) -> bool:
        """Whether events published now reach the bus at once (an in-process bus always does)."""
        return True


async def call_handler(handler: Handler, event: Event, stats: BusStats) -> bool:
    """Run one handler on one event; a failure is logged and counted, never raised."""
    try:
        result = handler(event)
        if asyncio.iscoroutine(result):
            await result
        stats.delivered += 1
        return True
    except Exception:
        stats.handler_errors += 1
        log.exception("bus handler %s failed on %s %s", getattr(handler, "__qualname__", handler),
                      type(event).__name__, event.event_id)
        return False


@dataclass(eq=False)
class _Subscriber:
    handler: Handler
    queue: asyncio.Queue[Event | None] = field(default_factory=asyncio.Queue)
    task: asyncio.Task[None] | None = None


class InProcessBus(Bus):
    """Asyncio bus inside one process. Each subscriber has its own queue and task, so a slow subscriber
    delays only itself and ordering per subscriber is the publish order."""

    def __init__(self) -> None:
        self.stats = BusStats()
        self._plain: dict[type[Event] | None, list[_Subscriber]] = defaultdict(list)
        self._groups: dict[tuple[type[Event] | None, str], list[_Subscriber]] = defaultdict(list)
        self._round_robin: dict[tuple[type[Event] | None, str], itertools.count[int]] = defaultdict(itertools.count)
        self._stopped = False

    async def publish(self, *events: Event) -> None:
        for event in events:
            self.stats.published += 1
            for key in (type(event), None):
                for subscriber in self._plain.get(key, ()):
                    subscriber.queue.put_nowait(event)
                for (group_type, group), members in self._groups.items():
                    if group_type is key and members:
                        index = next(self._round_robin[(group_type, group)]) % len(members)
                        members[index].queue.put_nowait(event)

    async def subscribe(
        self, event_type: type[Event] | None, handler: Handler, *, group: str | None = None
    ) -> Unsubscribe:
        subscriber = _Subscriber(handler)
        subscriber.task = asyncio.create_task(self._deliver(subscriber), name=f"bus:{handler}")
        members = self._groups[(event_type, group)] if group else self._plain[event_type]
        members.append(subscriber)

        async def unsubscribe() -> None:
            if subscriber in members:
                members.remove(subscriber)
                await subscriber.queue.join()
                subscriber.queue.put_nowait(None)
                if subscriber.task:
                    await subscriber.task

        return unsubscribe

    async def _deliver(self, subscriber: _Subscriber) -> None:
        while True:
            event = await subscriber.queue.get()
            try:
                if event is None:
                    return
                await call_handler(subscriber.handler, event, self.stats)
            finally:
                subscriber.queue.task_done()

    def _all_subscribers(self) -> list[_Subscriber]:
        return [s for members in (*self._plain.values(), *self._groups.values()) for s in members]

    async def drain(self, timeout: float = 10.0) -> None:
        await asyncio.wait_for(asyncio.gather(*(s.queue.join() for s in self._all_subscribers())), timeout)

    async def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        try:
            await self.drain()
        except TimeoutError:
            log.warning("bus stopped with undelivered events")
        for subscriber in self._all_subscribers():
            if subscriber.task:
                subscriber.task.cancel()
        self._plain.clear()
        self._groups.clear()


def create_bus(url: str, *, stream: str = "CITYBRAIN") -> Bus:
    """`memory` → in-process; `nats://host:port` → NATS JetStream (events kept in `stream`)."""
    if url in ("memory", "inprocess", ""):
        return InProcessBus()
    if url.startswith(("nats://", "tls://")):
        from citybrain.core.nats_bus import NatsBus

        return NatsBus(url, stream=stream)
    raise ValueError(f"unknown bus {url!r}: use 'memory' or 'nats://host:port'")
