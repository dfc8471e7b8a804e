"""MQTT ingest: `MqttSource` subscribes to device telemetry and hands it on in batches.

    source = MqttSource("mqtt://127.0.0.1:1883", pipeline.process, qos=1, client_id="ingest-1")
    await source.start()          # connected and subscribed
    ...
    await source.stop()           # delivers what it holds, acknowledges it, disconnects

Messages reach the async callback `on_batch(messages)` as lists of `RawMessage = (topic, payload,
received)`; a batch is cut at `max_batch` messages or `max_delay_s` after its first message, whichever
comes first. Batches are delivered one at a time, in arrival order.

QoS 1 and crashes. At QoS 1 a message is acknowledged (PUBACK) only after the callback that received it
returned; the session is persistent (MQTT 5 clean start off, session expiry), so whatever was not
acknowledged when the process died (kill -9 included) or the callback raised is redelivered by the broker
when the source connects again with the same `client_id`. Delivery is therefore at least once: after a
crash the callback can see a message twice (the pipeline drops duplicates by device `ts`/`seq`).

Why the source reads PUBLISH packets itself. gmqtt either acknowledges before `on_message` runs
(optimistic acknowledgement, the default and the only mode for MQTT 3.1.1) or, with
`optimistic_acknowledgement=False`, wraps every message in an asyncio Task and acknowledges when that
task returns (an async `on_message` returning the reason code). Measured on this machine kind, 200k
PUBLISH packets fed through gmqtt's packet reader: optimistic `on_message` 8-10 µs per message, the
task-per-message mode 28-42 µs, replacing only gmqtt's QoS 1 handler 9 µs; reading the packets directly
(topic, packet id and payload by slicing, one timestamp per socket read, the acknowledgements of a whole
batch in one write) 1.4-1.8 µs. So gmqtt connects, subscribes, keeps the connection alive and handles
every other packet, and this module installs its own reader on gmqtt's protocol object (`_read_packet`,
checked at import, written against gmqtt 0.8). End to end from Mosquitto, system calls and event loop
included, a message costs the source about 4 µs at QoS 0 and 6 µs at QoS 1 (8 µs without read
coalescing, see `read_coalesce_s`). Reconnects are this module's too (exponential back-off with jitter, a
fresh gmqtt client per connection), because gmqtt's own retry waits a fixed delay and cannot be told
that a callback failed.

Group commit: with `durable=request`, a batch that holds QoS 1 messages is acknowledged only when the
awaitable that `request()` returns (after the callback) completes, and the source goes on delivering
meanwhile; acknowledgements still go out in arrival order. So the callback can buffer what it was given
and make many batches durable with one flush (one fsync), instead of flushing before each return. A
promise that fails counts as a failed batch: the connection is reset and the broker resends.

Shared subscriptions: `shared_group="ingest"` subscribes to `$share/ingest/{filter}`, so N sources with
distinct client ids split the messages between them (MQTT 5; Mosquitto ≥ 1.6).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import ssl as ssl_module
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Self
from urllib.parse import unquote, urlsplit

import gmqtt
import numpy as np
from gmqtt.mqtt.constants import MQTTv50
from gmqtt.mqtt.handler import MQTTConnectError
from gmqtt.mqtt.package import Package
from gmqtt.mqtt.protocol import MQTTProtocol

from citybrain.core.errors import CityBrainError, InvalidInput

log = logging.getLogger(__name__)

RawMessage = tuple[str, bytes, float]
"""(topic, payload, received epoch seconds) — one MQTT message as the ingest pipeline takes it."""

OnBatch = Callable[[list[RawMessage]], Awaitable[None]]
Durability = Callable[[], Awaitable[None]]

DEFAULT_TOPICS = ("city/+/+/+/telemetry",)
SCHEMES = {"mqtt": (1883, False), "tcp": (1883, False), "mqtts": (8883, True), "ssl": (8883, True)}

# CONNACK refusals that waiting does not fix (MQTT 3.1.1 and 5 codes): fail start() instead of retrying.
COALESCE_BELOW = 32_768  # reads smaller than this pause reading for `read_coalesce_s`
_PERMANENT_CONNACK = {1, 2, 4, 5, 128, 129, 130, 132, 133, 134, 135, 138, 140, 149, 156, 157}

if not (hasattr(MQTTProtocol, "_read_packet") and hasattr(gmqtt.Client, "_create_connection")):
    raise ImportError(f"gmqtt {getattr(gmqtt, '__version__', '?')} lacks the protocol internals MqttSource "
                      "reads packets through (MQTTProtocol._read_packet, Client._create_connection)")


class BrokerUnavailable(CityBrainError):
    """The broker could not be reached, refused the connection or refused a subscription."""

    status = 503
    title = "Broker unavailable"
    slug = "broker-unavailable"


@dataclass(frozen=True, slots=True)
class BrokerAddress:
    """Where a broker is and how to log in, parsed from `mqtt[s]://[user[:password]@]host[:port]`."""

    host: str
    port: int
    tls: bool = False
    username: str | None = None
    password: str | None = None

    @property
    def url(self) -> str:
        """The address as a URL without the password (safe to log)."""
        user = f"{self.username}@" if self.username else ""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'mqtts' if self.tls else 'mqtt'}://{user}{host}:{self.port}"


def parse_broker_url(url: str) -> BrokerAddress:
    """Parse a broker URL: scheme mqtt:// (or tcp://, port 1883) or mqtts:// (ssl://, 8883), an optional
    percent-encoded user name and password, a host and an optional port. Anything else is InvalidInput
    with a message that says what is wrong."""
    text = (url or "").strip()
    if "://" not in text:
        raise InvalidInput.at("broker", f"{text!r} is not a broker URL; expected mqtt://host:port or "
                                        "mqtts://host:port")
    parts = urlsplit(text)
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        raise InvalidInput.at("broker", f"{text!r}: scheme {scheme!r} is not mqtt:// or mqtts://")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise InvalidInput.at("broker", f"{text!r}: a broker URL has no path, query or fragment")
    try:
        port = parts.port
    except ValueError:
        raise InvalidInput.at("broker", f"{text!r}: the port must be a number from 1 to 65535") from None
    if not parts.hostname:
        raise InvalidInput.at("broker", f"{text!r}: the host is missing")
    default_port, tls = SCHEMES[scheme]
    return BrokerAddress(
        host=parts.hostname, port=port or default_port, tls=tls,
        username=unquote(parts.username) if parts.username is not None else None,
        password=unquote(parts.password) if parts.password is not None else None)


def remaining_length(data: bytes, index: int, size: int) -> tuple[int, int]:
    """A variable byte integer (an MQTT remaining length or properties length, §1.5.5) whose bytes start at
    `index`: (value, the index after it); value -1 when its bytes are not all there before `size`. More
    than four bytes is a ValueError."""
    value, multiplier = 0, 1
    while index < size:
        byte = data[index]
        index += 1
        value += (byte & 0x7F) * multiplier
        if byte < 0x80:
            return value, index
        multiplier *= 128
        if multiplier > 2_097_152:
            raise ValueError("malformed MQTT variable byte integer")
    return -1, index


def _pubacks(mids: list[int]) -> bytes:
    """MQTT 5 PUBACKs with success (remaining length 2: reason code and properties omitted, §3.4.2.1)."""
    packed = np.asarray(mids, dtype=np.uint32) | np.uint32(0x40020000)
    return packed.astype(">u4").tobytes()


class _SourceClient(gmqtt.Client):
    """A gmqtt client for one connection of a source: PUBLISH packets go to the source's reader and a lost
    connection is reported to the source (which reconnects) instead of gmqtt retrying on its own."""

    def __init__(self, source: MqttSource, epoch: int, client_id: str, **kwargs: Any) -> None:
        super().__init__(client_id, **kwargs)
        self.source = source
        self.epoch = epoch
        self.transport: Any = None

    async def _create_connection(self, *args: Any, **kwargs: Any) -> Any:
        connection = await super()._create_connection(*args, **kwargs)
        source, epoch = self.source, self.epoch
        protocol = connection._protocol
        # Installed before CONNECT is sent, so every packet of this connection passes the source's reader.
        protocol._read_packet = lambda data: source._feed(epoch, connection, data)
        # Flow control lives here, in front of gmqtt's read loop, not on the transport: the StreamReader
        # gmqtt reads through pauses and resumes the transport itself as its buffer fills and drains, which
        # undoes a pause_reading() of ours. Held here, the loop stops taking data, the reader's buffer fills,
        # the reader pauses the socket and TCP pushes back on the broker.
        read = protocol.read

        async def gated_read(n: int = -1) -> bytes:
            gate = source._reading
            if not gate.is_set() and epoch == source._live_epoch:
                await gate.wait()
            return await read(n)

        protocol.read = gated_read
        self.transport = connection._transport
        return connection

    async def reconnect(self, delay: bool = False) -> None:
        self.source._connection_lost(self)


class MqttSource:
    """Subscribes to device telemetry on an MQTT broker and delivers it in batches to `on_batch`.

    `topics` are MQTT topic filters (default `city/+/+/+/telemetry`); `shared_group` turns each into the
    shared subscription `$share/{group}/{filter}`. `qos` 0 or 1; QoS 1 needs a stable `client_id`, under
    which the broker keeps the session for `session_expiry_s` while the source is away. `max_pending` bounds
    the messages held (queued batches plus the one filling); above it the source stops reading the socket,
    which pushes back on the broker. `receive_maximum` is the broker's window of unacknowledged QoS 1
    messages; keep it well above `max_batch`. `read_coalesce_s` (default 1 ms): after a small socket read
    the source stops reading for this long, so that the next read carries many messages instead of one
    (a broker with TCP_NODELAY sends each message in its own segment; reading them one by one costs a
    system call and an event-loop turn per message). It adds at most that much latency; 0 turns it off.
    """

    def __init__(
        self,
        url: str,
        on_batch: OnBatch,
        *,
        topics: Sequence[str] = DEFAULT_TOPICS,
        qos: int = 0,
        shared_group: str | None = None,
        client_id: str | None = None,
        max_batch: int = 5000,
        max_delay_s: float = 0.02,
        max_pending: int = 50_000,
        session_expiry_s: int = 3600,
        receive_maximum: int = 65535,
        keepalive_s: int = 60,
        connect_timeout_s: float = 5.0,
        backoff_initial_s: float = 0.25,
        backoff_max_s: float = 30.0,
        read_coalesce_s: float = 0.001,
        ssl_context: ssl_module.SSLContext | None = None,
        clock: Callable[[], float] = time.time,
        durable: Durability | None = None,
    ) -> None:
        self.address = parse_broker_url(url)
        if qos not in (0, 1):
            raise InvalidInput.at("qos", "must be 0 or 1")
        if not topics:
            raise InvalidInput.at("topics", "at least one topic filter is needed")
        if qos == 1 and not client_id:
            raise InvalidInput.at("client_id", "QoS 1 needs a stable client id: the broker keeps the session "
                                               "(and what was not acknowledged) under it across restarts")
        if shared_group is not None and (not shared_group or any(c in shared_group for c in "/+#")):
            raise InvalidInput.at("shared_group", "must be a non-empty name without '/', '+' or '#'")
        if max_batch < 1 or max_delay_s <= 0 or max_pending < max_batch:
            raise InvalidInput.at("max_batch",
                                  "needs max_batch ≥ 1, max_delay_s > 0 and max_pending ≥ max_batch")
        if not 2 <= receive_maximum <= 65535:
            raise InvalidInput.at("receive_maximum", "must be from 2 to 65535")
        self.on_batch = on_batch
        self.durable = durable
        self.qos = qos
        self.filters = [f"$share/{shared_group}/{t}" if shared_group else t for t in topics]
        self.client_id = client_id or f"citybrain-ingest-{uuid.uuid4().hex[:12]}"
        self.max_batch = max_batch
        self.max_delay_s = max_delay_s
        self.max_pending = max_pending
        self.session_expiry_s = int(session_expiry_s)
        self.receive_maximum = receive_maximum
        self.keepalive_s = keepalive_s
        self.connect_timeout_s = connect_timeout_s
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s
        self.read_coalesce_s = max(0.0, read_coalesce_s)
        self._ssl: ssl_module.SSLContext | bool = ssl_context or self.address.tls
        self._clock = clock

        self._batch: list[RawMessage] = []
        self._mids: list[int] = []
        self._queue: deque[tuple[int, list[RawMessage], list[int]]] = deque()
        # Delivered batches whose acknowledgements wait for their durability promise, in arrival order.
        self._acks: deque[tuple[int, list[int], asyncio.Future[None] | None]] = deque()
        self._ack_wakeup = asyncio.Event()
        self._acker: asyncio.Task[None] | None = None
        self._queued = 0
        self._timer: asyncio.TimerHandle | None = None
        self._wakeup = asyncio.Event()
        self._idle = asyncio.Event()
        self._lost = asyncio.Event()
        self._ready = asyncio.Event()
        self._client: _SourceClient | None = None
        self._epoch = 0
        self._live_epoch = -1
        self._paused = False
        self._coalescing = False
        self._stopping = False
        self._reading = asyncio.Event()  # open: gmqtt's read loop may take more data (see gated_read)
        self._reading.set()
        self._connected = False
        self._connected_at = 0.0
        self._delivered_since_connect = False
        self._supervisor: asyncio.Task[None] | None = None
        self._deliverer: asyncio.Task[None] | None = None
        self._fatal: BaseException | None = None
        self._gmqtt_log = log.getChild("gmqtt")

        self._messages = 0
        self._redelivered = 0
        self._batches = 0
        self._delivered = 0
        self._acked = 0
        self._failed_batches = 0
        self._dropped = 0
        self._reconnects = 0
        self._connect_failures = 0
        self._last_error: str | None = None

    # -- lifecycle ---------------------------------------------------------------------------------------

    async def start(self, *, timeout: float | None = 10.0) -> None:
        """Connect and subscribe; returns once the subscriptions are acknowledged. Raises BrokerUnavailable
        when that does not happen within `timeout` seconds or the broker refuses for good (bad credentials,
        a refused subscription). Afterwards the source reconnects by itself whenever the broker goes away."""
        if self._supervisor is not None:
            raise RuntimeError("MqttSource.start() was called twice")
        self._stopping = False
        self._ready.clear()
        self._fatal = None
        self._idle.set()
        self._deliverer = asyncio.create_task(self._deliver(), name=f"mqtt-deliver-{self.client_id}")
        self._acker = asyncio.create_task(self._acknowledge(), name=f"mqtt-ack-{self.client_id}")
        self._supervisor = asyncio.create_task(self._supervise(), name=f"mqtt-supervise-{self.client_id}")
        ready = asyncio.create_task(self._ready.wait())
        try:
            await asyncio.wait({ready, self._supervisor}, timeout=timeout,
                               return_when=asyncio.FIRST_COMPLETED)
        finally:
            ready.cancel()
        if not self._ready.is_set():
            reason = self._fatal or self._last_error or "no answer"
            await self._shutdown()
            raise BrokerUnavailable(f"cannot subscribe at the MQTT broker {self.address.url}: {reason}")
        log.info("MQTT source %s subscribed to %s at %s (QoS %d)", self.client_id, ", ".join(self.filters),
                 self.address.url, self.qos)

    async def stop(self, *, timeout: float = 10.0) -> None:
        """Stop reading, deliver (and at QoS 1 acknowledge) what was received, then disconnect. The broker
        keeps a QoS 1 session for `session_expiry_s`, holding what arrives meanwhile."""
        if self._supervisor is None:
            return
        self._stopping = True
        self._update_gate()
        self._cut()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._drained(), timeout)
        await self._shutdown()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    def stats(self) -> dict[str, Any]:
        """Counters and state: `connected`, `messages` received, `batches` delivered, `reconnects` after
        a lost connection, and the details (acknowledged, redelivered, failed batches, pending …)."""
        return {
            "broker": self.address.url, "client_id": self.client_id, "qos": self.qos,
            "topics": list(self.filters),
            "connected": self._connected, "messages": self._messages, "redelivered": self._redelivered,
            "batches": self._batches, "delivered": self._delivered, "acked": self._acked,
            "failed_batches": self._failed_batches, "dropped": self._dropped,
            "pending": self._queued + len(self._batch), "reading_paused": self._paused,
            "reconnects": self._reconnects, "connect_failures": self._connect_failures,
            "last_error": self._last_error,
        }

    @property
    def connected(self) -> bool:
        """Whether a connection is up and subscribed."""
        return self._connected

    async def _drained(self) -> None:
        while self._queue or not self._idle.is_set() or self._acks:
            await self._idle.wait()
            await asyncio.sleep(0.001 if self._acks else 0)

    async def _shutdown(self) -> None:
        self._stopping = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for task in (self._supervisor, self._deliverer, self._acker):
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        client, self._client = self._client, None
        self._live_epoch = -1
        self._connected = False
        if client is not None:
            await self._close(client, graceful=True)
        self._supervisor = self._deliverer = self._acker = None
        for _, _, promise in self._acks:
            if promise is not None:
                promise.cancel()
        self._acks.clear()

    # -- connection supervision --------------------------------------------------------------------------

    def _new_client(self) -> _SourceClient:
        self._epoch += 1
        persistent = self.qos == 1
        properties: dict[str, Any] = {"receive_maximum": self.receive_maximum}
        if persistent and self.session_expiry_s > 0:
            properties["session_expiry_interval"] = self.session_expiry_s
        client = _SourceClient(self, self._epoch, self.client_id, clean_session=not persistent,
                               logger=self._gmqtt_log, **properties)
        if self.address.username is not None:
            client.set_auth_credentials(self.address.username, self.address.password)
        return client

    async def _open(self, client: _SourceClient) -> bool:
        """CONNECT and SUBSCRIBE on a fresh client; returns whether the broker still had our session."""
        session: dict[str, bool] = {}
        client.on_connect = lambda _c, flags, _rc, _props: session.setdefault("present", bool(flags))
        loop = asyncio.get_running_loop()
        subacks: dict[int, asyncio.Future[tuple[int, ...]]] = {}

        def on_subscribe(_client: Any, mid: int, granted: tuple[int, ...], _props: Any) -> None:
            future = subacks.get(mid)
            if future is not None and not future.done():
                future.set_result(tuple(granted))

        client.on_subscribe = on_subscribe
        await client.connect(self.address.host, self.address.port, ssl=self._ssl, keepalive=self.keepalive_s,
                             version=MQTTv50)
        # Subscribing again on a present session replaces the same subscription (MQTT §3.8.4), so it is
        # safe and it repairs a session the broker lost (restart without persistence).
        subscriptions = [gmqtt.Subscription(f, qos=self.qos, retain_handling_options=1) for f in self.filters]
        mid = client.subscribe(subscriptions)
        subacks[mid] = loop.create_future()
        granted = await subacks[mid]
        refused = [(f, code) for f, code in zip(self.filters, granted, strict=False) if code >= 0x80]
        if refused:
            raise _SubscriptionRefused(", ".join(f"{f} (reason 0x{code:02x})" for f, code in refused))
        lower = [f for f, code in zip(self.filters, granted, strict=False) if code < self.qos]
        if lower:
            log.warning("broker granted QoS 0 instead of %d for %s", self.qos, ", ".join(lower))
        return session.get("present", False)

    async def _supervise(self) -> None:
        attempt = 0
        while not self._stopping:
            client = self._new_client()
            self._client = client
            self._live_epoch = client.epoch
            self._lost.clear()
            try:
                opening = asyncio.ensure_future(self._open(client))
                lost = asyncio.ensure_future(self._lost.wait())
                try:
                    done, _ = await asyncio.wait({opening, lost}, timeout=self.connect_timeout_s,
                                                 return_when=asyncio.FIRST_COMPLETED)
                finally:
                    lost.cancel()
                if opening not in done:
                    opening.cancel()
                    with contextlib.suppress(BaseException):
                        await opening
                    raise ConnectionError("connection lost during CONNECT" if done
                                          else "no CONNACK/SUBACK in time")
                session_present = opening.result()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - every failure to connect is retried or reported
                self._live_epoch = -1
                self._client = None
                await self._close(client, graceful=False)
                self._last_error = _describe(exc)
                if _permanent(exc) and not self._ready.is_set():
                    self._fatal = BrokerUnavailable(self._last_error)
                    return
                attempt += 1
                self._connect_failures += 1
                delay = self._backoff(attempt)
                log.warning("MQTT %s: %s; retrying in %.1f s", self.address.url, self._last_error, delay)
                await asyncio.sleep(delay)
                continue

            if self._ready.is_set():
                self._reconnects += 1
                log.info("MQTT source %s reconnected to %s (session %s)", self.client_id, self.address.url,
                         "present" if session_present else "new")
            self._connected = True
            self._connected_at = time.monotonic()
            self._delivered_since_connect = False
            self._ready.set()
            await self._lost.wait()

            self._connected = False
            stable = self._delivered_since_connect or time.monotonic() - self._connected_at > 10.0
            attempt = 0 if stable else attempt
            self._abandon_epoch(client.epoch)
            self._client = None
            await self._close(client, graceful=True)
            if self._stopping:
                return
            attempt += 1
            delay = self._backoff(attempt)
            log.warning("MQTT source %s lost its connection to %s; reconnecting in %.1f s", self.client_id,
                        self.address.url, delay)
            await asyncio.sleep(delay)

    def _backoff(self, attempt: int) -> float:
        base = min(self.backoff_max_s, self.backoff_initial_s * 2 ** max(0, attempt - 1))
        return base * random.uniform(0.8, 1.2)

    def _connection_lost(self, client: _SourceClient) -> None:
        if client is self._client:
            self._lost.set()

    def _abandon_epoch(self, epoch: int) -> None:
        """A connection is gone. At QoS 1 everything from it that was not acknowledged comes again after the
        reconnect, so it is dropped rather than delivered twice; at QoS 0 it is still delivered."""
        self._live_epoch = -1
        if self.qos == 1:
            dropped = len(self._batch) + sum(len(b) for e, b, _ in self._queue if e == epoch)
            self._batch, self._mids = [], []
            kept = deque(entry for entry in self._queue if entry[0] != epoch)
            self._queue = kept
            self._queued = sum(len(b) for _, b, _ in kept)
            self._dropped += dropped
        else:
            self._cut()
        if self._timer is not None and not self._batch:
            self._timer.cancel()
            self._timer = None
        self._paused = self._coalescing = False
        self._update_gate()

    async def _close(self, client: _SourceClient, *, graceful: bool) -> None:
        connection = client._connection
        if connection is None:
            return
        try:
            if graceful and not connection.is_closing():
                await asyncio.wait_for(client.disconnect(), 2.0)
            else:
                await asyncio.wait_for(connection.close(), 2.0)
        except Exception as exc:  # noqa: BLE001 - closing a dead connection may fail in many ways
            log.debug("closing MQTT connection: %s", exc)

    def _force_reconnect(self, epoch: int, reason: str) -> None:
        self._last_error = reason
        if epoch == self._live_epoch:
            # Stop reading and acknowledging on this connection at once: nothing after the failed batch may
            # be acknowledged ahead of it, and the broker resends all of it after the reconnect.
            self._abandon_epoch(epoch)
            self._lost.set()

    # -- the hot path: reading packets -------------------------------------------------------------------

    def _feed(self, epoch: int, connection: Any, data: bytes) -> int:
        """Parse the complete MQTT packets at the start of `data` (gmqtt's read buffer) and return how many
        bytes they took (-1: malformed stream). PUBLISH packets land in the current batch; every other
        packet goes to gmqtt. This runs once per socket read, and its loop once per message."""
        if epoch != self._live_epoch:
            return len(data)  # a connection we already gave up; its messages come again or are QoS 0
        connection._last_data_in = time.monotonic()  # gmqtt's keep-alive watches this
        try:
            pos, count, dups = self._parse(epoch, connection, data)
        except (IndexError, ValueError):
            log.warning("malformed MQTT packet from %s; resetting the connection", self.address.url)
            return -1
        if count:
            self._messages += count
            self._redelivered += dups
            if self._batch and self._timer is None:
                self._timer = asyncio.get_running_loop().call_later(self.max_delay_s, self._on_timer)
            if self._queued + len(self._batch) >= self.max_pending and not self._paused:
                self._pause(connection)
        if self.read_coalesce_s and len(data) < COALESCE_BELOW and not self._paused and not self._coalescing:
            # A small read: let more gather before the next one (see `read_coalesce_s`).
            self._coalescing = True
            self._update_gate()
            asyncio.get_running_loop().call_later(self.read_coalesce_s, self._end_coalescing)
        return pos

    def _end_coalescing(self) -> None:
        self._coalescing = False
        self._update_gate()

    def _update_gate(self) -> None:
        if self._paused or self._coalescing or self._stopping:
            self._reading.clear()
        else:
            self._reading.set()

    def _parse(self, epoch: int, connection: Any, data: bytes) -> tuple[int, int, int]:
        """The per-message loop: returns (bytes parsed, messages, redelivered messages)."""
        received = self._clock()  # one timestamp per socket read: its messages arrived together
        size = len(data)
        batch = self._batch
        append = batch.append
        mids = self._mids
        max_batch = self.max_batch
        pos = count = dups = 0
        while size - pos >= 2:
            cmd = data[pos]
            byte = data[pos + 1]
            if byte < 0x80:
                start = pos + 2
                end = start + byte
            else:
                length, start = remaining_length(data, pos + 1, size)
                if length < 0:
                    break  # header incomplete: wait for more bytes
                end = start + length
            if end > size:
                break
            if cmd & 0xF0 == 0x30:
                topic_end = start + 2 + ((data[start] << 8) | data[start + 1])
                at = topic_end
                if cmd & 0x06:
                    mids.append((data[at] << 8) | data[at + 1])
                    at += 2
                    if cmd & 0x08:
                        dups += 1
                props = data[at]
                if props < 0x80:
                    at += 1 + props
                else:
                    length, at = remaining_length(data, at, end)
                    if length < 0:
                        raise IndexError("MQTT 5 properties run past their packet")
                    at += length
                try:
                    topic = data[start + 2:topic_end].decode()
                except UnicodeDecodeError:
                    topic = data[start + 2:topic_end].decode(errors="replace")
                append((topic, data[at:end], received))
                count += 1
                if len(batch) >= max_batch:
                    self._cut()
                    batch = self._batch
                    append = batch.append
                    mids = self._mids
            else:
                connection.put_package(Package(cmd, data[start:end]))
                if epoch != self._live_epoch:  # gmqtt saw DISCONNECT and we gave the connection up
                    return end, count, dups
            pos = end
        return pos, count, dups

    def _on_timer(self) -> None:
        self._timer = None
        self._cut()

    def _cut(self) -> None:
        """Close the filling batch and queue it for delivery."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._batch:
            return
        self._queue.append((self._live_epoch, self._batch, self._mids))
        self._queued += len(self._batch)
        self._batch = []
        self._mids = []
        self._wakeup.set()

    def _pause(self, connection: Any) -> None:
        self._paused = True
        self._update_gate()

    def _resume(self) -> None:
        self._paused = False
        self._update_gate()

    # -- delivery ----------------------------------------------------------------------------------------

    async def _deliver(self) -> None:
        while True:
            if not self._queue:
                self._idle.set()
                await self._wakeup.wait()
                self._wakeup.clear()
                continue
            self._idle.clear()
            epoch, messages, mids = self._queue.popleft()
            # Behind the broker, hand over everything that queued meanwhile (up to max_batch) in one call:
            # per-call costs (a thread hop, a transaction, one array op per type and rule) then spread over
            # thousands of messages instead of the few a 5 ms timer collected.
            if self._fits(epoch, len(messages)):
                messages, mids = list(messages), list(mids)
                while self._fits(epoch, len(messages)):
                    _, more, more_mids = self._queue.popleft()
                    messages += more
                    mids += more_mids
            self._queued -= len(messages)
            try:
                await self.on_batch(messages)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a failing callback must not kill the source
                self._failed_batches += 1
                log.exception("MQTT batch of %d messages failed in %s", len(messages), _name(self.on_batch))
                if self.qos == 1:
                    # Not acknowledged, so the broker still owns these; it resends them (and everything
                    # after them) once we reconnect, which is the only way to make it resend.
                    self._force_reconnect(epoch, f"callback failed: {type(exc).__name__}: {exc}")
            else:
                self._batches += 1
                self._delivered += len(messages)
                self._delivered_since_connect = True
                if mids:
                    self._after_durable(epoch, mids)
            if self._paused and self._queued + len(self._batch) < self.max_pending // 2:
                self._resume()

    def _fits(self, epoch: int, taken: int) -> bool:
        """Whether the next queued batch is of the same connection and still fits into one call."""
        queue = self._queue
        return bool(queue) and queue[0][0] == epoch and taken + len(queue[0][1]) <= self.max_batch

    def _after_durable(self, epoch: int, mids: list[int]) -> None:
        if self.durable is None and not self._acks:
            self._ack(epoch, mids)
            return
        promise = asyncio.ensure_future(self.durable()) if self.durable is not None else None
        self._acks.append((epoch, mids, promise))
        self._ack_wakeup.set()

    async def _acknowledge(self) -> None:
        """Send the acknowledgements of delivered batches in order, each once its promise completed."""
        while True:
            if not self._acks:
                self._ack_wakeup.clear()
                await self._ack_wakeup.wait()
                continue
            epoch, mids, promise = self._acks[0]
            if promise is not None:
                try:
                    await asyncio.shield(promise)
                except asyncio.CancelledError:
                    if not promise.cancelled():
                        raise
                except Exception as exc:  # noqa: BLE001 - not durable, however it failed: resend
                    self._failed_batches += 1
                    log.error("MQTT %s: making %d messages durable failed (%s); resetting the connection",
                              self.client_id, len(mids), exc)
                    self._drop_acks(epoch)
                    self._force_reconnect(epoch, f"durability failed: {type(exc).__name__}: {exc}")
                    continue
            if self._acks and self._acks[0][1] is mids:
                self._acks.popleft()
            self._ack(epoch, mids)

    def _drop_acks(self, epoch: int) -> None:
        """Forget the pending acknowledgements of a connection (what it delivered comes again)."""
        kept = deque(entry for entry in self._acks if entry[0] != epoch)
        for entry in self._acks:
            if entry[0] == epoch and entry[2] is not None and not entry[2].done():
                entry[2].add_done_callback(_retrieve)
        self._acks = kept

    def _ack(self, epoch: int, mids: list[int]) -> None:
        client = self._client
        if epoch != self._live_epoch or client is None or client.transport is None:
            return  # that connection is gone; the broker redelivers these
        if client.transport.is_closing():
            return
        client.transport.write(_pubacks(mids))
        self._acked += len(mids)


class _SubscriptionRefused(Exception):
    pass


def _retrieve(future: asyncio.Future[None]) -> None:
    """Mark a promise's outcome as seen (nobody waits for it any more)."""
    if not future.cancelled():
        future.exception()


def _permanent(exc: BaseException) -> bool:
    if isinstance(exc, _SubscriptionRefused):
        return True
    if isinstance(exc, MQTTConnectError):
        return getattr(exc, "_code", None) in _PERMANENT_CONNACK
    return isinstance(exc, ssl_module.SSLError)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, _SubscriptionRefused):
        return f"subscription refused: {exc}"
    if isinstance(exc, MQTTConnectError):
        return f"connection refused by the broker: {exc}"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused (is the broker running?)"
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _name(callback: Callable[..., Any]) -> str:
    return getattr(callback, "__qualname__", None) or repr(callback)
