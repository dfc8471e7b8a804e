"""Signal plans: simulated on a forked twin first, applied as hub commands only when predicted better.

A plan changes the control of some intersections of the live twin (a controller, or green durations).
Its life:

    proposed → simulating → applied → measured
                          ↘ rejected      (predicted no better than the current control)
                          ↘ failed        (the candidate's controller chose an illegal phase, the fork broke,
                                           a command failed, or the twin restarted before the horizon ended)

Checking: the live twin saves its state; a spawned process loads it twice and runs the horizon, once with
the current control (baseline) and once with the plan (candidate), measuring mean delay per vehicle
(vehicle-seconds halted or waiting to enter, per vehicle served) and throughput (`traffic.control`). The
plan is applied when the candidate's delay is at least `IMPROVEMENT` lower: one hub command per
intersection, addressed to its `TrafficSignal` entity, which the live service executes on the running
twin. Once the horizon has passed on the live twin after the commands ran, the same measures taken there
are stored as the outcome, next to the prediction.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from citybrain.core.context import Context, new_id
from citybrain.core.errors import CityBrainError, InvalidInput, NotFound
from citybrain.hub.entities.ngsi import format_datetime
from citybrain.hub.entities.service import decode_cursor, encode_cursor
from citybrain.traffic.models import SignalPlanRow
from citybrain.traffic.schemas import PlanCreate, PlanPage, PlanRead
from citybrain.traffic.scenarios import ScenarioManifest

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from citybrain.platform import Platform
    from citybrain.traffic.live import LiveTraffic

log = logging.getLogger(__name__)
IMPROVEMENT = 0.02  # the candidate's predicted delay must be this much (2 %) below the baseline's
PLANNER_ACTOR = "system:traffic-planner"


# -- the fork (runs in a spawned process) -----------------------------------------------------------------------


def _run_fork(manifest: ScenarioManifest, state: str, snapshot: dict[str, Any], horizon: float,
              lights: list[str] | None, setting: dict[str, Any] | None) -> dict[str, Any]:
    from citybrain.traffic.control import Control, Sensors, horizon_metrics, run_for
    from citybrain.traffic.runtime import Twin

    twin = Twin().start(manifest, program="external")
    try:
        twin.load_state(state, snapshot["greens"])
        control = Control(twin, "fixed")
        control.restore(snapshot["modes"])
        if lights is not None and setting is not None:
            control.assign(lights, setting)
        sensors = Sensors(twin)
        start = sensors.counters()
        run_for(twin, control, sensors, twin.time + horizon)
        metrics = horizon_metrics(start, sensors.counters())
        return {**metrics, "errors": control.errors}
    finally:
        twin.close()


def simulate(manifest: ScenarioManifest, state: str, snapshot: dict[str, Any], horizon: float,
             lights: list[str], setting: dict[str, Any], classes: dict[str, type] | None = None) -> tuple[str, Any]:
    """Worker entry: baseline then candidate from the same saved state (one SUMO at a time here, so the
    live twin and this fork are the only two simulations running). `classes`: the controller classes the
    proposing process resolved, registered here if this process does not know them (plug-ins registered
    at run time rather than through an entry point)."""
    from citybrain.traffic.controllers.base import load_controllers

    registry = load_controllers()
    for slug, cls in (classes or {}).items():
        if slug not in registry:
            registry.add(slug, cls)
    try:
        baseline = _run_fork(manifest, state, snapshot, horizon, None, None)
        candidate = _run_fork(manifest, state, snapshot, horizon, lights, setting)
        return "ok", {"baseline": baseline, "candidate": candidate}
    except CityBrainError as error:
        return "error", error.detail
    except Exception as error:  # the fork broke: the plan fails, with the reason
        return "error", f"{type(error).__name__}: {error}"


# -- store ------------------------------------------------------------------------------------------------------


def plan_read(row: SignalPlanRow) -> PlanRead:
    return PlanRead(id=row.id, scenario=row.scenario, intersections=row.intersections, controller=row.controller,
                    timing=row.timing, horizon_s=row.horizon_s, status=row.status,  # type: ignore[arg-type]
                    reason=row.reason, prediction=row.prediction, outcome=row.outcome, commands=row.commands,
                    applied_sim_time=row.applied_sim_time, history=row.history, created_by=row.created_by,
                    created_at=row.created_at, updated_at=row.updated_at)


def _move(row: SignalPlanRow, status: str, reason: str | None, now: datetime, actor: str = PLANNER_ACTOR) -> None:
    row.status, row.reason, row.updated_at = status, reason, now
    row.history = [*row.history, {"status": status, "at": format_datetime(now), "reason": reason, "actor": actor}]


def _get(session: Session, plan_id: str) -> SignalPlanRow:
    row = session.get(SignalPlanRow, plan_id)
    if row is None:
        raise NotFound(f"traffic plan {plan_id} does not exist")
    return row


async def get_plan(platform: Platform, plan_id: str) -> PlanRead:
    def work() -> PlanRead:
        with platform.session() as session:
            return plan_read(_get(session, plan_id))

    return await platform.run(work)


async def list_plans(platform: Platform, *, cursor: str | None, limit: int, status: str | None) -> PlanPage:
    after = decode_cursor(cursor) if cursor else None

    def work() -> PlanPage:
        stmt = sa.select(SignalPlanRow).order_by(SignalPlanRow.id.desc())
        if after:
            stmt = stmt.where(SignalPlanRow.id < after)
        if status is not None:
            stmt = stmt.where(SignalPlanRow.status == status)
        with platform.session() as session:
            rows = list(session.scalars(stmt.limit(limit + 1)))
        more = len(rows) > limit
        rows = rows[:limit]
        return PlanPage(items=[plan_read(r) for r in rows], next_cursor=encode_cursor(rows[-1].id) if more else None)

    return await platform.run(work)


# -- flows ------------------------------------------------------------------------------------------------------


def check_plan(live: LiveTraffic, data: PlanCreate) -> dict[str, Any]:
    """The plan's setting, or InvalidInput naming the field: unknown intersections, controllers or phases."""
    from citybrain.traffic.control import check_controller

    known = live.description.get("intersections", {})
    for i, tls_id in enumerate(data.intersections):
        if tls_id not in known:
            raise InvalidInput.at(f"intersections[{i}]", f"no signalised intersection {tls_id!r} in "
                                                          f"{live.manifest.name if live.manifest else 'the twin'}; "
                                                          "see GET /api/v1/traffic/intersections")
    if data.controller is not None:
        check_controller(data.controller)
        return {"controller": data.controller}
    assert data.timing is not None
    for tls_id in data.intersections:
        greens = known[tls_id]["greenPhases"]
        for phase in data.timing:
            if phase not in greens:
                raise InvalidInput.at(f"timing.{phase}", f"not a green phase of {tls_id}; its green phases: "
                                                         f"{', '.join(map(str, greens))}")
    return {"timing": {str(k): v for k, v in data.timing.items()}}


