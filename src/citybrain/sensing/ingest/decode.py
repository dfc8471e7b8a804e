"""Typed batch decoding of telemetry payloads, one decoder per device type.

A device type becomes a msgspec Struct (its measurements as optional fields, unknown fields forbidden), so
decoding validates kinds as it parses. A batch of payloads is decoded in one call, as the JSON array
their bytes joined by commas make; only when that fails is each payload decoded on its own, to find the
bad ones. Columns then come out as NumPy arrays and the physical ranges are checked per column.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
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


def _field_type(kind: str) -> Any:
    if kind == "string":
        return str | None
    if kind == "boolean":
        return bool | None
    return float | None  # integers too: msgspec turns a JSON int into a float for a float field


class PayloadDecoder:
    """Decodes payloads of one device type (see docs/sensing.md for the format)."""

    def __init__(self, spec: DeviceTypeSpec) -> None:
        self.spec = spec
        self.numeric = spec.numeric()
        self.textual = spec.textual()
        fields: list[tuple[str, Any, Any]] = [("ts", float | str, msgspec.NODEFAULT), ("seq", int, -1)]
        fields += [(name, _field_type(m.kind), None) for name, m in spec.measurements.items()]
        self._struct = msgspec.defstruct(f"Reading_{spec.slug}", fields, forbid_unknown_fields=True,
                                         kw_only=True)
        self._one = msgspec.json.Decoder(self._struct)
        self._many = msgspec.json.Decoder(list[self._struct])  # type: ignore[valid-type]
        self._ranges = [(name, m.minimum, m.maximum, m.kind == "integer") for name, m in spec.measurements.items()
                        if m.kind in ("number", "integer")]

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
        ts = np.empty(n, np.float64)
        keep = np.ones(n, bool)
        for i, reading in enumerate(readings):
            moment = reading.ts
            if moment.__class__ is float:
                ts[i] = moment
            else:
                parsed = _parse_time(moment)
                if parsed is None:
                    keep[i] = False
                    errors.append((positions[i], f"ts: not an epoch number or RFC 3339 time: {moment!r}"[:300]))
                    ts[i] = NAN
                else:
                    ts[i] = parsed
        bad_ts = ~np.isfinite(ts) & keep
        for i in np.flatnonzero(bad_ts).tolist():
            keep[i] = False
            errors.append((positions[i], "ts: not a finite number"))
        seq = np.fromiter((r.seq for r in readings), np.int64, n)
        values: dict[str, np.ndarray] = {}
        for name in self.numeric:
            getter = _getter(name)
            values[name] = np.fromiter((NAN if (v := getter(r)) is None else float(v) for r in readings),
                                       np.float64, n)
        for name, low, high, integral in self._ranges:
            column = values[name]
            with np.errstate(invalid="ignore"):
                wrong = (~np.isfinite(column) & ~np.isnan(column))
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


def _getter(name: str) -> Any:
    from operator import attrgetter

    return attrgetter(name)


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
