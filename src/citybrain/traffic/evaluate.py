"""Evaluate signal controllers on scenarios the RESCO way, one episode per worker process.

An episode runs a scenario's whole time window (1 h for the RESCO maps) with no teleporting; a controller
that decides is asked every decision interval. Metrics, over every vehicle scheduled to depart in the
window (including vehicles that never got into the network, whose delay is the time they waited to be
inserted up to the episode end):

- delay: timeLoss + departDelay, averaged (RESCO's "average delay");
- trip_time: departDelay + duration (time from the scheduled departure to arrival, or to the end);
- waiting_time: SUMO's waitingTime (seconds spent below 0.1 m/s), averaged;
- queue: halting vehicles on the traffic lights' incoming lanes, summed, averaged over decision instants;
- throughput: vehicles arrived; mean_speed: distance over time of the arrived trips (m/s).

Gridlock: an episode is gridlocked when, at its end, at least `GridlockRule.min_stuck` vehicles (10) in
the network have stood still without a break for `stuck_after` seconds (300) or more. Signals cycle in one
to two minutes, so a vehicle standing five minutes is held by something that no longer moves: a spillback
lock (with teleporting off it never resolves) or a movement the controller starves. Arrivals in the final
`window` (10 min) are reported next to it, to tell a whole-network lock from a local one.

libsumo runs one simulation per process, so `run_episode` is called in spawned worker processes by
`run_matrix` (two at a time by default: the benches share two cores).
"""

from __future__ import annotations

import logging
import multiprocessing
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from citybrain.core import errors as error_kinds
from citybrain.core.errors import CityBrainError, FieldError, InvalidInput
from citybrain.traffic.controllers.base import ControlContext, SignalController, controller
from citybrain.traffic.runtime import NetworkState, TripRecord, Twin, TwinSettings
from citybrain.traffic.scenarios import Scenario, ScenarioManifest, resolve

log = logging.getLogger(__name__)

ControllerSpec = str | type[SignalController]
ScenarioSpec = str | Path | ScenarioManifest | Scenario


class GridlockRule(BaseModel):
    """When an episode counts as gridlocked (see the module docstring)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    stuck_after: float = Field(300.0, gt=0, description="A vehicle standing still this long without a break is stuck")
    min_stuck: int = Field(10, ge=1, description="Stuck vehicles at the episode end that make a gridlock")
    window: float = Field(600.0, gt=0, description="Final seconds in which arrivals are counted (reported)")


@dataclass(frozen=True, slots=True)
class EpisodeResult:
    """One (scenario, controller, seed) episode."""

    scenario: str
    controller: str
    seed: int
    vehicles: int
    arrived: int
    never_inserted: int
    in_network_at_end: int
    halting_at_end: int
    stuck_at_end: int
    longest_standstill: float
    arrivals_in_window: int
    delay: float
    trip_time: float
    waiting_time: float
    queue: float
    mean_speed: float
    gridlocked: bool
    wall_seconds: float
    simulated_seconds: float
    switches: int = 0
    held_for_min_green: int = 0
    forced_by_max_green: int = 0
    backend: str = ""

    @property
    def throughput(self) -> int:
        return self.arrived

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def summarise(trips: list[TripRecord], *, scenario: str, controller: str, seed: int, end: float,
              queue_samples: list[int], state: NetworkState, rule: GridlockRule,
              wall_seconds: float, simulated_seconds: float, **extra: object) -> EpisodeResult:
    """The episode's metrics from its trip records and samples."""
    count = len(trips)
    arrived = [t for t in trips if t.arrival is not None]
    in_window = sum(1 for t in arrived if t.arrival is not None and t.arrival > end - rule.window)
    travelled = sum(t.duration for t in arrived)
    gridlocked = state.stuck >= rule.min_stuck

    def mean(values: Iterable[float]) -> float:
        return sum(values) / count if count else 0.0

    return EpisodeResult(
        scenario=scenario, controller=controller, seed=seed, vehicles=count, arrived=len(arrived),
        never_inserted=sum(1 for t in trips if not t.inserted), in_network_at_end=state.vehicles,
        halting_at_end=state.halting, stuck_at_end=state.stuck, longest_standstill=state.longest_standstill,
        arrivals_in_window=in_window,
        delay=mean(t.delay for t in trips), trip_time=mean(t.depart_delay + t.duration for t in trips),
        waiting_time=mean(t.waiting_time for t in trips),
        queue=sum(queue_samples) / len(queue_samples) if queue_samples else 0.0,
        mean_speed=sum(t.route_length for t in arrived) / travelled if travelled > 0 else 0.0,
        gridlocked=gridlocked, wall_seconds=wall_seconds, simulated_seconds=simulated_seconds,
        **extra)  # type: ignore[arg-type]


def _controller_class(spec: ControllerSpec) -> type[SignalController]:
    if isinstance(spec, str):
        return controller(spec)
    if isinstance(spec, type) and issubclass(spec, SignalController):
        return spec
    raise InvalidInput.at("controller", f"{spec!r} is neither a registered slug nor a SignalController class")


