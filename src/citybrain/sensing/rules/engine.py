"""The rule engine of one device type: every rule of the type over each batch, state in NumPy arrays.

    engine = RuleEngine(device_type, rules_for(device_type).rules, capacity=len(devices), areas=areas)
    engine.register_devices(np.arange(len(devices)), since_ts=clock.now().timestamp())
    for transitions in engine.observe(batch): ...          # per ReadingBatch of this type
    for transitions in engine.tick(clock.now()): ...       # every few seconds, for rules about silence

A batch is arranged once (grouped by device, in time order within a device) and shared by every rule.
Rules that read other rules (composite) run after the rules they read, in the same call.

Ordering promise of `observe` and `tick`: the returned Transitions are to be applied in list order. Each
one keeps the `spec.Transitions` promise (a subject at most once per list, never in both lists). When a
rule's subject raised and cleared again within one call (an episode shorter than the batch, e.g. a
backlog delivered at once), the rule appears twice: first with the raise, then with that clear.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from importlib import resources

import numpy as np

from citybrain.core.errors import ErrorCollector, FieldError, InvalidInput
from citybrain.sensing.batch import ReadingBatch
from citybrain.sensing.devices.spec import DeviceTypeSpec
from citybrain.sensing.rules.detectors import Detector, Rows, detectors
from citybrain.sensing.rules.spec import RuleFile, RuleSpec, Transitions, parse_rules

SCENARIO_PACKAGE = "citybrain.scenarios"


def rules_for(device_type: DeviceTypeSpec) -> RuleFile:
    """The rule file shipped with a device type (`rules_file`, relative to the `citybrain.scenarios`
    package); an empty RuleFile when the type ships none."""
    if device_type.rules_file is None:
        return RuleFile(device_type=device_type.slug, rules=[])
    text = resources.files(SCENARIO_PACKAGE).joinpath(device_type.rules_file).read_text(encoding="utf-8")
    parsed = parse_rules(text, source=device_type.rules_file)
    if parsed.device_type != device_type.slug:
        raise InvalidInput.at("device_type", f"{device_type.rules_file} is for {parsed.device_type!r}, "
                                             f"not {device_type.slug!r}")
    return parsed


def split_episodes(transitions: Transitions) -> list[Transitions]:
    """A detector's Transitions as objects that never hold a subject in both lists, in the order to apply
    them: subjects that raised and cleared within the call get their clear in a second object."""
    if not transitions.raised.size or not transitions.cleared.size:
        return [transitions] if transitions else []
    episode = np.isin(transitions.cleared, transitions.raised)
    if not episode.any():
        return [transitions]
    t = transitions
    first = Transitions(t.rule, t.subject, t.raised, t.raised_value, t.raised_ts,
                        t.cleared[~episode], t.cleared_ts[~episode])
    then = Transitions(t.rule, t.subject, t.raised[:0], t.raised_value[:0], t.raised_ts[:0],
                       t.cleared[episode], t.cleared_ts[episode])
    return [first, then]


class RuleEngine:
    """Runs the enabled rules of one device type.

    `capacity` is the number of devices of the type (locals 0 … capacity-1); it grows on demand when a
    batch or `register_devices` names a larger local. `areas` maps an area kind (e.g. "village") to an
    int32 array giving each local's area id, -1 for none; composite rules need the kind they name.
    Construction validates every rule against the device type and raises one InvalidInput listing every
    problem, each named `rules.<id>.<field>`.
    """

    def __init__(self, device_type: DeviceTypeSpec, rules: list[RuleSpec], capacity: int,
                 areas: dict[str, np.ndarray] | None = None) -> None:
        self.device_type = device_type
        self.rules = list(rules)
        self.capacity = int(capacity)
        self._detectors: dict[str, Detector] = {}
        self._build(self.rules)
        self._order = self._dependency_order()
        self._areas: dict[str, np.ndarray] | None = None
        self.set_areas(areas)

    # -- construction -------------------------------------------------------------------------------------

    def _build(self, rules: list[RuleSpec]) -> None:
        problems = ErrorCollector()
        seen: set[str] = set()
        for rule in rules:
            where = f"rules.{rule.id}"
            if rule.id in seen:
                problems.add(f"{where}.id", "duplicate rule id")
                continue
            seen.add(rule.id)
            if rule.detector not in detectors:
                problems.add(f"{where}.detector",
                             f"unknown detector {rule.detector!r}; known: {', '.join(detectors)}")
                continue
            cls = detectors.get(rule.detector)
            self._check_measurement(rule, cls, problems)
            try:
                detector = cls(rule, self.capacity)
            except InvalidInput as exc:
                problems.errors.extend(exc.errors or [FieldError(where, exc.detail)])
                continue
            if rule.enabled:
                self._detectors[rule.id] = detector
        by_id = {rule.id: rule for rule in rules}
        for rule_id, detector in self._detectors.items():
            for field, target in detector.depends_on().items():
                if target not in by_id:
                    problems.add(f"rules.{rule_id}.{field}", f"no rule {target!r} in this device type")
                elif not by_id[target].enabled:
                    problems.add(f"rules.{rule_id}.{field}", f"rule {target!r} is disabled")
        problems.raise_if_any(f"{self.device_type.slug}: the rules have invalid fields")

    def _check_measurement(self, rule: RuleSpec, cls: type[Detector], problems: ErrorCollector) -> None:
        field = f"rules.{rule.id}.measurement"
        if not cls.manifest.needs_measurement:
            if rule.measurement is not None:
                problems.add(field, f"the {rule.detector} detector reads no measurement")
            return
        if rule.measurement is None:
            problems.add(field, f"required by the {rule.detector} detector")
            return
        spec = self.device_type.measurements.get(rule.measurement)
        if spec is None:
            known = ", ".join(self.device_type.measurements)
            problems.add(field, f"{self.device_type.slug} has no measurement {rule.measurement!r}; "
                                f"known: {known}")
        elif spec.kind == "string":
            problems.add(field, f"{rule.measurement!r} is text; the {rule.detector} detector needs a number")

    def _dependency_order(self) -> list[str]:
        """Rule ids so that every rule comes after the rules it reads (file order otherwise)."""
        order: list[str] = []
        state: dict[str, str] = {}

        def visit(rule_id: str, path: list[str]) -> None:
            if state.get(rule_id) == "done":
                return
            if state.get(rule_id) == "visiting":
                cycle = " → ".join([*path[path.index(rule_id):], rule_id])
                field = next(iter(self._detectors[path[-1]].depends_on()))
                raise InvalidInput.at(f"rules.{path[-1]}.{field}", f"rules depend on each other: {cycle}")
            state[rule_id] = "visiting"
            for target in self._detectors[rule_id].depends_on().values():
                visit(target, [*path, rule_id])
            state[rule_id] = "done"
            order.append(rule_id)

        for rule_id in self._detectors:
            visit(rule_id, [])
        return order

    # -- devices and areas --------------------------------------------------------------------------------

    def detector(self, rule_id: str) -> Detector:
        """The detector running one (enabled) rule."""
        return self._detectors[rule_id]

    @property
    def detectors(self) -> list[Detector]:
        """The running detectors, in evaluation order."""
        return [self._detectors[rule_id] for rule_id in self._order]

    def grow(self, capacity: int, areas: dict[str, np.ndarray] | None = None) -> None:
        """Make room for devices up to `capacity` (state kept). Without `areas`, new devices have none."""
        if capacity < self.capacity:
            raise ValueError(f"capacity cannot shrink ({self.capacity} → {capacity})")
        for detector in self._detectors.values():
            detector.grow(capacity)
        self.capacity = int(capacity)
        if areas is None and self._areas is not None:
            areas = {kind: _extend(array, capacity) for kind, array in self._areas.items()}
        self.set_areas(areas)

    def area_kinds(self) -> set[str]:
        """The area kinds the rules use (those `set_areas` keeps)."""
        kinds = (getattr(detector.params, "area", None) for detector in self._detectors.values())
        return {kind for kind in kinds if isinstance(kind, str)}

    def set_areas(self, areas: Mapping[str, np.ndarray] | None) -> None:
        """Replace the area arrays (one int32 per local, -1 = none); composite counts are recomputed and
        the next call reports any area whose state changed. Kinds no rule uses are not kept."""
        checked: dict[str, np.ndarray] | None = None
        if areas is not None:
            checked = {}
            problems = ErrorCollector()
            needed = self.area_kinds()
            for kind, array in areas.items():
                if kind not in needed:
                    continue
                array = np.asarray(array)
                if array.ndim != 1 or array.shape[0] != self.capacity:
                    problems.add(f"areas.{kind}",
                                 f"needs one entry per device ({self.capacity}), got {array.shape}")
                elif array.size and int(array.min()) < -1:
                    problems.add(f"areas.{kind}", "area ids are ≥ 0, or -1 for none")
                else:
                    checked[kind] = array.astype(np.int32, copy=False)
            for rule_id, detector in self._detectors.items():
                kind = getattr(detector.params, "area", None)
                if isinstance(kind, str) and kind not in areas:
                    problems.add(f"rules.{rule_id}.params.area", f"no {kind!r} areas were given")
            problems.raise_if_any("invalid areas")
        self._areas = checked
        for detector in self._detectors.values():
            sources = {target: self._detectors[target] for target in detector.depends_on().values()}
            detector.bind(sources, checked)

    def register_devices(self, local: np.ndarray, since_ts: float) -> None:
        """These devices exist from `since_ts` (arrival-clock epoch seconds, as passed to `tick`): rules
        about silence count from then even if a device never reports."""
        local = np.asarray(local, dtype=np.int64)
        if not local.size:
            return
        self._ensure_capacity(local)
        for detector in self._detectors.values():
            detector.mark_known(local, float(since_ts))

    def _ensure_capacity(self, local: np.ndarray) -> None:
        lowest, highest = int(local.min()), int(local.max())
        if lowest < 0:
            raise ValueError(f"negative local index {lowest}")
        if highest >= self.capacity:
            # Geometric, so devices registered one by one do not copy every array each time.
            self.grow(max(highest + 1, self.capacity + self.capacity // 4))

    @property
    def nbytes(self) -> int:
        """Bytes of state held by every rule, plus the area arrays."""
        areas = sum(array.nbytes for array in (self._areas or {}).values())
        return areas + sum(detector.nbytes for detector in self._detectors.values())

    # -- evaluation ---------------------------------------------------------------------------------------

    def observe(self, batch: ReadingBatch) -> list[Transitions]:
        """Run every rule over a batch of this device type; the non-empty Transitions, in order to apply."""
        if batch.device_type != self.device_type.slug:
            raise ValueError(f"a {batch.device_type} batch given to the {self.device_type.slug} rules")
        if not len(batch) or not self._detectors:
            return []
        self._ensure_capacity(batch.local)
        order = Rows.order(batch.local, batch.ts)
        rows = Rows.sorted(batch.local[order], batch.ts[order])
        _ = rows.end  # computed once here, shared by every rule's view of the rows
        arrival: np.ndarray | None = None
        columns: dict[str, np.ndarray] = {}
        upstream: dict[str, list[Transitions]] = {}
        out: list[Transitions] = []
        now = float(rows.ts.max())
        for rule_id in self._order:
            detector = self._detectors[rule_id]
            if detector.depends_on():
                result = detector.follow(upstream, now)
            else:
                measurement = detector.rule.measurement
                values = None
                if measurement is not None:
                    if measurement not in batch.values:
                        continue  # the batch carries no such column: every reading lacks it
                    if measurement not in columns:
                        columns[measurement] = np.asarray(batch.values[measurement], np.float64)[order]
                    values = columns[measurement]
                ts = None
                if detector.clock == "arrival":
                    if arrival is None:
                        arrival = np.asarray(batch.received, np.float64)[order]
                    ts = arrival
                result = detector.observe_rows(rows.with_values(values, ts))
            upstream[rule_id] = parts = split_episodes(result)
            out.extend(parts)
        return out

    def tick(self, now: float | datetime) -> list[Transitions]:
        """Let time pass (the platform clock, epoch seconds or an aware datetime): rules about silence
        raise for devices quiet for too long; the non-empty Transitions, in order to apply."""
        moment = now.timestamp() if isinstance(now, datetime) else float(now)
        upstream: dict[str, list[Transitions]] = {}
        out: list[Transitions] = []
        for rule_id in self._order:
            detector = self._detectors[rule_id]
            result = detector.follow(upstream, moment) if detector.depends_on() else detector.tick(moment)
            upstream[rule_id] = parts = split_episodes(result)
            out.extend(parts)
        return out

    @classmethod
    def for_device_type(cls, device_type: DeviceTypeSpec, capacity: int,
                        areas: dict[str, np.ndarray] | None = None) -> RuleEngine:
        """An engine running the rules the device type ships with."""
        return cls(device_type, rules_for(device_type).rules, capacity, areas)


def _extend(array: np.ndarray, capacity: int) -> np.ndarray:
    extended = np.full(capacity, -1, dtype=np.int32)
    extended[: array.shape[0]] = array
    return extended
