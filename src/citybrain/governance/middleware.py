"""Audit at the edge: every write request, every read of a route marked as returning personal data and
every refused attempt (401, 403, or a resource hidden as out of scope) becomes an audit record before its response goes out (so a client that saw the answer knows the record is
kept). Records of concurrent requests are committed together (`audit.GroupCommit`). Pure ASGI, like the
other middlewares: nothing is buffered.

A route marks its personal-data reads with `openapi_extra=PERSONAL_DATA` (the mark shows in the OpenAPI
document too). The actor and scope come from the request's context (`api.deps.get_context` leaves it in
the request state); the caller may say why in an `X-Purpose` header.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from citybrain.core.context import Context
from citybrain.governance import audit

if TYPE_CHECKING:
    from citybrain.platform import Platform

log = logging.getLogger(__name__)

WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
PERSONAL_DATA_MARK = "x-personal-data"
PERSONAL_DATA: dict[str, Any] = {PERSONAL_DATA_MARK: True}


def _header(scope: dict[str, Any], name: bytes) -> str | None:
    for key, value in scope.get("headers") or ():
        if key == name:
            return value.decode("latin-1")[:500]
    return None


class AuditMiddleware:
    def __init__(self, app: Any, platform: Platform) -> None:
        self.app = app
        self.platform = platform
        self.records = audit.GroupCommit(platform)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] not in WRITE_METHODS | {"GET"}:
            await self.app(scope, receive, send)
            return

        async def audited_send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                route = scope.get("route")
                personal = bool((getattr(route, "openapi_extra", None) or {}).get(PERSONAL_DATA_MARK))
                denied = (scope.get("state") or {}).get("denied")
                if scope["method"] in WRITE_METHODS or personal or denied:
                    request_id = await self._record(scope, route, message["status"], personal, denied)
                    # the caller can name the act to an auditor: the record's context_id
                    message = {**message, "headers": [*message.get("headers", ()), (b"x-request-id", request_id.encode())]}
            await send(message)

        await self.app(scope, receive, audited_send)

    async def _record(self, scope: dict[str, Any], route: Any, status: int, personal: bool,
                      denied: str | None) -> str:
        client = scope.get("client")
        host = client[0] if client else "unknown"
        ctx = (scope.get("state") or {}).get("context")
        if not isinstance(ctx, Context):  # refused before the route ran (validation, not found)
            ctx = Context(actor=f"api:{host}")
        template = getattr(route, "path", None)
        detail: dict[str, Any] = {"route": template} if template else {}
        if scope.get("query_string"):
            detail["query"] = scope["query_string"].decode("latin-1")[:500]
        if personal:
            detail["personal_data"] = True
        if denied:
            detail["denied"] = denied
        entry = audit.AuditEntry.of(ctx, action=f"{scope['method']} {template or scope['path']}",
                                    resource=scope["path"], outcome=str(status),
                                    purpose=_header(scope, b"x-purpose"), client=host, detail=detail)
        try:
            await self.records.record(entry)
        except Exception:  # the act itself is done; its record is what failed: say so loudly
            log.exception("audit record for %s %s (actor %s, status %s) could not be written",
                          scope["method"], scope["path"], ctx.actor, status)
        return ctx.id
