"""The in-memory device index of the hot path: device id text → integer device number, and per number the
device's type, position within the type, org unit and whether it may send.

Everything is a NumPy array, so three million devices cost tens of megabytes, not the few hundred a dict of
strings would. Ids are found by a 64-bit hash of their bytes, computed for a whole batch at once, and a
binary search in the sorted hashes. Registration refuses an id whose hash another id already has (for
3 million ids the chance of any such pair is about 2.4e-7), so a hash names one registered id; an
unregistered id that happens to share a registered one's hash (about 1.6e-13 per message) is caught by
the type check of the topic, or counts as that device.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

ID_BYTES = 64
_FNV_OFFSET = np.uint64(0xCBF29CE484222325)
_FNV_PRIME = np.uint64(0x100000001B3)
_MIX_1 = np.uint64(0xFF51AFD7ED558CCD)
_MIX_2 = np.uint64(0xC4CEB9FE1A85EC53)


def id_hashes(ids: Sequence[str] | np.ndarray) -> np.ndarray:
    """64-bit hashes of device ids (ASCII, at most 64 bytes), vectorised: FNV-1a over the 8-byte words of the
    zero-padded id, then a murmur-style finaliser so nearby ids spread over the whole range. Takes a list
    of str or a NumPy byte-string array (longer ones are cut to 64 bytes)."""
    raw = np.asarray(ids, dtype=f"S{ID_BYTES}")
    words = np.ascontiguousarray(raw).view(np.uint64).reshape(-1, ID_BYTES // 8)
    with np.errstate(over="ignore"):
        h = np.full(words.shape[0], _FNV_OFFSET, dtype=np.uint64)
        for column in range(words.shape[1]):
            h ^= words[:, column]
            h *= _FNV_PRIME
        h ^= h >> np.uint64(33)
        h *= _MIX_1
        h ^= h >> np.uint64(33)
        h *= _MIX_2
        h ^= h >> np.uint64(33)
    return h


class DeviceIndex:
    """Registered devices, by integer number (1…n; 0 means "no device")."""

    def __init__(self, type_slugs: Sequence[str], org_units: Sequence[str]) -> None:
        self.type_slugs = list(type_slugs)
        self.type_codes = {slug: code for code, slug in enumerate(self.type_slugs)}
        self.org_units = list(org_units)
        self.org_codes = {code: i for i, code in enumerate(self.org_units)}
        self._hashes = np.empty(0, np.uint64)  # sorted
        self._hash_nums = np.empty(0, np.int32)
        self.type_code = np.full(1, -1, np.int16)  # by device number
        self.local = np.full(1, -1, np.int32)
        self.org = np.full(1, -1, np.int32)  # index into org_units, -1 = none
        self.enabled = np.zeros(1, bool)
        self.counts = np.zeros(len(self.type_slugs), np.int64)  # devices (capacity) per type

    def __len__(self) -> int:
        return int((self.type_code >= 0).sum())

    @property
    def nbytes(self) -> int:
        return sum(
            a.nbytes
            for a in (self._hashes, self._hash_nums, self.type_code, self.local, self.org, self.enabled)
        )

    def add(
        self,
        nums: np.ndarray,
        ids: Sequence[str],
        types: Sequence[str],
        locals_: np.ndarray,
        orgs: Sequence[str | None],
        enabled: np.ndarray | None = None,
    ) -> None:
        """Index devices (as stored: their numbers and positions are already assigned)."""
        nums = np.asarray(nums, np.int64)
        if nums.size == 0:
            return
        top = int(nums.max()) + 1
        if top > self.type_code.size:
            grow = max(top, int(self.type_code.size * 1.5))
            self.type_code = _grown(self.type_code, grow, -1)
            self.local = _grown(self.local, grow, -1)
            self.org = _grown(self.org, grow, -1)
            self.enabled = _grown(self.enabled, grow, False)
        codes = np.array([self.type_codes[t] for t in types], np.int16)
        self.type_code[nums] = codes
        self.local[nums] = np.asarray(locals_, np.int32)
        self.org[nums] = np.array([self.org_codes.get(o, -1) if o else -1 for o in orgs], np.int32)
        self.enabled[nums] = True if enabled is None else np.asarray(enabled, bool)
        np.maximum.at(self.counts, codes.astype(np.int64), np.asarray(locals_, np.int64) + 1)
        hashes = id_hashes(list(ids))
        merged = np.concatenate([self._hashes, hashes])
        order = np.argsort(merged, kind="stable")
        self._hashes = merged[order]
        self._hash_nums = np.concatenate([self._hash_nums, nums.astype(np.int32)])[order]

    def colliding(self, ids: Sequence[str]) -> np.ndarray:
        """Which of these new ids share a hash with an indexed device or with each other."""
        hashes = id_hashes(list(ids))
        taken = self._found(hashes) > 0
        distinct, counts = np.unique(hashes, return_counts=True)
        repeated = (
            np.isin(hashes, distinct[counts > 1]) if (counts > 1).any() else np.zeros(hashes.size, bool)
        )
        return taken | repeated

    def lookup(self, ids: Sequence[str]) -> np.ndarray:
        """Device numbers of ids (0 where unknown)."""
        if not len(ids):
            return np.empty(0, np.int64)
        found = self._found(id_hashes(ids)).astype(np.int64)
        # S64 would cut a longer id to a registered one's 64 bytes: no registered id is that long.
        too_long = np.fromiter(map(len, ids), np.int64, len(ids)) > ID_BYTES
        if too_long.any():
            found[too_long] = 0
        return found

    def lookup_hashes(self, hashes: np.ndarray) -> np.ndarray:
        """Device numbers of ids given by their `id_hashes` (0 where unknown)."""
        return self._found(hashes).astype(np.int64)

    def _found(self, hashes: np.ndarray) -> np.ndarray:
        if self._hashes.size == 0:
            return np.zeros(hashes.size, np.int32)
        at = np.searchsorted(self._hashes, hashes)
        at_clipped = np.minimum(at, self._hashes.size - 1)
        hit = self._hashes[at_clipped] == hashes
        return np.where(hit, self._hash_nums[at_clipped], 0)

    def capacity(self, device_type: str) -> int:
        return int(self.counts[self.type_codes[device_type]])

    def areas(self, device_type: str, kind_of: np.ndarray) -> np.ndarray:
        """Per local position of a type: `kind_of[org index]` (e.g. the village's or town's area id)."""
        code = self.type_codes[device_type]
        out = np.full(self.capacity(device_type), -1, np.int32)
        nums = np.flatnonzero(self.type_code == code)
        orgs = self.org[nums]
        out[self.local[nums]] = np.where(orgs >= 0, kind_of[np.maximum(orgs, 0)], -1)
        return out


def _grown(array: np.ndarray, size: int, fill: object) -> np.ndarray:
    out = np.full(size, fill, array.dtype)
    out[: array.size] = array
    return out
