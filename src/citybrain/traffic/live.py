"""The live traffic twin: a platform background service running SUMO in a child process.

Enabled by `CITYBRAIN_TRAFFIC_SCENARIO` (off by default). libsumo runs one simulation per process, so the
twin lives in a spawned child that answers small messages over a pipe: run to a time (it controls the
lights and samples its sensors meanwhile, `traffic.control`), change the control of some intersections,
save its state for a fork. Every `traffic_report_s` simulated seconds (paced at `traffic_speedup`) the
service

* registers (once) one `traffic_detector` device per monitored road (each incoming edge of a signalised
  intersection) and feeds their readings through the sensing ingest, the path HTTP telemetry takes, so
  the `congestion` rule raises alerts onto the bus and the `congestion_index` and
  `congested_detector_rate` vital signs are computed for the org unit;
* upserts a `TrafficSignal` entity per intersection (phase, programId, controlMode), controlled by the
  twin's connected system, and the latest readings into each detector's `TrafficFlowObserved` entity;
* executes the pending hub commands addressed to those signals (plans, `traffic.plans`) on the running
  twin and acknowledges or fails them;
* measures applied plans once their horizon has passed on the live twin.

Positions: a georeferenced network's coordinates are converted to lon/lat; any other network is placed
with its centre at `traffic_origin` (metres east/north → degrees, an affine placement).

A child that dies, hangs or refuses a command never takes the service down: it logs, reports degraded in
`status()`, and starts the twin again from the scenario's beginning.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import multiprocessing
import re
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio

from citybrain.core.context import Context
from citybrain.core.errors import CityBrainError, InvalidInput, ServiceUnavailable
from citybrain.hub.background import PollingService, find_service
from citybrain.traffic.scenarios import ScenarioManifest

if TYPE_CHECKING:
    from multiprocessing.connection import Connection

    from citybrain.platform import Platform

log = logging.getLogger(__name__)
TWIN_CONTEXT = Context(id="00000000-0000-7000-8000-0000007a5f1c", actor="system:traffic-twin")
REPLY_TIMEOUT_S = 120.0
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")


# -- the child process ----------------------------------------------------------------------------------------


def _place(twin: Any, points: Mapping[str, tuple[float, float]], origin: tuple[float, float]) -> dict[str, list[float]]:
    """lon/lat of network points: converted when the network is georeferenced, else placed around `origin`."""
    if not points:
        return {}
    first = next(iter(points.values()))
    if twin.to_lon_lat(*first) is not None:
        return {key: list(twin.to_lon_lat(x, y)) for key, (x, y) in points.items()}
    xs = [x for x, _ in points.values()]
    ys = [y for _, y in points.values()]
    cx, cy = (min(xs) + max(xs)) / 2, (min(ys) + max(ys)) / 2
    lon0, lat0 = origin
    per_lat = 111_320.0
    per_lon = per_lat * math.cos(math.radians(lat0))
    return {key: [round(lon0 + (x - cx) / per_lon, 7), round(lat0 + (y - cy) / per_lat, 7)]
            for key, (x, y) in points.items()}


def _describe(twin: Any, sensors: Any, origin: tuple[float, float]) -> dict[str, Any]:
    lights = {}
    for tls_id in twin.controlled:
        middles = [sensors.places[lane][2] for lane in twin.tls[tls_id].incoming if lane in sensors.places]
        lights[tls_id] = (sum(x for x, _ in middles) / len(middles), sum(y for _, y in middles) / len(middles))
    roads = {edge: sensors.places[lanes[0]][2] for edge, lanes in sensors.roads.items()}
    placed = _place(twin, {**{f"tls:{k}": v for k, v in lights.items()}, **{f"road:{k}": v for k, v in roads.items()}},
                    origin)
    return {
        "intersections": {tls_id: {"location": placed[f"tls:{tls_id}"],
                                   "greenPhases": list(twin.tls[tls_id].green_phases),
                                   "programId": twin.tls[tls_id].program_id,
                                   "roads": sorted({sensors.places[lane][0] for lane in twin.tls[tls_id].incoming})}
                          for tls_id in lights},
        "roads": {edge: {"location": placed[f"road:{edge}"], "freeFlowKmh": round(sensors.free_flow[edge] * 3.6, 1)}
                  for edge in roads},
        "begin": twin.time, "end": twin.end_time,
    }


def _error_payload(error: Exception) -> tuple[str, str, list[tuple[str, str]]]:
    if isinstance(error, CityBrainError):
        return type(error).__name__, error.detail, [(e.field, e.reason) for e in error.errors]
    return type(error).__name__, f"{type(error).__name__}: {error}", []


def child_main(conn: Connection, manifest: ScenarioManifest, controller: str, origin: tuple[float, float],
               seed: int = 0) -> None:
    """The live twin's process: start the twin, then answer messages until told to stop or the pipe closes.
    When the scenario's window ends the twin starts again from its beginning (a new `epoch`)."""
    from citybrain.traffic.control import Control, Sensors, run_for
    from citybrain.traffic.runtime import Twin

    def boot() -> tuple[Any, Any, Any]:
        twin = Twin().start(manifest, seed=seed, program="external")
        return twin, Control(twin, controller), Sensors(twin)

    try:
        twin, control, sensors = boot()
    except Exception as error:
        conn.send(("error", _error_payload(error)))
        return
    epoch = 0
    conn.send(("ok", {"epoch": epoch, **_describe(twin, sensors, origin)}))
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            break
        op, args = message[0], message[1:]
        try:
            if op == "stop":
                conn.send(("ok", None))
                break
            if op == "run":
                if twin.done:
                    twin.close()
                    twin, control, sensors = boot()
                    epoch += 1
                run_for(twin, control, sensors, min(float(args[0]), twin.end_time))
                errors, control.errors = control.errors, []
                conn.send(("ok", {"epoch": epoch, "time": twin.time, "roads": sensors.report(),
                                  "signals": control.signal_states(), "counters": sensors.counters(),
                                  "errors": errors}))
            elif op == "assign":
                lights, setting = args
                control.assign(list(lights), setting)
                conn.send(("ok", {"time": twin.time, "counters": sensors.counters(), "epoch": epoch}))
            elif op == "save":
                greens = twin.save_state(args[0])
                conn.send(("ok", {"time": twin.time, "greens": greens, "modes": control.snapshot(),
                                  "epoch": epoch}))
            else:
                conn.send(("error", ("InvalidInput", f"unknown message {op!r}", [])))
        except Exception as error:  # a bad command: answer it, keep the twin
            log.warning("live twin: %s failed: %s", op, error)
            conn.send(("error", _error_payload(error)))
    twin.close()


