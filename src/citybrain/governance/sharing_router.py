"""Data sharing between departments over HTTP: request, decide, revoke, and read through a grant."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import Path, Query
from fastapi.responses import Response
from pydantic import BaseModel, Field

from citybrain.api.deps import ContextDep, PlatformDep, json_response
from citybrain.api.routing import PathRouter
from citybrain.governance import sharing
from citybrain.governance.catalog_router import DatasetId
from citybrain.governance.middleware import PERSONAL_DATA

router = PathRouter(prefix="/api/v1", tags=["data sharing"])
ShareId = Annotated[str, Path(max_length=36, description="The share's id")]


class ShareRead(BaseModel):
    id: str
    dataset: str
    requester: str
    owner: str
    purpose: str
    fields: list[str]
    orgScope: list[str] | None
    until: str
    status: Literal["requested", "approved", "rejected", "revoked", "expired"]
    requestedBy: str
    requestedAt: str
    decidedBy: str | None
    decidedAt: str | None
    reason: str | None


class SharePage(BaseModel):
    items: list[ShareRead]


class SharedRecords(BaseModel):
    share: str
    dataset: str
    fields: list[str]
    items: list[dict[str, Any]]
    next_cursor: str | None


class Revocation(BaseModel):
    reason: str | None = Field(None, max_length=500)


@router.post("/datasets/{dataset_id}/shares", status_code=201, responses={201: {"model": ShareRead}},
             summary="Ask the owner department for a dataset: fields, org units, until when, why")
async def request_share(platform: PlatformDep, ctx: ContextDep, dataset_id: DatasetId,
                        body: sharing.ShareRequest) -> Response:
    view = await platform.run(sharing.request_share, platform, dataset_id, body, ctx=ctx)
    return json_response(view, 201, headers={"Location": f"/api/v1/shares/{view['id']}"})


@router.get("/shares", summary="The shares your departments ask for or grant", responses={200: {"model": SharePage}})
async def list_shares(
    platform: PlatformDep,
    ctx: ContextDep,
    status: Annotated[Literal["requested", "approved", "rejected", "revoked", "expired"] | None, Query()] = None,
    dataset: Annotated[str | None, Query(max_length=200)] = None,
    department: Annotated[str | None, Query(max_length=64, description="As requester or owner")] = None,
) -> Response:
    items = await platform.run(sharing.list_shares, platform, ctx=ctx, status=status, dataset_id=dataset,
                               department=department)
    return json_response({"items": items})


@router.post("/shares/{share_id}/decision", responses={200: {"model": ShareRead}},
             summary="The owner approves (possibly narrower: fewer fields, fewer units, earlier end) or rejects")
async def decide(platform: PlatformDep, ctx: ContextDep, share_id: ShareId, body: sharing.ShareDecision) -> Response:
    return json_response(await platform.run(sharing.decide, platform, share_id, body, ctx=ctx))


@router.post("/shares/{share_id}/revoke", responses={200: {"model": ShareRead}},
             summary="End a grant now (either department)")
async def revoke(platform: PlatformDep, ctx: ContextDep, share_id: ShareId, body: Revocation) -> Response:
    return json_response(await platform.run(sharing.revoke, platform, share_id, body.reason, ctx=ctx))


@router.get("/shares/{share_id}/records", responses={200: {"model": SharedRecords}}, openapi_extra=PERSONAL_DATA,
            summary="The shared data as the grant allows (its fields and units, while it lasts); audited")
async def shared_records(
    platform: PlatformDep,
    ctx: ContextDep,
    share_id: ShareId,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: Annotated[str | None, Query(max_length=2048)] = None,
) -> Response:
    return json_response(await platform.run(sharing.read_records, platform, share_id, ctx=ctx, after=cursor,
                                            limit=limit))
