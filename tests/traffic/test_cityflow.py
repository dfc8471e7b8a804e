"""CityFlow → SUMO: the Hangzhou 4x4 network and its hour of real traffic convert into a scenario that SUMO
loads and drives, with CityFlow's lanes, movements and signal phases; broken files name the field."""

from __future__ import annotations

import itertools
import json
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import sumo
import sumolib
from typer.testing import CliRunner

from citybrain.cli import app
from citybrain.core.errors import InvalidInput
from citybrain.traffic.cityflow import ConvertedScenario, convert_cityflow

HANGZHOU = Path(__file__).resolve().parents[3] / "shared" / "data" / "traffic" / "hangzhou_4x4"
ROADNET, FLOW = HANGZHOU / "roadnet_4_4.json", HANGZHOU / "anon_4_4_hangzhou_real.json"
SUMO_DIRECTION = {"turn_right": "r", "go_straight": "s", "turn_left": "l"}

runner = CliRunner()


@pytest.fixture(scope="module")
def cityflow() -> tuple[dict, list]:
    """The shared Hangzhou files as JSON (not shipped in the package: their licence is unclear)."""
    if not ROADNET.exists():
        pytest.skip(f"the shared Hangzhou data is not at {HANGZHOU} (../shared is absent)")
    return json.loads(ROADNET.read_text()), json.loads(FLOW.read_text())


@pytest.fixture(scope="module")
def hangzhou(cityflow, tmp_path_factory) -> ConvertedScenario:
    return convert_cityflow(ROADNET, FLOW, tmp_path_factory.mktemp("hangzhou"), "hangzhou_4x4")


@pytest.fixture(scope="module")
def net(hangzhou) -> sumolib.net.Net:
    return sumolib.net.readNet(str(hangzhou.net), withPrograms=True)


def vehicles(routes: Path) -> list[ET.Element]:
    return ET.parse(routes).getroot().findall("vehicle")


def program(tls) -> sumolib.net.TLSProgram:
    """A signal's one program (the converter writes one per intersection)."""
    return next(iter(tls.getPrograms().values()))


def test_every_intersection_road_and_vehicle_is_converted(hangzhou, net, cityflow):
    roadnet, flow = cityflow
    real = [node for node in roadnet["intersections"] if not node["virtual"]]
    counts = (hangzhou.intersections, hangzhou.signalised, hangzhou.roads, hangzhou.vehicles)
    assert counts == (32, 16, 80, 2983)
    assert len(net.getNodes()) == len(roadnet["intersections"])
    assert sorted(tls.getID() for tls in net.getTrafficLights()) == sorted(node["id"] for node in real)
    assert sorted(edge.getID() for edge in net.getEdges()) == sorted(road["id"] for road in roadnet["roads"])
    departs = [float(vehicle.get("depart")) for vehicle in vehicles(hangzhou.routes)]
    assert len(departs) == len(flow) == 2983 and departs == sorted(departs)
    manifest = json.loads(hangzhou.manifest.read_text())
    assert manifest["counts"]["vehicles"] == 2983 and manifest["sumo_version"] == hangzhou.sumo_version
    assert (manifest["begin"], manifest["end"], manifest["yellow"]) == (0, 3600, 5)
    assert manifest["sources"]["roadnet"]["path"] == str(ROADNET.resolve())


def test_lanes_and_movements_follow_cityflow(net, cityflow):
    """CityFlow's lane 0 is the innermost (left-turn) lane, SUMO's the kerbside one: every lane link lands
    on the mirrored lane, and turns the way CityFlow says."""
    roadnet, _ = cityflow
    lanes = {road["id"]: len(road["lanes"]) for road in roadnet["roads"]}
    expected, converted = set(), set()
    for node in roadnet["intersections"]:
        for link in node["roadLinks"]:
            start, end = link["startRoad"], link["endRoad"]
            for lane_link in link["laneLinks"]:
                expected.add((start, lanes[start] - 1 - lane_link["startLaneIndex"], end,
                              lanes[end] - 1 - lane_link["endLaneIndex"], SUMO_DIRECTION[link["type"]]))
    for edge in net.getEdges():
        for connections in edge.getOutgoing().values():
            for c in connections:
                converted.add((edge.getID(), c.getFromLane().getIndex(), c.getTo().getID(),
                               c.getToLane().getIndex(), c.getDirection()))
    assert converted == expected


def test_signal_programs_are_cityflows_phases_with_ambers_between(net, cityflow):
    roadnet, _ = cityflow
    nodes = {node["id"]: node for node in roadnet["intersections"]}
    for tls in net.getTrafficLights():
        node = nodes[tls.getID()]
        links = node["roadLinks"]
        rights = {k for k, link in enumerate(links) if link["type"] == "turn_right"}
        for in_lane, out_lane, index in tls.getConnections():  # SUMO link k is CityFlow road link k
            assert (in_lane.getEdge().getID(), out_lane.getEdge().getID()) == (
                links[index]["startRoad"], links[index]["endRoad"])
        phases = program(tls).getPhases()
        greens = [p for p in phases if "y" not in p.state]
        cityflow_greens = node["trafficLight"]["lightphases"][1:]  # phase 0 is the transition
        assert [p.duration for p in greens] == [p["time"] for p in cityflow_greens]
        for phase, cityflow_phase in zip(greens, cityflow_greens, strict=True):
            green = {k for k, letter in enumerate(phase.state) if letter in "Gg"}
            assert green == set(cityflow_phase["availableRoadLinks"]) | rights
        for phase in phases:
            assert all(phase.state[k] in "Gg" for k in rights), "right turns are never stopped"
            if "y" in phase.state:
                assert phase.duration == node["trafficLight"]["lightphases"][0]["time"]


