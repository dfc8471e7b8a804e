"""The traffic twin: one SUMO simulation driven through libsumo (TraCI over a socket as the fallback).

This is the only module that imports SUMO, and it does so when a twin starts, never at import time.
libsumo runs one simulation per process, so evaluations run their episodes in worker processes
(`citybrain.traffic.evaluate`); a `Twin` object refuses to start while another one runs in its process.

Signal control. A twin runs every traffic light in one of three ways (`program`):
- "static": the network's own programs, untouched;
- "actuated": SUMO's actuated control, generated from the network's static programs (same phases; green
  phases get minDur/maxDur, SUMO places the detectors);
- "external": a controller chooses phases through `set_phase`. The twin takes the lights over at start
  (each shows the green phase its program starts in) and owns the transitions: a change of green goes
  through a yellow built from the two states (links green before and not green after show 'y' for
  `yellow` seconds), the current green is held until it has lasted `min_green` seconds, and with
  `max_green` set a green that lasted that long is ended by the next green phase of the program.
  Only the green phases of a program are legal targets; anything else is an InvalidInput and changes
  nothing.

Per-vehicle metrics come from SUMO's tripinfo output written to a temporary file, with unfinished and
undeparted vehicles included (measured: +0.05-0.15 s on a one-hour cologne8/grid4x4 episode of 0.7-1.5 s),
so every vehicle scheduled in the episode is accounted for, including those never inserted.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import tempfile
import xml.etree.ElementTree as ET
from bisect import bisect_right
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import ModuleType
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from citybrain.core.errors import Conflict, InvalidInput
from citybrain.traffic.scenarios import ScenarioManifest, check_files

log = logging.getLogger(__name__)

SignalProgram = Literal["static", "actuated", "external"]
Backend = Literal["auto", "libsumo", "traci"]
GREEN = frozenset("Gg")
ACTUATED_PROGRAM_ID = "citybrain-actuated"
# SUMO's netconvert defaults for actuated phases without their own bounds (--tls.min-dur / --tls.max-dur).
ACTUATED_MIN_DUR = 5.0
ACTUATED_MAX_DUR = 50.0
# How far upstream of a stop line the twin follows the lanes feeding it (`TlsDescription.feeders`): some
# approaches are a few metres long (ingolstadt: half the incoming lanes are under 30 m), so their queue
# stands on the lanes before them, which a controller must see to weigh the approach.
APPROACH_REACH = 200.0
# An outgoing lane shorter than this holds a car or two: whether a green into it can flow depends on the
# lanes after it (`TlsDescription.beyond`), which observations then include.
SHORT_EXIT = 20.0
# How far ahead (m) a vehicle standing inside a junction is checked for another in its way: none within
# this distance means it waits on the junction's right of way, not on a queue
BOX_LOOKAHEAD = 30.0


class TwinSettings(BaseModel):
    """How a twin runs a scenario; unset fields come from the scenario manifest."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    decision_interval: float | None = Field(None, gt=0)
    yellow: float | None = Field(None, ge=0)
    min_green: float | None = Field(None, ge=0)
    max_green: float | None = Field(None, gt=0, description="End a green that lasted this long (None: never)")
    begin: float | None = None
    end: float | None = None
    backend: Backend = "auto"
    sumo_args: tuple[str, ...] = Field((), description="Extra SUMO options, appended last")

    def resolved(self, scenario: ScenarioManifest) -> TwinSettings:
        """These settings with every scenario-dependent field filled in."""
        return self.model_copy(update={
            "decision_interval": self.decision_interval or scenario.decision_interval,
            "yellow": scenario.yellow if self.yellow is None else self.yellow,
            "min_green": scenario.min_green if self.min_green is None else self.min_green,
            "begin": scenario.begin if self.begin is None else self.begin,
            "end": scenario.end if self.end is None else self.end,
        })


# -- what controllers see -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Movement:
    """One controlled link: from an incoming lane to an outgoing lane."""

    incoming: str
    outgoing: str


@dataclass(frozen=True, slots=True)
class PhaseSpec:
    """One phase of a traffic light's program, with the movements it gives green (G or g)."""

    index: int
    state: str
    duration: float
    movements: tuple[Movement, ...]

    @property
    def green(self) -> bool:
        """A phase a controller may choose: it gives green to at least one existing link and shows no
        yellow (RESCO's action space; one ingolstadt21 program has a phase green only on unused links)."""
        return bool(self.movements) and "y" not in self.state.lower()


