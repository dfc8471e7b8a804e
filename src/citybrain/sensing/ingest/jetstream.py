"""Sharded telemetry on NATS JetStream: relays put it there by shard, ingest workers take their shard.

    MQTT ──(shared subscription)──▶ TelemetryRelay ──telemetry.{stream}.{shard}──▶ JetStream stream
                                                                                        │
    worker k: JetStreamSource(shard=k) ──durable consumer telemetry-shard-{k}────────────┘

A relay is stateless apart from the device index it reads at start (a device's shard is its town's, see
`sensing.shards`), so any number of relays can share the broker's load (MQTT 5 shared subscription). It
packs the messages of one MQTT batch and one shard into a few JetStream messages (msgpack, ≤ 512 KB each),
and returns — letting the MQTT source acknowledge at QoS 1 — only after JetStream acknowledged storing
them. A worker's durable pull consumer survives restarts; a worker acknowledges a JetStream message only
after the readings it carried are durable in the lake (the runtime's group commit), so a `kill -9`
anywhere loses nothing: JetStream redelivers what was not acknowledged and the pipeline drops the
duplicates.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
import nats
import numpy as np
from nats.js import JetStreamContext, api
from nats.js.errors import NotFoundError

from citybrain.sensing.ingest.mqtt import Durability, OnBatch, RawMessage

log = logging.getLogger(__name__)

TELEMETRY_STREAM = "CITYBRAIN_TELEMETRY"
MAX_PACKED_BYTES = 512 * 1024
STREAM_MAX_AGE_S = 24 * 3600.0  # a worker may be away this long and still catch up
ACK_WAIT_S = 60.0  # a worker that holds a message longer is presumed dead: JetStream redelivers it

_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(list[tuple[str, bytes, float]])


def pack(messages: list[RawMessage]) -> list[bytes]:
    """Messages as msgpack arrays of at most MAX_PACKED_BYTES each (a message is never split)."""
    out: list[bytes] = []
    start = 0
    while start < len(messages):
        size, end = 0, start
        while end < len(messages) and (end == start or size + len(messages[end][1]) + 96 <= MAX_PACKED_BYTES):
            size += len(messages[end][1]) + len(messages[end][0]) + 16
            end += 1
        out.append(_encoder.encode(messages[start:end]))
        start = end
    return out


def unpack(data: bytes) -> list[RawMessage]:
    return _decoder.decode(data)


async def connect(url: str, *, name: str) -> Any:
    nc = await nats.connect(url, name=name, connect_timeout=2, max_reconnect_attempts=1)
    nc.options["max_reconnect_attempts"] = -1  # fail fast at start, then keep reconnecting
    return nc


def subject_prefix(stream: str) -> str:
    return f"telemetry.{stream}"


async def ensure_stream(js: JetStreamContext, stream: str = TELEMETRY_STREAM) -> None:
    subjects = f"{subject_prefix(stream)}.*"
    try:
        info = await js.stream_info(stream)
    except NotFoundError:
        await js.add_stream(api.StreamConfig(
            name=stream, subjects=[subjects], storage=api.StorageType.FILE,
            retention=api.RetentionPolicy.LIMITS, max_age=STREAM_MAX_AGE_S))
        return
    if subjects not in (info.config.subjects or []):
        info.config.subjects = [*(info.config.subjects or []), subjects]
        await js.update_stream(info.config)


class TelemetryRelay:
    """`await forward(messages)`: publish MQTT messages to JetStream by shard; returns once stored.

    `shard_of(messages)` gives each message's shard (an int array); `shards` how many there are."""

    def __init__(self, url: str, shard_of: Callable[[list[RawMessage]], np.ndarray], shards: int, *,
                 stream: str = TELEMETRY_STREAM) -> None:
        self.url = url
        self.shard_of = shard_of
        self.shards = shards
        self.stream = stream
        self.prefix = subject_prefix(stream)
        self.forwarded = 0
        self.published = 0
        self._nc: Any = None
        self._js: JetStreamContext | None = None

    async def start(self) -> None:
        self._nc = await connect(self.url, name="citybrain-relay")
        self._js = self._nc.jetstream()
        await ensure_stream(self._js, self.stream)
        log.info("relay: telemetry to %s, stream %s, %d shards", self.url, self.stream, self.shards)

    async def stop(self) -> None:
        if self._nc is not None:
            with contextlib.suppress(Exception):
                await self._nc.drain()
            self._nc = self._js = None

    async def forward(self, messages: list[RawMessage]) -> None:
        assert self._js is not None, "TelemetryRelay.start() first"
        if not messages:
            return
        shard = np.asarray(self.shard_of(messages), np.int64)
        publishes: list[Awaitable[Any]] = []
        for k in np.unique(shard).tolist():
            part = [messages[i] for i in np.flatnonzero(shard == k).tolist()]
            subject = f"{self.prefix}.{k}"
            publishes += [self._js.publish(subject, data, stream=self.stream) for data in pack(part)]
        await asyncio.gather(*publishes)  # raises if JetStream did not store one: the MQTT batch is not acked
        self.forwarded += len(messages)
        self.published += len(publishes)


