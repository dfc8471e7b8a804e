"""Sensing routes: devices, telemetry (HTTP ingest, dead letters), alerts and the runtime's status."""

from __future__ import annotations

from datetime import datetime
from functools import partial
from typing import Annotated, Any

import sqlalchemy as sa
from fastapi import Path, Query
from fastapi.responses import Response
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

from citybrain.api.deps import ContextDep, JsonBody, PageDep, PlatformDep, json_response
from citybrain.api.routing import PathRouter
from citybrain.core.context import Context
from citybrain.core.errors import InvalidInput, NotFound, PayloadTooLarge, ServiceUnavailable
from citybrain.governance import access
from citybrain.hub.background import find_service
from citybrain.sensing import telemetry
from citybrain.sensing.alerts import service as alerts
from citybrain.sensing.alerts.events import AlertUpdated
from citybrain.sensing.alerts.models import AlertRow
from citybrain.sensing.devices import service as devices
from citybrain.sensing.devices.models import DeadLetterRow, DeviceRow
from citybrain.sensing.runtime import SensingRuntime
from citybrain.sensing.vitals import service as vitals

router = PathRouter(prefix="/api/v1", tags=["sensing"])
MAX_BATCH = 10_000
DeviceId = Annotated[str, Path(max_length=64, description="Device id, e.g. AQ-0000001")]




def _runtime(platform: Any) -> SensingRuntime:
    runtime = find_service(platform, SensingRuntime)
    if runtime is None or runtime.pipeline is None:
        raise ServiceUnavailable("sensing is starting or stopped; try again shortly")
    return runtime


def _device_view(row: DeviceRow, online: bool | None = None) -> dict[str, Any]:
    view = {
        "deviceId": row.device_id,
        "num": row.num,
        "deviceType": row.device_type,
        "orgUnit": row.org_unit,
        "lon": row.lon,
        "lat": row.lat,
        "enabled": row.enabled,
        "entityId": devices.device_entity_id(row.device_id),
        "createdAt": row.created_at.isoformat(),
    }
    if online is not None:
        view["online"] = online
    return view


def _items_errors(errors: list[Any]) -> list[dict[str, Any]]:
    return [
        {"index": e.index, "deviceId": e.entity_id, "field": e.field, "reason": e.reason, "status": e.status}
        for e in errors
    ]


@router.post(
    "/devices", summary="Register devices (a batch); answers each new device's secret once", status_code=201
)
async def register_devices(platform: PlatformDep, ctx: ContextDep, body: JsonBody) -> Response:
    items_raw = body if isinstance(body, list) else [body]
    if len(items_raw) > MAX_BATCH:
        raise PayloadTooLarge(f"at most {MAX_BATCH} devices per request, this one has {len(items_raw)}")
    items, errors = [], []
    for i, raw in enumerate(items_raw):
        if not isinstance(raw, dict):
            errors.append(
                {
                    "index": i,
                    "deviceId": None,
                    "field": f"[{i}]",
                    "reason": "an object is required",
                    "status": 422,
                }
            )
            items.append(devices.DeviceInput("", ""))
            continue
        org_unit = raw.get("orgUnit")
        if ctx.org_scope is not None and (org_unit is None or (
                isinstance(org_unit, str) and not access.within_scope(platform, ctx, org_unit))):
            errors.append({"index": i, "deviceId": raw.get("deviceId"), "field": f"[{i}].orgUnit",
                           "reason": "outside your org scope", "status": 403})
            items.append(devices.DeviceInput("", ""))
            continue
        lon, lat = raw.get("lon"), raw.get("lat")
        if not all(v is None or (isinstance(v, int | float) and not isinstance(v, bool)) for v in (lon, lat)):
            errors.append(
                {
                    "index": i,
                    "deviceId": raw.get("deviceId"),
                    "field": f"[{i}].lon",
                    "reason": "lon and lat must be numbers",
                    "status": 422,
                }
            )
            items.append(devices.DeviceInput("", ""))
            continue
        items.append(
            devices.DeviceInput(
                raw.get("deviceId"),
                raw.get("deviceType"),
                raw.get("orgUnit"),  # type: ignore[arg-type]
                lon,
                lat,
                raw.get("secret") if isinstance(raw.get("secret"), str) else None,
            )
        )
    bad = {e["index"] for e in errors}
    runtime = _runtime(platform)
    keep = [item for i, item in enumerate(items) if i not in bad]
    outcome = await runtime.register(keep, ctx=ctx)
    positions = [i for i in range(len(items)) if i not in bad]
    errors += [{**e, "index": positions[e["index"]]} for e in _items_errors(outcome.errors)]
    errors.sort(key=lambda e: e["index"])
    created = [{"deviceId": d, "num": n, "secret": s} for d, n, s in outcome.created]
    status = (
        201
        if created and not errors
        else 207
        if errors and (created or outcome.existing)
        else 422
        if errors
        else 200
    )
    return json_response({"created": created, "existing": outcome.existing, "errors": errors}, status)


