"""Dependencies shared by every router: the platform, the request context, JSON bodies, pagination."""

from __future__ import annotations

from typing import Annotated, Any

import orjson
from fastapi import Depends, Path, Query, Request
from fastapi.responses import Response

from citybrain.core.context import Context
from citybrain.core.errors import InvalidInput, Unauthorized
from citybrain.governance import access
from citybrain.platform import Platform


async def get_platform(request: Request) -> Platform:  # async: a sync dependency costs a thread hop
    return request.app.state.platform


# Paths anyone may call: liveness, signing in, the API's own description, and Open311 (its clients
# authenticate with the GeoReport api_key field)
OPEN_PATHS = ("/health", "/api/v1/auth/token", "/docs", "/redoc", "/openapi.json", "/open311/")


async def get_context(request: Request) -> Context:
    """Who is calling, and whether it may, for every route (the app runs this before each one).

    A bearer token (`Authorization: Bearer …`) or an API key (`X-API-Key`) becomes the caller's context;
    credentials that do not hold are refused (401), never taken as anonymous. The access policy
    (`governance.access`) then decides whether the caller's roles and clearance admit this route (403 when
    not). Without credentials the caller is its address with no role, answered only when `auth_required`
    is off (an open installation) or on the open paths; otherwise 401."""
    identities = request.app.state.identities
    authorization = request.headers.get("authorization")
    api_key = request.headers.get("x-api-key")
    if authorization:
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthorized("Authorization must be 'Bearer <token>' (POST /api/v1/auth/token gives one)")
        ctx = await identities.from_token(token.strip())
        request.app.state.rate_limiter.take(ctx.actor)
    elif api_key:
        ctx = await identities.from_key(api_key.strip())
        request.app.state.rate_limiter.take(ctx.actor)
    elif request.app.state.platform.settings.auth_required and not request.url.path.startswith(OPEN_PATHS):
        raise Unauthorized("sign in: POST /api/v1/auth/token for a bearer token, or send an X-API-Key")
    else:
        client = request.client.host if request.client else "unknown"
        request.state.context = Context(actor=f"api:{client}", org_scope=None)
        return request.state.context
    request.state.context = ctx  # the audit middleware records the act (or its refusal) under this context
    if not ctx.roles:  # people and keys always hold a role; a credential without one admits nothing
        raise Unauthorized(f"{ctx.actor} holds no role")
    access.authorize(request.app.state.platform, ctx, access.family_of(request.scope.get("route")), request.method)
    return ctx


async def json_body(request: Request) -> Any:
    """Parse the body with orjson (strict: no NaN, no trailing garbage) and say where it broke."""
    raw = await request.body()
    if not raw:
        raise InvalidInput.at("body", "a JSON body is required")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidInput.at("body", f"not valid JSON: {exc}") from None


PlatformDep = Annotated[Platform, Depends(get_platform)]
# A row number in the path: the stores keep 64-bit integers, so a larger one is refused as input (422),
# not sent to the database to overflow there
MAX_ROW_ID = 2**63 - 1
RowId = Annotated[int, Path(ge=1, le=MAX_ROW_ID, description="A row number (1 … 2^63-1).")]
ContextDep = Annotated[Context, Depends(get_context)]
JsonBody = Annotated[Any, Depends(json_body)]


class PageParams:
    def __init__(self, request: Request, limit: int, cursor: str | None) -> None:
        self.limit = limit
        self.cursor = cursor
        self.request = request

    def next_link(self, next_cursor: str | None) -> dict[str, str]:
        if next_cursor is None:
            return {}
        url = self.request.url.include_query_params(cursor=next_cursor)
        return {"Link": f'<{url}>; rel="next"'}


async def page_params(
    request: Request,
    limit: Annotated[int, Query(ge=1, le=1000, description="Items per page (at most 1000).")] = 100,
    cursor: Annotated[str | None, Query(max_length=2048, description="`next_cursor` of the previous page.")] = None,
) -> PageParams:
    return PageParams(request, limit, cursor)


PageDep = Annotated[PageParams, Depends(page_params)]


def json_response_bytes(content: Any) -> bytes:
    return orjson.dumps(content)


def json_response(content: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """A JSON answer rendered by orjson (routes that build their own views skip FastAPI's encoder)."""
    return Response(orjson.dumps(content), status_code=status, media_type="application/json", headers=headers)
