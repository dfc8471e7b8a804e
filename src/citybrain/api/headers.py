"""Security headers on every answer, and cross-origin access only for the origins the operator lists.

The API serves JSON to the cockpit and to other systems; nothing it returns is meant to be framed, sniffed
into another type, or to leak the page it was called from. The OpenAPI pages (`/docs`, `/redoc`) load
Swagger UI and ReDoc from a CDN, so the strict content security policy goes on everything else.
"""

from __future__ import annotations

from typing import Any

ALWAYS = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"permissions-policy", b"camera=(), microphone=(), geolocation=()"),
]
STRICT_CSP = (b"content-security-policy", b"default-src 'none'; frame-ancestors 'none'")
DOC_PAGES = ("/docs", "/redoc")


class SecurityHeaders:
    """Pure ASGI: adds the headers to the response start; a header the route set itself is kept."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        strict = not scope.get("path", "").startswith(DOC_PAGES)

        async def send_with_headers(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers") or [])
                present = {name.lower() for name, _ in headers}
                wanted = [*ALWAYS, STRICT_CSP] if strict else ALWAYS
                headers.extend(pair for pair in wanted if pair[0] not in present)
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)
