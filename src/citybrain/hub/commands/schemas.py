"""API shapes of connected systems and commands (camelCase on the wire)."""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

import orjson
from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from citybrain.hub.subscriptions.schemas import CamelModel, HttpUrl, Moment

SystemKind = Literal["department-system", "iot-platform", "signal-controller", "device-gateway", "other"]
SystemStatus = Literal["unknown", "up", "degraded", "down"]
CommandStatus = Literal["pending", "sent", "acknowledged", "failed"]


def _finite(value: Any) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, list):
        return all(_finite(v) for v in value)
    if isinstance(value, dict):
        return all(_finite(v) for v in value.values())
    return True


def check_json_object(value: dict[str, Any]) -> dict[str, Any]:
    """Refuse what the store could not keep as it was sent: integers beyond 64 bits, nesting deeper than
    255 levels (the encoder's limit, checked first so the finiteness walk stays shallow), NaN/Infinity."""
    try:
        orjson.dumps(value)
    except orjson.JSONEncodeError as exc:
        raise ValueError(f"cannot be stored: {exc}") from None
    if not _finite(value):
        raise ValueError("numbers must be finite (no NaN or Infinity)")
    return value


JsonObject = Annotated[dict[str, Any], AfterValidator(check_json_object)]
CommandName = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z][A-Za-z0-9_.:-]*$")]


class SystemCreate(CamelModel):
    """A system the hub sends commands to and watches. Without `commandUrl` the system pulls its
    commands (GET /api/v1/systems/{id}/commands); without `healthUrl` its health comes from heartbeats."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"example": {
        "id": "urn:ngsi-ld:ConnectedSystem:xihu-lighting", "name": "Xihu street lighting platform",
        "kind": "iot-platform", "department": "330106-chengguan",
        "commandUrl": "https://lighting.example.org/citybrain/commands",
        "healthUrl": "https://lighting.example.org/health"}})

    id: str | None = Field(None, max_length=512, description="URN; generated when absent")
    name: str = Field(min_length=1, max_length=200)
    kind: SystemKind
    department: str | None = Field(None, max_length=64, description="Owning org unit (usually a department)")
    description: str | None = Field(None, max_length=2000)
    command_url: HttpUrl | None = Field(None, description="Where commands are POSTed; absent: the system pulls")
    health_url: HttpUrl | None = Field(None, description="GET every system_health_interval_s; 2xx means up")


class SystemUpdate(CamelModel):
    """Fields to change; null clears an optional one."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(None, min_length=1, max_length=200)
    kind: SystemKind | None = None
    department: str | None = Field(None, max_length=64)
    description: str | None = Field(None, max_length=2000)
    command_url: HttpUrl | None = None
    health_url: HttpUrl | None = None


class SystemRead(CamelModel):
    id: str
    name: str
    kind: str
    department: str | None = None
    description: str | None = None
    command_url: str | None = None
    health_url: str | None = None
    status: SystemStatus
    last_seen_at: Moment | None = Field(None, description="Last heartbeat or successful health check")
    last_check_at: Moment | None = None
    last_error: str | None = None
    created_at: Moment
    modified_at: Moment


class SystemPage(BaseModel):
    items: list[SystemRead]
    next_cursor: str | None = None


class Heartbeat(CamelModel):
    """A sign of life from a system, optionally with its own view of its health."""

    model_config = ConfigDict(extra="forbid")
    status: Literal["up", "degraded", "down"] = "up"
    detail: str | None = Field(None, max_length=2000)


class CommandCreate(CamelModel):
    """A command to an entity (executed by the system its `controlledBy` names, or by `system`) or to a
    connected system itself."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"example": {
        "target": "urn:ngsi-ld:Streetlight:XH-0001", "name": "switchOff", "parameters": {"reason": "dawn"}}})

    target: str = Field(max_length=512, description="URN of an entity or of a connected system")
    system: str | None = Field(None, max_length=512, description="URN of the executing system (default: the "
                                                                  "target's controlledBy)")
    name: CommandName = Field(description="What to do, e.g. switchOff, setPhase, dispatchCrew")
    parameters: JsonObject = Field(default_factory=dict)


class Acknowledgement(CamelModel):
    """The executing system's answer to a command."""

    model_config = ConfigDict(extra="forbid")
    status: Literal["acknowledged", "failed"]
    reason: str | None = Field(None, max_length=2000)
    result: JsonObject | None = None


class Transition(BaseModel):
    status: CommandStatus
    at: Moment
    reason: str | None = None
    actor: str


class CommandRead(CamelModel):
    id: str
    name: str
    parameters: dict[str, Any]
    target: str
    target_kind: Literal["entity", "system"]
    system: str
    status: CommandStatus
    reason: str | None = Field(None, description="Why it is in its current status")
    result: dict[str, Any] | None = None
    attempts: int = Field(description="Delivery attempts to the system's command endpoint")
    last_error: str | None = None
    next_attempt_at: Moment | None = None
    ack_deadline: Moment | None = Field(None, description="Sent commands fail when not acknowledged by then")
    issued_by: str
    created_at: Moment
    updated_at: Moment
    history: list[Transition]


class CommandPage(BaseModel):
    items: list[CommandRead]
    next_cursor: str | None = None
