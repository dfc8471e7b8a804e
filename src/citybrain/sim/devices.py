"""The telemetry simulator: a fleet's devices publishing over MQTT, with injected incidents and their truth.

    generator = TelemetryGenerator(build_fleet(300_000), interval=30, connections=1000, incident_rate=1e-4)
    report = run_simulation(generator, "mqtt://127.0.0.1:1883", duration=60, truth_path="truth.jsonl")

Every device reports once per `interval`, at its own phase, the phases spread evenly over the interval, to
`city/{district_code}/{device_type}/{device_id}/telemetry` (`topic_prefix` replaces `city`, e.g. to keep
tests apart on a shared broker) with the payload of docs/sensing.md
(`{"ts": …, "seq": n, <measurement>: value, …}`); what the values do is `models`' business. Each MQTT
connection carries a contiguous slice of the fleet (a neighbourhood, like a gateway).

Why it is fast (100,000+ messages a second from one Python process): nothing is built per message. Before
the first message every device's PUBLISH packet is laid out once in one byte buffer (the wire), ordered by
send slot (`tick` seconds of the interval), then by connection. All numbers in a payload have a fixed width
(right-aligned, padded with spaces, which JSON allows between tokens), so a packet's length never changes
and each slot only patches the characters of `ts`, `seq` and the values, a few NumPy operations per device
type for the whole slot, then hands each connection its contiguous bytes in one write. The MQTT side is
`wire`'s minimal MQTT 3.1.1 publisher (CONNECT/CONNACK, PUBLISH at QoS 0, or QoS 1 counting PUBACKs).

Timestamps are the schedule's (`start + cycle·interval + phase`), not the wall clock at sending, so a
device's readings are exactly `interval` apart even when the generator falls behind; a slot is sent once
its last timestamp has passed.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from citybrain.core.errors import InvalidInput
from citybrain.sensing.devices.spec import DeviceTypeSpec
from citybrain.sensing.ingest.mqtt import BrokerAddress, parse_broker_url
from citybrain.sim import wire
from citybrain.sim.fleet import Fleet, district_code_of
from citybrain.sim.models import (
    JUMP_COOLDOWN_SPANS,
    AreaTracker,
    Incident,
    IncidentKind,
    Profile,
    TruthSink,
    TypeModel,
    Watcher,
    plan_profile,
)

log = logging.getLogger(__name__)

TOPIC_SUFFIX = "/telemetry"
AREA_SHARE = 0.1  # of the incidents on a type with an area rule, the share that are area episodes
SCATTER_ROWS = 50_000  # rows per chunk when the wire is first filled (bounds the index arrays)
COUNTER_COALESCE_S = 0.001  # the counting subscriber reads once a millisecond (see wire.CountingProtocol)


@dataclass
class SlotOutput:
    """One rendered send slot: the bytes of its packets and, per connection, the spans to write."""

    cycle: int
    slot: int
    due: float
    chunk: bytes
    spans: list[tuple[int, int, int]]  # (connection, start, end) within chunk
    connections: np.ndarray  # connections written in this slot
    count: int  # messages in the chunk that are sent (silent devices excluded)
    skipped: int = 0


def decode_packets(chunk: bytes | memoryview) -> list[tuple[str, bytes]]:
    """(topic, payload) of every PUBLISH packet in a run of packets (for tests and tools)."""
    data = bytes(chunk)
    packets, _ = wire.split_packets(data)
    out = []
    for cmd, start, end in packets:
        topic_end = start + 2 + ((data[start] << 8) | data[start + 1])
        at = topic_end + (2 if cmd & 0x06 else 0)
        out.append((data[start + 2 : topic_end].decode(), data[at:end]))
    return out


def _varint_length(value: np.ndarray) -> np.ndarray:
    return 1 + (value >= 128) + (value >= 16_384) + (value >= 2_097_152)


def _bytes_matrix(strings: np.ndarray, width: int) -> np.ndarray:
    """Equal-length ASCII strings as a (count, width) uint8 matrix."""
    try:
        encoded = np.asarray(strings).astype(f"S{width}")
    except UnicodeEncodeError:
        raise InvalidInput.at(
            "fleet", "device ids and org unit codes must be ASCII (they are topic segments)"
        ) from None
    return encoded.view(np.uint8).reshape(len(strings), width)


class TelemetryGenerator:
    """Renders a fleet's telemetry slot by slot, clock-agnostic (the simulator paces it; tests run it in
    virtual time), injecting incidents at `incident_rate` per reading and reporting their truth to `truth`.

    `interval` (s) between a device's readings, `tick` (s) the length of a send slot, `connections` the
    number of MQTT connections the fleet is split over, `qos` 0 or 1. `start_ts` is the timestamp of the
    first cycle (default: the next whole second; `set_start` moves it before rendering begins).
    """

    def __init__(
        self,
        fleet: Fleet,
        *,
        interval: float = 30.0,
        tick: float = 0.1,
        connections: int = 1,
        qos: int = 0,
        seed: int = 0,
        incident_rate: float = 0.0,
        start_ts: float | None = None,
        truth: TruthSink | None = None,
        device_types: list[DeviceTypeSpec] | None = None,
        area_share: float = AREA_SHARE,
        topic_prefix: str = "city",
    ) -> None:
        if not interval >= 0.01:
            raise InvalidInput.at("interval", "must be at least 0.01 s")
        if not 0.001 <= tick:
            raise InvalidInput.at("tick", "must be at least 0.001 s")
        if qos not in (0, 1):
            raise InvalidInput.at("qos", "must be 0 or 1")
        if not 0.0 <= incident_rate <= 1.0:
            raise InvalidInput.at("incident_rate", "must be a probability from 0 to 1")
        if connections < 1:
            raise InvalidInput.at("connections", "must be at least 1")
        if not len(fleet):
            raise InvalidInput.at("fleet", "has no devices")
        if not topic_prefix or any(c in topic_prefix for c in "+#") or not topic_prefix.isascii():
            raise InvalidInput.at("topic_prefix", "must be non-empty ASCII without + or #")
        self.fleet = fleet
        self.topic_prefix = topic_prefix
        self.interval_ms = round(interval * 1000)
        self.interval = self.interval_ms / 1000.0
        self.tick_ms = max(1, min(round(tick * 1000), self.interval_ms))
        self.slots = math.ceil(self.interval_ms / self.tick_ms)
        self.connections = min(connections, len(fleet))
        self.qos = qos
        self.incident_rate = incident_rate
        self.area_share = area_share
        self.truth_sink: TruthSink = truth or (lambda record: None)
        self.rng = np.random.default_rng(seed)
        self.base_ms = round((math.ceil(time.time()) if start_ts is None else start_ts) * 1000)
        self._build_models(device_types)
        self._build_plan()
        self._build_incident_state()
        self.sent = 0
        self.incidents_started: dict[str, int] = {}
        self.truth_records = 0

    # -- setting up ---------------------------------------------------------------------------------------

    def _build_models(self, device_types: list[DeviceTypeSpec] | None) -> None:
        if device_types is None:
            from citybrain.scenarios import scenario_device_types

            device_types = scenario_device_types()
        specs = {spec.slug: spec for spec in device_types}
        names, type_index = np.unique(self.fleet.device_type, return_inverse=True)
        unknown = [str(n) for n in names if n not in specs]
        if unknown:
            raise InvalidInput.at(
                "fleet.device_type",
                f"unknown device type(s) {', '.join(unknown)}; known: {', '.join(sorted(specs))}",
            )
        self.type_names = [str(n) for n in names]
        self.models = [TypeModel.build(specs[n], self.interval) for n in self.type_names]
        self.type_index = type_index.astype(np.int16)
        self.local = np.empty(len(self.fleet), dtype=np.int64)
        self.type_counts = np.bincount(self.type_index, minlength=len(names))
        for t in range(len(names)):
            members = np.flatnonzero(self.type_index == t)
            self.local[members] = np.arange(members.size)
        sizes = [int(c) for c in self.type_counts]
        self.params = [model.params(sizes[t], self.rng) for t, model in enumerate(self.models)]
        # The last published value and time of measurements a rate rule watches: a rate incident's watcher
        # starts from the reading before the incident, as the rate detector does.
        self.last_published = {
            (t, name): (np.full(sizes[t], np.nan), np.full(sizes[t], np.nan))
            for t, model in enumerate(self.models)
            for name in sorted(model.watched_by_rate)
        }
        for model in self.models:
            for rule in model.rules:
                if rule.detector == "stale" and float(rule.params.get("after_s", 0)) <= self.interval:
                    log.warning(
                        "interval %.1f s is not shorter than %s/%s after_s %.0f s: every %s will "
                        "count as offline",
                        self.interval,
                        model.slug,
                        rule.id,
                        rule.params["after_s"],
                        model.slug,
                    )

    def _build_plan(self) -> None:
        fleet, n, qos = self.fleet, len(self.fleet), self.qos
        self.conn_of = (np.arange(n, dtype=np.int64) * self.connections) // n
        rank = self.rng.permutation(n)
        self.phase_ms = (rank.astype(np.int64) * self.interval_ms) // n
        slot_of = self.phase_ms // self.tick_ms
        order = np.lexsort((np.arange(n), self.conn_of, slot_of))  # message index → device row
        self.msg_device = order
        self.msg_phase = self.phase_ms[order]
        self.msg_slot = slot_of[order]
        self.msg_conn = self.conn_of[order]
        self.msg_type = self.type_index[order]
        self.msg_local = self.local[order]
        self.device_message = np.empty(n, dtype=np.int64)
        self.device_message[order] = np.arange(n)

        unit_names, unit_index = np.unique(fleet.org_unit, return_inverse=True)
        district_of_unit = np.array([district_code_of(str(u)) for u in unit_names])
        device_district = district_of_unit[unit_index][order]
        device_ids = fleet.device_id[order]
        type_len = np.array([len(t) for t in self.type_names])[self.msg_type]
        id_len = np.char.str_len(device_ids.astype(str))
        district_len = np.char.str_len(device_district.astype(str))
        prefix = self.topic_prefix.encode() + b"/"
        topic_len = len(prefix) + district_len + 1 + type_len + 1 + id_len + len(TOPIC_SUFFIX)
        payload_len = np.array([len(m.template) for m in self.models])[self.msg_type]
        remaining = 2 + topic_len + 2 * qos + payload_len
        packet_len = 1 + _varint_length(remaining) + remaining
        self.msg_start = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(packet_len, out=self.msg_start[1:])
        self.payload_start = self.msg_start[:-1] + 1 + _varint_length(remaining) + 2 + topic_len + 2 * qos
        self.wire = np.zeros(int(self.msg_start[-1]), dtype=np.uint8)

        # Fill the wire group by group: within (type, district length, id length) every packet has one layout.
        group_key = np.stack([self.msg_type.astype(np.int64), district_len, id_len], axis=1)
        keys, group = np.unique(group_key, axis=0, return_inverse=True)
        for g, (t, dlen, ilen) in enumerate(keys.tolist()):
            members = np.flatnonzero(group == g)
            model = self.models[t]
            sample = members[0]
            head = bytes([0x30 | (qos << 1)]) + wire.varint(int(remaining[sample]))
            kind = self.type_names[t].encode()
            topic = prefix + b"D" * dlen + b"/" + kind + b"/" + b"I" * ilen + TOPIC_SUFFIX.encode()
            packet_id = b"\x00\x01" if qos else b""
            template = head + len(topic).to_bytes(2, "big") + topic + packet_id + model.template
            row = np.frombuffer(template, dtype=np.uint8)
            district_at = len(head) + 2 + len(prefix)
            id_at = district_at + dlen + 1 + len(self.type_names[t]) + 1
            for chunk in range(0, members.size, SCATTER_ROWS):
                rows_of = members[chunk : chunk + SCATTER_ROWS]
                rows = np.broadcast_to(row, (rows_of.size, row.size)).copy()
                rows[:, district_at : district_at + dlen] = _bytes_matrix(device_district[rows_of], dlen)
                rows[:, id_at : id_at + ilen] = _bytes_matrix(device_ids[rows_of], ilen)
                self.wire[self.msg_start[rows_of][:, None] + np.arange(row.size)[None, :]] = rows

        # Per slot: the message range, its messages by type, and each connection's span of bytes.
        self.slot_bounds = np.searchsorted(self.msg_slot, np.arange(self.slots + 1))
        n_types = len(self.models)
        key = self.msg_slot * n_types + self.msg_type
        self.by_type = np.argsort(key, kind="stable")
        self.by_type_bounds = np.searchsorted(key[self.by_type], np.arange(self.slots * n_types + 1))
        self.columns = [model.columns() for model in self.models]
        change = np.ones(n, dtype=bool)
        change[1:] = (self.msg_conn[1:] != self.msg_conn[:-1]) | (self.msg_slot[1:] != self.msg_slot[:-1])
        self.run_start = np.flatnonzero(change)  # first message of each (slot, connection) run
        self.run_slot = self.msg_slot[self.run_start]
        self.run_bounds = np.searchsorted(self.run_slot, np.arange(self.slots + 1))
        if qos:
            run_id = np.cumsum(change) - 1
            self.msg_rank = np.arange(n) - self.run_start[run_id]
            self.next_pid = np.zeros(self.connections, dtype=np.int64)

    def _build_incident_state(self) -> None:
        n = len(self.fleet)
        self.busy_until = np.full(n, -1, dtype=np.int64)  # a device is free for an incident from this cycle
        self.last_incident_end = np.full(n, -(10**9), dtype=np.int64)
        self.active: dict[int, list[Incident]] = {}  # slot → incidents of devices reporting in it
        self.incident_count = 0
        self.silent_messages: set[int] = set()
        self._area_events: list[tuple[Any, ...]] = []
        self.trackers: dict[int, list[AreaTracker]] = {}
        self.area_candidates: dict[tuple[int, str], np.ndarray] = {}
        suppress = max((r.suppress_s for m in self.models for r in m.rules), default=0.0)
        self.cooldown = max(10, math.ceil(suppress / self.interval) + 2)
        for t, model in enumerate(self.models):
            for rule in model.rules:
                if rule.detector == "composite" and rule.params.get("of_rule") in {r.id for r in model.rules}:
                    self.trackers.setdefault(t, []).append(AreaTracker(rule, model.slug, self._emit))
            for tracker in self.trackers.get(t, []):
                members = np.flatnonzero(self.type_index == t)
                areas = np.array([tracker.area_of(str(u)) for u in self.fleet.org_unit[members]])
                for area in np.unique(areas):
                    chosen = members[areas == area]
                    if chosen.size >= tracker.k:
                        self.area_candidates[(t, str(area))] = chosen

    def incident_devices(self) -> np.ndarray:
        """Fleet rows of the devices that have had an incident so far."""
        return np.flatnonzero(self.busy_until >= 0)

    def set_start(self, start_ts: float) -> None:
        """Timestamp of cycle 0 (call before rendering the first slot)."""
        self.base_ms = round(start_ts * 1000)

    @property
    def rate(self) -> float:
        """Messages per second the schedule asks for."""
        return len(self.fleet) / self.interval

    def due(self, cycle: int, slot: int) -> float:
        """When slot `slot` of cycle `cycle` is to be sent: once its last timestamp has passed."""
        end_of_slot = min((slot + 1) * self.tick_ms, self.interval_ms)
        return (self.base_ms + cycle * self.interval_ms + end_of_slot) / 1000.0

    def schedule(self, cycles: int | None = None) -> Iterator[tuple[int, int]]:
        """(cycle, slot) in sending order, forever or for `cycles` whole cycles."""
        cycle = 0
        while cycles is None or cycle < cycles:
            for slot in range(self.slots):
                yield cycle, slot
            cycle += 1

    # -- rendering a slot ---------------------------------------------------------------------------------

    def render(self, cycle: int, slot: int) -> SlotOutput | None:
        """Patch and return the packets of one slot (None when no device reports in it)."""
        m0, m1 = int(self.slot_bounds[slot]), int(self.slot_bounds[slot + 1])
        if m0 == m1:
            return None
        cycle_ms = self.base_ms + cycle * self.interval_ms
        if self.incident_rate:
            self._start_incidents(cycle, slot, m0, m1, cycle_ms)
        incidents = self.active.get(slot, [])
        n_types = len(self.models)
        seq_value = cycle + 1
        for t, model in enumerate(self.models):
            b0 = int(self.by_type_bounds[slot * n_types + t])
            b1 = int(self.by_type_bounds[slot * n_types + t + 1])
            if b0 == b1:
                continue
            messages = self.by_type[b0:b1]
            local = self.msg_local[messages]
            ts_ms = cycle_ms + self.msg_phase[messages]
            values = model.normal_values(self.params[t], local, ts_ms / 1000.0, self.rng)
            mine = [i for i in incidents if i.type_index == t and i.start_cycle <= cycle and not i.done]
            for incident in mine:
                self._apply(incident, cycle, messages, values)
            model.finish(values)
            for incident in mine:
                self._observe(incident, cycle, messages, values, ts_ms)
            self._remember(t, messages, local, values, ts_ms)
            chars = model.render(values, ts_ms, np.full(messages.size, seq_value, dtype=np.int64))
            self.wire[self.payload_start[messages][:, None] + self.columns[t][None, :]] = chars
        if incidents:
            self._retire(slot, cycle)
        if self._area_events:
            # Devices of one slot report at different times: areas must see their changes in time order
            # (a clear before a raise at the same instant, as the detectors see a batch).
            for at, _, _, tracker, area, device_id, what in sorted(self._area_events, key=lambda e: e[:3]):
                tracker.event(area, device_id, what, at)
            self._area_events.clear()
        if self.qos:
            self._patch_packet_ids(m0, m1)
        return self._output(cycle, slot, m0, m1)

    def _remember(
        self,
        t: int,
        messages: np.ndarray,
        local: np.ndarray,
        values: dict[str, np.ndarray],
        ts_ms: np.ndarray,
    ) -> None:
        if not self.models[t].watched_by_rate:
            return
        sent = np.ones(messages.size, dtype=bool)
        if self.silent_messages:
            sent = ~np.isin(messages, np.fromiter(self.silent_messages, dtype=np.int64))
        for name in self.models[t].watched_by_rate:
            last_value, last_ts = self.last_published[(t, name)]
            last_value[local[sent]] = values[name][sent]
            last_ts[local[sent]] = ts_ms[sent] / 1000.0

    def _patch_packet_ids(self, m0: int, m1: int) -> None:
        conns = self.msg_conn[m0:m1]
        pids = (self.next_pid[conns] + self.msg_rank[m0:m1]) % 65535 + 1
        at = self.payload_start[m0:m1] - 2
        self.wire[at] = pids >> 8
        self.wire[at + 1] = pids & 0xFF
        self.next_pid += np.bincount(conns, minlength=self.connections)

    def _output(self, cycle: int, slot: int, m0: int, m1: int) -> SlotOutput:
        byte0, byte1 = int(self.msg_start[m0]), int(self.msg_start[m1])
        chunk = self.wire[byte0:byte1].tobytes()  # a snapshot: transports may hold it after we patch again
        r0, r1 = int(self.run_bounds[slot]), int(self.run_bounds[slot + 1])
        starts = self.run_start[r0:r1]
        conns = self.msg_conn[starts]
        offsets = np.append(self.msg_start[starts], byte1) - byte0
        spans = list(zip(conns.tolist(), offsets[:-1].tolist(), offsets[1:].tolist(), strict=True))
        count = m1 - m0
        skipped = 0
        holes = [m for m in self.silent_messages if m0 <= m < m1]
        if holes:
            spans = self._cut_holes(spans, holes, byte0)
            skipped = len(holes)
            count -= skipped
        self.silent_messages.difference_update(holes)
        self.sent += count
        return SlotOutput(cycle, slot, self.due(cycle, slot), chunk, spans, conns, count, skipped)

    def _cut_holes(
        self, spans: list[tuple[int, int, int]], holes: list[int], byte0: int
    ) -> list[tuple[int, int, int]]:
        gaps = sorted((int(self.msg_start[m]) - byte0, int(self.msg_start[m + 1]) - byte0) for m in holes)
        out: list[tuple[int, int, int]] = []
        for conn, a, b in spans:
            cursor = a
            for g0, g1 in gaps:
                if g1 <= a or g0 >= b:
                    continue
                if g0 > cursor:
                    out.append((conn, cursor, g0))
                cursor = max(cursor, g1)
            if cursor < b:
                out.append((conn, cursor, b))
        return out

    # -- incidents ----------------------------------------------------------------------------------------

    def _start_incidents(self, cycle: int, slot: int, m0: int, m1: int, cycle_ms: int) -> None:
        count = int(self.rng.binomial(m1 - m0, self.incident_rate))
        if not count:
            return
        for message in self.rng.choice(np.arange(m0, m1), size=min(count, m1 - m0), replace=False).tolist():
            device = int(self.msg_device[message])
            if self.busy_until[device] >= cycle:
                continue
            t = int(self.type_index[device])
            model = self.models[t]
            if not model.kinds:
                continue
            if (
                self.trackers.get(t)
                and self.rng.random() < self.area_share
                and self._start_area_episode(cycle, slot, device, t)
            ):
                continue
            kinds = [k for k in model.kinds if self._eligible(k, device, cycle)]
            if not kinds:
                continue
            kind = kinds[int(self.rng.integers(0, len(kinds)))]
            self._start(kind, device, cycle, cycle_ms)

    def _eligible(self, kind: IncidentKind, device: int, cycle: int) -> bool:
        if kind.kind == "stale":
            return cycle >= 1  # silence counts from a reading the device did send
        if kind.kind != "zscore":
            return True
        span = float(kind.rule.params.get("span", 60))
        warmup = int(kind.rule.params.get("warmup", 10))
        return cycle >= warmup + 10 and cycle - self.last_incident_end[device] >= JUMP_COOLDOWN_SPANS * span

    def _current(self, device: int, ts: float) -> dict[str, float]:
        t = int(self.type_index[device])
        values = self.models[t].normal_values(
            self.params[t], np.array([self.local[device]]), np.array([ts]), self.rng
        )
        return {name: float(column[0]) for name, column in values.items()}

    def _start(
        self,
        kind: IncidentKind,
        device: int,
        start_cycle: int,
        cycle_ms: int,
        *,
        hold: int | None = None,
        ramp: int | None = None,
        area: str | None = None,
        profile: Profile | None = None,
    ) -> Incident | None:
        t = int(self.type_index[device])
        model = self.models[t]
        ts = (cycle_ms + int(self.phase_ms[device])) / 1000.0
        if profile is None:
            profile = plan_profile(model, kind, self._current(device, ts), self.rng, hold=hold, ramp=ramp)
        if profile is None:
            return None
        self.incident_count += 1
        watchers = [
            Watcher(rule)
            for rule in model.rules
            if rule.detector in ("threshold", "rate") and rule.measurement in model.spec.measurements
        ]
        for watcher in watchers:
            if watcher.rule.detector == "rate":
                last_value, last_ts = self.last_published[(t, watcher.rule.measurement)]
                watcher.last_value = float(last_value[self.local[device]])
                watcher.last_ts = float(last_ts[self.local[device]])
        message = int(self.device_message[device])
        incident = Incident(
            self.incident_count,
            kind,
            device,
            message,
            t,
            int(self.local[device]),
            start_cycle,
            profile,
            watchers,
            area=area,
        )
        self.busy_until[device] = np.iinfo(np.int64).max
        self.active.setdefault(int(self.msg_slot[message]), []).append(incident)
        self.incidents_started[kind.rule.id] = self.incidents_started.get(kind.rule.id, 0) + 1
        return incident

    def _start_area_episode(self, cycle: int, slot: int, device: int, t: int) -> bool:
        model = self.models[t]
        for tracker in self.trackers[t]:
            area = tracker.area_of(str(self.fleet.org_unit[device]))
            candidates = self.area_candidates.get((t, area))
            if candidates is None:
                continue
            free = candidates[self.busy_until[candidates] < cycle]
            free = free[free != device]
            if free.size + 1 < tracker.k:
                continue
            size = min(free.size + 1, tracker.k + int(self.rng.integers(0, 2)))
            members = [device, *self.rng.choice(free, size=size - 1, replace=False).tolist()]
            kind = next(k for k in model.kinds if k.rule.id == tracker.of_rule)
            cycle_ms = self.base_ms + cycle * self.interval_ms
            starts, currents = [], []
            for member in members:
                member_slot = int(self.msg_slot[self.device_message[member]])
                first = cycle if member_slot >= slot else cycle + 1
                starts.append(first + (0 if member == device else int(self.rng.integers(0, 3))))
                currents.append(self._current(member, (cycle_ms + int(self.phase_ms[member])) / 1000.0))
            # One ramp length and one long hold for all, so that their windows overlap.
            drafts = [plan_profile(model, kind, current, self.rng) for current in currents]
            if any(d is None for d in drafts):
                continue
            ramp = max(_ramp_steps(d) for d in drafts if d is not None)
            hold = int(self.rng.integers(20, 40))
            profiles = [
                plan_profile(model, kind, current, self.rng, hold=hold, ramp=ramp) for current in currents
            ]
            if any(p is None for p in profiles):
                continue
            for member, first, profile in zip(members, starts, profiles, strict=True):
                member_ms = self.base_ms + first * self.interval_ms
                self._start(kind, member, first, member_ms, area=area, profile=profile)
            return True
        return False

    def _apply(
        self, incident: Incident, cycle: int, messages: np.ndarray, values: dict[str, np.ndarray]
    ) -> None:
        j = cycle - incident.start_cycle
        profile = incident.profile
        position = int(np.searchsorted(messages, incident.message))
        if j < profile.silent:
            self.silent_messages.add(incident.message)
            return
        if j >= profile.length:
            return
        for name, factors in profile.factors.items():
            values[name][position] *= factors[j]
        for name, offsets in profile.offsets.items():
            values[name][position] += offsets[j]
        for name, absolute in profile.absolute.items():
            if not math.isnan(absolute[j]):
                values[name][position] = absolute[j]

    def _observe(
        self,
        incident: Incident,
        cycle: int,
        messages: np.ndarray,
        values: dict[str, np.ndarray],
        ts_ms: np.ndarray,
    ) -> None:
        j = cycle - incident.start_cycle
        position = int(np.searchsorted(messages, incident.message))
        ts = float(ts_ms[position]) / 1000.0
        profile = incident.profile
        model = self.models[incident.type_index]
        if j == 0:
            incident.last_ts = ts - self.interval
        if j < profile.silent:
            return
        if incident.kind.kind == "stale" and j == profile.silent:
            after_s = float(incident.kind.rule.params["after_s"])
            self._device_record(incident, incident.kind.rule.id, incident.last_ts + after_s, ts)
        if incident.kind.kind == "zscore":
            if j == 0:
                incident.last_ts = ts  # the spike's start
            elif j == profile.length - 1:
                self._device_record(incident, incident.kind.rule.id, incident.last_ts, ts)
        for watcher in incident.watchers:
            name = watcher.rule.measurement
            assert name is not None
            change = watcher.observe(ts, float(values[name][position]))
            if change is None:
                continue
            what, at = change
            if what == "clear":
                self._device_record(incident, watcher.rule.id, watcher.since, at)
            for tracker in self.trackers.get(incident.type_index, []):
                if tracker.of_rule == watcher.rule.id:
                    self._area_events.append(
                        (
                            at,
                            what == "raise",
                            id(tracker),
                            tracker,
                            tracker.area_of(str(self.fleet.org_unit[incident.device])),
                            str(self.fleet.device_id[incident.device]),
                            what,
                        )
                    )
        del model
        if j >= profile.length - 1 and not any(w.active for w in incident.watchers):
            incident.done = True
            self.busy_until[incident.device] = cycle + self.cooldown
            self.last_incident_end[incident.device] = cycle

    def _retire(self, slot: int, cycle: int) -> None:
        remaining = [i for i in self.active.get(slot, []) if not i.done]
        if remaining:
            self.active[slot] = remaining
        else:
            self.active.pop(slot, None)

    def _device_record(self, incident: Incident, rule_id: str, start: float, end: float | None) -> None:
        device = incident.device
        self._emit(
            {
                "device_id": str(self.fleet.device_id[device]),
                "device_type": self.type_names[incident.type_index],
                "rule_id": rule_id,
                "start_ts": round(start, 3),
                "end_ts": None if end is None else round(end, 3),
                "org_unit": str(self.fleet.org_unit[device]),
                "incident": incident.kind.rule.id,
                "incident_id": incident.number,
            }
        )

    def _emit(self, record: dict[str, Any]) -> None:
        self.truth_records += 1
        self.truth_sink(record)

    def finish(self, end_ts: float) -> None:
        """The run ends at `end_ts`: report what is still going on as truth without an end."""
        for incidents in self.active.values():
            for incident in incidents:
                if incident.done:
                    continue
                for watcher in incident.watchers:
                    if watcher.active:
                        self._device_record(incident, watcher.rule.id, watcher.since, None)
                kind = incident.kind
                if kind.kind == "stale" and not math.isnan(incident.last_ts):
                    start = incident.last_ts + float(kind.rule.params["after_s"])
                    if start < end_ts:
                        self._device_record(incident, kind.rule.id, start, None)
                if kind.kind == "zscore" and not math.isnan(incident.last_ts):
                    self._device_record(incident, kind.rule.id, incident.last_ts, None)
                incident.done = True
        self.active.clear()
        for trackers in self.trackers.values():
            for tracker in trackers:
                tracker.close()


def _ramp_steps(profile: Profile) -> int:
    """Readings a draft threshold profile takes to reach its peak (to align the ramps of an area episode)."""
    for shapes, neutral in ((profile.factors, 1.0), (profile.offsets, 0.0)):
        for shape in shapes.values():
            return int(np.argmax(np.abs(shape - neutral))) + 1
    return 1


# -- the network side ---------------------------------------------------------------------------------------


class FlowGate:
    """Counts paused connections (transport write buffers above their high-water mark) and PUBACKs."""

    def __init__(self) -> None:
        self.paused = 0
        self.clear = asyncio.Event()
        self.clear.set()
        self.acks = 0

    def pause(self) -> None:
        self.paused += 1
        self.clear.clear()

    def resume(self) -> None:
        self.paused = max(0, self.paused - 1)
        if not self.paused:
            self.clear.set()


class _GatedPublisher(wire.PublisherProtocol):
    def __init__(self, connect: bytes, gate: FlowGate) -> None:
        super().__init__(connect)
        self.gate = gate
        self._paused = False

    def pause_writing(self) -> None:
        super().pause_writing()
        if not self._paused:
            self._paused = True
            self.gate.pause()

    def resume_writing(self) -> None:
        super().resume_writing()
        if self._paused:
            self._paused = False
            self.gate.resume()

    def data_received(self, data: bytes) -> None:
        before = self.acks
        super().data_received(data)
        self.gate.acks += self.acks - before

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        if self._paused:
            self._paused = False
            self.gate.resume()


ProgressCallback = Callable[[dict[str, Any]], None]


@dataclass
class SimulationReport:
    """What a run did. `rate` is messages written per second of the run; `drain_s` how long after the last
    write the broker took to consume everything (PINGREQ/PINGRESP on every connection), and
    `accepted_rate` the messages over the run plus that drain: what the broker actually took in."""

    sent: int = 0
    seconds: float = 0.0
    rate: float = 0.0
    target_rate: float = 0.0
    devices: int = 0
    connections: int = 0
    qos: int = 0
    acks: int = 0
    dropped: int = 0
    lost_connections: int = 0
    max_lag_s: float = 0.0
    drain_s: float = 0.0
    accepted_rate: float = 0.0
    incidents: dict[str, int] = field(default_factory=dict)
    truth_records: int = 0
    cpu_s: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        """The report as plain data (for JSON and the CLI)."""
        return dict(self.__dict__)


class Simulator:
    """Publishes a generator's slots over `generator.connections` MQTT connections, paced by the clock."""

    def __init__(
        self,
        generator: TelemetryGenerator,
        broker: str | BrokerAddress,
        *,
        client_id_prefix: str | None = None,
        keepalive: int = 60,
        inflight: int = 2000,
        progress: ProgressCallback | None = None,
        progress_every_s: float = 0.5,
        record: list[bytes] | None = None,
    ) -> None:
        self.generator = generator
        self.address = broker if isinstance(broker, BrokerAddress) else parse_broker_url(broker)
        self.client_id_prefix = client_id_prefix or f"citybrain-sim-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.keepalive = keepalive
        self.inflight = inflight
        self.progress = progress
        self.progress_every_s = progress_every_s
        self.record = record  # when given, every byte span written is appended (tests compare it)
        self.gate = FlowGate()
        self.publishers: list[_GatedPublisher | None] = []
        self.report = SimulationReport(
            devices=len(generator.fleet),
            connections=generator.connections,
            qos=generator.qos,
            target_rate=generator.rate,
        )
        self._last_write = np.zeros(generator.connections)
        self._stop = False

    async def connect(self) -> None:
        """Open every connection (CONNECT/CONNACK); raises BrokerUnavailable on the first failure."""
        gate = self.gate
        count = self.generator.connections
        _ensure_file_limit(count + 64)
        opened = await wire.open_publishers(
            self.address,
            count,
            client_id_prefix=self.client_id_prefix,
            keepalive=self.keepalive,
            protocol=lambda packet: _GatedPublisher(packet, gate),
        )
        self.publishers = opened
        self._last_write[:] = time.monotonic()

    def stop(self) -> None:
        """Ask a running `run` to finish after the current slot."""
        self._stop = True

    async def run(self, duration: float) -> SimulationReport:
        """Connect, publish for `duration` seconds (≤ 0: until `stop()` or cancellation), disconnect."""
        generator, report = self.generator, self.report
        if not self.publishers:
            await self.connect()
        cpu0 = time.process_time()
        start = math.ceil(time.time() * 10) / 10 + 0.1
        generator.set_start(start)
        end = start + duration if duration > 0 else math.inf
        next_progress = time.monotonic() + self.progress_every_s
        next_ping = time.monotonic() + 1.0
        last_due = start
        try:
            for cycle, slot in generator.schedule():
                due = generator.due(cycle, slot)
                if due > end or self._stop:
                    break
                delay = due - time.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                else:
                    report.max_lag_s = max(report.max_lag_s, -delay)
                out = generator.render(cycle, slot)
                last_due = due
                if out is not None:
                    self._write(out)
                if not self.gate.clear.is_set():
                    await self.gate.clear.wait()
                if generator.qos:
                    window = self.inflight * generator.connections
                    while generator.sent - report.dropped - self.gate.acks > window:
                        await asyncio.sleep(0.001)
                now = time.monotonic()
                if now >= next_ping:
                    self._ping_idle(now)
                    next_ping = now + 1.0
                if self.progress is not None and now >= next_progress:
                    self.progress(self._snapshot(start))
                    next_progress = now + self.progress_every_s
        finally:
            generator.finish(min(last_due, time.time()))
            written = time.time()
            report.seconds = max(1e-9, written - start)
            report.cpu_s = time.process_time() - cpu0
            await self._drain(report, written)
            self._fill(report, start)
            if self.progress is not None:
                self.progress(self._snapshot(start))
            await self.close()
        return report

    async def _drain(self, report: SimulationReport, written: float, timeout: float = 60.0) -> None:
        """Wait until the broker has consumed what was written (and, at QoS 1, acknowledged it)."""
        live = [
            p
            for p in self.publishers
            if p is not None and p.transport is not None and not p.transport.is_closing()
        ]
        marks = [(p, p.pongs) for p in live]
        for p in live:
            p.transport.write(wire.PINGREQ)  # type: ignore[union-attr]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            consumed = all(
                p.pongs > seen or p.transport is None or p.transport.is_closing() for p, seen in marks
            )
            acked = not self.generator.qos or self.gate.acks >= self.generator.sent - report.dropped
            if consumed and acked:
                break
            await asyncio.sleep(0.01)
        else:
            log.warning("the broker had not consumed everything %.0f s after the last write", timeout)
        report.drain_s = max(0.0, time.time() - written)

    def _write(self, out: SlotOutput) -> None:
        view = memoryview(out.chunk)
        publishers = self.publishers
        lost_bytes = 0
        for conn, a, b in out.spans:
            publisher = publishers[conn]
            if publisher is None or publisher.transport is None or publisher.transport.is_closing():
                lost_bytes += b - a
                self._lost(conn)
                continue
            publisher.transport.write(view[a:b])
            if self.record is not None:
                self.record.append(out.chunk[a:b])
        if lost_bytes:
            # Messages that went nowhere, estimated from the slot's mean packet size.
            mean = len(out.chunk) / max(1, out.count + out.skipped)
            self.report.dropped += round(lost_bytes / mean)
        self._last_write[out.connections] = time.monotonic()

    def _lost(self, conn: int) -> None:
        publisher = self.publishers[conn]
        if publisher is not None:
            self.report.lost_connections += 1
            self.publishers[conn] = None
            asyncio.ensure_future(self._reconnect(conn))

    async def _reconnect(self, conn: int) -> None:
        delay = 0.5
        packet = wire.connect_packet(
            f"{self.client_id_prefix}-{conn:05d}",
            username=self.address.username,
            password=self.address.password,
            keepalive=self.keepalive,
        )
        while not self._stop:
            await asyncio.sleep(delay)
            try:
                self.publishers[conn] = await wire.connect_protocol(
                    self.address, lambda: _GatedPublisher(packet, self.gate), 5.0
                )
                log.info("simulator connection %d reconnected", conn)
                return
            except Exception as exc:  # noqa: BLE001 - the broker may stay away; keep trying quietly
                log.debug("reconnecting simulator connection %d: %s", conn, exc)
                delay = min(delay * 2, 10.0)

    def _ping_idle(self, now: float) -> None:
        idle = np.flatnonzero(now - self._last_write > self.keepalive / 2)
        for conn in idle.tolist():
            publisher = self.publishers[conn]
            transport = publisher.transport if publisher is not None else None
            if transport is not None and not transport.is_closing():
                transport.write(wire.PINGREQ)
        self._last_write[idle] = now

    def _snapshot(self, start: float) -> dict[str, Any]:
        elapsed = max(1e-9, time.time() - start)
        return {
            "sent": self.generator.sent,
            "elapsed": elapsed,
            "rate": self.generator.sent / elapsed,
            "target_rate": self.generator.rate,
            "acks": self.gate.acks,
            "dropped": self.report.dropped,
            "incidents": sum(self.generator.incidents_started.values()),
            "truth_records": self.generator.truth_records,
            "max_lag_s": self.report.max_lag_s,
        }

    def _fill(self, report: SimulationReport, start: float) -> None:
        report.sent = self.generator.sent - report.dropped
        report.rate = report.sent / report.seconds
        report.accepted_rate = report.sent / (report.seconds + report.drain_s)
        report.acks = self.gate.acks
        report.incidents = dict(self.generator.incidents_started)
        report.truth_records = self.generator.truth_records

    async def close(self) -> None:
        """DISCONNECT every connection."""
        for publisher in self.publishers:
            if publisher is not None:
                publisher.close()
        self.publishers = []
        await asyncio.sleep(0)


