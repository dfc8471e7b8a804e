"""MqttSource against the real Mosquitto: batches, QoS 1 redelivery after a failed callback and after kill -9,
shared subscriptions, reconnects, and URL errors.

Messages are published with the simulator's raw MQTT 3.1.1 publisher (`citybrain.sim.wire`), which waits
for the broker's PUBACKs at QoS 1. Every test uses its own topic root, so tests (and other processes on the
broker) do not see each other's messages.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from citybrain.core.errors import InvalidInput
from citybrain.sensing.ingest.mqtt import (
    BrokerUnavailable,
    MqttSource,
    RawMessage,
    parse_broker_url,
    remaining_length,
)
from citybrain.sim import wire
from tests.sensing.processes import own_broker, require_mosquitto_binary
from tests.services import MQTT_HOST, MQTT_PORT, require_mqtt

BROKER = f"mqtt://{MQTT_HOST}:{MQTT_PORT}"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def root() -> str:
    """A topic root of this test's own."""
    return f"cbtest-{uuid.uuid4().hex[:10]}"


def telemetry(root: str, count: int, start: int = 0) -> list[tuple[str, bytes]]:
    return [(f"{root}/310115/air_quality/AQ-{i:07d}/telemetry",
             b'{"ts":1764590400.0,"seq":%d,"pm25":35.2}' % i) for i in range(start, start + count)]


async def publish(messages: list[tuple[str, bytes]], *, qos: int = 0, url: str = BROKER) -> None:
    """Publish and, at QoS 1, wait until the broker acknowledged every message."""
    address = parse_broker_url(url)
    prefix = f"cbtest-pub-{uuid.uuid4().hex[:8]}"
    [publisher] = await wire.open_publishers(address, 1, client_id_prefix=prefix)
    try:
        data = b"".join(wire.publish_packet(t, p, qos=qos, packet_id=i % 65535 + 1)
                        for i, (t, p) in enumerate(messages))
        assert publisher.transport is not None
        publisher.transport.write(data)
        deadline = time.monotonic() + 10
        while qos and publisher.acks < len(messages):
            assert time.monotonic() < deadline, f"only {publisher.acks} of {len(messages)} PUBACKs"
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05 if not qos else 0)
    finally:
        publisher.close()


class Collector:
    """An on_batch callback that keeps what it is given."""

    def __init__(self) -> None:
        self.batches: list[list[RawMessage]] = []

    async def __call__(self, messages: list[RawMessage]) -> None:
        self.batches.append(messages)

    @property
    def messages(self) -> list[RawMessage]:
        return [m for batch in self.batches for m in batch]

    async def wait_for(self, count: int, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.messages) < count:
            assert time.monotonic() < deadline, f"received {len(self.messages)} of {count} messages"
            await asyncio.sleep(0.01)


@pytest.fixture
async def started() -> AsyncIterator[list[MqttSource]]:
    """Sources a test started; stopped at the end whatever happened."""
    sources: list[MqttSource] = []
    yield sources
    for source in sources:
        await source.stop()


async def start(sources: list[MqttSource], *args: object, **kwargs: object) -> MqttSource:
    source = MqttSource(*args, **kwargs)  # type: ignore[arg-type]
    await source.start(timeout=10)
    sources.append(source)
    return source


# -- URL and argument errors (no broker needed) --------------------------------------------------------------


@pytest.mark.parametrize("url, reason", [
    ("http://127.0.0.1:1883", "scheme 'http' is not mqtt:// or mqtts://"),
    ("127.0.0.1:1883", "is not a broker URL"),
    ("mqtt://:1883", "the host is missing"),
    ("mqtt://127.0.0.1:99999", "port must be a number"),
    ("mqtt://127.0.0.1:1883/topic", "no path, query or fragment"),
    ("", "is not a broker URL"),
])
def test_a_bad_url_is_a_clear_error(url: str, reason: str) -> None:
    with pytest.raises(InvalidInput, match="broker") as caught:
        MqttSource(url, Collector())
    assert reason in caught.value.detail


def test_urls_parse_with_defaults_and_credentials() -> None:
    plain = parse_broker_url("mqtt://broker.example")
    assert (plain.host, plain.port, plain.tls, plain.username) == ("broker.example", 1883, False, None)
    secure = parse_broker_url("mqtts://ingest:p%40ss%3Aword@broker.example")
    assert (secure.port, secure.tls, secure.username, secure.password) == (8883, True, "ingest", "p@ss:word")
    assert secure.url == "mqtts://ingest@broker.example:8883"  # no password in what gets logged
    assert parse_broker_url("mqtt://[::1]:1884").url == "mqtt://[::1]:1884"


