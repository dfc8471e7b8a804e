"""Disposal routes: cases (open, list, act, follow), reporters' feedback, the inbox of a handling unit,
and the routing rules."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime
from typing import Annotated, Any, Literal

import orjson
from fastapi import Depends, Path, Query, Request
from fastapi.responses import Response, StreamingResponse

from citybrain.api.deps import ContextDep, JsonBody, PageDep, PlatformDep, RowId, json_response
from citybrain.api.routing import PathRouter
from citybrain.core.context import Context
from citybrain.core.errors import InvalidInput, ServiceUnavailable
from citybrain.disposal import flows, service
from citybrain.disposal.events import RoutingRulesChanged
from citybrain.disposal.lifecycle import Status, statuses_of
from citybrain.disposal.routing import Router, RoutingRules
from citybrain.disposal.runtime import Disposal
from citybrain.disposal.schemas import (
    CaseCreate,
    CasePage,
    CaseRead,
    Feedback,
    ReportRead,
    TransitionRead,
    TransitionRequest,
)
from citybrain.governance import access
from citybrain.governance.middleware import PERSONAL_DATA
from citybrain.hub.background import find_service

router = PathRouter(prefix="/api/v1", tags=["disposal"])
CaseRef = Annotated[str, Path(max_length=36, description="Case id or number (e.g. 20261203-000042)")]
INBOX_STATUSES = (Status.DISPATCHED, Status.RECEIVED, Status.IN_PROGRESS, Status.ESCALATED, Status.RETURNED,
                  Status.TRIAGED, Status.REOPENED, Status.HANDLED)


def disposal_of(platform: Any) -> Disposal:
    found = find_service(platform, Disposal)
    if found is None:
        raise ServiceUnavailable("disposal is not running in this process")
    return found


def masker_for(ctx: Context) -> Any:
    """How personal data in free text is shown to this reader (by role, see hotline.pii)."""
    from citybrain.hotline.masking import text_masker

    return text_masker(ctx)


async def published(platform: Any, outcome: flows.Outcome, ctx: Context) -> dict[str, Any]:
    """Publish what a flow did, and the case as this reader may see it (free text masked by role)."""
    if outcome.events:
        await platform.bus.publish(*outcome.events)
    return {**outcome.case, "description": masker_for(ctx)(outcome.case["description"])}


@router.post("/cases", status_code=201, summary="Open a case (grid inspector, department system, any channel)",
             responses={201: {"model": CaseRead}})
async def open_case(platform: PlatformDep, ctx: ContextDep, body: CaseCreate) -> Response:
    """Opens the case and, unless `dispatch` is false, triages it by the catalogue and the routing rules and
    dispatches it to the handling unit, whose respond clock starts."""
    disposal = disposal_of(platform)
    outcome = await platform.run(flows.open_case, platform, disposal, body, ctx=ctx)
    view = await published(platform, outcome, ctx)
    return json_response(view, 201, headers={"Location": f"/api/v1/cases/{outcome.case['id']}"})


async def case_filters(
    platform: PlatformDep,
    ctx: ContextDep,
    status: Annotated[str | None, Query(description="Comma-separated statuses, or 'open'")] = None,
    eventType: Annotated[str | None, Query(max_length=16)] = None,
    department: Annotated[str | None, Query(max_length=32)] = None,
    handlingUnit: Annotated[str | None, Query(max_length=64)] = None,
    orgUnit: Annotated[str | None, Query(max_length=64, description="Located in this unit or below")] = None,
    channel: Annotated[str | None, Query(max_length=16)] = None,
    breached: Annotated[bool | None, Query(description="Only cases that breached (or never breached) an SLA")]
    = None,
    createdFrom: Annotated[datetime | None, Query()] = None,
    createdTo: Annotated[datetime | None, Query()] = None,
) -> dict[str, Any]:
    """The filters of a case list or export as `service.list_cases` takes them, kept to the caller's area."""
    if handlingUnit is not None and handlingUnit not in platform.org_tree:
        raise InvalidInput.at("handlingUnit", f"unknown org unit {handlingUnit!r}")
    for name, moment in (("createdFrom", createdFrom), ("createdTo", createdTo)):
        if moment is not None and moment.tzinfo is None:
            raise InvalidInput.at(name, "a time with its zone is required, e.g. 2026-12-01T08:00:00Z")
    return {"status": statuses_of(status), "event_type": eventType, "department": department,
            "handling_units": [handlingUnit] if handlingUnit else None,
            "org_units": access.scope_units(platform, ctx, orgUnit),  # a station or sub-centre: its own area
            "channel": channel, "breached": breached, "created_from": createdFrom, "created_to": createdTo}


