"""Signal control of a twin run in a child process, per intersection, and what its sensors see.

Used by the live twin's child process and by the forked twins that check a plan, so a prediction and the
live run apply control and measure the same way. Every light runs under the twin's external control and
is driven by one of:

- a timing ("fixed": the network program's green durations; "manual": a plan's durations): the greens of
  the program in turn, each for its duration (the twin inserts the yellows);
- a controller (any registered one whose program is "external"), one instance per controller over the
  lights it drives.

A controller that names an illegal phase does not stop the twin: its lights go back to their program's
timing and the error is kept (`Control.errors`), so the caller can fail what asked for that controller.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from citybrain.core.errors import CityBrainError, InvalidInput
from citybrain.traffic.controllers.base import ControlContext, SignalController, controller
from citybrain.traffic.runtime import Twin

log = logging.getLogger(__name__)
MAX_INDEX = 10.0  # a standing queue has no finite travel-time index; cap it


@dataclass(slots=True)
class LightMode:
    """How one light is driven: `controller` slug, or `timing` (green phase → seconds)."""

    kind: str  # "fixed" | "manual" | "adaptive"
    controller: str | None = None
    timing: dict[int, float] = field(default_factory=dict)
    position: int = 0  # timing: index into the light's greens
    until: float = 0.0  # timing: when the current green ends

    def as_data(self) -> dict[str, Any]:
        return {"kind": self.kind, "controller": self.controller, "timing": {str(k): v for k, v in self.timing.items()},
                "position": self.position, "until": self.until}


def program_timing(twin: Twin, tls_id: str) -> dict[int, float]:
    description = twin.tls[tls_id]
    return {p: description.phases[p].duration for p in description.green_phases}


def check_controller(slug: str) -> type[SignalController]:
    """A controller a twin can run per intersection; InvalidInput naming `controller` otherwise."""
    try:
        cls = controller(slug)
    except CityBrainError as error:
        raise InvalidInput.at("controller", error.detail) from None
    if cls.manifest.program != "external" and slug != "fixed":
        raise InvalidInput.at("controller", f"{slug!r} runs SUMO's own programs for the whole network; a plan "
                                            "can choose fixed or a controller that decides phases")
    return cls


class Control:
    """Per-light control of one running twin (see the module docstring)."""

    def __init__(self, twin: Twin, default: str) -> None:
        self.twin = twin
        self.modes: dict[str, LightMode] = {}
        self.instances: dict[str, tuple[SignalController, tuple[str, ...]]] = {}
        self.errors: list[str] = []
        for tls_id in twin.controlled:
            self.modes[tls_id] = LightMode("fixed", timing=program_timing(twin, tls_id))
        if default != "fixed":
            self.assign(list(twin.controlled), {"controller": default})

    def assign(self, lights: list[str], setting: Mapping[str, Any]) -> None:
        """Drive `lights` by `{"controller": slug}` or `{"timing": {phase: seconds}}`."""
        unknown = [t for t in lights if t not in self.modes]
        if unknown:
            raise InvalidInput.at("intersections", f"no controllable intersection {unknown[0]!r}")
        now = self.twin.time
        slug = setting.get("controller")
        if slug is not None:
            check_controller(slug)
            for tls_id in lights:
                self.modes[tls_id] = (LightMode("fixed", timing=program_timing(self.twin, tls_id)) if slug == "fixed"
                                      else LightMode("adaptive", controller=slug))
        else:
            timing = {int(k): float(v) for k, v in (setting.get("timing") or {}).items()}
            for tls_id in lights:
                greens = self.twin.tls[tls_id].green_phases
                bad = [p for p in timing if p not in greens]
                if bad:
                    raise InvalidInput.at(f"timing.{bad[0]}", f"not a green phase of {tls_id}; green phases: "
                                                              f"{', '.join(map(str, greens))}")
                self.modes[tls_id] = LightMode("manual", timing={**program_timing(self.twin, tls_id), **timing},
                                               until=now)
        self._rebuild()

    def restore(self, modes: Mapping[str, Mapping[str, Any]]) -> None:
        """Take over the modes another twin's `Control.snapshot` described."""
        for tls_id, data in modes.items():
            if tls_id in self.modes:
                self.modes[tls_id] = LightMode(data["kind"], data.get("controller"),
                                               {int(k): float(v) for k, v in (data.get("timing") or {}).items()},
                                               int(data.get("position", 0)), float(data.get("until", 0.0)))
        self._rebuild()

    def snapshot(self) -> dict[str, dict[str, Any]]:
        return {tls_id: mode.as_data() for tls_id, mode in self.modes.items()}

    def _rebuild(self) -> None:
        twin = self.twin
        by_slug: dict[str, list[str]] = {}
        for tls_id, mode in self.modes.items():
            if mode.controller is not None:
                by_slug.setdefault(mode.controller, []).append(tls_id)
        settings = twin.settings
        self.instances = {}
        for slug, lights in by_slug.items():
            cls = controller(slug)
            context = ControlContext(twin.scenario.name if twin.scenario else "", {t: twin.tls[t] for t in lights},
                                     settings.decision_interval or 10.0, settings.yellow or 0.0,
                                     settings.min_green or 0.0)
            self.instances[slug] = (cls(context), tuple(lights))

    def decide(self) -> None:
        """One decision round: timed lights move on when their green is over, controllers are asked."""
        twin = self.twin
        now = twin.time
        wanted: dict[str, int] = {}
        for tls_id, mode in self.modes.items():
            if mode.controller is not None or now < mode.until - 1e-9:
                continue
            greens = [p for p in twin.tls[tls_id].green_phases if mode.timing.get(p, 0) > 0]
            if not greens:
                continue
            if mode.until > 0:
                mode.position = (mode.position + 1) % len(greens)
            mode.position %= len(greens)
            phase = greens[mode.position]
            wanted[tls_id] = phase
            mode.until = now + mode.timing[phase] + (twin.settings.yellow or 0.0)
        if wanted:
            twin.set_phases(wanted)
        for slug, (instance, lights) in list(self.instances.items()):
            try:
                decisions = instance.decide(twin.observe(lights))
                if not isinstance(decisions, Mapping):
                    raise InvalidInput.at("decisions", f"returned {type(decisions).__name__}, not a mapping")
                foreign = [t for t in decisions if t not in lights]
                if foreign:
                    raise InvalidInput.at(f"phases.{foreign[0]}", "not a light this controller drives")
                twin.set_phases(decisions)
            except Exception as error:  # an illegal phase, or a controller that broke: never the twin
                detail = error.detail if isinstance(error, CityBrainError) else f"{type(error).__name__}: {error}"
                message = f"controller {slug} at t={now:g}: {detail}"
                log.warning("%s; its intersections go back to their programs", message)
                self.errors.append(message)
                for tls_id in lights:
                    self.modes[tls_id] = LightMode("fixed", timing=program_timing(twin, tls_id), until=now)
                self._rebuild()

    def signal_states(self) -> dict[str, dict[str, Any]]:
        observations = self.twin.observe(self.modes)
        return {tls_id: {"phase": obs.phase, "programId": self.twin.tls[tls_id].program_id,
                         "controlMode": self.modes[tls_id].kind,
                         "controller": self.modes[tls_id].controller or self.modes[tls_id].kind}
                for tls_id, obs in observations.items()}