def test_qos1_needs_a_stable_client_id() -> None:
    with pytest.raises(InvalidInput, match="stable client id"):
        MqttSource(BROKER, Collector(), qos=1)
    with pytest.raises(InvalidInput, match="qos"):
        MqttSource(BROKER, Collector(), qos=2, client_id="x")


# -- against the broker -------------------------------------------------------------------------------------


@pytest.mark.integration
@pytest.mark.anyio
async def test_messages_arrive_in_batches_with_their_topics_and_payloads(root: str,
                                                                        started: list[MqttSource]) -> None:
    require_mqtt()
    got = Collector()
    source = await start(started, BROKER, got, topics=[f"{root}/+/+/+/telemetry"], max_batch=100)
    sent = telemetry(root, 1000)
    before = time.time()
    await publish(sent)
    await got.wait_for(1000)
    assert [(t, p) for t, p, _ in got.messages] == sent  # all of them, in order
    assert all(len(batch) <= 100 for batch in got.batches)
    assert sum(len(batch) == 100 for batch in got.batches) >= 5  # a burst fills batches to max_batch
    assert all(before - 1 <= received <= time.time() + 1 for _, _, received in got.messages)
    stats = source.stats()
    assert stats["connected"] and stats["messages"] == 1000 and stats["batches"] == len(got.batches)
    assert stats["reconnects"] == 0 and stats["acked"] == 0


@pytest.mark.integration
@pytest.mark.anyio
async def test_a_small_batch_is_flushed_after_max_delay(root: str, started: list[MqttSource]) -> None:
    require_mqtt()
    got = Collector()
    await start(started, BROKER, got, topics=[f"{root}/#"], max_batch=1000, max_delay_s=0.05)
    published = time.monotonic()
    await publish(telemetry(root, 3))
    await got.wait_for(3, timeout=2)
    assert [len(b) for b in got.batches] == [3]
    assert time.monotonic() - published < 1.0


@pytest.mark.integration
@pytest.mark.anyio
async def test_qos1_acknowledges_only_after_the_callback_returned(root: str,
                                                                  started: list[MqttSource]) -> None:
    require_mqtt()
    release = asyncio.Event()
    got = Collector()

    async def slow(messages: list[RawMessage]) -> None:
        await release.wait()
        await got(messages)

    client_id = f"{root}-ingest"
    source = await start(started, BROKER, slow, topics=[f"{root}/#"], qos=1, client_id=client_id,
                         max_batch=50, session_expiry_s=30)
    await publish(telemetry(root, 120), qos=1)
    deadline = time.monotonic() + 5
    while source.stats()["messages"] < 120:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.01)
    assert source.stats()["acked"] == 0  # received, but the callback has not returned
    release.set()
    await got.wait_for(120)
    await asyncio.sleep(0.05)
    assert source.stats()["acked"] == 120


@pytest.mark.integration
@pytest.mark.anyio
async def test_a_busy_callback_stops_the_reading_at_max_pending(root: str, tmp_path: Path,
                                                                 started: list[MqttSource]) -> None:
    """Behind the callback, the source holds at most max_pending messages (plus one socket read) and
    leaves the rest with TCP and the broker, instead of reading everything into memory."""
    release = asyncio.Event()
    got = Collector()

    async def busy(messages: list[RawMessage]) -> None:
        await release.wait()
        await got(messages)

    with own_broker(tmp_path) as url:  # keeps every queued QoS 1 message (the system broker keeps 1,000)
        source = await start(started, url, busy, topics=[f"{root}/#"], qos=1, client_id=f"{root}-ingest",
                             max_batch=100, max_pending=500, session_expiry_s=30)
        sent = telemetry(root, 20_000)
        publishing = asyncio.create_task(publish(sent, qos=1, url=url))
        deadline = time.monotonic() + 10
        while not source.stats()["reading_paused"]:
            assert time.monotonic() < deadline, source.stats()
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.5)  # the broker goes on offering; the source must not take it
        held = source.stats()["messages"] - source.stats()["delivered"]
        assert held <= 500 + 1200, source.stats()  # one 64 KB read holds about 1,100 of these messages
        release.set()
        await publishing
        await got.wait_for(len(sent), timeout=30)
        assert {(t, p) for t, p, _ in got.messages} == set(sent)
        await source.stop()
        started.remove(source)


