"""Scenario plug-ins: the RESCO maps with their time windows, folder scenarios, and clear errors for an
unknown name or a network/route file SUMO cannot load."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from citybrain.core.errors import InvalidInput, NotFound
from citybrain.traffic.runtime import Twin
from citybrain.traffic.scenarios import (
    RESCO_MAPS,
    FolderScenario,
    register_folder,
    resolve,
    scenario,
    scenarios,
)

WINDOWS = {"grid4x4": (0, 3600), "arterial4x4": (0, 3600), "cologne1": (25200, 28800),
           "cologne3": (25200, 28800), "cologne8": (25200, 28800), "ingolstadt1": (57600, 61200),
           "ingolstadt7": (57600, 61200), "ingolstadt21": (57600, 61200)}


def test_the_eight_resco_maps_are_registered_with_their_windows_and_settings() -> None:
    assert set(RESCO_MAPS) == set(WINDOWS) and set(WINDOWS) <= set(scenarios)
    for name, (begin, end) in WINDOWS.items():
        manifest = scenario(name)
        assert (manifest.begin, manifest.end) == (begin, end)
        assert manifest.net_file.is_file() and all(p.is_file() for p in manifest.route_files)
        expected = (5.0, 2.0) if name == "arterial4x4" else (10.0, 3.0)
        assert (manifest.decision_interval, manifest.yellow) == expected
        assert manifest.source and manifest.licence


def test_demand_counts_vehicles_scheduled_inside_the_window() -> None:
    # cologne3's route file also holds 1,638 trips departing before 07:00, which SUMO never loads
    assert scenario("cologne3").demand() == 2856
    assert scenario("grid4x4").demand() == 1473


def test_unknown_scenario_is_not_found_and_lists_the_known_ones() -> None:
    with pytest.raises(NotFound) as caught:
        scenario("atlantis")
    assert "atlantis" in caught.value.detail and "cologne8" in caught.value.detail


def test_every_resco_light_has_at_least_two_green_phases_and_no_yellow_among_them() -> None:
    for name in WINDOWS:
        with Twin().start(scenario(name).model_copy(update={"end": scenario(name).begin + 1})) as twin:
            assert twin.tls, name
            for tls in twin.tls.values():
                greens = tls.green_phases
                assert len(greens) >= 2, (name, tls.id)
                for index in greens:
                    phase = tls.phases[index]
                    assert "y" not in phase.state.lower() and phase.movements, (name, tls.id, index)
                # some programs hold phases that are only yellow/red: never a controller's choice
                assert all(not p.green for p in tls.phases if set(p.state) <= set("yYrs"))


def _copy_cologne1(folder: Path, name: str = "mini") -> Path:
    source = scenario("cologne1")
    shutil.copy(source.net_file, folder / f"{name}.net.xml")
    shutil.copy(source.route_files[0], folder / f"{name}.rou.xml")
    (folder / f"{name}.sumocfg").write_text(
        f'<configuration><input><net-file value="{name}.net.xml"/><route-files value="{name}.rou.xml"/>'
        '</input><time><begin value="25200"/><end value="25500"/></time></configuration>', encoding="utf-8")
    return folder


def test_a_folder_with_a_sumocfg_registers_as_a_scenario(tmp_path: Path) -> None:
    folder = _copy_cologne1(tmp_path)
    (folder / "mini.manifest.json").write_text(json.dumps({
        "title": "Mini", "source": "copied from cologne1", "licence": "test data", "yellow": 4,
        "vehicles": 12, "junctions": {"a": 1}}), encoding="utf-8")
    found = register_folder(folder)
    try:
        manifest = scenario("mini")
        assert manifest is found.manifest and (manifest.begin, manifest.end) == (25200, 25500)
        assert manifest.yellow == 4 and manifest.title == "Mini" and manifest.decision_interval == 10
        assert register_folder(folder) is found  # registering the same folder again is harmless
        assert resolve(folder) == manifest and resolve(str(folder)) == manifest
        with Twin().start(manifest, program="external") as twin:
            twin.advance(twin.time + 30)
    finally:
        scenarios._items.pop("mini", None)  # noqa: SLF001 - keep the registry as other tests expect it


def test_a_folder_without_one_sumocfg_is_invalid(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput) as caught:
        FolderScenario(tmp_path)
    assert caught.value.errors[0].field == "directory"


def test_a_broken_network_file_names_the_file_and_carries_sumos_message(tmp_path: Path) -> None:
    folder = _copy_cologne1(tmp_path)
    net = folder / "mini.net.xml"
    net.write_text(net.read_text(encoding="utf-8")[:5000], encoding="utf-8")  # cut mid-element
    with pytest.raises(InvalidInput) as caught:
        Twin().start(FolderScenario(folder).manifest)
    error = caught.value.errors[0]
    assert error.field == "net_file" and "mini.net.xml" in error.reason and "Error" in error.reason
    with Twin().start(scenario("cologne1").model_copy(update={"end": 25210})) as twin:  # the process is fine
        twin.advance(twin.end_time)


def test_a_route_on_an_unknown_edge_is_an_error_at_start(tmp_path: Path) -> None:
    folder = _copy_cologne1(tmp_path)
    (folder / "mini.rou.xml").write_text(
        '<routes><vehicle id="v" depart="25300"><route edges="no_such_edge"/></vehicle></routes>',
        encoding="utf-8")
    with pytest.raises(InvalidInput) as caught:
        Twin().start(FolderScenario(folder).manifest)
    error = caught.value.errors[0]
    assert error.field == "route_files" and "no_such_edge" in error.reason and "mini.rou.xml" in error.reason


def test_a_missing_file_is_invalid_before_sumo_starts(tmp_path: Path) -> None:
    manifest = scenario("cologne1").model_copy(update={"net_file": tmp_path / "gone.net.xml"})
    with pytest.raises(InvalidInput) as caught:
        Twin().start(manifest)
    assert caught.value.errors[0].field == "net_file"
