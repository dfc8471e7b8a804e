"""Subscription routes: thin; each validates, calls one flow and returns a schema."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import Path, Query, Response

from citybrain.api.deps import ContextDep, PageDep, PlatformDep
from citybrain.api.routing import PathRouter
from citybrain.hub.subscriptions import flows
from citybrain.hub.subscriptions.schemas import (
    NotificationPage,
    SubscriptionCreate,
    SubscriptionPage,
    SubscriptionRead,
    SubscriptionUpdate,
)

router = PathRouter(prefix="/api/v1/subscriptions", tags=["subscriptions"])
SubscriptionId = Annotated[str, Path(max_length=512, description="Subscription URN")]


@router.post("", status_code=201, response_model=SubscriptionRead, summary="Subscribe a webhook to entity changes")
async def create_subscription(
    platform: PlatformDep, ctx: ContextDep, body: SubscriptionCreate, response: Response
) -> SubscriptionRead:
    read = await flows.create_subscription(platform, body, ctx=ctx)
    response.headers["Location"] = f"/api/v1/subscriptions/{read.id}"
    return read


@router.get("", response_model=SubscriptionPage, summary="List subscriptions with their delivery status")
async def list_subscriptions(
    platform: PlatformDep,
    ctx: ContextDep,
    page: PageDep,
    response: Response,
    status: Annotated[Literal["active", "paused", "expired"] | None, Query()] = None,
    type: Annotated[str | None, Query(max_length=128, description="Only those that can match this type")] = None,
) -> SubscriptionPage:
    result = await flows.list_subscriptions(platform, cursor=page.cursor, limit=page.limit, status=status,
                                            entity_type=type, ctx=ctx)
    response.headers.update(page.next_link(result.next_cursor))
    return result


@router.get("/{subscription_id}", response_model=SubscriptionRead, summary="One subscription and its delivery status")
async def get_subscription(platform: PlatformDep, ctx: ContextDep, subscription_id: SubscriptionId) -> SubscriptionRead:
    return await flows.get_subscription(platform, subscription_id, ctx=ctx)


@router.patch("/{subscription_id}", response_model=SubscriptionRead,
              summary="Change a subscription (pause or resume it with status)")
async def update_subscription(
    platform: PlatformDep, ctx: ContextDep, subscription_id: SubscriptionId, body: SubscriptionUpdate
) -> SubscriptionRead:
    return await flows.update_subscription(platform, subscription_id, body, ctx=ctx)


@router.delete("/{subscription_id}", status_code=204, summary="Delete a subscription and its queued notifications")
async def delete_subscription(platform: PlatformDep, ctx: ContextDep, subscription_id: SubscriptionId) -> Response:
    await flows.delete_subscription(platform, subscription_id, ctx=ctx)
    return Response(status_code=204)


@router.get("/{subscription_id}/notifications", response_model=NotificationPage,
            summary="A subscription's notifications, newest first, with attempts and errors")
async def list_notifications(
    platform: PlatformDep,
    ctx: ContextDep,
    page: PageDep,
    response: Response,
    subscription_id: SubscriptionId,
    status: Annotated[Literal["pending", "delivered", "failed"] | None, Query()] = None,
) -> NotificationPage:
    result = await flows.list_notifications(platform, subscription_id, status=status, cursor=page.cursor,
                                            limit=page.limit, ctx=ctx)
    response.headers.update(page.next_link(result.next_cursor))
    return result