@router.get("/devices", summary="List devices (filter by type and org unit, including its descendants)")
async def list_devices(
    platform: PlatformDep,
    ctx: ContextDep,
    page: PageDep,
    deviceType: Annotated[str | None, Query()] = None,
    orgUnit: Annotated[str | None, Query()] = None,
) -> Response:
    runtime = _runtime(platform)
    if deviceType is not None and deviceType not in runtime.types:
        raise InvalidInput.at("deviceType", f"unknown device type {deviceType!r}")
    org_units = access.scope_units(platform, ctx, orgUnit)
    try:
        after = int(page.cursor) if page.cursor else 0
    except ValueError:
        raise InvalidInput.at("cursor", "not a cursor this API returned") from None

    def work() -> list[DeviceRow]:
        stmt = sa.select(DeviceRow).where(DeviceRow.num > after)
        if deviceType is not None:
            stmt = stmt.where(DeviceRow.device_type == deviceType)
        if org_units is not None:
            stmt = stmt.where(DeviceRow.org_unit.in_(org_units))
        with platform.session() as session:
            return list(session.scalars(stmt.order_by(DeviceRow.num).limit(page.limit + 1)))

    rows = await platform.run(work)
    next_cursor = str(rows[page.limit - 1].num) if len(rows) > page.limit else None
    rows = rows[: page.limit]
    online = runtime.online([r.num for r in rows])
    return json_response(
        {
            "items": [_device_view(r, o) for r, o in zip(rows, online, strict=True)],
            "next_cursor": next_cursor,
        },
        headers=page.next_link(next_cursor),
    )


@router.get("/devices/{device_id}", summary="One device, with whether it is online")
async def get_device(platform: PlatformDep, ctx: ContextDep, device_id: DeviceId) -> Response:
    runtime = _runtime(platform)

    def work() -> DeviceRow | None:
        with platform.session() as session:
            return session.scalar(sa.select(DeviceRow).where(DeviceRow.device_id == device_id))

    row = await platform.run(work)
    if row is None:
        raise NotFound(f"device {device_id} does not exist")
    access.require_in_scope(platform, ctx, row.org_unit, what="device")
    return json_response(_device_view(row, runtime.online([row.num])[0]))


@router.post("/telemetry", summary="Ingest readings over HTTP (a batch of at most 10,000)")
async def ingest(platform: PlatformDep, ctx: ContextDep, body: JsonBody) -> Response:
    """Each item is a payload (docs/sensing.md) with its `deviceId`. Bad items are kept as dead letters
    and reported by index; the good ones are accepted."""
    if not isinstance(body, list):
        raise InvalidInput.at("body", "a JSON array of readings is required")
    if len(body) > MAX_BATCH:
        raise PayloadTooLarge(f"at most {MAX_BATCH} readings per request, this one has {len(body)}")
    runtime = _runtime(platform)
    within = None if ctx.org_scope is None else partial(access.within_scope, platform, ctx)
    messages, item_of, refused = runtime.http_messages(body, within)
    report = await runtime.ingest(messages, source="http", refused=refused)
    refused_ids = {id(dead) for dead in refused}
    errors = [
        {"index": dead.position if id(dead) in refused_ids else item_of[dead.position], "reason": dead.reason}
        for dead in report.dead
    ]
    errors.sort(key=lambda e: e["index"])
    return json_response(
        {
            "accepted": report.accepted_count,
            "duplicates": report.duplicates,
            "outOfOrder": report.out_of_order,
            "errors": errors,
        },
        207 if errors else 200,
    )


@router.get("/telemetry/dead-letters", summary="Messages the ingest refused, newest first, with the reason")
async def dead_letters(
    platform: PlatformDep, page: PageDep, deviceId: Annotated[str | None, Query(max_length=64)] = None
) -> Response:
    try:
        before = int(page.cursor) if page.cursor else None
    except ValueError:
        raise InvalidInput.at("cursor", "not a cursor this API returned") from None

    def work() -> list[DeadLetterRow]:
        stmt = sa.select(DeadLetterRow)
        if deviceId is not None:
            stmt = stmt.where(DeadLetterRow.device_id == deviceId)
        if before is not None:
            stmt = stmt.where(DeadLetterRow.id < before)
        with platform.session() as session:
            return list(session.scalars(stmt.order_by(DeadLetterRow.id.desc()).limit(page.limit + 1)))

    rows = await platform.run(work)
    next_cursor = str(rows[page.limit - 1].id) if len(rows) > page.limit else None
    items = [
        {
            "id": r.id,
            "receivedAt": r.received_at.isoformat(),
            "source": r.source,
            "topic": r.topic,
            "deviceId": r.device_id,
            "reason": r.reason,
            "payload": r.payload.decode("utf-8", "replace"),
        }
        for r in rows[: page.limit]
    ]
    return json_response({"items": items, "next_cursor": next_cursor}, headers=page.next_link(next_cursor))


