"""One contract for every bus: the in-process bus and NATS JetStream pass the same tests.

The NATS runs use the real server on 127.0.0.1:4222, each test on its own stream and subject prefix,
deleted afterwards. A few NATS-only tests cover what only a durable bus promises.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import nats
import pytest
from nats.js.errors import NotFoundError

from citybrain.core.bus import Bus, InProcessBus, create_bus
from citybrain.core.context import Context
from citybrain.core.events import EntityChanged, Event
from citybrain.core.nats_bus import MAX_MESSAGE_BYTES, NatsBus
from tests.services import NATS_URL, require_nats

pytestmark = pytest.mark.anyio

BusFactory = Callable[[], Awaitable[Bus]]


class ContractPing(Event, frozen=True, kw_only=True):
    n: int
    note: str = ""


class ContractPong(Event, frozen=True, kw_only=True):
    n: int


class ContractRich(Event, frozen=True, kw_only=True):
    text: str
    amount: float
    tags: list[str]
    payload: dict[str, Any]
    seen_at: datetime
    missing: str | None = None


def pings(count: int, *, note: str = "") -> list[ContractPing]:
    context = Context(actor="contract-test")
    return [ContractPing(context=context, n=i, note=note) for i in range(count)]


class Collector:
    """A handler that records events and lets a test await a count (for consumers on another bus
    object, whose progress that bus's `drain` cannot see)."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self._arrived = asyncio.Event()

    async def __call__(self, event: Event) -> None:
        self.events.append(event)
        self._arrived.set()

    async def wait_for(self, count: int, timeout: float = 20.0) -> None:
        async with asyncio.timeout(timeout):
            while len(self.events) < count:
                self._arrived.clear()
                await self._arrived.wait()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def _stream_info(stream: str) -> Any:
    nc = await nats.connect(NATS_URL)
    try:
        return await nc.jetstream().stream_info(stream)
    finally:
        await nc.close()


async def _bus_factory(kind: str) -> AsyncIterator[BusFactory]:
    """Make started buses of one kind; NATS buses of one test share a fresh stream, deleted at the end."""
    tag = uuid.uuid4().hex[:12]
    buses: list[Bus] = []

    async def make() -> Bus:
        bus: Bus = InProcessBus() if kind == "memory" else NatsBus(
            NATS_URL, stream=f"TEST_{tag}", subject_prefix=f"test.{tag}")
        await bus.start()
        buses.append(bus)
        return bus

    try:
        yield make
    finally:
        for bus in buses:
            await bus.stop()
        if kind == "nats":
            nc = await nats.connect(NATS_URL)
            try:
                await nc.jetstream().delete_stream(f"TEST_{tag}")
            except NotFoundError:
                pass
            finally:
                await nc.close()


@pytest.fixture(params=["memory", pytest.param("nats", marks=pytest.mark.integration)])
async def new_bus(request: pytest.FixtureRequest) -> AsyncIterator[BusFactory]:
    if request.param == "nats":
        require_nats()
    async for factory in _bus_factory(request.param):
        yield factory


@pytest.fixture
async def bus(new_bus: BusFactory) -> Bus:
    return await new_bus()


@pytest.fixture
async def new_nats_bus() -> AsyncIterator[BusFactory]:
    require_nats()
    async for factory in _bus_factory("nats"):
        yield factory


# -- the contract ---------------------------------------------------------------------------------------


async def test_every_plain_subscriber_gets_every_event_in_publish_order(bus: Bus) -> None:
    first: list[Event] = []
    second = Collector()
    await bus.subscribe(ContractPing, first.append)  # a plain function handler
    await bus.subscribe(ContractPing, second)  # a coroutine handler
    events = pings(30)

    await bus.publish(*events[:10])
    for event in events[10:20]:
        await bus.publish(event)
    await bus.publish(*events[20:])
    await bus.drain()

    assert first == events
    assert second.events == events
    assert (bus.stats.published, bus.stats.delivered, bus.stats.handler_errors) == (30, 60, 0)


async def test_subscribers_get_their_type_and_none_means_every_type(bus: Bus) -> None:
    seen_pings: list[Event] = []
    seen_pongs: list[Event] = []
    everything: list[Event] = []
    await bus.subscribe(ContractPing, seen_pings.append)
    await bus.subscribe(ContractPong, seen_pongs.append)
    await bus.subscribe(None, everything.append)
    context = Context()
    events: list[Event] = [ContractPing(context=context, n=0), ContractPing(context=context, n=1),
                           ContractPong(context=context, n=0), ContractPing(context=context, n=2),
                           ContractPong(context=context, n=1), ContractPong(context=context, n=2)]

    await bus.publish(*events)
    await bus.drain()

    assert seen_pings == [e for e in events if isinstance(e, ContractPing)]
    assert seen_pongs == [e for e in events if isinstance(e, ContractPong)]
    assert everything == events


async def test_group_members_split_events_and_each_group_gets_them_all(bus: Bus) -> None:
    worker_a: list[Event] = []
    worker_b: list[Event] = []
    auditor: list[Event] = []
    plain: list[Event] = []
    await bus.subscribe(ContractPing, worker_a.append, group="workers")
    await bus.subscribe(ContractPing, worker_b.append, group="workers")
    await bus.subscribe(ContractPing, auditor.append, group="auditors")
    await bus.subscribe(ContractPing, plain.append)
    events = pings(40)

    for event in events:  # one publish each, so a batching bus has 40 messages to spread
        await bus.publish(event)
    await bus.drain()

    by_number = sorted(worker_a + worker_b, key=lambda e: e.n)  # type: ignore[attr-defined]
    assert by_number == events, "each event reaches exactly one member of the group"
    assert worker_a and worker_b, "both members got a share"
    assert auditor == events
    assert plain == events


async def test_unsubscribe_stops_delivery(bus: Bus) -> None:
    leaving: list[Event] = []
    staying: list[Event] = []
    member_leaving: list[Event] = []
    member_staying: list[Event] = []
    unsubscribe = await bus.subscribe(ContractPing, leaving.append)
    await bus.subscribe(ContractPing, staying.append)
    leave_group = await bus.subscribe(ContractPing, member_leaving.append, group="crew")
    await bus.subscribe(ContractPing, member_staying.append, group="crew")
    first, second = pings(2)

    await bus.publish(first)
    await bus.drain()
    await unsubscribe()
    await unsubscribe()  # a second call is harmless
    await leave_group()
    await bus.publish(second)
    await bus.drain()

    assert leaving == [first]
    assert staying == [first, second]
    assert second in member_staying and second not in member_leaving
    assert sorted(member_leaving + member_staying, key=lambda e: e.n) == [first, second]  # type: ignore[attr-defined]


async def test_a_raising_handler_is_counted_and_stops_nothing(bus: Bus) -> None:
    attempted: list[Event] = []
    calm: list[Event] = []

    async def flaky(event: Event) -> None:
        attempted.append(event)
        if event.n == 1:  # type: ignore[attr-defined]
            raise RuntimeError("handler bug")

    await bus.subscribe(ContractPing, flaky)
    await bus.subscribe(ContractPing, calm.append)
    events = pings(4)

    await bus.publish(*events[:3])  # the failure sits in the middle of a batch
    await bus.publish(events[3])
    await bus.drain()

    assert attempted == events, "later events still reach the failing handler, each once"
    assert calm == events
    assert bus.stats.handler_errors == 1
    assert bus.stats.delivered == 7


async def test_context_and_every_field_round_trip(bus: Bus) -> None:
    cause = Context(actor="inspector:王芳", org_scope=("330106001", "330106002"))
    context = cause.child(actor="sensing.rules")
    rich = ContractRich(
        context=context, text="井盖缺失 — 文三路 \"东口\"\n", amount=0.1, tags=["manhole", "城管"],
        payload={"nested": {"values": [1, 2.5, None, True, "x"]}, "empty": {}},
        seen_at=datetime(2026, 11, 25, 8, 0, 0, 123456, tzinfo=timezone(timedelta(hours=8))),
        occurred_at=datetime(2026, 11, 25, 0, 0, 1, 999999, tzinfo=UTC),
    )
    changed = EntityChanged(context=Context(), entity_id="urn:ngsi-ld:Streetlight:xihu-001",
                            entity_type="Streetlight", org_unit=None, operation="updated",
                            attributes=["powerState"], entity={"id": "urn:ngsi-ld:Streetlight:xihu-001"})
    received: list[Event] = []
    await bus.subscribe(None, received.append)

    await bus.publish(rich, changed)
    await bus.drain()

    assert received == [rich, changed]
    got = received[0]
    assert type(got) is ContractRich and type(received[1]) is EntityChanged
    assert got.context == context
    assert (got.context.id, got.context.parent_id, got.context.actor, got.context.org_scope) == (
        context.id, cause.id, "sensing.rules", ("330106001", "330106002"))
    assert got.seen_at.utcoffset() == timedelta(hours=8)  # type: ignore[attr-defined]
    assert got.event_id == rich.event_id and got.occurred_at == rich.occurred_at


async def test_twenty_thousand_events_in_one_publish_all_arrive_in_order(bus: Bus) -> None:
    received: list[Event] = []
    await bus.subscribe(ContractPing, received.append)
    events = pings(20_000)

    await bus.publish(*events)
    await bus.drain(timeout=60)

    assert received == events
    assert bus.stats.published == 20_000


# -- what only a durable, batching bus promises ---------------------------------------------------------


@pytest.mark.integration
async def test_group_catches_up_on_events_published_while_it_was_down(new_nats_bus: BusFactory) -> None:
    first_life = await new_nats_bus()
    before = Collector()
    await first_life.subscribe(ContractPing, before, group="archive")
    await first_life.publish(*pings(1, note="before"))
    await first_life.drain()
    await first_life.stop()  # every member of the group is gone now

    publisher = await new_nats_bus()
    while_down = pings(100, note="while down")
    await publisher.publish(*while_down[:50])
    for event in while_down[50:]:
        await publisher.publish(event)

    second_life = await new_nats_bus()
    after = Collector()
    await second_life.subscribe(ContractPing, after, group="archive")
    await after.wait_for(100)
    await publisher.publish(late := pings(1, note="late")[0])
    await after.wait_for(101)

    assert len(before.events) == 1
    assert after.events == [*while_down, late], "nothing lost, nothing handled twice"


@pytest.mark.integration
async def test_group_members_in_different_processes_split_the_events(new_nats_bus: BusFactory) -> None:
    here, there = await new_nats_bus(), await new_nats_bus()  # as if two worker processes
    handled_here: list[Event] = []
    handled_there: list[Event] = []
    await here.subscribe(ContractPing, handled_here.append, group="workers")
    await there.subscribe(ContractPing, handled_there.append, group="workers")
    events = pings(40)

    for event in events:
        await here.publish(event)
    await here.drain()  # counts what the member over there handled, too

    assert sorted(handled_here + handled_there, key=lambda e: e.n) == events  # type: ignore[attr-defined]
    assert handled_here and handled_there


@pytest.mark.integration
async def test_events_travel_in_batches_under_the_size_cap(new_nats_bus: BusFactory) -> None:
    bus = await new_nats_bus()
    assert isinstance(bus, NatsBus) and NATS_URL in bus.describe
    received: list[Event] = []
    await bus.subscribe(None, received.append)
    small = pings(10_000)
    bulky = pings(2_000, note="x" * 1000)  # ~2.3 MB: must be split into several messages

    started = time.perf_counter()
    await bus.publish(*small)
    await bus.drain(timeout=60)
    elapsed = time.perf_counter() - started
    after_small = (await _stream_info(bus.stream)).state.messages
    await bus.publish(*bulky)
    await bus.drain(timeout=60)
    info = await _stream_info(bus.stream)

    assert received == [*small, *bulky]
    assert after_small <= 10_000 // 500, f"10,000 events took {after_small} messages"
    bulky_messages = info.state.messages - after_small
    assert 5 <= bulky_messages <= 10
    nc = await nats.connect(NATS_URL)
    try:
        for seq in range(info.state.first_seq, info.state.last_seq + 1):
            stored = await nc.jetstream().get_msg(bus.stream, seq)
            assert len(stored.data or b"") <= MAX_MESSAGE_BYTES
    finally:
        await nc.close()
    print(f"NATS bus: 10,000 events published and handled in {elapsed:.3f}s "
          f"({10_000 / elapsed:,.0f} events/s, {after_small} messages)")


async def test_create_bus_picks_nats_for_a_nats_url() -> None:
    bus = create_bus(NATS_URL)
    assert isinstance(bus, NatsBus) and bus.url == NATS_URL
    with pytest.raises(RuntimeError, match="not started"):
        await bus.publish(*pings(1))
