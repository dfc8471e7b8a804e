"""Typed events that travel on the bus. Each carries the Context of whatever caused it.

Events are msgspec Structs so they encode to JSON cheaply for NATS and decode back into the same type.
A capability defines its own events by subclassing `Event`; the class name is the wire name.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar

import msgspec

from citybrain.core.context import Context, new_id


def _utcnow() -> datetime:
    return datetime.now(UTC)


class Event(msgspec.Struct, frozen=True, kw_only=True):
    """Base of every bus event."""

    context: Context
    event_id: str = msgspec.field(default_factory=new_id)
    occurred_at: datetime = msgspec.field(default_factory=_utcnow)

    types: ClassVar[dict[str, type[Event]]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        name = cls.__name__
        if name in Event.types and Event.types[name] is not cls:
            raise TypeError(f"event type {name} is defined twice")
        Event.types[name] = cls

    @classmethod
    def type_name(cls) -> str:
        return cls.__name__


def event_type(name: str) -> type[Event]:
    """The event class registered under a wire name."""
    try:
        return Event.types[name]
    except KeyError:
        raise KeyError(f"unknown event type {name!r}") from None


class EntityChanged(Event, frozen=True, kw_only=True):
    """An entity was created, updated or deleted in the hub. `entity` is its normalized NGSI-LD form
    after the change (None when deleted); `attributes` names the attributes whose value changed."""

    entity_id: str
    entity_type: str
    org_unit: str | None
    operation: str  # created | updated | deleted
    attributes: list[str] = msgspec.field(default_factory=list)
    entity: dict[str, Any] | None = None


class CommandIssued(Event, frozen=True, kw_only=True):
    """A command (feedback execution) was addressed to an entity or a connected system."""

    command_id: str
    target: str
    system_id: str | None
    name: str


class CommandStatusChanged(Event, frozen=True, kw_only=True):
    """A command moved along pending → sent → acknowledged | failed."""

    command_id: str
    status: str
    reason: str | None = None


class OrgTreeChanged(Event, frozen=True, kw_only=True):
    """Org units were loaded or changed (a district import, a new department)."""

    root_code: str
    units: int


class EntityTypesChanged(Event, frozen=True, kw_only=True):
    """An operator defined, changed or removed an entity type: every process reloads its type registry."""

    type_name: str
    operation: str  # defined | removed


class SubscriptionsChanged(Event, frozen=True, kw_only=True):
    """A subscription was created, changed or deleted: every process reloads its subscription cache."""

    subscription_id: str
    operation: str  # created | updated | deleted


class SystemHealthChanged(Event, frozen=True, kw_only=True):
    """A connected system's health moved between unknown, up, degraded and down."""

    system_id: str
    status: str
    previous: str
    reason: str | None = None
