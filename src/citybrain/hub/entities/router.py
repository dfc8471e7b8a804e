"""Entity routes: thin; each validates, calls one flow or service function and shapes the answer."""

from __future__ import annotations

import math
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import Path, Query
from fastapi.responses import Response

from citybrain.api.deps import ContextDep, JsonBody, PageDep, PlatformDep, json_response
from citybrain.api.problems import HTTP_TITLES
from citybrain.api.routing import PathRouter
from citybrain.core.context import SYSTEM, Context
from citybrain.core.errors import InvalidInput, NotFound
from citybrain.governance import access
from citybrain.hub.entities import flows, service
from citybrain.hub.entities.models import EntityRow
from citybrain.hub.entities.ngsi import format_datetime, is_urn
from citybrain.hub.entities.query import parse_q
from citybrain.hub.entities.schemas import BatchOperationResult, EntityDoc, EntityPage, HistoryPage
from citybrain.hub.entities.service import EntityQuery
from citybrain.hub.entities.types import TypeSpec

router = PathRouter(prefix="/api/v1", tags=["entities"])

EntityId = Annotated[str, Path(description="Entity URN", max_length=512)]
ENTITY_BODY = {"requestBody": {"required": True, "content": {"application/json": {
    "schema": {"$ref": "#/components/schemas/Entity"}}}}}
BATCH_BODY = {"requestBody": {"required": True, "content": {"application/json": {
    "schema": {"type": "array", "items": {"$ref": "#/components/schemas/Entity"}, "maxItems": 1000}}}}}



def _require_urn(entity_id: str) -> None:
    if not is_urn(entity_id):
        raise InvalidInput.at("entityId", "a URN is required, e.g. urn:ngsi-ld:Streetlight:PD-0001")


def _csv(value: str | None) -> tuple[str, ...]:
    return tuple(part.strip() for part in value.split(",") if part.strip()) if value else ()


def _floats(value: str, name: str, count: int) -> list[float]:
    try:
        numbers = [float(v) for v in value.split(",")]
    except ValueError:
        numbers = []
    if len(numbers) != count or not all(math.isfinite(n) for n in numbers):
        raise InvalidInput.at(name, f"expected {count} comma-separated numbers")
    return numbers


def _batch_result(result: flows.BatchResult) -> Response:
    """NGSI-LD BatchOperationResult: one error entry per rejected item, listing all its field errors."""
    by_index: dict[int, list[service.ItemError]] = {}
    for error in result.errors:
        by_index.setdefault(error.index, []).append(error)
    errors = []
    for index, item_errors in sorted(by_index.items()):
        status = max(e.status for e in item_errors)
        title = HTTP_TITLES.get(status, "Invalid input")
        first = item_errors[0]
        errors.append({"index": index, "entityId": first.entity_id, "error": {
            "type": "/problems/" + ("invalid-input" if status == 422 else title.lower().replace(" ", "-")),
            "title": title, "status": status,
            "detail": f"{first.field}: {first.reason}" if len(item_errors) == 1 else f"{len(item_errors)} invalid fields",
            "errors": [{"field": e.field, "reason": e.reason} for e in item_errors]}})
    return json_response({"success": result.success, "errors": errors}, 207 if errors else 200)