@dataclass(frozen=True, slots=True)
class TlsDescription:
    """A traffic light as controllers know it: its program's phases, its links and lanes."""

    id: str
    program_id: str
    phases: tuple[PhaseSpec, ...]
    # by signal index: every connection that index controls (SUMO may give one index to several: a lane's
    # straight and turning connections, or the connections of two lanes); empty where none
    links: tuple[tuple[Movement, ...], ...]
    incoming: tuple[str, ...]
    outgoing: tuple[str, ...]
    lane_lengths: Mapping[str, float] = field(default_factory=dict)  # incoming, outgoing and feeder lanes, m
    # per incoming lane: the lanes feeding it within APPROACH_REACH, each with the distance from its end
    # to this light's stop line; the walk stops at another light's stop line (that queue is the other's)
    # except where the lane is shorter than SHORT_EXIT (two lights that close work as one crossing)
    feeders: Mapping[str, tuple[tuple[str, float], ...]] = field(default_factory=dict)
    # per outgoing lane shorter than SHORT_EXIT: the lanes it leads to, where a queue that blocks it stands
    beyond: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    # the junction's internal lanes (SUMO's ":" lanes), where a turning vehicle may stand inside the box
    box_lanes: tuple[str, ...] = ()

    @property
    def green_phases(self) -> tuple[int, ...]:
        return tuple(p.index for p in self.phases if p.green)


@dataclass(frozen=True, slots=True)
class LaneState:
    halting: int
    vehicles: int
    occupancy: float  # percent of the lane's length occupied, 0-100
    mean_speed: float  # m/s; the lane's speed limit when empty


@dataclass(frozen=True, slots=True)
class ApproachState:
    """The vehicles heading for one incoming lane's stop line: on the lane and on its feeders."""

    # A feeder lane that feeds several incoming lanes of the same light (vehicles choose their lane on
    # the way in) counts on each with the share 1/k, k the number of those lanes: summed over the lanes a
    # phase serves, its vehicles count once (a queue behind a three-lane stop line is not three queues).
    halting: float
    moving: tuple[float, ...]  # distance to the stop line (m) of each vehicle not halting, ascending
    # vehicles due to depart on the lane's edge or a feeder's that SUMO could not insert yet (they count
    # in the delay), shared evenly among the lanes of their edge
    waiting_to_enter: float = 0.0
    # the lane the first vehicle at the stop line heads for ("" when the lane is empty): while its movement
    # is red nothing behind it moves either, whatever else is green for the lane
    front_heads_for: str = ""
    # the weight of each vehicle in `moving` (1 on the lane itself, 1/k on a feeder shared by k lanes);
    # empty means every weight is 1
    moving_shares: tuple[float, ...] = ()

    def moving_within(self, reach: float) -> float:
        """Moving vehicles (weighted by share) within `reach` metres of the stop line."""
        count = bisect_right(self.moving, reach)
        return float(sum(self.moving_shares[:count])) if self.moving_shares else float(count)


@dataclass(frozen=True, slots=True)
class TlsObservation:
    """One traffic light at one instant. Under external control `phase` is the green shown, or the one
    being switched to while `in_yellow`; `time_in_phase` counts from the start of that green."""

    time: float
    phase: int
    time_in_phase: float
    in_yellow: bool
    incoming: Mapping[str, LaneState]
    outgoing: Mapping[str, LaneState]
    approaches: Mapping[str, ApproachState] = field(default_factory=dict)  # by incoming lane
    beyond: Mapping[str, LaneState] = field(default_factory=dict)  # the lanes after short outgoing ones
    # the longest a vehicle inside the junction has stood with nothing ahead of it (s): it yields to a
    # movement that does not come, and the phase shown is not clearing it
    box_standing: float = 0.0


@dataclass(frozen=True, slots=True)
class TripRecord:
    """One vehicle scheduled in the episode, from SUMO's tripinfo; not-arrived vehicles have `arrival`
    None, never-inserted ones `inserted` False and `depart_delay` = episode end - scheduled departure."""

    id: str
    scheduled: float
    depart_delay: float
    time_loss: float
    duration: float
    waiting_time: float
    route_length: float
    arrival: float | None
    inserted: bool

    @property
    def delay(self) -> float:
        return self.time_loss + self.depart_delay


@dataclass(frozen=True, slots=True)
class NetworkState:
    vehicles: int
    halting: int
    stuck: int
    longest_standstill: float


@dataclass(slots=True)
class TwinStats:
    """What the twin did with the commands it got."""

    switches: int = 0
    held_for_min_green: int = 0
    forced_by_max_green: int = 0


@dataclass(slots=True)
class _Signal:
    """Control state of one externally driven traffic light."""

    description: TlsDescription
    green: int
    green_since: float
    requested: int
    yellow_until: float | None = None
    held: bool = False


# -- backend --------------------------------------------------------------------------------------------------


def load_backend(choice: Backend = "auto") -> tuple[ModuleType, str]:
    """libsumo if importable (and not refused), else traci driving the `sumo` binary of the eclipse-sumo
    wheel."""
    if choice in ("auto", "libsumo"):
        try:
            import libsumo  # noqa: PLC0415 - SUMO is imported only when a twin starts

            return libsumo, "libsumo"
        except ImportError:
            if choice == "libsumo":
                raise
            log.warning("libsumo is not importable; falling back to TraCI over a socket")
    import traci  # noqa: PLC0415

    return traci, "traci"


