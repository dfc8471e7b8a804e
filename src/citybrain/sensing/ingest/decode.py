"""Typed batch decoding of telemetry payloads, one decoder per device type.

A device type becomes a msgspec Struct (its measurements as optional fields, unknown fields forbidden), so
decoding validates kinds as it parses. A batch of payloads is decoded in one call, as the JSON array
their bytes joined by commas make; only when that fails is each payload decoded on its own, to find the
bad ones. Columns then come out as NumPy arrays and the physical ranges are checked per column.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from operator import attrgetter
from typing import Any

import msgspec
import numpy as np

from citybrain.sensing.devices.spec import DeviceTypeSpec

NAN = float("nan")


@dataclass(slots=True)
class Decoded:
    """Columns of the payloads that decoded (`rows`: their positions in the input), and the reason for
    each that did not."""

    rows: np.ndarray
    ts: np.ndarray
    seq: np.ndarray
    values: dict[str, np.ndarray]
    texts: dict[str, list[str | None]]
    errors: list[tuple[int, str]]


def _field(name: str, kind: str) -> tuple[str, Any, Any]:
    """A measurement's struct field. Numeric fields default to NaN, so a column is one np.array call; a JSON
    null is allowed too (then the column takes the slower path that maps None to NaN)."""
    if kind == "string":
        return (name, str | None, None)
    if kind == "boolean":
        return (name, bool | float | None, NAN)  # float only as the NaN default
    return (name, float | None, NAN)  # integers too: msgspec turns a JSON int into a float for a float field


class PayloadDecoder:
    """Decodes payloads of one device type (see docs/sensing.md for the format)."""

    def __init__(self, spec: DeviceTypeSpec) -> None:
        self.spec = spec
        self.numeric = spec.numeric()
        self.textual = spec.textual()
        fields: list[tuple[str, Any, Any]] = [("ts", float | str, msgspec.NODEFAULT), ("seq", int, -1)]
        fields += [_field(name, m.kind) for name, m in spec.measurements.items()]
        # gc=False: a reading holds no references back, so the collector need not track millions of them.
        self._struct = msgspec.defstruct(
            f"Reading_{spec.slug}", fields, forbid_unknown_fields=True, kw_only=True, gc=False
        )
        self._one = msgspec.json.Decoder(self._struct)
        self._many = msgspec.json.Decoder(list[self._struct])  # type: ignore[valid-type]
        self._booleans = [name for name, m in spec.measurements.items() if m.kind == "boolean"]
        self._ranges = [
            (name, m.minimum, m.maximum, m.kind == "integer")
            for name, m in spec.measurements.items()
            if m.kind in ("number", "integer")
        ]

    def decode(self, payloads: list[bytes]) -> Decoded:
        errors: list[tuple[int, str]] = []
        try:
            readings = self._many.decode(b"[" + b",".join(payloads) + b"]")
            positions = list(range(len(payloads)))
        except (msgspec.DecodeError, msgspec.ValidationError):
            readings, positions = [], []
            for i, payload in enumerate(payloads):
                try:
                    readings.append(self._one.decode(payload))
                    positions.append(i)
                except msgspec.ValidationError as exc:
                    errors.append((i, f"invalid payload: {exc}"))
                except msgspec.DecodeError as exc:
                    errors.append((i, f"not JSON: {exc}"))
        n = len(readings)
        keep = np.ones(n, bool)
        moments = list(map(attrgetter("ts"), readings))
        try:
            ts = np.array(moments, np.float64) if n else np.empty(0, np.float64)
            texts_ts = False
        except (TypeError, ValueError):  # some are RFC 3339 text
            ts = np.empty(n, np.float64)
            texts_ts = True
        for i, reading in enumerate(readings if texts_ts else ()):
            moment = reading.ts
            if moment.__class__ is float:
                ts[i] = moment
            else:
                parsed = _parse_time(moment)
                if parsed is None:
                    keep[i] = False
                    errors.append(
                        (positions[i], f"ts: not an epoch number or RFC 3339 time: {moment!r}"[:300])
                    )
                    ts[i] = NAN
                else:
                    ts[i] = parsed
        bad_ts = ~np.isfinite(ts) & keep
        for i in np.flatnonzero(bad_ts).tolist():
            keep[i] = False
            errors.append((positions[i], "ts: not a finite number"))
        seq = np.array(list(map(attrgetter("seq"), readings)), np.int64) if n else np.empty(0, np.int64)
        values: dict[str, np.ndarray] = {}
        for name in self.numeric:
            column = list(map(attrgetter(name), readings))
            try:
                values[name] = np.array(column, np.float64) if n else np.empty(0, np.float64)
            except TypeError:  # a JSON null among them
                values[name] = np.array([NAN if v is None else v for v in column], np.float64)
        # A boolean measurement given as a number (0.5) is not a boolean.
        for name in self._booleans:
            column = values[name]
            wrong = ~np.isnan(column) & (column != 0) & (column != 1)
            for i in np.flatnonzero(wrong & keep).tolist():
                keep[i] = False
                errors.append((positions[i], f"{name}: expected a boolean"))
        for name, low, high, integral in self._ranges:
            column = values[name]
            with np.errstate(invalid="ignore"):
                wrong = ~np.isfinite(column) & ~np.isnan(column)
                if low is not None:
                    wrong |= column < low
                if high is not None:
                    wrong |= column > high
                if integral:
                    wrong |= np.isfinite(column) & (column != np.round(column))
            for i in np.flatnonzero(wrong & keep).tolist():
                keep[i] = False
                errors.append((positions[i], _range_reason(name, column[i], low, high, integral)))
        texts = {name: [getattr(r, name) for r in readings] for name in self.textual}
        rows = np.asarray(positions, np.int64)
        if not keep.all():
            rows, ts, seq = rows[keep], ts[keep], seq[keep]
            values = {k: v[keep] for k, v in values.items()}
            kept = np.flatnonzero(keep).tolist()
            texts = {k: [v[i] for i in kept] for k, v in texts.items()}
        return Decoded(rows, ts, seq, values, texts, errors)


def _parse_time(text: str) -> float | None:
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00") if text.endswith("Z") else text)
    except ValueError:
        return None
    if moment.tzinfo is None:
        return None  # a time without a zone is ambiguous: refuse rather than guess
    return moment.timestamp()


def _range_reason(name: str, value: float, low: float | None, high: float | None, integral: bool) -> str:
    if integral and np.isfinite(value) and value != round(value):
        return f"{name}: {value:g} is not an integer"
    if low is not None and value < low:
        return f"{name}: {value:g} is below the minimum {low:g}"
    if high is not None and value > high:
        return f"{name}: {value:g} is above the maximum {high:g}"
    return f"{name}: {value} is not a finite number"