def build_query(
    platform: Any,
    *,
    type: str | None,
    id: str | None,
    q: str | None,
    bbox: str | None,
    near: str | None,
    max_distance: float | None,
    org_unit: str | None,
    ctx: Context | None = None,
) -> EntityQuery:
    """Turn query parameters into an EntityQuery, rejecting what cannot be run (shared with subscriptions).
    With the caller's context, the query keeps to its org scope and to the types it is cleared to see."""
    types = _csv(type)
    for name in types:
        if name not in platform.types:
            raise InvalidInput.at("type", f"unknown entity type {name!r}")
        if ctx is not None:
            access.require_type_visible(platform, ctx, name)
    if ctx is not None and not types and (visible := access.visible_types(platform, ctx)) is not None:
        types = tuple(sorted(visible))
    ids = _csv(id)
    for entity_id in ids:
        _require_urn(entity_id)
    box = None
    if bbox:
        box = tuple(_floats(bbox, "bbox", 4))
        if not (-180 <= box[0] <= box[2] <= 180 and -90 <= box[1] <= box[3] <= 90):
            raise InvalidInput.at("bbox", "expected minLon,minLat,maxLon,maxLat within [-180,180] × [-90,90]")
    near_value = None
    if near is not None or max_distance is not None:
        if near is None or max_distance is None:
            raise InvalidInput.at("near" if near is None else "maxDistance", "near and maxDistance go together")
        lon, lat = _floats(near, "near", 2)
        if not (-180 <= lon <= 180 and -90 <= lat <= 90):
            raise InvalidInput.at("near", "expected lon,lat within [-180,180] × [-90,90]")
        if not 0 <= max_distance <= 1_000_000:
            raise InvalidInput.at("maxDistance", "metres between 0 and 1,000,000")
        near_value = (lon, lat, max_distance)
    units = access.scope_units(platform, ctx or SYSTEM, org_unit)
    org_units = tuple(units) if units is not None else None
    return EntityQuery(types=types, ids=ids, q=parse_q(q) if q else None, bbox=box, near=near_value,
                       org_units=org_units)


@router.get("/entities", response_model=EntityPage, summary="Query entities")
async def query_entities(
    platform: PlatformDep,
    ctx: ContextDep,
    page: PageDep,
    type: Annotated[str | None, Query(description="Entity types, comma-separated")] = None,
    id: Annotated[str | None, Query(description="Entity ids, comma-separated")] = None,
    q: Annotated[str | None, Query(max_length=2000, description='Attribute filter, e.g. pm25>75;status=="ok"')] = None,
    bbox: Annotated[str | None, Query(description="minLon,minLat,maxLon,maxLat")] = None,
    near: Annotated[str | None, Query(description="lon,lat — with maxDistance")] = None,
    maxDistance: Annotated[float | None, Query(description="Metres from `near`")] = None,
    orgUnit: Annotated[str | None, Query(description="Org unit code; includes its descendants")] = None,
    attrs: Annotated[str | None, Query(description="Attributes to return, comma-separated")] = None,
    options: Annotated[Literal["sysAttrs"] | None, Query(description="sysAttrs adds createdAt/modifiedAt")] = None,
    count: Annotated[bool, Query(description="Also return the total number of matches")] = False,
) -> Response:
    query = build_query(platform, type=type, id=id, q=q, bbox=bbox, near=near, max_distance=maxDistance,
                        org_unit=orgUnit, ctx=ctx)
    after = service.decode_cursor(page.cursor) if page.cursor else None
    wanted = set(_csv(attrs))

    def work() -> dict[str, Any]:
        with platform.session() as session:
            sys_attrs = options == "sysAttrs"
            rows, next_cursor = service.query_entities(session, query=query, after=after, limit=page.limit,
                                                       sys_attrs=sys_attrs)
            items = [access.entity_for(platform, ctx, service.row_to_ngsi(row, sys_attrs=sys_attrs)) for row in rows]
            if wanted:
                items = [{k: v for k, v in item.items() if k in ("id", "type") or k in wanted} for item in items]
            body: dict[str, Any] = {"items": items, "next_cursor": next_cursor}
            if count:
                body["count"] = service.count_entities(session, query=query)
            return body

    body = await platform.run(work)
    return json_response(body, headers=page.next_link(body["next_cursor"]))


@router.post("/entities", status_code=201, response_model=EntityDoc, openapi_extra=ENTITY_BODY,
             summary="Create an entity (409 if it exists)")
async def create_entity(platform: PlatformDep, ctx: ContextDep, body: JsonBody) -> Response:
    entity = await flows.write_entity(platform, body, ctx=ctx, create_only=True)
    return json_response(entity, 201, headers={"Location": f"/api/v1/entities/{entity['id']}"})


