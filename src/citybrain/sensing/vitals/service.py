"""City vital signs (城市运行体征): indicators per org unit, computed from the sensing state and stored as
time series.

An indicator is data (`IndicatorSpec`) executed by a kind (`indicator_kinds`, a plug-in registry):
built-in kinds count devices online, open alerts by severity, the share of a type's devices in alert
under one rule, and the mean of a measurement's latest readings (optionally through a transform, such as
PM2.5 → AQI). Scenarios contribute their indicators through `ScenarioManifest.indicators`. Values are
computed per village from NumPy arrays (np.bincount over the devices' org positions) and summed up the
org tree, so a district of 3 million devices costs milliseconds.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from citybrain.core.errors import InvalidInput
from citybrain.core.registry import Registry
from citybrain.hub.org.tree import OrgTree
from citybrain.sensing.batch import ReadingBatch
from citybrain.sensing.devices.index import DeviceIndex
from citybrain.sensing.devices.spec import DeviceTypeSpec
from citybrain.sensing.vitals.models import VitalSignPartRow, VitalSignRow
from citybrain.sensing.vitals.spec import IndicatorSpec


@dataclass(slots=True)
class SensingState:
    """What indicators read: the device index, when each device was last heard, the latest readings, and
    the open alerts as (device type, rule, org unit, severity) per alert."""

    index: DeviceIndex
    types: dict[str, DeviceTypeSpec]
    last_seen: np.ndarray
    latest: LatestReadings
    open_alerts: Sequence[tuple[str, str, str | None, str]]
    now: float
    owned: np.ndarray | None = None  # per device number, whether it counts here (a shard's own devices)


class LatestReadings:
    """The newest value of each numeric measurement per device: float32 arrays per type (NaN: none yet)."""

    def __init__(self, types: dict[str, DeviceTypeSpec]) -> None:
        self.columns: dict[str, dict[str, np.ndarray]] = {
            slug: {name: np.full(0, np.nan, np.float32) for name in spec.numeric()}
            for slug, spec in types.items()
        }

    def update(self, batch: ReadingBatch) -> None:
        """Take a batch in per-device time order (IngestPipeline's `in_order`): a device's last row wins."""
        columns = self.columns[batch.device_type]
        if not len(batch):
            return
        top = int(batch.local.max()) + 1
        for name, values in batch.values.items():
            column = columns[name]
            if column.size < top:
                grown = np.full(max(top, int(column.size * 1.5)), np.nan, np.float32)
                grown[: column.size] = column
                columns[name] = column = grown
            present = ~np.isnan(values)
            column[batch.local[present]] = values[present]  # NumPy assigns in order: the last duplicate wins

    @property
    def nbytes(self) -> int:
        return sum(c.nbytes for cols in self.columns.values() for c in cols.values())

    def snapshot(self) -> LatestReadings:
        """A copy that later updates leave alone (vital signs are computed from one, off the ingest lock)."""
        copy = LatestReadings.__new__(LatestReadings)
        copy.columns = {slug: {name: c.copy() for name, c in cols.items()} for slug, cols in self.columns.items()}
        return copy


IndicatorKind = Callable[[IndicatorSpec, SensingState, np.ndarray], tuple[np.ndarray, np.ndarray]]
indicator_kinds: Registry[IndicatorKind] = Registry("indicator kind")


def _per_org(index: DeviceIndex, nums: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    orgs = index.org[nums]
    keep = orgs >= 0
    size = max(1, len(index.org_units))
    return np.bincount(orgs[keep], weights=None if weights is None else weights[keep], minlength=size)[:size]


def _type_nums(state: SensingState, device_type: str | None) -> np.ndarray:
    index = state.index
    of_type = index.type_code >= 0 if device_type is None else index.type_code == index.type_codes[device_type]
    if state.owned is not None:
        owned = np.zeros(of_type.size, bool)
        known = min(of_type.size, state.owned.size)
        owned[:known] = state.owned[:known]
        of_type &= owned
    return np.flatnonzero(of_type)


@indicator_kinds.register("online_rate")
def _online_rate(
    spec: IndicatorSpec, state: SensingState, _unit_of: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(online devices, registered devices) per org position: the ratio is taken after the roll-up."""
    nums = _type_nums(state, spec.device_type)
    limits = np.array([state.types[s].offline_after for s in state.index.type_slugs], np.float64)
    seen = state.last_seen[nums] if nums.size else np.empty(0)
    with np.errstate(invalid="ignore"):
        online = (state.now - seen) <= limits[state.index.type_code[nums]]
    return _per_org(state.index, nums, online.astype(np.float64)), _per_org(state.index, nums).astype(
        np.float64
    )


@indicator_kinds.register("alerts_open")
def _alerts_open(
    spec: IndicatorSpec, state: SensingState, unit_of: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    counts = np.zeros(max(1, len(state.index.org_units)))
    for device_type, _rule, org_unit, severity in state.open_alerts:
        if (spec.severity is None or severity == spec.severity) and (spec.device_type in (None, device_type)):
            position = state.index.org_codes.get(org_unit or "", -1)
            if position >= 0:
                counts[position] += 1
    return counts, np.ones_like(counts) * np.nan  # a count: no denominator


@indicator_kinds.register("share_in_alert")
def _share_in_alert(
    spec: IndicatorSpec, state: SensingState, _unit_of: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    counts = np.zeros(max(1, len(state.index.org_units)))
    for device_type, rule, org_unit, _severity in state.open_alerts:
        if device_type == spec.device_type and rule == spec.rule_id:
            position = state.index.org_codes.get(org_unit or "", -1)
            if position >= 0:
                counts[position] += 1
    return counts, _per_org(state.index, _type_nums(state, spec.device_type)).astype(np.float64)


@indicator_kinds.register("mean_latest")
def _mean_latest(
    spec: IndicatorSpec, state: SensingState, _unit_of: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(sum, count) of the latest readings per org position; the mean is taken after the roll-up."""
    assert spec.device_type is not None and spec.measurement is not None
    nums = _type_nums(state, spec.device_type)
    column = state.latest.columns[spec.device_type][spec.measurement]
    local = state.index.local[nums]
    values = np.full(nums.size, np.nan)
    inside = local < column.size
    values[inside] = column[local[inside]]
    present = ~np.isnan(values)
    return (
        _per_org(state.index, nums[present], values[present]),
        _per_org(state.index, nums[present]).astype(np.float64),
    )


# HJ 633-2012 breakpoints of PM2.5 (24 h, µg/m³) against the individual air quality index.
_PM25_BREAKS = np.array([0, 35, 75, 115, 150, 250, 350, 500], np.float64)
_IAQI_BREAKS = np.array([0, 50, 100, 150, 200, 300, 400, 500], np.float64)
TRANSFORMS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "aqi_pm25": lambda pm25: np.interp(pm25, _PM25_BREAKS, _IAQI_BREAKS),
}


def check_indicators(specs: Sequence[IndicatorSpec], types: dict[str, DeviceTypeSpec]) -> None:
    seen: set[str] = set()
    for spec in specs:
        where = f"indicators.{spec.slug}"
        if spec.slug in seen:
            raise InvalidInput.at(where, "defined twice")
        seen.add(spec.slug)
        if spec.kind not in indicator_kinds:
            raise InvalidInput.at(f"{where}.kind", f"unknown indicator kind {spec.kind!r}")
        if spec.device_type is not None and spec.device_type not in types:
            raise InvalidInput.at(f"{where}.device_type", f"unknown device type {spec.device_type!r}")
        if spec.kind in ("share_in_alert", "mean_latest") and spec.device_type is None:
            raise InvalidInput.at(f"{where}.device_type", f"{spec.kind} needs a device type")
        if spec.kind == "mean_latest" and (
            spec.measurement is None or spec.measurement not in types[spec.device_type].numeric()
        ):  # type: ignore[index]
            raise InvalidInput.at(
                f"{where}.measurement", "a numeric measurement of the device type is required"
            )
        if spec.transform is not None and spec.transform not in TRANSFORMS:
            raise InvalidInput.at(f"{where}.transform", f"one of {', '.join(TRANSFORMS)}")


class VitalSigns:
    """Computes every indicator for every org unit (each unit counts the devices of its whole subtree)."""

    def __init__(
        self,
        specs: Sequence[IndicatorSpec],
        types: dict[str, DeviceTypeSpec],
        tree: OrgTree,
        org_units: Sequence[str],
    ) -> None:
        check_indicators(specs, types)
        self.specs = list(specs)
        self.tree = tree
        self.org_units = list(org_units)
        position = {code: i for i, code in enumerate(self.org_units)}
        # Roll-up as (descendant position, ancestor position) pairs, self included: a unit's total is the sum
        # over its subtree.
        pairs = [
            (position[code], position[a])
            for code in self.org_units
            if code in tree.units
            for a in (code, *tree.ancestors(code))
            if a in position
        ]
        self._from = np.array([p[0] for p in pairs], np.int64)
        self._to = np.array([p[1] for p in pairs], np.int64)

    def _roll_up(self, values: np.ndarray) -> np.ndarray:
        out = np.zeros(len(self.org_units))
        np.add.at(out, self._to, values[self._from])
        return out

    def parts(self, state: SensingState) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Indicator slug → (numerator, denominator) per org position, summed over each unit's subtree; the
        denominator is all NaN for counts. Parts of disjoint sets of devices add up, which is how shards
        that each see some of a district's devices make the district's value together."""
        out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        unit_of = np.arange(len(self.org_units))
        for spec in self.specs:
            numerator, denominator = indicator_kinds.get(spec.kind)(spec, state, unit_of)
            numerator = self._roll_up(numerator)
            denominator = denominator if np.isnan(denominator).all() else self._roll_up(denominator)
            out[spec.slug] = (numerator, denominator)
        return out

    def values(self, parts: dict[str, tuple[np.ndarray, np.ndarray]]) -> dict[str, np.ndarray]:
        """Indicator slug → value per position (NaN where the unit has nothing to measure)."""
        out: dict[str, np.ndarray] = {}
        for spec in self.specs:
            numerator, denominator = parts[spec.slug]
            out[spec.slug] = indicator_value(spec, numerator, denominator)
        return out

    def compute(self, state: SensingState) -> dict[str, np.ndarray]:
        """Indicator slug → value per org position (NaN where the unit has nothing to measure)."""
        return self.values(self.parts(state))


def indicator_value(spec: IndicatorSpec, numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """An indicator's value from its parts: a count as it is, a ratio or mean once divided, then transformed."""
    if np.isnan(denominator).all():
        value = numerator
    else:
        with np.errstate(invalid="ignore", divide="ignore"):
            value = np.where(denominator > 0, numerator / denominator, np.nan)
    if spec.transform is not None:
        value = TRANSFORMS[spec.transform](value)
    return value


def vital_rows(values: dict[str, np.ndarray], org_units: Sequence[str], at: datetime) -> list[dict[str, Any]]:
    """One moment of every indicator as rows (units with nothing to measure are skipped)."""
    rows: list[dict[str, Any]] = []
    for slug, column in values.items():
        present = np.flatnonzero(~np.isnan(column))
        rows += [
            {"org_unit": org_units[position], "indicator": slug, "ts": at, "value": value}
            for position, value in zip(present.tolist(), column[present].tolist(), strict=True)
        ]
    return rows


def store_rows(session: Session, rows: list[dict[str, Any]]) -> int:
    if rows:
        # Core executemany on the table: the ORM's bulk path costs several times as much per row.
        session.execute(VitalSignRow.__table__.insert(), rows)
    return len(rows)


def store(session: Session, *, values: dict[str, np.ndarray], org_units: Sequence[str], at: datetime) -> int:
    """Write one moment of every indicator (units with nothing to measure are skipped)."""
    return store_rows(session, vital_rows(values, org_units, at))


def part_rows(
    parts: dict[str, tuple[np.ndarray, np.ndarray]],
    positions: Sequence[int],
    org_units: Sequence[str],
    at: datetime,
    *,
    shard: int,
    shards: int,
) -> list[dict[str, Any]]:
    """One shard's parts of every indicator at the given org positions (every one, even an empty part:
    a moment is complete when all shards have written theirs)."""
    rows: list[dict[str, Any]] = []
    for slug, (numerator, denominator) in parts.items():
        for position in positions:
            below = float(denominator[position])
            rows.append({"org_unit": org_units[position], "indicator": slug, "ts": at, "shard": shard,
                         "shards": shards, "numerator": float(numerator[position]),
                         "denominator": None if np.isnan(below) else below})
    return rows


def store_parts(session: Session, rows: list[dict[str, Any]]) -> None:
    """Write a shard's parts; a part written before for the same moment is replaced (a worker that
    restarted within the interval)."""
    if not rows:
        return
    table = VitalSignPartRow.__table__
    moment = rows[0]["ts"]
    session.execute(sa.delete(table).where(table.c.ts == moment, table.c.shard == rows[0]["shard"]))
    session.execute(table.insert(), rows)


def merge_parts(session: Session, specs: Sequence[IndicatorSpec], *, stale_before: datetime) -> int:
    """Write the value of every (unit, indicator, moment) whose parts are all in, drop those parts, and
    drop incomplete parts older than `stale_before` (a shard that stopped will not complete them).
    Returns the values written. Two workers may merge the same moment: the second one's insert does
    nothing."""
    table = VitalSignPartRow.__table__
    by_slug = {spec.slug: spec for spec in specs}
    groups = session.execute(
        sa.select(table.c.org_unit, table.c.indicator, table.c.ts, table.c.shards,
                  sa.func.count().label("parts"), sa.func.sum(table.c.numerator).label("numerator"),
                  sa.func.sum(table.c.denominator).label("denominator"))
        .group_by(table.c.org_unit, table.c.indicator, table.c.ts, table.c.shards)
    ).all()
    complete = [g for g in groups if g.parts == g.shards and g.indicator in by_slug]
    values = []
    for group in complete:
        value = indicator_value(
            by_slug[group.indicator],
            np.array([group.numerator], np.float64),
            np.array([np.nan if group.denominator is None else group.denominator], np.float64),
        )[0]
        if not np.isnan(value):
            values.append({"org_unit": group.org_unit, "indicator": group.indicator, "ts": group.ts,
                           "value": float(value)})
    if values:
        insert = (sqlite_insert if session.get_bind().dialect.name == "sqlite" else postgresql_insert)(
            VitalSignRow.__table__)
        session.execute(insert.on_conflict_do_nothing(), values)
    for group in complete:
        session.execute(sa.delete(table).where(table.c.org_unit == group.org_unit,
                                               table.c.indicator == group.indicator, table.c.ts == group.ts))
    session.execute(sa.delete(table).where(table.c.ts < stale_before))
    return len(values)


def latest(session: Session, *, org_unit: str) -> list[VitalSignRow]:
    """The newest value of each indicator of one org unit."""
    newest = (
        sa.select(VitalSignRow.indicator, sa.func.max(VitalSignRow.ts).label("ts"))
        .where(VitalSignRow.org_unit == org_unit)
        .group_by(VitalSignRow.indicator)
        .subquery()
    )
    stmt = (
        sa.select(VitalSignRow)
        .join(newest, sa.and_(VitalSignRow.indicator == newest.c.indicator, VitalSignRow.ts == newest.c.ts))
        .where(VitalSignRow.org_unit == org_unit)
        .order_by(VitalSignRow.indicator)
    )
    return list(session.scalars(stmt))


def history(
    session: Session,
    *,
    org_unit: str,
    indicator: str,
    since: datetime | None,
    until: datetime | None,
    limit: int,
) -> list[VitalSignRow]:
    stmt = sa.select(VitalSignRow).where(
        VitalSignRow.org_unit == org_unit, VitalSignRow.indicator == indicator
    )
    if since is not None:
        stmt = stmt.where(VitalSignRow.ts >= since)
    if until is not None:
        stmt = stmt.where(VitalSignRow.ts < until)
    return list(session.scalars(stmt.order_by(VitalSignRow.ts.desc()).limit(limit)))