class JetStreamSource:
    """Takes shard `shard` of the telemetry from JetStream and delivers it in batches to `on_batch`, like
    `MqttSource`; each JetStream message is acknowledged after `durable()` (if given) completed."""

    def __init__(self, url: str, on_batch: OnBatch, *, shard: int, durable: Durability | None = None,
                 stream: str = TELEMETRY_STREAM, fetch_messages: int = 64,
                 fetch_timeout_s: float = 0.05) -> None:
        self.url = url
        self.on_batch = on_batch
        self.shard = shard
        self.durable = durable
        self.stream = stream
        self.subject = f"{subject_prefix(stream)}.{shard}"
        self.consumer = f"telemetry-shard-{shard}"
        self.fetch_messages = fetch_messages
        self.fetch_timeout_s = fetch_timeout_s
        self._nc: Any = None
        self._task: asyncio.Task[None] | None = None
        self._acking: set[asyncio.Task[None]] = set()
        self._stopping = False
        self.messages = 0
        self.batches = 0
        self.acked = 0
        self.failed_batches = 0

    async def start(self) -> None:
        self._nc = await connect(self.url, name=f"citybrain-ingest-shard-{self.shard}")
        js = self._nc.jetstream()
        await ensure_stream(js, self.stream)
        config = api.ConsumerConfig(ack_policy=api.AckPolicy.EXPLICIT, ack_wait=ACK_WAIT_S,
                                    max_ack_pending=4096, deliver_policy=api.DeliverPolicy.ALL)
        subscription = await js.pull_subscribe(self.subject, durable=self.consumer, stream=self.stream,
                                               config=config)
        self._task = asyncio.create_task(self._run(subscription), name=f"jetstream-{self.consumer}")
        log.info("sensing: taking shard %d of the telemetry from %s (consumer %s)", self.shard, self.url,
                 self.consumer)

    async def stop(self) -> None:
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._acking:
            await asyncio.gather(*self._acking, return_exceptions=True)
        if self._nc is not None:
            with contextlib.suppress(Exception):
                await self._nc.close()
            self._nc = None

    @property
    def connected(self) -> bool:
        return bool(self._nc is not None and self._nc.is_connected)

    def stats(self) -> dict[str, Any]:
        return {"url": self.url, "consumer": self.consumer, "subject": self.subject,
                "connected": self.connected, "messages": self.messages, "batches": self.batches,
                "acked": self.acked, "failed_batches": self.failed_batches, "pending": 0}

    async def _run(self, subscription: Any) -> None:
        while not self._stopping:
            try:
                fetched = await subscription.fetch(self.fetch_messages, timeout=self.fetch_timeout_s)
            except (TimeoutError, nats.errors.TimeoutError):
                continue
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - a lost connection: nats-py reconnects; try again
                log.warning("JetStream fetch on %s failed: %s", self.subject, exc)
                await asyncio.sleep(0.5)
                continue
            messages: list[RawMessage] = []
            for msg in fetched:
                try:
                    messages += unpack(msg.data)
                except msgspec.DecodeError:
                    log.error("JetStream message %s on %s is not packed telemetry; dropped", msg.reply,
                              self.subject)
                    await msg.term()
            try:
                await self.on_batch(messages)
            except asyncio.CancelledError:
                raise
            except Exception:
                self.failed_batches += 1
                log.exception("JetStream batch of %d messages failed; JetStream redelivers it", len(messages))
                for msg in fetched:
                    with contextlib.suppress(Exception):
                        await msg.nak(delay=1.0)
                continue
            self.messages += len(messages)
            self.batches += 1
            promise = self.durable() if self.durable is not None and messages else None
            task = asyncio.create_task(self._ack_after(promise, fetched))
            self._acking.add(task)
            task.add_done_callback(self._acking.discard)

    async def _ack_after(self, promise: Awaitable[None] | None, fetched: list[Any]) -> None:
        if promise is not None:
            try:
                await promise
            except Exception as exc:  # noqa: BLE001 - not durable: leave them to be redelivered
                log.error("readings of %d JetStream messages were not made durable (%s)", len(fetched), exc)
                return
        for msg in fetched:
            with contextlib.suppress(Exception):
                await msg.ack()
                self.acked += 1
