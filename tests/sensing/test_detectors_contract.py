"""One contract for every registered detector (built-in or plug-in), driven through the rule engine.

Each detector is built from its manifest's `example_params`; rule ids those params name (composite's
`of_rule`) are satisfied with a threshold rule. Random readings — several per device in one batch, out of
time order, with gaps — and ticks must keep the alert state machine sound: a subject is never raised twice
without a clear between, never in both lists of one Transitions, at most once raised and once cleared per
rule and call; state lives in NumPy arrays that grow without losing anything.
"""

from __future__ import annotations

import numpy as np
import pytest

from citybrain.core.errors import InvalidInput
from citybrain.sensing.batch import ReadingBatch
from citybrain.sensing.devices.spec import DeviceTypeSpec
from citybrain.sensing.devices.spec import MeasurementSpec as M
from citybrain.sensing.rules.detectors import Detector, DetectorManifest, DetectorParams, detectors
from citybrain.sensing.rules.engine import RuleEngine
from citybrain.sensing.rules.spec import RuleSpec, Transitions

PROBE = DeviceTypeSpec(
    slug="contract_probe", title="Contract probe", title_zh="契约探针", entity_type="Probe",
    measurements={"level": M(minimum=0, maximum=1), "label": M(kind="string")})
UNDER_TEST = "under-test"
T0 = 1_764_590_400.0
CAPACITY = 40

ALL = detectors.items()
IDS = [slug for slug, _ in ALL]


def rule_under_test(slug: str, cls: type[Detector], **params: object) -> RuleSpec:
    return RuleSpec(id=UNDER_TEST, title=f"{slug} under test", detector=slug,
                    measurement="level" if cls.manifest.needs_measurement else None,
                    params=params or dict(cls.manifest.example_params))


def rules_for_contract(slug: str, cls: type[Detector]) -> list[RuleSpec]:
    """The rule under test, preceded by threshold rules for every rule id it names."""
    rule = rule_under_test(slug, cls)
    needed = cls(rule, 0).depends_on().values()
    base = [RuleSpec(id=target, title="dependency", detector="threshold", measurement="level",
                     params={"above": 0.7, "clear_below": 0.5}) for target in needed]
    return [*base, rule]


