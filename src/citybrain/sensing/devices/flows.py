"""Device registration as one transaction: the registry rows and the devices' hub entities commit together."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from citybrain.core.context import Context
from citybrain.core.events import Event
from citybrain.sensing.devices import service as devices
from citybrain.sensing.devices.index import DeviceIndex
from citybrain.sensing.devices.spec import DeviceTypeSpec

if TYPE_CHECKING:
    from citybrain.platform import Platform


def register(
    platform: Platform,
    *,
    items: Sequence[devices.DeviceInput],
    types: dict[str, DeviceTypeSpec],
    index: DeviceIndex,
    ctx: Context,
) -> tuple[devices.Registration, list[Event]]:
    """Register devices and write their `Device` entities; the caller adds `outcome.rows` to its index and
    publishes the events after this returns (the transaction has committed then)."""
    from citybrain.hub.entities.flows import write_entities_in

    batch = platform.settings.max_batch_entities
    with platform.transaction() as session:
        outcome = devices.register_devices(
            session,
            items=items,
            types=types,
            org_tree=platform.org_tree,
            index=index,
            now=platform.clock.now(),
        )
        entities = [devices.device_entity(row, types[row["device_type"]]) for row in outcome.rows]
        events: list[Event] = []
        for start in range(0, len(entities), batch):
            result, found = write_entities_in(
                platform, session, entities[start : start + batch], mode="merge", ctx=ctx
            )
            if result.errors:  # the registry validated these devices already: a refusal here is a bug
                raise RuntimeError(f"a device entity was refused: {result.errors[0]}")
            events += found
    return outcome, events
