"""Detectors: the plug-ins that execute rules over columnar readings.

A detector is built for one rule (`spec.RuleSpec`) and a capacity (the number of devices of the type) and
keeps all of its state in NumPy arrays indexed by the device's `local` position. It turns rows of a batch
into `spec.Transitions` and, for rules about silence, time into transitions (`tick`). Every detector is
vectorised over a batch; where a batch holds several readings of one device they are applied in time
order, and what happened in between is folded into at most one raise and one clear per subject.

What one `Detector.observe` call reports, per subject, given its state before (s0) and after (s1):

- a raise iff s0 was clear and the subject raised at some point in the call: the *first* raise;
- a clear iff s1 is clear and the subject cleared at some point in the call: the *last* clear.

So a clear followed by a re-raise within one call is merged away (the alert never closed, as a raise
within `suppress_s` of a clear would reopen it anyway), and an episode that starts and ends inside one call
is reported as a raise *and* a clear of the same subject, the raise first (`raised_ts <= cleared_ts`).
Nothing that happened is lost, but a single Transitions may then hold a subject in both lists; the engine
(`engine.RuleEngine`) splits such episodes into a second Transitions so that every object it hands on
keeps the `spec.Transitions` promise (never in both), in order.

Built-in detectors: threshold, rate, stale, zscore, composite. Third-party ones subclass `Detector`, set
`manifest` and `Params`, and register with `@detectors.register("slug")`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from citybrain.core.errors import FieldError, InvalidInput
from citybrain.core.registry import Registry
from citybrain.sensing.rules.spec import RULE_ID, RuleSpec, Transitions

Subject = Literal["device", "area"]
Clock = Literal["device", "arrival"]

_NO_INDEX = np.empty(0, np.int64)
_NO_FLOAT = np.empty(0, np.float64)


class DetectorManifest(BaseModel):
    """What a detector is, for the registry, the docs and the contract test."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    slug: str = Field(pattern=r"^[a-z][a-z0-9_]{1,40}$")
    title: str
    description: str = ""
    needs_measurement: bool = Field(description="The rule must name a numeric measurement of the device type")
    subject: Subject = Field("device", description="What its transitions index: devices or areas")
    example_params: dict[str, Any] = Field(
        default_factory=dict,
        description="A valid `params` object; rule ids it names are satisfied by threshold rules in tests")


