"""Bus events of collaborative disposal; `case` is the case as the API returns it (without personal data:
events travel to every subscriber, so reporters' contacts stay in the store)."""

from __future__ import annotations

from typing import Any

from citybrain.core.events import Event


class CaseTransitioned(Event, frozen=True, kw_only=True):
    """A case moved from one status to another (or was opened: `from_status` None)."""

    case_id: str
    number: str
    action: str
    from_status: str | None
    to_status: str
    case: dict[str, Any]


class CaseSlaEvent(Event, frozen=True, kw_only=True):
    """What the SLA timers say about a case's running stage."""

    case_id: str
    number: str
    stage: str
    due_at: str
    case: dict[str, Any]


class CaseSlaWarning(CaseSlaEvent, frozen=True, kw_only=True):
    """A case's running stage is close to its deadline."""


class CaseSlaBreached(CaseSlaEvent, frozen=True, kw_only=True):
    """A case's running stage passed its deadline (it is escalated one level up when there is one)."""


class SupervisionTaskOpened(Event, frozen=True, kw_only=True):
    """The big closed loop asked a department to deal with a problem that keeps coming back."""

    task: dict[str, Any]


class RoutingRulesChanged(Event, frozen=True, kw_only=True):
    """A new version of the routing rules is in force (every process reloads them)."""

    version: int