def contract_areas(capacity: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    return {kind: rng.integers(-1, 4, capacity).astype(np.int32) for kind in ("village", "town")}


def random_batch(rng: np.random.Generator, capacity: int, start: float, size: int) -> ReadingBatch:
    local = rng.integers(0, capacity, size)  # repeats on purpose: several readings per device
    ts = start + rng.uniform(0, 30, size)  # unsorted on purpose
    level = rng.choice([0.1, 0.3, 0.55, 0.65, 0.75, 0.95], size) + rng.normal(0, 0.02, size)
    level[rng.random(size) < 0.1] = np.nan
    return ReadingBatch(PROBE.slug, local + 1, local, ts, ts + rng.uniform(0, 2, size), np.full(size, -1),
                        {"level": level}, {"label": [None] * size})


class Tracker:
    """The alert state a consumer applying the Transitions in order would hold, per rule and subject."""

    def __init__(self) -> None:
        self.open: dict[str, set[int]] = {}

    def apply(self, call: list[Transitions]) -> None:
        raised_in_call: dict[str, list[int]] = {}
        cleared_in_call: dict[str, list[int]] = {}
        for t in call:
            assert t, "only non-empty Transitions are returned"
            raised, cleared = t.raised.tolist(), t.cleared.tolist()
            assert len(set(raised)) == len(raised), "a subject raised twice in one Transitions"
            assert len(set(cleared)) == len(cleared), "a subject cleared twice in one Transitions"
            assert not set(raised) & set(cleared), "a subject in both lists of one Transitions"
            assert t.raised.shape == t.raised_value.shape == t.raised_ts.shape
            assert t.cleared.shape == t.cleared_ts.shape
            assert not np.isnan(t.raised_ts).any() and not np.isnan(t.cleared_ts).any()
            is_open = self.open.setdefault(t.rule.id, set())
            for subject in raised:
                assert subject not in is_open, f"{t.rule.id}: {subject} raised twice without a clear"
                is_open.add(subject)
            for subject in cleared:
                assert subject in is_open, f"{t.rule.id}: {subject} cleared while not raised"
                is_open.discard(subject)
            raised_in_call.setdefault(t.rule.id, []).extend(raised)
            cleared_in_call.setdefault(t.rule.id, []).extend(cleared)
        for per_rule in (raised_in_call, cleared_in_call):
            for rule_id, subjects in per_rule.items():
                assert len(set(subjects)) == len(subjects), f"{rule_id}: more than one per subject per call"

    def matches(self, engine: RuleEngine) -> None:
        for detector in engine.detectors:
            expected = set(np.flatnonzero(detector.active).tolist())
            assert self.open.get(detector.rule.id, set()) == expected, detector.rule.id


def drive(engine: RuleEngine, rng: np.random.Generator, calls: int, capacity: int) -> Tracker:
    tracker = Tracker()
    engine.register_devices(np.arange(0, capacity, 2), since_ts=T0)
    now = T0
    for _ in range(calls):
        now += rng.uniform(0, 90)
        tracker.apply(engine.observe(random_batch(rng, capacity, now, int(rng.integers(1, 3 * capacity)))))
        if rng.random() < 0.4:
            now += rng.uniform(0, 200)
            tracker.apply(engine.tick(now))
        tracker.matches(engine)
    return tracker


def test_built_in_detectors_are_registered() -> None:
    assert {"threshold", "rate", "stale", "zscore", "composite"} <= set(IDS)


@pytest.mark.parametrize(("slug", "cls"), ALL, ids=IDS)
def test_manifest_and_params(slug: str, cls: type[Detector]) -> None:
    assert isinstance(cls.manifest, DetectorManifest)
    assert cls.manifest.slug == slug
    assert issubclass(cls.Params, DetectorParams)
    assert cls.__doc__ and cls.Params.__doc__
    cls(rule_under_test(slug, cls), 3)  # the example parameters are valid
    with pytest.raises(InvalidInput) as caught:
        cls(rule_under_test(slug, cls, **cls.manifest.example_params, no_such_param=1), 3)
    assert f"rules.{UNDER_TEST}.params.no_such_param" in [e.field for e in caught.value.errors]


@pytest.mark.parametrize(("slug", "cls"), ALL, ids=IDS)
@pytest.mark.parametrize("seed", range(6))
def test_random_readings_keep_the_alert_state_machine_sound(slug: str, cls: type[Detector],
                                                             seed: int) -> None:
    rng = np.random.default_rng(seed)
    engine = RuleEngine(PROBE, rules_for_contract(slug, cls), CAPACITY, contract_areas(CAPACITY, rng))
    drive(engine, rng, calls=25, capacity=CAPACITY)


@pytest.mark.parametrize(("slug", "cls"), ALL, ids=IDS)
def test_same_input_same_output(slug: str, cls: type[Detector]) -> None:
    def run() -> list[tuple[str, list[int], list[int]]]:
        rng = np.random.default_rng(7)
        engine = RuleEngine(PROBE, rules_for_contract(slug, cls), CAPACITY, contract_areas(CAPACITY, rng))
        engine.register_devices(np.arange(CAPACITY), T0)
        out = []
        for step in range(10):
            calls = engine.observe(random_batch(rng, CAPACITY, T0 + 60 * step, 50))
            calls += engine.tick(T0 + 300 * step)
            out += [(t.rule.id, t.raised.tolist(), t.cleared.tolist()) for t in calls]
        return out

    assert run() == run()


@pytest.mark.parametrize(("slug", "cls"), ALL, ids=IDS)
def test_grow_keeps_state(slug: str, cls: type[Detector]) -> None:
    rng = np.random.default_rng(3)
    engine = RuleEngine(PROBE, rules_for_contract(slug, cls), CAPACITY, contract_areas(CAPACITY, rng))
    tracker = drive(engine, rng, calls=15, capacity=CAPACITY)
    before = {d.rule.id: {k: v.copy() for k, v in d.state_arrays().items()} for d in engine.detectors}
    fresh = RuleEngine(PROBE, rules_for_contract(slug, cls), 3 * CAPACITY)
    engine.grow(3 * CAPACITY)
    for detector in engine.detectors:
        for name, old in before[detector.rule.id].items():
            grown = detector.state_arrays()[name]
            if detector.manifest.subject == "device":
                assert grown.shape[0] == 3 * CAPACITY
                pristine = fresh.detector(detector.rule.id).state_arrays()[name]
                np.testing.assert_array_equal(grown[CAPACITY:], pristine[CAPACITY:])
            np.testing.assert_array_equal(grown[: old.shape[0]], old)
    tracker.matches(engine)
    # The grown engine keeps working, over old and new devices alike.
    for step in range(5):
        tracker.apply(engine.observe(random_batch(rng, 3 * CAPACITY, T0 + 10_000 + 60 * step, 80)))
        tracker.apply(engine.tick(T0 + 10_000 + 60 * step))
        tracker.matches(engine)


@pytest.mark.parametrize(("slug", "cls"), ALL, ids=IDS)
def test_state_is_numpy_arrays_linear_in_capacity(slug: str, cls: type[Detector]) -> None:
    rule = rule_under_test(slug, cls)
    sizes = {}
    for capacity in (1_000, 2_000, 3_000):
        detector = cls(rule, capacity)
        sizes[capacity] = detector.nbytes
        arrays = detector.state_arrays()
        assert "active" in arrays
        assert all(isinstance(a, np.ndarray) and a.dtype != object for a in arrays.values())
        assert detector.nbytes == sum(a.nbytes for a in arrays.values())
        for name, value in vars(detector).items():
            if isinstance(value, dict | list | set | tuple):
                assert len(value) < 100, f"{name}: per-device Python containers are not allowed"
        if cls.manifest.subject == "device":
            assert detector.active.shape == (capacity,) and detector.active.dtype == bool
    per_device = (sizes[2_000] - sizes[1_000]) / 1_000
    assert sizes[3_000] - sizes[2_000] == sizes[2_000] - sizes[1_000], "state is not linear in capacity"
    assert per_device < 64, f"{per_device} bytes per device"
    detector = cls(rule, 1_000)
    detector.grow(2_000)
    assert detector.nbytes == sizes[2_000]


@pytest.mark.parametrize(("slug", "cls"), ALL, ids=IDS)
def test_empty_input(slug: str, cls: type[Detector]) -> None:
    detector = cls(rule_under_test(slug, cls), 10)
    nothing = np.empty(0)
    assert not detector.observe(nothing.astype(np.int64), nothing, None if not cls.manifest.needs_measurement
                                else nothing)
    assert not detector.tick(T0)
    engine = RuleEngine(PROBE, rules_for_contract(slug, cls), 10)
    assert engine.observe(ReadingBatch.empty(PROBE.slug, ["level"], ["label"])) == []