CaseFilters = Annotated[dict[str, Any], Depends(case_filters)]


@router.get("/cases", summary="Cases, newest first (filters combine)", responses={200: {"model": CasePage}})
async def list_cases(platform: PlatformDep, ctx: ContextDep, page: PageDep, filters: CaseFilters) -> Response:
    before = service.check_page_cursor(page.cursor)
    mask = masker_for(ctx)

    def work() -> list[dict[str, Any]]:
        with platform.session() as session:
            rows = service.list_cases(session, **filters, before_id=before, limit=page.limit + 1)
            return [service.case_view(r, mask=mask) for r in rows]

    items = await platform.run(work)
    next_cursor = items[page.limit - 1]["id"] if len(items) > page.limit else None
    return json_response({"items": items[: page.limit], "next_cursor": next_cursor}, headers=page.next_link(next_cursor))


EXPORT_COLUMNS = ("id", "number", "eventType", "category", "title", "description", "status", "priority", "level",
                  "orgUnit", "handlingUnit", "leadDepartment", "channel", "address", "lon", "lat", "createdAt",
                  "dispatchedAt", "receivedAt", "handledAt", "closedAt", "breachedAt", "escalations", "returns",
                  "reopens", "reports", "respondOnTime", "handleOnTime", "closeOnTime")
EXPORT_CHUNK = 1000


@router.get("/cases/export", summary="Every case the filters match, as NDJSON or CSV (personal data masked)",
            openapi_extra=PERSONAL_DATA, response_class=StreamingResponse, responses={
                200: {"content": {"application/x-ndjson": {"schema": {"type": "string"}},
                                  "text/csv": {"schema": {"type": "string"}}}}})
async def export_cases(
    platform: PlatformDep,
    ctx: ContextDep,
    filters: CaseFilters,
    format: Annotated[Literal["ndjson", "csv"], Query(description="ndjson: one case per line; csv: a table")]
    = "ndjson",
    reports: Annotated[bool, Query(description="NDJSON only: each case with its reports (contacts masked)")]
    = False,
) -> StreamingResponse:
    """Streams the cases newest first, a thousand at a time, within the caller's org scope. Free text,
    addresses and reporters' contacts are masked by the caller's roles exactly as the case routes mask
    them. The export is on the audit log as a read of personal data (with its filters)."""
    from citybrain.hotline.masking import contact_masker

    if reports and format == "csv":
        raise InvalidInput.at("reports", "reports come with NDJSON only (format=ndjson)")
    mask, mask_contact = masker_for(ctx), contact_masker(ctx)

    def chunk(before: str | None) -> tuple[list[dict[str, Any]], str | None]:
        with platform.session() as session:
            rows = service.list_cases(session, **filters, before_id=before, limit=EXPORT_CHUNK)
            views = [service.case_view(r, mask=mask) for r in rows]
            if reports:
                for row, view in zip(rows, views, strict=True):
                    view["reportItems"] = [service.report_view(r, mask=mask, mask_contact=mask_contact)
                                           for r in service.reports(session, case_id=row.id)]
        return views, rows[-1].id if len(rows) == EXPORT_CHUNK else None

    async def lines() -> AsyncIterator[bytes]:
        before: str | None = None
        if format == "csv":
            yield _csv_line(EXPORT_COLUMNS)
        while True:
            views, before = await platform.run(chunk, before)
            if format == "csv":
                yield b"".join(_csv_line([_flat(view).get(c) for c in EXPORT_COLUMNS]) for view in views)
            else:
                yield b"".join(orjson.dumps(view) + b"\n" for view in views)
            if before is None:
                return

    media = "text/csv; charset=utf-8" if format == "csv" else "application/x-ndjson"
    day = platform.clock.now().date().isoformat()
    return StreamingResponse(lines(), media_type=media, headers={
        "Content-Disposition": f'attachment; filename="cases-{day}.{format}"'})


