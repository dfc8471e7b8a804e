"""From raw messages to accepted, columnar readings: topic → device → typed decode → range check →
duplicate / out-of-order check → one ReadingBatch per device type. Everything refused becomes a dead
letter with its reason; nothing here raises on bad input.

The per-message Python work is a few list comprehensions; topic parsing, the device lookup, decoding and
checks run per batch as array operations (see ingest.topics, devices.index and ingest.decode)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from citybrain.sensing.batch import ReadingBatch
from citybrain.sensing.devices.index import DeviceIndex
from citybrain.sensing.devices.spec import DeviceTypeSpec
from citybrain.sensing.ingest.decode import PayloadDecoder
from citybrain.sensing.ingest.topics import device_id_of, parse_topics

RawMessage = tuple[str, bytes, float]  # topic, payload, received (epoch seconds)
PAYLOAD_KEPT_BYTES = 4096
RECENT_READINGS = 1 << 18  # 2 MB: more than a broker has in flight to one subscriber when it reconnects


@dataclass(slots=True)
class DeadLetter:
    source: str
    topic: str
    device_id: str | None
    reason: str
    payload: bytes
    received: float
    position: int = -1  # in the messages given to `process` (-1: not from there)


@dataclass(slots=True)
class IngestReport:
    """One call's outcome. `accepted`: every new reading (in time order per device or not), for the lake;
    `in_order`: those that move their device's time forward, for the rules."""

    accepted: list[ReadingBatch] = field(default_factory=list)
    in_order: list[ReadingBatch] = field(default_factory=list)
    dead: list[DeadLetter] = field(default_factory=list)
    duplicates: int = 0
    out_of_order: int = 0

    @property
    def accepted_count(self) -> int:
        return sum(len(b) for b in self.accepted)