@pytest.mark.integration
@pytest.mark.anyio
async def test_qos1_a_failed_callback_gets_its_messages_again(root: str, started: list[MqttSource]) -> None:
    require_mqtt()
    got = Collector()
    failures = []

    async def flaky(messages: list[RawMessage]) -> None:
        if not failures:
            failures.append(len(messages))
            raise RuntimeError("the lake is down")
        await got(messages)

    client_id = f"{root}-ingest"
    source = MqttSource(BROKER, flaky, topics=[f"{root}/#"], qos=1, client_id=client_id, max_batch=40,
                        session_expiry_s=30, backoff_initial_s=0.05)
    await source.start()
    started.append(source)
    sent = telemetry(root, 200)
    await publish(sent, qos=1)
    await got.wait_for(200)
    assert {(t, p) for t, p, _ in got.messages} == set(sent)  # nothing lost
    stats = source.stats()
    assert stats["failed_batches"] == 1 and stats["reconnects"] >= 1
    assert stats["redelivered"] >= failures[0]  # the failed batch came back flagged DUP
    # the last batch is acknowledged once its callback has returned, a moment after the collector saw it:
    # stopping before that would leave it with the broker (which then rightly offers it again)
    deadline = time.monotonic() + 5
    while source.stats()["acked"] < len(sent):
        assert time.monotonic() < deadline, source.stats()
        await asyncio.sleep(0.01)
    await source.stop()
    started.remove(source)

    # Everything was acknowledged: the same session has nothing left to redeliver.
    again = Collector()
    await start(started, BROKER, again, topics=[f"{root}/#"], qos=1, client_id=client_id, session_expiry_s=1)
    await asyncio.sleep(0.5)
    assert again.messages == []


@pytest.mark.integration
@pytest.mark.anyio
async def test_qos1_with_group_commit_acknowledges_when_the_promise_completes(
        root: str, started: list[MqttSource]) -> None:
    """Delivery goes on while acknowledgements wait for the durability promise; they go out in order."""
    require_mqtt()
    got = Collector()
    promises: list[asyncio.Future[None]] = []

    def durable() -> asyncio.Future[None]:
        promises.append(asyncio.get_running_loop().create_future())
        return promises[-1]

    source = await start(started, BROKER, got, topics=[f"{root}/#"], qos=1, client_id=f"{root}-ingest",
                         max_batch=50, session_expiry_s=30, durable=durable)
    await publish(telemetry(root, 120), qos=1)
    await got.wait_for(120)  # every batch delivered although none is durable yet
    assert source.stats()["acked"] == 0 and len(promises) == len(got.batches) >= 3
    promises[1].set_result(None)  # a later batch is durable first: nothing may be acknowledged ahead
    await asyncio.sleep(0.05)
    assert source.stats()["acked"] == 0
    promises[0].set_result(None)
    await asyncio.sleep(0.05)
    first_two = len(got.batches[0]) + len(got.batches[1])
    assert source.stats()["acked"] == first_two
    for promise in promises[2:]:
        promise.set_result(None)
    await asyncio.sleep(0.05)
    assert source.stats()["acked"] == 120


@pytest.mark.integration
@pytest.mark.anyio
async def test_qos1_a_failed_promise_gets_its_messages_again(root: str, started: list[MqttSource]) -> None:
    require_mqtt()
    got = Collector()
    calls = []

    async def durable() -> None:
        calls.append(1)
        if len(calls) == 1:
            raise OSError("disk full")

    source = await start(started, BROKER, got, topics=[f"{root}/#"], qos=1, client_id=f"{root}-ingest",
                         max_batch=40, session_expiry_s=30, backoff_initial_s=0.05, durable=durable)
    sent = telemetry(root, 200)
    await publish(sent, qos=1)
    deadline = time.monotonic() + 10
    while source.stats()["acked"] < 200 or not source.connected:
        assert time.monotonic() < deadline, source.stats()
        await asyncio.sleep(0.02)
    stats = source.stats()
    assert stats["failed_batches"] == 1 and stats["reconnects"] >= 1 and stats["redelivered"] >= 1
    assert {(t, p) for t, p, _ in got.messages} == set(sent)  # what was not durable came again


CRASHING_INGEST = textwrap.dedent("""
    import asyncio, sys
    from citybrain.sensing.ingest.mqtt import MqttSource

    async def main():
        async def never_returns(messages):
            print(f"batch {len(messages)}", flush=True)
            await asyncio.sleep(3600)  # killed -9 in here: nothing was acknowledged

        source = MqttSource(sys.argv[1], never_returns, topics=[sys.argv[2]], qos=1, client_id=sys.argv[3],
                            max_batch=50, session_expiry_s=60)
        await source.start()
        print("ready", flush=True)
        await asyncio.sleep(3600)

    asyncio.run(main())
""")


