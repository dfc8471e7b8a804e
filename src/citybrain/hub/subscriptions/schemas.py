"""API shapes of subscriptions and their notifications (camelCase on the wire, like NGSI-LD)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field, FiniteFloat, PlainSerializer
from pydantic.alias_generators import to_camel

from citybrain.hub.entities.ngsi import format_datetime

Trigger = Literal["created", "updated", "deleted"]
MAX_URL_LENGTH = 2048


def check_http_url(value: str) -> str:
    """An absolute http(s) URL with a host; the hub POSTs to it, so anything else is refused up front."""
    if len(value) > MAX_URL_LENGTH:
        raise ValueError(f"at most {MAX_URL_LENGTH} characters")
    try:
        parts = urlsplit(value)
        port = parts.port  # raises on a malformed port
    except ValueError:
        raise ValueError("not a URL") from None
    if parts.scheme not in ("http", "https"):
        raise ValueError("an http:// or https:// URL is required")
    if not parts.hostname:
        raise ValueError("the URL has no host")
    if port == 0:
        raise ValueError("port 0 cannot be reached")
    if any(c.isspace() for c in value):
        raise ValueError("a URL contains no whitespace")
    return value


HttpUrl = Annotated[str, AfterValidator(check_http_url)]
# Timestamps leave the API in UTC with a Z, whatever zone the store's session hands back.
Moment = Annotated[datetime, PlainSerializer(format_datetime, return_type=str, when_used="json")]
AttrName = Annotated[str, Field(min_length=1, max_length=128)]


class CamelModel(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)


class NearFilter(CamelModel):
    """Entities whose location lies within `maxDistance` metres of a point."""

    model_config = ConfigDict(extra="forbid")
    lon: float = Field(ge=-180, le=180)
    lat: float = Field(ge=-90, le=90)
    max_distance: float = Field(ge=0, le=1_000_000, description="Metres")


class SubscriptionCreate(CamelModel):
    """A filter over entity changes (every given part must hold) and the webhook to notify.

    At least one of `entityTypes`, `entityIds` or `watchedAttributes` is required. `orgUnit` includes its
    descendants. With `watchedAttributes`, an update notifies only when one of them changed. Deletions are
    notified only when `triggers` holds "deleted"; for them `q`, `bbox` and `near` are not evaluated (the
    entity is gone), the other parts are.
    """

    model_config = ConfigDict(extra="forbid", json_schema_extra={"example": {
        "name": "PM2.5 over 75 in Xihu", "entityTypes": ["AirQualityObserved"], "q": "pm25>75",
        "orgUnit": "330106", "watchedAttributes": ["pm25"], "endpoint": "https://example.org/hooks/air",
        "throttling": 10}})

    id: str | None = Field(None, max_length=512, description="URN; generated when absent")
    name: str | None = Field(None, max_length=200)
    description: str | None = Field(None, max_length=2000)
    entity_types: list[Annotated[str, Field(max_length=128)]] = Field(default_factory=list, max_length=100)
    entity_ids: list[Annotated[str, Field(max_length=512)]] = Field(default_factory=list, max_length=1000)
    q: str | None = Field(None, max_length=2000, description='Attribute filter, e.g. pm25>75;status=="ok"')
    bbox: tuple[FiniteFloat, FiniteFloat, FiniteFloat, FiniteFloat] | None = Field(None, description="minLon, minLat, maxLon, maxLat")
    near: NearFilter | None = None
    org_unit: str | None = Field(None, max_length=64, description="Org unit code; includes its descendants")
    watched_attributes: list[AttrName] = Field(default_factory=list, max_length=100)
    notify_attributes: list[AttrName] = Field(
        default_factory=list, max_length=256, description="Attributes each notified entity carries (default: all)")
    triggers: list[Trigger] = Field(default_factory=lambda: ["created", "updated"], min_length=1, max_length=3)
    endpoint: HttpUrl = Field(description="Webhook URL (http/https) the notifications are POSTed to")
    throttling: float | None = Field(
        None, ge=0, le=86_400, description="Least seconds between two POSTs; changes in between are batched")
    status: Literal["active", "paused"] = "active"
    expires_at: AwareDatetime | None = Field(None, description="After this time the subscription stops matching")


class SubscriptionUpdate(CamelModel):
    """Fields to change; a field given as null is cleared. Filters are validated again as a whole."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(None, max_length=200)
    description: str | None = Field(None, max_length=2000)
    entity_types: list[Annotated[str, Field(max_length=128)]] | None = Field(None, max_length=100)
    entity_ids: list[Annotated[str, Field(max_length=512)]] | None = Field(None, max_length=1000)
    q: str | None = Field(None, max_length=2000)
    bbox: tuple[FiniteFloat, FiniteFloat, FiniteFloat, FiniteFloat] | None = None
    near: NearFilter | None = None
    org_unit: str | None = Field(None, max_length=64)
    watched_attributes: list[AttrName] | None = Field(None, max_length=100)
    notify_attributes: list[AttrName] | None = Field(None, max_length=256)
    triggers: list[Trigger] | None = Field(None, min_length=1, max_length=3)
    endpoint: HttpUrl | None = None
    throttling: float | None = Field(None, ge=0, le=86_400)
    status: Literal["active", "paused"] | None = None
    expires_at: AwareDatetime | None = None


class DeliveryStatus(CamelModel):
    """How delivery to the webhook is going."""

    pending: int = Field(description="Notifications waiting to be sent (or retried)")
    delivered: int
    failed: int = Field(description="Notifications given up on after the last attempt")
    last_success_at: Moment | None = None
    last_failure_at: Moment | None = None
    last_error: str | None = None
    next_attempt_at: Moment | None = Field(None, description="Not before this time (back-off or throttling)")


class SubscriptionRead(CamelModel):
    id: str
    name: str | None = None
    description: str | None = None
    entity_types: list[str]
    entity_ids: list[str]
    q: str | None = None
    bbox: list[float] | None = None
    near: NearFilter | None = None
    org_unit: str | None = None
    watched_attributes: list[str]
    notify_attributes: list[str]
    triggers: list[str]
    endpoint: str
    throttling: float | None = None
    status: Literal["active", "paused", "expired"]
    expires_at: Moment | None = None
    owner: str
    created_at: Moment
    modified_at: Moment
    delivery: DeliveryStatus


class SubscriptionPage(BaseModel):
    items: list[SubscriptionRead]
    next_cursor: str | None = None


class NotificationRead(CamelModel):
    """One entity change queued for one subscription, and how its delivery went."""

    id: int
    entity_id: str
    entity_type: str
    operation: str
    status: Literal["pending", "delivered", "failed"]
    attempts: int
    created_at: Moment
    last_attempt_at: Moment | None = None
    delivered_at: Moment | None = None
    last_error: str | None = None
    data: dict[str, Any] = Field(description="The entity as notified")


class NotificationPage(BaseModel):
    items: list[NotificationRead]
    next_cursor: str | None = None
