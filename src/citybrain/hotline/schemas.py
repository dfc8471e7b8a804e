"""What the hotline (接诉即办) takes: a citizen's complaint or request, from any channel."""

from __future__ import annotations

from typing import Literal

from pydantic import AwareDatetime, Field

from citybrain.disposal.schemas import Point, Reporter, Strict

CitizenChannel = Literal["phone", "web", "app", "wechat", "letter", "open311", "media", "replay"]


class ComplaintCreate(Strict):
    """A citizen's complaint: free text (Chinese or English), where, who to call back. The event type is
    classified from the text unless the channel already names it (an Open311 service code)."""

    text: str = Field(min_length=1, max_length=20_000)
    subject: str | None = Field(None, max_length=200, description="A title, when the channel has one")
    channel: CitizenChannel = "phone"
    address: str | None = Field(None, max_length=400)
    location: Point | None = None
    orgUnit: str | None = Field(None, max_length=64, description="When the operator already knows the unit")
    contact: Reporter | None = None
    occurredAt: AwareDatetime | None = None
    eventType: str | None = Field(None, max_length=16, description="Catalogue code; classified when absent")
    externalId: str | None = Field(None, max_length=160, description="The channel's own ticket id")
    deduplicate: bool = Field(True, description="Check it against open complaints (off when there is no text "
                                                 "of the citizen's own to compare)")
    mediaUrls: list[str] = Field(default_factory=list, max_length=10, description="Photos or videos, by URL")
