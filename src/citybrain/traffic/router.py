"""Traffic routes: the live twin's status and intersections, and signal plans. Thin: each validates,
calls one flow and returns a schema."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Path, Query, Response

from citybrain.api.deps import ContextDep, PageDep, PlatformDep
from citybrain.api.routing import PathRouter
from citybrain.hub.background import find_service
from citybrain.traffic import plans
from citybrain.traffic.live import LiveTraffic, live_twin
from citybrain.traffic.schemas import PlanCreate, PlanPage, PlanRead, PlanStatus

router = PathRouter(prefix="/api/v1/traffic", tags=["traffic"])
PlanId = Annotated[str, Path(max_length=64, description="Plan id")]


@router.get("/status", summary="The live twin: scenario, simulation time, controller, degraded or not")
async def status(platform: PlatformDep) -> dict[str, Any]:
    service = find_service(platform, LiveTraffic)
    if service is None or not service.enabled:
        return {"enabled": False}
    return service.status()


@router.get("/intersections", summary="The live twin's signalised intersections with their state now")
async def intersections(platform: PlatformDep) -> dict[str, Any]:
    live = live_twin(platform)
    return {"simTime": live.sim_time, "items": [
        {"id": tls_id, "entityId": live.signal_entity_id(tls_id), **about, **live.signals.get(tls_id, {})}
        for tls_id, about in live.description["intersections"].items()]}


@router.post("/plans", status_code=201, response_model=PlanRead,
             summary="Propose a plan: simulated on a forked twin, applied only if predicted better")
async def propose_plan(platform: PlatformDep, ctx: ContextDep, body: PlanCreate, response: Response) -> PlanRead:
    read = await plans.propose(platform, live_twin(platform), body, ctx=ctx)
    response.headers["Location"] = f"/api/v1/traffic/plans/{read.id}"
    return read


@router.get("/plans", response_model=PlanPage, summary="Plans, newest first")
async def list_plans(platform: PlatformDep, page: PageDep, response: Response,
                     status: Annotated[PlanStatus | None, Query()] = None) -> PlanPage:
    result = await plans.list_plans(platform, cursor=page.cursor, limit=page.limit, status=status)
    response.headers.update(page.next_link(result.next_cursor))
    return result


@router.get("/plans/{plan_id}", response_model=PlanRead, summary="One plan with its prediction and outcome")
async def get_plan(platform: PlatformDep, plan_id: PlanId) -> PlanRead:
    return await plans.get_plan(platform, plan_id)
