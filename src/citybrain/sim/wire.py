"""A minimal MQTT 3.1.1 client for load generation and counting, on asyncio protocols.

The load generator must publish 100,000+ messages a second from one Python process, so it does not use a
general MQTT client: it speaks just enough MQTT 3.1.1 - CONNECT/CONNACK, PUBLISH at QoS 0 or 1 (counting
the broker's PUBACKs), PINGREQ on idle connections, DISCONNECT - and writes PUBLISH packets it built
beforehand as raw bytes, many per write. The counting subscriber likewise only CONNECTs, SUBSCRIBEs and
counts (or keeps) PUBLISH packets, acknowledging QoS 1 ones in one write per socket read. Neither is a
general-purpose MQTT client: no QoS 2, no retained or will messages, no session state across connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from citybrain.sensing.ingest.mqtt import BrokerAddress, BrokerUnavailable, remaining_length

log = logging.getLogger(__name__)

PINGREQ = b"\xc0\x00"
DISCONNECT = b"\xe0\x00"
CONNACK_REASONS = {1: "unacceptable protocol version", 2: "client id rejected", 3: "server unavailable",
                   4: "bad user name or password", 5: "not authorised"}


def varint(value: int) -> bytes:
    """MQTT's variable byte integer (remaining length)."""
    out = bytearray()
    while True:
        value, digit = divmod(value, 128)
        out.append(digit | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _text(value: str | bytes) -> bytes:
    data = value.encode() if isinstance(value, str) else value
    return struct.pack("!H", len(data)) + data


def connect_packet(client_id: str, *, username: str | None = None, password: str | None = None,
                   keepalive: int = 60, clean: bool = True) -> bytes:
    """An MQTT 3.1.1 CONNECT packet."""
    flags = (0x02 if clean else 0) | (0x80 if username is not None else 0)
    flags |= 0x40 if username is not None and password is not None else 0
    body = _text("MQTT") + bytes([4, flags]) + struct.pack("!H", keepalive) + _text(client_id)
    if username is not None:
        body += _text(username)
        if password is not None:
            body += _text(password)
    return b"\x10" + varint(len(body)) + body


def publish_packet(topic: str, payload: bytes, *, qos: int = 0, packet_id: int = 1) -> bytes:
    """An MQTT 3.1.1 PUBLISH packet."""
    body = _text(topic) + (struct.pack("!H", packet_id) if qos else b"") + payload
    return bytes([0x30 | (qos << 1)]) + varint(len(body)) + body


def subscribe_packet(filters: Sequence[str], qos: int, packet_id: int = 1) -> bytes:
    """An MQTT 3.1.1 SUBSCRIBE packet for `filters`, all at `qos`."""
    body = struct.pack("!H", packet_id) + b"".join(_text(f) + bytes([qos]) for f in filters)
    return b"\x82" + varint(len(body)) + body


def split_packets(data: bytes, start: int = 0) -> tuple[list[tuple[int, int, int]], int]:
    """(command, body start, body end) of every complete packet from `start`, and where the rest begins."""
    packets: list[tuple[int, int, int]] = []
    size = len(data)
    pos = start
    while size - pos >= 2:
        length, index = remaining_length(data, pos + 1, size)
        if length < 0:
            return packets, pos
        if index + length > size:
            break
        packets.append((data[pos], index, index + length))
        pos = index + length
    return packets, pos


class _Handshake(asyncio.Protocol):
    """CONNECT on connection, CONNACK awaited by `ready`; subclasses handle what comes after."""

    def __init__(self, connect: bytes) -> None:
        self._connect = connect
        self.transport: asyncio.Transport | None = None
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._buffer = b""
        self.last_write = time.monotonic()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        transport.write(self._connect)  # type: ignore[attr-defined]

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.ready.done():
            reason = exc or "by the broker"
            self.ready.set_exception(ConnectionError(f"connection closed before CONNACK ({reason})"))
        if not self.closed.done():
            self.closed.set_result(None)

    def _handshake(self, data: bytes) -> bytes:
        """Consume the CONNACK at the start of the stream; return what follows it."""
        data = self._buffer + data
        if len(data) < 4:
            self._buffer = data
            return b""
        self._buffer = b""
        if data[0] != 0x20:
            self.ready.set_exception(ConnectionError(f"expected CONNACK, got packet type 0x{data[0]:02x}"))
            return b""
        if data[3] != 0:
            reason = CONNACK_REASONS.get(data[3], f"code {data[3]}")
            self.ready.set_exception(BrokerUnavailable(f"the broker refused the connection: {reason}"))
            return b""
        self.ready.set_result(None)
        return data[4:]

    @property
    def is_open(self) -> bool:
        return self.transport is not None and not self.transport.is_closing() and self.ready.done() \
            and self.ready.exception() is None

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            with contextlib.suppress(Exception):
                self.transport.write(DISCONNECT)
            self.transport.close()


class PublisherProtocol(_Handshake):
    """One load-generator connection. The generator writes prebuilt PUBLISH packets to `transport`;
    this counts the broker's PUBACKs and PINGRESPs and tracks write flow control (`writable`)."""

    def __init__(self, connect: bytes) -> None:
        super().__init__(connect)
        self.acks = 0
        self.pongs = 0
        self.writable = asyncio.Event()
        self.writable.set()
        self._rest = b""

    def data_received(self, data: bytes) -> None:
        if not self.ready.done():
            data = self._handshake(data)
            if not data:
                return
        data = self._rest + data
        # Fast path: a read of whole 4-byte PUBACKs (0x40 0x02 id id), the usual case at QoS 1.
        whole = len(data) - len(data) % 4
        if whole and data[0:whole:4].count(0x40) == whole // 4 and data[1:whole:4].count(0x02) == whole // 4:
            self.acks += whole // 4
            if whole < len(data):  # a tail shorter than 4 bytes: part of a PUBACK, or a whole PINGRESP
                self._count_slow(data[whole:])
            else:
                self._rest = b""
            return
        self._count_slow(data)

    def _count_slow(self, data: bytes) -> None:
        packets, rest = split_packets(data)
        for cmd, _, _ in packets:
            kind = cmd & 0xF0
            if kind == 0x40:
                self.acks += 1
            elif kind == 0xD0:
                # The broker answers a PINGREQ after everything sent before it on this connection: a
                # PINGRESP marks the point up to which the broker has consumed the connection.
                self.pongs += 1
        self._rest = data[rest:]

    def pause_writing(self) -> None:
        self.writable.clear()

    def resume_writing(self) -> None:
        self.writable.set()

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self.writable.set()  # nobody may wait for a dead connection


class CountingProtocol(_Handshake):
    """A subscriber that counts PUBLISH packets (and keeps their topic and payload when `keep`), for
    throughput measurements and tests. QoS 1 messages are acknowledged once per socket read.

    With `coalesce_s` > 0 it stops reading for that long after each read, so that the kernel gathers
    many messages per read: a broker writing one small segment per message otherwise costs the counter a
    read system call per message, which on a 2-core machine takes CPU from the broker being measured."""

    def __init__(self, connect: bytes, filters: Sequence[str], qos: int, *, keep: bool = False,
                 coalesce_s: float = 0.0) -> None:
        super().__init__(connect)
        self.filters = list(filters)
        self.qos = qos
        self.keep = keep
        self.coalesce_s = coalesce_s
        self.count = 0
        self.bytes = 0
        self.first_at: float | None = None
        self.last_at: float | None = None
        self.messages: list[tuple[str, bytes]] = []
        self.subscribed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._rest = b""
        self._reading_paused = False

    def data_received(self, data: bytes) -> None:
        if not self.ready.done():
            data = self._handshake(data)
            if self.ready.done() and self.ready.exception() is None:
                self.transport.write(subscribe_packet(self.filters, self.qos))  # type: ignore[union-attr]
            if not data:
                return
        self.bytes += len(data)
        data = self._rest + data
        if self.keep or self.qos or not self.subscribed.done():
            pos, count = self._parse(data)
        else:
            pos, count = _count_publishes(data)
        self._rest = data[pos:]
        if count:
            now = time.monotonic()
            if self.first_at is None:
                self.first_at = now
            self.last_at = now
            self.count += count
        if self.coalesce_s and self.transport is not None and not self._reading_paused:
            self._reading_paused = True
            self.transport.pause_reading()
            asyncio.get_running_loop().call_later(self.coalesce_s, self._resume)

    def _resume(self) -> None:
        self._reading_paused = False
        if self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()

    def _parse(self, data: bytes) -> tuple[int, int]:
        packets, rest = split_packets(data)
        count = 0
        mids: list[int] = []
        for cmd, start, end in packets:
            kind = cmd & 0xF0
            if kind == 0x30:
                count += 1
                topic_end = start + 2 + ((data[start] << 8) | data[start + 1])
                at = topic_end
                if cmd & 0x06:
                    mids.append((data[at] << 8) | data[at + 1])
                    at += 2
                if self.keep:
                    self.messages.append((data[start + 2:topic_end].decode(), data[at:end]))
            elif kind == 0x90 and not self.subscribed.done():
                codes = data[start + 2:end]
                if any(code >= 0x80 for code in codes):
                    refused = BrokerUnavailable(f"subscription to {self.filters} refused")
                    self.subscribed.set_exception(refused)
                else:
                    self.subscribed.set_result(None)
        if mids and self.transport is not None:
            packed = np.asarray(mids, dtype=np.uint32) | np.uint32(0x40020000)
            self.transport.write(packed.astype(">u4").tobytes())
        return rest, count


def _count_publishes(data: bytes) -> tuple[int, int]:
    """Walk whole packets and count the PUBLISH ones: (bytes walked, count). The counter's hot loop."""
    size = len(data)
    pos = count = 0
    while size - pos >= 2:
        byte = data[pos + 1]
        if byte < 0x80:
            end = pos + 2 + byte
        else:
            length, index = remaining_length(data, pos + 1, size)
            if length < 0:
                return pos, count
            end = index + length
        if end > size:
            break
        if data[pos] & 0xF0 == 0x30:
            count += 1
        pos = end
    return pos, count


async def connect_protocol(address: BrokerAddress, factory: Any, timeout: float) -> Any:
    """Open a TCP (or TLS) connection with `factory`'s protocol and wait for its CONNACK; any failure is a
    BrokerUnavailable that says why."""
    loop = asyncio.get_running_loop()
    try:
        _, protocol = await asyncio.wait_for(
            loop.create_connection(factory, address.host, address.port, ssl=True if address.tls else None),
            timeout)
        await asyncio.wait_for(protocol.ready, timeout)
    except BrokerUnavailable:
        raise
    except (OSError, TimeoutError, ConnectionError) as exc:
        reason = "connection refused (is the broker running?)" if isinstance(exc, ConnectionRefusedError) \
            else (str(exc) or type(exc).__name__)
        raise BrokerUnavailable(f"cannot connect to the MQTT broker {address.url}: {reason}") from None
    return protocol


async def open_publishers(address: BrokerAddress, count: int, *, client_id_prefix: str, keepalive: int = 60,
                          concurrency: int = 64, timeout: float = 10.0,
                          protocol: Callable[[bytes], Any] = PublisherProtocol) -> list[Any]:
    """Open `count` publisher connections (at most `concurrency` handshakes at a time, so that the broker's
    listen backlog does not overflow); `protocol(connect_packet)` makes each connection's protocol. Closes
    them all and raises BrokerUnavailable if one fails."""
    gate = asyncio.Semaphore(concurrency)
    opened: list[Any] = [None] * count

    async def one(index: int) -> None:
        packet = connect_packet(f"{client_id_prefix}-{index:05d}", username=address.username,
                                password=address.password, keepalive=keepalive)
        async with gate:
            opened[index] = await connect_protocol(address, lambda: protocol(packet), timeout)

    try:
        await asyncio.gather(*(one(i) for i in range(count)))
    except BaseException:
        for connection in opened:
            if connection is not None:
                connection.close()
        raise
    return [p for p in opened if p is not None]


async def open_counter(address: BrokerAddress, filters: Sequence[str], *, qos: int = 0, keep: bool = False,
                       client_id: str = "citybrain-sim-counter", coalesce_s: float = 0.0,
                       timeout: float = 10.0) -> CountingProtocol:
    """Connect a counting subscriber and wait for its SUBACK."""
    packet = connect_packet(client_id, username=address.username, password=address.password, keepalive=0)
    protocol: CountingProtocol = await connect_protocol(
        address, lambda: CountingProtocol(packet, filters, qos, keep=keep, coalesce_s=coalesce_s), timeout)
    try:
        await asyncio.wait_for(protocol.subscribed, timeout)
    except TimeoutError:
        protocol.close()
        raise BrokerUnavailable(f"no SUBACK from {address.url} within {timeout:.0f} s") from None
    return protocol