def run_episode(scenario: ScenarioSpec, controller_spec: ControllerSpec, seed: int = 0, *,
                settings: TwinSettings | None = None, rule: GridlockRule | None = None) -> EpisodeResult:
    """Run one episode in this process (which must not have a twin running: libsumo allows one)."""
    manifest = resolve(scenario)
    cls = _controller_class(controller_spec)
    rule = rule or GridlockRule()
    program = cls.manifest.program
    started = time.perf_counter()
    twin = Twin().start(manifest, seed=seed, settings=settings, program=program)
    try:
        resolved = twin.settings
        interval = resolved.decision_interval or manifest.decision_interval
        lights = twin.controlled if program == "external" else tuple(twin.tls)
        context = ControlContext(manifest.name, {t: twin.tls[t] for t in lights}, interval,
                                 resolved.yellow or 0.0, resolved.min_green or 0.0)
        instance = cls(context)
        queue_samples: list[int] = []
        begin = twin.time
        while not twin.done:
            if program == "external":
                decisions = instance.decide(twin.observe(lights))
                if not isinstance(decisions, Mapping):
                    raise InvalidInput.at("decisions", f"controller {cls.manifest.slug} returned "
                                                       f"{type(decisions).__name__}, not a mapping")
                try:
                    twin.set_phases(decisions)
                except InvalidInput as error:
                    raise InvalidInput(f"controller {cls.manifest.slug} at t={twin.time:g}: {error.detail}",
                                       errors=error.errors) from None
            twin.advance(twin.time + interval)
            queue_samples.append(twin.queue())
        state = twin.network_state(rule.stuck_after)
        simulated = twin.time - begin
        stats, backend = twin.stats, twin.backend
        end = resolved.end or manifest.end
        trips = twin.finish()
    finally:
        twin.close()
    return summarise(trips, scenario=manifest.name, controller=cls.manifest.slug, seed=seed, end=end,
                     queue_samples=queue_samples, state=state, rule=rule,
                     wall_seconds=time.perf_counter() - started, simulated_seconds=simulated,
                     switches=stats.switches, held_for_min_green=stats.held_for_min_green,
                     forced_by_max_green=stats.forced_by_max_green, backend=backend)


def _episode_job(manifest: ScenarioManifest, controller_spec: ControllerSpec, seed: int,
                 settings: TwinSettings | None, rule: GridlockRule | None) -> tuple[str, object]:
    """Worker entry: domain errors travel back as data (their keyword fields do not survive pickling)."""
    try:
        return "ok", run_episode(manifest, controller_spec, seed, settings=settings, rule=rule)
    except CityBrainError as error:
        return "error", (type(error).__name__, error.detail, [(e.field, e.reason) for e in error.errors])


def _raise(payload: object) -> None:
    name, detail, field_errors = payload  # type: ignore[misc]
    kind = getattr(error_kinds, name, CityBrainError)
    raise kind(detail, errors=[FieldError(f, r) for f, r in field_errors])


def run_in_worker(scenario: ScenarioSpec, controller_spec: ControllerSpec, seed: int = 0, *,
                  settings: TwinSettings | None = None, rule: GridlockRule | None = None) -> EpisodeResult:
    """`run_episode` in a fresh spawned process, so the caller may run several twins one after another
    or keep its own."""
    return run_matrix([scenario], [controller_spec], [seed], workers=1, settings=settings, rule=rule)[0]


def run_matrix(scenarios: Iterable[ScenarioSpec], controllers: Iterable[ControllerSpec], seeds: Iterable[int],
               *, workers: int = 2, settings: TwinSettings | None = None, rule: GridlockRule | None = None,
               duration: float | None = None,
               progress: Callable[[EpisodeResult], None] | None = None) -> list[EpisodeResult]:
    """Every (scenario, controller, seed) episode, `workers` at a time in spawned processes; results in
    the order of the arguments. `duration` cuts every episode to its scenario's first `duration` seconds
    (a smoke run). The first domain error (e.g. a controller choosing an illegal phase) stops the matrix
    and is raised here."""
    manifests = [resolve(s) for s in scenarios]  # unknown names fail here, before any process starts
    specs = list(controllers)
    for spec in specs:
        _controller_class(spec)
    if duration is not None and duration <= 0:
        raise InvalidInput.at("duration", "must be a positive number of seconds")
    jobs = [(m, c, int(s)) for m in manifests for c in specs for s in seeds]
    if not jobs:
        return []

    def settings_for(manifest: ScenarioManifest) -> TwinSettings | None:
        if duration is None:
            return settings
        base = settings or TwinSettings()
        begin = manifest.begin if base.begin is None else base.begin
        return base.model_copy(update={"end": begin + duration})

    results: dict[int, EpisodeResult] = {}
    context = multiprocessing.get_context("spawn")
    # a fresh process per episode: libsumo keeps state from one simulation to the next in a process (after
    # an actuated episode, the fixed-time one on the same map ran 44.1 s instead of 43.0 s on cologne1)
    with ProcessPoolExecutor(max_workers=max(1, min(workers, len(jobs))), mp_context=context,
                             max_tasks_per_child=1) as pool:
        futures: dict[Future[tuple[str, object]], int] = {
            pool.submit(_episode_job, m, c, s, settings_for(m), rule): i for i, (m, c, s) in enumerate(jobs)}
        try:
            for future in as_completed(futures):
                status, payload = future.result()
                if status == "error":
                    _raise(payload)
                assert isinstance(payload, EpisodeResult)
                results[futures[future]] = payload
                if progress is not None:
                    progress(payload)
        except BaseException:
            for future in futures:
                future.cancel()
            raise
    return [results[i] for i in range(len(jobs))]
