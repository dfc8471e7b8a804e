"""How simulated devices behave: normal readings per device type, incidents that trip the shipped rules,
and the ground truth of those incidents.

Normal readings. Each measurement of a device type follows a `Normal` description: a per-device baseline
drawn from [low, high], a daily (or tidal) swing, white noise as a fraction of the value, a smooth
short-period wiggle, or one of a few shapes (lamps on at night, bins filling up and being emptied, flags).
Whatever the description, a normal value is clipped into the *safe band* of the device type's rules: below
every `above`/`clear_below` and above every `below`/`clear_above` of the threshold rules on it, with a
margin. Measurements watched by a rate rule have no white noise (their smooth variation stays far below
the rule's rate whatever the reporting interval) and enough decimals that rounding cannot fake a rate.
Measurements watched by a z-score rule have steady white noise, so their own baseline is wide enough.
So normal readings never trigger a rule (tests check this against the YAML).

Incidents. Every enabled rule of a device type gives an incident kind:

- threshold: the measurement is pushed past the bound (an offset added to its normal value: ramp, hold,
  ramp back) and then returns to normal, so the rule raises and, past the clear bound, clears;
- rate: the measurement rises faster than the rule's rate for a few readings, levels off (the rule
  clears), then recedes slowly; the rise stays below every threshold on it;
- stale: the device skips enough readings that its silence exceeds `after_s`;
- zscore: a spike of 15-25 σ of the device's own noise (at least the rule's `min_std`) for one or two
  readings (only on a device whose detector has warmed up and has not seen an incident for a long while);
- composite: an episode of its `of_rule` incident at `k` or more devices of one area at once.

On a z-score-watched measurement with proportional noise a threshold incident scales the value
geometrically, 0.7 σ of the current level per reading, so the noise grows with the level and the incident
does not also fire the z-score rule (measured against `rules.detectors.ZScoreDetector` with pm25-jump's
parameters: no raise in 300 incidents at 0.8 σ, 5 at 1.0 σ, 116 at 1.2 σ). Two companions make incidents
realistic: a smoke detector's own alarm goes off while its smoke density is past the bound, and congestion
raises a detector's occupancy and lowers its flow.

Ground truth. For threshold and rate rules the truth is not assumed but evaluated: a `Watcher` runs each
such rule of the device type (strict comparisons and hysteresis, rate per minute between consecutive
readings by device time, as `rules.detectors` does) over exactly the values published for the incident's
device, from the incident's first reading until every rule is clear again; each raise-to-clear span is one
truth record. A stale incident's record starts `after_s` after the last reading and ends at the next one;
a z-score incident's starts at the spike and ends at the first normal reading after it; an area record
spans the time at least `k` devices of the area had the `of_rule` window open.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, Literal

import numpy as np

from citybrain.sensing.devices.spec import DeviceTypeSpec, MeasurementSpec
from citybrain.sensing.rules.spec import RuleSpec, parse_rules

UTC_OFFSET_S = 8 * 3600  # the demo districts' local time (Asia/Shanghai), for daily cycles and street lamps
Shape = Literal["level", "night", "sawtooth", "flag", "constant"]


@dataclass(frozen=True)
class Normal:
    """How one measurement behaves when nothing is wrong.

    level:    baseline × (1 + swing·cos(2π(hour − peak_hour)/period_h)) + wiggle·sin(2πt/wiggle_period_s + φ),
              times (1 + noise·u), u uniform in [−1, 1]
    night:    the level formula at night (18:00-06:00 local), `off` (± noise) by day
    sawtooth: rises from `low` to `high` over a per-device period of fill_hours, then drops back
    flag:     a boolean, true with `probability` per reading (0: never)
    constant: the per-device baseline, unchanged
    Strings report `choices[0]`.
    """

    low: float = 0.0
    high: float = 1.0
    noise: float = 0.0
    swing: float = 0.0
    peak_hour: float = 14.0
    period_h: float = 24.0
    wiggle: float = 0.0
    wiggle_period_s: float = 1200.0
    decimals: int = 1
    shape: Shape = "level"
    off: float = 0.0
    probability: float = 0.0
    fill_hours: tuple[float, float] = (6.0, 48.0)
    choices: tuple[str, ...] = ("ok",)


NORMALS: dict[str, dict[str, Normal]] = {
    "air_quality": {
        "pm25": Normal(12, 55, noise=0.10, swing=0.2, peak_hour=8),
        "pm10": Normal(25, 90, noise=0.10, swing=0.2, peak_hour=8),
        "no2": Normal(10, 55, noise=0.10, swing=0.3, peak_hour=8),
        "o3": Normal(20, 110, noise=0.10, swing=0.4, peak_hour=15),
        "temperature": Normal(8, 26, noise=0.01, swing=0.15, peak_hour=15),
        "relativeHumidity": Normal(0.45, 0.85, noise=0.02, swing=0.1, peak_hour=5, decimals=3),
    },
    "smoke_detector": {
        "smokeDensity": Normal(0.05, 0.8, noise=0.3, decimals=2),
        "temperature": Normal(18, 28, noise=0.01, swing=0.08, peak_hour=15),
        "alarm": Normal(shape="flag"),
        "batteryLevel": Normal(0.35, 1.0, shape="constant", decimals=2),
    },
    "streetlight": {
        "illuminanceLevel": Normal(0.6, 1.0, shape="night", off=0.0, decimals=2),
        "powerConsumption": Normal(60, 250, noise=0.02, shape="night", off=1.5),
        "voltage": Normal(218, 232, noise=0.005, swing=0.01, peak_hour=4),
        "lampOn": Normal(1, 1, shape="night", off=0.0, decimals=0),
        "status": Normal(choices=("ok",)),
    },
    "traffic_detector": {
        "intensity": Normal(300, 1600, noise=0.08, swing=0.5, peak_hour=13, decimals=0),
        "averageVehicleSpeed": Normal(30, 60, noise=0.06, swing=0.12, peak_hour=3),
        "occupancy": Normal(0.04, 0.22, noise=0.1, swing=0.4, peak_hour=13, decimals=3),
    },
    "waste_bin": {
        "fillingLevel": Normal(0.05, 0.72, shape="sawtooth", decimals=3),
        "temperature": Normal(12, 30, noise=0.01, swing=0.15, peak_hour=15),
        "lidOpen": Normal(shape="flag", probability=0.02),
        "batteryLevel": Normal(0.3, 1.0, shape="constant", decimals=2),
    },
    "water_level": {
        # Smooth only: a tide-like swing (12.42 h) and a slow wiggle, far below the rate rule.
        "height": Normal(1.2, 3.6, swing=0.04, period_h=12.42, wiggle=0.02, decimals=3),
        "flow": Normal(0.5, 40, noise=0.03, swing=0.1, decimals=2),
        "batteryLevel": Normal(0.35, 1.0, shape="constant", decimals=2),
    },
    "manhole_cover": {
        "tilt": Normal(0.2, 2.5, noise=0.2),
        "open": Normal(shape="flag"),
        "waterLevel": Normal(1.0, 3.5, noise=0.01, swing=0.03, decimals=2),
        "batteryLevel": Normal(0.35, 1.0, shape="constant", decimals=2),
    },
}

# While an incident's target is past its bound, these measurements follow (absolute value or factor).
COMPANIONS: dict[tuple[str, str], dict[str, tuple[str, float]]] = {
    ("smoke_detector", "smokeDensity"): {"alarm": ("set", 1.0)},
    ("traffic_detector", "averageVehicleSpeed"): {"occupancy": ("set", 0.78), "intensity": ("scale", 0.35)},
}

SEQ_WIDTH = 9
TS_WIDTH = 14  # epoch seconds with milliseconds: 10 + 1 + 3 characters until the year 2286
RAMP_SIGMA = 0.7  # steps of a ramp on a z-score-watched measurement, in its noise σ (see module doc)
JUMP_SIGMAS = (15.0, 25.0)  # a jump's size, in σ of the device's noise (or the rule's min_std if larger)
JUMP_COOLDOWN_SPANS = 4  # readings since the last incident, in z-score spans, before a jump is injected


def rules_of(spec: DeviceTypeSpec) -> list[RuleSpec]:
    """The enabled rules shipped with a device type (its `rules_file` in `citybrain.scenarios`)."""
    if spec.rules_file is None:
        return []
    text = resources.files("citybrain.scenarios").joinpath(spec.rules_file).read_text(encoding="utf-8")
    return [rule for rule in parse_rules(text, source=spec.rules_file).rules if rule.enabled]


# -- payload layout and fixed-width rendering ------------------------------------------------------------


@dataclass(frozen=True)
class FieldLayout:
    """Where one payload value sits: `offset` of its `width` characters from the start of the payload."""

    name: str
    kind: str
    width: int
    decimals: int
    offset: int
    choices: tuple[str, ...] = ()


def number_width(measurement: MeasurementSpec, decimals: int) -> int:
    """Characters for any value within the measurement's physical range at `decimals`."""
    low = measurement.minimum if measurement.minimum is not None else -1e6
    high = measurement.maximum if measurement.maximum is not None else 1e6
    digits = len(str(math.floor(max(abs(low), abs(high)))))
    return digits + (decimals + 1 if decimals else 0) + (1 if low < 0 else 0)


