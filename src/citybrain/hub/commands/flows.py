"""Feedback execution: the connected-system registry and its health, and commands with their life cycle.

A command moves pending → sent → acknowledged | failed along `TRANSITIONS`; anything else is a 409 that
names the allowed moves. Every transition is appended to the command's history (time, reason, actor) and
published as `CommandStatusChanged`. Systems with a command endpoint get their commands pushed by the
`CommandDispatcher` (retries with back-off); the others pull them and acknowledge. `HealthChecker` polls
health URLs and marks systems down when their heartbeats stop.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import httpx
import orjson

from citybrain.core.context import Context, new_id
from citybrain.core.errors import Conflict, FieldError, InvalidInput, NotFound
from citybrain.core.events import CommandIssued, CommandStatusChanged, SystemHealthChanged
from citybrain.governance import access
from citybrain.hub.background import HttpPollingService, PollingService, backoff_delay, find_service
from citybrain.hub.commands import service
from citybrain.hub.commands.models import CommandRow, ConnectedSystemRow
from citybrain.hub.commands.schemas import (
    Acknowledgement,
    CommandCreate,
    CommandPage,
    CommandRead,
    Heartbeat,
    SystemCreate,
    SystemPage,
    SystemRead,
    SystemUpdate,
    check_json_object,
)
from citybrain.hub.entities import service as entity_service
from citybrain.hub.entities.ngsi import format_datetime, is_urn
from citybrain.hub.entities.service import decode_cursor, encode_cursor

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from citybrain.platform import Platform

log = logging.getLogger(__name__)
SYSTEM_PREFIX = "urn:ngsi-ld:ConnectedSystem:"
DISPATCHER_ACTOR = "system:command-dispatcher"
HEALTH_ACTOR = "system:health-checker"

# The command life cycle. pending → acknowledged is how a pulling system answers (nothing was pushed).
TRANSITIONS: dict[str, tuple[str, ...]] = {
    "pending": ("sent", "acknowledged", "failed"),
    "sent": ("acknowledged", "failed"),
    "acknowledged": (),
    "failed": (),
}


def check_transition(current: str, new: str) -> None:
    """Raise a 409 naming the allowed moves unless `current → new` is in the transition table."""
    allowed = TRANSITIONS.get(current, ())
    if new not in allowed:
        names = ", ".join(allowed) if allowed else "none (it is final)"
        raise Conflict(f"a command cannot go from {current} to {new}; from {current} it may go to: {names}",
                       errors=[FieldError("status", f"allowed from {current}: {names}")])


def _entry(status: str, now: datetime, reason: str | None, actor: str) -> dict[str, Any]:
    return {"status": status, "at": format_datetime(now), "reason": reason, "actor": actor}


def _moves(row: CommandRow, steps: list[tuple[str, str | None]], now: datetime, actor: str) -> dict[str, Any]:
    """The column values that take `row` through `steps` (each checked against the table)."""
    history = list(row.history)
    current = row.status
    for status, reason in steps:
        check_transition(current, status)
        history.append(_entry(status, now, reason, actor))
        current = status
    final_status, final_reason = steps[-1]
    values: dict[str, Any] = {"status": final_status, "reason": final_reason, "history": history, "updated_at": now,
                              "lease_owner": None, "lease_until": None}
    if final_status != "sent":
        values["ack_deadline"] = None
    return values


def _status_events(row: CommandRow, steps: list[tuple[str, str | None]], actor: str) -> list[CommandStatusChanged]:
    ctx = Context(parent_id=row.context_id, actor=actor)
    return [CommandStatusChanged(context=ctx, command_id=row.id, status=status, reason=reason)
            for status, reason in steps]


# ------------------------------------------------------------------------------------------- systems


def system_read(row: ConnectedSystemRow) -> SystemRead:
    return SystemRead(id=row.id, name=row.name, kind=row.kind, department=row.department,
                      description=row.description, command_url=row.command_url, health_url=row.health_url,
                      status=row.status, last_seen_at=row.last_seen_at,  # type: ignore[arg-type]
                      last_check_at=row.last_check_at, last_error=row.last_error, created_at=row.created_at,
                      modified_at=row.modified_at)


def _check_department(platform: Platform, code: str | None) -> None:
    if code is not None and code not in platform.org_tree:
        raise InvalidInput.at("department", f"unknown org unit {code!r}")


def _wake(platform: Platform, kind: type[PollingService]) -> None:
    running = find_service(platform, kind)
    if running is not None:
        running.wake()


async def register_system(platform: Platform, data: SystemCreate, *, ctx: Context) -> SystemRead:
    system_id = data.id or f"{SYSTEM_PREFIX}{new_id()}"
    if not is_urn(system_id):
        raise InvalidInput.at("id", f"a URN is required, e.g. {SYSTEM_PREFIX}xihu-lighting")
    _check_department(platform, data.department)
    now = platform.clock.now()

    def work() -> SystemRead:
        with platform.transaction() as session:
            row = service.add_system(session, row=ConnectedSystemRow(
                id=system_id, name=data.name, kind=data.kind, department=data.department,
                description=data.description, command_url=data.command_url, health_url=data.health_url,
                status="unknown", created_at=now, modified_at=now))
            return system_read(row)

    read = await platform.run(work)
    if read.health_url:
        _wake(platform, HealthChecker)
    return read


async def update_system(platform: Platform, system_id: str, data: SystemUpdate, *, ctx: Context) -> SystemRead:
    changes = data.model_dump(exclude_unset=True)
    for required in ("name", "kind"):
        if required in changes and changes[required] is None:
            raise InvalidInput.at(required, "cannot be null")
    if "department" in changes:
        _check_department(platform, data.department)

    def work() -> SystemRead:
        with platform.transaction() as session:
            row = service.get_system(session, system_id=system_id)
            if "health_url" in changes and changes["health_url"] != row.health_url:
                row.last_check_at = None  # check the new URL right away
            for name, value in changes.items():
                setattr(row, name, value)
            row.modified_at = platform.clock.now()
            return system_read(row)

    read = await platform.run(work)
    _wake(platform, HealthChecker)
    _wake(platform, CommandDispatcher)  # a new command URL may unblock pending commands
    return read


async def delete_system(platform: Platform, system_id: str, *, ctx: Context) -> None:
    def work() -> None:
        with platform.transaction() as session:
            service.delete_system(session, system_id=system_id)

    await platform.run(work)


async def get_system(platform: Platform, system_id: str) -> SystemRead:
    def work() -> SystemRead:
        with platform.session() as session:
            return system_read(service.get_system(session, system_id=system_id))

    return await platform.run(work)


async def list_systems(platform: Platform, *, cursor: str | None, limit: int, kind: str | None,
                       status: str | None, department: str | None) -> SystemPage:
    after = decode_cursor(cursor) if cursor else None

    def work() -> SystemPage:
        with platform.session() as session:
            rows = service.list_systems(session, after=after, limit=limit + 1, kind=kind, status=status,
                                        department=department)
        more = len(rows) > limit
        rows = rows[:limit]
        return SystemPage(items=[system_read(r) for r in rows], next_cursor=encode_cursor(rows[-1].id) if more else None)

    return await platform.run(work)


async def heartbeat(platform: Platform, system_id: str, data: Heartbeat, *, ctx: Context) -> SystemRead:
    """Record a sign of life; the system's own status (default up) becomes its status."""
    now = platform.clock.now()

    def work() -> tuple[SystemRead, str]:
        with platform.transaction() as session:
            row = service.get_system(session, system_id=system_id)
            previous = row.status
            row.status, row.last_seen_at = data.status, now
            row.last_error = data.detail if data.status != "up" else None
            return system_read(row), previous

    read, previous = await platform.run(work)
    if previous != read.status:
        await platform.bus.publish(SystemHealthChanged(context=ctx, system_id=system_id, status=read.status,
                                                       previous=previous, reason=data.detail or "heartbeat"))
    return read