def sumo_binary() -> str:
    try:
        import sumo  # noqa: PLC0415

        candidate = Path(sumo.SUMO_HOME) / "bin" / "sumo"
        if candidate.exists():
            return str(candidate)
    except ImportError:
        pass
    found = shutil.which("sumo")
    if not found:
        raise InvalidInput.at("backend", "no sumo binary found for TraCI (install eclipse-sumo)")
    return found


class _StderrCapture:
    """Captures what SUMO writes to file descriptor 2 (its error messages bypass Python's sys.stderr)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __enter__(self) -> _StderrCapture:
        sys.stderr.flush()
        self._saved = os.dup(2)
        self._file = open(self.path, "w+b")  # noqa: SIM115 - closed in __exit__
        os.dup2(self._file.fileno(), 2)
        return self

    def __exit__(self, *exc: object) -> None:
        os.dup2(self._saved, 2)
        os.close(self._saved)
        self._file.close()

    def text(self) -> str:
        try:
            raw = self.path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        lines = [line for line in raw.splitlines() if line.strip() and "pyarrow" not in line]
        return " ".join(line.strip() for line in lines)


# -- the twin -------------------------------------------------------------------------------------------------


def yellow_state(old: str, new: str) -> str:
    """The transition from one green state to another: links green in `old` and not in `new` turn 'y';
    every other link keeps its old state (links about to turn green stay red until the yellow ends)."""
    return "".join("y" if o in GREEN and n not in GREEN else o for o, n in zip(old, new, strict=True))


class Twin:
    """One running SUMO simulation of a scenario. Use `start`, then `advance`/`step` and, under external
    control, `observe` and `set_phase`; `finish` closes SUMO and returns every vehicle's trip."""

    _active: Twin | None = None  # libsumo: one simulation per process

    def __init__(self) -> None:
        self.sim: ModuleType | None = None
        self.backend = ""
        self.scenario: ScenarioManifest | None = None
        self.settings = TwinSettings()
        self.program: SignalProgram = "static"
        self.tls: dict[str, TlsDescription] = {}
        self.stats = TwinStats()
        self._signals: dict[str, _Signal] = {}
        self._workdir: Path | None = None
        self._first_edges: dict[str, str] = {}  # vehicle -> first edge of its route, for pending ones
        self._lane_edges: dict[str, str] = {}
        self._edge_lanes: dict[str, int] = {}
        self._fan_out: dict[str, dict[str, int]] = {}

    # lifecycle ------------------------------------------------------------------------------------------------

    def start(self, scenario: ScenarioManifest, *, seed: int = 0, settings: TwinSettings | None = None,
              program: SignalProgram = "static") -> Twin:
        """Start SUMO on the scenario. A missing or broken network, route or additional file is an
        InvalidInput naming the file and carrying SUMO's message."""
        if Twin._active is not None:
            raise Conflict("a twin is already running in this process (libsumo runs one simulation per "
                           "process); finish it or use a worker process")
        if program not in ("static", "actuated", "external"):
            raise InvalidInput.at("program", f"{program!r} is not one of static, actuated, external")
        check_files(scenario)
        self.scenario = scenario
        self.settings = (settings or TwinSettings()).resolved(scenario)
        self.program = program
        self.sim, self.backend = load_backend(self.settings.backend)
        self._workdir = Path(tempfile.mkdtemp(prefix="citybrain-twin-"))
        command = self._command(seed)
        capture = _StderrCapture(self._workdir / "sumo.err")
        Twin._active = self
        try:
            with capture:
                if self.backend == "libsumo":
                    self.sim.start(command)
                else:
                    self.sim.start([sumo_binary(), *command[1:]], stdout=open(os.devnull, "w"))  # noqa: SIM115
        except Exception as error:  # libsumo raises a bare "Process Error"; SUMO's words went to stderr
            Twin._active = None
            message = capture.text() or str(error)
            self._cleanup()
            raise self._start_error(message) from None
        try:
            self.tls = {tls_id: self._describe(tls_id) for tls_id in self.sim.trafficlight.getIDList()}
            self._fan_out = {}
            self._add_lane_geometry()
            if program == "actuated":
                for tls_id in self.tls:
                    self.sim.trafficlight.setProgram(tls_id, ACTUATED_PROGRAM_ID)
            elif program == "external":
                self._take_over()
        except Exception:
            self.close()
            raise
        return self

    def _command(self, seed: int) -> list[str]:
        scenario, settings = self.scenario, self.settings
        assert scenario is not None and self._workdir is not None
        command = ["sumo", "--net-file", str(scenario.net_file)]
        if scenario.route_files:
            command += ["--route-files", ",".join(str(p) for p in scenario.route_files)]
        additional = [str(p) for p in scenario.additional_files]
        if self.program == "actuated":
            additional.append(str(self._write_actuated_programs()))
        if additional:
            command += ["--additional-files", ",".join(additional)]
        command += [
            "--begin", f"{settings.begin:g}", "--end", f"{settings.end:g}", "--seed", str(int(seed)),
            "--time-to-teleport", "-1", "--no-step-log", "--no-warnings", "--duration-log.disable",
            # all routes are read at start: a broken route file fails here with SUMO's message, not mid-run
            "--route-steps", "0",
            "--tripinfo-output", str(self._workdir / "tripinfo.xml"),
            "--tripinfo-output.write-unfinished", "--tripinfo-output.write-undeparted",
            *settings.sumo_args,
        ]
        return command

    def _start_error(self, message: str) -> InvalidInput:
        assert self.scenario is not None
        named = [("net_file", self.scenario.net_file)] + [("route_files", p) for p in self.scenario.route_files] \
            + [("additional_files", p) for p in self.scenario.additional_files]
        for label, path in named:
            if str(path) in message or Path(path).name in message:
                return InvalidInput.at(label, f"SUMO cannot load {path}: {message}")
        lowered = message.lower()
        if self.scenario.route_files and any(word in lowered for word in ("route", "vehicle", "trip", "flow")):
            files = ", ".join(str(p) for p in self.scenario.route_files)
            return InvalidInput.at("route_files", f"SUMO cannot load the routes in {files}: {message}")
        return InvalidInput.at("scenario", f"SUMO cannot start {self.scenario.name}: {message}")

    def _write_actuated_programs(self) -> Path:
        """An additional file with an actuated copy of every static program of the network."""
        assert self.scenario is not None and self._workdir is not None
        root = ET.Element("additional")
        for _, element in ET.iterparse(self.scenario.net_file):
            if element.tag != "tlLogic":
                if element.tag == "edge":
                    element.clear()
                continue
            logic = ET.SubElement(root, "tlLogic", id=element.get("id", ""), programID=ACTUATED_PROGRAM_ID,
                                  type="actuated", offset=element.get("offset", "0"))
            for parameter in element.findall("param"):
                ET.SubElement(logic, "param", parameter.attrib)
            for phase in element.findall("phase"):
                state = phase.get("state", "")
                attributes = {"duration": phase.get("duration", "5"), "state": state}
                green = any(c in GREEN for c in state) and "y" not in state.lower()
                if green:
                    low = float(phase.get("minDur", ACTUATED_MIN_DUR))
                    high = float(phase.get("maxDur", ACTUATED_MAX_DUR))
                    attributes["minDur"] = f"{low:g}"
                    attributes["maxDur"] = f"{max(high, low):g}"
                ET.SubElement(logic, "phase", attributes)
        path = self._workdir / "actuated.add.xml"
        ET.ElementTree(root).write(path, encoding="utf-8", xml_declaration=True)
        return path

    def _describe(self, tls_id: str) -> TlsDescription:
        assert self.sim is not None
        tl = self.sim.trafficlight
        program_id = tl.getProgram(tls_id)
        logics = tl.getAllProgramLogics(tls_id)
        logic = next((item for item in logics if item.programID == program_id), logics[0])
        links: list[tuple[Movement, ...]] = []
        box: list[str] = []
        for link_group in tl.getControlledLinks(tls_id):
            links.append(tuple(dict.fromkeys(Movement(incoming, outgoing) for incoming, outgoing, _ in link_group)))
            box.extend(via for _, _, via in link_group if via)
        # a turn that waits inside the junction waits at the end of its first internal lane or on the next
        box.extend(after[0] for via in list(box) for after in self.sim.lane.getLinks(via)
                   if after[0].startswith(":"))
        phases = []
        for index, phase in enumerate(logic.phases):
            served = dict.fromkeys(movement for i, c in enumerate(phase.state) if c in GREEN and i < len(links)
                                   for movement in links[i])
            phases.append(PhaseSpec(index, phase.state, float(phase.duration), tuple(served)))
        present = [movement for group in links for movement in group]
        return TlsDescription(tls_id, program_id, tuple(phases), tuple(links),
                              tuple(dict.fromkeys(m.incoming for m in present)),
                              tuple(dict.fromkeys(m.outgoing for m in present)),
                              box_lanes=tuple(dict.fromkeys(box)))

    def _add_lane_geometry(self) -> None:
        """Fill in every light's lane lengths and the feeders of its incoming lanes."""
        assert self.sim is not None
        lane, edge, junction = self.sim.lane, self.sim.edge, self.sim.junction
        stop_lines = {incoming for description in self.tls.values() for incoming in description.incoming}
        lengths: dict[str, float] = {}

        def length(lane_id: str) -> float:
            if lane_id not in lengths:
                lengths[lane_id] = float(lane.getLength(lane_id))
            return lengths[lane_id]

        def predecessors(lane_id: str) -> list[str]:
            found = []
            for upstream_edge in junction.getIncomingEdges(edge.getFromJunction(lane.getEdgeID(lane_id))):
                if upstream_edge.startswith(":"):
                    continue
                for index in range(int(edge.getLaneNumber(upstream_edge))):
                    candidate = f"{upstream_edge}_{index}"
                    if any(link[0] == lane_id for link in lane.getLinks(candidate)):
                        found.append(candidate)
            return found

        for tls_id, description in self.tls.items():
            feeders: dict[str, tuple[tuple[str, float], ...]] = {}
            for incoming in description.incoming:
                chain: list[tuple[str, float]] = []
                frontier, seen = [(incoming, length(incoming))], {incoming}
                while frontier:
                    current, offset = frontier.pop()
                    if offset >= APPROACH_REACH:
                        continue
                    for upstream in predecessors(current):
                        # another light's queue is that light's, unless it feeds a link of a car's length
                        # or two: then the two lights work as one crossing and this one must see it
                        if upstream in seen or (upstream in stop_lines and length(current) >= SHORT_EXIT):
                            continue
                        seen.add(upstream)
                        chain.append((upstream, offset))
                        frontier.append((upstream, offset + length(upstream)))
                feeders[incoming] = tuple(chain)
            beyond = {}
            for outgoing in description.outgoing:
                if length(outgoing) < SHORT_EXIT:
                    beyond[outgoing] = tuple(dict.fromkeys(link[0] for link in lane.getLinks(outgoing)))
            fed = (feeder for chain in feeders.values() for feeder, _ in chain)
            after = (name for names in beyond.values() for name in names)
            lanes = {*description.incoming, *description.outgoing, *fed, *after}
            self.tls[tls_id] = replace(description, lane_lengths={name: length(name) for name in lanes},
                                       feeders=feeders, beyond=beyond)

    def _take_over(self) -> None:
        assert self.sim is not None
        now = self.time
        for tls_id, description in self.tls.items():
            greens = description.green_phases
            if not greens:
                continue  # nothing to choose: such a light keeps its program
            current = self.sim.trafficlight.getPhase(tls_id)
            start = next((g for g in greens if g >= current), greens[0])
            self._signals[tls_id] = _Signal(description, start, now, start)
            self.sim.trafficlight.setRedYellowGreenState(tls_id, description.phases[start].state)

    def close(self) -> None:
        """Stop SUMO (idempotent) and remove the temporary files."""
        if self.sim is not None and Twin._active is self:
            try:
                self.sim.close()
            except Exception:  # already closed or the SUMO process died: nothing left to stop
                log.debug("closing SUMO failed", exc_info=True)
            Twin._active = None
        self._cleanup()

    def _cleanup(self) -> None:
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None

    def finish(self) -> list[TripRecord]:
        """Close SUMO and return one record per vehicle scheduled in the episode."""
        if self._workdir is None:
            raise Conflict("the twin is not running")
        path = self._workdir / "tripinfo.xml"
        end = self.settings.end or 0.0
        if self.sim is not None and Twin._active is self:
            try:
                self.sim.close()
            finally:
                Twin._active = None
        try:
            return read_tripinfo(path, end)
        finally:
            self._cleanup()

    def __enter__(self) -> Twin:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # time -----------------------------------------------------------------------------------------------------

    @property
    def time(self) -> float:
        assert self.sim is not None
        return float(self.sim.simulation.getTime())

    @property
    def end_time(self) -> float:
        """When the episode ends (simulation seconds)."""
        return float(self.settings.end or 0.0)

    @property
    def done(self) -> bool:
        return self.time >= self.end_time

    def step(self) -> None:
        """One simulation step."""
        self.advance(self.time + 1.0)

    def advance(self, until: float) -> None:
        """Run the simulation to `until` (capped at the episode end), applying yellow ends, held switches
        and max-green ends exactly when they fall due."""
        if self.sim is None or Twin._active is not self:
            raise Conflict("the twin is not running")
        until = min(until, self.settings.end or until)
        while True:
            now = self.time
            self._apply_due(now)
            if now >= until - 1e-9:
                return
            self.sim.simulationStep(min(until, self._next_event(now)))

    def _next_event(self, now: float) -> float:
        settings = self.settings
        upcoming = float("inf")
        for signal in self._signals.values():
            if signal.yellow_until is not None:
                upcoming = min(upcoming, signal.yellow_until)
            elif signal.requested != signal.green:
                upcoming = min(upcoming, signal.green_since + (settings.min_green or 0.0))
            elif settings.max_green:
                upcoming = min(upcoming, signal.green_since + settings.max_green)
        return max(upcoming, now + 1.0)

    def _apply_due(self, now: float) -> None:
        assert self.sim is not None
        settings = self.settings
        tl = self.sim.trafficlight
        for tls_id, signal in self._signals.items():
            phases = signal.description.phases
            if signal.yellow_until is not None:
                if now < signal.yellow_until - 1e-9:
                    continue
                signal.yellow_until = None
                signal.green, signal.green_since = signal.requested, now
                tl.setRedYellowGreenState(tls_id, phases[signal.green].state)
                continue
            lasted = now - signal.green_since
            if settings.max_green and signal.requested == signal.green and lasted >= settings.max_green - 1e-9:
                greens = signal.description.green_phases
                if len(greens) > 1:
                    signal.requested = greens[(greens.index(signal.green) + 1) % len(greens)]
                    self.stats.forced_by_max_green += 1
            if signal.requested == signal.green:
                continue
            if lasted < (settings.min_green or 0.0) - 1e-9:
                if not signal.held:
                    signal.held = True
                    self.stats.held_for_min_green += 1
                continue
            signal.held = False
            self.stats.switches += 1
            transition = yellow_state(phases[signal.green].state, phases[signal.requested].state)
            if "y" in transition and (settings.yellow or 0.0) > 0:
                signal.yellow_until = now + (settings.yellow or 0.0)
                tl.setRedYellowGreenState(tls_id, transition)
            else:  # nothing loses green: switch at once
                signal.green, signal.green_since = signal.requested, now
                tl.setRedYellowGreenState(tls_id, phases[signal.green].state)

    # control --------------------------------------------------------------------------------------------------

    def set_phase(self, tls_id: str, phase: int) -> None:
        """Ask a traffic light for one of its program's green phases (by program index). The twin inserts
        the yellow and holds the current green until min green; an unknown light, a light not under
        external control or a phase that is not green is an InvalidInput, and nothing changes."""
        signal = self._legal(tls_id, phase)
        signal.requested = phase
        self._apply_due(self.time)

    def set_phases(self, decisions: Mapping[str, int]) -> None:
        """`set_phase` for several lights; all are checked before any is applied."""
        for tls_id, phase in decisions.items():
            self._legal(tls_id, phase)
        for tls_id, phase in decisions.items():
            self.set_phase(tls_id, phase)

    def _legal(self, tls_id: str, phase: int) -> _Signal:
        where = f"phases.{tls_id}"
        if self.program != "external":
            raise InvalidInput.at(where, f"the twin runs the {self.program} programs; phases are not taken")
        signal = self._signals.get(tls_id)
        if signal is None:
            known = ", ".join(sorted(self._signals)) or "none"
            raise InvalidInput.at(where, f"no controllable traffic light {tls_id!r}; known: {known}")
        if isinstance(phase, bool) or not isinstance(phase, int):
            raise InvalidInput.at(where, f"phase must be an integer program index, not {phase!r}")
        greens = signal.description.green_phases
        if phase not in greens:
            kind = "not a phase" if not 0 <= phase < len(signal.description.phases) else "not a green phase"
            raise InvalidInput.at(where, f"{phase} is {kind} of {tls_id}; legal green phases: "
                                         f"{', '.join(map(str, greens))}")
        return signal

    @property
    def controlled(self) -> tuple[str, ...]:
        """Lights a controller may drive (those with at least one green phase) under external control."""
        return tuple(self._signals)

    # observation ----------------------------------------------------------------------------------------------

    def lane_states(self, lanes: Iterable[str]) -> dict[str, LaneState]:
        assert self.sim is not None
        lane = self.sim.lane
        return {lane_id: LaneState(int(lane.getLastStepHaltingNumber(lane_id)),
                                   int(lane.getLastStepVehicleNumber(lane_id)),
                                   float(lane.getLastStepOccupancy(lane_id)) * 100.0,
                                   float(lane.getLastStepMeanSpeed(lane_id)))
                for lane_id in dict.fromkeys(lanes)}

    def observe(self, tls_ids: Iterable[str] | None = None) -> dict[str, TlsObservation]:
        """Every (or the given) traffic light's lanes and phase now."""
        assert self.sim is not None
        wanted = list(tls_ids) if tls_ids is not None else list(self.tls)
        lanes = self.lane_states(lane for t in wanted for lane in (
            *self.tls[t].incoming, *self.tls[t].outgoing, *(n for names in self.tls[t].beyond.values() for n in names)))
        now = self.time
        approaches = self._approach_states(wanted)
        observations = {}
        for tls_id in wanted:
            description = self.tls[tls_id]
            signal = self._signals.get(tls_id)
            if signal is not None:
                in_yellow = signal.yellow_until is not None
                phase = signal.requested if in_yellow else signal.green
                since = signal.yellow_until if in_yellow and signal.yellow_until is not None else signal.green_since
                lasted = max(0.0, now - since)
            else:
                phase = int(self.sim.trafficlight.getPhase(tls_id))
                in_yellow = not description.phases[phase].green if phase < len(description.phases) else False
                lasted = float(self.sim.trafficlight.getSpentDuration(tls_id)) \
                    if hasattr(self.sim.trafficlight, "getSpentDuration") else 0.0
            observations[tls_id] = TlsObservation(
                now, phase, lasted, in_yellow,
                {lane: lanes[lane] for lane in description.incoming},
                {lane: lanes[lane] for lane in description.outgoing},
                {lane: approaches[lane] for lane in description.incoming},
                {name: lanes[name] for names in description.beyond.values() for name in names},
                self._box_standing(description.box_lanes))
        return observations

    def _box_standing(self, box_lanes: Iterable[str]) -> float:
        """The longest a vehicle on these internal lanes has stood still with no vehicle ahead (s)."""
        assert self.sim is not None
        lane, vehicle = self.sim.lane, self.sim.vehicle
        longest = 0.0
        for lane_id in box_lanes:
            for vehicle_id in lane.getLastStepVehicleIDs(lane_id):
                waited = float(vehicle.getWaitingTime(vehicle_id))
                if waited > longest and vehicle.getLeader(vehicle_id, BOX_LOOKAHEAD) is None:
                    longest = waited
        return longest

    def _approach_states(self, tls_ids: list[str]) -> dict[str, ApproachState]:
        """Each incoming lane's approach now: halting vehicles on it and its feeders, and the distance
        to the stop line of every moving one."""
        assert self.sim is not None
        lane, vehicle = self.sim.lane, self.sim.vehicle
        per_lane: dict[str, tuple[int, list[float], str]] = {}  # lane -> (halting, distances to its end, leader)
        pending = self._pending_by_edge()

        def read(lane_id: str, lane_length: float) -> tuple[int, list[float], str]:
            if lane_id not in per_lane:
                halting, moving = 0, []
                on_lane = lane.getLastStepVehicleIDs(lane_id)
                for vehicle_id in on_lane:
                    if vehicle.getSpeed(vehicle_id) < 0.1:  # SUMO's own halting threshold
                        halting += 1
                    else:
                        moving.append(lane_length - vehicle.getLanePosition(vehicle_id))
                # SUMO lists a lane's vehicles from its start to its end: the last one leads
                per_lane[lane_id] = (halting, moving, on_lane[-1] if on_lane else "")
            return per_lane[lane_id]

        states = {}
        for tls_id in tls_ids:
            description = self.tls[tls_id]
            lengths = description.lane_lengths
            fed = self._feeder_fan_out(tls_id)
            for incoming in description.incoming:
                if incoming in states:
                    continue
                own_halting, moving, leader = read(incoming, lengths[incoming])
                halting = float(own_halting)
                weighted = [(d, 1.0) for d in moving]
                waiting = self._pending_share(incoming, pending)
                for feeder, offset in description.feeders.get(incoming, ()):
                    share = 1.0 / fed[feeder]
                    feeder_halting, feeder_moving, _ = read(feeder, lengths[feeder])
                    halting += share * feeder_halting
                    weighted.extend((offset + d, share) for d in feeder_moving)
                    waiting += share * self._pending_share(feeder, pending)
                heads_for = ""
                if leader:
                    upcoming = vehicle.getNextLinks(leader)
                    heads_for = upcoming[0][0] if upcoming else ""
                weighted.sort()
                states[incoming] = ApproachState(halting, tuple(d for d, _ in weighted), waiting, heads_for,
                                                 tuple(w for _, w in weighted))
        return states

    def _feeder_fan_out(self, tls_id: str) -> dict[str, int]:
        """For each feeder lane of the light: how many of its incoming lanes it feeds."""
        fan_out = self._fan_out.get(tls_id)
        if fan_out is None:
            fan_out = {}
            for chain in self.tls[tls_id].feeders.values():
                for feeder, _ in chain:
                    fan_out[feeder] = fan_out.get(feeder, 0) + 1
            self._fan_out[tls_id] = fan_out
        return fan_out

    def _pending_by_edge(self) -> dict[str, int]:
        """Vehicles waiting to be inserted, by the first edge of their route."""
        assert self.sim is not None
        counts: dict[str, int] = {}
        first_edges = self._first_edges
        for vehicle_id in self.sim.simulation.getPendingVehicles():
            first = first_edges.get(vehicle_id)
            if first is None:
                try:
                    route = self.sim.vehicle.getRoute(vehicle_id)
                except Exception:  # a vehicle SUMO cannot describe yet: it is simply not counted
                    route = ()
                first = first_edges[vehicle_id] = route[0] if route else ""
            counts[first] = counts.get(first, 0) + 1
        return counts

    def _pending_share(self, lane_id: str, pending: dict[str, int]) -> float:
        """The lane's share of the vehicles waiting to enter on its edge."""
        assert self.sim is not None
        if not pending:
            return 0.0
        edge_id = self._lane_edges.get(lane_id)
        if edge_id is None:
            edge_id = self._lane_edges[lane_id] = self.sim.lane.getEdgeID(lane_id)
            self._edge_lanes[edge_id] = int(self.sim.edge.getLaneNumber(edge_id))
        waiting = pending.get(edge_id, 0)
        return waiting / self._edge_lanes[edge_id] if waiting else 0.0

    def queue(self) -> int:
        """Halting vehicles on the incoming lanes of every traffic light now."""
        assert self.sim is not None
        lane = self.sim.lane
        return sum(int(lane.getLastStepHaltingNumber(lane_id))
                   for lane_id in dict.fromkeys(l for t in self.tls.values() for l in t.incoming))

    def network_state(self, stuck_after: float = 300.0) -> NetworkState:
        """Vehicles in the network now: how many, how many halted, how many have stood still for at
        least `stuck_after` seconds without a break, and the longest such standstill."""
        assert self.sim is not None
        vehicle = self.sim.vehicle
        ids = vehicle.getIDList()
        waits = [float(vehicle.getWaitingTime(v)) for v in ids]
        return NetworkState(len(ids), sum(1 for v in ids if vehicle.getSpeed(v) < 0.1),
                            sum(1 for w in waits if w >= stuck_after), max(waits, default=0.0))


    # forking and the live twin's sensors ---------------------------------------------------------------------

    def save_state(self, path: Path | str) -> dict[str, int]:
        """Save the simulation (vehicles, their routes and positions) to `path` and return the green each
        externally driven light shows, which `load_state` restores (SUMO's state file does not know the
        twin's own control)."""
        assert self.sim is not None
        self.sim.simulation.saveState(str(path))
        return {tls_id: s.requested if s.yellow_until is not None else s.green for tls_id, s in self._signals.items()}

    def load_state(self, path: Path | str, greens: Mapping[str, int] | None = None) -> None:
        """Continue from a state saved by `save_state` (possibly by another process running the same
        scenario): the time jumps to the saved one and each light shows its saved green from now on."""
        assert self.sim is not None
        self.sim.simulation.loadState(str(path))
        now = self.time
        for tls_id, signal in self._signals.items():
            green = (greens or {}).get(tls_id, signal.green)
            if green not in signal.description.green_phases:
                green = signal.green
            signal.green = signal.requested = green
            signal.green_since, signal.yellow_until, signal.held = now, None, False
            self.sim.trafficlight.setRedYellowGreenState(tls_id, signal.description.phases[green].state)

    def counters(self) -> tuple[int, int, int]:
        """(vehicles inserted so far, vehicles in the network now, vehicles waiting to be inserted now)."""
        assert self.sim is not None
        get = self.sim.simulation.getParameter
        return (int(get("", "stats.vehicles.inserted")), int(get("", "stats.vehicles.running")),
                int(get("", "stats.vehicles.waiting")))

    def lane_places(self, lanes: Iterable[str]) -> dict[str, tuple[str, float, tuple[float, float]]]:
        """Per lane: its edge, its speed limit (m/s) and the middle of its shape (network x, y)."""
        assert self.sim is not None
        lane = self.sim.lane
        places = {}
        for lane_id in dict.fromkeys(lanes):
            shape = lane.getShape(lane_id)
            middle = shape[len(shape) // 2] if len(shape) > 2 else (
                (shape[0][0] + shape[-1][0]) / 2, (shape[0][1] + shape[-1][1]) / 2)
            places[lane_id] = (str(lane.getEdgeID(lane_id)), float(lane.getMaxSpeed(lane_id)),
                               (float(middle[0]), float(middle[1])))
        return places

    def to_lon_lat(self, x: float, y: float) -> tuple[float, float] | None:
        """WGS84 of a network position when the network is georeferenced, else None."""
        assert self.sim is not None and self.scenario is not None
        if not _georeferenced(self.scenario.net_file):
            return None
        lon, lat = self.sim.simulation.convertGeo(x, y)
        return float(lon), float(lat)