class DetectorParams(BaseModel):
    """Base of every detector's `Params`: unknown keys are errors, and `problems` checks what a single
    field cannot (e.g. one bound below another)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    def problems(self) -> Iterator[tuple[str, str]]:
        """(parameter name, reason) for each cross-field inconsistency."""
        return iter(())


def empty_transitions(rule: RuleSpec, subject: Subject = "device") -> Transitions:
    """A Transitions in which nothing happened."""
    return Transitions(rule, subject, _NO_INDEX, _NO_FLOAT, _NO_FLOAT, _NO_INDEX, _NO_FLOAT)


class Rows:
    """Rows of a batch grouped by device and in time order within a device (what detectors consume).

    Built once per batch by the engine (`arrange`) and shared by every rule of the type; `with_values`
    swaps in a rule's measurement column without sorting again.
    """

    __slots__ = ("_end", "_group_start", "local", "start", "ts", "values")

    def __init__(self, local: np.ndarray, ts: np.ndarray, values: np.ndarray | None,
                 start: np.ndarray) -> None:
        self.local = local
        self.ts = ts
        self.values = values
        self.start = start
        self._end: np.ndarray | None = None
        self._group_start: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.local.shape[0])

    @staticmethod
    def order(local: np.ndarray, ts: np.ndarray) -> np.ndarray:
        """The permutation that groups rows by device, stably, in time order within a device.

        The ingest pipeline hands rules each device's readings in time order already, so a stable sort by
        device is enough; only if that leaves time going backwards within a device do we pay for lexsort.
        The stable sort is a plain sort of `local * n + row` (distinct keys, so any sort is stable), which
        NumPy runs with SIMD several times faster than a stable argsort.
        """
        local = np.asarray(local, dtype=np.int64)  # the key below would overflow a narrower type
        n = local.shape[0]
        if not n:
            return np.empty(0, np.int64)
        if int(local.max()) < (2**62) // n:
            keys = local * n + np.arange(n)
            keys.sort()
            order = keys % n
        else:
            order = np.argsort(local, kind="stable")
        sorted_local, sorted_ts = local[order], ts[order]
        if sorted_local.size > 1:
            same = sorted_local[1:] == sorted_local[:-1]
            if np.any(same & (sorted_ts[1:] < sorted_ts[:-1])):
                order = np.lexsort((ts, local))
        return order

    @classmethod
    def arrange(cls, local: np.ndarray, ts: np.ndarray, values: np.ndarray | None = None) -> Rows:
        """Rows from unsorted columns."""
        local = np.asarray(local, dtype=np.int64)
        ts = np.asarray(ts, dtype=np.float64)
        order = cls.order(local, ts)
        column = None if values is None else np.asarray(values, dtype=np.float64)[order]
        return cls.sorted(local[order], ts[order], column)

    @classmethod
    def sorted(cls, local: np.ndarray, ts: np.ndarray, values: np.ndarray | None = None) -> Rows:
        """Rows from columns that are already grouped by device and in time order."""
        start = np.empty(local.shape[0], dtype=bool)
        if start.size:
            start[0] = True
            np.not_equal(local[1:], local[:-1], out=start[1:])
        return cls(local, ts, values, start)

    def with_values(self, values: np.ndarray | None, ts: np.ndarray | None = None) -> Rows:
        """The same rows carrying another value column (and optionally another time column)."""
        rows = Rows(self.local, self.ts if ts is None else ts, values, self.start)
        rows._end, rows._group_start = self._end, self._group_start
        return rows

    def subset(self, keep: np.ndarray) -> Rows:
        """Only the rows where `keep` is true (order preserved, device groups recomputed)."""
        values = None if self.values is None else self.values[keep]
        return Rows.sorted(self.local[keep], self.ts[keep], values)

    def numeric(self) -> Rows:
        """Only the rows whose value is a number (NaN means the reading lacks the measurement)."""
        assert self.values is not None
        keep = ~np.isnan(self.values)
        return self if keep.all() else self.subset(keep)

    @property
    def end(self) -> np.ndarray:
        """True at the last row of each device's run."""
        if self._end is None:
            end = np.empty_like(self.start)
            if end.size:
                end[-1] = True
                end[:-1] = self.start[1:]
            self._end = end
        return self._end

    @property
    def group_start(self) -> np.ndarray:
        """For every row, the position of the first row of its device's run."""
        if self._group_start is None:
            positions = np.where(self.start, np.arange(self.start.size), 0)
            np.maximum.accumulate(positions, out=positions)
            self._group_start = positions
        return self._group_start

    def by_rank(self) -> Iterator[np.ndarray]:
        """Row positions by occurrence rank: first every device's first row, then every second row …

        Each yielded array names at most one row per device. Groups drop out as they run out of rows, so
        the total work is linear in the rows however skewed the batch is.
        """
        starts = np.flatnonzero(self.start)
        sizes = np.diff(starts, append=self.start.size)
        rank = 0
        while starts.size:
            yield starts + rank
            rank += 1
            longer = sizes > rank
            starts, sizes = starts[longer], sizes[longer]