def _ensure_file_limit(needed: int) -> None:
    """Raise the soft limit on open files towards the hard one when `needed` sockets would not fit."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        if target < needed:
            raise InvalidInput.at("connections", f"{needed} open files are needed but the limit is {hard}")


def event_loop_factory() -> Callable[[], asyncio.AbstractEventLoop]:
    """uvloop's event loop when installed (several times faster for many sockets), else asyncio's."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency of the platform's MQTT stack
        return asyncio.new_event_loop
    return uvloop.new_event_loop


class TruthWriter:
    """Writes truth records as JSON lines (flushed per record, so a reader can follow the file)."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._handle = self.path.open("wb")
        self.records = 0

    def __call__(self, record: dict[str, Any]) -> None:
        self._handle.write(orjson.dumps(record) + b"\n")
        self._handle.flush()
        self.records += 1

    def close(self) -> None:
        """Close the file."""
        self._handle.close()


def run_simulation(
    generator: TelemetryGenerator,
    broker: str,
    *,
    duration: float,
    progress: ProgressCallback | None = None,
    **options: Any,
) -> SimulationReport:
    """Run a `Simulator` for `duration` seconds on a fresh (uv)loop and return its report."""
    simulator = Simulator(generator, broker, progress=progress, **options)
    with asyncio.Runner(loop_factory=event_loop_factory()) as runner:
        try:
            return runner.run(simulator.run(duration))
        except KeyboardInterrupt:
            return simulator.report


# -- the broker's own throughput -------------------------------------------------------------------------


async def _bare_broker_throughput(
    address: BrokerAddress, seconds: float, connections: int, payload_bytes: int, qos: int, window: int
) -> dict[str, Any]:
    run = uuid.uuid4().hex[:8]
    prefix = f"citybrain-bench/{run}"
    counter = await wire.open_counter(
        address,
        [f"{prefix}/#"],
        qos=qos,
        client_id=f"citybrain-bench-counter-{run}",
        coalesce_s=COUNTER_COALESCE_S,
    )
    gate = FlowGate()
    packets = [
        wire.connect_packet(
            f"citybrain-bench-{run}-{i:04d}",
            username=address.username,
            password=address.password,
            keepalive=0,
        )
        for i in range(connections)
    ]
    semaphore = asyncio.Semaphore(64)

    async def one(i: int) -> _GatedPublisher:
        async with semaphore:
            return await wire.connect_protocol(address, lambda: _GatedPublisher(packets[i], gate), 10.0)

    publishers = await asyncio.gather(*(one(i) for i in range(connections)))
    head = b'{"ts":1764590400.250,"seq":1,"v":"'  # 34 bytes; the filler and '"}' make payload_bytes
    body = (head + b"x" * max(0, payload_bytes - len(head) - 2) + b'"}')[: max(payload_bytes, 2)]
    per_write = max(1, 32_768 // (len(body) + 40))
    chunks = [
        b"".join(
            wire.publish_packet(f"{prefix}/{c}", body, qos=qos, packet_id=(i % 65535) + 1)
            for i in range(per_write)
        )
        for c in range(connections)
    ]
    published = 0
    cpu0 = time.process_time()
    started = time.monotonic()
    warm_until = started + min(1.0, seconds / 4)
    stop_at = warm_until + seconds
    mark_count = mark_time = mark_published = None
    try:
        while True:
            now = time.monotonic()
            if mark_count is None and now >= warm_until:
                mark_count, mark_time, mark_published = counter.count, now, published
            if now >= stop_at:
                break
            if published - counter.count > window:
                await asyncio.sleep(0.002)  # uvloop's timers have 1 ms resolution: shorter sleeps spin
                continue
            for c, publisher in enumerate(publishers):
                if publisher.transport is not None and not publisher.transport.is_closing():
                    publisher.transport.write(chunks[c])
                    published += per_write
            if not gate.clear.is_set():
                await gate.clear.wait()
            await asyncio.sleep(0)
        received_at_end, end_time = counter.count, time.monotonic()
    finally:
        cpu = time.process_time() - cpu0
        for publisher in publishers:
            publisher.close()
        counter.close()
    assert mark_count is not None and mark_time is not None and mark_published is not None
    measured = end_time - mark_time
    return {
        "broker": address.url,
        "seconds": round(measured, 3),
        "connections": connections,
        "payload_bytes": len(body),
        "qos": qos,
        "published_per_s": round((published - mark_published) / measured),
        "received_per_s": round((received_at_end - mark_count) / measured),
        "published": published,
        "received": counter.count,
        "process_cpu_s": round(cpu, 3),
    }


def bare_broker_throughput(
    url: str,
    *,
    seconds: float = 10.0,
    connections: int = 100,
    payload_bytes: int = 120,
    qos: int = 0,
    window: int = 50_000,
) -> dict[str, Any]:
    """The broker's own publish→subscribe throughput: the simulator's raw publisher on `connections`
    connections writing prebuilt PUBLISH packets of `payload_bytes` as fast as the broker takes them, and
    one subscriber that only counts (reading once a millisecond, so that it takes little CPU from the
    broker). At most `window` messages are in transit (published, not yet counted), so the figure is what
    the broker sustains, not how much it can buffer. Returns messages/s published and received over
    `seconds` after a short warm-up."""
    address = parse_broker_url(url)
    with asyncio.Runner(loop_factory=event_loop_factory()) as runner:
        return runner.run(_bare_broker_throughput(address, seconds, connections, payload_bytes, qos, window))
