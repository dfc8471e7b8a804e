"""The synthetic fleet: deterministic, realistic, every shipped device type, real villages, CSV round trip."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from citybrain.core.errors import InvalidInput
from citybrain.hub.org.divisions import read_divisions
from citybrain.scenarios import scenario_device_types
from citybrain.sim.fleet import (
    DEFAULT_MIX,
    DISTRICT_BOUNDS,
    FLEET_COLUMNS,
    build_fleet,
    read_fleet,
    type_prefix,
    write_fleet,
)


def test_the_same_seed_gives_the_same_fleet_and_another_seed_another() -> None:
    first, again = build_fleet(3000, seed=7), build_fleet(3000, seed=7)
    assert first.equals(again)
    other = build_fleet(3000, seed=8)
    assert not first.equals(other)
    assert not np.array_equal(first.org_unit, other.org_unit)


def test_every_shipped_device_type_appears_with_the_default_mix() -> None:
    fleet = build_fleet(500, seed=1)
    assert set(fleet.types()) == {spec.slug for spec in scenario_device_types()}
    assert set(DEFAULT_MIX) == {spec.slug for spec in scenario_device_types()}
    tiny = build_fleet(len(DEFAULT_MIX), seed=1)  # even one device per type is kept
    assert sorted(tiny.counts().values()) == [1] * len(DEFAULT_MIX)


def test_the_type_mix_is_a_citys() -> None:
    fleet = build_fleet(20_000, seed=2)
    counts = fleet.counts()
    total = sum(DEFAULT_MIX.values())
    for name, share in DEFAULT_MIX.items():
        assert counts[name] == pytest.approx(20_000 * share / total, abs=2)
    assert counts["streetlight"] > counts["smoke_detector"] > counts["waste_bin"] > counts["air_quality"]
    assert counts["air_quality"] < 0.05 * 20_000 and counts["water_level"] < 0.05 * 20_000


def test_a_custom_mix_is_normalised_and_checked() -> None:
    fleet = build_fleet(1000, seed=0, mix={"air_quality": 3, "water_level": 1})
    assert fleet.counts() == {"air_quality": 750, "water_level": 250}
    with pytest.raises(InvalidInput, match="unknown device type"):
        build_fleet(10, mix={"toaster": 1.0})
    with pytest.raises(InvalidInput, match="≥ 0"):
        build_fleet(10, mix={"air_quality": -1.0})
    with pytest.raises(InvalidInput, match="at least one device"):
        build_fleet(0)


def test_ids_are_prefixed_per_type_unique_and_numbered_from_one() -> None:
    fleet = build_fleet(5000, seed=3)
    assert len(set(fleet.device_id.tolist())) == 5000
    for device_id, device_type in zip(fleet.device_id.tolist(), fleet.device_type.tolist(), strict=True):
        assert re.fullmatch(rf"{type_prefix(device_type)}-\d{{7}}", device_id)
    aq = sorted(int(i.split("-")[1]) for i in fleet.device_id[fleet.device_type == "air_quality"].tolist())
    assert aq == list(range(1, len(aq) + 1))
    assert type_prefix("noise_meter") == "NM"


def test_devices_sit_in_real_villages_grouped_inside_the_district() -> None:
    fleet = build_fleet(20_000, seed=4)
    villages = {d.code for d in read_divisions("pudong") if d.kind == "village"}
    assert set(fleet.org_unit.tolist()) <= villages
    assert len(set(fleet.org_unit.tolist())) > 0.9 * len(villages)  # spread over (almost) all of them
    min_lon, min_lat, max_lon, max_lat = DISTRICT_BOUNDS["310115"]
    assert ((fleet.lon >= min_lon) & (fleet.lon <= max_lon)).all()
    assert ((fleet.lat >= min_lat) & (fleet.lat <= max_lat)).all()
    # Devices of one village are close together (synthetic point + ≈ 400 m scatter); the district is 50 km
    # wide.
    spreads = [np.ptp(fleet.lon[fleet.org_unit == v]) for v in np.unique(fleet.org_unit)[:50]]
    assert float(np.median(spreads)) < 0.03
    # Rows are ordered by village: a slice of the fleet is a neighbourhood.
    assert (np.diff(np.searchsorted(np.unique(fleet.org_unit), fleet.org_unit)) >= 0).all()


def test_village_points_do_not_depend_on_the_seed() -> None:
    a, b = build_fleet(4000, seed=1), build_fleet(4000, seed=2)
    shared = sorted(set(a.org_unit.tolist()) & set(b.org_unit.tolist()))[:20]
    for village in shared:
        assert abs(np.median(a.lon[a.org_unit == village]) - np.median(b.lon[b.org_unit == village])) < 0.01


def test_other_packaged_districts_work() -> None:
    fleet = build_fleet(300, district="xihu", seed=0)
    assert all(unit.startswith("330106") for unit in fleet.org_unit.tolist())


def test_the_csv_round_trips(tmp_path: Path) -> None:
    fleet = build_fleet(2500, seed=5)
    path = write_fleet(fleet, tmp_path / "fleet.csv")
    lines = path.read_text().splitlines()
    assert lines[0] == ",".join(FLEET_COLUMNS) and len(lines) == 2501
    assert re.fullmatch(r"[A-Z]{2}-\d{7},[a-z_]+,\d{12},1\d\d\.\d{1,6},\d\d\.\d{1,6}", lines[1])
    assert read_fleet(path).equals(fleet)


@pytest.mark.parametrize("body, reason", [
    ("device_id,device_type,org_unit,lon,lat\nAQ-1,air_quality,310115004001,121.5\n",
     ":2: expected 5 columns"),
    ("device_id,device_type,org_unit,lon,lat\nAQ 1,air_quality,310115004001,121.5,31.2\n", ":2: device_id"),
    (("device_id,device_type,org_unit,lon,lat\nAQ-1,air_quality,310115004001,121.5,31.2\n"
      "AQ-1,air_quality,310115004001,121.5,31.2\n"), ":3: device AQ-1 appears twice"),
    ("device_id,device_type,org_unit,lon,lat\nAQ-1,air_quality,310115004001,east,31.2\n", ":2: lon and lat"),
    ("device_id,device_type,org_unit,lon,lat\nAQ-1,air_quality,310115004001,121.5,91\n", ":2: (121.5, 91.0)"),
    ("id,type\nAQ-1,air_quality\n", ":1: expected the header"),
    ("device_id,device_type,org_unit,lon,lat\n", "the fleet has no devices"),
])
def test_a_bad_csv_is_rejected_naming_the_line(tmp_path: Path, body: str, reason: str) -> None:
    path = tmp_path / "fleet.csv"
    path.write_text(body)
    with pytest.raises(InvalidInput) as caught:
        read_fleet(path)
    assert reason in caught.value.detail
    with pytest.raises(InvalidInput, match="file not found"):
        read_fleet(tmp_path / "missing.csv")