def _raise(payload: Any) -> None:
    from citybrain.core import errors as kinds
    from citybrain.core.errors import FieldError

    name, detail, field_errors = payload
    kind = getattr(kinds, name, None)
    if not (isinstance(kind, type) and issubclass(kind, CityBrainError)):
        kind = CityBrainError
    raise kind(detail, errors=[FieldError(f, r) for f, r in field_errors])


class TwinProcess:
    """The parent's handle on the child: blocking calls, one at a time (callers hold the service's lock)."""

    def __init__(self, manifest: ScenarioManifest, controller: str, origin: tuple[float, float]) -> None:
        context = multiprocessing.get_context("spawn")
        self.conn, child_end = context.Pipe()
        self.process = context.Process(target=child_main, args=(child_end, manifest, controller, origin),
                                       name=f"citybrain-twin-{manifest.name}", daemon=True)
        self.process.start()
        child_end.close()
        self.description: dict[str, Any] = self._answer(REPLY_TIMEOUT_S)

    @property
    def pid(self) -> int | None:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.is_alive()

    def call(self, *message: Any, timeout: float = REPLY_TIMEOUT_S) -> Any:
        try:
            self.conn.send(message)
        except (OSError, ValueError) as error:
            raise ConnectionError(f"the twin process is gone ({error})") from None
        return self._answer(timeout)

    def _answer(self, timeout: float) -> Any:
        try:
            if not self.conn.poll(timeout):
                raise ConnectionError(f"the twin process did not answer within {timeout:g} s")
            status, payload = self.conn.recv()
        except (EOFError, OSError) as error:
            raise ConnectionError(f"the twin process is gone ({type(error).__name__})") from None
        if status == "error":
            _raise(payload)
        return payload

    def close(self) -> None:
        with contextlib.suppress(Exception):
            if self.alive():
                self.conn.send(("stop",))
                self.conn.poll(5.0)
        self.process.join(5.0)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(5.0)
        with contextlib.suppress(Exception):
            self.conn.close()