class DeadLetterReplay(BaseModel):
    """Which dead letters to send through the pipeline again; at least one filter."""

    model_config = ConfigDict(extra="forbid")

    ids: list[Annotated[int, Field(ge=1, le=2**63 - 1)]] | None = Field(None, max_length=10_000,
                                                                       description="These dead letters")
    deviceId: str | None = Field(None, max_length=64, description="Those of one device")
    reason: str | None = Field(None, max_length=200, description="Those whose reason contains this text")
    since: AwareDatetime | None = Field(None, description="Those received at or after this time")
    limit: int = Field(10_000, ge=1, le=100_000, description="At most this many, oldest first")

    @model_validator(mode="after")
    def _some_filter(self) -> DeadLetterReplay:
        if not (self.ids or self.deviceId or self.reason or self.since):
            raise ValueError("name the dead letters to replay: ids, deviceId, reason or since")
        return self


@router.post("/telemetry/dead-letters/replay",
             summary="Send dead letters through the ingest again (after registering their device, say)")
async def replay_dead_letters(platform: PlatformDep, request: DeadLetterReplay) -> Response:
    """Accepted readings are stored (and judged by the rules when they are the device's newest); those
    refused again stay dead letters with the reason of today; the replayed rows are removed."""
    outcome = await _runtime(platform).replay_dead_letters(
        ids=request.ids, device_id=request.deviceId, reason=request.reason, since=request.since,
        limit=request.limit)
    return json_response(outcome)


@router.get("/alerts", summary="Alerts (filter by status, severity, device type, org unit with descendants)",
            openapi_extra=access.access("alerts"))
async def list_alerts(
    platform: PlatformDep,
    ctx: ContextDep,
    page: PageDep,
    status: Annotated[str | None, Query()] = None,
    severity: Annotated[str | None, Query()] = None,
    deviceType: Annotated[str | None, Query()] = None,
    orgUnit: Annotated[str | None, Query()] = None,
) -> Response:
    org_units = access.scope_units(platform, ctx, orgUnit)

    def work() -> tuple[list[dict[str, Any]], str | None]:
        with platform.session() as session:
            rows, next_cursor = alerts.list_alerts(
                session,
                status=status,
                severity=severity,
                org_units=org_units,
                device_type=deviceType,
                after=page.cursor,
                limit=page.limit,
            )
            return [alerts.alert_view(r) for r in rows], next_cursor

    items, next_cursor = await platform.run(work)
    return json_response({"items": items, "next_cursor": next_cursor}, headers=page.next_link(next_cursor))


@router.post("/alerts/{alert_id}/acknowledge", summary="Acknowledge an open alert",
             openapi_extra=access.access("alerts"))
async def acknowledge(
    platform: PlatformDep, ctx: ContextDep, alert_id: Annotated[str, Path(max_length=36)]
) -> Response:
    def work() -> tuple[dict[str, Any], list[Any]]:
        with platform.transaction() as session:
            _alert_in_scope(platform, ctx, session, alert_id)
            view = alerts.alert_view(
                alerts.acknowledge(session, alert_id=alert_id, actor=ctx.actor, now=platform.clock.now())
            )
            return view, alerts.mirror(platform, session, [view], ctx=ctx)

    view, events = await platform.run(work)
    await platform.bus.publish(AlertUpdated(context=ctx, alert=view), *events)
    return json_response(view)


@router.post("/alerts/{alert_id}/assign", summary="Assign an alert to a person or team",
             openapi_extra=access.access("alerts"))
async def assign(
    platform: PlatformDep, ctx: ContextDep, body: JsonBody, alert_id: Annotated[str, Path(max_length=36)]
) -> Response:
    assignee = body.get("assignee") if isinstance(body, dict) else None
    if not isinstance(assignee, str):
        raise InvalidInput.at("assignee", "a string is required")

    def work() -> tuple[dict[str, Any], list[Any]]:
        with platform.transaction() as session:
            _alert_in_scope(platform, ctx, session, alert_id)
            view = alerts.alert_view(
                alerts.assign(session, alert_id=alert_id, assignee=assignee, now=platform.clock.now())
            )
            return view, alerts.mirror(platform, session, [view], ctx=ctx)

    view, events = await platform.run(work)
    await platform.bus.publish(AlertUpdated(context=ctx, alert=view), *events)
    return json_response(view)