def _flat(view: dict[str, Any]) -> dict[str, Any]:
    location = view.get("location") or {}
    lon, lat = (location.get("coordinates") or (None, None))[:2]
    on_time = view.get("onTime") or {}
    return {**view, "lon": lon, "lat": lat, "respondOnTime": on_time.get("respond"),
            "handleOnTime": on_time.get("handle"), "closeOnTime": on_time.get("close")}


def _csv_line(values: Any) -> bytes:
    import csv
    import io

    buffer = io.StringIO()
    csv.writer(buffer).writerow(["" if v is None else v for v in values])
    return buffer.getvalue().encode()


@router.get("/cases/inbox", summary="What a handling unit must act on, soonest due first (mobile-friendly)")
async def inbox(
    platform: PlatformDep,
    ctx: ContextDep,
    handlingUnit: Annotated[str, Query(max_length=64, description="The station, sub-centre or centre")],
    department: Annotated[str | None, Query(max_length=32)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> Response:
    """A compact list for a handler's phone: number, title, status, the next actions, due time, place."""
    access.scope_units(platform, ctx, handlingUnit, field="handlingUnit")
    mask = masker_for(ctx)

    def work() -> list[dict[str, Any]]:
        with platform.session() as session:
            rows = service.inbox(session, handling_unit=handlingUnit, department=department,
                                 statuses=[s.value for s in INBOX_STATUSES], limit=limit)
            return [service.inbox_view(r, mask=mask) for r in rows]

    return json_response({"handlingUnit": handlingUnit, "items": await platform.run(work)})


@router.get("/cases/{case_ref}", summary="One case", responses={200: {"model": CaseRead}})
async def get_case(platform: PlatformDep, ctx: ContextDep, case_ref: CaseRef) -> Response:
    mask = masker_for(ctx)

    def work() -> dict[str, Any]:
        with platform.session() as session:
            row = service.get_case(session, case_ref=case_ref)
            access.require_in_scope(platform, ctx, row.org_unit, row.handling_unit, what="case")
            return service.case_view(row, mask=mask)

    return json_response(await platform.run(work))


@router.post("/cases/{case_ref}/transitions", summary="Act on a case (409 names the allowed actions)",
             responses={200: {"model": CaseRead}})
async def act(platform: PlatformDep, ctx: ContextDep, case_ref: CaseRef, body: TransitionRequest) -> Response:
    disposal = disposal_of(platform)
    outcome = await platform.run(flows.transition, platform, disposal, case_ref, body, ctx=ctx)
    return json_response(await published(platform, outcome, ctx))


@router.get("/cases/{case_ref}/transitions", summary="Every step of a case, oldest first",
            responses={200: {"model": list[TransitionRead]}})
async def case_transitions(platform: PlatformDep, ctx: ContextDep, case_ref: CaseRef) -> Response:
    mask = masker_for(ctx)

    def work() -> list[dict[str, Any]]:
        with platform.session() as session:
            row = service.get_case(session, case_ref=case_ref)
            access.require_in_scope(platform, ctx, row.org_unit, row.handling_unit, what="case")
            return [service.transition_view(t, mask=mask) for t in service.transitions(session, case_id=row.id)]

    return json_response({"items": await platform.run(work)})


@router.get("/cases/{case_ref}/reports", summary="The reports of a case (contacts masked by role)",
            responses={200: {"model": list[ReportRead]}}, openapi_extra=PERSONAL_DATA)
async def case_reports(platform: PlatformDep, ctx: ContextDep, case_ref: CaseRef) -> Response:
    from citybrain.hotline.masking import contact_masker

    mask, mask_contact = masker_for(ctx), contact_masker(ctx)

    def work() -> list[dict[str, Any]]:
        with platform.session() as session:
            row = service.get_case(session, case_ref=case_ref)
            access.require_in_scope(platform, ctx, row.org_unit, row.handling_unit, what="case")
            return [service.report_view(r, mask=mask, mask_contact=mask_contact)
                    for r in service.reports(session, case_id=row.id)]

    return json_response({"items": await platform.run(work)})


@router.post("/reports/{report_id}/feedback", summary="A reporter's verdict after closure (回访)",
             responses={200: {"model": CaseRead}})
async def feedback(platform: PlatformDep, ctx: ContextDep, report_id: RowId,
                   body: Feedback) -> Response:
    """Unresolved or unsatisfied reopens the case."""
    disposal = disposal_of(platform)
    outcome = await platform.run(flows.record_feedback, platform, disposal, report_id, body, ctx=ctx)
    return json_response(await published(platform, outcome, ctx))


@router.get("/routing/rules", summary="The routing rules in force, with their version",
            openapi_extra=access.access("routing"))
async def get_routing_rules(platform: PlatformDep) -> Response:
    disposal = disposal_of(platform)
    return json_response({"version": disposal.router.version, **disposal.router.rules.model_dump(mode="json")})


@router.put("/routing/rules", summary="Replace the routing rules (kept as a new version)",
            openapi_extra=access.access("routing"))
async def put_routing_rules(platform: PlatformDep, ctx: ContextDep, body: JsonBody) -> Response:
    from pydantic import ValidationError

    from citybrain.core.errors import ErrorCollector, field_path

    try:
        rules = RoutingRules.model_validate(body)
    except ValidationError as exc:
        problems = ErrorCollector()
        for error in exc.errors():
            problems.add(field_path(error["loc"]), error["msg"].removeprefix("Value error, "))
        problems.raise_if_any("The routing rules have invalid fields")
    Router(rules, platform.org_tree)  # refuses unknown org units, naming the field

    def work() -> int:
        with platform.transaction() as session:
            return service.store_routing_rules(session, rules=rules.model_dump(mode="json", exclude_defaults=True),
                                               actor=ctx.actor, now=platform.clock.now())

    version = await platform.run(work)
    disposal = disposal_of(platform)
    await platform.run(disposal.load)
    await platform.bus.publish(RoutingRulesChanged(context=ctx, version=version))
    return json_response({"version": version, **rules.model_dump(mode="json")})


supervision_router = PathRouter(prefix="/api/v1/supervision", tags=["supervision"])


def _window(start: datetime | None, end: datetime | None, clock_now: datetime, days: float) -> tuple[datetime, datetime]:
    from datetime import timedelta

    for name, moment in (("from", start), ("to", end)):
        if moment is not None and moment.tzinfo is None:
            raise InvalidInput.at(name, "a time with its zone is required, e.g. 2026-12-01T00:00:00+08:00")
    end = end or clock_now + timedelta(seconds=1)  # what happened this second counts
    try:
        start = start or end - timedelta(days=days)
    except OverflowError:  # `to` in the first days of year 1: no window fits before it
        raise InvalidInput.at("to", f"too early: there is no {days:g}-day window before it") from None
    if start >= end:
        raise InvalidInput.at("from", "must be before `to`")
    return start, end


@supervision_router.get("/rates", summary="三率 (response, resolution, satisfaction) and on-time rates per group")
async def supervision_rates(
    platform: PlatformDep,
    start: Annotated[datetime | None, Query(alias="from", description="Default: 30 days before `to`")] = None,
    end: Annotated[datetime | None, Query(alias="to", description="Default: now")] = None,
    by: Annotated[str, Query(description="department, town, org_unit, event_type, category, channel, "
                                         "handling_unit or all")] = "department",
) -> Response:
    from citybrain.disposal import supervision

    start, end = _window(start, end, platform.clock.now(), 30)
    towns = supervision.towns_of(platform.org_tree) if by == "town" else None

    def work() -> list[dict[str, Any]]:
        with platform.session() as session:
            return supervision.rates(session, start=start, end=end, group_by=by, towns_of=towns)

    return json_response({"from": start.isoformat(), "to": end.isoformat(), "by": by, "items": await platform.run(work)})


@supervision_router.get("/hotspots", summary="Places where one event type keeps recurring")
async def supervision_hotspots(
    platform: PlatformDep,
    start: Annotated[datetime | None, Query(alias="from")] = None,
    end: Annotated[datetime | None, Query(alias="to")] = None,
    minCases: Annotated[int, Query(ge=2, le=10_000)] = 3,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> Response:
    from citybrain.disposal import supervision

    start, end = _window(start, end, platform.clock.now(), 30)

    def work() -> list[dict[str, Any]]:
        with platform.session() as session:
            return [h.view() for h in supervision.hotspots(session, start=start, end=end, min_cases=minCases,
                                                           limit=limit)]

    return json_response({"from": start.isoformat(), "to": end.isoformat(), "items": await platform.run(work)})


@supervision_router.get("/tasks", summary="Supervision tasks (督办) of the big loop")
async def supervision_tasks(
    platform: PlatformDep,
    status: Annotated[str | None, Query(pattern="^(open|acknowledged|closed)$")] = None,
    department: Annotated[str | None, Query(max_length=32)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> Response:
    from citybrain.disposal import supervision

    def work() -> list[dict[str, Any]]:
        with platform.session() as session:
            return [supervision.task_view(t) for t in
                    supervision.list_tasks(session, status=status, department=department, limit=limit)]

    return json_response({"items": await platform.run(work)})


@supervision_router.post("/tasks/{task_id}/{action}", summary="Acknowledge or close a supervision task")
async def supervision_task_action(platform: PlatformDep, task_id: Annotated[str, Path(max_length=36)],
                                  action: Annotated[str, Path(pattern="^(acknowledge|close)$")],
                                  body: JsonBody | None = None) -> Response:
    from citybrain.disposal import supervision

    note = body.get("note") if isinstance(body, dict) else None
    if note is not None and not isinstance(note, str):
        raise InvalidInput.at("note", "text is required")
    return json_response(await platform.run(supervision.move_task, platform, task_id, action, note=note))


@supervision_router.post("/scan", summary="Look for recurring problems now and open their tasks")
async def supervision_scan(
    platform: PlatformDep, ctx: ContextDep,
    windowDays: Annotated[float, Query(gt=0, le=366)] = 30.0,
    minCases: Annotated[int, Query(ge=2, le=10_000)] = 5,
) -> Response:
    from citybrain.disposal import supervision

    disposal = disposal_of(platform)
    opened = await platform.run(supervision.open_recurring_tasks, platform, disposal, window_days=windowDays,
                                min_cases=minCases)
    if opened:
        await platform.bus.publish(*supervision.opened_events(opened, ctx))
    return json_response({"opened": opened})


@supervision_router.get("/brief", summary="The daily brief for the leadership, as HTML or PDF", responses={
    200: {"content": {"text/html": {"schema": {"type": "string"}},
                      "application/pdf": {"schema": {"type": "string", "format": "binary"}}}}})
async def daily_brief(
    platform: PlatformDep,
    day: Annotated[str | None, Query(alias="date", pattern=r"^\d{4}-\d{2}-\d{2}$",
                                     description="Local day (default: yesterday)")] = None,
    format: Annotated[str, Query(pattern="^(html|pdf)$")] = "html",
    lang: Annotated[str, Query(pattern="^(zh|en)$")] = "zh",
) -> Response:
    from datetime import date, timedelta

    from citybrain.disposal import brief
    from citybrain.disposal.service import NUMBER_ZONE

    try:
        chosen = date.fromisoformat(day) if day else (platform.clock.now().astimezone(NUMBER_ZONE).date()
                                                      - timedelta(days=1))
    except ValueError:
        raise InvalidInput.at("date", f"not a day: {day!r}") from None
    disposal = disposal_of(platform)
    figures = await platform.run(brief.build, platform, disposal, day=chosen, lang=lang)
    if format == "pdf":
        content = await anyio_to_thread(brief.render_pdf, figures)
        return Response(content, media_type="application/pdf", headers={
            "Content-Disposition": f'inline; filename="brief-{chosen.isoformat()}.pdf"'})
    return Response(await anyio_to_thread(brief.render_html, figures), media_type="text/html; charset=utf-8")


async def anyio_to_thread(function: Any, *args: Any) -> Any:
    import anyio

    return await anyio.to_thread.run_sync(function, *args)


ATTACHMENT_TYPES = {"image/jpeg": ".jpg", "image/png": ".png", "image/webp": ".webp", "image/heic": ".heic",
                    "video/mp4": ".mp4", "application/pdf": ".pdf"}
MAX_ATTACHMENT_BYTES = 15 * 1024 * 1024


@router.post("/attachments", status_code=201, summary="Upload a photo, video or document (evidence from the field)")
async def upload_attachment(platform: PlatformDep, request: Request) -> Response:
    """The body is the file itself, its type in Content-Type (JPEG, PNG, WebP, HEIC, MP4 or PDF; at most
    15 MB). Stored once by its SHA-256 under the home folder; the answer is what a transition's
    `attachments` item names (`{"kind": "photo_after", "sha256": …}`), so a phone uploads while offline
    work queues and attaches by hash later."""
    import hashlib

    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type not in ATTACHMENT_TYPES:
        raise InvalidInput.at("content-type", f"one of {', '.join(ATTACHMENT_TYPES)}")
    data = await request.body()
    if not data:
        raise InvalidInput.at("body", "the file is empty")
    if len(data) > MAX_ATTACHMENT_BYTES:
        from citybrain.core.errors import PayloadTooLarge

        raise PayloadTooLarge(f"an attachment is at most {MAX_ATTACHMENT_BYTES // (1024 * 1024)} MB")
    digest = hashlib.sha256(data).hexdigest()
    folder = platform.settings.home / "attachments" / digest[:2]
    target = folder / (digest + ATTACHMENT_TYPES[media_type])

    def store() -> None:
        if not target.exists():
            folder.mkdir(parents=True, exist_ok=True)
            partial = target.with_suffix(target.suffix + ".part")
            partial.write_bytes(data)
            partial.replace(target)  # whole or not at all

    await anyio_to_thread(store)
    return json_response({"sha256": digest, "mime": media_type, "bytes": len(data),
                  "url": f"/api/v1/attachments/{digest}"}, 201)


@router.get("/attachments/{digest}", summary="An uploaded attachment")
async def get_attachment(platform: PlatformDep, digest: Annotated[str, Path(pattern=r"^[0-9a-f]{64}$")]) -> Response:
    from citybrain.core.errors import NotFound

    folder = platform.settings.home / "attachments" / digest[:2]
    for suffix, media_type in ((s, m) for m, s in ATTACHMENT_TYPES.items()):
        candidate = folder / (digest + suffix)
        if candidate.exists():
            return Response(await anyio_to_thread(candidate.read_bytes), media_type=media_type)
    raise NotFound(f"attachment {digest} does not exist")
