"""Entity writes publish EntityChanged events, after commit, with the writer's context."""

from __future__ import annotations

import anyio
import pytest

from citybrain.core.context import Context
from citybrain.core.events import EntityChanged
from citybrain.hub.entities import flows


@pytest.fixture
def anyio_backend():
    return "asyncio"


def streetlight(n: int, state: str = "on") -> dict:
    return {"id": f"urn:ngsi-ld:Streetlight:L{n}", "type": "Streetlight",
            "powerState": {"type": "Property", "value": state},
            "orgUnit": {"type": "Relationship", "object": "urn:ngsi-ld:OrgUnit:330106007"}}


@pytest.mark.anyio
async def test_changes_are_published_once_with_context(platform):
    received: list[EntityChanged] = []
    await platform.start()
    try:
        await platform.bus.subscribe(EntityChanged, received.append)
        ctx = Context(actor="operator:zhang")
        result = await flows.upsert_batch(platform, [streetlight(1), streetlight(2)], mode="replace", ctx=ctx)
        assert len(result.success) == 2
        await flows.upsert_batch(platform, [streetlight(1)], mode="replace", ctx=ctx)  # unchanged: no event
        await flows.upsert_batch(platform, [streetlight(2, "off")], mode="merge", ctx=ctx)
        await flows.delete_entities(platform, ["urn:ngsi-ld:Streetlight:L1"], ctx=ctx)
        with anyio.fail_after(5):
            await platform.bus.drain()
    finally:
        await platform.stop()
    summary = [(e.entity_id.rsplit(":", 1)[1], e.operation, e.attributes) for e in received]
    assert summary == [("L1", "created", ["powerState"]), ("L2", "created", ["powerState"]),
                       ("L2", "updated", ["powerState"]), ("L1", "deleted", ["powerState"])]
    assert all(e.context.actor == "operator:zhang" and e.org_unit == "330106007" for e in received)
    assert received[2].entity["powerState"]["value"] == "off"
    assert received[3].entity is None


@pytest.mark.anyio
async def test_scoped_writer_cannot_write_outside_its_units(platform):
    ctx = Context(actor="station:gudang", org_scope=("330106007",))
    outside = streetlight(3)
    outside["orgUnit"]["object"] = "urn:ngsi-ld:OrgUnit:330106012"
    inside = streetlight(4)
    inside["orgUnit"]["object"] = "urn:ngsi-ld:OrgUnit:330106007001"
    result = await flows.upsert_batch(platform, [outside, inside, {**streetlight(5), "orgUnit": None}],
                                      mode="replace", ctx=ctx)
    assert result.success == ["urn:ngsi-ld:Streetlight:L4"]
    assert {e.index: e.status for e in result.errors} == {0: 403, 2: 422}
