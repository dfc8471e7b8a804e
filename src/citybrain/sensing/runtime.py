"""The running sensing capability of one process: registry index, ingest pipeline, rule engines, alerts,
lake and (when a broker is configured) the MQTT subscription, wired together as a background service.

CPU work (decode, rules) runs in one worker thread at a time, in arrival order: the per-device state
arrays are not shared between threads, and a device's readings must meet its rules in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import os
import threading
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import anyio
import numpy as np
import orjson
import sqlalchemy as sa

from citybrain.core.context import Context
from citybrain.core.events import Event
from citybrain.sensing.alerts import service as alert_service
from citybrain.sensing.alerts.events import AlertRaised, AlertUpdated
from citybrain.sensing.alerts.service import AlertManager
from citybrain.sensing.devices import flows as device_flows
from citybrain.sensing.devices import service as devices
from citybrain.sensing.devices.index import DeviceIndex
from citybrain.sensing.devices.models import DeadLetterRow
from citybrain.sensing.devices.spec import DeviceTypeSpec
from citybrain.sensing.ingest.pipeline import DeadLetter, IngestPipeline, IngestReport, RawMessage
from citybrain.sensing.lake.query import TelemetryQuery
from citybrain.sensing.rules.spec import Transitions
from citybrain.sensing.shards import org_shards, owned_devices
from citybrain.sensing.vitals import service as vitals
from citybrain.sensing.vitals.spec import BUILTIN_INDICATORS

if TYPE_CHECKING:
    from citybrain.platform import Platform

log = logging.getLogger(__name__)
SENSING_CONTEXT = Context(id="00000000-0000-7000-8000-00000000a1e7", actor="system:sensing")
AREA_KINDS = ("village", "town")
LATENCY_SAMPLES = 100_000
STAGE_SAMPLES = 10_000
RESUME_WINDOW = timedelta(days=2)
VITALS_ROWS_PER_TRANSACTION = 2000
SLOW_ALERT_S = 0.25  # an alert later than this after its reading is logged
BEHIND_SLACK_S = 1.0  # transit below this is normal (device → broker → here), not a backlog


def device_types() -> dict[str, DeviceTypeSpec]:
    from citybrain.scenarios import scenario_device_types

    return {spec.slug: spec for spec in scenario_device_types()}


class SensingRuntime:
    """Background service: `await ingest(messages)` is the one entry of telemetry (MQTT and HTTP)."""

    name = "sensing"

    def __init__(self, platform: Platform) -> None:
        self.platform = platform
        self.types = device_types()
        self.index = DeviceIndex(list(self.types), [])
        self.pipeline: IngestPipeline | None = None
        self.engines: dict[str, Any] = {}
        self.alerts: AlertManager | None = None
        self.lake: Any = None
        self.counts: Counter[str] = Counter()
        self._cpu = anyio.Lock()
        self._tasks: list[asyncio.Task[None]] = []
        self._source: Any = None
        self._publisher: Any = None
        self._last_flush = time.monotonic()
        # Lake flushes take this, not the CPU lock: ingest goes on while the periodic flush writes files.
        self._flush_lock = threading.Lock()
        self._commit = GroupCommit(
            lambda: self.platform.run(self._flush_lake), platform.settings.lake_commit_s
        )
        self.latest = vitals.LatestReadings(self.types)
        self._latency = np.zeros(LATENCY_SAMPLES)
        self._stages = _StageTimes()
        self._latency_count = 0
        self._behind_s = 0.0  # how far the telemetry taken in lags the devices' clocks, beyond the usual
        self.vital_signs: vitals.VitalSigns | None = None
        self._org_owner: tuple[np.ndarray, np.ndarray] | None = None

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        await anyio.to_thread.run_sync(self._load)
        self._commit.start()
        self._tasks.append(asyncio.create_task(self._ticker(), name="sensing-tick"))
        self._tasks.append(asyncio.create_task(self._vitals_loop(), name="sensing-vitals"))
        settings = self.platform.settings
        if settings.telemetry_nats:
            from citybrain.sensing.ingest.jetstream import JetStreamSource

            self._source = JetStreamSource(
                settings.telemetry_nats,
                self.ingest,
                shard=settings.sensing_shard,
                durable=self._commit.request,
                stream=settings.telemetry_stream,
            )
            await self._source.start()
        elif settings.mqtt:
            from citybrain.sensing.ingest.mqtt import MqttSource

            self._source = MqttSource(
                settings.mqtt,
                on_batch=self.ingest,
                qos=settings.mqtt_qos,
                shared_group=settings.mqtt_share_group or None,
                client_id=settings.mqtt_client_id or f"citybrain-ingest-{settings.district}",
                # A batch waits at most 5 ms to fill: at city rates it fills sooner, and
                # a quiet night does not hold an alarm back.
                max_delay_s=0.005,
                max_batch=20_000,
                max_pending=200_000,
                durable=self._commit.request,
            )
            await self._source.start()
            log.info(
                "sensing: taking telemetry from %s (QoS %d)", self._source.address.url, settings.mqtt_qos
            )
        if settings.mqtt:
            from citybrain.sensing.alerts.mqtt import AlertPublisher

            district = next(iter(sorted(self._districts())), "unknown")
            self._publisher = AlertPublisher(
                settings.mqtt,
                self.platform.bus,
                district=district,
                client_id=f"citybrain-alerts-{district}-{os.getpid()}",
            )
            await self._publisher.start()

    async def stop(self) -> None:
        if self._source is not None:
            await self._source.stop()
        if self._publisher is not None:
            await self._publisher.stop()
        await self._commit.stop()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            try:
                await task
            except (asyncio.CancelledError, Exception) as exc:  # noqa: BLE001 - stopping anyway
                log.debug("sensing task ended with %r", exc)
        self._tasks.clear()
        if self.lake is not None:
            async with self._cpu:
                await anyio.to_thread.run_sync(self._close_lake)

    def _flush_lake(self) -> None:
        with self._flush_lock:
            self.lake.flush()
            self._last_flush = time.monotonic()

    def _close_lake(self) -> None:
        self._flush_lake()
        self.lake.close()

    def _load(self) -> None:
        from citybrain.sensing.lake.base import open_lake

        platform = self.platform
        with platform.session() as session:
            self.index = devices.load_index(session, types=list(self.types), org_tree=platform.org_tree)
            self.alerts = AlertManager(self.index.org_units)
            self.alerts.load(session)
        self.pipeline = IngestPipeline(index=self.index, types=self.types, districts=self._districts())
        self.pipeline.stored = self._in_lake
        self._assign_shard()
        self._build_engines()
        from citybrain.scenarios import scenario_indicators

        self.vital_signs = vitals.VitalSigns(
            [*BUILTIN_INDICATORS, *scenario_indicators()], self.types, platform.org_tree, self.index.org_units
        )
        self.lake = open_lake(platform.settings.lake, home=platform.settings.home)
        # Resume each device's clock from what the lake holds, so readings a broker resends after a crash
        # (stored, but not acknowledged) are known duplicates, not new rows.
        nums, newest = self.lake.newest(datetime.now(UTC) - RESUME_WINDOW)
        self.pipeline.resume(nums, newest)
        log.info(
            "sensing: %d devices of %d types indexed (%.1f MB)",
            len(self.index),
            len(self.types),
            self.index.nbytes / 1e6,
        )

    def _in_lake(self, nums: np.ndarray, ts: np.ndarray) -> np.ndarray:
        """Which of these readings (device number, epoch seconds) the lake already holds: asked of late
        readings only, a day and 10,000 devices at a time (the lake's raw-query limits)."""
        found = np.zeros(nums.size, bool)
        if self.lake is None or not nums.size:
            return found
        keys = np.round(ts * 1e6).astype(np.int64)
        order = np.argsort(ts)
        day = 86_400.0
        start = 0
        while start < order.size:
            first = ts[order[start]]
            stop = int(np.searchsorted(ts[order], first + day - 1e-6, side="left"))
            window = order[start:stop]
            for part in range(0, window.size, 10_000):
                chosen = window[part:part + 10_000]
                table = self.lake.query(TelemetryQuery(
                    start=datetime.fromtimestamp(first, UTC), end=datetime.fromtimestamp(first + day, UTC),
                    device_nums=sorted({int(n) for n in nums[chosen]}), limit=1_000_000))
                if table.num_rows:
                    stored = set(zip(table.column("device_num").to_pylist(),
                                     (round(t.timestamp() * 1e6) for t in table.column("ts").to_pylist()),
                                     strict=True))
                    found[chosen] = [(int(n), int(k)) in stored for n, k in zip(nums[chosen], keys[chosen],
                                                                                  strict=True)]
            start = stop
        return found

    def source_health(self) -> dict[str, bool]:
        """Whether the telemetry source this process reads (MQTT or JetStream) is connected; empty without
        one (HTTP ingest only). /health reports it."""
        if self._source is None:
            return {}
        return {("jetstream_connected" if self._from_jetstream else "mqtt_connected"):
                bool(self._source.stats()["connected"])}

    @property
    def _from_jetstream(self) -> bool:
        return self._source is not None and bool(self.platform.settings.telemetry_nats)

    @property
    def sharded(self) -> bool:
        return self.platform.settings.sensing_shards > 1

    def _assign_shard(self) -> None:
        """With N workers, tell the pipeline which devices are this worker's (sensing.shards)."""
        if self.sharded and self.pipeline is not None:
            settings = self.platform.settings
            self.pipeline.owned = owned_devices(
                self.index, self.platform.org_tree, settings.sensing_shards, settings.sensing_shard
            )

    def _owned_locals(self, device_type: str, locals_: np.ndarray) -> np.ndarray:
        """Of these positions of a type, the ones of devices this worker owns."""
        if self.pipeline is None or self.pipeline.owned is None:
            return locals_
        code = self.index.type_codes[device_type]
        nums = np.flatnonzero(self.index.type_code == code)
        mine = np.zeros(self.index.capacity(device_type), bool)
        mine[self.index.local[nums]] = self.pipeline.owned[nums]
        return locals_[mine[locals_]]

    def _districts(self) -> set[str]:
        return {code for code, unit in self.platform.org_tree.units.items() if unit.kind == "district"}

    def _area_arrays(self, device_type: str) -> dict[str, np.ndarray]:
        """Per area kind, the area id (org position of the village / town) of each device of the type."""
        tree = self.platform.org_tree
        out = {}
        for kind in AREA_KINDS:
            of = np.full(max(1, len(self.index.org_units)), -1, np.int32)
            for position, code in enumerate(self.index.org_units):
                chain = [code, *reversed(tree.ancestors(code))]
                match = next((c for c in chain if c in tree.units and tree.units[c].kind == kind), None)
                if match is not None and match in self.index.org_codes:
                    of[position] = self.index.org_codes[match]
            areas = self.index.areas(device_type, of)
            # Engines hold room for at least one device, so a type with none yet still builds.
            out[kind] = areas if areas.size else np.full(1, -1, np.int32)
        return out

    def _build_engines(self) -> None:
        from citybrain.sensing.rules.engine import RuleEngine, rules_for

        self.engines = {}
        for slug, spec in self.types.items():
            rule_file = rules_for(spec)
            rules = [r for r in (rule_file.rules if rule_file else []) if r.enabled]
            capacity = self.index.capacity(slug)
            engine = RuleEngine(spec, rules, max(1, capacity), areas=self._area_arrays(slug))
            # Silence counts from now for devices registered before this start: a device that never reports
            # again goes stale after its rule's after_s, not never.
            every = np.arange(capacity, dtype=np.int64)
            engine.register_devices(self._owned_locals(slug, every), time.time())
            self.engines[slug] = engine

    async def _vitals_loop(self) -> None:
        interval = self.platform.settings.vitals_interval_s
        while True:
            if self.sharded:
                # Shards compute at the same boundaries, so their parts of a district's value share a moment.
                await asyncio.sleep(interval - time.time() % interval)
            else:
                await asyncio.sleep(interval)
            try:
                await self.record_vitals()
            except Exception:
                log.exception("computing vital signs failed")

    async def record_vitals(self) -> int:
        """Compute every indicator for every org unit now and store the values; returns rows written. A
        sharded worker stores the units wholly its own (its towns and their villages) and its parts of the
        units it shares with the other shards (the district), whose values the last part completes."""
        async with self._cpu:  # the state arrays hold still while they are copied (a few ms) …
            state = await self.platform.run(self._vitals_state)
        # … and the indicators are computed from the copy and stored while ingest goes on.
        assert self.vital_signs is not None
        parts = await self.platform.run(self.vital_signs.parts, state)
        return await self.platform.run(self._store_vitals, parts)

    def _store_vitals(self, parts: dict[str, tuple[np.ndarray, np.ndarray]]) -> int:
        assert self.vital_signs is not None
        values = self.vital_signs.values(parts)
        units = self.index.org_units
        now = self.platform.clock.now()
        if not self.sharded:
            return self._store_vital_rows(vitals.vital_rows(values, units, now))
        settings = self.platform.settings
        interval = settings.vitals_interval_s
        moment = datetime.fromtimestamp(now.timestamp() // interval * interval, UTC)
        owner, whole = self._org_shards()
        mine = whole & (owner == settings.sensing_shard)
        written = self._store_vital_rows(vitals.vital_rows(
            {slug: np.where(mine, column, np.nan) for slug, column in values.items()}, units, moment))
        shared = np.flatnonzero(~whole).tolist()
        rows = vitals.part_rows(parts, shared, units, moment, shard=settings.sensing_shard,
                                shards=settings.sensing_shards)
        with self.platform.transaction() as session:
            vitals.store_parts(session, rows)
        with self.platform.transaction() as session:  # after the parts commit: see note in merge_parts
            written += vitals.merge_parts(session, self.vital_signs.specs,
                                          stale_before=moment - timedelta(seconds=max(3600.0, 10 * interval)))
        return written

    def _store_vital_rows(self, rows: list[dict[str, Any]]) -> int:
        # In short transactions: one store writer at a time (SQLite), and alerts must not queue behind a
        # whole round of vital signs (~17k rows for Pudong took 300-500 ms in one).
        for start in range(0, len(rows), VITALS_ROWS_PER_TRANSACTION):
            with self.platform.transaction() as session:
                vitals.store_rows(session, rows[start:start + VITALS_ROWS_PER_TRANSACTION])
        return len(rows)

    def _org_shards(self) -> tuple[np.ndarray, np.ndarray]:
        if self._org_owner is None:
            self._org_owner = org_shards(self.platform.org_tree, list(self.index.org_units),
                                         self.platform.settings.sensing_shards)
        return self._org_owner

    def _vitals_state(self) -> vitals.SensingState:
        assert self.vital_signs is not None and self.pipeline is not None and self.alerts is not None
        open_alerts = self.alerts.open_alerts()
        owned = None
        if self.sharded:
            # A worker counts its own devices and the alerts on its own towns; the store also holds the
            # other shards' alerts, which this worker loaded at start.
            owned = self.pipeline.owned.copy() if self.pipeline.owned is not None else None
            owner, _whole = self._org_shards()
            shard = self.platform.settings.sensing_shard
            positions = self.index.org_codes
            open_alerts = [a for a in open_alerts
                           if a[2] in positions and owner[positions[a[2]]] == shard]
        return vitals.SensingState(
            copy.copy(self.index),  # registration replaces grown arrays; the copy keeps these
            self.types,
            self.pipeline.last_seen.copy(),
            self.latest.snapshot(),
            open_alerts,
            time.time(),
            owned,
        )

    # ------------------------------------------------------------------ registration

    async def register(self, items: list[devices.DeviceInput], *, ctx: Context) -> devices.Registration:
        """Register devices, index them for the hot path and give the rule engines room for them."""
        platform = self.platform

        async with self._cpu:
            outcome, events = await platform.run(
                device_flows.register, platform, items=items, types=self.types, index=self.index, ctx=ctx
            )
            rows = outcome.rows
            if rows:
                devices.add_to_index(self.index, rows)
                for slug in {r["device_type"] for r in rows}:
                    self.engines[slug].grow(self.index.capacity(slug), areas=self._area_arrays(slug))
                if self.pipeline is not None:
                    self.pipeline.fit()
                    self._assign_shard()
                now = time.time()
                for slug in {r["device_type"] for r in rows}:
                    locals_ = np.array([r["local"] for r in rows if r["device_type"] == slug], np.int64)
                    engine = self.engines[slug]
                    engine.register_devices(self._owned_locals(slug, locals_), now)
        if events:
            await platform.bus.publish(*events)
        return outcome

    # ------------------------------------------------------------------ the hot path

    async def ingest(
        self, messages: list[RawMessage], *, source: str = "mqtt", refused: list[DeadLetter] | None = None
    ) -> IngestReport:
        """Accept a batch of raw messages: dead letters and alerts are stored before this returns, and the
        readings are in the lake's buffer. HTTP readings are durable too when it returns; an MQTT source
        acknowledging QoS 1 waits for `durable()` (one group-commit flush serves many batches; at QoS 0 the
        periodic flush, `lake_flush_s`, is the promise). `refused`: dead letters found before (HTTP items
        that named no registered device), stored with the others."""
        arrived = time.time()
        async with self._cpu:
            started = time.time()
            report, events = await self.platform.run(self._ingest_sync, messages, source, list(refused or []))
        if events:
            await self.platform.bus.publish(*events)
            self._note_latency(events)
        if source != "mqtt" and report.accepted:
            await self._commit.request()  # the HTTP 200 promises the readings are kept
        done = time.time()
        # Where a reading's time goes: on its way here (device → broker → this process), waiting for the
        # CPU behind earlier batches, and being processed (decode, rules, lake, alerts, bus).
        transit = self._transit(report, arrived)
        if transit is not None and source == "mqtt":
            self._behind_s = max(0.0, transit - BEHIND_SLACK_S)
        self._stages.note(transit=transit, queued=started - arrived, processed=done - started)
        return report

    @staticmethod
    def _transit(report: IngestReport, arrived: float) -> float | None:
        lags = [float(np.median(arrived - batch.ts)) for batch in report.accepted if len(batch)]
        return float(np.median(lags)) if lags else None

    def _note_latency(self, events: list[Event]) -> None:
        """Device timestamp → alert on the bus, per raised alert (a ring of the latest LATENCY_SAMPLES)."""
        now = time.time()
        for event in events:
            if isinstance(event, AlertRaised | AlertUpdated) and event.alert["subjectKind"] == "device":
                ts = event.alert["reading"].get("ts")
                if isinstance(ts, float):
                    self._latency[self._latency_count % LATENCY_SAMPLES] = now - ts
                    self._latency_count += 1
                    if now - ts > SLOW_ALERT_S:
                        log.info("alert %s/%s on %s reached the bus %.0f ms after the device's timestamp",
                                 event.alert["deviceType"], event.alert["ruleId"], event.alert["subject"],
                                 (now - ts) * 1000)

    def alert_latency_ms(self) -> dict[str, float | int | None]:
        samples = self._latency[: min(self._latency_count, LATENCY_SAMPLES)] * 1000
        if not samples.size:
            return {"count": 0, "p50": None, "p99": None, "max": None}
        p50, p99 = np.percentile(samples, [50, 99]).tolist()
        return {
            "count": self._latency_count,
            "p50": round(p50, 2),
            "p99": round(p99, 2),
            "max": round(float(samples.max()), 2),
        }

    def _ingest_sync(
        self,
        messages: list[RawMessage],
        source: str,
        refused: list[DeadLetter],
    ) -> tuple[IngestReport, list[Event]]:
        assert self.pipeline is not None
        report = self.pipeline.process(messages, source=source)
        report.dead += refused
        transitions: list[tuple[str, list[Transitions], Any]] = []
        for batch in report.in_order:
            self.latest.update(batch)
            found = self.engines[batch.device_type].observe(batch)
            if found:
                transitions.append((batch.device_type, found, batch))
        for batch in report.accepted:
            self.lake.append(batch)
        events = self._store(report.dead, transitions)
        self.counts["messages"] += len(messages)
        self.counts["accepted"] += report.accepted_count
        self.counts["dead_letters"] += len(report.dead)
        self.counts["duplicates"] += report.duplicates
        self.counts["out_of_order"] += report.out_of_order
        return report, events

    def _store(
        self, dead: list[DeadLetter], transitions: list[tuple[str, list[Transitions], Any]]
    ) -> list[Event]:
        if not dead and not transitions:
            return []
        platform = self.platform
        now = platform.clock.now()
        events: list[Event] = []
        with platform.transaction() as session:
            if dead:
                session.execute(
                    sa.insert(DeadLetterRow),
                    [
                        {
                            "received_at": datetime.fromtimestamp(d.received or time.time(), UTC),
                            "source": d.source,
                            "topic": d.topic,
                            "device_id": d.device_id,
                            "reason": d.reason,
                            "payload": d.payload,
                        }
                        for d in dead
                    ],
                )
            assert self.alerts is not None
            for device_type, found, batch in transitions:
                outcome = self.alerts.apply(session, device_type, found, batch, ctx=SENSING_CONTEXT, now=now)
                events += outcome.events
                self.counts["alerts_raised"] += outcome.raised
                self.counts["alerts_cleared"] += outcome.cleared
            events += alert_service.mirror(platform, session, [e.alert for e in events], ctx=SENSING_CONTEXT)
        return events

    async def _ticker(self) -> None:
        interval = self.platform.settings.sensing_tick_s
        while True:
            await asyncio.sleep(interval)
            try:
                # Silence is judged on the clock of the telemetry taken in: when ingest runs L seconds
                # behind the devices (readings waiting at the broker), a device is not called silent for
                # readings still on their way. (If the feed stops altogether, the last lag still applies.)
                moment = time.time() - self._behind_s
                async with self._cpu:
                    events = await self.platform.run(self._tick_sync, moment)
                if events:
                    await self.platform.bus.publish(*events)
                if time.monotonic() - self._last_flush >= self.platform.settings.lake_flush_s:
                    await self.platform.run(self._flush_lake)
            except Exception:
                log.exception("sensing tick failed")

    def _tick_sync(self, now: float) -> list[Event]:
        transitions = []
        for slug, engine in self.engines.items():
            found = engine.tick(now)
            if found:
                transitions.append((slug, found, None))
        return self._store([], transitions)

    async def replay_dead_letters(
        self,
        *,
        ids: list[int] | None = None,
        device_id: str | None = None,
        reason: str | None = None,
        since: datetime | None = None,
        limit: int = 10_000,
    ) -> dict[str, int]:
        """Send stored dead letters through the pipeline again (oldest first), e.g. after their device was
        registered or its type's range was corrected. What is accepted now goes to the lake (and to the
        rules if it moves its device's time forward); what is refused again is kept as a new dead letter
        with today's reason. The replayed rows are deleted only after the readings are durable, so a
        crash in between replays them again, and the pipeline then drops them as duplicates."""
        def select() -> list[DeadLetterRow]:
            stmt = sa.select(DeadLetterRow)
            if ids:
                stmt = stmt.where(DeadLetterRow.id.in_(ids))
            if device_id is not None:
                stmt = stmt.where(DeadLetterRow.device_id == device_id)
            if reason is not None:
                stmt = stmt.where(DeadLetterRow.reason.contains(reason, autoescape=True))
            if since is not None:
                stmt = stmt.where(DeadLetterRow.received_at >= since)
            with self.platform.session() as session:
                return list(session.scalars(stmt.order_by(DeadLetterRow.id).limit(limit)))

        rows = await self.platform.run(select)
        messages: list[RawMessage] = []
        refused: list[DeadLetter] = []
        for row in rows:
            received = row.received_at.timestamp()
            if row.topic:  # taken from MQTT, or an HTTP item already turned into its topic
                messages.append((row.topic, row.payload, received))
                continue
            try:
                item = orjson.loads(row.payload)
            except orjson.JSONDecodeError:
                refused.append(DeadLetter("replay", "", row.device_id, "payload is not JSON (or was cut at 4 KB)",
                                          row.payload, received))
                continue
            more, _positions, dead = self.http_messages([item])
            messages += [(topic, payload, received) for topic, payload, _now in more]
            refused += dead
        report = await self.ingest(messages, source="replay", refused=refused)

        def delete() -> None:
            with self.platform.transaction() as session:
                session.execute(sa.delete(DeadLetterRow).where(DeadLetterRow.id.in_([r.id for r in rows])))

        if rows:
            await self.platform.run(delete)
        outcome = {"replayed": len(rows), "accepted": report.accepted_count, "refused": len(report.dead),
                   "duplicates": report.duplicates, "outOfOrder": report.out_of_order}
        log.info("dead letters replayed: %s", outcome)
        return outcome

    def http_messages(
        self, items: list[Any], within: Callable[[str | None], bool] | None = None
    ) -> tuple[list[RawMessage], list[int], list[DeadLetter]]:
        """HTTP readings as the raw messages MQTT would have carried: (messages, the item index of each,
        dead letters for items that name no registered device, positioned by item index). With `within`
        (a sender's org scope), readings of devices placed elsewhere are refused too."""
        district = next(iter(sorted(self._districts())), "")
        now = time.time()
        refused: list[DeadLetter] = []
        ids: list[str] = []
        positions: list[int] = []
        for i, item in enumerate(items):
            device_id = item.get("deviceId") if isinstance(item, dict) else None
            if not isinstance(device_id, str) or not devices.DEVICE_ID_RE.match(device_id):
                refused.append(
                    DeadLetter(
                        "http",
                        "",
                        None,
                        "deviceId: a registered device id is required",
                        orjson.dumps(item)[:4096],
                        now,
                        i,
                    )
                )
                continue
            ids.append(device_id)
            positions.append(i)
        messages: list[RawMessage] = []
        kept: list[int] = []
        for device_id, num, i in zip(ids, self.index.lookup(ids).tolist(), positions, strict=True):
            if num == 0:
                refused.append(
                    DeadLetter("http", "", device_id, "unknown device", orjson.dumps(items[i])[:4096], now, i)
                )
                continue
            if within is not None:
                org = int(self.index.org[num])
                if not within(self.index.org_units[org] if org >= 0 else None):
                    refused.append(DeadLetter("http", "", device_id, "device outside your org scope",
                                              orjson.dumps(items[i])[:4096], now, i))
                    continue
            slug = self.index.type_slugs[self.index.type_code[num]]
            payload = orjson.dumps({k: v for k, v in items[i].items() if k != "deviceId"})
            messages.append((f"city/{district}/{slug}/{device_id}/telemetry", payload, now))
            kept.append(i)
        return messages, kept, refused

    def online(self, nums: list[int]) -> list[bool]:
        """Whether each device was heard within its type's offline_after."""
        if self.pipeline is None:
            return [False] * len(nums)
        now = time.time()
        out = []
        for num in nums:
            seen = self.pipeline.last_seen[num] if num < self.pipeline.last_seen.size else float("nan")
            code = int(self.index.type_code[num]) if num < self.index.type_code.size else -1
            limit = self.types[self.index.type_slugs[code]].offline_after if code >= 0 else 0.0
            out.append(bool(not np.isnan(seen) and now - seen <= limit))
        return out

    # ------------------------------------------------------------------ status

    def newest_by_type(self) -> dict[str, float]:
        """Per device type, when this process last accepted a reading of one of its devices (epoch
        seconds): what the data catalog's freshness rules judge telemetry by."""
        if self.pipeline is None or not len(self.index):
            return {}
        seen = self.pipeline.last_seen[: self.index.type_code.size]
        codes = self.index.type_code
        out = {}
        for code, slug in enumerate(self.index.type_slugs):
            of_type = seen[codes == code]
            if of_type.size and not np.isnan(of_type).all():
                out[slug] = float(np.nanmax(of_type))
        return out

    def status(self) -> dict[str, Any]:
        now = time.time()
        online = 0
        if self.pipeline is not None and len(self.index):
            seen = self.pipeline.last_seen[: self.index.type_code.size]
            limits = np.array([self.types[s].offline_after for s in self.index.type_slugs] + [0.0])
            codes = self.index.type_code
            limit = limits[np.where(codes >= 0, codes, len(limits) - 1)]
            with np.errstate(invalid="ignore"):
                online = int(((now - seen) <= limit).sum())
        return {
            "devices": len(self.index),
            "online": online,
            "types": sorted(self.types),
            "open_alerts": self.alerts.open_count if self.alerts else 0,
            "state_bytes": self.index.nbytes
            + (self.pipeline.nbytes if self.pipeline else 0)
            + sum(getattr(e, "nbytes", 0) for e in self.engines.values()),
            "counts": dict(self.counts),
            "lake_buffered_rows": self.lake.buffered_rows if self.lake is not None else 0,
            "lake_commits": self._commit.flushes,
            "behind_s": round(self._behind_s, 3),
            "alert_latency_ms": self.alert_latency_ms(),
            "ingest_stages_ms": self._stages.summary(),
            "mqtt": self._source.stats() if self._source is not None and not self._from_jetstream else None,
            "jetstream": self._source.stats() if self._from_jetstream else None,
            "shard": {
                "shard": self.platform.settings.sensing_shard,
                "shards": self.platform.settings.sensing_shards,
            },
            "alerts_published_mqtt": self._publisher.published if self._publisher is not None else None,
        }


class GroupCommit:
    """Readings that must be durable before they are acknowledged (MQTT QoS 1, HTTP) share flushes:
    `await request()` returns after a flush that began after the call, and one flush, started at most
    `delay_s` after the first request, serves every request made meanwhile. So the cost of an fsync per
    partition is paid per flush, not per batch, while ingest goes on."""

    def __init__(self, flush: Any, delay_s: float) -> None:
        self._flush = flush
        self.delay_s = delay_s
        self._waiting: list[asyncio.Future[None]] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.flushes = 0

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="sensing-commit")

    async def stop(self) -> None:
        if self._task is None:
            return
        while self._waiting:  # nobody who was promised a flush is left waiting
            await asyncio.sleep(self.delay_s or 0.001)
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None

    def request(self) -> asyncio.Future[None]:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append(future)
        self._wake.set()
        return future

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            if self.delay_s:
                await asyncio.sleep(self.delay_s)
            waiting, self._waiting = self._waiting, []
            try:
                await self._flush()
            except Exception as exc:
                log.exception("lake flush for %d waiting acknowledgements failed", len(waiting))
                for future in waiting:
                    if not future.done():
                        future.set_exception(exc)
            else:
                self.flushes += 1
                for future in waiting:
                    if not future.done():
                        future.set_result(None)


class _StageTimes:
    """The latest STAGE_SAMPLES ingest calls' stage times, for the status report."""

    def __init__(self) -> None:
        self._values = {name: np.full(STAGE_SAMPLES, np.nan) for name in ("transit", "queued", "processed")}
        self._count = 0

    def note(self, **stages: float | None) -> None:
        at = self._count % STAGE_SAMPLES
        for name, value in stages.items():
            self._values[name][at] = np.nan if value is None else value
        self._count += 1

    def summary(self) -> dict[str, dict[str, float | None]]:
        out: dict[str, dict[str, float | None]] = {}
        for name, values in self._values.items():
            seen = values[~np.isnan(values)] * 1000
            out[name] = (
                {"p50": None, "p99": None}
                if not seen.size
                else {
                    "p50": round(float(np.percentile(seen, 50)), 2),
                    "p99": round(float(np.percentile(seen, 99)), 2),
                }
            )
        return out