async def propose(platform: Platform, live: LiveTraffic, data: PlanCreate, *, ctx: Context) -> PlanRead:
    """Store the plan and start checking it on a forked twin (the answer comes back as `proposed`)."""
    setting = check_plan(live, data)
    now = platform.clock.now()
    assert live.manifest is not None

    def work() -> PlanRead:
        with platform.transaction() as session:
            row = SignalPlanRow(
                id=new_id(), scenario=live.manifest.name, intersections=list(dict.fromkeys(data.intersections)),
                controller=setting.get("controller"), timing=setting.get("timing"), horizon_s=data.horizon_s,
                status="proposed", reason="proposed", prediction=None, outcome=None, commands=[],
                applied_sim_time=None, created_by=ctx.actor, created_at=now, updated_at=now,
                history=[{"status": "proposed", "at": format_datetime(now), "reason": "proposed", "actor": ctx.actor}])
            session.add(row)
            session.flush()
            return plan_read(row)

    read = await platform.run(work)
    live.check_soon(run_check(platform, live, read.id, ctx=ctx))
    return read


def _set(platform: Platform, plan_id: str, status: str, reason: str | None, **values: Any) -> None:
    with platform.transaction() as session:
        row = _get(session, plan_id)
        for name, value in values.items():
            setattr(row, name, value)
        _move(row, status, reason, platform.clock.now())


async def run_check(platform: Platform, live: LiveTraffic, plan_id: str, *, ctx: Context) -> None:
    """Fork, compare, then apply (hub commands) or reject; any failure fails the plan, never the twin."""
    try:
        await _check(platform, live, plan_id, ctx=ctx)
    except asyncio.CancelledError:
        raise
    except Exception as error:
        reason = error.detail if isinstance(error, CityBrainError) else f"{type(error).__name__}: {error}"
        log.warning("traffic plan %s failed: %s", plan_id, reason)
        await platform.run(_set, platform, plan_id, "failed", reason)