# ------------------------------------------------------------------------------------------ commands


def command_read(row: CommandRow) -> CommandRead:
    return CommandRead(id=row.id, name=row.name, parameters=row.parameters, target=row.target,
                       target_kind=row.target_kind, system=row.system_id, status=row.status,  # type: ignore[arg-type]
                       reason=row.reason, result=row.result, attempts=row.attempts, last_error=row.last_error,
                       next_attempt_at=row.next_attempt_at if row.status == "pending" else None,
                       ack_deadline=row.ack_deadline, issued_by=row.issued_by, created_at=row.created_at,
                       updated_at=row.updated_at, history=row.history)  # type: ignore[arg-type]


def resolve_target(platform: Platform, session: Session, data: CommandCreate,
                   ctx: Context) -> tuple[str, ConnectedSystemRow]:
    """Which kind of thing the command addresses, and the system that executes it."""
    if not is_urn(data.target):
        raise InvalidInput.at("target", "the URN of an entity or a connected system is required")
    explicit: ConnectedSystemRow | None = None
    if data.system is not None:
        if not is_urn(data.system):
            raise InvalidInput.at("system", "the URN of a connected system is required")
        explicit = session.get(ConnectedSystemRow, data.system)
        if explicit is None:
            raise InvalidInput.at("system", f"no connected system {data.system} is registered")
    system = session.get(ConnectedSystemRow, data.target)
    if system is not None:
        if explicit is not None and explicit.id != system.id:
            raise InvalidInput.at("system", "the target is itself a connected system; omit system")
        return "system", system
    try:
        entity = entity_service.get_entity(session, entity_id=data.target)
    except NotFound:
        entity = None
    if entity is None or not access.within_scope(platform, ctx, entity.org_unit):
        raise NotFound(f"no entity or connected system {data.target} exists",
                       errors=[FieldError("target", "no entity or connected system has this id")])
    if explicit is not None:
        return "entity", explicit
    relation = entity.attrs.get("controlledBy")
    if relation is None:
        raise InvalidInput.at("system", f"entity {data.target} has no controlledBy relationship; "
                                        "name the system that executes the command")
    if relation.get("type") != "Relationship" or not is_urn(relation.get("object")):
        raise InvalidInput.at("target", f"controlledBy of {data.target} is not a Relationship to a system")
    system = session.get(ConnectedSystemRow, relation["object"])
    if system is None:
        raise InvalidInput.at("target", f"controlledBy of {data.target} names {relation['object']}, "
                                        "which is not a registered connected system")
    return "entity", system


