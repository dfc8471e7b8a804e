"""The telemetry simulator: payloads, normal readings that trip no shipped rule, incidents that do, ground
truth that matches what was published (re-derived here from the published readings alone), and a real
publish to Mosquitto that a gmqtt subscriber receives exactly."""

from __future__ import annotations

import asyncio
import itertools
import math
import time
import uuid
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import gmqtt
import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import citybrain.scenarios
from citybrain.core.errors import InvalidInput
from citybrain.scenarios import scenario_device_types
from citybrain.sensing.rules.spec import RuleSpec, load_rules
from citybrain.sim.devices import Simulator, TelemetryGenerator, decode_packets, event_loop_factory
from citybrain.sim.fleet import build_fleet
from citybrain.sim.models import TypeModel, render_numbers
from tests.services import MQTT_HOST, MQTT_PORT, require_mqtt

SPECS = {spec.slug: spec for spec in scenario_device_types()}
RULE_FILES = sorted((Path(citybrain.scenarios.__file__).parent / "rules").glob("*.yaml"))
RULES: dict[str, list[RuleSpec]] = {f.device_type: f.rules for f in map(load_rules, RULE_FILES)}
EVERY_TYPE = {slug: 1.0 for slug in SPECS}
START = 1_764_590_400.0  # 2025-12-01 20:00 Shanghai


def published(generator: TelemetryGenerator, cycles: int) -> list[tuple[str, dict[str, Any]]]:
    """Everything the generator sends in `cycles` cycles (silent devices left out), decoded, in send order."""
    out = []
    for cycle, slot in generator.schedule(cycles):
        rendered = generator.render(cycle, slot)
        if rendered is None:
            continue
        for _, a, b in rendered.spans:
            packets = decode_packets(rendered.chunk[a:b])
            out.extend((topic, orjson.loads(payload)) for topic, payload in packets)
    generator.finish(generator.due(cycles, 0))
    return out


def by_device(readings: list[tuple[str, dict[str, Any]]]) -> dict[str, list[dict[str, Any]]]:
    series: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for topic, payload in readings:
        series[topic.split("/")[3]].append(payload)
    for values in series.values():
        values.sort(key=lambda p: p["ts"])
    return series


def number(value: Any) -> float:
    return float(value) if not isinstance(value, bool) else (1.0 if value else 0.0)


# -- reference rule evaluation, written from the YAML semantics only --------------------------------------


Windows = list[tuple[float, float | None]]


def threshold_windows(series: list[tuple[float, float]], p: dict[str, Any]) -> Windows:
    windows, active, since = [], False, 0.0
    for ts, value in series:
        up = p.get("above") is not None
        trips = value > p["above"] if up else value < p["below"]
        clears = value < p["clear_below"] if up else value > p["clear_above"]
        if not active and trips:
            active, since = True, ts
        elif active and clears:
            windows.append((since, ts))
            active = False
    return windows + ([(since, None)] if active else [])


def rate_windows(series: list[tuple[float, float]], p: dict[str, Any]) -> Windows:
    windows, active, since = [], False, 0.0
    for (t0, v0), (t1, v1) in itertools.pairwise(series):
        rate = (v1 - v0) * 60.0 / (t1 - t0)
        if not active and rate > p["max_rise_per_min"]:
            active, since = True, t1
        elif active and rate < p["clear_below_per_min"]:
            windows.append((since, t1))
            active = False
    return windows + ([(since, None)] if active else [])


def ewma_z(values: list[float], span: float, min_std: float = 0.0) -> list[float]:
    """z of each reading against the EWMA mean and variance of the readings before it (plain, unclipped),
    the standard deviation floored at `min_std`."""
    alpha, mean, variance, out = 2 / (span + 1), values[0], 0.0, [0.0]
    for count, x in enumerate(values[1:], start=1):
        std = max(math.sqrt(variance), min_std)
        out.append(abs(x - mean) / std if std > 0 else 0.0)
        weight = max(alpha, 1 / (count + 1))
        deviation = x - mean
        mean += weight * deviation
        variance = (1 - weight) * (variance + weight * deviation * deviation)
    return out