class IngestPipeline:
    """Stateful across calls: it remembers each device's latest (ts, seq) and when it was last heard."""

    def __init__(self, *, index: DeviceIndex, types: dict[str, DeviceTypeSpec], districts: set[str]) -> None:
        self.index = index
        self.types = types
        self.districts = districts
        self.decoders = {slug: PayloadDecoder(spec) for slug, spec in types.items()}
        size = index.type_code.size
        self.last_ts = np.full(size, -np.inf)
        self.last_seq = np.full(size, -1, np.int64)
        self.last_seen = np.full(size, np.nan)  # arrival time, for online status
        self.counts: Counter[str] = Counter()
        # With N ingest workers, which device numbers this one owns (see sensing.shards); None: all.
        self.owned: np.ndarray | None = None
        self._type_slugs = list(types)
        self._type_codes = {slug: code for code, slug in enumerate(self._type_slugs)}
        # Keys of the readings accepted most recently. A reading older than its device's newest is late
        # data and kept, unless it is one of these: a QoS 1 message the broker sent again (after a
        # reconnection, or a broker restart) that this process had already taken.
        self._recent = np.zeros(RECENT_READINGS, np.uint64)
        self._recent_at = 0
        # What the lake already holds, asked only of late readings this process has not taken: after a
        # restart the broker resends what the previous process stored but could not acknowledge.
        self.stored: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None

    def fit(self) -> None:
        """Make room in the state arrays for devices indexed since the last call."""
        size = self.index.type_code.size
        if size > self.last_ts.size:
            for name, fill in (("last_ts", -np.inf), ("last_seq", -1), ("last_seen", np.nan)):
                old = getattr(self, name)
                new = np.full(size, fill, old.dtype)
                new[: old.size] = old
                setattr(self, name, new)
            if self.owned is not None:  # devices indexed since: not ours until the runtime says so
                self.owned = np.concatenate([self.owned, np.zeros(size - self.owned.size, bool)])

    def resume(self, nums: np.ndarray, newest_ts: np.ndarray) -> None:
        """Start from stored state: a reading no newer than its device's newest stored one is a duplicate
        (the stored sequence number is not known, so one at the same time counts as seen)."""
        self.fit()
        keep = (nums > 0) & (nums < self.last_ts.size)
        nums, newest_ts = nums[keep], newest_ts[keep]
        self.last_ts[nums] = np.maximum(self.last_ts[nums], newest_ts)
        self.last_seq[nums] = np.iinfo(np.int64).max

    @property
    def nbytes(self) -> int:
        return self.last_ts.nbytes + self.last_seq.nbytes + self.last_seen.nbytes + self._recent.nbytes

    def _remember(self, keys: np.ndarray) -> None:
        keys = keys[-self._recent.size:]
        at = self._recent_at % self._recent.size
        first = min(keys.size, self._recent.size - at)
        self._recent[at:at + first] = keys[:first]
        self._recent[: keys.size - first] = keys[first:]
        self._recent_at += keys.size

    def process(self, messages: list[RawMessage], *, source: str = "mqtt") -> IngestReport:
        self.fit()
        report = IngestReport()
        parsed = parse_topics([m[0] for m in messages], self._type_codes, self.districts)
        type_of = parsed.type_of
        bad = np.flatnonzero(type_of < 0)
        if self.owned is not None and not self.owned[0]:
            bad = bad[:0]  # malformed topics are shard 0's to keep
        for position in bad.tolist():
            topic, payload, received = messages[position]
            p = topic.split("/")
            if len(p) != 5 or p[0] != "city" or p[4] != "telemetry":
                reason, device_id = "topic is not city/{district}/{device_type}/{device_id}/telemetry", None
            elif p[1] not in self.districts:
                reason, device_id = f"unknown district {p[1]!r}", p[3]
            else:
                reason, device_id = f"unknown device type {p[2]!r}", p[3]
            report.dead.append(_dead(source, topic, device_id, reason, payload, received, position))
        valid = np.flatnonzero(type_of >= 0)
        if valid.size:
            # One lookup for the whole batch: a binary search costs about the same for 100 ids as for 10,000.
            nums = np.zeros(len(messages), np.int64)
            nums[valid] = self.index.lookup_hashes(parsed.id_hash[valid])
            nums[parsed.too_long] = 0
            if self.owned is not None:
                mine = self.owned[nums[valid]]
                self.counts["other_shard"] += int(valid.size - mine.sum())
                valid = valid[mine]
            codes = type_of[valid]
            for code in np.unique(codes).tolist():
                positions = valid[codes == code]
                slug = self._type_slugs[code]
                self._process_type(slug, positions, nums[positions], messages, source, report)
        self.counts["dead"] += len(report.dead)
        self.counts["duplicates"] += report.duplicates
        self.counts["out_of_order"] += report.out_of_order
        self.counts["accepted"] += report.accepted_count
        return report

    def _process_type(
        self,
        device_type: str,
        positions: np.ndarray,
        nums: np.ndarray,
        messages: list[RawMessage],
        source: str,
        report: IngestReport,
    ) -> None:
        index = self.index
        code = index.type_codes[device_type]
        wrong_type = (nums > 0) & (index.type_code[nums] != code)
        disabled = (nums > 0) & ~index.enabled[nums]
        usable = (nums > 0) & ~wrong_type & ~disabled
        if not usable.all():
            for i in np.flatnonzero(~usable).tolist():
                topic, payload, received = messages[positions[i]]
                if nums[i] == 0:
                    reason = "unknown device"
                elif wrong_type[i]:
                    reason = (
                        f"unauthorised: the device is registered as "
                        f"{index.type_slugs[index.type_code[nums[i]]]}, not {device_type}"
                    )
                else:
                    reason = "unauthorised: the device is disabled"
                report.dead.append(
                    _dead(source, topic, device_id_of(topic), reason, payload, received, int(positions[i]))
                )
            nums, positions = nums[usable], positions[usable]
        if not positions.size:
            return
        chosen = positions.tolist()
        decoded = self.decoders[device_type].decode([messages[p][1] for p in chosen])
        for row, reason in decoded.errors:
            topic, payload, received = messages[chosen[row]]
            device_id = device_id_of(topic)
            report.dead.append(_dead(source, topic, device_id, reason, payload, received, chosen[row]))
        rows = decoded.rows
        if rows.size == 0:
            return
        nums = nums[rows]
        received = np.array([messages[chosen[r]][2] for r in rows.tolist()], np.float64)
        batch = ReadingBatch(
            device_type,
            nums,
            index.local[nums].astype(np.int64),
            decoded.ts,
            received,
            decoded.seq,
            decoded.values,
            decoded.texts,
        )
        self._order(batch, report)

    def _order(self, batch: ReadingBatch, report: IngestReport) -> None:
        """Drop duplicates, set apart out-of-order readings, advance each device's clock."""
        order = np.lexsort((batch.seq, batch.ts, batch.device_num))
        nums, ts, seq = batch.device_num[order], batch.ts[order], batch.seq[order]
        same_as_previous = np.zeros(nums.size, bool)
        same_as_previous[1:] = (nums[1:] == nums[:-1]) & (ts[1:] == ts[:-1]) & (seq[1:] == seq[:-1])
        last_ts, last_seq = self.last_ts[nums], self.last_seq[nums]
        # The lake keeps microseconds: a time within one of the device's newest is the same time.
        same_time = np.abs(ts - last_ts) <= 1e-6
        duplicate = same_as_previous | (same_time & (seq <= last_seq))
        older = ~duplicate & ~same_time & (ts < last_ts)
        if older.any():  # late, or sent again: only a reading taken before is a duplicate
            seen = np.zeros(nums.size, bool)
            seen[older] = np.isin(_reading_keys(nums[older], ts[older], seq[older]), self._recent)
            unknown = older & ~seen
            if self.stored is not None and unknown.any():
                seen[unknown] = self.stored(nums[unknown], ts[unknown])
            duplicate |= seen
            older &= ~seen
        report.duplicates += int(duplicate.sum())
        report.out_of_order += int(older.sum())
        fresh = ~duplicate
        if not fresh.any():
            return
        accepted = batch.take(order[fresh])
        report.accepted.append(accepted)
        self._remember(_reading_keys(nums[fresh], ts[fresh], seq[fresh]))
        forward = order[fresh & ~older]
        if forward.size:
            in_order = batch.take(forward)
            report.in_order.append(in_order)
            # Rows are sorted by (device, ts, seq), so the last row of each device is its newest.
            last_of_device = np.ones(in_order.device_num.size, bool)
            last_of_device[:-1] = in_order.device_num[1:] != in_order.device_num[:-1]
            newest = np.flatnonzero(last_of_device)
            self.last_ts[in_order.device_num[newest]] = in_order.ts[newest]
            self.last_seq[in_order.device_num[newest]] = in_order.seq[newest]
        np.fmax.at(self.last_seen, accepted.device_num, accepted.received)


def _reading_keys(nums: np.ndarray, ts: np.ndarray, seq: np.ndarray) -> np.ndarray:
    """A 64-bit key per reading from its device, time (to the microsecond, as the lake keeps it) and
    sequence number; two readings colliding by chance is about 1 in 2^64."""
    with np.errstate(over="ignore"):
        micros = np.round(ts * 1e6).astype(np.int64).view(np.uint64)
        key = nums.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)
        key ^= micros * np.uint64(0xC2B2AE3D27D4EB4F)
        key ^= seq.astype(np.int64).view(np.uint64) * np.uint64(0x165667B19E3779F9)
        key ^= key >> np.uint64(29)
    return key


def _dead(
    source: str,
    topic: str,
    device_id: str | None,
    reason: str,
    payload: bytes,
    received: float,
    position: int,
) -> DeadLetter:
    return DeadLetter(
        source,
        topic[:512],
        device_id[:64] if device_id else None,
        reason[:512],
        payload[:PAYLOAD_KEPT_BYTES],
        received,
        position,
    )