async def issue_command(platform: Platform, data: CommandCreate, *, ctx: Context) -> CommandRead:
    now = platform.clock.now()

    def work() -> tuple[CommandRead, bool]:
        with platform.transaction() as session:
            target_kind, system = resolve_target(platform, session, data, ctx)
            row = CommandRow(
                id=new_id(), name=data.name, parameters=data.parameters, target=data.target,
                target_kind=target_kind, system_id=system.id, status="pending", reason="issued",
                history=[_entry("pending", now, "issued", ctx.actor)], attempts=0, next_attempt_at=now,
                issued_by=ctx.actor, context_id=ctx.id, created_at=now, updated_at=now)
            session.add(row)
            session.flush()
            return command_read(row), system.command_url is not None

    read, pushed = await platform.run(work)
    await platform.bus.publish(CommandIssued(context=ctx, command_id=read.id, target=read.target,
                                             system_id=read.system, name=read.name))
    if pushed:
        _wake(platform, CommandDispatcher)
    return read


async def acknowledge(platform: Platform, command_id: str, data: Acknowledgement, *, ctx: Context) -> CommandRead:
    """The executing system's answer: acknowledged or failed (from pending or sent)."""
    now = platform.clock.now()
    reason = data.reason or data.status

    def work() -> tuple[CommandRead, CommandRow]:
        for _ in range(5):  # lost a race with the dispatcher or the timeout sweep: read again and re-check
            with platform.transaction() as session:
                row = service.get_command(session, command_id=command_id)
                values = _moves(row, [(data.status, reason)], now, ctx.actor)
                if data.result is not None:
                    values["result"] = data.result
                if service.transition(session, command_id=command_id, expected=row.status, values=values):
                    session.expire(row)
                    return command_read(service.get_command(session, command_id=command_id)), row
        raise Conflict(f"command {command_id} kept changing while being acknowledged; try again")

    read, row = await platform.run(work)
    await platform.bus.publish(*_status_events(row, [(data.status, reason)], ctx.actor))
    return read