def r3(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


# -- payloads ----------------------------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(-99_999, 99_999, allow_nan=False), min_size=1, max_size=30), st.integers(0, 3))
def test_fixed_width_numbers_read_back_as_the_rounded_value(values: list[float], decimals: int) -> None:
    array = np.round(np.array(values), decimals)
    text = render_numbers(array, 7 + decimals, decimals)
    for row, value in zip(text, array, strict=True):
        shown = row.tobytes().decode()
        assert len(shown) == 7 + decimals and float(shown) == pytest.approx(value, abs=10 ** -decimals / 2)
        assert orjson.loads(f'{{"v":{shown}}}')["v"] == pytest.approx(value, abs=10 ** -decimals / 2)


def test_payloads_are_json_with_each_types_measurements_in_range() -> None:
    fleet = build_fleet(700, seed=1, mix=EVERY_TYPE)
    generator = TelemetryGenerator(fleet, interval=30, tick=1.0, connections=7, seed=1, start_ts=START)
    readings = published(generator, 12)
    assert len(readings) == 700 * 12
    type_of = dict(zip(fleet.device_id.tolist(), fleet.device_type.tolist(), strict=True))
    phase: dict[str, float] = {}
    for topic, payload in readings:
        prefix, district, device_type, device_id, leaf = topic.split("/")
        assert (prefix, district, leaf) == ("city", "310115", "telemetry")
        assert type_of[device_id] == device_type
        spec = SPECS[device_type]
        assert set(payload) == {"ts", "seq", *spec.measurements}
        for name, value in payload.items():
            if name in ("ts", "seq"):
                continue
            measurement = spec.measurements[name]
            expected = {"boolean": bool, "string": str, "integer": int}.get(measurement.kind, (int, float))
            assert isinstance(value, expected), (name, value)
            if measurement.kind in ("number", "integer"):
                assert measurement.minimum <= value <= measurement.maximum, (device_type, name, value)
        # A device reports once a cycle at its own phase; seq counts cycles.
        offset = payload["ts"] - START - (payload["seq"] - 1) * 30
        assert 0 <= offset < 30
        assert phase.setdefault(device_id, offset) == pytest.approx(offset, abs=1e-3)
    # Phases are spread evenly over the interval.
    counts, _ = np.histogram(list(phase.values()), bins=10, range=(0, 30))
    assert counts.min() >= 60


def test_the_same_seed_publishes_the_same_bytes() -> None:
    fleet = build_fleet(400, seed=3)

    def run() -> list[bytes]:
        generator = TelemetryGenerator(fleet, interval=5, tick=1.0, connections=3, seed=3, incident_rate=0.02,
                                       start_ts=START)
        return [out.chunk for c, s in generator.schedule(20) if (out := generator.render(c, s)) is not None]

    assert run() == run()


def test_devices_are_spread_over_the_connections_in_contiguous_slices() -> None:
    fleet = build_fleet(1000, seed=2)
    generator = TelemetryGenerator(fleet, interval=10, tick=0.5, connections=10, seed=2, start_ts=START)
    per_connection: dict[int, set[int]] = defaultdict(set)
    row = {d: i for i, d in enumerate(fleet.device_id.tolist())}
    for cycle, slot in generator.schedule(1):
        rendered = generator.render(cycle, slot)
        assert rendered is not None
        for conn, a, b in rendered.spans:
            per_connection[conn] |= {row[t.split("/")[3]] for t, _ in decode_packets(rendered.chunk[a:b])}
    assert sorted(per_connection) == list(range(10))
    for conn, rows in per_connection.items():
        assert rows == set(range(conn * 100, conn * 100 + 100))


# -- normal behaviour ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("device_type", sorted(SPECS))
@pytest.mark.parametrize("interval", [1.0, 30.0])
def test_normal_readings_trigger_no_shipped_rule(device_type: str, interval: float) -> None:
    spec, rules = SPECS[device_type], RULES.get(device_type, [])
    model = TypeModel.build(spec, interval)
    rng = np.random.default_rng(3)
    devices = 300
    params = model.params(devices, rng)
    local = np.arange(devices)
    # Two days at the reporting interval would be slow; sample stretches of consecutive readings instead.
    series: dict[str, list[np.ndarray]] = defaultdict(list)
    for start in np.linspace(START, START + 2 * 86400, 24):
        for step in range(80):
            values = model.normal_values(params, local, np.full(devices, start + step * interval), rng)
            for name, column in values.items():
                series[name].append(column)
    stacked = {name: np.stack(columns, axis=1) for name, columns in series.items()}  # (device, time)
    for rule in rules:
        p = rule.params
        if rule.detector == "threshold":
            values = stacked[rule.measurement]
            if p.get("above") is not None:
                assert values.max() < min(p["above"], p["clear_below"]), rule.id
            else:
                assert values.min() > max(p["below"], p["clear_above"]), rule.id
        elif rule.detector == "rate":
            values = stacked[rule.measurement].reshape(devices, 24, 80)
            rates = np.diff(values, axis=2) * 60.0 / interval
            assert rates.max() < p["max_rise_per_min"] and rates.max() < p["clear_below_per_min"], rule.id
        elif rule.detector == "zscore":
            values = stacked[rule.measurement].reshape(devices, 24, 80)
            worst = max(max(ewma_z(values[d, s].tolist(), p["span"], p.get("min_std", 0.0))[p["warmup"]:])
                        for d in range(40) for s in range(24))
            assert worst < p["z"] / 2, (rule.id, worst)
        elif rule.detector == "stale":
            assert interval < p["after_s"]  # every reading arrives well within after_s


def test_published_normal_readings_stay_on_the_quiet_side_of_every_threshold() -> None:
    fleet = build_fleet(1400, seed=4, mix=EVERY_TYPE)
    generator = TelemetryGenerator(fleet, interval=30, tick=30.0, connections=4, seed=4, start_ts=START)
    type_of = dict(zip(fleet.device_id.tolist(), fleet.device_type.tolist(), strict=True))
    for device_id, payloads in by_device(published(generator, 30)).items():
        for rule in RULES.get(type_of[device_id], []):
            if rule.detector == "threshold":
                points = [(p["ts"], number(p[rule.measurement])) for p in payloads]
                assert not threshold_windows(points, rule.params)
    assert generator.truth_records == 0 and not generator.incidents_started


# -- incidents and their truth ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def incident_run() -> dict[str, Any]:
    """A few virtual hours of a fleet of every type with frequent incidents: what was published, and the
    truth."""
    truth: list[dict[str, Any]] = []
    fleet = build_fleet(1400, seed=5, mix=EVERY_TYPE)
    generator = TelemetryGenerator(fleet, interval=30, tick=30.0, connections=4, seed=5, incident_rate=0.003,
                                   start_ts=START, truth=truth.append)
    cycles = 420
    readings = published(generator, cycles)
    return {"fleet": fleet, "generator": generator, "truth": truth, "series": by_device(readings),
            "end": generator.due(cycles, 0), "cycles": cycles}


def test_every_rule_kind_gets_incidents_that_cross_its_bounds(incident_run: dict[str, Any]) -> None:
    truth = incident_run["truth"]
    seen = {(r["device_type"], r["rule_id"]) for r in truth if "device_id" in r}
    for device_type, rules in RULES.items():
        for rule in rules:
            if rule.detector != "composite":
                assert (device_type, rule.id) in seen, f"no truth for {device_type}/{rule.id}"
    finished = [r for r in truth if r.get("end_ts") is not None]
    assert len(finished) > 0.8 * len(truth), "most incidents end (hysteresis clear) within the run"


def test_threshold_and_rate_truth_is_what_the_published_readings_say(incident_run: dict[str, Any]) -> None:
    fleet, truth, series = incident_run["fleet"], incident_run["truth"], incident_run["series"]
    type_of = dict(zip(fleet.device_id.tolist(), fleet.device_type.tolist(), strict=True))
    expected = set()
    for device_id, payloads in series.items():
        for rule in RULES.get(type_of[device_id], []):
            if rule.detector not in ("threshold", "rate"):
                continue
            points = [(p["ts"], number(p[rule.measurement])) for p in payloads]
            windows = threshold_windows(points, rule.params) if rule.detector == "threshold" else \
                rate_windows(points, rule.params)
            expected |= {(device_id, rule.id, r3(a), r3(b)) for a, b in windows}
    detectors = {(dt, r.id): r.detector for dt, rules in RULES.items() for r in rules}
    recorded = {(r["device_id"], r["rule_id"], r3(r["start_ts"]), r3(r["end_ts"])) for r in truth
                if "device_id" in r and detectors[(r["device_type"], r["rule_id"])] in ("threshold", "rate")}
    assert recorded == expected
    assert len(expected) > 100


def test_silences_in_the_truth_are_the_gaps_in_what_was_published(incident_run: dict[str, Any]) -> None:
    fleet, truth, series = incident_run["fleet"], incident_run["truth"], incident_run["series"]
    end = incident_run["end"]
    type_of = dict(zip(fleet.device_id.tolist(), fleet.device_type.tolist(), strict=True))
    expected = set()
    for device_id, payloads in series.items():
        [stale] = [r for r in RULES[type_of[device_id]] if r.detector == "stale"]
        after = stale.params["after_s"]
        times = [p["ts"] for p in payloads]
        for before, after_gap in itertools.pairwise(times):
            # On schedule, or a silence.
            assert abs(after_gap - before - 30) < 1e-3 or after_gap - before > after
            if after_gap - before > after:
                expected.add((device_id, stale.id, r3(before + after), r3(after_gap)))
        if end - times[-1] > after:  # silent at the end of the run, for longer than after_s
            expected.add((device_id, stale.id, r3(times[-1] + after), None))
    recorded = {(r["device_id"], r["rule_id"], r3(r["start_ts"]), r3(r["end_ts"])) for r in truth
                if r.get("incident") == "offline"}
    assert recorded == expected and expected


def test_pm25_jumps_are_spikes_far_outside_the_stations_own_range(incident_run: dict[str, Any]) -> None:
    truth, series = incident_run["truth"], incident_run["series"]
    [rule] = [r for r in RULES["air_quality"] if r.detector == "zscore"]
    jumps = [r for r in truth if r["rule_id"] == rule.id]
    assert jumps
    for record in jumps:
        payloads = series[record["device_id"]]
        times = [p["ts"] for p in payloads]
        values = [p["pm25"] for p in payloads]
        z = ewma_z(values, rule.params["span"], rule.params.get("min_std", 0.0))
        start = times.index(record["start_ts"])
        assert start >= rule.params["warmup"] and z[start] > rule.params["z"]
        if record["end_ts"] is not None:
            end = times.index(record["end_ts"])
            assert 1 <= end - start <= 2 and z[end] < rule.params["clear_z"]
            assert all(z[i] > rule.params["clear_z"] for i in range(start, end))
    # Threshold incidents on pm25 ramp slowly enough that they are no jumps.
    heavy = [r for r in truth if r["rule_id"] == "pm25-heavy" and r["incident"] == "pm25-heavy"]
    assert heavy
    jumped = {r["device_id"] for r in jumps}
    assert not jumped & {r["device_id"] for r in heavy if r["device_id"] not in jumped}


def test_village_wide_pm25_episodes_have_area_truth() -> None:
    truth: list[dict[str, Any]] = []
    fleet = build_fleet(900, district="xihu", seed=6, mix={"air_quality": 1.0})  # ≈ 4 stations per community
    generator = TelemetryGenerator(fleet, interval=30, tick=30.0, connections=2, seed=6, incident_rate=0.002,
                                   start_ts=START, truth=truth.append, area_share=0.5)
    published(generator, 260)
    [area_rule] = [r for r in RULES["air_quality"] if r.detector == "composite"]
    k, of_rule = area_rule.params["k"], area_rule.params["of_rule"]
    areas = [r for r in truth if "area" in r]
    assert areas, "some episodes reached k stations of one village"
    village_of = dict(zip(fleet.device_id.tolist(), fleet.org_unit.tolist(), strict=True))
    windows = [(r["device_id"], r["start_ts"], r["end_ts"] or math.inf) for r in truth
               if r.get("rule_id") == of_rule]
    for record in areas:
        assert record["rule_id"] == area_rule.id and record["area_kind"] == "village"
        assert len(record["devices"]) >= k and {village_of[d] for d in record["devices"]} == {record["area"]}

        def open_at(ts: float, area: str = record["area"]) -> int:
            return sum(1 for d, a, b in windows if village_of[d] == area and a <= ts < b)

        assert open_at(record["start_ts"]) >= k > open_at(record["start_ts"] - 0.001)
        if record["end_ts"] is not None:
            assert open_at(record["end_ts"]) < k <= open_at(record["end_ts"] - 0.001)


def test_the_platforms_rule_engine_raises_and_clears_what_the_truth_says() -> None:
    """What was published, fed to `sensing.rules.engine.RuleEngine` one slot per batch, gives exactly the
    truth's windows (areas: up to one batch apart, as a composite raise carries its batch's latest time)."""
    engine_module = pytest.importorskip("citybrain.sensing.rules.engine")
    from citybrain.sensing.batch import ReadingBatch

    truth: list[dict[str, Any]] = []
    fleet = build_fleet(900, district="xihu", seed=9, mix={**EVERY_TYPE, "air_quality": 6.0})
    generator = TelemetryGenerator(fleet, interval=30, tick=30.0, connections=2, seed=9, incident_rate=0.003,
                                   start_ts=START, truth=truth.append, area_share=0.5)
    ids = {t: fleet.device_id[fleet.device_type == t].tolist() for t in SPECS}
    local = {t: {d: i for i, d in enumerate(names)} for t, names in ids.items()}
    engines, areas = {}, {}
    for t, spec in SPECS.items():
        areas[t], village = np.unique(fleet.org_unit[fleet.device_type == t], return_inverse=True)
        engines[t] = engine_module.RuleEngine(spec, engine_module.rules_for(spec).rules, capacity=len(ids[t]),
                                              areas={"village": village.astype(np.int32)})
        engines[t].register_devices(np.arange(len(ids[t])), since_ts=START)
    opened: dict[tuple[str, str], float] = {}
    windows: set[tuple[str, str, float | None, float | None]] = set()

    def apply(t: str, transitions: Any) -> None:
        name = (lambda i: str(areas[t][i])) if transitions.subject == "area" else (lambda i: ids[t][i])
        for i, ts in zip(transitions.raised.tolist(), transitions.raised_ts.tolist(), strict=True):
            opened[(name(i), transitions.rule.id)] = ts
        for i, ts in zip(transitions.cleared.tolist(), transitions.cleared_ts.tolist(), strict=True):
            start = opened.pop((name(i), transitions.rule.id))
            windows.add((name(i), transitions.rule.id, r3(start), r3(ts)))

    cycles = 300
    for cycle, slot in generator.schedule(cycles):
        rendered = generator.render(cycle, slot)
        assert rendered is not None
        rows: dict[str, list[tuple[int, dict[str, Any]]]] = defaultdict(list)
        for _, a, b in rendered.spans:
            for topic, payload in decode_packets(rendered.chunk[a:b]):
                device_type, device_id = topic.split("/")[2:4]
                rows[device_type].append((local[device_type][device_id], orjson.loads(payload)))
        for t, items in rows.items():
            at = np.array([i for i, _ in items])
            ts = np.array([p["ts"] for _, p in items])
            batch = ReadingBatch(t, at + 1, at, ts, ts.copy(), np.array([p["seq"] for _, p in items]),
                                 {m: np.array([number(p[m]) for _, p in items]) for m in SPECS[t].numeric()})
            for transitions in engines[t].observe(batch):
                apply(t, transitions)
        for t in SPECS:
            for transitions in engines[t].tick(generator.due(cycle, slot)):
                apply(t, transitions)
    end = generator.due(cycles, 0)
    generator.finish(end)
    for t in SPECS:
        for transitions in engines[t].tick(end):
            apply(t, transitions)
    windows |= {(subject, rule, r3(ts), None) for (subject, rule), ts in opened.items()}

    def comparable(window: tuple[str, str, float | None, float | None]) -> tuple[Any, ...]:
        subject, rule, start, finish = window
        if rule == "offline":  # raised by tick() at a slot boundary after after_s, not at last + after_s
            return subject, rule, finish
        if rule == "pm25-area":  # stamped with the latest time in its batch
            return subject, rule, start // 30 if start else None, finish // 30 if finish else None
        return window

    recorded = {(r.get("device_id") or r["area"], r["rule_id"], r3(r["start_ts"]), r3(r["end_ts"]))
                for r in truth
                # An area episode within one batch is no change of the composite's per-call outcome.
                if not ("area" in r and r["end_ts"] is not None and r["start_ts"] // 30 == r["end_ts"] // 30)}
    assert {comparable(w) for w in windows} == {comparable(w) for w in recorded}
    assert {w[1] for w in windows} >= {"pm25-heavy", "pm25-area", "pm25-jump", "offline", "undervoltage"}


def test_a_fleet_with_an_unknown_type_or_bad_settings_is_refused() -> None:
    fleet = build_fleet(10, seed=0)
    broken = type(fleet)(fleet.device_id, np.array(["toaster"] * 10), fleet.org_unit, fleet.lon, fleet.lat)
    with pytest.raises(InvalidInput, match="unknown device type"):
        TelemetryGenerator(broken)
    with pytest.raises(InvalidInput, match="interval"):
        TelemetryGenerator(fleet, interval=0)
    with pytest.raises(InvalidInput, match="qos"):
        TelemetryGenerator(fleet, qos=2)


# -- against the real broker -----------------------------------------------------------------------------


@pytest.mark.integration
@pytest.mark.parametrize("qos", [0, 1])
def test_a_subscriber_receives_exactly_what_was_published(qos: int) -> None:
    require_mqtt()
    prefix = f"cbtest-{uuid.uuid4().hex[:10]}"
    fleet = build_fleet(300, seed=8, mix=EVERY_TYPE)
    generator = TelemetryGenerator(fleet, interval=0.5, tick=0.05, connections=8, qos=qos, seed=8,
                                   incident_rate=0.01, topic_prefix=prefix)
    written: list[bytes] = []
    received: list[tuple[str, bytes]] = []

    async def run() -> Any:
        subscriber = gmqtt.Client(f"{prefix}-sub")
        subscriber.on_message = lambda _c, topic, payload, _q, _p: received.append((topic, payload))
        await subscriber.connect(MQTT_HOST, MQTT_PORT)
        subscriber.subscribe(f"{prefix}/+/+/+/telemetry", qos=qos)
        await asyncio.sleep(0.3)
        simulator = Simulator(generator, f"mqtt://{MQTT_HOST}:{MQTT_PORT}", record=written)
        report = await simulator.run(2.0)
        sent = [m for chunk in written for m in decode_packets(chunk)]
        deadline = time.monotonic() + 10
        while len(received) < len(sent) and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.2)  # nothing more (no duplicates) arrives
        await subscriber.disconnect()
        return report, sent

    with asyncio.Runner(loop_factory=event_loop_factory()) as runner:
        report, sent = runner.run(run())
    assert report.sent == len(sent) > 1000
    assert Counter(received) == Counter(sent)
    assert all(topic.startswith(f"{prefix}/310115/") for topic, _ in received)
    if qos:
        assert report.acks == report.sent