@pytest.mark.integration
@pytest.mark.anyio
async def test_qos1_a_process_killed_before_acking_loses_nothing(root: str,
                                                                 started: list[MqttSource]) -> None:
    require_mqtt()
    client_id = f"{root}-ingest"
    child = await asyncio.to_thread(
        subprocess.Popen, [sys.executable, "-c", CRASHING_INGEST, BROKER, f"{root}/#", client_id],
        stdout=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parents[2])
    try:
        assert child.stdout is not None
        assert await asyncio.wait_for(asyncio.to_thread(child.stdout.readline), 20) == "ready\n"
        sent = telemetry(root, 300)
        await publish(sent, qos=1)
        line = await asyncio.wait_for(asyncio.to_thread(child.stdout.readline), 10)
        assert line.startswith("batch ")
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=5)
    finally:
        if child.poll() is None:
            child.kill()

    got = Collector()
    source = await start(started, BROKER, got, topics=[f"{root}/#"], qos=1, client_id=client_id,
                         session_expiry_s=1)
    await got.wait_for(300)
    assert {(t, p) for t, p, _ in got.messages} == set(sent)
    # What the dead process held came back flagged DUP.
    assert source.stats()["redelivered"] >= int(line.split()[1])


@pytest.mark.integration
@pytest.mark.anyio
async def test_a_shared_subscription_splits_the_messages(root: str, started: list[MqttSource]) -> None:
    require_mqtt()
    first, second = Collector(), Collector()
    for got in (first, second):
        await start(started, BROKER, got, topics=[f"{root}/+/+/+/telemetry"], shared_group=f"{root}-workers")
    sent = telemetry(root, 400)
    await publish(sent)
    deadline = time.monotonic() + 10
    while len(first.messages) + len(second.messages) < 400:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.1)
    one = {(t, p) for t, p, _ in first.messages}
    two = {(t, p) for t, p, _ in second.messages}
    assert one and two, "both workers get a share"
    assert not one & two and one | two == set(sent)


@pytest.mark.anyio
async def test_an_unreachable_broker_is_a_clear_error() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # nothing listens here once the probe is closed
    source = MqttSource(f"mqtt://127.0.0.1:{port}", Collector(), backoff_initial_s=0.05)
    with pytest.raises(BrokerUnavailable, match="connection refused"):
        await source.start(timeout=1.0)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _start_mosquitto(config: Path) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(["mosquitto", "-c", str(config)], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    port = int(config.read_text().split()[1])
    deadline = time.monotonic() + 5
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return process
        except OSError:
            assert time.monotonic() < deadline, "mosquitto did not start"
            time.sleep(0.05)


@pytest.mark.integration
@pytest.mark.anyio
async def test_the_source_reconnects_when_the_broker_comes_back(root: str, tmp_path: Path,
                                                             started: list[MqttSource]) -> None:
    require_mosquitto_binary()
    port = _free_port()
    config = tmp_path / "mosquitto.conf"
    # No persistence: the restarted broker has forgotten the session, so the source must subscribe again.
    config.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\nset_tcp_nodelay true\n"
                      "persistence false\n")
    broker = _start_mosquitto(config)
    try:
        got = Collector()
        url = f"mqtt://127.0.0.1:{port}"
        source = await start(started, url, got, topics=[f"{root}/#"], qos=1, client_id=f"{root}-ingest",
                             backoff_initial_s=0.1, backoff_max_s=0.5)
        await publish(telemetry(root, 10), qos=1, url=url)
        await got.wait_for(10)

        broker.terminate()
        broker.wait(timeout=5)
        deadline = time.monotonic() + 5
        while source.stats()["connected"]:
            assert time.monotonic() < deadline, "the source did not notice the broker going away"
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.6)  # long enough for attempts to fail while the broker is away

        broker = _start_mosquitto(config)
        deadline = time.monotonic() + 10
        while not source.stats()["connected"]:
            assert time.monotonic() < deadline, f"no reconnect: {source.stats()}"
            await asyncio.sleep(0.02)
        await publish(telemetry(root, 10, start=10), qos=1, url=url)
        await got.wait_for(20)
        stats = source.stats()
        assert stats["reconnects"] == 1 and stats["connect_failures"] >= 1
    finally:
        for source in list(started):
            await source.stop()
            started.remove(source)
        broker.terminate()
        broker.wait(timeout=5)


@pytest.mark.parametrize("encoded, expected", [
    (b"\x00", (0, 1)), (b"\x7f", (127, 1)), (b"\x80\x01", (128, 2)), (b"\xff\x7f", (16_383, 2)),
    (b"\xff\xff\xff\x7f", (268_435_455, 4)),  # the largest, §1.5.5
    (b"\x80", (-1, 1)), (b"\xff\xff", (-1, 2)),  # not all there yet
])
def test_variable_byte_integers_decode_as_the_spec_says(encoded: bytes, expected: tuple[int, int]) -> None:
    assert remaining_length(encoded, 0, len(encoded)) == expected
    assert remaining_length(b"\x30" + encoded, 1, len(encoded) + 1) == (expected[0], expected[1] + 1)


def test_a_variable_byte_integer_of_five_bytes_is_malformed() -> None:
    with pytest.raises(ValueError, match="malformed"):
        remaining_length(b"\xff\xff\xff\xff\x01", 0, 5)