def _alert_in_scope(platform: Any, ctx: Context, session: Any, alert_id: str) -> None:
    row = session.get(AlertRow, alert_id)
    if row is not None:
        access.require_in_scope(platform, ctx, row.org_unit, what="alert")


@router.get("/sensing/status", summary="Devices indexed and online, open alerts, state memory and counters")
async def sensing_status(platform: PlatformDep) -> Response:
    return json_response(_runtime(platform).status())


@router.get("/vitals", summary="The latest vital signs (城市运行体征) of an org unit and its subtree")
async def vital_signs(
    platform: PlatformDep, ctx: ContextDep, orgUnit: Annotated[str | None, Query()] = None
) -> Response:
    """Without `orgUnit`: the district's (the root's), or for a caller with an org scope its first unit's."""
    default = ctx.org_scope[0] if ctx.org_scope else next(iter(platform.org_tree.roots), None)
    code = orgUnit or default
    if code is None or code not in platform.org_tree:
        raise InvalidInput.at("orgUnit", f"unknown org unit {orgUnit!r}")
    access.scope_units(platform, ctx, code)

    def work() -> list[dict[str, Any]]:
        with platform.session() as session:
            return [
                {"indicator": r.indicator, "value": r.value, "ts": r.ts.isoformat()}
                for r in vitals.latest(session, org_unit=code)
            ]

    return json_response({"orgUnit": code, "indicators": await platform.run(work)})


@router.get("/vitals/history", summary="One indicator of one org unit over time, newest first")
async def vital_sign_history(
    platform: PlatformDep,
    ctx: ContextDep,
    orgUnit: Annotated[str, Query()],
    indicator: Annotated[str, Query(max_length=64)],
    since: Annotated[datetime | None, Query()] = None,
    until: Annotated[datetime | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
) -> Response:
    access.scope_units(platform, ctx, orgUnit)
    for name, value in (("since", since), ("until", until)):
        if value is not None and value.tzinfo is None:
            raise InvalidInput.at(name, "a time with its zone is required, e.g. 2026-12-01T08:00:00Z")

    def work() -> list[dict[str, Any]]:
        with platform.session() as session:
            return [
                {"value": r.value, "ts": r.ts.isoformat()}
                for r in vitals.history(
                    session, org_unit=orgUnit, indicator=indicator, since=since, until=until, limit=limit
                )
            ]

    return json_response({"orgUnit": orgUnit, "indicator": indicator, "points": await platform.run(work)})


def _csv_param(value: str | None) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()] if value else []


@router.get("/telemetry", summary="Readings of devices or a device type over a time range, raw or in buckets")
async def query_telemetry(
    platform: PlatformDep,
    ctx: ContextDep,
    start: Annotated[datetime | None, Query(description="Inclusive, with its zone")] = None,
    end: Annotated[datetime | None, Query(description="Exclusive, with its zone")] = None,
    deviceId: Annotated[str | None, Query(description="Device ids, comma-separated")] = None,
    deviceType: Annotated[str | None, Query()] = None,
    measurement: Annotated[str | None, Query(description="Measurements, comma-separated")] = None,
    bucket: Annotated[
        int | None, Query(description="Bucket length in seconds (aligned to the epoch)")
    ] = None,
    agg: Annotated[str | None, Query(description="avg,min,max,count,last (default all)")] = None,
    limit: Annotated[int, Query(ge=1, le=1_000_000)] = 10_000,
) -> Response:
    """What the lake holds (readings become queryable within `lake_flush_s` of their arrival). A caller with
    an org scope gets the readings of devices placed in its area only."""
    runtime = _runtime(platform)
    org_units = access.scope_units(platform, ctx, None)

    def work() -> list[dict[str, Any]]:
        with platform.session() as session:
            query = telemetry.build_query(
                session,
                device_ids=_csv_param(deviceId),
                device_type=deviceType,
                measurements=_csv_param(measurement),
                start=start,
                end=end,
                bucket_s=bucket,
                aggregations=_csv_param(agg),
                limit=limit,
                types=list(runtime.types),
                org_units=org_units,
            )
            if query is None:
                return []
            return telemetry.rows(telemetry.with_device_ids(session, runtime.lake.query(query)))

    items = await platform.run(work)
    return json_response({"items": items, "count": len(items)})