@router.get("/entities/{entity_id}", response_model=EntityDoc, summary="Read one entity")
async def get_entity(
    platform: PlatformDep,
    ctx: ContextDep,
    entity_id: EntityId,
    attrs: Annotated[str | None, Query(description="Attributes to return, comma-separated")] = None,
    options: Annotated[Literal["sysAttrs"] | None, Query()] = None,
) -> Response:
    _require_urn(entity_id)
    found = await service.read_entity(platform.point_reads, entity_id, sys_attrs=options == "sysAttrs")
    if found is None:
        raise NotFound(f"entity {entity_id} does not exist")
    org_unit, entity = found
    access.require_in_scope(platform, ctx, org_unit, what="entity")
    access.require_type_visible(platform, ctx, entity["type"])
    entity = access.entity_for(platform, ctx, entity)
    wanted = set(_csv(attrs))
    if wanted:
        entity = {k: v for k, v in entity.items() if k in ("id", "type") or k in wanted}
    return json_response(entity)


@router.put("/entities/{entity_id}", response_model=EntityDoc, openapi_extra=ENTITY_BODY,
            summary="Create or replace an entity")
async def replace_entity(platform: PlatformDep, ctx: ContextDep, entity_id: EntityId, body: JsonBody) -> Response:
    _require_urn(entity_id)
    if isinstance(body, dict):
        body.setdefault("id", entity_id)
        if body["id"] != entity_id:
            raise InvalidInput.at("id", "the body's id differs from the id in the URL")
    return json_response(await flows.write_entity(platform, body, ctx=ctx, create_only=False))


@router.patch("/entities/{entity_id}/attrs", response_model=EntityDoc, summary="Add or overwrite attributes",
              openapi_extra={"requestBody": {"required": True, "content": {"application/json": {"schema": {
                  "type": "object", "additionalProperties": {"type": "object"},
                  "description": "attribute name → NGSI-LD attribute"}}}}})
async def update_attributes(platform: PlatformDep, ctx: ContextDep, entity_id: EntityId, body: JsonBody) -> Response:
    _require_urn(entity_id)
    return json_response(await flows.update_attributes(platform, entity_id, body, ctx=ctx))


@router.delete("/entities/{entity_id}/attrs/{attribute}", status_code=204, summary="Delete one attribute")
async def delete_attribute(
    platform: PlatformDep, ctx: ContextDep, entity_id: EntityId,
    attribute: Annotated[str, Path(max_length=128)],
) -> Response:
    _require_urn(entity_id)
    await flows.delete_attribute(platform, entity_id, attribute, ctx=ctx)
    return Response(status_code=204)


@router.delete("/entities/{entity_id}", status_code=204, summary="Delete an entity")
async def delete_entity(platform: PlatformDep, ctx: ContextDep, entity_id: EntityId) -> Response:
    _require_urn(entity_id)
    result = await flows.delete_entities(platform, [entity_id], ctx=ctx)
    if result.errors:
        raise NotFound(f"entity {entity_id} does not exist")
    return Response(status_code=204)


@router.post("/entityOperations/upsert", response_model=BatchOperationResult, openapi_extra=BATCH_BODY,
             summary="Batch create or update (good items are kept; bad ones reported)",
             responses={207: {"model": BatchOperationResult, "description": "Some items were rejected"}})
async def batch_upsert(
    platform: PlatformDep,
    ctx: ContextDep,
    body: JsonBody,
    options: Annotated[Literal["replace", "update"], Query(
        description="replace: stored attributes become exactly the given ones; update: merge into them")] = "replace",
) -> Response:
    if not isinstance(body, list):
        raise InvalidInput.at("body", "a JSON array of entities is required")
    result = await flows.upsert_batch(platform, body, mode="merge" if options == "update" else "replace", ctx=ctx)
    return _batch_result(result)


@router.post("/entityOperations/delete", response_model=BatchOperationResult, summary="Batch delete",
             responses={207: {"model": BatchOperationResult, "description": "Some items were not deleted"}},
             openapi_extra={"requestBody": {"required": True, "content": {"application/json": {
                 "schema": {"type": "array", "items": {"type": "string"}, "maxItems": 1000}}}}})
async def batch_delete(platform: PlatformDep, ctx: ContextDep, body: JsonBody) -> Response:
    if not isinstance(body, list) or not all(isinstance(i, str) for i in body):
        raise InvalidInput.at("body", "a JSON array of entity URNs is required")
    if len(body) > platform.settings.max_batch_entities:
        raise InvalidInput.at("body", f"at most {platform.settings.max_batch_entities} ids per batch")
    return _batch_result(await flows.delete_entities(platform, body, ctx=ctx))


