"""CityFlow road networks and flows as SUMO scenarios.

CityFlow (the simulator of the CoLight/PressLight line of traffic-signal research) describes a network as
JSON: intersections with a point, roads from one intersection to another with their lanes, and at each
intersection its `roadLinks` (a movement from one road to another, made of lane-to-lane `laneLinks`) and a
traffic light whose `lightphases` list the road links that have green. Its flow file lists vehicles with
their parameters, a route of road ids and when they start.

`convert_cityflow` writes the same network as SUMO plain XML (nodes, edges, connections, signal programs),
builds the `.net.xml` with netconvert, and writes the routes, a `.sumocfg` and a `.manifest.json` that
names the sources, the counts and which SUMO phase is which CityFlow phase.

Mapping decisions, each because of how the two simulators differ:

* Lanes: CityFlow counts lanes from the inside (lane 0 is next to the road's centre line, the left-turn
  lane), SUMO from the kerb (lane 0 is the rightmost). SUMO lane = lanes - 1 - CityFlow lane.
* Signals: SUMO link index k is CityFlow road link k of the intersection (all lane links of a road link
  share its index), so a state string reads like CityFlow's `availableRoadLinks`.
* CityFlow's phase 0 in the usual data sets is the short transition phase (only right turns green); CityFlow
  has no amber. It becomes a SUMO amber of the same length between two greens, for the movements that lose
  their green; the other phases are the greens with their own times.
* Right turns are green in every phase, as CityFlow data sets give them, and yield where they meet a
  green movement.
* A green movement that crosses or merges with another green movement yields ('g') when the other has the
  right of way: straight before left before right (as at a signalised intersection in China, art. 51 of
  the road traffic safety law's implementing regulations). The conflicts come from the order of the roads around the intersection, so
  they do not depend on laneLink shapes, which some files leave out.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
import subprocess
import tempfile
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn, TypeVar

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError
from pydantic.alias_generators import to_camel

from citybrain.core.errors import CityBrainError, ErrorCollector, InvalidInput, field_path

log = logging.getLogger(__name__)

DEFAULT_AMBER = 3.0  # seconds, when a file has no transition phase to take the length from
MAX_VEHICLES = 2_000_000  # a flow with a tiny interval must not fill the disk with vehicles
# SUMO ids are written into space-separated lists (routes) and XML attributes: these would break them.
_BAD_ID = re.compile(r"[\s|\\;'\"&<>]")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_RIGHT_OF_WAY = {"go_straight": 0, "turn_left": 1, "turn_right": 2}  # lower goes first
_UNKNOWN_MOVEMENT_RANK = 1
_LANE_SIDE = 0.01  # radians: far less than the angle between two arms of an intersection


# --- the CityFlow file formats -------------------------------------------------------------------------


class _CityFlowModel(BaseModel):
    # CityFlow's keys are camelCase; the fields here are snake_case and errors name the keys as in the file.
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, frozen=True, extra="ignore")


class Point(_CityFlowModel):
    """A position in metres (CityFlow and SUMO both have y pointing north)."""

    x: float
    y: float


class Lane(_CityFlowModel):
    """One lane of a road."""

    width: float = Field(gt=0)
    max_speed: float = Field(gt=0)


class Road(_CityFlowModel):
    """A one-way road between two intersections; lane 0 is the innermost."""

    id: str = Field(min_length=1)
    points: list[Point] = Field(min_length=2)
    lanes: list[Lane] = Field(min_length=1)
    start_intersection: str
    end_intersection: str


class LaneLink(_CityFlowModel):
    """A lane-to-lane part of a road link (its points only draw it)."""

    start_lane_index: int = Field(ge=0)
    end_lane_index: int = Field(ge=0)


class RoadLink(_CityFlowModel):
    """A movement through an intersection from one road to another."""

    type: str
    start_road: str
    end_road: str
    lane_links: list[LaneLink] = Field(min_length=1)


class LightPhase(_CityFlowModel):
    """The road links (indices into the intersection's `roadLinks`) that have green, and for how long."""

    time: float = Field(gt=0)
    available_road_links: list[int]


class TrafficLight(_CityFlowModel):
    """An intersection's fixed-time program, in the order CityFlow runs it."""

    lightphases: list[LightPhase] = Field(default_factory=list)


class Intersection(_CityFlowModel):
    """A node of the network; `virtual` ones are where vehicles enter and leave at the boundary."""

    id: str = Field(min_length=1)
    point: Point
    road_links: list[RoadLink] = Field(default_factory=list)
    traffic_light: TrafficLight | None = None
    virtual: bool = False


class Roadnet(_CityFlowModel):
    """A CityFlow road network file."""

    intersections: list[Intersection] = Field(min_length=1)
    roads: list[Road] = Field(min_length=1)


class VehicleParams(_CityFlowModel):
    """A CityFlow vehicle: size in metres, accelerations in m/s², speed in m/s, headway in seconds."""

    length: float = Field(gt=0)
    width: float = Field(2.0, gt=0)
    max_pos_acc: float = Field(gt=0)
    max_neg_acc: float = Field(gt=0)
    min_gap: float = Field(ge=0)
    max_speed: float = Field(gt=0)
    headway_time: float | None = Field(None, gt=0)


class FlowEntry(_CityFlowModel):
    """Vehicles that drive one route, one every `interval` seconds from `startTime` to `endTime`."""

    vehicle: VehicleParams
    route: list[str] = Field(min_length=1)
    start_time: float = Field(ge=0)
    end_time: float
    interval: float = Field(1.0, gt=0)

    def count(self) -> int:
        """How many vehicles it makes (none when endTime is before startTime)."""
        # The epsilon keeps a last start time that is a whole number of intervals away from being lost
        # to floating-point division (0.3 / 0.1 = 2.9999…).
        return max(0, math.floor((self.end_time - self.start_time) / self.interval + 1e-9) + 1)

    def departures(self) -> list[float]:
        """When its vehicles depart: startTime, then every interval up to and including endTime."""
        return [self.start_time + k * self.interval for k in range(self.count())]


_FLOW = TypeAdapter(list[FlowEntry])


# --- the result ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ConvertedScenario:
    """What `convert_cityflow` wrote, and how much of it."""

    name: str
    net: Path
    routes: Path
    config: Path
    manifest: Path
    intersections: int  # every CityFlow intersection, the virtual boundary ones too (each is a SUMO node)
    signalised: int  # intersections with a traffic light program (SUMO tlLogics)
    roads: int  # CityFlow roads = SUMO edges
    connections: int  # SUMO lane-to-lane connections (CityFlow lane links)
    vehicles: int
    phases: int  # SUMO phases over all programs, greens and ambers
    sumo_version: str


_COUNTS = ("intersections", "signalised", "roads", "connections", "vehicles", "phases")


# --- reading and checking --------------------------------------------------------------------------------


def _read_json(path: Path, what: str) -> Any:
    if not path.is_file():
        raise InvalidInput.at(what, f"file not found: {path}")
    try:
        return json.loads(path.read_bytes())
    except UnicodeDecodeError as exc:
        raise InvalidInput.at(what, f"{path.name} is not UTF-8 text (byte {exc.start})") from None
    except json.JSONDecodeError as exc:
        raise InvalidInput.at(what, f"{path.name} is not JSON (line {exc.lineno} column {exc.colno}: "
                                    f"{exc.msg})") from None


_Parsed = TypeVar("_Parsed")


def _parse(adapter: TypeAdapter[_Parsed], data: Any, what: str) -> _Parsed:
    try:
        return adapter.validate_python(data)
    except ValidationError as exc:
        problems = ErrorCollector()
        for error in exc.errors():
            problems.add(field_path((what, *error["loc"])), error["msg"])
        _raise(problems)


def _raise(problems: ErrorCollector) -> NoReturn:
    first = problems.errors[0]
    more = len(problems.errors) - 1
    # The detail starts with the first field, so a one-line error names it even when there are many.
    raise InvalidInput(f"{first.field}: {first.reason}" + (f" (and {more} more problems)" if more else ""),
                       errors=problems.errors)


def _check_id(problems: ErrorCollector, where: str, value: str) -> None:
    if _BAD_ID.search(value):
        problems.add(where, f"{value!r} has a space or one of |\\;'\"&<> (SUMO ids cannot)")


def _check_roadnet(net: Roadnet) -> None:
    problems = ErrorCollector()
    intersections: dict[str, int] = {}
    for i, intersection in enumerate(net.intersections):
        _check_id(problems, f"roadnet.intersections[{i}].id", intersection.id)
        if intersections.setdefault(intersection.id, i) != i:
            problems.add(f"roadnet.intersections[{i}].id", f"duplicate id {intersection.id!r}")
    roads: dict[str, Road] = {}
    for r, road in enumerate(net.roads):
        _check_road(problems, f"roadnet.roads[{r}]", road, roads, intersections)
    for i, intersection in enumerate(net.intersections):
        where = f"roadnet.intersections[{i}]"
        for k, link in enumerate(intersection.road_links):
            _check_road_link(problems, f"{where}.roadLinks[{k}]", link, intersection.id, roads)
        for p, phase in enumerate(_light_phases(intersection)):
            for a, index in enumerate(phase.available_road_links):
                if not 0 <= index < len(intersection.road_links):
                    problems.add(f"{where}.trafficLight.lightphases[{p}].availableRoadLinks[{a}]",
                                 f"no road link {index} (it has {len(intersection.road_links)})")
    if problems.errors:
        _raise(problems)


def _check_road(problems: ErrorCollector, where: str, road: Road, roads: dict[str, Road],
                intersections: dict[str, int]) -> None:
    _check_id(problems, f"{where}.id", road.id)
    if roads.setdefault(road.id, road) is not road:
        problems.add(f"{where}.id", f"duplicate id {road.id!r}")
    for key, value in (("startIntersection", road.start_intersection),
                       ("endIntersection", road.end_intersection)):
        if value not in intersections:
            problems.add(f"{where}.{key}", f"unknown intersection {value!r}")
    if road.start_intersection == road.end_intersection:
        problems.add(f"{where}.endIntersection", "the road starts and ends at the same intersection")


def _light_phases(node: Intersection) -> list[LightPhase]:
    return node.traffic_light.lightphases if node.traffic_light is not None else []


def _check_road_link(problems: ErrorCollector, where: str, link: RoadLink, intersection: str,
                     roads: dict[str, Road]) -> None:
    start, end = roads.get(link.start_road), roads.get(link.end_road)
    if start is None:
        problems.add(f"{where}.startRoad", f"unknown road {link.start_road!r}")
    elif start.end_intersection != intersection:
        problems.add(f"{where}.startRoad", f"road {link.start_road!r} does not end at {intersection!r}")
    if end is None:
        problems.add(f"{where}.endRoad", f"unknown road {link.end_road!r}")
    elif end.start_intersection != intersection:
        problems.add(f"{where}.endRoad", f"road {link.end_road!r} does not start at {intersection!r}")
    for n, lane_link in enumerate(link.lane_links):
        for key, index, road in (("startLaneIndex", lane_link.start_lane_index, start),
                                 ("endLaneIndex", lane_link.end_lane_index, end)):
            if road is not None and index >= len(road.lanes):
                problems.add(f"{where}.laneLinks[{n}].{key}",
                             f"road {road.id!r} has {len(road.lanes)} lanes, no lane {index}")


def _check_flow(flow: list[FlowEntry], net: Roadnet) -> None:
    problems = ErrorCollector()
    roads = {road.id for road in net.roads}
    turns = {(link.start_road, link.end_road) for node in net.intersections for link in node.road_links}
    vehicles = 0
    for f, entry in enumerate(flow):
        where = f"flow[{f}]"
        if entry.end_time < entry.start_time:
            problems.add(f"{where}.endTime", f"{entry.end_time:g} is before startTime {entry.start_time:g}"
                         + (" (open-ended flows are not supported: give the last start time)"
                            if entry.end_time < 0 else ""))
            continue
        vehicles += entry.count()
        for s, road in enumerate(entry.route):
            if road not in roads:
                problems.add(f"{where}.route[{s}]", f"unknown road {road!r}")
            elif s and entry.route[s - 1] in roads and (entry.route[s - 1], road) not in turns:
                problems.add(f"{where}.route[{s}]",
                             f"road {road!r} is not reachable from {entry.route[s - 1]!r} (no road link)")
    if vehicles > MAX_VEHICLES:
        problems.add("flow", f"{vehicles} vehicles; at most {MAX_VEHICLES} are converted")
    if problems.errors:
        _raise(problems)


# --- signal programs ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Phase:
    duration: float
    state: str
    cityflow_phase: int | None  # None for an amber


def _port_angle(road: Road, arriving: bool) -> float:
    """Angle, around the intersection, of where a road's lanes meet it.

    The angle is the road's direction away from the intersection, turned a little to the side its lanes
    lie on: traffic keeps right, so from the centre looking out along an arm, the arriving lanes are on
    the left (counter-clockwise) and the departing ones on the right. That orders every way in and out
    around the intersection, even where an arm's two roads share their points."""
    points = road.points[::-1] if arriving else road.points
    near = points[0]
    far = next((p for p in points[1:] if (p.x, p.y) != (near.x, near.y)), points[1])  # skip repeated points
    arm = math.atan2(far.y - near.y, far.x - near.x)
    turned = arm + (_LANE_SIDE if arriving else -_LANE_SIDE)
    return math.atan2(math.sin(turned), math.cos(turned))


def _conflicts(node: Intersection, roads: dict[str, Road]) -> set[tuple[int, int]]:
    """Pairs of road links (both orders) that merge into one road or whose paths cross.

    Each movement is a chord between its way in and its way out on a circle around the intersection; two
    chords cross exactly when their ends alternate around the circle."""
    links = node.road_links
    ways_in = {link.start_road: _port_angle(roads[link.start_road], arriving=True) for link in links}
    ways_out = {link.end_road: _port_angle(roads[link.end_road], arriving=False) for link in links}
    pairs = set()
    for a, first in enumerate(links):
        for b in range(a + 1, len(links)):
            second = links[b]
            if first.start_road == second.start_road:
                continue  # they part ways
            merge = first.end_road == second.end_road
            if merge or _chords_cross(ways_in[first.start_road], ways_out[first.end_road],
                                      ways_in[second.start_road], ways_out[second.end_road]):
                pairs.update(((a, b), (b, a)))
    return pairs


def _chords_cross(a1: float, a2: float, b1: float, b2: float) -> bool:
    low, high = sorted((a1, a2))
    return (low < b1 < high) != (low < b2 < high)


def _signal_program(node: Intersection, roads: dict[str, Road]) -> list[_Phase]:
    """SUMO phases for an intersection's CityFlow light phases: each green with its time, an amber between
    two greens for the movements that lose their green."""
    links = node.road_links
    rights = {k for k, link in enumerate(links) if link.type == "turn_right"}
    greens = [(p, phase.time, set(phase.available_road_links) | rights)
              for p, phase in enumerate(_light_phases(node))]
    amber = DEFAULT_AMBER
    if len(greens) > 1 and all(greens[0][2] <= green for _, _, green in greens[1:]):
        amber = greens[0][1]  # the transition phase: nothing is green in it that is not green anyway
        greens = greens[1:]
    conflicts = _conflicts(node, roads)
    rank = [_RIGHT_OF_WAY.get(link.type, _UNKNOWN_MOVEMENT_RANK) for link in links]
    program: list[_Phase] = []
    for n, (p, time, green) in enumerate(greens):
        # A green movement yields to any crossing or merging green movement of the same or a higher rank.
        yielding = {k for k in green for other in green if (k, other) in conflicts and rank[other] <= rank[k]}
        if any((k, other) in conflicts and rank[other] == rank[k] for k in green for other in green):
            log.warning("%s: CityFlow phase %d gives green to crossing movements of equal rank; they yield "
                        "to each other as SUMO's junction logic says", node.id, p)
        letters = ["r" if k not in green else "g" if k in yielding else "G" for k in range(len(links))]
        program.append(_Phase(time, "".join(letters), p))
        losing = green - greens[(n + 1) % len(greens)][2]
        if len(greens) > 1 and losing:
            program.append(_Phase(amber, "".join("y" if k in losing else letter
                                                 for k, letter in enumerate(letters)), None))
    return program


# --- writing -------------------------------------------------------------------------------------------


def _number(value: float) -> str:
    return f"{value:.3f}".rstrip("0").rstrip(".")


def _write_xml(root: ET.Element, path: Path) -> None:
    ET.indent(root)
    ET.ElementTree(root).write(path, encoding="UTF-8", xml_declaration=True)


def _sumo_lane(road: Road, cityflow_lane: int) -> int:
    return len(road.lanes) - 1 - cityflow_lane


def _lane_connections(link: RoadLink, roads: dict[str, Road]) -> Iterator[tuple[int, int]]:
    """(SUMO from lane, SUMO to lane) of a road link, each once."""
    start, end = roads[link.start_road], roads[link.end_road]
    seen = set()
    for lane_link in link.lane_links:
        pair = (_sumo_lane(start, lane_link.start_lane_index), _sumo_lane(end, lane_link.end_lane_index))
        if pair not in seen:
            seen.add(pair)
            yield pair


def _is_signalised(node: Intersection) -> bool:
    # Virtual intersections are where traffic enters and leaves; CityFlow gives them a dummy program.
    return not node.virtual and bool(node.road_links) and bool(_light_phases(node))


@dataclass(frozen=True, slots=True)
class _PlainNetwork:
    connections: int
    programs: dict[str, list[_Phase]]
    u_turns: bool


def _write_plain(net: Roadnet, folder: Path) -> _PlainNetwork:
    roads = {road.id: road for road in net.roads}
    nodes, edges = ET.Element("nodes"), ET.Element("edges")
    connections, tl_logics = ET.Element("connections"), ET.Element("tlLogics")
    programs: dict[str, list[_Phase]] = {}
    for node in net.intersections:
        signalised = _is_signalised(node)
        attributes = {"id": node.id, "x": _number(node.point.x), "y": _number(node.point.y),
                      "type": "traffic_light" if signalised else "priority"}
        if signalised:
            attributes["tl"] = node.id
        ET.SubElement(nodes, "node", attributes)
        if signalised:
            programs[node.id] = _signal_program(node, roads)
            logic = ET.SubElement(tl_logics, "tlLogic", id=node.id, type="static", programID="0", offset="0")
            for phase in programs[node.id]:
                ET.SubElement(logic, "phase", duration=_number(phase.duration), state=phase.state)
    count, u_turns = 0, False
    for node in net.intersections:
        signalised = _is_signalised(node)
        for index, link in enumerate(node.road_links):
            u_turns |= roads[link.end_road].end_intersection == roads[link.start_road].start_intersection
            for from_lane, to_lane in _lane_connections(link, roads):
                lanes = {"from": link.start_road, "to": link.end_road, "fromLane": str(from_lane),
                         "toLane": str(to_lane)}
                ET.SubElement(connections, "connection", lanes)
                if signalised:
                    ET.SubElement(tl_logics, "connection", lanes, tl=node.id, linkIndex=str(index))
                count += 1
    for road in net.roads:
        edge = ET.SubElement(edges, "edge", id=road.id, **{"from": road.start_intersection},
                             to=road.end_intersection, numLanes=str(len(road.lanes)),
                             speed=_number(max(lane.max_speed for lane in road.lanes)),
                             shape=" ".join(f"{_number(p.x)},{_number(p.y)}" for p in road.points))
        for cityflow_lane, lane in enumerate(road.lanes):
            ET.SubElement(edge, "lane", index=str(_sumo_lane(road, cityflow_lane)),
                          speed=_number(lane.max_speed), width=_number(lane.width))
    for element, suffix in ((nodes, "nod"), (edges, "edg"), (connections, "con"), (tl_logics, "tll")):
        _write_xml(element, folder / f"plain.{suffix}.xml")
    return _PlainNetwork(count, programs, u_turns)


def _sumo_tool(name: str) -> str:
    try:
        import sumo  # the eclipse-sumo wheel: its binaries live under SUMO_HOME/bin
    except ImportError:
        raise CityBrainError("SUMO is not installed (pip install eclipse-sumo)") from None
    return str(Path(sumo.SUMO_HOME) / "bin" / name)


def _sumo_environment() -> dict[str, str]:
    import sumo

    return {**os.environ, "SUMO_HOME": sumo.SUMO_HOME}


def _sumo_version() -> str:
    result = subprocess.run([_sumo_tool("netconvert"), "--version"], capture_output=True, text=True,
                            check=False, env=_sumo_environment())
    match = re.search(r"netconvert (?:version )?v?(\S+)", result.stdout, flags=re.IGNORECASE)
    return match.group(1) if match else "unknown"


def _netconvert(folder: Path, net_file: Path, *, u_turns: bool) -> None:
    command = [
        _sumo_tool("netconvert"),
        "--node-files", str(folder / "plain.nod.xml"),
        "--edge-files", str(folder / "plain.edg.xml"),
        "--connection-files", str(folder / "plain.con.xml"),
        "--tllogic-files", str(folder / "plain.tll.xml"),
        "--output-file", str(net_file),
        # Everything comes from the CityFlow file: netconvert must not guess lights, merge junctions,
        # drop geometry nodes, move the origin (positions stay CityFlow's) or add turnarounds.
        "--tls.guess", "false",
        "--junctions.join", "false",
        "--geometry.remove", "false",
        "--offset.disable-normalization", "true",
        "--no-internal-links", "false",
        "--no-turnarounds", "false" if u_turns else "true",
    ]
    result = subprocess.run(command, capture_output=True, text=True, check=False, env=_sumo_environment())
    warnings = [line for line in result.stderr.splitlines() if line.startswith("Warning")]
    for line in warnings[:10]:
        log.warning("netconvert: %s", line)
    if result.returncode != 0:
        errors = [line for line in result.stderr.splitlines() if line.startswith("Error")] or \
            result.stderr.strip().splitlines()[-3:]
        raise CityBrainError(f"netconvert could not build the network: {'; '.join(errors) or 'no message'}")


def _write_routes(flow: list[FlowEntry], path: Path) -> int:
    types: dict[VehicleParams, str] = {}
    for entry in flow:
        types.setdefault(entry.vehicle, "cityflow" if not types else f"cityflow{len(types)}")
    departures = sorted(((depart, f, k) for f, entry in enumerate(flow)
                         for k, depart in enumerate(entry.departures())), key=lambda item: item[0])
    root = ET.Element("routes")
    for params, type_id in types.items():
        attributes = {"id": type_id, "length": _number(params.length), "width": _number(params.width),
                      "accel": _number(params.max_pos_acc), "decel": _number(params.max_neg_acc),
                      "maxSpeed": _number(params.max_speed), "minGap": _number(params.min_gap)}
        if params.headway_time is not None:
            attributes["tau"] = _number(params.headway_time)  # CityFlow's headway is Krauss's desired gap
        ET.SubElement(root, "vType", attributes)
    for depart, f, k in departures:
        entry = flow[f]
        # CityFlow's own vehicle names (flow_<entry>_<k>), so results can be compared vehicle by vehicle.
        vehicle = ET.SubElement(root, "vehicle", id=f"flow_{f}_{k}", type=types[entry.vehicle],
                                depart=_number(depart), departLane="best", departSpeed="max")
        ET.SubElement(vehicle, "route", edges=" ".join(entry.route))
    _write_xml(root, path)
    return len(departures)


def _write_config(path: Path, net: Path, routes: Path, end: int) -> None:
    root = ET.Element("configuration")
    inputs = ET.SubElement(root, "input")
    ET.SubElement(inputs, "net-file", value=net.name)  # relative to the config: the folder can move
    ET.SubElement(inputs, "route-files", value=routes.name)
    time = ET.SubElement(root, "time")
    ET.SubElement(time, "begin", value="0")
    ET.SubElement(time, "end", value=str(end))
    _write_xml(root, path)


def _source(path: Path) -> dict[str, str]:
    return {"path": str(path.resolve()), "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}


def _signals_manifest(programs: dict[str, list[_Phase]]) -> dict[str, Any]:
    return {tls: {"phases": [{"duration": phase.duration, "state": phase.state,
                              "cityflow_phase": phase.cityflow_phase} for phase in program]}
            for tls, program in programs.items()}


def _simulation_end(flow: list[FlowEntry]) -> int:
    last = max((entry.end_time for entry in flow), default=0.0)
    return max(3600, math.ceil((last + 1) / 3600) * 3600)  # whole hours, enough for the last departure


# --- the converter -------------------------------------------------------------------------------------


def convert_cityflow(roadnet: Path, flow: Path, out_dir: Path, name: str) -> ConvertedScenario:
    """Convert a CityFlow road network and flow into a SUMO scenario in `out_dir`: `NAME.net.xml`,
    `NAME.rou.xml`, `NAME.sumocfg` and `NAME.manifest.json`.

    Raises `InvalidInput` naming the field (`roadnet.roads[3].startIntersection`, `flow[12].route[2]`) for
    a missing or broken file, unknown ids, or a route whose consecutive roads have no road link between
    them; `CityBrainError` when SUMO is missing or netconvert refuses the network."""
    if not _NAME.fullmatch(name):
        raise InvalidInput.at("name", f"{name!r}: use letters, digits, '_', '-' and '.' (a file name)")
    network = _parse(TypeAdapter(Roadnet), _read_json(roadnet, "roadnet"), "roadnet")
    _check_roadnet(network)
    vehicles = _parse(_FLOW, _read_json(flow, "flow"), "flow")
    _check_flow(vehicles, network)

    out_dir.mkdir(parents=True, exist_ok=True)
    net_file, routes_file = out_dir / f"{name}.net.xml", out_dir / f"{name}.rou.xml"
    config_file, manifest_file = out_dir / f"{name}.sumocfg", out_dir / f"{name}.manifest.json"
    with tempfile.TemporaryDirectory(prefix="cityflow-plain-") as folder:
        plain = _write_plain(network, Path(folder))
        _netconvert(Path(folder), net_file, u_turns=plain.u_turns)
    vehicle_count = _write_routes(vehicles, routes_file)
    end = _simulation_end(vehicles)
    _write_config(config_file, net_file, routes_file, end)
    scenario = ConvertedScenario(
        name=name, net=net_file, routes=routes_file, config=config_file, manifest=manifest_file,
        intersections=len(network.intersections), signalised=len(plain.programs), roads=len(network.roads),
        connections=plain.connections, vehicles=vehicle_count,
        phases=sum(len(program) for program in plain.programs.values()), sumo_version=_sumo_version())
    ambers = [phase.duration for program in plain.programs.values() for phase in program
              if phase.cityflow_phase is None]
    manifest = {
        "name": name,
        "source": f"CityFlow road network {roadnet.name} and flow {flow.name}",
        "format": "cityflow",
        "sources": {"roadnet": _source(roadnet), "flow": _source(flow)},
        "files": {"net": net_file.name, "routes": routes_file.name, "config": config_file.name},
        "begin": 0,
        "end": end,
        "yellow": max(ambers, default=DEFAULT_AMBER),  # a twin switching phases uses the file's amber too
        "sumo_version": scenario.sumo_version,
        "counts": {key: getattr(scenario, key) for key in _COUNTS},
        "signals": _signals_manifest(plain.programs),
    }
    manifest_file.write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    log.info("converted %s: %d intersections (%d signalised), %d roads, %d vehicles", name,
             scenario.intersections, scenario.signalised, scenario.roads, scenario.vehicles)
    return scenario


def scenario_counts(scenario: ConvertedScenario) -> Iterable[tuple[str, int]]:
    """(what, how many) of a converted scenario, in the order a summary shows them."""
    return ((key, getattr(scenario, key)) for key in _COUNTS)
