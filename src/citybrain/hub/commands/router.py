"""Routes of connected systems and commands: thin; each validates, calls one flow and returns a schema."""

from __future__ import annotations

from typing import Annotated

from fastapi import Path, Query, Response

from citybrain.api.deps import ContextDep, PageDep, PlatformDep
from citybrain.api.routing import PathRouter
from citybrain.hub.commands import flows
from citybrain.hub.commands.schemas import (
    Acknowledgement,
    CommandCreate,
    CommandPage,
    CommandRead,
    CommandStatus,
    Heartbeat,
    SystemCreate,
    SystemKind,
    SystemPage,
    SystemRead,
    SystemStatus,
    SystemUpdate,
)

systems_router = PathRouter(prefix="/api/v1/systems", tags=["connected systems"])
commands_router = PathRouter(prefix="/api/v1/commands", tags=["commands"])
SystemId = Annotated[str, Path(max_length=512, description="Connected system URN")]
CommandId = Annotated[str, Path(max_length=64, description="Command id")]


@systems_router.post("", status_code=201, response_model=SystemRead, summary="Register a connected system")
async def register_system(platform: PlatformDep, ctx: ContextDep, body: SystemCreate, response: Response) -> SystemRead:
    read = await flows.register_system(platform, body, ctx=ctx)
    response.headers["Location"] = f"/api/v1/systems/{read.id}"
    return read


@systems_router.get("", response_model=SystemPage, summary="Connected systems with their health")
async def list_systems(
    platform: PlatformDep,
    page: PageDep,
    response: Response,
    kind: Annotated[SystemKind | None, Query()] = None,
    status: Annotated[SystemStatus | None, Query()] = None,
    department: Annotated[str | None, Query(max_length=64, description="Owning org unit code")] = None,
) -> SystemPage:
    result = await flows.list_systems(platform, cursor=page.cursor, limit=page.limit, kind=kind, status=status,
                                      department=department)
    response.headers.update(page.next_link(result.next_cursor))
    return result


@systems_router.get("/{system_id}", response_model=SystemRead, summary="One connected system")
async def get_system(platform: PlatformDep, system_id: SystemId) -> SystemRead:
    return await flows.get_system(platform, system_id)


@systems_router.patch("/{system_id}", response_model=SystemRead, summary="Change a connected system")
async def update_system(platform: PlatformDep, ctx: ContextDep, system_id: SystemId, body: SystemUpdate) -> SystemRead:
    return await flows.update_system(platform, system_id, body, ctx=ctx)


@systems_router.delete("/{system_id}", status_code=204,
                       summary="Remove a connected system (409 while it has pending or sent commands)")
async def delete_system(platform: PlatformDep, ctx: ContextDep, system_id: SystemId) -> Response:
    await flows.delete_system(platform, system_id, ctx=ctx)
    return Response(status_code=204)


@systems_router.post("/{system_id}/heartbeat", response_model=SystemRead, summary="A sign of life from a system")
async def heartbeat(platform: PlatformDep, ctx: ContextDep, system_id: SystemId,
                    body: Heartbeat | None = None) -> SystemRead:
    return await flows.heartbeat(platform, system_id, body or Heartbeat(), ctx=ctx)


@systems_router.get("/{system_id}/commands", response_model=CommandPage,
                    summary="Commands for a system to pull, oldest first (then POST /api/v1/commands/{id}/ack)")
async def pull_commands(
    platform: PlatformDep,
    page: PageDep,
    response: Response,
    system_id: SystemId,
    status: Annotated[CommandStatus | None, Query()] = "pending",
) -> CommandPage:
    result = await flows.list_commands(platform, cursor=page.cursor, limit=page.limit, status=status, target=None,
                                       system_id=system_id, newest_first=False, require_system=True)
    response.headers.update(page.next_link(result.next_cursor))
    return result


@commands_router.post("", status_code=201, response_model=CommandRead,
                      summary="Issue a command to an entity (via its controlledBy system) or to a system")
async def issue_command(platform: PlatformDep, ctx: ContextDep, body: CommandCreate, response: Response) -> CommandRead:
    read = await flows.issue_command(platform, body, ctx=ctx)
    response.headers["Location"] = f"/api/v1/commands/{read.id}"
    return read


@commands_router.get("", response_model=CommandPage, summary="Commands, newest first")
async def list_commands(
    platform: PlatformDep,
    page: PageDep,
    response: Response,
    status: Annotated[CommandStatus | None, Query()] = None,
    target: Annotated[str | None, Query(max_length=512, description="Entity or system URN")] = None,
    system: Annotated[str | None, Query(max_length=512, description="Executing system URN")] = None,
) -> CommandPage:
    result = await flows.list_commands(platform, cursor=page.cursor, limit=page.limit, status=status, target=target,
                                       system_id=system)
    response.headers.update(page.next_link(result.next_cursor))
    return result


@commands_router.get("/{command_id}", response_model=CommandRead, summary="One command with its history")
async def get_command(platform: PlatformDep, command_id: CommandId) -> CommandRead:
    return await flows.get_command(platform, command_id)


@commands_router.post("/{command_id}/ack", response_model=CommandRead,
                      summary="The executing system acknowledges a command, or reports its failure")
async def acknowledge(platform: PlatformDep, ctx: ContextDep, command_id: CommandId,
                      body: Acknowledgement) -> CommandRead:
    return await flows.acknowledge(platform, command_id, body, ctx=ctx)
