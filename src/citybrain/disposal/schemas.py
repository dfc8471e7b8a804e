"""What the disposal API takes and gives: case intake, transitions, case and transition views."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator, model_validator

from citybrain.disposal.catalogue.spec import Evidence, Level
from citybrain.disposal.lifecycle import Action

CHANNELS = ("inspector", "sensing", "hotline", "open311", "web", "app", "phone", "wechat", "letter",
            "department", "media", "replay")
Channel = Literal["inspector", "sensing", "hotline", "open311", "web", "app", "phone", "wechat", "letter",
                  "department", "media", "replay"]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class Point(Strict):
    """A GeoJSON point in WGS 84 (longitude, latitude)."""

    type: Literal["Point"]
    coordinates: tuple[float, float]

    @field_validator("coordinates")
    @classmethod
    def _in_range(cls, value: tuple[float, float]) -> tuple[float, float]:
        lon, lat = value
        if not (-180 <= lon <= 180 and -90 <= lat <= 90):
            raise ValueError("longitude within ±180 and latitude within ±90 are required")
        return value


class Reporter(Strict):
    """Who reported it (personal data: masked by role when shown)."""

    name: str | None = Field(None, max_length=100)
    phone: str | None = Field(None, max_length=40)
    email: str | None = Field(None, max_length=200)


class Attachment(Strict):
    """A piece of evidence: a photo, a video, a document … by URL or by the hash of an uploaded file."""

    kind: Evidence | Literal["other"] = "other"
    url: str | None = Field(None, max_length=2000)
    sha256: str | None = Field(None, pattern=r"^[0-9a-f]{64}$")
    name: str | None = Field(None, max_length=200)
    mime: str | None = Field(None, max_length=100)
    note: str | None = Field(None, max_length=2000)

    @model_validator(mode="after")
    def _something(self) -> Attachment:
        if self.url is None and self.sha256 is None and self.note is None:
            raise ValueError("an attachment has a url, a sha256 of an uploaded file, or a note")
        return self


class CaseCreate(Strict):
    """A new case from a grid inspector, a department system, a sensing alert or a citizen channel."""

    eventType: str = Field(max_length=16, description="Catalogue code, e.g. CG-01-003")
    title: str | None = Field(None, max_length=200, description="Default: the event type's name")
    description: str = Field("", max_length=20_000)
    channel: Channel = "inspector"
    orgUnit: str | None = Field(None, max_length=64, description="Where it happened (village, town …)")
    location: Point | None = None
    address: str | None = Field(None, max_length=400)
    occurredAt: AwareDatetime | None = None
    reporter: Reporter | None = None
    attachments: list[Attachment] = Field(default_factory=list, max_length=50)
    sourceRef: str | None = Field(None, max_length=160, description="The alert, device or request behind it")
    externalId: str | None = Field(None, max_length=160, description="The channel's own id (ticket, request)")
    dispatch: bool = Field(True, description="Route and dispatch at once (triage by the catalogue and rules)")


class TransitionRequest(Strict):
    """An action on a case. Dispatch may name the unit, department and level (default: the route);
    triage may correct the event type; merge names the case it joins (`into`)."""

    action: Action
    reason: str | None = Field(None, max_length=5000)
    attachments: list[Attachment] = Field(default_factory=list, max_length=50)
    eventType: str | None = Field(None, max_length=16)
    handlingUnit: str | None = Field(None, max_length=64)
    department: str | None = Field(None, max_length=32)
    assisting: list[str] | None = Field(None, max_length=20)
    level: Level | None = None
    into: str | None = Field(None, max_length=36, description="Merge: the id or number of the case to join")
    expectedVersion: int | None = Field(None, ge=1, description="Refuse (409) if the case changed since")


class Feedback(Strict):
    """A reporter's verdict after closure (回访): resolved or not, satisfied or not."""

    resolved: bool
    satisfied: bool
    comment: str | None = Field(None, max_length=5000)


class TransitionRead(BaseModel):
    id: int
    at: datetime
    action: str
    fromStatus: str | None
    toStatus: str
    actor: str
    reason: str | None
    data: dict[str, Any]
    attachments: list[dict[str, Any]]


class CaseRead(BaseModel):
    """A case as the API shows it (reporters' contacts appear only in `reports`, masked by role)."""

    id: str
    number: str
    eventType: str
    category: str
    title: str
    description: str
    status: str
    allowedActions: list[str]
    priority: str
    level: str
    orgUnit: str | None
    handlingUnit: str | None
    leadDepartment: str
    assisting: list[str]
    channel: str
    sourceRef: str | None
    location: dict[str, Any] | None
    address: str | None
    stage: str | None
    dueAt: datetime | None
    warnedAt: datetime | None
    breachedAt: datetime | None
    onTime: dict[str, bool | None]
    escalations: int
    returns: int
    reopens: int
    reports: int
    mergedInto: str | None
    resolution: str | None
    createdAt: datetime
    updatedAt: datetime
    dispatchedAt: datetime | None
    receivedAt: datetime | None
    handledAt: datetime | None
    closedAt: datetime | None
    version: int


class CasePage(BaseModel):
    items: list[CaseRead]
    next_cursor: str | None


class ReportRead(BaseModel):
    id: int
    channel: str
    externalId: str | None
    text: str
    contact: dict[str, str | None]
    address: str | None
    orgUnit: str | None
    reportedAt: datetime
    classifiedAs: str | None
    confidence: float | None
    resolved: bool | None
    satisfied: bool | None
    feedbackAt: datetime | None