def test_a_straight_movement_has_the_right_of_way_over_a_right_turn_into_the_same_road(net):
    phases = program(net.getTLS("intersection_1_1")).getPhases()
    # CityFlow phase 1 at intersection_1_1: west-east and east-west straight (links 0, 7) and all rights;
    # the rights from the south (3) and north (10) merge into those straights' roads and yield.
    assert phases[0].state == "GrGgrrGGrrgr"


def test_every_route_is_drivable_in_the_sumo_network(hangzhou, net):
    for vehicle in vehicles(hangzhou.routes):
        edges = vehicle.find("route").get("edges").split()
        for here, there in itertools.pairwise(edges):
            assert net.getEdge(there) in net.getEdge(here).getOutgoing(), (vehicle.get("id"), here, there)


def test_sumo_loads_the_scenario_and_drives_it(hangzhou, tmp_path):
    statistics = tmp_path / "statistics.xml"
    result = subprocess.run(
        [f"{sumo.SUMO_HOME}/bin/sumo", "-c", str(hangzhou.config), "--end", "600", "--no-step-log",
         "--duration-log.disable", "--statistic-output", str(statistics)],
        capture_output=True, text=True, timeout=120, check=False, env={"SUMO_HOME": sumo.SUMO_HOME})
    assert result.returncode == 0 and "Error" not in result.stderr, result.stderr
    counts = ET.parse(statistics).getroot().find("vehicles")
    due = sum(float(vehicle.get("depart")) < 600 for vehicle in vehicles(hangzhou.routes))
    assert int(counts.get("inserted")) >= 0.95 * due > 300


def test_a_program_without_a_transition_phase_gets_short_ambers(cityflow, tmp_path):
    roadnet, _ = cityflow
    for node in roadnet["intersections"]:
        node["trafficLight"]["lightphases"] = node["trafficLight"]["lightphases"][1:5]
    (tmp_path / "roadnet.json").write_text(json.dumps(roadnet))
    scenario = convert_cityflow(tmp_path / "roadnet.json", FLOW, tmp_path / "out", "four_phases")
    converted = sumolib.net.readNet(str(scenario.net), withPrograms=True)
    assert [p.duration for p in program(converted.getTLS("intersection_2_2")).getPhases()] == [30, 3] * 4


def broken(tmp_path: Path, cityflow, change) -> tuple[Path, Path]:
    """The Hangzhou files with one change made to copies of them."""
    roadnet, flow = json.loads(json.dumps(cityflow[0])), json.loads(json.dumps(cityflow[1]))
    change(roadnet, flow)
    (tmp_path / "roadnet.json").write_text(json.dumps(roadnet))
    (tmp_path / "flow.json").write_text(json.dumps(flow))
    return tmp_path / "roadnet.json", tmp_path / "flow.json"


def unknown_intersection(roadnet, flow):
    roadnet["roads"][3]["startIntersection"] = "intersection_9_9"


def disconnected_route(roadnet, flow):
    flow[0]["route"] = ["road_0_1_0", "road_4_4_2"]


def missing_lanes(roadnet, flow):
    del roadnet["roads"][0]["lanes"]


def lane_out_of_range(roadnet, flow):
    roadnet["intersections"][5]["roadLinks"][0]["laneLinks"][0]["startLaneIndex"] = 3


@pytest.mark.parametrize(("change", "field", "reason"), [
    (unknown_intersection, "roadnet.roads[3].startIntersection", "unknown intersection 'intersection_9_9'"),
    (disconnected_route, "flow[0].route[1]", "not reachable from 'road_0_1_0'"),
    (missing_lanes, "roadnet.roads[0].lanes", "Field required"),
    (lane_out_of_range, "roadnet.intersections[5].roadLinks[0].laneLinks[0].startLaneIndex", "no lane 3"),
])
def test_broken_inputs_name_the_field(tmp_path, cityflow, change, field, reason):
    roadnet, flow = broken(tmp_path, cityflow, change)
    with pytest.raises(InvalidInput) as raised:
        convert_cityflow(roadnet, flow, tmp_path / "out", "broken")
    assert raised.value.errors[0].field == field and reason in raised.value.errors[0].reason
    assert raised.value.detail.startswith(field)
    assert not (tmp_path / "out").exists(), "nothing is written for a broken input"


def test_unreadable_files_name_the_file(tmp_path):
    (tmp_path / "roadnet.json").write_text('{"intersections": [')
    with pytest.raises(InvalidInput, match=r"^roadnet: roadnet.json is not JSON \(line 1"):
        convert_cityflow(tmp_path / "roadnet.json", FLOW, tmp_path / "out", "broken")
    with pytest.raises(InvalidInput, match=r"^flow: file not found"):
        convert_cityflow(ROADNET, tmp_path / "absent.json", tmp_path / "out", "broken")


def test_cli_converts_into_the_home_and_prints_the_counts(cityflow, tmp_path):
    result = runner.invoke(app, ["traffic", "import-cityflow", str(ROADNET), str(FLOW),
                                 "--home", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "2,983" in result.output and "signalised" in result.output
    assert (tmp_path / "traffic" / "scenarios" / "hangzhou_4x4" / "hangzhou_4x4.sumocfg").exists()


def test_cli_refuses_a_broken_file_in_one_line(cityflow, tmp_path):
    roadnet, flow = broken(tmp_path, cityflow, disconnected_route)
    result = runner.invoke(app, ["traffic", "import-cityflow", str(roadnet), str(flow), "--name", "x",
                                 "--out", str(tmp_path / "out")])
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "flow[0].route[1]" in lines[0], result.output


def test_cli_explains_itself():
    result = runner.invoke(app, ["traffic", "import-cityflow", "--help"])
    assert result.exit_code == 0 and "CityFlow" in result.output
