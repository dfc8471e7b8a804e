"""Domain errors. The API layer turns them into RFC 9457 problem details; the CLI into one line."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import ClassVar


@dataclass(frozen=True, slots=True)
class FieldError:
    """One reason a piece of input was rejected, naming the field by its path (e.g. `entities[3].id`)."""

    field: str
    reason: str


def field_path(loc: Iterable[int | str]) -> str:
    """A validation location as a field path: ('event_types', 12, 'sla') → event_types[12].sla, (1, 'x') →
    [1].x."""
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path


class CityBrainError(Exception):
    """Base of every error the platform raises on purpose."""

    status = 500
    title = "Internal error"
    slug = "internal"
    # Set on refusals of access (what kind of refusal): audited whatever the method (api.problems marks them)
    denial: ClassVar[str | None] = None

    def __init__(self, detail: str, *, errors: list[FieldError] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.errors = errors or []


class InvalidInput(CityBrainError):
    status = 422
    title = "Invalid input"
    slug = "invalid-input"

    @classmethod
    def at(cls, field_path: str, reason: str) -> InvalidInput:
        return cls(f"{field_path}: {reason}", errors=[FieldError(field_path, reason)])


class NotFound(CityBrainError):
    status = 404
    title = "Not found"
    slug = "not-found"


class Conflict(CityBrainError):
    status = 409
    title = "Conflict"
    slug = "conflict"


class PayloadTooLarge(CityBrainError):
    status = 413
    title = "Payload too large"
    slug = "payload-too-large"


@dataclass(slots=True)
class ErrorCollector:
    """Collects field errors while validating, so a caller sees every problem at once, not only the first."""

    prefix: str = ""
    errors: list[FieldError] = field(default_factory=list)

    def add(self, field_path: str, reason: str) -> None:
        self.errors.append(FieldError(f"{self.prefix}{field_path}", reason))

    def raise_if_any(self, detail: str = "The request has invalid fields") -> None:
        if self.errors:
            raise InvalidInput(detail if len(self.errors) > 1 else f"{self.errors[0].field}: {self.errors[0].reason}",
                               errors=self.errors)


class Forbidden(CityBrainError):
    """The caller is known but may not do this: its roles, its org scope or its clearance."""

    status = 403
    title = "Forbidden"
    slug = "forbidden"
    denial = "forbidden"


class OutOfScope(NotFound):
    """A resource outside the caller's org scope, answered as not found so its existence is not confirmed."""

    denial = "out-of-scope"


class ServiceUnavailable(CityBrainError):
    """A capability this process runs is starting, stopped or not run here."""

    status = 503
    title = "Service unavailable"
    slug = "unavailable"


class Unauthorized(CityBrainError):
    """No credentials where they are required, or credentials that do not hold (wrong, expired, revoked)."""

    status = 401
    title = "Unauthorized"
    slug = "unauthorized"
    denial = "unauthorized"
    headers: ClassVar[Mapping[str, str]] = MappingProxyType({"WWW-Authenticate": 'Bearer realm="citybrain"'})


class TooManyRequests(CityBrainError):
    """A caller over its request rate; `retry_after` says when one more request will be taken."""

    status = 429
    title = "Too many requests"
    slug = "rate-limited"

    def __init__(self, detail: str, *, retry_after: int) -> None:
        super().__init__(detail)
        self.headers = {"Retry-After": str(retry_after)}