def _history_cursor(cursor: str) -> tuple[int, str]:
    """A history cursor is the (seq, attribute) of the last item seen."""
    seq, _, attribute = service.decode_cursor(cursor).partition(":")
    if not (seq.isdigit() and attribute):
        raise InvalidInput.at("cursor", "not a cursor this API returned")
    return int(seq), attribute


@router.get("/entities/{entity_id}/history", response_model=HistoryPage, summary="Attribute history")
async def history(
    platform: PlatformDep,
    ctx: ContextDep,
    page: PageDep,
    entity_id: EntityId,
    attrs: Annotated[str | None, Query(description="Attributes, comma-separated (default: all)")] = None,
    since: Annotated[datetime | None, Query(description="Observed at or after (ISO 8601 with zone)")] = None,
    until: Annotated[datetime | None, Query(description="Observed before (ISO 8601 with zone)")] = None,
) -> Response:
    _require_urn(entity_id)
    for name, moment in (("since", since), ("until", until)):
        if moment is not None and moment.tzinfo is None:
            raise InvalidInput.at(name, "a timestamp with a zone is required, e.g. 2026-01-01T00:00:00Z")
    after = _history_cursor(page.cursor) if page.cursor else None

    def work() -> dict[str, Any]:
        with platform.session() as session:
            row = session.get(EntityRow, entity_id)
            # a deleted entity's history has no place left to check it against: only the unscoped read it
            access.require_in_scope(platform, ctx, row.org_unit if row is not None else None, what="entity")
            classified: dict[str, str] = {}
            if row is not None:
                access.require_type_visible(platform, ctx, row.type)
                classified = access.classified_attributes(platform, row.type)
            items = service.attribute_history(session, entity_id=entity_id, attributes=_csv(attrs), since=since,
                                              until=until, after=after, limit=page.limit + 1)
            if not items and after is None and row is None:
                raise NotFound(f"entity {entity_id} does not exist and has no history")
        more = len(items) > page.limit
        items = items[: page.limit]
        # paged before the reader's view: a page may come out shorter, never with what it may not see
        cleared = access.clearance(ctx)
        allowed = [i for i in items if classified.get(i.attribute) is None
                   or access.rank(classified[i.attribute]) <= cleared]
        return {
            "entityId": entity_id,
            "items": [{"seq": i.seq, "attribute": i.attribute,
                       "instance": access.attribute_for(ctx, classified.get(i.attribute), i.instance),
                       "observedAt": format_datetime(i.observed_at) if i.observed_at else None,
                       "recordedAt": format_datetime(i.recorded_at), "actor": i.actor} for i in allowed],
            "next_cursor": service.encode_cursor(f"{items[-1].seq}:{items[-1].attribute}") if more else None,
        }

    body = await platform.run(work)
    return json_response(body, headers=page.next_link(body["next_cursor"]))


# ------------------------------------------------------------------------------------------ types

types_router = PathRouter(prefix="/api/v1/types", tags=["entity types"])


@types_router.get("", response_model=list[TypeSpec], summary="Registered entity types")
async def list_types(platform: PlatformDep) -> list[TypeSpec]:
    return platform.types.all()


@types_router.get("/{name}", response_model=TypeSpec, summary="One entity type")
async def get_type(platform: PlatformDep, name: Annotated[str, Path(max_length=128)]) -> TypeSpec:
    spec = platform.types.get(name)
    if spec is None:
        raise NotFound(f"entity type {name} does not exist")
    return spec


@types_router.put("/{name}", response_model=TypeSpec, summary="Define or change an operator entity type")
async def put_type(platform: PlatformDep, ctx: ContextDep, name: Annotated[str, Path(max_length=128)], spec: TypeSpec) -> TypeSpec:
    if spec.name != name:
        raise InvalidInput.at("name", "the body's name differs from the name in the URL")
    return await flows.define_type(platform, spec, now=platform.clock.now(), ctx=ctx)


@types_router.delete("/{name}", status_code=204, summary="Remove an operator entity type no entity uses")
async def delete_type(platform: PlatformDep, ctx: ContextDep, name: Annotated[str, Path(max_length=128)]) -> Response:
    await flows.remove_type(platform, name, ctx=ctx)
    return Response(status_code=204)