class Sensors:
    """What the twin's detectors see between two reports, per road (an incoming edge of a signalised
    intersection), and the network's delay counters.

    Sampled every decision interval: per road the vehicle-weighted mean speed of its lanes (the speed limit
    when empty), flow from density × speed (q = k·v, vehicles/hour) and occupancy. Delay: vehicle-seconds
    halted in the network or waiting to be inserted, summed over the samples (each sample stands for its
    interval)."""

    def __init__(self, twin: Twin) -> None:
        self.twin = twin
        lanes = [lane for t in twin.controlled for lane in twin.tls[t].incoming]
        self.places = twin.lane_places(lanes)
        self.lengths = {lane: twin.tls[t].lane_lengths.get(lane, 1.0) for t in twin.controlled
                        for lane in twin.tls[t].incoming}
        self.roads: dict[str, list[str]] = {}
        for lane, (edge, _speed, _xy) in self.places.items():
            self.roads.setdefault(edge, []).append(lane)
        self.free_flow = {edge: max(self.places[lane][1] for lane in lanes) for edge, lanes in self.roads.items()}
        self.delay_s = 0.0  # cumulative vehicle-seconds of delay since the twin started
        self._reset()

    def _reset(self) -> None:
        self._speed_sum = {edge: 0.0 for edge in self.roads}
        self._speed_n = {edge: 0 for edge in self.roads}
        self._flow = {edge: 0.0 for edge in self.roads}
        self._occupancy = {edge: 0.0 for edge in self.roads}
        self._samples = 0

    def sample(self, interval: float) -> None:
        twin = self.twin
        states = twin.lane_states(self.places)
        for edge, lanes in self.roads.items():
            vehicles = sum(states[lane].vehicles for lane in lanes)
            if vehicles:
                speed = sum(states[lane].mean_speed * states[lane].vehicles for lane in lanes) / vehicles
                self._speed_sum[edge] += speed
                self._speed_n[edge] += 1
            self._flow[edge] += sum(states[lane].vehicles / max(self.lengths[lane], 1.0) * states[lane].mean_speed
                                    for lane in lanes)
            self._occupancy[edge] += sum(states[lane].occupancy for lane in lanes) / len(lanes)
        self._samples += 1
        _inserted, _running, waiting = twin.counters()
        self.delay_s += (twin.network_state().halting + waiting) * interval

    def report(self) -> dict[str, dict[str, float]]:
        """Each road's readings since the last report (then start over)."""
        n = max(self._samples, 1)
        roads = {}
        for edge in self.roads:
            free = self.free_flow[edge]
            speed = self._speed_sum[edge] / self._speed_n[edge] if self._speed_n[edge] else free
            index = min(MAX_INDEX, free / speed) if speed > 0 else MAX_INDEX
            roads[edge] = {"intensity": round(self._flow[edge] / n * 3600.0),
                           "averageVehicleSpeed": round(speed * 3.6, 2),
                           "occupancy": round(min(1.0, self._occupancy[edge] / n / 100.0), 4),
                           "congestionIndex": round(max(1.0, index), 3)}
        self._reset()
        return roads

    def counters(self) -> dict[str, float]:
        inserted, running, waiting = self.twin.counters()
        return {"time": self.twin.time, "delay_s": self.delay_s, "inserted": inserted, "running": running,
                "waiting": waiting}


def horizon_metrics(start: Mapping[str, float], end: Mapping[str, float]) -> dict[str, float]:
    """Mean delay per vehicle and throughput between two `Sensors.counters` readings. Vehicles served:
    those in the network at the start, those inserted meanwhile and those still waiting at the end."""
    served = start["running"] + (end["inserted"] - start["inserted"]) + end["waiting"]
    delay = end["delay_s"] - start["delay_s"]
    arrived = (end["inserted"] - start["inserted"]) - (end["running"] - start["running"])
    return {"mean_delay_s": round(delay / served, 2) if served else 0.0, "throughput": int(arrived),
            "vehicles": int(served), "seconds": end["time"] - start["time"]}


def run_for(twin: Twin, control: Control, sensors: Sensors, until: float) -> None:
    """Advance the twin to `until` a decision interval at a time, controlling and sampling."""
    interval = twin.settings.decision_interval or 10.0
    while twin.time < until - 1e-9 and not twin.done:
        control.decide()
        step = min(interval, until - twin.time)
        twin.advance(twin.time + step)
        sensors.sample(step)
