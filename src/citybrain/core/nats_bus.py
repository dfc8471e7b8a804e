"""The event bus on NATS JetStream: durable, shared between processes, consumer groups across restarts.

Wire format: an event of class `X` goes to subject `{prefix}.X`; one message carries a JSON array of
consecutive events of one type (msgspec JSON), at most ~512 KB per message. See docs/bus.md.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import re
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import msgspec
import nats
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext, api
from nats.js.errors import APIError, NotFoundError

from citybrain.core.bus import Bus, BusStats, Handler, Unsubscribe, call_handler
from citybrain.core.context import new_id
from citybrain.core.errors import ServiceUnavailable
from citybrain.core.events import Event

log = logging.getLogger(__name__)

TYPE_HEADER = "Citybrain-Event-Type"
COUNT_HEADER = "Citybrain-Event-Count"
MAX_MESSAGE_BYTES = 512 * 1024
ACK_WAIT = 30.0  # seconds a member may hold a batch before JetStream assumes it died and redelivers
MAX_DELIVER = 5  # deliveries of one message before JetStream gives up on it (a batch that kills its handler)
MAX_ACK_PENDING = 256  # batches in flight per consumer: bounds client memory at ~128 MB per consumer
STREAM_MAX_AGE = 7 * 24 * 3600.0  # how long a consumer group may be away and still catch up
STREAM_MAX_BYTES = 8 * 2**30  # and a ceiling on disk: past it the oldest events go first
ACK_RETRY_S = 3.0  # how long one message's acknowledgement is awaited before it is sent again
SERVER_CHECK_INTERVAL = 0.25  # drain: how often to ask the server about group members in other processes


@dataclass(eq=False)
class _Member:
    """One local subscription (one handler) of a consumer."""

    handler: Handler
    consumer: _Consumer
    sub: JetStreamContext.PushSubscription | None = None
    busy: bool = False

    @property
    def idle(self) -> bool:
        return not self.busy and (self.sub is None or self.sub.pending_msgs == 0)


@dataclass(eq=False)
class _Consumer:
    """A JetStream consumer as seen from this process, with the progress `drain` waits for."""

    name: str
    type_name: str | None  # None: every event type
    group: str | None
    handled_seq: int = 0  # stream sequence up to which this process has handled what it was sent
    members: list[_Member] = field(default_factory=list)


class NatsBus(Bus):
    """Event bus on NATS JetStream (one durable file-backed stream, push consumers).

    - Plain subscriber: an ephemeral push consumer that delivers new events only, in stream order,
      which for one publisher is the publish order.
    - `group="name"`: a durable push consumer named after the group and event type, with a deliver group,
      so each message reaches one member wherever it runs, and messages published while every member was
      down wait in the stream (up to `STREAM_MAX_AGE`) for the next member to subscribe.
    - Delivery is at least once across process failures: a batch is acked only after the handler ran on
      every event in it; a member that dies first gets its batch redelivered to another member after
      `ACK_WAIT`, at most `MAX_DELIVER` times. Handlers should be idempotent (`event_id` identifies one).
    - A handler *exception* does not cause redelivery: it is logged and counted in
      `stats.handler_errors`, and the batch is still acked. Redelivering would re-run the handler on every
      other event of the batch and break the publish order, and most exceptions (bugs, bad data) would
      just repeat; retries for transient failures belong in the handler (as webhooks do). This keeps
      the contract identical to `InProcessBus`.
    - A message that cannot be decoded (unknown event type, malformed JSON) is logged and terminated.
    """

    def __init__(self, url: str, *, stream: str = "CITYBRAIN", subject_prefix: str | None = None,
                 publish_timeout: float = 30.0) -> None:
        self.url = url
        self.stream = stream
        # Streams may not share subjects, so each stream's subjects are named after it: citybrain.ev.>
        self.subject_prefix = subject_prefix or f"{stream.lower()}.ev"
        self.publish_timeout = publish_timeout
        self.stats = BusStats()
        self._nc: Client | None = None
        self._js: JetStreamContext | None = None
        self._max_message_bytes = MAX_MESSAGE_BYTES
        self._encoder = msgspec.json.Encoder()
        self._decoders: dict[str, msgspec.json.Decoder[Any]] = {}
        self._consumers: dict[str, _Consumer] = {}  # group consumers by durable name
        self._plain: list[_Consumer] = []
        self._last_seq: dict[str, int] = {}  # event type → last stream sequence published through this bus
        self._progress = asyncio.Event()

    @property
    def describe(self) -> str:
        return f"NATS JetStream {self.url} (stream {self.stream}, subjects {self.subject_prefix}.>)"

    @property
    def connected(self) -> bool:
        """False while nats-py reconnects (publishes wait for it, up to `publish_timeout`)."""
        return self._nc is not None and self._nc.is_connected

    # -- lifecycle -------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Connect and make sure the stream exists. Fails fast when NATS is unreachable."""
        if self._nc is not None:
            return
        nc = await nats.connect(
            self.url, name="citybrain", connect_timeout=2, max_reconnect_attempts=1,
            error_cb=self._on_error, disconnected_cb=self._on_disconnected,
            reconnected_cb=self._on_reconnected, closed_cb=self._on_closed,
        )
        # Fail fast on the first connect, but once running keep reconnecting for as long as it takes:
        # nats-py has one setting for both, read at each reconnect.
        nc.options["max_reconnect_attempts"] = -1
        self._js = nc.jetstream()
        # Leave room for headers under the server's payload limit.
        self._max_message_bytes = min(MAX_MESSAGE_BYTES, nc.max_payload - 4096)
        try:
            await self._ensure_stream()
        except BaseException:  # no JetStream, subjects taken by another stream…: leave nothing half-open
            self._js = None
            await nc.close()
            raise
        self._nc = nc
        log.info("bus connected: %s", self.describe)

    async def _ensure_stream(self) -> None:
        assert self._js is not None
        subjects = f"{self.subject_prefix}.>"
        try:
            info = await self._js.stream_info(self.stream)
        except NotFoundError:
            # Two processes creating it at once is fine: an identical add_stream is idempotent.
            await self._js.add_stream(api.StreamConfig(
                name=self.stream, subjects=[subjects], storage=api.StorageType.FILE,
                retention=api.RetentionPolicy.LIMITS, max_age=STREAM_MAX_AGE, max_bytes=STREAM_MAX_BYTES,
            ))
            return
        if subjects not in (info.config.subjects or []):
            info.config.subjects = [*(info.config.subjects or []), subjects]
            await self._js.update_stream(info.config)

    async def stop(self, timeout: float = 5.0) -> None:
        """Handle what has already arrived, then drain the subscriptions and close. Idempotent."""
        if self._nc is None:
            return
        try:
            await self.drain(timeout)
        except TimeoutError:
            log.warning("bus stopped with undelivered events (group consumers keep them in the stream)")
        nc, js = self._nc, self._js
        self._nc = self._js = None
        for consumer in self._plain:
            await self._delete_ephemeral(js, consumer)
        self._consumers.clear()
        self._plain.clear()
        try:
            await nc.drain()
        except Exception:  # noqa: BLE001 - reconnecting or already closed: nothing left to drain
            await nc.close()

    # -- publishing ------------------------------------------------------------------------------------

    async def publish(self, *events: Event) -> None:
        """Store the events in the stream; returns once JetStream acknowledged every message.

        A message whose acknowledgement is lost (the connection dropped while it was in flight, or NATS
        restarted) is sent again with the same `Nats-Msg-Id`, so the stream keeps it once (its duplicate
        window is two minutes), until `publish_timeout`; then ServiceUnavailable (503), never a 500."""
        if not events:
            return
        js = self._jetstream()
        pending: list[tuple[str, str, bytes, dict[str, str]]] = []
        for event_class, run in itertools.groupby(events, key=type):
            name = event_class.__name__
            subject = f"{self.subject_prefix}.{name}"
            for payload, count in self._pack(run):
                headers = {TYPE_HEADER: name, COUNT_HEADER: str(count), "Nats-Msg-Id": new_id()}
                pending.append((name, subject, payload, headers))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.publish_timeout
        while True:
            futures = [await js.publish_async(subject, payload, stream=self.stream, headers=headers)
                       for _, subject, payload, headers in pending]
            wait = max(0.05, min(ACK_RETRY_S, deadline - loop.time()))
            results = await asyncio.gather(*(asyncio.wait_for(f, wait) for f in futures), return_exceptions=True)
            again, failure = [], None
            for message, result in zip(pending, results, strict=True):
                if isinstance(result, api.PubAck):
                    self._last_seq[message[0]] = max(self._last_seq.get(message[0], 0), result.seq)
                elif isinstance(result, APIError) or not isinstance(result, Exception):
                    raise result  # refused by the server (too large, no such stream): sending again won't help
                else:
                    again.append(message)
                    failure = failure or result
            if not again:
                break
            if loop.time() >= deadline:
                raise ServiceUnavailable(f"the event bus did not acknowledge {len(again)} messages within "
                                         f"{self.publish_timeout:g} s (NATS at {self.url} unreachable?)")
            log.warning("bus: %d messages unacknowledged (%s); sending them again", len(again),
                        type(failure).__name__)
            await asyncio.sleep(0.2)
            pending = again
        self.stats.published += len(events)

    def _pack(self, events: Iterable[Event]) -> Iterator[tuple[bytes, int]]:
        """JSON arrays of the encoded events, each under the message size cap (a lone oversized event
        still goes alone, and NATS rejects it if it exceeds the server's limit)."""
        parts: list[bytes] = []
        size = 2
        for event in events:
            body = self._encoder.encode(event)
            if parts and size + len(body) + 1 > self._max_message_bytes:
                yield b"[" + b",".join(parts) + b"]", len(parts)
                parts, size = [], 2
            parts.append(body)
            size += len(body) + 1
        if parts:
            yield b"[" + b",".join(parts) + b"]", len(parts)

    # -- subscribing -----------------------------------------------------------------------------------

    async def subscribe(
        self, event_type: type[Event] | None, handler: Handler, *, group: str | None = None
    ) -> Unsubscribe:
        js = self._jetstream()
        type_name = event_type.__name__ if event_type else None
        subject = f"{self.subject_prefix}.{type_name or '>'}"
        config = api.ConsumerConfig(
            ack_policy=api.AckPolicy.EXPLICIT, ack_wait=ACK_WAIT, max_deliver=MAX_DELIVER,
            max_ack_pending=MAX_ACK_PENDING, deliver_policy=api.DeliverPolicy.NEW,  # NEW: when first created
        )
        if group:
            name = _consumer_name(f"{group}-{type_name or 'all'}")
            consumer = self._consumers.setdefault(name, _Consumer(name, type_name, group))
        else:
            consumer = _Consumer("", type_name, None)
            self._plain.append(consumer)
        member = _Member(handler, consumer)

        async def on_message(msg: Msg) -> None:
            await self._handle(member, msg)

        try:
            # For a group, nats-py uses the queue (deliver group) name as the durable consumer name too.
            member.sub = await js.subscribe(subject, queue=consumer.name or None, cb=on_message,
                                            stream=self.stream, config=config, manual_ack=True)
            if not consumer.members:
                info = await member.sub.consumer_info()
                consumer.name = info.name
                # Everything up to here is already handled (or, for a new consumer, will never be sent).
                start = info.delivered.stream_seq if info.num_ack_pending == 0 else info.ack_floor.stream_seq
                consumer.handled_seq = max(consumer.handled_seq, start)
        except BaseException:
            if not consumer.members:
                self._forget(consumer)
            raise
        consumer.members.append(member)

        async def unsubscribe() -> None:
            if member not in consumer.members:
                return
            consumer.members.remove(member)
            if self._js is not None and member.sub is not None:
                await member.sub.drain()  # finish (and ack) what this member already received
                if not consumer.members and consumer.group is None:
                    await self._delete_ephemeral(self._js, consumer)
            if not consumer.members:
                self._forget(consumer)
            self._progress.set()

        return unsubscribe

    async def _handle(self, member: _Member, msg: Msg) -> None:
        """Run the handler on every event of one batch message, then ack it (see the class docstring)."""
        metadata = msg.metadata
        member.busy = True
        try:
            if metadata.num_delivered > 1:
                log.warning("bus: redelivery %d of %s seq %d", metadata.num_delivered, msg.subject,
                            metadata.sequence.stream)
            events = self._decode(msg)
            if events is None:
                await msg.term()
                return
            # Tell JetStream we are alive during a long batch, so it does not redeliver it elsewhere.
            keepalive = time.monotonic() + ACK_WAIT / 3
            for event in events:
                await call_handler(member.handler, event, self.stats)
                if time.monotonic() > keepalive:
                    await msg.in_progress()
                    keepalive = time.monotonic() + ACK_WAIT / 3
            await msg.ack()
        except Exception:  # acking on a lost connection: JetStream redelivers after ACK_WAIT
            log.exception("bus: could not settle %s seq %d", msg.subject, metadata.sequence.stream)
        finally:
            member.busy = False
            member.consumer.handled_seq = max(member.consumer.handled_seq, metadata.sequence.stream)
            self._progress.set()

    def _decode(self, msg: Msg) -> list[Event] | None:
        name = msg.subject.rpartition(".")[2]
        decoder = self._decoders.get(name)
        if decoder is None:
            event_class = Event.types.get(name)
            if event_class is None:
                log.error("bus: unknown event type %r on %s; message dropped", name, msg.subject)
                return None
            decoder = self._decoders[name] = msgspec.json.Decoder(list[event_class])  # type: ignore[valid-type]
        try:
            return decoder.decode(msg.data)
        except msgspec.DecodeError:
            log.exception("bus: undecodable %s message; dropped", name)
            return None

    # -- draining --------------------------------------------------------------------------------------

    async def drain(self, timeout: float = 10.0) -> None:
        """Wait until this process's subscribers have handled every event published through this bus
        object so far (for a group, a member in another process handling it counts too)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        next_server_check = loop.time() + SERVER_CHECK_INTERVAL
        while True:
            self._progress.clear()
            behind = [c for c in (*self._plain, *self._consumers.values()) if not self._caught_up(c)]
            if not behind:
                return
            now = loop.time()
            if now >= deadline:
                raise TimeoutError(f"bus not drained after {timeout}s: {[c.name for c in behind]}")
            if now >= next_server_check:
                # Group members in other processes may have taken the rest: ask the server.
                for consumer in behind:
                    if consumer.group and await self._server_caught_up(consumer):
                        consumer.handled_seq = max(consumer.handled_seq, self._target(consumer))
                next_server_check = loop.time() + SERVER_CHECK_INTERVAL
                continue
            try:
                await asyncio.wait_for(self._progress.wait(), min(deadline, next_server_check) - now)
            except TimeoutError:
                pass

    def _target(self, consumer: _Consumer) -> int:
        if consumer.type_name is None:
            return max(self._last_seq.values(), default=0)
        return self._last_seq.get(consumer.type_name, 0)

    def _caught_up(self, consumer: _Consumer) -> bool:
        # Members of one consumer share this connection, which delivers in stream order: once any member
        # is past the target, the earlier messages are in some member's hands, so wait for all to idle.
        # A consumer whose first member is still subscribing has nothing in hand yet.
        if not consumer.members:
            return True
        return consumer.handled_seq >= self._target(consumer) and all(m.idle for m in consumer.members)

    async def _server_caught_up(self, consumer: _Consumer) -> bool:
        try:
            info = await self._jetstream().consumer_info(self.stream, consumer.name)
        except Exception:  # noqa: BLE001 - unreachable or gone: not known to be caught up
            return False
        return info.num_pending == 0 and info.num_ack_pending == 0

    # -- helpers ---------------------------------------------------------------------------------------

    def _forget(self, consumer: _Consumer) -> None:
        if consumer in self._plain:
            self._plain.remove(consumer)
        if consumer.group:
            self._consumers.pop(consumer.name, None)

    def _jetstream(self) -> JetStreamContext:
        if self._js is None:
            raise RuntimeError("NatsBus is not started: call start() first")
        return self._js

    async def _delete_ephemeral(self, js: JetStreamContext, consumer: _Consumer) -> None:
        # The server would drop it after its inactivity threshold anyway; deleting frees it now.
        try:
            await js.delete_consumer(self.stream, consumer.name)
        except Exception:  # noqa: BLE001 - best effort: the server expires it anyway
            log.debug("bus: ephemeral consumer %s already gone", consumer.name)

    async def _on_error(self, error: Exception) -> None:
        log.warning("bus: NATS error: %s", error)

    async def _on_disconnected(self) -> None:
        if self._nc is None:  # our own stop()
            return
        log.warning("bus: disconnected from %s; nats-py reconnects and buffers publishes meanwhile", self.url)

    async def _on_reconnected(self) -> None:
        log.warning("bus: reconnected to %s", self._nc.connected_url.netloc if self._nc else self.url)

    async def _on_closed(self) -> None:
        log.info("bus: connection to %s closed", self.url)


def _consumer_name(text: str) -> str:
    """A JetStream consumer name: no dots, wildcards or whitespace."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", text)