def render_numbers(values: np.ndarray, width: int, decimals: int) -> np.ndarray:
    """Right-aligned decimal text of `values` as a (len, width) uint8 matrix, padded with spaces (JSON
    whitespace, so `{"pm25":  35.2}` is valid JSON and every payload of a type has the same length)."""
    scaled = np.rint(np.abs(values) * 10.0 ** decimals).astype(np.int64)
    return render_scaled(scaled, width, decimals, negative=(values < 0) & (scaled > 0))


def render_scaled(scaled: np.ndarray, width: int, decimals: int, negative: np.ndarray | None = None, *,
                  zero_pad: bool = False) -> np.ndarray:
    """`render_numbers` for values given as integers in units of the last decimal (e.g. milliseconds);
    `zero_pad` keeps leading zeros (for the low part of a number whose high part is rendered apart)."""
    count = scaled.shape[0]
    out = np.full((count, width), 32, dtype=np.uint8)
    if not count:
        return out
    ndigits = width - (1 if decimals else 0)
    # 32-bit division is about twice as fast, and most values fit.
    dtype = np.int32 if ndigits <= 9 and int(scaled.max()) < 2**31 else np.int64
    scaled = scaled.astype(dtype, copy=False)
    powers = (10 ** np.arange(ndigits, dtype=np.int64)).astype(dtype)  # place values, right to left
    digits = (scaled[:, None] // powers[None, :]) % 10
    if zero_pad:
        chars = (digits + 48).astype(np.uint8)[:, ::-1]
    else:
        visible = (scaled[:, None] >= powers[None, :]) | (np.arange(ndigits) <= decimals)[None, :]
        chars = np.where(visible, digits + 48, 32).astype(np.uint8)[:, ::-1]
    if decimals:
        out[:, : width - decimals - 1] = chars[:, : ndigits - decimals]
        out[:, width - decimals - 1] = 46  # '.'
        out[:, width - decimals:] = chars[:, ndigits - decimals:]
    else:
        out[:] = chars
    if negative is not None and negative.any():
        digits = np.floor(np.log10(np.maximum(scaled[negative], 1))).astype(np.int64) + 1
        shown = np.maximum(digits, decimals + 1)
        column = width - 1 - shown - (1 if decimals else 0)
        out[np.flatnonzero(negative), np.maximum(column, 0)] = 45  # '-'
    return out


def render_timestamps(ts_ms: np.ndarray) -> np.ndarray:
    """Epoch milliseconds as `1764590400.250` (TS_WIDTH characters). Within a send slot the leading
    digits are shared, so they are rendered once and only the last six digits per message."""
    if not ts_ms.size:
        return np.full((0, TS_WIDTH), 32, dtype=np.uint8)
    high = ts_ms // 1_000_000
    if int(high.min()) != int(high.max()) or not 10**6 <= int(high[0]) < 10**7:
        return render_scaled(ts_ms, TS_WIDTH, 3)
    out = np.empty((ts_ms.shape[0], TS_WIDTH), dtype=np.uint8)
    out[:, :7] = np.frombuffer(str(int(high[0])).encode(), dtype=np.uint8)
    out[:, 7:] = render_scaled(ts_ms - int(high[0]) * 1_000_000, 7, 3, zero_pad=True)
    return out


def fixed_width_table(choices: tuple[str, ...], width: int) -> np.ndarray:
    """Rows of JSON text for each choice, padded after the closing quote (valid JSON whitespace)."""
    import json

    rows = np.full((len(choices), width), 32, dtype=np.uint8)
    for i, choice in enumerate(choices):
        text = json.dumps(choice, ensure_ascii=False).encode()
        rows[i, : len(text)] = np.frombuffer(text, dtype=np.uint8)
    return rows


BOOLEANS = np.frombuffer(b"false true", dtype=np.uint8).reshape(2, 5)


# -- one device type -------------------------------------------------------------------------------------


@dataclass
class IncidentKind:
    """One way to trip one rule of a device type."""

    rule: RuleSpec
    kind: Literal["above", "below", "rate", "stale", "zscore"]
    measurement: str | None


@dataclass
class TypeModel:
    """Everything the simulator needs about one device type: payload layout, normal behaviour, safe
    bands, incident kinds. Built by `TypeModel.build` from the spec and its shipped rules."""

    spec: DeviceTypeSpec
    rules: list[RuleSpec]
    interval: float
    normals: dict[str, Normal]
    fields: list[FieldLayout]
    template: bytes
    band: dict[str, tuple[float, float]]
    kinds: list[IncidentKind]
    watched_by_rate: set[str] = field(default_factory=set)
    watched_by_zscore: set[str] = field(default_factory=set)

    @property
    def slug(self) -> str:
        return self.spec.slug

    @classmethod
    def build(cls, spec: DeviceTypeSpec, interval: float, rules: list[RuleSpec] | None = None) -> TypeModel:
        rules = rules_of(spec) if rules is None else [r for r in rules if r.enabled]
        known = NORMALS.get(spec.slug, {})
        rate_rules = [r for r in rules if r.detector == "rate" and r.measurement]
        zscore_rules = [r for r in rules if r.detector == "zscore" and r.measurement]
        watched_by_rate = {r.measurement for r in rate_rules if r.measurement}
        watched_by_zscore = {r.measurement for r in zscore_rules if r.measurement}
        normals: dict[str, Normal] = {}
        for name, measurement in spec.measurements.items():
            normal = known.get(name) or _generic_normal(measurement)
            if name in watched_by_rate:
                # Rounding must not fake a rate: one unit of the last decimal per interval stays below a
                # fifth of the smallest rate any rate rule on it uses.
                smallest = min(_rate_limits(r) for r in rate_rules if r.measurement == name)
                needed = math.ceil(math.log10(60.0 / (interval * 0.2 * smallest)))
                decimals = max(normal.decimals, min(needed, 6))
                normal = Normal(**{**normal.__dict__, "noise": 0.0, "decimals": decimals})
            normals[name] = normal
        fields, template = _layout(spec, normals)
        band = {name: _safe_band(name, measurement, normals[name], rules)
                for name, measurement in spec.measurements.items()}
        kinds = _kinds(spec, rules, interval)
        return cls(spec, rules, interval, normals, fields, template, band, kinds, watched_by_rate,
                   watched_by_zscore)

    # -- per-device parameters and normal values ------------------------------------------------------------

    def params(self, count: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """Per-device parameters of the normal behaviour (baselines, phases, fill periods)."""
        out: dict[str, np.ndarray] = {}
        for name, normal in self.normals.items():
            out[f"{name}.base"] = rng.uniform(normal.low, normal.high, count)
            out[f"{name}.phase"] = rng.uniform(0.0, 2 * np.pi, count)
            if normal.shape == "sawtooth":
                out[f"{name}.period"] = rng.uniform(*normal.fill_hours, count) * 3600.0
        return out

    def normal_values(self, params: dict[str, np.ndarray], local: np.ndarray, ts: np.ndarray,
                      rng: np.random.Generator) -> dict[str, np.ndarray]:
        """Normal readings (numbers; booleans as 0/1; strings as choice indices) of devices `local` at
        times `ts`, clipped into the safe band and rounded to the published decimals."""
        hours = ((ts + UTC_OFFSET_S) / 3600.0) % 24.0
        night = (hours >= 18.0) | (hours < 6.0)
        out: dict[str, np.ndarray] = {}
        for name, normal in self.normals.items():
            kind = self.spec.measurements[name].kind
            if kind == "string":
                out[name] = np.zeros(local.shape[0])
                continue
            if kind == "boolean" and normal.shape != "night":
                flag = rng.random(local.shape[0]) < normal.probability if normal.probability else \
                    np.zeros(local.shape[0], dtype=bool)
                out[name] = flag.astype(np.float64)
                continue
            base = params[f"{name}.base"][local]
            phase = params[f"{name}.phase"][local]
            if normal.shape == "constant":
                value = base.copy()
            elif normal.shape == "sawtooth":
                period = params[f"{name}.period"][local]
                cycle = ((ts / period) + phase / (2 * np.pi)) % 1.0
                value = normal.low + (normal.high - normal.low) * cycle
            else:
                daily = np.cos(2 * np.pi * (hours - normal.peak_hour) / normal.period_h)
                value = base * (1.0 + normal.swing * daily)
                if normal.wiggle:
                    value = value + normal.wiggle * np.sin(2 * np.pi * ts / normal.wiggle_period_s + phase)
                if normal.noise:
                    value = value * (1.0 + normal.noise * rng.uniform(-1.0, 1.0, local.shape[0]))
                if normal.shape == "night":
                    off = normal.off * (1.0 + normal.noise * rng.uniform(-1.0, 1.0, local.shape[0]))
                    value = np.where(night, 1.0 if kind == "boolean" else value, off)
            low, high = self.band[name]
            out[name] = np.round(np.clip(value, low, high), normal.decimals)
        return out

    def noise_sigma(self, name: str, level: float) -> float:
        """Standard deviation of a measurement's white noise at `level` (uniform noise: a/√3)."""
        normal = self.normals[name]
        return max(abs(level) * normal.noise / math.sqrt(3.0), 10.0 ** -normal.decimals)

    def finish(self, values: dict[str, np.ndarray]) -> None:
        """Clip to the physical range and round, in place (after incidents changed values)."""
        for name, column in values.items():
            measurement = self.spec.measurements[name]
            if measurement.kind == "string":
                continue
            if measurement.kind == "boolean":
                np.greater_equal(column, 0.5, out=column, casting="unsafe")
                continue
            low = measurement.minimum if measurement.minimum is not None else -np.inf
            high = measurement.maximum if measurement.maximum is not None else np.inf
            np.clip(column, low, high, out=column)
            np.round(column, self.normals[name].decimals, out=column)

    def render(self, values: dict[str, np.ndarray], ts_ms: np.ndarray, seq: np.ndarray) -> np.ndarray:
        """The variable characters of each payload, in `fields` order, as one (count, total) matrix."""
        parts = [render_timestamps(ts_ms), _broadcast_or_render(seq, SEQ_WIDTH)]
        for layout in self.fields[2:]:
            column = values[layout.name]
            if layout.kind == "boolean":
                parts.append(BOOLEANS[(column >= 0.5).astype(np.intp)])
            elif layout.kind == "string":
                parts.append(fixed_width_table(layout.choices, layout.width)[column.astype(np.intp)])
            else:
                parts.append(render_numbers(column, layout.width, layout.decimals))
        return np.concatenate(parts, axis=1)

    def columns(self) -> np.ndarray:
        """Positions (within the payload) of the characters `render` produces, in the same order."""
        return np.concatenate([np.arange(f.offset, f.offset + f.width) for f in self.fields])


def _broadcast_or_render(values: np.ndarray, width: int) -> np.ndarray:
    """Integers rendered once when they are all the same (a slot's `seq`), else one by one."""
    if values.size and int(values.min()) == int(values.max()):
        return np.broadcast_to(render_scaled(values[:1], width, 0), (values.shape[0], width))
    return render_scaled(values, width, 0)


def _rate_limits(rule: RuleSpec) -> float:
    values = [rule.params.get(k) for k in ("max_rise_per_min", "max_fall_per_min", "clear_below_per_min")]
    return min(float(v) for v in values if v is not None)


def _generic_normal(measurement: MeasurementSpec) -> Normal:
    """A type nobody described: values in the middle of the physical range."""
    if measurement.kind in ("boolean", "string"):
        return Normal(shape="flag") if measurement.kind == "boolean" else Normal()
    low = measurement.minimum if measurement.minimum is not None else 0.0
    high = measurement.maximum if measurement.maximum is not None else 100.0
    span = high - low
    return Normal(low + 0.4 * span, low + 0.5 * span, noise=0.02,
                  decimals=0 if measurement.kind == "integer" else 2)


def _layout(spec: DeviceTypeSpec, normals: dict[str, Normal]) -> tuple[list[FieldLayout], bytes]:
    """The payload template with placeholders and where each value goes in it."""
    parts: list[bytes] = [b'{"ts":']
    fields = [FieldLayout("ts", "number", TS_WIDTH, 3, 6)]
    parts.append(b" " * TS_WIDTH)
    parts.append(b',"seq":')
    fields.append(FieldLayout("seq", "integer", SEQ_WIDTH, 0, sum(map(len, parts))))
    parts.append(b" " * SEQ_WIDTH)
    for name, measurement in spec.measurements.items():
        normal = normals[name]
        parts.append(b',"' + name.encode() + b'":')
        offset = sum(map(len, parts))
        if measurement.kind == "boolean":
            layout = FieldLayout(name, "boolean", 5, 0, offset)
        elif measurement.kind == "string":
            width = max(len(fixed_width_table((c,), 256)[0].tobytes().rstrip()) for c in normal.choices)
            layout = FieldLayout(name, "string", width, 0, offset, normal.choices)
        else:
            decimals = 0 if measurement.kind == "integer" else normal.decimals
            width = number_width(measurement, decimals)
            layout = FieldLayout(name, measurement.kind, width, decimals, offset)
        fields.append(layout)
        parts.append(b" " * layout.width)
    parts.append(b"}")
    return fields, b"".join(parts)


def _safe_band(name: str, measurement: MeasurementSpec, normal: Normal,
               rules: list[RuleSpec]) -> tuple[float, float]:
    """Where normal values of a measurement must stay: inside its physical range and on the quiet side of
    every threshold rule on it, with a margin."""
    low = measurement.minimum if measurement.minimum is not None else -np.inf
    high = measurement.maximum if measurement.maximum is not None else np.inf
    resolution = 10.0 ** -normal.decimals
    for rule in rules:
        if rule.detector != "threshold" or rule.measurement != name:
            continue
        p = rule.params
        if p.get("above") is not None:
            bound = min(float(p["above"]), float(p.get("clear_below", p["above"])))
            high = min(high, bound - max(2 * resolution, 0.02 * abs(bound)))
        if p.get("below") is not None:
            bound = max(float(p["below"]), float(p.get("clear_above", p["below"])))
            low = max(low, bound + max(2 * resolution, 0.02 * abs(bound)))
    return float(low), float(high)


def _kinds(spec: DeviceTypeSpec, rules: list[RuleSpec], interval: float) -> list[IncidentKind]:
    kinds: list[IncidentKind] = []
    for rule in rules:
        measurement = rule.measurement
        if rule.detector == "threshold" and measurement in spec.measurements:
            if spec.measurements[measurement].kind == "string":
                continue
            direction = "above" if rule.params.get("above") is not None else "below"
            kinds.append(IncidentKind(rule, direction, measurement))
        elif rule.detector == "rate" and measurement in spec.measurements \
                and rule.params.get("max_rise_per_min"):
            kinds.append(IncidentKind(rule, "rate", measurement))
        elif rule.detector == "stale" and float(rule.params.get("after_s", 0)) > interval:
            kinds.append(IncidentKind(rule, "stale", None))
        elif rule.detector == "zscore" and measurement in spec.measurements:
            kinds.append(IncidentKind(rule, "zscore", measurement))
    return kinds


# -- incidents -------------------------------------------------------------------------------------------


@dataclass
class Profile:
    """What an incident does to its device, reading by reading: at the incident's j-th reading measurement
    m's normal value is multiplied by `factors[m][j]`, then `offsets[m][j]` is added, and `absolute[m][j]`
    replaces it (NaN: leave it); the first `silent` readings are not sent at all."""

    length: int
    factors: dict[str, np.ndarray] = field(default_factory=dict)
    offsets: dict[str, np.ndarray] = field(default_factory=dict)
    absolute: dict[str, np.ndarray] = field(default_factory=dict)
    silent: int = 0


def _bounds_on(model: TypeModel, name: str) -> tuple[list[float], list[float]]:
    """Threshold bounds on a measurement: (raise-above bounds, raise-below bounds)."""
    above, below = [], []
    for rule in model.rules:
        if rule.detector == "threshold" and rule.measurement == name:
            if rule.params.get("above") is not None:
                above.append(float(rule.params["above"]))
            if rule.params.get("below") is not None:
                below.append(float(rule.params["below"]))
    return above, below


def _ramp(length_up: int, hold: int, length_down: int) -> np.ndarray:
    up = np.arange(1, length_up + 1) / length_up
    down = 1.0 - np.arange(1, length_down + 1) / length_down
    return np.concatenate([up, np.ones(hold), down])


def plan_profile(model: TypeModel, kind: IncidentKind, current: dict[str, float],
                 rng: np.random.Generator, *, hold: int | None = None,
                 ramp: int | None = None) -> Profile | None:
    """The readings of one incident on a device whose normal values are now `current`; None when this
    kind cannot happen to it (e.g. no headroom below a higher threshold)."""
    interval_min = model.interval / 60.0
    if kind.kind == "stale":
        after_s = float(kind.rule.params["after_s"])
        silent = int(after_s // model.interval) + 1 + int(rng.integers(0, 3))
        return Profile(length=silent + 1, silent=silent)
    name = kind.measurement
    assert name is not None
    measurement = model.spec.measurements[name]
    normal = model.normals[name]
    v0 = float(current[name])
    resolution = 10.0 ** -normal.decimals
    above, below = _bounds_on(model, name)
    top = measurement.maximum if measurement.maximum is not None else v0 + 1e6
    bottom = measurement.minimum if measurement.minimum is not None else v0 - 1e6
    sigma = model.noise_sigma(name, v0)

    if kind.kind == "zscore":
        # The detector divides by its σ estimate floored at min_std; 15 σ clears z with room for an estimate
        # somewhat above the noise's own σ.
        scale = max(sigma, float(kind.rule.params.get("min_std", 0.0)))
        ceiling = min([a for a in above if a > v0] + [top]) - max(3 * resolution, 0.03 * abs(v0) + 2 * sigma)
        delta = float(rng.uniform(JUMP_SIGMAS[0], JUMP_SIGMAS[1])) * scale
        delta = min(delta, ceiling - v0 * (1 + normal.noise) - sigma)
        if delta < JUMP_SIGMAS[0] * scale:
            return None
        spike = int(rng.integers(1, 3))
        return Profile(length=spike + 1, offsets={name: np.concatenate([np.full(spike, delta), [0.0]])})

    if kind.kind == "rate":
        rise_limit = float(kind.rule.params["max_rise_per_min"])
        ceiling = min([a for a in above if a > v0] + [top]) - max(3 * resolution, 0.03 * abs(v0))
        headroom = ceiling - v0 - 2 * (normal.wiggle + abs(v0) * normal.swing)
        steps = max(2, math.ceil(1.5 / interval_min))
        rate = float(rng.uniform(1.4, 3.0)) * rise_limit
        while steps >= 2 and rate * steps * interval_min > headroom:
            if rate > 1.3 * rise_limit:
                rate = max(1.3 * rise_limit, headroom / (steps * interval_min))
            else:
                steps -= 1
        if steps < 2:
            return None
        rise = rate * steps * interval_min
        plateau = int(rng.integers(3, 8)) if hold is None else hold
        fall = max(1, math.ceil(rise / (0.3 * rise_limit * interval_min)))
        return Profile(length=steps + plateau + fall, offsets={name: rise * _ramp(steps, plateau, fall)})

    # threshold, up or down
    upward = kind.kind == "above"
    params = kind.rule.params
    bound = float(params["above"] if upward else params["below"])
    clear = float(params.get("clear_below" if upward else "clear_above", bound))
    spread = abs(bound - clear) or max(0.1 * abs(bound), resolution * 10)
    if measurement.kind == "boolean":
        length = int(rng.integers(3, 9)) if hold is None else hold
        target = np.concatenate([np.full(length, 1.0 if upward else 0.0), [np.nan]])
        profile = Profile(length=length + 1, absolute={name: target})
    else:
        margin = max(3 * resolution, 0.02 * abs(bound))
        multiplicative = name in model.watched_by_zscore and normal.noise > 0 and v0 > 0
        # How far the noise can carry a value held at `peak`: a fraction of it, or ±2σ of the normal noise.
        rel, jitter = (normal.noise, 0.0) if multiplicative else (0.0, 2 * sigma)
        wanted = bound + (1 if upward else -1) * float(rng.uniform(0.5, 2.0)) * spread
        if upward:
            lowest = (bound + margin) / (1 - rel) + jitter
            highest = (min([a for a in above if a > bound] + [top]) - margin) / (1 + rel) - jitter
        else:
            lowest = (max([b for b in below if b < bound] + [bottom]) + margin) / (1 - rel) + jitter
            highest = (bound - margin) / (1 + rel) - jitter
        if lowest > highest:
            return None
        peak = min(max(wanted, lowest), highest)
        length_hold = int(rng.integers(3, 12)) if hold is None else hold
        if multiplicative and peak > 0:
            # Scale geometrically (noise grows with the level), RAMP_SIGMA of the current σ per reading.
            ratio = peak / v0
            per_step = math.log1p(RAMP_SIGMA * normal.noise / math.sqrt(3.0))
            steps = max(1, math.ceil(abs(math.log(ratio)) / per_step))
            steps = steps if ramp is None else max(steps, ramp)
            up = ratio ** (np.arange(1, steps + 1) / steps)
            factor = np.concatenate([up, np.full(length_hold, ratio), up[::-1][1:], [1.0]])
            profile = Profile(length=factor.size, factors={name: factor})
            level = v0 * factor
        else:
            distance = peak - v0
            down = None
            if name in model.watched_by_zscore:
                steps = max(1, math.ceil(abs(distance) / (RAMP_SIGMA * sigma)))
            elif name in model.watched_by_rate:
                # Rise (and fall) at 60 % of the rate rules' limits: well clear of them, with the normal
                # drift on top; without a fall limit the level drops back three times as fast.
                rises = [r.params.get("max_rise_per_min") for r in model.rules
                         if r.detector == "rate" and r.measurement == name]
                falls = [r.params.get("max_fall_per_min") for r in model.rules
                         if r.detector == "rate" and r.measurement == name]
                rise = min([float(v) for v in rises if v is not None] or [math.inf])
                fall = min([float(v) for v in falls if v is not None] or [math.inf])
                toward, back = (rise, fall) if distance > 0 else (fall, rise)
                if math.isfinite(toward):
                    steps = max(1, math.ceil(abs(distance) / (0.6 * toward * interval_min)))
                else:
                    steps = int(rng.integers(1, 4))
                down = max(1, math.ceil(abs(distance) / (0.6 * back * interval_min))) if math.isfinite(back) \
                    else max(1, math.ceil(steps / 3))
            else:
                steps = int(rng.integers(1, 4))
            steps = steps if ramp is None else max(steps, ramp)
            offset = np.concatenate([distance * _ramp(steps, length_hold, down or steps), [0.0]])
            profile = Profile(length=offset.size, offsets={name: offset})
            level = v0 + offset
        engaged = (level > bound) if upward else (level < bound)
        engaged[-1] = False
        companions = COMPANIONS.get((model.slug, name), {})
        for other, (how, amount) in companions.items():
            if other not in model.spec.measurements:
                continue
            if how == "set":
                profile.absolute[other] = np.where(engaged, amount, np.nan)
            else:
                base = float(current.get(other, 0.0))
                profile.offsets[other] = np.where(engaged, base * (amount - 1.0), 0.0)
    return profile


# -- ground truth ----------------------------------------------------------------------------------------


@dataclass
class Watcher:
    """Reference evaluation of one threshold or rate rule for one device (see the module docstring)."""

    rule: RuleSpec
    active: bool = False
    since: float = 0.0
    last_value: float = math.nan
    last_ts: float = math.nan

    def observe(self, ts: float, value: float) -> tuple[str, float] | None:
        """Feed one published reading; returns ("raise"|"clear", ts) when the rule's state changes."""
        p = self.rule.params
        if self.rule.detector == "threshold":
            if p.get("above") is not None:
                set_, reset = value > float(p["above"]), value < float(p["clear_below"])
            else:
                set_, reset = value < float(p["below"]), value > float(p["clear_above"])
        else:  # rate
            elapsed = ts - self.last_ts
            previous = self.last_value
            self.last_value, self.last_ts = value, ts
            if not elapsed > 0 or math.isnan(previous):
                return None
            rate = (value - previous) * 60.0 / elapsed
            set_ = reset = False
            clear = float(p.get("clear_below_per_min", 0.0))
            if p.get("max_rise_per_min") is not None:
                set_ = rate > float(p["max_rise_per_min"])
                reset = rate < clear
            if p.get("max_fall_per_min") is not None:
                set_ = set_ or -rate > float(p["max_fall_per_min"])
                reset = reset and -rate < clear
        if set_ and not self.active:
            self.active, self.since = True, ts
            return "raise", ts
        if reset and self.active and not set_:
            self.active = False
            return "clear", ts
        return None


@dataclass
class Incident:
    """One injected incident: its device, what it does (`profile`), from which reading on, and the
    reference watchers that turn what was published into truth records."""

    number: int
    kind: IncidentKind
    device: int            # row in the fleet
    message: int           # the device's message index in the plan
    type_index: int
    local: int
    start_cycle: int
    profile: Profile
    watchers: list[Watcher]
    area: str | None = None
    done: bool = False
    last_ts: float = math.nan   # ts of the device's last published reading before the incident


TruthSink = Callable[[dict[str, Any]], None]


class AreaTracker:
    """Counts open `of_rule` windows per area and emits an area truth record while ≥ k are open."""

    def __init__(self, rule: RuleSpec, device_type: str, sink: TruthSink) -> None:
        self.rule = rule
        self.device_type = device_type
        self.k = int(rule.params["k"])
        self.of_rule = str(rule.params["of_rule"])
        self.kind = str(rule.params.get("area", "village"))
        self.sink = sink
        self.open: dict[str, set[str]] = {}
        self.since: dict[str, float] = {}
        self.members: dict[str, set[str]] = {}

    def area_of(self, org_unit: str) -> str:
        """The area id of an org unit for this rule's area kind (codes nest: district 6, town 9 digits)."""
        return {"district": org_unit[:6], "town": org_unit[:9]}.get(self.kind, org_unit)

    def event(self, area: str, device_id: str, what: str, ts: float) -> None:
        devices = self.open.setdefault(area, set())
        before = len(devices)
        (devices.add if what == "raise" else devices.discard)(device_id)
        if before < self.k <= len(devices):
            self.since[area] = ts
            self.members[area] = set(devices)
        elif len(devices) < self.k <= before and area in self.since:
            self._emit(area, self.since.pop(area), ts)
        elif area in self.since:
            self.members[area] |= devices

    def _emit(self, area: str, start: float, end: float | None) -> None:
        self.sink({"area": area, "area_kind": self.kind, "device_type": self.device_type,
                   "rule_id": self.rule.id,
                   "start_ts": round(start, 3), "end_ts": None if end is None else round(end, 3),
                   "devices": sorted(self.members.pop(area, set()))})

    def close(self) -> None:
        """At the end of a run: areas still over k get a record without an end."""
        for area, start in sorted(self.since.items()):
            self._emit(area, start, None)
        self.since.clear()