async def get_command(platform: Platform, command_id: str) -> CommandRead:
    def work() -> CommandRead:
        with platform.session() as session:
            return command_read(service.get_command(session, command_id=command_id))

    return await platform.run(work)


async def list_commands(platform: Platform, *, cursor: str | None, limit: int, status: str | None,
                        target: str | None, system_id: str | None, newest_first: bool = True,
                        require_system: bool = False) -> CommandPage:
    """A page of commands; `require_system` makes an unknown system a 404 (the pull endpoint)."""
    cursor_id = decode_cursor(cursor) if cursor else None

    def work() -> CommandPage:
        with platform.session() as session:
            if require_system and system_id is not None:
                service.get_system(session, system_id=system_id)
            rows = service.list_commands(session, cursor_id=cursor_id, limit=limit + 1, newest_first=newest_first,
                                         status=status, target=target, system_id=system_id)
        more = len(rows) > limit
        rows = rows[:limit]
        return CommandPage(items=[command_read(r) for r in rows],
                           next_cursor=encode_cursor(rows[-1].id) if more else None)

    return await platform.run(work)


# ----------------------------------------------------------------------------------------- dispatcher


class CommandDispatcher(HttpPollingService):
    """Pushes pending commands to their systems' endpoints and fails sent commands nobody acknowledged."""

    name = "command-dispatcher"
    batch = 32

    async def run_once(self) -> bool:
        events = await self.platform.run(self._fail_overdue)
        token = new_id()
        claims = await self.platform.run(self._claim, token)
        if claims:
            outcomes = await asyncio.gather(*(self._push(row, url) for row, url in claims))
            events += await self.platform.run(self._record, claims, outcomes, token)
        if events:
            await self.platform.bus.publish(*events)
        return bool(claims)

    def _fail_overdue(self) -> list[CommandStatusChanged]:
        now = self.platform.clock.now()
        events: list[CommandStatusChanged] = []
        with self.platform.transaction() as session:
            for row in service.overdue_commands(session, now=now, limit=500):
                reason = f"not acknowledged within {self.settings.command_ack_timeout_s:g} s (timeout)"
                steps = [("failed", reason)]
                if service.transition(session, command_id=row.id, expected="sent",
                                      values=_moves(row, steps, now, DISPATCHER_ACTOR)):
                    events += _status_events(row, steps, DISPATCHER_ACTOR)
        return events

    def _claim(self, token: str) -> list[tuple[CommandRow, str]]:
        now = self.platform.clock.now()
        with self.platform.transaction() as session:
            return service.claim_commands(session, now=now, token=token, limit=self.batch,
                                          lease_until=now + timedelta(seconds=self.settings.delivery_lease_s))

    async def _push(self, row: CommandRow, url: str) -> tuple[str, str | None, dict[str, Any] | None]:
        """POST one command. Returns (outcome, detail, result) with outcome one of acknowledged, failed
        (the system said so), sent (accepted, answer later), rejected (a 4xx: retrying cannot help),
        retry (timeout, connection error, 408, 429, 5xx)."""
        assert self.client is not None
        body = {"id": row.id, "type": "Command", "name": row.name, "parameters": row.parameters,
                "target": row.target, "targetKind": row.target_kind, "system": row.system_id,
                "issuedAt": format_datetime(row.created_at), "issuedBy": row.issued_by,
                "ackUrl": f"/api/v1/commands/{row.id}/ack"}
        try:
            response = await self.client.post(url, content=orjson.dumps(body),
                                              headers={"Content-Type": "application/json"})
        except httpx.TimeoutException:
            return "retry", f"no answer within {self.settings.webhook_timeout_s:g} s", None
        except httpx.HTTPError as exc:
            return "retry", f"{type(exc).__name__}: {exc}"[:500], None
        status = response.status_code
        if 200 <= status < 300:
            try:
                answer = response.json()
            except ValueError:
                answer = None
            if isinstance(answer, dict):
                reason = answer.get("reason") if isinstance(answer.get("reason"), str) else None
                result = answer.get("result") if isinstance(answer.get("result"), dict) else None
                if result is not None:
                    try:
                        check_json_object(result)
                    except ValueError:
                        result = {"unstorable": "the system's result could not be stored as sent"}
                if answer.get("status") == "acknowledged":
                    return "acknowledged", reason, result
                if answer.get("status") == "failed":
                    return "failed", reason or "the system reported failure", result
            return "sent", None, None
        detail = f"HTTP {status}: {response.text[:300]}"
        if status in (408, 425, 429) or status >= 500:
            return "retry", detail, None
        return "rejected", detail, None

    def _record(self, claims: list[tuple[CommandRow, str]], outcomes: list[tuple[str, str | None, dict | None]],
                token: str) -> list[CommandStatusChanged]:
        settings = self.settings
        now = self.platform.clock.now()
        events: list[CommandStatusChanged] = []
        with self.platform.transaction() as session:
            for (row, _url), (outcome, detail, result) in zip(claims, outcomes, strict=True):
                attempts = row.attempts + 1
                if outcome == "retry" and attempts < settings.command_max_attempts:
                    delay = backoff_delay(attempts, base_s=settings.retry_backoff_base_s,
                                          max_s=settings.retry_backoff_max_s)
                    service.retry_later(session, command_id=row.id, token=token, attempts=attempts,
                                        next_attempt_at=now + timedelta(seconds=delay), error=detail or "failed",
                                        now=now)
                    continue
                match outcome:
                    case "acknowledged":
                        steps = [("sent", "delivered to the system"), ("acknowledged", detail or "acknowledged")]
                    case "failed":
                        steps = [("sent", "delivered to the system"), ("failed", detail)]
                    case "sent":
                        steps = [("sent", "accepted by the system; awaiting acknowledgement")]
                    case "rejected":
                        steps = [("failed", f"rejected by the system: {detail}")]
                    case _:
                        steps = [("failed", f"gave up after {attempts} attempts: {detail}")]
                values = _moves(row, steps, now, DISPATCHER_ACTOR)
                values["attempts"] = attempts
                values["next_attempt_at"] = None
                if outcome in ("retry", "rejected"):
                    values["last_error"] = detail
                if result is not None:
                    values["result"] = result
                if outcome == "sent":
                    values["ack_deadline"] = now + timedelta(seconds=settings.command_ack_timeout_s)
                if service.transition(session, command_id=row.id, expected="pending", values=values,
                                      lease_token=token):
                    events += _status_events(row, steps, DISPATCHER_ACTOR)
        return events