def _georeferenced(net_file: Path) -> bool:
    """Whether the network's <location> names a projection (projParameter "!" means none)."""
    for _, element in ET.iterparse(net_file, events=("start",)):
        if element.tag == "location":
            return element.get("projParameter", "!") not in ("!", "")
        if element.tag in ("edge", "junction"):
            break
    return False


def read_tripinfo(path: Path, end: float) -> list[TripRecord]:
    """Trip records from a tripinfo file written with unfinished and undeparted vehicles."""
    records = []
    for _, element in ET.iterparse(path):
        if element.tag != "tripinfo":
            continue
        get = element.get
        arrival = float(get("arrival", "-1"))
        depart = float(get("depart", "-1"))
        depart_delay = float(get("departDelay", "0"))
        inserted = depart >= 0
        if inserted:
            scheduled = depart - depart_delay
        else:
            # SUMO writes undeparted vehicles with depart -1; their wait to enter runs to the episode end
            scheduled = end - depart_delay
        records.append(TripRecord(
            id=get("id", ""), scheduled=scheduled, depart_delay=depart_delay,
            time_loss=float(get("timeLoss", "0")), duration=float(get("duration", "0")),
            waiting_time=float(get("waitingTime", "0")), route_length=float(get("routeLength", "0")),
            arrival=arrival if arrival >= 0 else None, inserted=inserted))
        element.clear()
    return records