def latch(set_: np.ndarray, reset: np.ndarray, rows: Rows,
          active: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Run a set/reset latch per device over grouped rows without a Python loop.

    The state after a row is decided by the last row of the same device, up to and including it, that
    set or reset; if none did, it is the device's state before the batch. Returns (before, after) per row.
    `set_` and `reset` must not both be true on one row.
    """
    n = len(rows)
    initial = active[rows.local]
    state = np.where(set_, True, np.where(reset, False, initial))
    if rows.start.all():  # one reading per device: the common case at runtime
        return initial, state
    decided = set_ | reset | rows.start
    last_decided = np.where(decided, np.arange(n), 0)
    np.maximum.accumulate(last_decided, out=last_decided)
    after = state[last_decided]
    before = np.empty_like(after)
    before[0] = initial[0]
    before[1:] = after[:-1]
    before[rows.start] = initial[rows.start]
    return before, after


class Detector:
    """Base of every detector plug-in.

    Subclasses set `manifest` and `Params` and implement `observe_rows` (and `tick` for rules about time).
    State lives in arrays created with `_device_array`, which `grow` extends and `nbytes` counts.
    `clock` says which time `observe` is given by the engine: the device's own timestamp ("device") or the
    server's arrival time ("arrival", for detectors that compare it with the wall clock in `tick`).
    """

    manifest: ClassVar[DetectorManifest]
    Params: ClassVar[type[DetectorParams]] = DetectorParams
    clock: ClassVar[Clock] = "device"

    def __init__(self, rule: RuleSpec, capacity: int) -> None:
        if capacity < 0:
            raise ValueError("capacity must not be negative")
        self.rule = rule
        self.params = self.parse_params(rule)
        self.capacity = int(capacity)
        self._device_fill: dict[str, Any] = {}
        if self.manifest.subject == "device":
            self.active = self._device_array("active", bool, False)

    # -- parameters ---------------------------------------------------------------------------------------

    @classmethod
    def parse_params(cls, rule: RuleSpec) -> Any:
        """The rule's `params` validated by `Params`; errors name `rules.<rule id>.params.<name>`."""
        prefix = f"rules.{rule.id}.params"
        try:
            params = cls.Params.model_validate(rule.params)
        except ValidationError as exc:
            errors = [FieldError(".".join([prefix, *(str(p) for p in e["loc"])]), e["msg"])
                      for e in exc.errors()]
            raise InvalidInput(f"{errors[0].field}: {errors[0].reason}", errors=errors) from None
        errors = [FieldError(f"{prefix}.{name}", reason) for name, reason in params.problems()]
        if errors:
            raise InvalidInput(f"{errors[0].field}: {errors[0].reason}", errors=errors)
        return params

    # -- state --------------------------------------------------------------------------------------------

    def _device_array(self, name: str, dtype: Any, fill: Any) -> np.ndarray:
        """Create one per-device state array (and remember how to extend it)."""
        array = np.full(self.capacity, fill, dtype=dtype)
        self._device_fill[name] = fill
        setattr(self, name, array)
        return array

    def state_arrays(self) -> dict[str, np.ndarray]:
        """Every array that holds this detector's state, by attribute name."""
        return {name: value for name, value in vars(self).items() if isinstance(value, np.ndarray)}

    @property
    def nbytes(self) -> int:
        """Bytes of state held."""
        return sum(array.nbytes for array in self.state_arrays().values())

    def grow(self, capacity: int) -> None:
        """Make room for devices up to `capacity`; existing state is kept, new devices start fresh."""
        if capacity < self.capacity:
            raise ValueError(f"capacity cannot shrink ({self.capacity} → {capacity})")
        for name, fill in self._device_fill.items():
            old = getattr(self, name)
            new = np.full(capacity, fill, dtype=old.dtype)
            new[: old.shape[0]] = old
            setattr(self, name, new)
        self.capacity = int(capacity)

    def mark_known(self, local: np.ndarray, since: float) -> None:
        """These devices exist from `since` (arrival-clock seconds) even if they never report.

        Only detectors about silence care; the default ignores it.
        """

    # -- evaluation ---------------------------------------------------------------------------------------

    def depends_on(self) -> dict[str, str]:
        """Rules whose alert state this detector reads: {field of this rule naming it: rule id}."""
        return {}

    def bind(self, sources: Mapping[str, Detector], areas: Mapping[str, np.ndarray] | None) -> None:
        """Called by the engine with the detectors named by `depends_on` and the area arrays (per local,
        int32, -1 = none), again after every grow or change of areas."""

    def follow(self, upstream: Mapping[str, list[Transitions]], now: float) -> Transitions:
        """For detectors with dependencies: transitions caused by what the rules they depend on just did
        (`upstream[rule id]`, in order). `now` is the latest time of the call."""
        return empty_transitions(self.rule, self.manifest.subject)

    def observe(self, local: np.ndarray, ts: np.ndarray, values: np.ndarray | None) -> Transitions:
        """Apply readings (rows in any order; `values` NaN where a reading lacks the measurement)."""
        return self.observe_rows(Rows.arrange(local, ts, values))

    def observe_rows(self, rows: Rows) -> Transitions:
        """Apply readings already grouped by device and in time order (see `Rows`)."""
        return empty_transitions(self.rule, self.manifest.subject)

    def tick(self, now: float) -> Transitions:
        """Transitions caused by time passing (arrival-clock epoch seconds); none by default."""
        return empty_transitions(self.rule, self.manifest.subject)

    def _report(self, rows: Rows, before: np.ndarray, after: np.ndarray, evidence: np.ndarray) -> Transitions:
        """Store each device's final state and fold the per-row states into Transitions (see module doc).

        `evidence` is the per-row value reported with a raise.
        """
        end = rows.end
        self.active[rows.local[end]] = after[end]
        rises = np.flatnonzero(after & ~before)
        if rises.size:
            rises = rises[_first_per_device(rows.local[rises])]
            rises = rises[~before[rows.group_start[rises]]]
        falls = np.flatnonzero(before & ~after)
        if falls.size:
            falls = falls[_last_per_device(rows.local[falls])]
            falls = falls[~self.active[rows.local[falls]]]
        if not rises.size and not falls.size:
            return empty_transitions(self.rule)
        return Transitions(self.rule, "device", rows.local[rises], evidence[rises], rows.ts[rises],
                           rows.local[falls], rows.ts[falls])


def _first_per_device(local: np.ndarray) -> np.ndarray:
    keep = np.empty(local.shape[0], dtype=bool)
    keep[0] = True
    np.not_equal(local[1:], local[:-1], out=keep[1:])
    return keep


def _last_per_device(local: np.ndarray) -> np.ndarray:
    keep = np.empty(local.shape[0], dtype=bool)
    keep[-1] = True
    np.not_equal(local[:-1], local[1:], out=keep[:-1])
    return keep


detectors: Registry[type[Detector]] = Registry("detector")


# -- threshold ----------------------------------------------------------------------------------------------


class ThresholdParams(DetectorParams):
    """`above` + `clear_below` (raise when the value exceeds `above`, clear when it drops below
    `clear_below`), or `below` + `clear_above` for the opposite direction. The band between the two is
    hysteresis: a value inside it keeps the current state."""

    above: float | None = None
    clear_below: float | None = None
    below: float | None = None
    clear_above: float | None = None

    def problems(self) -> Iterator[tuple[str, str]]:
        upward = self.above is not None or self.clear_below is not None
        downward = self.below is not None or self.clear_above is not None
        if upward and downward:
            yield "below", "give either above/clear_below or below/clear_above, not both"
            return
        if not upward and not downward:
            yield "above", "give above with clear_below, or below with clear_above"
            return
        pairs = (("above", "clear_below"),) if upward else (("below", "clear_above"),)
        for trigger, clear in pairs:
            for name in (trigger, clear):
                if getattr(self, name) is None:
                    yield name, f"required with {clear if name == trigger else trigger}"
        if self.above is not None and self.clear_below is not None and self.clear_below > self.above:
            yield "clear_below", "must not be greater than above"
        if self.below is not None and self.clear_above is not None and self.clear_above < self.below:
            yield "clear_above", "must not be less than below"
        for name in ("above", "clear_below", "below", "clear_above"):
            value = getattr(self, name)
            if value is not None and not np.isfinite(value):
                yield name, "must be a finite number"


@detectors.register("threshold")
class ThresholdDetector(Detector):
    """Raise when a measurement crosses a bound, clear when it is back past the clear bound.

    Comparisons are strict (`value > above` raises, `value < clear_below` clears), so with equal bounds a
    boolean measurement (0/1) and a bound of 0.5 behave as expected. NaN (measurement absent) leaves the
    state as it is. The value reported with a raise is the reading's value.
    """

    manifest = DetectorManifest(
        slug="threshold", title="Threshold with hysteresis",
        description="Raise above (or below) a bound; clear past a second bound", needs_measurement=True,
        example_params={"above": 0.8, "clear_below": 0.6})
    Params = ThresholdParams

    def observe_rows(self, rows: Rows) -> Transitions:
        if not len(rows):
            return empty_transitions(self.rule)
        p: ThresholdParams = self.params
        values = rows.values
        assert values is not None
        if p.above is not None:
            set_, reset = values > p.above, values < p.clear_below
        else:
            set_, reset = values < p.below, values > p.clear_above
        before, after = latch(set_, reset, rows, self.active)
        return self._report(rows, before, after, values)


# -- rate ---------------------------------------------------------------------------------------------------


class RateParams(DetectorParams):
    """Change per minute between a device's consecutive readings: raise when it rises faster than
    `max_rise_per_min` (or falls faster than `max_fall_per_min`); clear once it changes slower than
    `clear_below_per_min` in the watched direction(s)."""

    max_rise_per_min: float | None = Field(None, gt=0)
    max_fall_per_min: float | None = Field(None, gt=0)
    clear_below_per_min: float = Field(ge=0)

    def problems(self) -> Iterator[tuple[str, str]]:
        if self.max_rise_per_min is None and self.max_fall_per_min is None:
            yield "max_rise_per_min", "give max_rise_per_min and/or max_fall_per_min"
        for name in ("max_rise_per_min", "max_fall_per_min"):
            bound = getattr(self, name)
            if bound is not None and self.clear_below_per_min > bound:
                yield "clear_below_per_min", f"must not be greater than {name}"


@detectors.register("rate")
class RateDetector(Detector):
    """Raise when a measurement changes too fast between a device's consecutive readings.

    Keeps each device's last value and timestamp, so the rate spans batches; a device's first reading only
    seeds it, readings without the measurement are skipped (the next rate spans the gap), and a reading
    with the same timestamp as the previous one gives no rate. The value reported with a raise is the rate
    per minute (negative for a fall).
    """

    manifest = DetectorManifest(
        slug="rate", title="Rate of change",
        description="Change per minute between consecutive readings of a device", needs_measurement=True,
        example_params={"max_rise_per_min": 0.5, "clear_below_per_min": 0.2})
    Params = RateParams

    def __init__(self, rule: RuleSpec, capacity: int) -> None:
        super().__init__(rule, capacity)
        self.last_value = self._device_array("last_value", np.float64, np.nan)
        self.last_ts = self._device_array("last_ts", np.float64, np.nan)

    def observe_rows(self, rows: Rows) -> Transitions:
        if not len(rows):
            return empty_transitions(self.rule)
        rows = rows.numeric()
        if not len(rows):
            return empty_transitions(self.rule)
        p: RateParams = self.params
        values, ts, start = rows.values, rows.ts, rows.start
        assert values is not None
        first_local = rows.local[start]
        previous_value = np.empty_like(values)
        previous_value[1:] = values[:-1]
        previous_value[start] = self.last_value[first_local]
        previous_ts = np.empty_like(ts)
        previous_ts[1:] = ts[:-1]
        previous_ts[start] = self.last_ts[first_local]
        elapsed = ts - previous_ts
        with np.errstate(divide="ignore", invalid="ignore"):
            rate = np.where(elapsed > 0, (values - previous_value) * 60.0 / elapsed, np.nan)
        set_ = np.zeros(rate.shape, dtype=bool)
        reset = ~np.isnan(rate)
        if p.max_rise_per_min is not None:
            set_ |= rate > p.max_rise_per_min
            reset &= rate < p.clear_below_per_min
        if p.max_fall_per_min is not None:
            set_ |= -rate > p.max_fall_per_min
            reset &= -rate < p.clear_below_per_min
        before, after = latch(set_, reset, rows, self.active)
        end_local = rows.local[rows.end]
        self.last_value[end_local] = values[rows.end]
        self.last_ts[end_local] = ts[rows.end]
        return self._report(rows, before, after, rate)


# -- stale --------------------------------------------------------------------------------------------------


class StaleParams(DetectorParams):
    """Raise for a device not heard from for more than `after_s` seconds."""

    after_s: float = Field(gt=0)


@detectors.register("stale")
class StaleDetector(Detector):
    """Raise for devices that went silent; clear on their next reading.

    Time is the server's, on both sides: `observe` is given each reading's arrival time (`clock =
    "arrival"`, the engine passes `ReadingBatch.received`) and `tick(now)` the platform clock's epoch
    seconds. Silence is about the platform no longer hearing from a device, and device clocks drift or are
    wrong: comparing a device timestamp with the wall clock would mark a device whose clock is behind as
    silent forever. Silence counts from a device's last arrival, or from when it was marked known
    (`mark_known`, e.g. at registration or start-up) if it never reported since; a device neither seen
    nor marked known never raises. A raise carries `now` as its time and the seconds of silence as its
    value; the clear carries the arrival time of the reading that ended it.
    """

    manifest = DetectorManifest(
        slug="stale", title="Silent device", description="No reading for longer than after_s seconds",
        needs_measurement=False, example_params={"after_s": 60})
    Params = StaleParams
    clock = "arrival"

    def __init__(self, rule: RuleSpec, capacity: int) -> None:
        super().__init__(rule, capacity)
        self.last_seen = self._device_array("last_seen", np.float64, np.nan)
        # A lower bound on the earliest time any quiet device can go stale: ticks before it skip the scan
        # of every device, which is what makes frequent ticks over millions of devices cheap.
        self._earliest_due = np.inf

    def mark_known(self, local: np.ndarray, since: float) -> None:
        local = np.asarray(local, dtype=np.int64)
        unseen = local[np.isnan(self.last_seen[local])]
        self.last_seen[unseen] = since
        if unseen.size:
            self._earliest_due = min(self._earliest_due, float(since) + self.params.after_s)

    def observe_rows(self, rows: Rows) -> Transitions:
        if not len(rows):
            return empty_transitions(self.rule)
        local = rows.local[rows.start]
        latest = np.maximum.reduceat(rows.ts, np.flatnonzero(rows.start))
        self.last_seen[local] = np.fmax(self.last_seen[local], latest)
        self._earliest_due = min(self._earliest_due, float(latest.min()) + self.params.after_s)
        was_silent = self.active[local]
        if not was_silent.any():
            return empty_transitions(self.rule)
        cleared = local[was_silent]
        self.active[cleared] = False
        return Transitions(self.rule, "device", _NO_INDEX, _NO_FLOAT, _NO_FLOAT,
                           cleared, rows.ts[rows.start][was_silent])

    def tick(self, now: float) -> Transitions:
        after_s = self.params.after_s
        if not now > self._earliest_due:
            return empty_transitions(self.rule)
        quiet_since = np.where(self.active, np.nan, self.last_seen)
        with np.errstate(invalid="ignore"):
            raised = np.flatnonzero(quiet_since < now - after_s)
        self.active[raised] = True
        quiet_since[raised] = np.nan
        remaining = quiet_since[~np.isnan(quiet_since)]
        self._earliest_due = float(remaining.min()) + after_s if remaining.size else np.inf
        if not raised.size:
            return empty_transitions(self.rule)
        silence = now - self.last_seen[raised]
        return Transitions(self.rule, "device", raised, silence, np.full(raised.size, float(now)),
                           _NO_INDEX, _NO_FLOAT)


# -- zscore -------------------------------------------------------------------------------------------------


class ZScoreParams(DetectorParams):
    """EWMA baseline per device: raise when a reading is more than `z` standard deviations from the
    device's own recent mean, clear when back within `clear_z`; no raise before `warmup` readings."""

    span: float = Field(ge=1, description="EWMA span in readings (alpha = 2 / (span + 1))")
    z: float = Field(gt=0)
    clear_z: float = Field(gt=0)
    warmup: int = Field(10, ge=1, le=1_000_000)
    min_std: float = Field(0.0, ge=0, description="Floor on the standard deviation (e.g. sensor resolution)")

    def problems(self) -> Iterator[tuple[str, str]]:
        if self.clear_z > self.z:
            yield "clear_z", "must not be greater than z"


@detectors.register("zscore")
class ZScoreDetector(Detector):
    """Raise for readings far outside a device's own recent range (exponentially weighted mean and
    variance per device).

    Until a device has `span` readings the weights are those of a plain running mean, so the baseline
    does not start biased towards the first reading. Once warmed up, a reading's deviation is clipped to
    `clear_z` standard deviations before it updates the baseline (a winsorised EWMA): one spike moves the
    mean by at most alpha·clear_z·σ and cannot mask the next spike, while a lasting level shift is still
    absorbed, because each clipped step also widens σ, so the alert clears once the shift is the new
    normal (with pm25-jump's span 60, z 8, clear_z 3: after about 10 readings for a 10σ shift, 16 for 20σ,
    35 for 200σ).
    Readings without the measurement are skipped. The value reported with a raise is the reading's value.
    Several readings of one device in a batch are applied in order, one "occurrence rank" at a time.
    """

    manifest = DetectorManifest(
        slug="zscore", title="Deviation from the device's own baseline",
        description="EWMA mean and variance per device; raise beyond z standard deviations",
        needs_measurement=True, example_params={"span": 20, "z": 4, "clear_z": 2, "warmup": 5})
    Params = ZScoreParams

    _COUNT_CAP = 2**30

    def __init__(self, rule: RuleSpec, capacity: int) -> None:
        super().__init__(rule, capacity)
        self.mean = self._device_array("mean", np.float64, 0.0)
        self.variance = self._device_array("variance", np.float64, 0.0)
        self.count = self._device_array("count", np.int32, 0)
        self._alpha = 2.0 / (self.params.span + 1.0)

    def observe_rows(self, rows: Rows) -> Transitions:
        if not len(rows):
            return empty_transitions(self.rule)
        rows = rows.numeric()
        if not len(rows):
            return empty_transitions(self.rule)
        before = np.empty(len(rows), dtype=bool)
        after = np.empty(len(rows), dtype=bool)
        assert rows.values is not None
        if rows.start.all():
            self._step(rows.local, rows.values, slice(None), before, after)
        else:
            # Each rank holds at most one row per device, so a rank is one vectorised step.
            for at in rows.by_rank():
                self._step(rows.local[at], rows.values[at], at, before, after)
        return self._report(rows, before, after, rows.values)

    def _step(self, local: np.ndarray, x: np.ndarray, at: Any, before: np.ndarray, after: np.ndarray) -> None:
        """One reading for each of these (distinct) devices."""
        p: ZScoreParams = self.params
        mean, variance = self.mean[local], self.variance[local]
        count, was = self.count[local], self.active[local]
        std = np.sqrt(variance)
        if p.min_std:
            np.maximum(std, p.min_std, out=std)
        deviation = x - mean
        with np.errstate(divide="ignore", invalid="ignore"):
            z = np.abs(deviation) / std
        z[np.isnan(z)] = 0.0  # 0/0: no deviation from a flat baseline (any other deviation of it is inf)
        seen = count > 0
        warmed = count >= p.warmup
        now_active = (warmed & (z > p.z)) | (was & ~(seen & (z < p.clear_z)))
        weight = np.maximum(self._alpha, 1.0 / (count + 1.0))
        # Winsorise once warmed up; a zero σ has no scale to clip to, so the step is taken whole.
        limit = np.where(warmed & (std > 0), p.clear_z * std, np.inf)
        step = np.minimum(np.maximum(deviation, -limit), limit)
        self.mean[local] = mean + weight * step
        self.variance[local] = (1.0 - weight) * (variance + weight * step * step)
        self.count[local] = np.minimum(count + 1, self._COUNT_CAP)
        self.active[local] = now_active
        before[at] = was
        after[at] = now_active


# -- composite ----------------------------------------------------------------------------------------------


class CompositeParams(DetectorParams):
    """Raise for an area when at least `k` of its devices have rule `of_rule` active."""

    of_rule: str = Field(pattern=RULE_ID)
    k: int = Field(ge=1)
    area: str = Field(pattern=r"^[a-z][a-z0-9_]{0,40}$", description="Area kind, e.g. village or town")


@detectors.register("composite")
class CompositeDetector(Detector):
    """k devices of one area with another rule of the same device type active.

    The subject is the area id (the engine's `areas[kind]` maps each local to one, -1 = none). Counts per
    area follow the other rule's transitions, so the cost is per transition, not per device; the rule is
    evaluated once per engine call after the rule it depends on, on that call's net outcome. A raise
    carries the number of active devices as its value and the latest time among the transitions that
    tipped the area (or the call's time when the areas themselves changed). Until the engine is given
    areas of the rule's kind it raises nothing.
    """

    manifest = DetectorManifest(
        slug="composite", title="k devices of an area",
        description="At least k devices of one area have another rule active", needs_measurement=False,
        subject="area", example_params={"of_rule": "example-base", "k": 2, "area": "village"})
    Params = CompositeParams

    def __init__(self, rule: RuleSpec, capacity: int) -> None:
        super().__init__(rule, capacity)
        self.active = np.zeros(0, dtype=bool)
        self.counts = np.zeros(0, dtype=np.int32)
        self._source: Detector | None = None
        self._area: np.ndarray | None = None
        self._recheck_all = False

    def depends_on(self) -> dict[str, str]:
        return {"params.of_rule": self.params.of_rule}

    def bind(self, sources: Mapping[str, Detector], areas: Mapping[str, np.ndarray] | None) -> None:
        source = sources[self.params.of_rule]
        if source.manifest.subject != "device":
            raise InvalidInput.at(f"rules.{self.rule.id}.params.of_rule",
                                  f"rule {self.params.of_rule!r} is about areas, not devices")
        self._source = source
        area = None if areas is None else areas.get(self.params.area)
        self._area = area
        if area is None:
            return
        n_areas = int(area.max()) + 1 if area.size else 0
        n_areas = max(n_areas, self.active.shape[0])
        active = np.zeros(n_areas, dtype=bool)
        active[: self.active.shape[0]] = self.active
        self.active = active
        member = source.active & (area >= 0)
        self.counts = np.bincount(area[member], minlength=n_areas).astype(np.int32)
        self._recheck_all = True

    @property
    def nbytes(self) -> int:
        # The area array belongs to the engine (shared by every composite of that kind); not counted here.
        return self.active.nbytes + self.counts.nbytes

    def state_arrays(self) -> dict[str, np.ndarray]:
        return {"active": self.active, "counts": self.counts}

    def follow(self, upstream: Mapping[str, list[Transitions]], now: float) -> Transitions:
        area = self._area
        if area is None:
            return empty_transitions(self.rule, "area")
        touched_parts, raise_events, clear_events = [], [], []
        for t in upstream.get(self.params.of_rule, ()):
            for locals_, times, delta, events in ((t.raised, t.raised_ts, 1, raise_events),
                                                  (t.cleared, t.cleared_ts, -1, clear_events)):
                if not locals_.size:
                    continue
                ids = area[locals_]
                inside = ids >= 0
                ids, times = ids[inside], times[inside]
                np.add.at(self.counts, ids, delta)
                touched_parts.append(ids)
                events.append((ids, times))
        if self._recheck_all:
            candidates = np.arange(self.active.shape[0])
            self._recheck_all = False
        elif touched_parts:
            candidates = np.unique(np.concatenate(touched_parts))
        else:
            return empty_transitions(self.rule, "area")
        enough = self.counts[candidates] >= self.params.k
        was = self.active[candidates]
        raised, cleared = candidates[enough & ~was], candidates[~enough & was]
        if not raised.size and not cleared.size:
            return empty_transitions(self.rule, "area")
        self.active[raised] = True
        self.active[cleared] = False
        return Transitions(self.rule, "area", raised.astype(np.int64), self.counts[raised].astype(np.float64),
                           _latest_per_area(raised, raise_events, now),
                           cleared.astype(np.int64), _latest_per_area(cleared, clear_events, now))


def _latest_per_area(areas: np.ndarray, events: list[tuple[np.ndarray, np.ndarray]],
                     now: float) -> np.ndarray:
    """For each of the (sorted, distinct) areas, the latest time among the events in it, else `now`."""
    latest = np.full(areas.shape[0], -np.inf)
    if areas.size:
        for ids, times in events:
            position = np.searchsorted(areas, ids)
            hit = position < areas.shape[0]
            hit[hit] = areas[position[hit]] == ids[hit]
            np.maximum.at(latest, position[hit], times[hit])
    return np.where(np.isfinite(latest), latest, now)
