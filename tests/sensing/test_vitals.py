"""Vital signs per org unit: computed from the sensing state, rolled up the org tree, stored as series."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pytest
import sqlalchemy as sa

from citybrain.core.errors import InvalidInput
from citybrain.hub.org.tree import OrgTree, Unit
from citybrain.platform import Platform
from citybrain.scenarios import scenario_indicators
from citybrain.sensing.batch import ReadingBatch
from citybrain.sensing.devices.index import DeviceIndex
from citybrain.sensing.runtime import device_types
from citybrain.sensing.shards import org_shards
from citybrain.sensing.vitals import service as vitals
from citybrain.sensing.vitals.models import VitalSignPartRow
from citybrain.sensing.vitals.spec import BUILTIN_INDICATORS, IndicatorSpec

TYPES = device_types()
TREE = OrgTree.build(
    [
        Unit("D", "district", "district", 1, None),
        Unit("T1", "town 1", "town", 2, "D"),
        Unit("T2", "town 2", "town", 2, "D"),
        Unit("V1", "village 1", "village", 3, "T1"),
        Unit("V2", "village 2", "village", 3, "T1"),
        Unit("V3", "village 3", "village", 3, "T2"),
    ]
)
NOW = 1_764_590_400.0


def _state(open_alerts: list[tuple[str, str, str | None, str]] = ()) -> vitals.SensingState:
    index = DeviceIndex(list(TYPES), list(TREE.units))
    # Four air stations (V1, V1, V2, V3) and two water gauges (V1, V3).
    index.add(
        np.arange(1, 5),
        [f"AQ-{i}" for i in range(4)],
        ["air_quality"] * 4,
        np.arange(4),
        ["V1", "V1", "V2", "V3"],
    )
    index.add(np.array([5, 6]), ["WL-0", "WL-1"], ["water_level"] * 2, np.arange(2), ["V1", "V3"])
    last_seen = np.full(index.type_code.size, np.nan)
    last_seen[[1, 2, 3, 5]] = NOW - 10  # heard lately; AQ-3 (num 4) and WL-1 (num 6) silent
    last_seen[4] = NOW - 3600
    latest = vitals.LatestReadings(TYPES)
    latest.update(
        ReadingBatch(
            "air_quality",
            np.array([1, 2, 3]),
            np.array([0, 1, 2]),
            np.full(3, NOW),
            np.full(3, NOW),
            np.full(3, -1),
            {"pm25": np.array([40.0, 80.0, 200.0]), "pm10": np.array([np.nan, 1, 2])},
        )
    )
    return vitals.SensingState(index, TYPES, last_seen, latest, list(open_alerts), NOW)


def _engine() -> vitals.VitalSigns:
    return vitals.VitalSigns([*BUILTIN_INDICATORS, *scenario_indicators()], TYPES, TREE, list(TREE.units))


def test_indicators_per_village_roll_up_to_towns_and_the_district() -> None:
    engine = _engine()
    values = engine.compute(
        _state(
            [
                ("water_level", "level-warning", "V1", "major"),
                ("air_quality", "pm25-heavy", "V2", "major"),
                ("air_quality", "offline", "V3", "minor"),
            ]
        )
    )
    at = {code: i for i, code in enumerate(TREE.units)}
    online = values["device_online_rate"]
    assert online[at["V1"]] == 1.0 and online[at["V3"]] == 0.0
    assert online[at["T1"]] == 1.0 and online[at["D"]] == pytest.approx(4 / 6)
    assert values["alerts_open_major"][at["D"]] == 2 and values["alerts_open_major"][at["T1"]] == 2
    assert values["alerts_open_minor"][at["T2"]] == 1 and values["alerts_open_critical"][at["D"]] == 0
    assert values["water_level_warning_rate"][at["V1"]] == 1.0
    assert values["water_level_warning_rate"][at["D"]] == 0.5
    assert np.isnan(values["water_level_warning_rate"][at["V2"]])  # no gauge there: nothing to measure
    assert values["pm25_mean"][at["V1"]] == 60.0  # mean of the latest readings of its stations
    assert values["pm25_mean"][at["D"]] == pytest.approx((40 + 80 + 200) / 3)
    assert np.isnan(values["pm25_mean"][at["V3"]])  # its station has not reported
    # HJ 633: 60 µg/m³ lies between 35 (IAQI 50) and 75 (IAQI 100).
    assert values["air_quality_index"][at["V1"]] == pytest.approx(50 + (60 - 35) * 50 / 40)
    assert values["air_quality_index"][at["V2"]] == pytest.approx(200 + (200 - 150) * 100 / 100)


def test_latest_readings_keep_the_newest_value_and_ignore_absent_ones() -> None:
    latest = vitals.LatestReadings(TYPES)
    latest.update(
        ReadingBatch(
            "air_quality",
            np.array([1, 1, 2]),
            np.array([0, 0, 5]),
            np.array([1.0, 2.0, 1.0]),
            np.zeros(3),
            np.full(3, -1),
            {"pm25": np.array([1.0, 2.0, 3.0]), "pm10": np.array([7.0, np.nan, np.nan])},
        )
    )
    column = latest.columns["air_quality"]
    assert column["pm25"][0] == 2.0 and column["pm25"][5] == 3.0 and column["pm10"][0] == 7.0
    assert np.isnan(column["pm25"][1:5]).all()


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        (IndicatorSpec(slug="x1", title="x", title_zh="x", kind="mean_latest"), "indicators.x1.device_type"),
        (
            IndicatorSpec(
                slug="x2",
                title="x",
                title_zh="x",
                kind="mean_latest",
                device_type="air_quality",
                measurement="smell",
            ),
            "indicators.x2.measurement",
        ),
        (
            IndicatorSpec(slug="x3", title="x", title_zh="x", kind="online_rate", device_type="nope"),
            "indicators.x3.device_type",
        ),
        (
            IndicatorSpec(slug="x4", title="x", title_zh="x", kind="online_rate", transform="log"),
            "indicators.x4.transform",
        ),
    ],
)
def test_bad_indicators_are_refused_with_the_field(spec: IndicatorSpec, field: str) -> None:
    with pytest.raises(InvalidInput) as error:
        vitals.check_indicators([spec], TYPES)
    assert error.value.errors[0].field == field


def test_vital_signs_are_stored_as_time_series(platform: Platform) -> None:
    engine = _engine()
    units = list(TREE.units)
    t0 = platform.clock.now()
    with platform.transaction() as session:
        first = vitals.store(session, values=engine.compute(_state()), org_units=units, at=t0)
        vitals.store(
            session,
            values=engine.compute(_state([("water_level", "level-warning", "V1", "major")])),
            org_units=units,
            at=t0 + timedelta(minutes=1),
        )
    assert first > 0
    with platform.session() as session:
        newest = {row.indicator: row.value for row in vitals.latest(session, org_unit="V1")}
        series = vitals.history(
            session, org_unit="V1", indicator="water_level_warning_rate", since=t0, until=None, limit=10
        )
    assert newest["water_level_warning_rate"] == 1.0 and newest["device_online_rate"] == 1.0
    assert [row.value for row in series] == [1.0, 0.0]  # newest first


@pytest.mark.parametrize("shards", [2, 3])
def test_shards_parts_merge_into_the_values_one_process_computes(platform: Platform, shards: int) -> None:
    """Each shard counts its own devices (whole towns) and the alerts on its towns; the district's value
    is written once the last shard's part of the moment is in, and equals what one process computes."""
    engine = _engine()
    units = list(TREE.units)
    alerts = [("water_level", "level-warning", "V1", "major"), ("air_quality", "pm25-heavy", "V3", "major")]
    whole_state = _state(alerts)
    expected = engine.compute(whole_state)
    owner, whole = org_shards(TREE, units, shards)
    device_owner = owner[whole_state.index.org[: whole_state.index.org.size]]
    moment = platform.clock.now()
    written = []
    for shard in range(shards):
        state = _state([a for a in alerts if owner[units.index(a[2])] == shard])
        state.owned = device_owner == shard
        parts = engine.parts(state)
        shared = np.flatnonzero(~whole).tolist()
        assert [units[p] for p in shared] == ["D"]
        with platform.transaction() as session:
            vitals.store_parts(session, vitals.part_rows(parts, shared, units, moment, shard=shard,
                                                         shards=shards))
        with platform.transaction() as session:
            written.append(vitals.merge_parts(session, engine.specs, stale_before=moment - timedelta(hours=1)))
    assert written[:-1] == [0] * (shards - 1) and written[-1] > 0  # the last part completes the moment
    with platform.session() as session:
        district = {row.indicator: row.value for row in vitals.latest(session, org_unit="D")}
        leftover = session.execute(sa.select(sa.func.count()).select_from(VitalSignPartRow)).scalar_one()
    assert leftover == 0
    at = units.index("D")
    for slug, column in expected.items():
        if np.isnan(column[at]):
            assert slug not in district
        else:
            assert district[slug] == pytest.approx(column[at]), slug
    assert district["device_online_rate"] == pytest.approx(4 / 6) and district["alerts_open_major"] == 2


def test_incomplete_parts_go_stale_and_a_repeated_part_replaces_the_first(platform: Platform) -> None:
    engine = _engine()
    units = list(TREE.units)
    parts = engine.parts(_state())
    moment = platform.clock.now()
    for _ in range(2):  # a worker that restarted within the interval writes its part again
        with platform.transaction() as session:
            vitals.store_parts(session, vitals.part_rows(parts, [0], units, moment, shard=0, shards=2))
    with platform.transaction() as session:
        assert vitals.merge_parts(session, engine.specs, stale_before=moment - timedelta(hours=1)) == 0
    with platform.session() as session:
        count = session.execute(sa.select(sa.func.count()).select_from(VitalSignPartRow)).scalar_one()
    assert count == len(engine.specs)  # one part per indicator, waiting for shard 1
    with platform.transaction() as session:
        vitals.merge_parts(session, engine.specs, stale_before=moment + timedelta(seconds=1))
    with platform.session() as session:
        assert session.execute(sa.select(sa.func.count()).select_from(VitalSignPartRow)).scalar_one() == 0
