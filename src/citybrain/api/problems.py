"""RFC 9457 problem details for every error, naming the field and the reason."""

from __future__ import annotations

import logging
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from sqlalchemy.exc import DBAPIError, OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from citybrain.core.errors import CityBrainError, FieldError, field_path

log = logging.getLogger(__name__)
PROBLEM_JSON = "application/problem+json"


def problem_body(status: int, title: str, detail: str, *, slug: str, instance: str | None = None,
                 errors: list[FieldError] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"type": f"/problems/{slug}", "title": title, "status": status, "detail": detail}
    if instance:
        body["instance"] = instance
    if errors:
        body["errors"] = [{"field": e.field, "reason": e.reason} for e in errors]
    return body


def problem_response(status: int, title: str, detail: str, *, slug: str, request: Request | None = None,
                     errors: list[FieldError] | None = None, headers: dict[str, str] | None = None) -> Response:
    body = problem_body(status, title, detail, slug=slug, errors=errors,
                        instance=request.url.path if request is not None else None)
    return Response(orjson.dumps(body), status_code=status, media_type=PROBLEM_JSON, headers=headers)


HTTP_TITLES = {400: "Bad request", 401: "Unauthorized", 403: "Forbidden", 404: "Not found",
               405: "Method not allowed", 406: "Not acceptable", 409: "Conflict", 413: "Payload too large",
               415: "Unsupported media type", 429: "Too many requests"}


PROBLEM_SCHEMA: dict[str, Any] = {
    "title": "Problem", "type": "object", "required": ["type", "title", "status", "detail"],
    "description": "RFC 9457 problem details; `errors` names each bad field and why.",
    "properties": {
        "type": {"type": "string"}, "title": {"type": "string"}, "status": {"type": "integer"},
        "detail": {"type": "string"}, "instance": {"type": "string"},
        "errors": {"type": "array", "items": {"type": "object", "required": ["field", "reason"], "properties": {
            "field": {"type": "string"}, "reason": {"type": "string"}}}},
    },
}


def document_problems(app: FastAPI) -> None:
    """Say in the OpenAPI document what every error is: problem+json, for 422 and any other error status
    an operation does not describe itself (its `default` response)."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = generate()
            schemas = schema.setdefault("components", {}).setdefault("schemas", {})
            schemas["Problem"] = PROBLEM_SCHEMA
            for name in ("HTTPValidationError", "ValidationError"):
                schemas.pop(name, None)
            problem = {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}}
            for operations in schema.get("paths", {}).values():
                for operation in operations.values():
                    responses = operation.setdefault("responses", {})
                    responses["422"] = {"description": "Invalid input: each bad field and why", "content": problem}
                    responses.setdefault("default", {"description": "An error (RFC 9457 problem details)",
                                                     "content": problem})
        return app.openapi_schema  # type: ignore[return-value]

    app.openapi = openapi  # type: ignore[method-assign]


def install(app: FastAPI) -> None:
    document_problems(app)
    @app.exception_handler(CityBrainError)
    async def _domain(request: Request, exc: CityBrainError) -> Response:
        if exc.denial:  # the audit middleware records refusals of reads too
            request.state.denied = exc.denial
        return problem_response(exc.status, exc.title, exc.detail, slug=exc.slug, request=request, errors=exc.errors,
                                headers=getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> Response:
        errors = [FieldError(field_path(tuple(e.get("loc", ()))), e.get("msg", "invalid")) for e in exc.errors()]
        detail = f"{errors[0].field}: {errors[0].reason}" if len(errors) == 1 else "The request has invalid fields"
        return problem_response(422, "Invalid input", detail, slug="invalid-input", request=request, errors=errors)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        title = HTTP_TITLES.get(exc.status_code, "Error")
        detail = exc.detail if isinstance(exc.detail, str) else title
        if exc.status_code == 404 and detail == "Not Found":
            detail = f"no resource at {request.url.path}"
        return problem_response(exc.status_code, title, detail, slug=title.lower().replace(" ", "-"),
                                request=request, headers=getattr(exc, "headers", None))

    @app.exception_handler(DBAPIError)
    async def _store(request: Request, exc: DBAPIError) -> Response:
        # a connection cut, refused, or to a store shutting down or starting up: the store is unavailable
        if not (exc.connection_invalidated or isinstance(exc, OperationalError)):
            return await _unexpected(request, exc)
        log.warning("store connection lost on %s %s: %s", request.method, request.url.path, exc.orig)
        return problem_response(503, "Service unavailable",
                                "The store is unavailable (connection lost or refused, or it is restarting). "
                                "Retry shortly.",
                                slug="store-unavailable", request=request, headers={"Retry-After": "1"})

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return problem_response(500, "Internal error", "The server failed; the error is logged.", slug="internal",
                                request=request)