# ---------------------------------------------------------------------------------------------- health


def _health_from(response: httpx.Response) -> tuple[str, str | None]:
    """2xx is up unless the body says otherwise ({"status": "degraded" | "down" …}); anything else is down."""
    if not 200 <= response.status_code < 300:
        return "down", f"HTTP {response.status_code}: {response.text[:200]}"
    try:
        body = response.json()
    except ValueError:
        return "up", None
    status = str(body.get("status", "")).lower() if isinstance(body, dict) else ""
    if status in ("degraded", "warn", "warning"):
        return "degraded", str(body.get("detail") or body.get("reason") or "reports degraded")[:500]
    if status in ("down", "fail", "failed", "error", "unhealthy"):
        return "down", str(body.get("detail") or body.get("reason") or "reports down")[:500]
    return "up", None


class HealthChecker(HttpPollingService):
    """GETs each system's health URL every `system_health_interval_s`, and marks down the systems whose
    heartbeats (or successful checks) stopped for `system_heartbeat_timeout_s`."""

    name = "system-health"
    batch = 32
    follow_redirects = True  # health pages often sit behind a redirect to a canonical URL

    @property
    def silence_limit_s(self) -> float:
        # Never shorter than two check intervals, or a healthy polled system would flap between checks.
        return max(self.settings.system_heartbeat_timeout_s, 2 * self.settings.system_health_interval_s)

    async def run_once(self) -> bool:
        events = await self.platform.run(self._mark_silent)
        claimed = await self.platform.run(self._claim)
        if claimed:
            results = await asyncio.gather(*(self._check(url) for _id, url, _status in claimed))
            events += await self.platform.run(self._record, claimed, results)
        if events:
            await self.platform.bus.publish(*events)
        return len(claimed) >= self.batch

    def _mark_silent(self) -> list[SystemHealthChanged]:
        now = self.platform.clock.now()
        seen_before = now - timedelta(seconds=self.silence_limit_s)
        events = []
        ctx = Context(actor=HEALTH_ACTOR)
        with self.platform.transaction() as session:
            for row in service.silent_systems(session, seen_before=seen_before):
                reason = f"no heartbeat or successful health check since {format_datetime(row.last_seen_at)}"
                if service.mark_down_if_silent(session, system_id=row.id, seen_before=seen_before, reason=reason):
                    events.append(SystemHealthChanged(context=ctx, system_id=row.id, status="down",
                                                      previous=row.status, reason=reason))
        return events

    def _claim(self) -> list[tuple[str, str, str]]:
        now = self.platform.clock.now()
        cutoff = now - timedelta(seconds=self.settings.system_health_interval_s)
        claimed = []
        with self.platform.session() as session:
            due = service.systems_due_for_check(session, cutoff=cutoff, limit=self.batch)
        for system_id in due:
            with self.platform.transaction() as session:
                if service.claim_health_check(session, system_id=system_id, now=now, cutoff=cutoff):
                    row = session.get(ConnectedSystemRow, system_id)
                    if row is not None and row.health_url:
                        claimed.append((row.id, row.health_url, row.status))
        return claimed

    async def _check(self, url: str) -> tuple[str, str | None]:
        assert self.client is not None
        try:
            return _health_from(await self.client.get(url))
        except httpx.TimeoutException:
            return "down", f"no answer within {self.settings.webhook_timeout_s:g} s"
        except httpx.HTTPError as exc:
            return "down", f"{type(exc).__name__}: {exc}"[:500]

    def _record(self, claimed: list[tuple[str, str, str]],
                results: list[tuple[str, str | None]]) -> list[SystemHealthChanged]:
        now = self.platform.clock.now()
        ctx = Context(actor=HEALTH_ACTOR)
        events = []
        with self.platform.transaction() as session:
            for (system_id, _url, previous), (status, error) in zip(claimed, results, strict=True):
                service.set_health(session, system_id=system_id, status=status, error=error, now=now,
                                   seen=status != "down")
                if status != previous:
                    events.append(SystemHealthChanged(context=ctx, system_id=system_id, status=status,
                                                      previous=previous, reason=error))
        return events
