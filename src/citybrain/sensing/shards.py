"""Device shards: which ingest worker owns which devices when N workers split a city.

A device belongs to the shard of its town (street / 街道): `hash(town code) % N`. Whole towns, not single
devices, so that a composite rule over an area (k devices of a village or a town) sees all of that area's
devices in one worker. A device without an org unit goes by its number. The hash is the device index's
FNV hash, the same in every process, so relays and workers agree without talking to each other.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from citybrain.sensing.devices.index import DeviceIndex, id_hashes

if TYPE_CHECKING:
    from citybrain.hub.org.tree import OrgTree

SHARD_KIND = "town"


def org_shards(tree: OrgTree, org_units: list[str], shards: int) -> tuple[np.ndarray, np.ndarray]:
    """Per org position: the shard of the devices registered at that unit (its town's; a unit above the
    towns goes by its own code), and whether the unit's whole subtree is that shard's (a town and what is
    below it). Units above the towns, such as the district, hold devices of every shard."""
    if shards < 1:
        raise ValueError("shards must be at least 1")
    units = tree.units
    keys, whole = [], []
    for code in org_units:
        chain = [code, *reversed(tree.ancestors(code))] if code in units else [code]
        town = next((c for c in chain if c in units and units[c].kind == SHARD_KIND), None)
        keys.append(town or code)
        whole.append(town is not None)
    owner = (id_hashes(keys) % np.uint64(shards)).astype(np.int64) if keys else np.zeros(0, np.int64)
    return owner, np.array(whole, bool)


def device_shards(index: DeviceIndex, tree: OrgTree, shards: int) -> np.ndarray:
    """Per device number (index position), its shard in 0…shards-1."""
    numbers = np.arange(index.org.size, dtype=np.int64)
    if shards == 1:
        return np.zeros(index.org.size, np.int64)
    by_org, _whole = org_shards(tree, list(index.org_units), shards)
    if not by_org.size:
        return numbers % shards
    org = index.org
    return np.where(org >= 0, by_org[np.maximum(org, 0)], numbers % shards)


def owned_devices(index: DeviceIndex, tree: OrgTree, shards: int, shard: int) -> np.ndarray:
    """Per device number, whether worker `shard` owns it. Number 0 (no such device) belongs to shard 0,
    so that one worker, not N, keeps the dead letters of unknown devices and malformed topics."""
    owned = device_shards(index, tree, shards) == shard
    owned[0] = shard == 0
    return owned


class ShardRouter:
    """`router(messages)`: the shard of each raw telemetry message, by its device (what a relay needs).
    Messages that name no registered device, or have a malformed topic, go to shard 0, which keeps their
    dead letters."""

    def __init__(self, index: DeviceIndex, tree: OrgTree, shards: int, type_codes: dict[str, int],
                 districts: set[str]) -> None:
        self.index = index
        self.shards = shards
        self.type_codes = type_codes
        self.districts = districts
        self.of_device = device_shards(index, tree, shards)
        self.of_device[0] = 0

    def __call__(self, messages: list[tuple[str, bytes, float]]) -> np.ndarray:
        from citybrain.sensing.ingest.topics import parse_topics

        parsed = parse_topics([m[0] for m in messages], self.type_codes, self.districts)
        nums = np.zeros(len(messages), np.int64)
        valid = np.flatnonzero((parsed.type_of >= 0) & ~parsed.too_long)
        if valid.size:
            nums[valid] = self.index.lookup_hashes(parsed.id_hash[valid])
        return self.of_device[nums]
