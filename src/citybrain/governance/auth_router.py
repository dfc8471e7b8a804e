"""Signing in over HTTP: the OAuth2 password flow gives a bearer token; `me` says who a caller is."""

from __future__ import annotations

from typing import Annotated

from fastapi import Form
from fastapi.responses import Response

from citybrain.api.deps import ContextDep, PlatformDep, json_response
from citybrain.api.routing import PathRouter
from citybrain.core.errors import InvalidInput
from citybrain.governance import auth

router = PathRouter(prefix="/api/v1/auth", tags=["authentication"])


@router.post("/token", summary="Sign in (OAuth2 password flow): a bearer token for the user")
async def token(
    platform: PlatformDep,
    username: Annotated[str, Form(max_length=100)],
    password: Annotated[str, Form(max_length=1000)],
    grant_type: Annotated[str | None, Form(pattern="^password$")] = None,
) -> Response:
    """Form fields `username` and `password` (as OAuth2 clients and Swagger UI's Authorize send them).
    The answer's `access_token` goes in `Authorization: Bearer …` until `expires_in` seconds have passed."""
    if not username:
        raise InvalidInput.at("username", "required")

    def work() -> tuple[str, int]:
        with platform.session() as session:
            user = auth.authenticate(session, username, password)
        return auth.issue_token(platform, user)

    access_token, lifetime = await platform.run(work)
    return json_response({"access_token": access_token, "token_type": "bearer", "expires_in": lifetime},
                         headers={"Cache-Control": "no-store"})


@router.get("/me", summary="Who the caller is: actor, roles and org scope")
async def me(ctx: ContextDep) -> Response:
    return json_response({"actor": ctx.actor, "roles": list(ctx.roles),
                          "org_scope": list(ctx.org_scope) if ctx.org_scope is not None else None})
