"""Hotline routes (接诉即办): take a complaint, follow it, give the verdict after closure, and the
understanding tools a dispatcher's screen uses (classify, locate)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Query
from fastapi.responses import Response
from pydantic import Field

from citybrain.api.deps import ContextDep, PlatformDep, RowId, json_response
from citybrain.api.routing import PathRouter
from citybrain.core.errors import NotFound, ServiceUnavailable
from citybrain.disposal import flows, service
from citybrain.disposal.router import disposal_of, masker_for, published
from citybrain.disposal.schemas import Feedback, Strict
from citybrain.governance import access
from citybrain.hotline.flows import take_complaint
from citybrain.hotline.runtime import Hotline
from citybrain.hotline.schemas import ComplaintCreate
from citybrain.hub.background import find_service

router = PathRouter(prefix="/api/v1/hotline", tags=["hotline"])




def hotline_of(platform: Any) -> Hotline:
    found = find_service(platform, Hotline)
    if found is None:
        raise ServiceUnavailable("the hotline is not running in this process")
    return found


@router.post("/complaints", status_code=201, summary="Take a citizen's complaint (any channel)")
async def take(platform: PlatformDep, ctx: ContextDep, body: ComplaintCreate) -> Response:
    """Classified (unless `eventType` is given), located from the address or the text, matched against
    the open complaints (a duplicate joins that case), then routed and dispatched. The answer says how it
    was understood; `reportId` is what the citizen follows it by."""
    disposal = disposal_of(platform)
    intake = await platform.run(take_complaint, platform, hotline_of(platform), disposal, body, ctx=ctx)
    if intake.outcome.events:
        await platform.bus.publish(*intake.outcome.events)
    return json_response(intake.view(), 201)


@router.get("/complaints/{report_id}", summary="Follow a complaint: its case's status and steps")
async def follow(platform: PlatformDep, ctx: ContextDep, report_id: RowId) -> Response:
    mask = masker_for(ctx)

    def work() -> dict[str, Any]:
        from citybrain.disposal.models import CaseReportRow

        with platform.session() as session:
            report = session.get(CaseReportRow, report_id)
            if report is None:
                raise NotFound(f"complaint {report_id} does not exist")
            case = service.get_case(session, case_ref=report.case_id)
            access.require_in_scope(platform, ctx, case.org_unit, case.handling_unit, what="complaint")
            steps = [service.transition_view(t, mask=mask) for t in service.transitions(session, case_id=case.id)
                     if t.action != "note"]
            return {"reportId": report_id, "case": service.case_view(case, mask=mask),
                    "steps": [{k: s[k] for k in ("at", "action", "toStatus", "reason")} for s in steps],
                    "feedback": {"resolved": report.resolved, "satisfied": report.satisfied,
                                 "at": report.feedback_at.isoformat() if report.feedback_at else None}}

    return json_response(await platform.run(work))


@router.post("/complaints/{report_id}/feedback", summary="The citizen's verdict after closure (回访)")
async def feedback(platform: PlatformDep, ctx: ContextDep, report_id: RowId,
                   body: Feedback) -> Response:
    """Unresolved or unsatisfied reopens the case."""
    disposal = disposal_of(platform)
    outcome = await platform.run(flows.record_feedback, platform, disposal, report_id, body, ctx=ctx)
    return json_response(await published(platform, outcome, ctx))


class TextIn(Strict):
    text: str = Field(min_length=1, max_length=20_000)


@router.post("/classify", summary="The likeliest event types of a text, with confidences",
             openapi_extra=access.access("hotline tools"))
async def classify(platform: PlatformDep, body: TextIn,
                   k: Annotated[int, Query(ge=1, le=20)] = 5) -> Response:
    hotline = hotline_of(platform)
    disposal = disposal_of(platform)
    top = await platform.run(hotline.top, body.text, disposal.catalogue, k)
    return json_response({"items": [{"eventType": code, "confidence": score,
                             "name": disposal.specs[code].name.model_dump() if code in disposal.specs else None}
                            for code, score in top]})


@router.post("/locate", summary="The org unit a text or address names",
             openapi_extra=access.access("hotline tools"))
async def locate(platform: PlatformDep, body: TextIn) -> Response:
    found = hotline_of(platform).locate(body.text)
    if found is None:
        return json_response({"found": False})
    return json_response({"found": True, "orgUnit": found.code, "kind": found.kind, "name": found.name,
                  "confidence": found.confidence, "matched": found.matched, "start": found.start, "end": found.end,
                  "town": found.town_code})
