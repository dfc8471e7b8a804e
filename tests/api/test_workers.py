"""Several API processes on one store: they share the NATS bus, so what one changes (entity types, the org
tree) every other process learns; a real `citybrain serve --workers 2` answers on one port."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import nats
import pytest
from typer.testing import CliRunner

from citybrain.cli import app as cli_app
from citybrain.core.context import Context
from citybrain.hub.entities import flows as entity_flows
from citybrain.hub.entities.types import AttrKind, AttrSpec, TypeSpec
from citybrain.hub.org.flows import announce, import_district
from citybrain.platform import Platform
from citybrain.settings import Settings
from tests.services import NATS_URL, require_nats

CTX = Context(actor="test", org_scope=None)


async def _delete_stream(stream: str) -> None:
    connection = await nats.connect(NATS_URL)
    try:
        try:
            await connection.jetstream().delete_stream(stream)
        except nats.js.errors.NotFoundError:
            pass
    finally:
        await connection.close()


@pytest.fixture
def stream() -> Iterator[str]:
    require_nats()
    name = f"TEST_WORKERS_{uuid.uuid4().hex[:10].upper()}"
    yield name
    asyncio.run(_delete_stream(name))


@pytest.fixture
async def two_processes(db_url: str, tmp_path: Path, stream: str) -> AsyncIterator[tuple[Platform, Platform]]:
    """Two platforms on one store and one bus stream, as two API worker processes would hold them."""
    first = Platform(Settings(db=db_url, home=tmp_path, bus=NATS_URL, bus_stream=stream))
    first.migrate()
    first.load_state()
    second = Platform(Settings(db=db_url, home=tmp_path, bus=NATS_URL, bus_stream=stream))
    second.load_state()
    await first.start()
    await second.start()
    try:
        yield first, second
    finally:
        await second.stop()
        await first.stop()
        second.dispose()
        first.dispose()


async def _eventually(check, what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting until {what}")
        await asyncio.sleep(0.02)


@pytest.mark.anyio
async def test_a_type_defined_in_one_process_is_known_in_the_other(two_processes) -> None:
    first, second = two_processes
    spec = TypeSpec(name="ParkingSpot", attributes={"status": AttrSpec(kind=AttrKind.string, enum=["free", "occupied"])})
    await entity_flows.define_type(first, spec, now=first.clock.now(), ctx=CTX)
    await _eventually(lambda: second.types.get("ParkingSpot") is not None, "the second process knows ParkingSpot")
    assert second.types.get("ParkingSpot").attributes["status"].enum == ["free", "occupied"]

    # The second process now validates against it: a bad value is refused there, a good one written.
    good = {"id": "urn:ngsi-ld:ParkingSpot:1", "type": "ParkingSpot", "status": {"type": "Property", "value": "free"}}
    bad = {"id": "urn:ngsi-ld:ParkingSpot:2", "type": "ParkingSpot", "status": {"type": "Property", "value": "gone"}}
    result = await entity_flows.upsert_batch(second, [good, bad], mode="replace", ctx=CTX)
    assert result.success == ["urn:ngsi-ld:ParkingSpot:1"]
    assert [e.field for e in result.errors] == ["[1].status.value"]


@pytest.mark.anyio
async def test_removing_a_type_reaches_every_process(two_processes) -> None:
    first, second = two_processes
    spec = TypeSpec(name="Kiosk", attributes={})
    await entity_flows.define_type(first, spec, now=first.clock.now(), ctx=CTX)
    await _eventually(lambda: second.types.get("Kiosk") is not None, "the second process knows Kiosk")
    await entity_flows.remove_type(second, "Kiosk", ctx=CTX)
    await _eventually(lambda: first.types.get("Kiosk") is None, "the first process forgot Kiosk")


@pytest.mark.anyio
async def test_an_org_tree_loaded_by_one_process_reaches_the_other(two_processes) -> None:
    first, second = two_processes
    assert len(second.org_tree) == 0
    await asyncio.to_thread(import_district, first, "xihu")
    await announce(first, "330106", CTX)
    await _eventually(lambda: len(second.org_tree) == len(first.org_tree) > 200, "the second process has the tree")
    assert second.org_tree.within("330106002051", ["330106"])


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


# ------------------------------------------------------------------------------ a real multi-worker server


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_serve_with_two_workers_answers_and_shares_changes(tmp_path: Path, stream: str) -> None:
    port = _free_port()
    env = {**os.environ, "CITYBRAIN_BUS_STREAM": stream}
    home = tmp_path / "home"
    assert CliRunner().invoke(cli_app, ["import", "divisions", "xihu", "--home", str(home)]).exit_code == 0
    server = subprocess.Popen(
        [sys.executable, "-m", "citybrain", "serve", "--home", str(home), "--port", str(port), "--workers", "2",
         "--bus", NATS_URL], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(base_url=base, timeout=10) as client:
            deadline = time.monotonic() + 60
            while True:
                try:
                    if client.get("/health").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if server.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"server did not come up: {server.stdout.read().decode()[-2000:]}")
                time.sleep(0.2)
            created = client.put("/api/v1/types/Bench", json={"name": "Bench", "attributes": {
                "seats": {"kind": "integer", "minimum": 1}}})
            assert created.status_code == 200, created.text
            # Fresh connections land on either worker; every one must know the new type.
            deadline = time.monotonic() + 10
            for n in range(40):
                with httpx.Client(base_url=base, timeout=10) as fresh:
                    while True:
                        response = fresh.post("/api/v1/entities", json={
                            "id": f"urn:ngsi-ld:Bench:{n}", "type": "Bench", "seats": {"type": "Property", "value": 3}})
                        if response.status_code == 201 or time.monotonic() > deadline:
                            break
                        time.sleep(0.05)  # the other worker may take a moment to hear of the type
                    assert response.status_code == 201, response.text
            listed = client.get("/api/v1/entities", params={"type": "Bench", "limit": 100}).json()
            assert len(listed["items"]) == 40
            # Connections opened together are spread over both processes (each has its own socket).
            clients = [httpx.Client(base_url=base, timeout=10) for _ in range(16)]
            try:
                answered_by = {fresh.get("/health").json()["process"] for fresh in clients}
            finally:
                for fresh in clients:
                    fresh.close()
            assert len(answered_by) == 2
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            raise
    assert server.returncode == 0


def test_serve_refuses_a_port_another_program_holds(tmp_path: Path, stream: str) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        result = CliRunner().invoke(cli_app, ["serve", "--home", str(tmp_path), "--port", str(port), "--workers", "2",
                                              "--bus", NATS_URL], env={"CITYBRAIN_BUS_STREAM": stream})
    assert result.exit_code == 2, result.output
    assert f"cannot listen on 127.0.0.1:{port}" in result.output


def test_several_workers_need_a_shared_bus(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli_app, ["serve", "--workers", "2", "--home", str(tmp_path)])
    assert result.exit_code == 2
    assert "--workers 2 needs a shared bus" in result.output
    assert len(result.output.strip().splitlines()) <= 2
