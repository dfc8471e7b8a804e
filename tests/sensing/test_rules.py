"""Streaming rules: each built-in detector's behaviour, the engine's validation and evaluation order, the
shipped rule files, and (Hypothesis) that rules are streaming operators — how readings are cut into
batches does not change what they conclude."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from citybrain.core.clock import FrozenClock
from citybrain.core.errors import InvalidInput
from citybrain.scenarios import scenario_device_types
from citybrain.sensing.batch import ReadingBatch
from citybrain.sensing.devices.spec import DeviceTypeSpec
from citybrain.sensing.devices.spec import MeasurementSpec as M
from citybrain.sensing.rules.detectors import (
    RateDetector,
    Rows,
    StaleDetector,
    ThresholdDetector,
    ZScoreDetector,
)
from citybrain.sensing.rules.engine import RuleEngine, rules_for, split_episodes
from citybrain.sensing.rules.spec import RuleSpec, Transitions

PROBE = DeviceTypeSpec(
    slug="probe", title="Probe", title_zh="探针", entity_type="Probe",
    measurements={"pm25": M(minimum=0, maximum=2000), "battery": M(minimum=0, maximum=1),
                  "height": M(minimum=-20, maximum=100), "alarm": M(kind="boolean"),
                  "status": M(kind="string")})
T0 = 1_764_590_400.0


def rule(rule_id: str, detector: str, measurement: str | None = None, **params: object) -> RuleSpec:
    return RuleSpec(id=rule_id, title=rule_id, detector=detector, measurement=measurement, params=params)


HEAVY = rule("pm25-heavy", "threshold", "pm25", above=150, clear_below=115)
BATTERY = rule("battery-low", "threshold", "battery", below=0.1, clear_above=0.2)


def batch(local: list[int] | np.ndarray, ts: list[float] | np.ndarray, received: object = None,
          **values: list[float] | np.ndarray) -> ReadingBatch:
    local = np.asarray(local, dtype=np.int64)
    ts = np.asarray(ts, dtype=np.float64)
    arrived = ts if received is None else np.asarray(received, dtype=np.float64)
    columns = {name: np.asarray(column, dtype=np.float64) for name, column in values.items()}
    return ReadingBatch(PROBE.slug, local + 1, local, ts, arrived, np.full(local.size, -1), columns)


def run(detector: ThresholdDetector | RateDetector | ZScoreDetector, local: list[int], values: list[float],
        ts: list[float] | None = None) -> Transitions:
    times = np.arange(len(local), dtype=np.float64) * 30 + T0 if ts is None else np.asarray(ts, np.float64)
    return detector.observe(np.asarray(local), times, np.asarray(values, dtype=np.float64))


def as_sets(t: Transitions) -> tuple[list[int], list[int]]:
    return sorted(t.raised.tolist()), sorted(t.cleared.tolist())


# -- threshold ----------------------------------------------------------------------------------------------


def test_threshold_hysteresis_band() -> None:
    heavy = ThresholdDetector(HEAVY, 1)
    steps = [(100, [], []), (151, [0], []), (130, [], []), (116, [], []), (114, [], [0]), (130, [], []),
             (150, [], []), (150.01, [0], []), (115, [], []), (114.99, [], [0])]
    for index, (value, raised, cleared) in enumerate(steps):
        t = run(heavy, [0], [value], [T0 + index])
        assert as_sets(t) == (raised, cleared), f"step {index}: {value}"
        if raised:
            assert t.raised_value.tolist() == [value] and t.raised_ts.tolist() == [T0 + index]
        if cleared:
            assert t.cleared_ts.tolist() == [T0 + index]


def test_threshold_below_direction() -> None:
    low = ThresholdDetector(BATTERY, 2)
    assert as_sets(run(low, [0, 1], [0.5, 0.09])) == ([1], [])
    assert as_sets(run(low, [0, 1], [0.1, 0.15])) == ([], [])  # 0.1 is not below 0.1; 0.15 is in the band
    assert as_sets(run(low, [0, 1], [0.05, 0.21])) == ([0], [1])
    assert low.active.tolist() == [True, False]


def test_boolean_measurement_with_equal_bounds() -> None:
    alarm = ThresholdDetector(rule("alarm", "threshold", "alarm", above=0.5, clear_below=0.5), 1)
    assert as_sets(run(alarm, [0], [1.0])) == ([0], [])
    assert as_sets(run(alarm, [0], [1.0])) == ([], [])
    assert as_sets(run(alarm, [0], [0.0])) == ([], [0])


def test_threshold_ignores_missing_values() -> None:
    heavy = ThresholdDetector(HEAVY, 2)
    run(heavy, [0], [200])
    assert not run(heavy, [0, 1], [np.nan, np.nan])
    assert heavy.active.tolist() == [True, False]
    # NaN between readings of one batch is skipped, not treated as a crossing.
    assert as_sets(run(heavy, [1, 1, 1], [200, np.nan, 100])) == ([1], [1])


def test_crossing_and_recrossing_within_one_batch() -> None:
    heavy = ThresholdDetector(HEAVY, 3)
    # device 0 raises and clears (an episode inside the batch); device 1 raises twice with a clear between
    # and stays raised; device 2 raises, clears, raises, clears.
    t = run(heavy, [0, 1, 2, 0, 1, 2, 1, 2, 2], [200, 160, 300, 100, 100, 100, 170, 400, 10],
            ts=[T0 + i for i in range(9)])
    assert as_sets(t) == ([0, 1, 2], [0, 2])
    raised = dict(zip(t.raised.tolist(), zip(t.raised_value.tolist(), t.raised_ts.tolist(), strict=True),
                      strict=True))
    cleared = dict(zip(t.cleared.tolist(), t.cleared_ts.tolist(), strict=True))
    assert raised == {0: (200, T0), 1: (160, T0 + 1), 2: (300, T0 + 2)}  # the first raise
    assert cleared == {0: T0 + 3, 2: T0 + 8}  # the last clear
    assert heavy.active.tolist() == [False, True, False]
    # Already raised: a clear followed by a re-raise within one batch is no transition at all.
    t = run(heavy, [1, 1], [100, 200], ts=[T0 + 10, T0 + 11])
    assert not t and heavy.active[1]
    # Already raised, cleared, re-raised, cleared: one clear, the last one.
    t = run(heavy, [1, 1, 1], [100, 200, 100], ts=[T0 + 12, T0 + 13, T0 + 14])
    assert as_sets(t) == ([], [1]) and t.cleared_ts.tolist() == [T0 + 14]


def test_engine_splits_an_episode_into_raise_then_clear() -> None:
    engine = RuleEngine(PROBE, [HEAVY], 3)
    calls = engine.observe(batch([0, 1, 0, 2], [T0, T0, T0 + 30, T0 + 30], pm25=[200, 200, 100, 50]))
    assert [as_sets(t) for t in calls] == [([0, 1], []), ([], [0])]
    assert all(t.rule is HEAVY for t in calls)
    previously_raised = engine.observe(batch([1, 2], [T0 + 60, T0 + 60], pm25=[50, 300]))
    assert [as_sets(t) for t in previously_raised] == [([2], [1])]  # one object: nothing to split


def test_rows_out_of_time_order_are_applied_in_time_order() -> None:
    in_order, shuffled = ThresholdDetector(HEAVY, 2), ThresholdDetector(HEAVY, 2)
    local, values, ts = [0, 0, 0, 1, 1], [200, 100, 300, 10, 200], [1.0, 2.0, 3.0, 1.0, 2.0]
    expected = run(in_order, local, values, ts)
    permutation = [4, 2, 0, 3, 1]
    got = run(shuffled, [local[i] for i in permutation], [values[i] for i in permutation],
              [ts[i] for i in permutation])
    assert as_sets(got) == as_sets(expected) == ([0, 1], [])
    assert got.raised_ts.tolist() == expected.raised_ts.tolist() == [1.0, 2.0]
    np.testing.assert_array_equal(in_order.active, shuffled.active)


def test_rows_group_narrow_and_huge_local_indices() -> None:
    for local in (np.array([70_000, 3, 70_000, 3], np.int32), np.array([2**61, 3, 2**61, 3], np.int64)):
        rows = Rows.arrange(local, np.array([1.0, 2.0, 3.0, 4.0]), np.array([1.0, 2.0, 3.0, 4.0]))
        assert rows.local.tolist() == [3, 3, int(local[0]), int(local[0])]
        assert rows.values.tolist() == [2.0, 4.0, 1.0, 3.0] and rows.start.tolist() == [True, False, True, False]


@pytest.mark.parametrize(("params", "field"), [
    ({"above": 100, "clear_below": 120}, "clear_below"),
    ({"below": 10, "clear_above": 5}, "clear_above"),
    ({"above": 100}, "clear_below"),
    ({"clear_above": 5}, "below"),
    ({"above": 100, "clear_below": 90, "below": 3, "clear_above": 4}, "below"),
    ({}, "above"),
    ({"above": "high", "clear_below": 90}, "above"),
    ({"above": 100, "clear_below": 90, "margin": 3}, "margin"),
])
def test_threshold_params_errors_name_the_field(params: dict, field: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        ThresholdDetector(rule("pm", "threshold", "pm25", **params), 1)
    assert f"rules.pm.params.{field}" in [e.field for e in caught.value.errors]


# -- rate ---------------------------------------------------------------------------------------------------

RISING = rule("rising", "rate", "height", max_rise_per_min=0.05, clear_below_per_min=0.02)


def test_rate_spans_batches_and_first_reading_only_seeds() -> None:
    rising = RateDetector(RISING, 2)
    assert not run(rising, [0, 1], [1.0, 5.0], [T0, T0])  # first readings: no rate yet
    t = run(rising, [0], [1.1], [T0 + 60])  # 0.1 m/min
    assert as_sets(t) == ([0], []) and t.raised_value.tolist() == pytest.approx([0.1])
    assert not run(rising, [0], [1.115], [T0 + 90])  # 0.03 m/min: inside the band, stays raised
    t = run(rising, [0], [1.12], [T0 + 120])  # 0.01 m/min
    assert as_sets(t) == ([], [0]) and t.cleared_ts.tolist() == [T0 + 120]
    assert not run(rising, [1], [6.0], [T0 + 3600])  # 1 m in an hour is slow
    assert rising.last_value.tolist() == [1.12, 6.0]


def test_rate_within_a_batch_uses_the_previous_reading_of_the_same_device() -> None:
    rising = RateDetector(RISING, 2)
    t = run(rising, [0, 1, 0, 1, 0], [1.0, 2.0, 1.5, 2.0, 1.5], [T0, T0, T0 + 60, T0 + 60, T0 + 120])
    assert as_sets(t) == ([0], [0])  # 0.5 m/min, then flat: raised and cleared inside the batch
    assert t.raised_ts.tolist() == [T0 + 60] and t.cleared_ts.tolist() == [T0 + 120]


def test_rate_skips_missing_values_and_equal_timestamps() -> None:
    rising = RateDetector(RISING, 1)
    run(rising, [0], [1.0], [T0])
    assert not run(rising, [0, 0], [np.nan, 9.0], [T0 + 60, T0])  # NaN skipped; same ts → no rate
    t = run(rising, [0], [9.3], [T0 + 60])
    assert as_sets(t) == ([0], [])
    assert t.raised_value.tolist() == pytest.approx([0.3])


def test_rate_falling() -> None:
    falling = RateDetector(
        rule("falling", "rate", "height", max_fall_per_min=1.0, clear_below_per_min=0.1), 1)
    run(falling, [0], [10.0], [T0])
    assert not run(falling, [0], [20.0], [T0 + 60])  # a fast rise is not watched
    t = run(falling, [0], [17.0], [T0 + 120])
    assert as_sets(t) == ([0], []) and t.raised_value.tolist() == pytest.approx([-3.0])
    assert as_sets(run(falling, [0], [17.05], [T0 + 180])) == ([], [0])  # rising slowly clears


def test_rate_params_errors() -> None:
    with pytest.raises(InvalidInput) as caught:
        RateDetector(rule("rr", "rate", "height", clear_below_per_min=0.1), 1)
    assert caught.value.errors[0].field == "rules.rr.params.max_rise_per_min"
    with pytest.raises(InvalidInput) as caught:
        RateDetector(rule("rr", "rate", "height", max_rise_per_min=0.1, clear_below_per_min=0.5), 1)
    assert caught.value.errors[0].field == "rules.rr.params.clear_below_per_min"


# -- stale --------------------------------------------------------------------------------------------------

OFFLINE = rule("offline", "stale", after_s=120)


def test_stale_raises_for_silent_known_devices_on_tick_and_clears_on_the_next_reading() -> None:
    clock = FrozenClock(datetime(2026, 1, 1, tzinfo=UTC))
    start = clock.now().timestamp()
    engine = RuleEngine(PROBE, [OFFLINE], 4)
    engine.register_devices(np.array([0, 1]), since_ts=start)  # 2 and 3 never marked known
    engine.observe(batch([2], [0.0], received=[start + 10], pm25=[1]))  # 2 seen once: known from then
    clock.advance(120)
    assert engine.tick(clock.now()) == []  # silent for exactly after_s: not yet
    clock.advance(1)
    (t,) = engine.tick(clock.now())
    assert as_sets(t) == ([0, 1], []) and t.raised_ts.tolist() == [start + 121] * 2
    assert t.raised_value.tolist() == [121, 121]
    assert engine.tick(clock.advance(5)) == []  # no second raise while still silent
    (t,) = engine.tick(clock.advance(5))
    assert as_sets(t) == ([2], [])
    (t,) = engine.observe(batch([0, 0], [1.0, 2.0], received=[start + 140, start + 141], pm25=[1, 1]))
    assert as_sets(t) == ([], [0]) and t.cleared_ts.tolist() == [start + 140]
    assert engine.tick(start + 200) == []
    (t,) = engine.tick(start + 262)  # 0 was last heard at +141
    assert as_sets(t) == ([0], [])
    assert not engine.detector("offline").active[3]  # never seen, never known: never raised


def test_stale_counts_time_by_arrival_not_device_clock() -> None:
    engine = RuleEngine(PROBE, [OFFLINE], 1)
    # The device's clock is an hour behind; it reports every 30 s by the platform's clock.
    for step in range(10):
        assert engine.observe(batch([0], [T0 - 3600 + 30 * step], received=[T0 + 30 * step], pm25=[1])) == []
        assert engine.tick(T0 + 30 * step + 29) == []


def test_stale_device_marked_known_later_is_not_missed_by_the_quick_skip() -> None:
    stale = StaleDetector(OFFLINE, 3)
    stale.observe(np.array([0]), np.array([T0 + 1000.0]), None)
    assert not stale.tick(T0 + 1010)  # the quick skip now expects nothing before T0 + 1120
    stale.mark_known(np.array([1]), T0)  # known since long ago
    t = stale.tick(T0 + 1011)
    assert as_sets(t) == ([1], [])
    stale.mark_known(np.array([1, 2]), T0 + 5000)  # 1 is known already: its silence still counts from T0
    assert as_sets(stale.tick(T0 + 5121)) == ([0, 2], [])


# -- zscore -------------------------------------------------------------------------------------------------

JUMP = rule("jump", "zscore", "pm25", span=20, z=6, clear_z=3, warmup=10)


def noisy(rng: np.random.Generator, n: int, mean: float = 40.0, sd: float = 2.0) -> np.ndarray:
    return mean + rng.normal(0, sd, n)


def feed(detector: ZScoreDetector, values: np.ndarray, start: int = 0) -> list[Transitions]:
    return [run(detector, [0], [v], [T0 + 30 * (start + i)]) for i, v in enumerate(values)]


def test_zscore_warmup_then_spike_detection() -> None:
    rng = np.random.default_rng(1)
    jump = ZScoreDetector(JUMP, 1)
    early = feed(jump, np.concatenate([noisy(rng, 5), [400.0], noisy(rng, 3)]))
    assert not any(early), "no raise during warmup"
    assert not any(feed(jump, noisy(rng, 40), start=9))
    (t,) = [t for t in feed(jump, np.array([200.0]), start=49)]
    assert as_sets(t) == ([0], []) and t.raised_value.tolist() == [200.0]
    t = feed(jump, np.array([41.0]), start=50)[0]
    assert as_sets(t) == ([], [0])


def test_zscore_spike_does_not_poison_the_baseline() -> None:
    rng = np.random.default_rng(2)
    jump = ZScoreDetector(JUMP, 1)
    feed(jump, noisy(rng, 60))
    mean, sd = jump.mean[0], np.sqrt(jump.variance[0])
    assert as_sets(feed(jump, np.array([mean + 50 * sd]), start=60)[0]) == ([0], [])
    assert jump.mean[0] - mean <= jump._alpha * 3 * sd + 1e-9  # moved by at most alpha·clear_z·σ
    assert as_sets(feed(jump, np.array([mean]), start=61)[0]) == ([], [0])
    # The same spike right after is still a spike.
    assert as_sets(feed(jump, np.array([mean + 50 * sd]), start=62)[0]) == ([0], [])


def test_zscore_absorbs_a_lasting_level_shift() -> None:
    rng = np.random.default_rng(3)
    jump = ZScoreDetector(JUMP, 1)
    feed(jump, noisy(rng, 60))
    shifted = feed(jump, noisy(rng, 60, mean=80.0), start=60)
    raised = [i for i, t in enumerate(shifted) if t.raised.size]
    cleared = [i for i, t in enumerate(shifted) if t.cleared.size]
    assert raised[0] == 0 and cleared and cleared[0] < 20, (raised, cleared)


def test_zscore_skips_missing_values_and_handles_a_flat_signal() -> None:
    jump = ZScoreDetector(JUMP, 1)
    feed(jump, np.array([np.nan] * 3 + [40.0] * 12))
    assert jump.count[0] == 12 and jump.variance[0] == 0
    assert not feed(jump, np.array([40.0]), start=15)[0]  # no deviation from a flat baseline: z = 0
    assert feed(jump, np.array([41.0]), start=16)[0].raised.tolist() == [0]  # any change of a flat one
    floored = ZScoreDetector(
        rule("jump", "zscore", "pm25", span=20, z=6, clear_z=3, warmup=10, min_std=1.0), 1)
    feed(floored, np.array([40.0] * 12))
    assert not feed(floored, np.array([41.0]), start=12)[0]  # within 6 of the 1.0 floor


def test_zscore_params_errors() -> None:
    with pytest.raises(InvalidInput) as caught:
        ZScoreDetector(rule("jump", "zscore", "pm25", span=20, z=3, clear_z=4), 1)
    assert [e.field for e in caught.value.errors] == ["rules.jump.params.clear_z"]
    with pytest.raises(InvalidInput) as caught:
        ZScoreDetector(rule("jump", "zscore", "pm25", z=3, clear_z=2), 1)
    assert [e.field for e in caught.value.errors] == ["rules.jump.params.span"]


# -- composite ----------------------------------------------------------------------------------------------

AREA_RULE = rule("pm25-area", "composite", of_rule="pm25-heavy", k=3, area="village")
VILLAGES = np.array([0, 0, 0, 0, 0, 1, 1, 1, -1, -1], dtype=np.int32)


def test_composite_k_of_n_devices_in_an_area() -> None:
    engine = RuleEngine(PROBE, [AREA_RULE, HEAVY], 10, areas={"village": VILLAGES})
    assert [d.rule.id for d in engine.detectors] == ["pm25-heavy", "pm25-area"]  # dependency first
    calls = engine.observe(batch([0, 1, 5, 8, 9], [T0] * 5, pm25=[200] * 5))
    assert [t.rule.id for t in calls] == ["pm25-heavy"]  # village 0: 2 of 3; devices 8, 9 have no area
    (_, area) = engine.observe(batch([2, 6], [T0 + 30, T0 + 31], pm25=[200, 200]))
    assert as_sets(area) == ([0], []) and area.subject == "area"
    assert area.raised_value.tolist() == [3] and area.raised_ts.tolist() == [T0 + 30]
    assert engine.observe(batch([3, 4], [T0 + 60] * 2, pm25=[200] * 2))[-1].rule.id == "pm25-heavy"  # 5 of 3
    calls = engine.observe(batch([0, 1, 2, 7], [T0 + 90] * 4, pm25=[10, 10, 10, 200]))
    assert [(t.rule.id, *as_sets(t)) for t in calls] == [("pm25-heavy", [7], [0, 1, 2]),
                                                          ("pm25-area", [1], [0])]  # village 0: 2 of 3
    assert calls[1].cleared_ts.tolist() == [T0 + 90]
    calls = engine.observe(batch([3, 5], [T0 + 120, T0 + 121], pm25=[10, 10]))
    assert [(t.rule.id, *as_sets(t)) for t in calls] == [("pm25-heavy", [], [3, 5]), ("pm25-area", [], [1])]
    composite = engine.detector("pm25-area")
    assert composite.active.tolist() == [False, False] and composite.counts.tolist() == [1, 2]


def test_composite_follows_areas_that_change() -> None:
    engine = RuleEngine(PROBE, [HEAVY, AREA_RULE], 10)  # no areas yet: the composite waits
    assert [t.rule.id for t in engine.observe(batch([7, 8, 9], [T0] * 3, pm25=[200] * 3))] == ["pm25-heavy"]
    engine.set_areas({"village": VILLAGES})
    assert engine.observe(batch([0], [T0 + 1], pm25=[1])) == []  # 7 alone in village 1; 8, 9 nowhere
    moved = VILLAGES.copy()
    moved[[8, 9]] = 1
    engine.set_areas({"village": moved})
    (area,) = engine.observe(batch([0], [T0 + 2], pm25=[1]))
    assert as_sets(area) == ([1], []) and area.raised_ts.tolist() == [T0 + 2]
    engine.grow(12)  # new devices get no area; the counts survive
    assert engine.detector("pm25-area").counts.tolist() == [0, 3]
    with pytest.raises(InvalidInput) as caught:
        engine.set_areas({"town": np.zeros(12, np.int32)})
    assert caught.value.errors[0].field == "rules.pm25-area.params.area"


def test_composite_over_a_stale_rule_on_tick() -> None:
    rules = [OFFLINE, rule("area-offline", "composite", of_rule="offline", k=2, area="village")]
    engine = RuleEngine(PROBE, rules, 10, areas={"village": VILLAGES})
    engine.register_devices(np.arange(10), since_ts=T0)
    engine.observe(batch([0, 1, 2, 3, 5], [T0 + 100] * 5, pm25=[1] * 5))
    calls = engine.tick(T0 + 121)  # 4 (village 0), 6, 7 (village 1), 8, 9 (no village) went silent
    assert [(t.rule.id, *as_sets(t)) for t in calls] == [("offline", [4, 6, 7, 8, 9], []),
                                                          ("area-offline", [1], [])]
    calls = engine.observe(batch([6], [T0 + 130], pm25=[1]))
    assert [(t.rule.id, *as_sets(t)) for t in calls] == [("offline", [], [6]), ("area-offline", [], [1])]


# -- engine -------------------------------------------------------------------------------------------------


def test_engine_validation_names_every_problem() -> None:
    rules = [
        rule("nope", "threshold", "pm99", above=1, clear_below=0),
        rule("words", "threshold", "status", above=1, clear_below=0),
        rule("bare", "zscore", span=5, z=3, clear_z=1),
        rule("silence", "stale", "pm25", after_s=60),
        rule("magic", "crystal-ball", "pm25"),
        rule("loose", "threshold", "pm25", above=1, clear_below=2),
        rule("orphan", "composite", of_rule="missing", k=2, area="village"),
        rule("sleepy", "threshold", "pm25", above=1, clear_below=0).model_copy(update={"enabled": False}),
        rule("uses-sleepy", "composite", of_rule="sleepy", k=2, area="village"),
    ]
    with pytest.raises(InvalidInput) as caught:
        RuleEngine(PROBE, rules, 10)
    assert [e.field for e in caught.value.errors] == [
        "rules.nope.measurement", "rules.words.measurement", "rules.bare.measurement",
        "rules.silence.measurement", "rules.magic.detector", "rules.loose.params.clear_below",
        "rules.orphan.params.of_rule", "rules.uses-sleepy.params.of_rule"]


def test_engine_rejects_composite_cycles_and_areas_of_areas() -> None:
    with pytest.raises(InvalidInput) as caught:
        RuleEngine(PROBE, [rule("self", "composite", of_rule="self", k=1, area="village")], 1)
    assert caught.value.errors[0].field == "rules.self.params.of_rule"
    assert "self → self" in caught.value.detail
    nested = [HEAVY, AREA_RULE, rule("areas-of-areas", "composite", of_rule="pm25-area", k=1, area="town")]
    with pytest.raises(InvalidInput) as caught:
        RuleEngine(PROBE, nested, 1)
    assert caught.value.errors[0].field == "rules.areas-of-areas.params.of_rule"
    with pytest.raises(InvalidInput) as caught:
        RuleEngine(PROBE, [HEAVY, HEAVY], 1)
    assert caught.value.errors[0].field == "rules.pm25-heavy.id"


def test_engine_areas_must_fit_the_devices() -> None:
    with pytest.raises(InvalidInput) as caught:
        RuleEngine(PROBE, [HEAVY, AREA_RULE], 10, areas={"village": np.zeros(9, np.int32)})
    assert caught.value.errors[0].field == "areas.village"


def test_engine_grows_on_demand_and_skips_disabled_rules() -> None:
    disabled = rule("quiet", "threshold", "pm25", above=1, clear_below=0)
    disabled = disabled.model_copy(update={"enabled": False})
    engine = RuleEngine(PROBE, [HEAVY, disabled], 2)
    assert [d.rule.id for d in engine.detectors] == ["pm25-heavy"]
    (t,) = engine.observe(batch([0, 9], [T0, T0], pm25=[200, 200]))
    assert as_sets(t) == ([0, 9], []) and engine.capacity >= 10
    assert engine.nbytes == engine.capacity  # one bool per device
    with pytest.raises(ValueError):
        engine.observe(ReadingBatch.empty("air_quality", ["pm25"]))


def test_engine_skips_rules_whose_column_the_batch_lacks() -> None:
    engine = RuleEngine(PROBE, [HEAVY, BATTERY], 2)
    (t,) = engine.observe(batch([0, 1], [T0, T0], battery=[0.05, 0.5]))
    assert t.rule.id == "battery-low" and as_sets(t) == ([0], [])


def test_split_episodes_keeps_order_and_disjointness() -> None:
    t = Transitions(HEAVY, "device", np.array([1, 2]), np.array([200.0, 300.0]), np.array([T0, T0]),
                    np.array([2, 3]), np.array([T0 + 1, T0 + 2]))
    first, then = split_episodes(t)
    assert as_sets(first) == ([1, 2], [3]) and as_sets(then) == ([], [2])
    assert then.cleared_ts.tolist() == [T0 + 1]
    assert split_episodes(Transitions(HEAVY, "device", *[np.empty(0)] * 5)) == []


SHIPPED = scenario_device_types()


@pytest.mark.parametrize("device_type", SHIPPED, ids=[d.slug for d in SHIPPED])
def test_every_shipped_rule_file_builds_an_engine(device_type: DeviceTypeSpec) -> None:
    rule_file = rules_for(device_type)
    assert rule_file.device_type == device_type.slug and rule_file.rules
    areas = {"village": np.zeros(5, np.int32), "town": np.zeros(5, np.int32)}
    engine = RuleEngine(device_type, rule_file.rules, 5, areas=areas)
    assert len(engine.detectors) == sum(r.enabled for r in rule_file.rules)
    columns = {name: np.full(5, 1.0) for name in device_type.numeric()}
    readings = ReadingBatch(device_type.slug, np.arange(5), np.arange(5), np.full(5, T0), np.full(5, T0),
                            np.full(5, -1), columns)
    assert isinstance(engine.observe(readings), list)


def test_rules_for_a_type_without_a_rule_file() -> None:
    bare = PROBE.model_copy(update={"rules_file": None})
    assert rules_for(bare).rules == []
    assert RuleEngine.for_device_type(bare, 3).observe(batch([0], [T0], pm25=[1])) == []


# -- streaming: how readings are cut into batches does not change the outcome --------------------------------

LEVELS = st.sampled_from([50.0, 120.0, 140.0, 149.0, 151.0, 200.0, 110.0, np.nan])


@st.composite
def streams(draw: st.DrawFn, values: st.SearchStrategy[float] = LEVELS, devices: int = 4):
    """Readings (device, ts, value) in arrival order, time moving forward per device, and cut points."""
    n = draw(st.integers(1, 60))
    local = draw(st.lists(st.integers(0, devices - 1), min_size=n, max_size=n))
    value = draw(st.lists(values, min_size=n, max_size=n))
    cuts = sorted(set(draw(st.lists(st.integers(1, max(n - 1, 1)), max_size=8))))
    ts = T0 + np.arange(n, dtype=np.float64) * 7.0
    return np.asarray(local, np.int64), ts, np.asarray(value, np.float64), cuts


def in_batches(local: np.ndarray, ts: np.ndarray, value: np.ndarray, cuts: list[int]):
    bounds = [0, *cuts, local.size]
    for lo, hi in itertools.pairwise(bounds):
        if hi > lo:
            yield local[lo:hi], ts[lo:hi], value[lo:hi]


def reference_threshold(local: np.ndarray, ts: np.ndarray, value: np.ndarray, cuts: list[int], devices: int):
    """A reading-at-a-time model of the heavy rule, folded per batch as the module docstring says."""
    state = [False] * devices
    raises, clears = [], []
    for part in in_batches(local, ts, value, cuts):
        events: dict[int, list[tuple[str, float]]] = {}
        before = list(state)
        for device, moment, x in zip(*(column.tolist() for column in part), strict=True):
            if x > 150 and not state[device]:
                state[device] = True
                events.setdefault(device, []).append(("raise", moment))
            elif x < 115 and state[device]:
                state[device] = False
                events.setdefault(device, []).append(("clear", moment))
        for device, happened in events.items():
            if not before[device] and any(kind == "raise" for kind, _ in happened):
                raises.append((device, next(m for kind, m in happened if kind == "raise")))
            if not state[device] and any(kind == "clear" for kind, _ in happened):
                clears.append((device, [m for kind, m in happened if kind == "clear"][-1]))
    return state, sorted(raises), sorted(clears)


def threshold_over(local, ts, value, cuts, devices):
    heavy = ThresholdDetector(HEAVY, devices)
    raises, clears = [], []
    for part in in_batches(local, ts, value, cuts):
        t = heavy.observe(*part)
        raises += list(zip(t.raised.tolist(), t.raised_ts.tolist(), strict=True))
        clears += list(zip(t.cleared.tolist(), t.cleared_ts.tolist(), strict=True))
    return heavy.active.tolist(), sorted(raises), sorted(clears)


@settings(max_examples=300, deadline=None)
@given(streams())
def test_threshold_matches_a_reading_at_a_time_model_for_any_batching(stream) -> None:
    local, ts, value, cuts = stream
    assert threshold_over(local, ts, value, cuts, 4) == reference_threshold(local, ts, value, cuts, 4)
    one_batch, split = threshold_over(local, ts, value, [], 4), threshold_over(local, ts, value, cuts, 4)
    assert one_batch[0] == split[0], "final state depends on batching"
    singles = threshold_over(local, ts, value, list(range(1, local.size)), 4)
    assert split[0] == singles[0]
    # Raises minus clears is the net change whatever the batching.
    assert len(split[1]) - len(split[2]) == len(one_batch[1]) - len(one_batch[2]) == sum(split[0])


@st.composite
def one_episode_streams(draw: st.DrawFn):
    """Streams in which every device crosses each way at most once: quiet, raise, maybe clear, quiet."""
    devices = 4
    readings = []
    for device in range(devices):
        quiet = draw(st.lists(st.sampled_from([50.0, 120.0, 140.0, np.nan]), max_size=4))
        high = draw(st.lists(st.sampled_from([151.0, 200.0, 120.0, 140.0, np.nan]), max_size=4))
        tail = draw(st.lists(st.sampled_from([50.0, 120.0, 140.0, np.nan]), max_size=4))
        episode = [160.0, *high] + ([100.0, *tail] if draw(st.booleans()) else [])
        readings += [(device, x) for x in [*quiet, *(episode if draw(st.booleans()) else [])]]
    order = draw(st.permutations(range(len(readings)))) if readings else []
    # Keep each device's own order while interleaving devices arbitrarily.
    per_device = {d: iter([x for dd, x in readings if dd == d]) for d in range(devices)}
    arranged = [(readings[i][0], next(per_device[readings[i][0]])) for i in order]
    local = np.asarray([d for d, _ in arranged], np.int64)
    value = np.asarray([x for _, x in arranged], np.float64)
    ts = T0 + np.arange(local.size, dtype=np.float64)
    cuts = sorted(set(draw(st.lists(st.integers(1, max(local.size - 1, 1)), max_size=8))))
    return local, ts, value, cuts


@settings(max_examples=200, deadline=None)
@given(one_episode_streams())
def test_threshold_same_total_raises_and_clears_for_any_batching(stream) -> None:
    local, ts, value, cuts = stream
    if not local.size:
        return
    one_batch, split = threshold_over(local, ts, value, [], 4), threshold_over(local, ts, value, cuts, 4)
    singles = threshold_over(local, ts, value, list(range(1, local.size)), 4)
    assert one_batch == split == singles


HEIGHTS = st.floats(0, 10, allow_nan=False).map(lambda h: round(h, 1)) | st.just(np.nan)
SPIKY = st.sampled_from([40.0, 41.0, 39.0, 42.0, 38.0, 400.0, np.nan])


@pytest.mark.parametrize("make", [
    lambda: RateDetector(rule("rr", "rate", "height", max_rise_per_min=2.0, max_fall_per_min=3.0,
                              clear_below_per_min=1.0), 4),
    lambda: ZScoreDetector(rule("zs", "zscore", "pm25", span=4, z=3, clear_z=1.5, warmup=3), 4),
], ids=["rate", "zscore"])
@settings(max_examples=150, deadline=None)
@given(stream=st.one_of(streams(HEIGHTS), streams(SPIKY)))
def test_stateful_detectors_reach_the_same_state_for_any_batching(make, stream) -> None:
    local, ts, value, cuts = stream
    whole, split, singles = make(), make(), make()
    whole.observe(local, ts, value)
    for part in in_batches(local, ts, value, cuts):
        split.observe(*part)
    for part in in_batches(local, ts, value, list(range(1, local.size))):
        singles.observe(*part)
    for name, array in whole.state_arrays().items():
        np.testing.assert_array_equal(array, split.state_arrays()[name], err_msg=name)
        np.testing.assert_array_equal(array, singles.state_arrays()[name], err_msg=name)