async def _check(platform: Platform, live: LiveTraffic, plan_id: str, *, ctx: Context) -> None:
    plan = await get_plan(platform, plan_id)
    await platform.run(_set, platform, plan_id, "simulating", "forking the live twin")
    folder = Path(platform.settings.home) / "traffic" / "forks"
    folder.mkdir(parents=True, exist_ok=True)
    state = folder / f"{plan_id}.xml"
    try:
        snapshot = await live.call("save", str(state))
        setting = {"controller": plan.controller} if plan.controller else {"timing": plan.timing}
        classes: dict[str, type] = {}
        for slug in {plan.controller, *(m.get("controller") for m in snapshot["modes"].values())} - {None, "fixed"}:
            from citybrain.traffic.controllers.base import controller

            classes[slug] = controller(slug)  # type: ignore[arg-type]
        assert live.manifest is not None
        pool = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"))
        try:
            status, payload = await asyncio.wrap_future(pool.submit(
                simulate, live.manifest, str(state), snapshot, plan.horizon_s, plan.intersections, setting,
                classes))
        finally:  # not waiting: a server stopping mid-check must not block its event loop on the fork
            pool.shutdown(wait=False, cancel_futures=True)
    finally:
        state.unlink(missing_ok=True)
    if status == "error":
        raise InvalidInput.at("plan", f"the forked twin could not run the plan: {payload}")
    baseline, candidate = payload["baseline"], payload["candidate"]
    prediction = {"simTime": snapshot["time"], "baseline": baseline, "candidate": candidate,
                  "improvement": round(1 - candidate["mean_delay_s"] / baseline["mean_delay_s"], 4)
                  if baseline["mean_delay_s"] else 0.0}
    if candidate["errors"]:
        await platform.run(_set, platform, plan_id, "failed",
                           f"the plan's controller broke the rules in the forked twin: {candidate['errors'][0]}",
                           prediction=prediction)
        return
    verdict = (f"predicted mean delay {candidate['mean_delay_s']:g} s against {baseline['mean_delay_s']:g} s "
               f"with the current control over {plan.horizon_s:g} s (throughput {candidate['throughput']} "
               f"against {baseline['throughput']})")
    if candidate["mean_delay_s"] > baseline["mean_delay_s"] * (1 - IMPROVEMENT):
        await platform.run(_set, platform, plan_id, "rejected",
                           f"not at least {IMPROVEMENT:.0%} better: {verdict}", prediction=prediction)
        return
    from citybrain.hub.commands import flows as command_flows
    from citybrain.hub.commands.schemas import CommandCreate

    commands = []
    for tls_id in plan.intersections:
        parameters: dict[str, Any] = {"plan": plan_id, **setting}
        read = await command_flows.issue_command(platform, CommandCreate(
            target=live.signal_entity_id(tls_id), name="applySignalPlan", parameters=parameters),
            ctx=ctx.child(actor=PLANNER_ACTOR))
        commands.append(read.id)
    await platform.run(_set, platform, plan_id, "applied", f"better: {verdict}", prediction=prediction,
                       commands=commands)
    live.wake()


# -- called by the live service ------------------------------------------------------------------------------------


def command_done(platform: Platform, plan_id: str, counters: dict[str, float], epoch: int) -> None:
    """One of the plan's commands ran on the live twin: the measurement starts with the first."""
    with platform.transaction() as session:
        row = session.get(SignalPlanRow, plan_id)
        if row is None or row.status != "applied" or row.applied_sim_time is not None:
            return
        row.applied_sim_time = counters["time"]
        row.outcome = {"start": counters, "epoch": epoch}
        row.updated_at = platform.clock.now()


def command_failed(platform: Platform, plan_id: str, reason: str) -> None:
    with platform.transaction() as session:
        row = session.get(SignalPlanRow, plan_id)
        if row is not None and row.status == "applied":
            _move(row, "failed", f"the live twin refused the command: {reason}", platform.clock.now())


def measure_due(platform: Platform, counters: dict[str, float], epoch: int) -> int:
    """Store the outcome of applied plans whose horizon has passed on the live twin."""
    from citybrain.traffic.control import horizon_metrics

    measured = 0
    with platform.transaction() as session:
        rows = session.scalars(sa.select(SignalPlanRow).where(SignalPlanRow.status == "applied",
                                                              SignalPlanRow.applied_sim_time.is_not(None)))
        for row in rows:
            start = (row.outcome or {}).get("start")
            if start is None or (row.outcome or {}).get("epoch") != epoch:
                continue
            if counters["time"] < start["time"] + row.horizon_s - 1e-6:
                continue
            outcome = horizon_metrics(start, counters)
            predicted = (row.prediction or {}).get("candidate", {}).get("mean_delay_s")
            row.outcome = {**outcome, "start": start, "epoch": epoch, "predicted_mean_delay_s": predicted}
            _move(row, "measured", f"measured mean delay {outcome['mean_delay_s']:g} s over "
                                   f"{outcome['seconds']:g} s (predicted {predicted:g} s)", platform.clock.now())
            measured += 1
    return measured


def fail_measuring(platform: Platform, reason: str) -> None:
    """Applied plans still being measured cannot be: the live twin started over."""
    with platform.transaction() as session:
        for row in session.scalars(sa.select(SignalPlanRow).where(SignalPlanRow.status == "applied",
                                                                  SignalPlanRow.applied_sim_time.is_not(None))):
            _move(row, "failed", f"not measured: {reason}", platform.clock.now())


def fail_interrupted(platform: Platform) -> int:
    """At start: plans a previous run of the service left being checked or measured cannot finish (the
    fork is gone, the twin started over)."""
    now = platform.clock.now()
    failed = 0
    with platform.transaction() as session:
        stmt = sa.select(SignalPlanRow).where(sa.or_(
            SignalPlanRow.status.in_(("proposed", "simulating")),
            sa.and_(SignalPlanRow.status == "applied", SignalPlanRow.applied_sim_time.is_not(None))))
        for row in session.scalars(stmt):
            _move(row, "failed", f"interrupted: the traffic twin was restarted while the plan was {row.status}", now)
            failed += 1
    return failed
