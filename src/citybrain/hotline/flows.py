"""接诉即办: a citizen's complaint becomes a case — classified into the catalogue, located in the org
tree, checked against the open complaints for the same problem (a duplicate joins that case with its
reporter), routed and dispatched; personal data found in the text is noted at intake and masked on the
way out by role."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from citybrain.core.context import Context
from citybrain.core.errors import Conflict, InvalidInput
from citybrain.disposal import flows
from citybrain.disposal.flows import Outcome
from citybrain.disposal.schemas import Attachment, CaseCreate
from citybrain.hotline.schemas import ComplaintCreate

if TYPE_CHECKING:
    from citybrain.disposal.runtime import Disposal
    from citybrain.hotline.runtime import Hotline
    from citybrain.platform import Platform


@dataclass(slots=True)
class Intake:
    """What happened to a complaint: its case, its report, and how it was understood."""

    outcome: Outcome
    report_id: int
    event_type: str
    confidence: float | None
    classified: bool
    org_unit: str | None
    located_by: str | None
    duplicate_of: int | None
    personal_data: list[str]

    def view(self) -> dict[str, Any]:
        case = self.outcome.case
        return {"reportId": self.report_id, "caseId": case["id"], "number": case["number"],
                "status": case["status"], "eventType": self.event_type, "classified": self.classified,
                "confidence": self.confidence, "orgUnit": self.org_unit, "locatedBy": self.located_by,
                "handlingUnit": case["handlingUnit"], "department": case["leadDepartment"],
                "duplicateOf": self.duplicate_of, "personalData": self.personal_data}


def take_complaint(platform: Platform, hotline: Hotline, disposal: Disposal, request: ComplaintCreate, *,
                   ctx: Context) -> Intake:
    """Classify, locate, de-duplicate, then open (and dispatch) a case or join the duplicate's case."""
    from citybrain.hotline.pii import find_pii

    text = f"{request.subject}\n{request.text}" if request.subject else request.text
    personal = sorted({span.kind for span in find_pii(text)})
    # What the problem is
    if request.eventType is not None:
        spec = disposal.event_type(request.eventType, field="eventType")
        event_type, confidence, classified = spec.code, None, False
    else:
        event_type, confidence = hotline.classify(text, disposal.catalogue)
        classified = True
    # Where it is
    org_unit, located_by = request.orgUnit, "given" if request.orgUnit else None
    if org_unit is not None and org_unit not in platform.org_tree:
        raise InvalidInput.at("orgUnit", f"unknown org unit {org_unit!r}")
    if org_unit is None:
        found = hotline.locate(" ".join(part for part in (request.address, text) if part))
        if found is not None:
            org_unit, located_by = found.code, "address" if request.address and found.start < len(
                request.address) else "text"
    point = request.location.coordinates if request.location is not None else None
    reported_at = request.occurredAt or platform.clock.now()
    # The same problem, reported before?
    duplicate = hotline.find_duplicate(text, reported_at.timestamp(), point=point, org_unit=org_unit,
                                       event_type=event_type) if request.deduplicate else None
    data = {"personalData": personal, "locatedBy": located_by, "mediaUrls": request.mediaUrls}
    joined = None
    if duplicate is not None:
        report_of_duplicate, case_id = duplicate
        try:
            joined = flows.add_report(
                platform, case_id, channel=request.channel, text=text, reporter=request.contact, ctx=ctx,
                external_id=request.externalId, address=request.address, lon=point[0] if point else None,
                lat=point[1] if point else None, org_unit=org_unit, reported_at=reported_at,
                classified_as=event_type if classified else None, confidence=confidence,
                data={**data, "duplicateOf": report_of_duplicate})
        except Conflict:  # closed since it was indexed: this report opens a case of its own
            hotline.forget_case(case_id)
    if joined is not None:
        outcome, report_id = joined
    else:
        report_of_duplicate = None
        auto = not classified or (confidence or 0.0) >= hotline.min_confidence
        case = CaseCreate(
            eventType=event_type, title=(request.subject or request.text)[:200], description=request.text,
            channel=request.channel, orgUnit=org_unit,
            location=request.location, address=request.address, occurredAt=request.occurredAt,
            reporter=request.contact, externalId=request.externalId,
            attachments=[Attachment(kind="photo_before", url=url) for url in request.mediaUrls],
            dispatch=auto)
        outcome = flows.open_case(platform, disposal, case, ctx=ctx, report_text=text,
                                  classified_as=event_type if classified else None, confidence=confidence,
                                  report_data=data)
        assert outcome.report_id is not None
        report_id = outcome.report_id
    if request.deduplicate:
        hotline.remember(report_id, outcome.case["id"], text, reported_at.timestamp(), point=point,
                         org_unit=org_unit, event_type=event_type)
    return Intake(outcome, report_id, event_type, confidence, classified, org_unit, located_by,
                  report_of_duplicate, personal)