# -- the service ----------------------------------------------------------------------------------------------


def safe_id(value: str) -> str:
    """A piece of an id (device id, URN) from a SUMO id, which may hold '#', ':' or spaces."""
    return _UNSAFE.sub("_", value)[:48]


def resolve_scenario(name: str, home: Path) -> ScenarioManifest:
    """A registered scenario, a converted folder under {home}/traffic/scenarios/NAME, or a folder path;
    InvalidInput naming `traffic_scenario` otherwise."""
    from citybrain.traffic.scenarios import register_folder, resolve, scenarios

    try:
        if name not in scenarios:
            for folder in (home / "traffic" / "scenarios" / name, Path(name)):
                if folder.is_dir() and any(folder.glob("*.sumocfg")):
                    return register_folder(folder, replace=True).manifest
        return resolve(name)
    except CityBrainError as error:
        raise InvalidInput.at("traffic_scenario", error.detail) from None


class LiveTraffic(PollingService):
    """The live twin as a background service (see the module docstring)."""

    name = "traffic-twin"

    def __init__(self, platform: Platform) -> None:
        super().__init__(platform)
        settings = platform.settings
        self.enabled = bool(settings.traffic_scenario)
        self.interval_s = settings.traffic_report_s / settings.traffic_speedup
        self.manifest: ScenarioManifest | None = None
        self.process: TwinProcess | None = None
        self.description: dict[str, Any] = {}
        self.controller = settings.traffic_controller
        self.org_unit = settings.traffic_org_unit or None
        self.sim_time: float | None = None
        self.epoch = 0
        self.degraded = False
        self.restarts = 0
        self.last_error: str | None = None
        self.reports = 0
        self.control_errors: list[str] = []
        self.signals: dict[str, dict[str, Any]] = {}
        self.roads: dict[str, dict[str, float]] = {}
        self.counters: dict[str, float] = {}
        self._lock = asyncio.Lock()
        self._registered = False
        self._tasks: set[asyncio.Task[Any]] = set()

    # ------------------------------------------------------------------ ids

    @property
    def system_id(self) -> str:
        assert self.manifest is not None
        return f"urn:ngsi-ld:ConnectedSystem:traffic-twin-{safe_id(self.manifest.name)}"

    def signal_entity_id(self, tls_id: str) -> str:
        assert self.manifest is not None
        return f"urn:ngsi-ld:TrafficSignal:{safe_id(self.manifest.name)}-{safe_id(tls_id)}"

    def device_id(self, edge: str) -> str:
        assert self.manifest is not None
        return f"TD-{safe_id(self.manifest.name)[:12]}-{safe_id(edge)}"

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        if not self.enabled:
            return
        settings = self.platform.settings
        self.manifest = resolve_scenario(settings.traffic_scenario, settings.home)
        if self.org_unit is not None and self.org_unit not in self.platform.org_tree:
            raise InvalidInput.at("traffic_org_unit", f"unknown org unit {self.org_unit!r}")
        from citybrain.traffic.control import check_controller

        try:
            check_controller(self.controller)
        except InvalidInput as error:
            raise InvalidInput.at("traffic_controller", error.detail) from None
        try:
            lon, lat = (float(part) for part in settings.traffic_origin.split(","))
        except ValueError:
            raise InvalidInput.at("traffic_origin", "lon,lat is required, e.g. 120.117,30.283") from None
        self.origin = (lon, lat)
        from citybrain.traffic import plans

        interrupted = await self.platform.run(plans.fail_interrupted, self.platform)
        if interrupted:
            log.warning("traffic twin: %d plans of a previous run could not finish and failed", interrupted)
        await self._boot()
        await super().start()

    async def stop(self) -> None:
        if not self.enabled:
            return
        await super().stop()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(BaseException):
                await task
        if self.process is not None:
            await anyio.to_thread.run_sync(self.process.close)
            self.process = None

    async def _boot(self) -> None:
        assert self.manifest is not None
        process = await anyio.to_thread.run_sync(TwinProcess, self.manifest, self.controller, self.origin)
        self.process = process
        self.description = process.description
        self.sim_time = self.description["begin"]
        self.epoch = self.description["epoch"]

    async def _restart(self, reason: str) -> None:
        log.error("traffic twin: %s; starting it again", reason)
        self.degraded, self.last_error = True, reason
        self.restarts += 1
        old, self.process = self.process, None
        if old is not None:
            await anyio.to_thread.run_sync(old.close)
        await self._boot()
        from citybrain.traffic import plans

        await self.platform.run(plans.fail_measuring, self.platform, "the twin was restarted before the horizon ended")

    async def call(self, *message: Any) -> Any:
        """One conversation with the child (a CityBrainError for a refused message; the child stays)."""
        async with self._lock:
            if self.process is None:
                raise ServiceUnavailable("the traffic twin is starting again; try again shortly")
            process = self.process
            return await anyio.to_thread.run_sync(lambda: process.call(*message))

    # ------------------------------------------------------------------ the round

    async def run_once(self) -> bool:
        settings = self.platform.settings
        try:
            if self.process is None or not self.process.alive():
                await self._restart("the twin process died")
                return False
            report = await self.call("run", (self.sim_time or 0.0) + settings.traffic_report_s)
        except ConnectionError as error:
            await self._restart(str(error))
            return False
        if report["epoch"] != self.epoch:
            self.epoch = report["epoch"]
            from citybrain.traffic import plans

            await self.platform.run(plans.fail_measuring, self.platform, "the scenario's time window ended")
        self.sim_time, self.counters = report["time"], report["counters"]
        self.signals, self.roads = report["signals"], report["roads"]
        if report["errors"]:
            self.control_errors = (self.control_errors + report["errors"])[-20:]
        await self._publish(report)
        await self._execute_commands()
        from citybrain.traffic import plans

        await self.platform.run(plans.measure_due, self.platform, self.counters, self.epoch)
        self.reports += 1
        self.degraded = False
        return False

    async def _publish(self, report: dict[str, Any]) -> None:
        from citybrain.hub.entities import flows as entity_flows
        from citybrain.sensing.runtime import SensingRuntime

        sensing = find_service(self.platform, SensingRuntime)
        if not self._registered:
            await self._register(sensing)
        if sensing is not None and sensing.pipeline is not None:
            now = time.time()
            items = [{"deviceId": self.device_id(edge), "ts": now, **values} for edge, values in report["roads"].items()]
            messages, _positions, refused = sensing.http_messages(items)
            outcome = await sensing.ingest(messages, source="http", refused=refused)
            if outcome.dead:
                log.warning("traffic twin: %d readings refused, e.g. %s", len(outcome.dead), outcome.dead[0].reason)
        entities = [self._signal_entity(tls_id, state) for tls_id, state in report["signals"].items()]
        entities += [{"id": f"urn:ngsi-ld:TrafficFlowObserved:{self.device_id(edge)}", "type": "TrafficFlowObserved",
                      **{name: {"type": "Property", "value": value} for name, value in values.items()},
                      "congested": {"type": "Property", "value": values["averageVehicleSpeed"] < 10}}
                     for edge, values in report["roads"].items()]
        result = await entity_flows.upsert_batch(self.platform, entities, mode="merge", ctx=TWIN_CONTEXT)
        if result.errors:
            log.warning("traffic twin: %d entities refused, e.g. %s", len(result.errors), result.errors[0])

    def _signal_entity(self, tls_id: str, state: Mapping[str, Any]) -> dict[str, Any]:
        entity: dict[str, Any] = {
            "id": self.signal_entity_id(tls_id), "type": "TrafficSignal",
            "phase": {"type": "Property", "value": state["phase"]},
            "programId": {"type": "Property", "value": state["programId"]},
            "controlMode": {"type": "Property", "value": state["controlMode"]},
            "controlledBy": {"type": "Relationship", "object": self.system_id},
            "location": {"type": "GeoProperty", "value": {
                "type": "Point", "coordinates": self.description["intersections"][tls_id]["location"]}},
        }
        if self.org_unit:
            from citybrain.hub.entities.ngsi import org_unit_urn

            entity["orgUnit"] = {"type": "Relationship", "object": org_unit_urn(self.org_unit)}
        return entity

    async def _register(self, sensing: Any) -> None:
        """The twin's connected system and one detector per road (idempotent: existing ones are kept)."""
        from citybrain.core.errors import Conflict
        from citybrain.hub.commands import flows as command_flows
        from citybrain.hub.commands.schemas import SystemCreate
        from citybrain.sensing.devices.service import DeviceInput

        assert self.manifest is not None
        try:
            await command_flows.register_system(self.platform, SystemCreate(
                id=self.system_id, name=f"Traffic twin ({self.manifest.name})", kind="signal-controller",
                department=self.org_unit, description="The live SUMO twin; executes signal plans (pulls its commands)"),
                ctx=TWIN_CONTEXT)
        except Conflict:
            pass
        if sensing is None:
            return
        items = [DeviceInput(self.device_id(edge), "traffic_detector", self.org_unit, *road["location"])
                 for edge, road in self.description["roads"].items()]
        outcome = await sensing.register(items, ctx=TWIN_CONTEXT)
        if outcome.errors:
            log.warning("traffic twin: %d detectors refused, e.g. %s", len(outcome.errors), outcome.errors[0])
        self._registered = True

    async def _execute_commands(self) -> None:
        """Carry out the commands addressed to the twin's signals, oldest first; each is acknowledged or
        failed with the twin's reason (an illegal request changes nothing and the twin runs on)."""
        from citybrain.hub.commands import flows as command_flows
        from citybrain.hub.commands.schemas import Acknowledgement
        from citybrain.traffic import plans

        page = await command_flows.list_commands(self.platform, cursor=None, limit=100, status="pending",
                                                 target=None, system_id=self.system_id, newest_first=False)
        by_entity = {self.signal_entity_id(t): t for t in self.description["intersections"]}
        for command in page.items:
            parameters = command.parameters or {}
            tls_id = by_entity.get(command.target)
            try:
                if tls_id is None:
                    raise InvalidInput.at("target", f"{command.target} is not a signal of this twin")
                setting = ({"controller": parameters["controller"]} if parameters.get("controller")
                           else {"timing": parameters.get("timing") or {}})
                answer = await self.call("assign", [tls_id], setting)
            except ConnectionError as error:
                await self._restart(str(error))
                return
            except (CityBrainError, KeyError, TypeError, ValueError) as error:
                reason = error.detail if isinstance(error, CityBrainError) else f"bad parameters: {error}"
                await command_flows.acknowledge(self.platform, command.id, Acknowledgement(
                    status="failed", reason=reason[:2000]), ctx=TWIN_CONTEXT)
                if parameters.get("plan"):
                    await self.platform.run(plans.command_failed, self.platform, parameters["plan"], reason)
                continue
            await command_flows.acknowledge(self.platform, command.id, Acknowledgement(
                status="acknowledged", reason=f"applied at simulation time {answer['time']:g} s",
                result={"simTime": answer["time"]}), ctx=TWIN_CONTEXT)
            if parameters.get("plan"):
                await self.platform.run(plans.command_done, self.platform, parameters["plan"], answer["counters"],
                                        answer["epoch"])

    # ------------------------------------------------------------------ forks and status

    def check_soon(self, coroutine: Any) -> None:
        """Run a plan check in the background of this service (stopped with it)."""
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def status(self) -> dict[str, Any]:
        return {
            "enabled": self.enabled,
            "scenario": self.manifest.name if self.manifest else None,
            "orgUnit": self.org_unit,
            "controller": self.controller,
            "simTime": self.sim_time,
            "window": [self.description.get("begin"), self.description.get("end")] if self.description else None,
            "epoch": self.epoch,
            "running": bool(self.process is not None and self.process.alive()),
            "pid": self.process.pid if self.process is not None else None,
            "degraded": self.degraded,
            "restarts": self.restarts,
            "lastError": self.last_error,
            "controlErrors": self.control_errors[-5:],
            "reports": self.reports,
            "speedup": self.platform.settings.traffic_speedup,
            "intersections": len(self.description.get("intersections", {})),
            "roads": len(self.description.get("roads", {})),
        }


def live_twin(platform: Platform) -> LiveTraffic:
    """The running live twin, or a 503 problem when none runs."""
    service = find_service(platform, LiveTraffic)
    if service is None or not service.enabled:
        raise ServiceUnavailable("no live traffic twin runs (set CITYBRAIN_TRAFFIC_SCENARIO)")
    if service.process is None:
        raise ServiceUnavailable("the traffic twin is starting; try again shortly")
    return service
