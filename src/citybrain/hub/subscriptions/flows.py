"""Subscription flows: validating filters, matching entity changes into the outbox, and webhook delivery.

Matching runs as a platform change hook, inside the entity write transaction, against an in-memory cache
of the active subscriptions (filters parsed once). The outbox rows it writes commit or roll back with the
entities, so a notification is never lost after a commit nor sent for a write that did not happen. With no
active subscription the hook returns after one attribute read: entity batch upserts are a hot path.

`WebhookDelivery` sends the outbox: it leases a due subscription, POSTs its oldest pending notifications
as one NGSI-LD Notification (a batch of entities), and on failure retries with exponential back-off and
jitter until `webhook_max_attempts`, then marks them failed. See `service` for how claiming stays safe
across workers and processes.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial
from typing import TYPE_CHECKING, Any

import httpx
import orjson
from sqlalchemy import event as sa_event
from sqlalchemy.orm import Session

from citybrain.core.context import Context, new_id
from citybrain.core.errors import (
    CityBrainError,
    ErrorCollector,
    FieldError,
    Forbidden,
    InvalidInput,
    OutOfScope,
)
from citybrain.core.events import OrgTreeChanged, SubscriptionsChanged
from citybrain.governance import access
from citybrain.hub.background import HttpPollingService, backoff_delay
from citybrain.hub.entities.ngsi import format_datetime, is_urn
from citybrain.hub.entities.query import Node, evaluate, parse_q
from citybrain.hub.entities.service import EntityChange, EntityQuery, decode_cursor, encode_cursor, matches
from citybrain.hub.entities.types import ATTR_NAME_RE
from citybrain.hub.subscriptions import service
from citybrain.hub.subscriptions.models import SubscriptionRow
from citybrain.hub.subscriptions.schemas import (
    DeliveryStatus,
    NearFilter,
    NotificationPage,
    NotificationRead,
    SubscriptionCreate,
    SubscriptionPage,
    SubscriptionRead,
    SubscriptionUpdate,
)

if TYPE_CHECKING:
    from citybrain.platform import Platform

log = logging.getLogger(__name__)
SUBSCRIPTION_PREFIX = "urn:ngsi-ld:Subscription:"
ENTITY_KEYS = ("id", "type")


# ------------------------------------------------------------------------------------------- matching


@dataclass(frozen=True, slots=True)
class CompiledSubscription:
    """A subscription's filter, parsed once, in the shape the change hook checks fastest."""

    id: str
    types: frozenset[str]
    ids: frozenset[str]
    org_units: frozenset[str] | None
    watched: frozenset[str]
    triggers: frozenset[str]
    q: Node | None
    geo: EntityQuery | None  # bbox / near, evaluated as entity queries are
    notify_attributes: tuple[str, ...]
    expires_at: datetime | None

    def wants(self, change: EntityChange, now: datetime) -> bool:
        """Whether this change notifies the subscription (its type is already known to match)."""
        if change.operation not in self.triggers:
            return False
        if self.expires_at is not None and self.expires_at <= now:
            return False
        if self.ids and change.entity_id not in self.ids:
            return False
        if self.org_units is not None and change.org_unit not in self.org_units:
            return False
        if self.watched and self.watched.isdisjoint(change.attributes):
            return False
        if change.entity is not None:  # a deletion carries no state to test
            if self.q is not None and not evaluate(self.q, change.entity):
                return False
            if self.geo is not None:
                return matches(self.geo, change.entity, change.org_unit)
        return True

    def payload(self, change: EntityChange, now: datetime) -> dict[str, Any]:
        """The entity as this subscription is notified of it."""
        if change.entity is None:
            return {"id": change.entity_id, "type": change.entity_type, "deletedAt": format_datetime(now)}
        if not self.notify_attributes:
            return change.entity
        return {k: v for k, v in change.entity.items() if k in ENTITY_KEYS or k in self.notify_attributes}


@dataclass(frozen=True, slots=True)
class _Index:
    by_type: dict[str, tuple[CompiledSubscription, ...]]
    any_type: tuple[CompiledSubscription, ...]
    size: int


def _index(compiled: Sequence[CompiledSubscription]) -> _Index | None:
    if not compiled:
        return None
    by_type: dict[str, list[CompiledSubscription]] = {}
    any_type: list[CompiledSubscription] = []
    for sub in compiled:
        if sub.types:
            for name in sub.types:
                by_type.setdefault(name, []).append(sub)
        else:
            any_type.append(sub)
    return _Index({k: tuple(v) for k, v in by_type.items()}, tuple(any_type), len(compiled))


def compile_row(platform: Platform, row: SubscriptionRow, *, strict: bool) -> CompiledSubscription:
    """Parse a subscription's filter. `strict` (on create/update) also refuses what the hub does not know
    (types, org units) and names every bad field; the cache compiles leniently, so a type removed later
    simply stops matching."""
    errors = ErrorCollector()
    if strict:
        if not is_urn(row.id):
            errors.add("id", f"a URN is required, e.g. {SUBSCRIPTION_PREFIX}air-alerts")
        for i, name in enumerate(row.entity_types):
            if name not in platform.types:
                errors.add(f"entityTypes[{i}]", f"unknown entity type {name!r}")
        for i, entity_id in enumerate(row.entity_ids):
            if not is_urn(entity_id):
                errors.add(f"entityIds[{i}]", "a URN is required")
        for field_name, names in (("watchedAttributes", row.watched_attributes),
                                  ("notifyAttributes", row.notify_attributes)):
            for i, name in enumerate(names):
                if not ATTR_NAME_RE.match(name):
                    errors.add(f"{field_name}[{i}]", f"attribute names match {ATTR_NAME_RE.pattern}")
        if not (row.entity_types or row.entity_ids or row.watched_attributes):
            errors.add("entityTypes", "give entityTypes, entityIds or watchedAttributes; a subscription to "
                                      "every change in the city is refused")
        if row.bbox is not None:
            x1, y1, x2, y2 = row.bbox
            if not (-180 <= x1 <= x2 <= 180 and -90 <= y1 <= y2 <= 90):
                errors.add("bbox", "expected minLon, minLat, maxLon, maxLat within [-180,180] × [-90,90]")
        if row.org_unit is not None:
            if row.org_unit not in platform.org_tree:
                errors.add("orgUnit", f"unknown org unit {row.org_unit!r}")
            elif row.org_scope is not None and not platform.org_tree.within(row.org_unit, row.org_scope):
                errors.add("orgUnit", "outside your org scope")
    node: Node | None = None
    if row.q is not None:
        try:
            node = parse_q(row.q)
        except InvalidInput as exc:
            errors.errors.extend(exc.errors)
    errors.raise_if_any("The subscription has invalid fields")

    org_units: frozenset[str] | None = None
    if row.org_unit is not None:
        org_units = frozenset(platform.org_tree.descendants(row.org_unit)) if row.org_unit in platform.org_tree \
            else frozenset({row.org_unit})
    if row.org_scope is not None:
        allowed = {code for unit in row.org_scope for code in platform.org_tree.descendants(unit)}
        org_units = frozenset(allowed if org_units is None else allowed & org_units)
    near = (row.near["lon"], row.near["lat"], row.near["maxDistance"]) if row.near else None
    bbox = tuple(row.bbox) if row.bbox else None
    geo = EntityQuery(bbox=bbox, near=near) if (bbox or near) else None  # type: ignore[arg-type]
    return CompiledSubscription(
        id=row.id, types=frozenset(row.entity_types), ids=frozenset(row.entity_ids), org_units=org_units,
        watched=frozenset(row.watched_attributes), triggers=frozenset(row.triggers), q=node, geo=geo,
        notify_attributes=tuple(row.notify_attributes), expires_at=row.expires_at)


class SubscriptionMatcher:
    """The change hook: matches a write's entity changes against the cached subscriptions and writes the
    outbox rows into the same transaction. Calls `on_written` after that transaction commits."""

    def __init__(self, platform: Platform) -> None:
        self.platform = platform
        self.on_written: Callable[[], None] | None = None
        self._index: _Index | None = None
        self._reload_lock = threading.Lock()

    @property
    def size(self) -> int:
        index = self._index
        return index.size if index is not None else 0

    def reload(self) -> None:
        """Rebuild the cache from the store (blocking; call off the event loop)."""
        with self._reload_lock:  # serialised, so an older snapshot can never replace a newer one
            with self.platform.session() as session:
                rows = service.active_subscriptions(session, now=self.platform.clock.now())
            compiled = []
            for row in rows:
                try:
                    compiled.append(compile_row(self.platform, row, strict=False))
                except CityBrainError as exc:
                    log.warning("subscription %s cannot be matched: %s", row.id, exc.detail)
            self._index = _index(compiled)

    def __call__(self, session: Session, changes: list[EntityChange]) -> None:
        index = self._index
        if index is None:
            return
        now = self.platform.clock.now()
        rows: list[dict[str, Any]] = []
        by_type, any_type = index.by_type, index.any_type
        for change in changes:
            for candidates in (by_type.get(change.entity_type, ()), any_type):
                for sub in candidates:
                    if sub.wants(change, now):
                        rows.append({"subscription_id": sub.id, "entity_id": change.entity_id,
                                     "entity_type": change.entity_type, "operation": change.operation,
                                     "payload": sub.payload(change, now), "status": service.PENDING,
                                     "attempts": 0, "created_at": now})
        if not rows:
            return
        service.add_notifications(session, rows=rows)
        if not session.info.get("citybrain.outbox_written"):
            session.info["citybrain.outbox_written"] = True
            sa_event.listen(session, "after_commit", self._committed)

    def _committed(self, _session: Session) -> None:
        callback = self.on_written
        if callback is not None:
            callback()


def matcher_for(platform: Platform) -> SubscriptionMatcher:
    """The platform's subscription matcher, installed as a change hook on first use."""
    for hook in platform.change_hooks:
        if isinstance(hook, SubscriptionMatcher):
            return hook
    matcher = SubscriptionMatcher(platform)
    platform.change_hooks.append(matcher)
    return matcher


# ---------------------------------------------------------------------------------------------- CRUD


def _near_json(near: NearFilter | None) -> dict[str, float] | None:
    return near.model_dump(by_alias=True) if near is not None else None


def to_read(row: SubscriptionRow, *, pending: int, now: datetime) -> SubscriptionRead:
    status = "expired" if row.status == "active" and row.expires_at is not None and row.expires_at <= now \
        else row.status
    return SubscriptionRead(
        id=row.id, name=row.name, description=row.description, entity_types=row.entity_types,
        entity_ids=row.entity_ids, q=row.q, bbox=row.bbox,
        near=NearFilter.model_validate(row.near) if row.near else None, org_unit=row.org_unit,
        watched_attributes=row.watched_attributes, notify_attributes=row.notify_attributes,
        triggers=row.triggers, endpoint=row.endpoint, throttling=row.throttling_s, status=status,
        expires_at=row.expires_at, owner=row.owner, created_at=row.created_at, modified_at=row.modified_at,
        delivery=DeliveryStatus(pending=pending, delivered=row.delivered_count, failed=row.failed_count,
                                last_success_at=row.last_success_at, last_failure_at=row.last_failure_at,
                                last_error=row.last_error, next_attempt_at=row.next_attempt_at))


def _read_one(platform: Platform, session: Session, row: SubscriptionRow) -> SubscriptionRead:
    pending = service.count_pending(session, subscription_ids=[row.id])[row.id]
    return to_read(row, pending=pending, now=platform.clock.now())


async def _changed(platform: Platform, subscription_id: str, operation: str, ctx: Context) -> None:
    # Other processes reload on the event; this one reloaded already, before answering.
    await platform.bus.publish(SubscriptionsChanged(context=ctx, subscription_id=subscription_id,
                                                    operation=operation))


def _yours(platform: Platform, ctx: Context, row: SubscriptionRow) -> bool:
    """A caller with an org scope sees and changes the subscriptions made within its area only."""
    if ctx.org_scope is None:
        return True
    return row.org_scope is not None and all(access.within_scope(platform, ctx, code) for code in row.org_scope)


def _require_yours(platform: Platform, ctx: Context, row: SubscriptionRow) -> None:
    if not _yours(platform, ctx, row):
        raise OutOfScope(f"no subscription {row.id} in your area")


def _check_types_visible(platform: Platform, ctx: Context, entity_types: list[str] | None) -> None:
    """A feed carries only what its maker may read: named types must be cleared for it, and a caller not
    cleared for every type must name the types it subscribes to."""
    if access.visible_types(platform, ctx) is None:
        return
    if not entity_types:
        raise Forbidden("entityTypes: name the entity types; some types are classified above your clearance",
                        errors=[FieldError("entityTypes", "required for your clearance")])
    for name in entity_types:
        access.require_type_visible(platform, ctx, name, field="entityTypes")


async def create_subscription(platform: Platform, data: SubscriptionCreate, *, ctx: Context) -> SubscriptionRead:
    _check_types_visible(platform, ctx, data.entity_types)
    now = platform.clock.now()
    if data.expires_at is not None and data.expires_at <= now:
        raise InvalidInput.at("expiresAt", "lies in the past")
    row = SubscriptionRow(
        id=data.id or f"{SUBSCRIPTION_PREFIX}{new_id()}", name=data.name, description=data.description,
        entity_types=data.entity_types, entity_ids=data.entity_ids, q=data.q,
        bbox=list(data.bbox) if data.bbox else None, near=_near_json(data.near), org_unit=data.org_unit,
        watched_attributes=data.watched_attributes, notify_attributes=data.notify_attributes,
        triggers=sorted(set(data.triggers)), endpoint=data.endpoint, throttling_s=data.throttling,
        status=data.status, expires_at=data.expires_at,
        org_scope=list(ctx.org_scope) if ctx.org_scope is not None else None, owner=ctx.actor,
        created_at=now, modified_at=now, delivered_count=0, failed_count=0)
    compile_row(platform, row, strict=True)

    def work() -> SubscriptionRead:
        with platform.transaction() as session:
            service.add_subscription(session, row=row)
            read = _read_one(platform, session, row)
        matcher_for(platform).reload()
        return read

    read = await platform.run(work)
    await _changed(platform, read.id, "created", ctx)
    return read


async def update_subscription(
    platform: Platform, subscription_id: str, data: SubscriptionUpdate, *, ctx: Context
) -> SubscriptionRead:
    changes = data.model_dump(exclude_unset=True)
    for required in ("entity_types", "entity_ids", "watched_attributes", "notify_attributes", "triggers",
                     "endpoint", "status"):
        if required in changes and changes[required] is None:
            raise InvalidInput.at(SubscriptionUpdate.model_fields[required].alias or required, "cannot be null")
    now = platform.clock.now()
    if data.expires_at is not None and data.expires_at <= now:
        raise InvalidInput.at("expiresAt", "lies in the past")

    if "entity_types" in changes:
        _check_types_visible(platform, ctx, changes["entity_types"])

    def work() -> SubscriptionRead:
        with platform.transaction() as session:
            row = service.get_subscription(session, subscription_id=subscription_id)
            _require_yours(platform, ctx, row)
            for name, value in changes.items():
                if name == "near":
                    row.near = _near_json(data.near)
                elif name == "bbox":
                    row.bbox = list(value) if value is not None else None
                elif name == "throttling":
                    row.throttling_s = value
                elif name == "triggers":
                    row.triggers = sorted(set(value))
                else:
                    setattr(row, name, value)
            compile_row(platform, row, strict=True)  # raising here rolls the change back
            row.modified_at = now
            if changes.keys() & {"status", "endpoint", "throttling"} and row.status == "active":
                row.next_attempt_at = None  # resumed, redirected or re-paced: what waits goes now
            session.flush()
            read = _read_one(platform, session, row)
        matcher_for(platform).reload()
        return read

    read = await platform.run(work)
    await _changed(platform, subscription_id, "updated", ctx)
    if read.status == "active" and read.delivery.pending:
        _wake_delivery(platform)
    return read


async def delete_subscription(platform: Platform, subscription_id: str, *, ctx: Context) -> None:
    def work() -> None:
        with platform.transaction() as session:
            _require_yours(platform, ctx, service.get_subscription(session, subscription_id=subscription_id))
            service.delete_subscription(session, subscription_id=subscription_id)
        matcher_for(platform).reload()

    await platform.run(work)
    await _changed(platform, subscription_id, "deleted", ctx)


async def get_subscription(platform: Platform, subscription_id: str, *, ctx: Context) -> SubscriptionRead:
    def work() -> SubscriptionRead:
        with platform.session() as session:
            row = service.get_subscription(session, subscription_id=subscription_id)
            _require_yours(platform, ctx, row)
            return _read_one(platform, session, row)

    return await platform.run(work)


async def list_subscriptions(
    platform: Platform, *, cursor: str | None, limit: int, status: str | None, entity_type: str | None,
    ctx: Context,
) -> SubscriptionPage:
    after = decode_cursor(cursor) if cursor else None

    def work() -> SubscriptionPage:
        with platform.session() as session:
            rows = service.list_subscriptions(session, after=after, limit=limit + 1,
                                              status=status if status != "expired" else "active",
                                              entity_type=entity_type,
                                              keep=None if ctx.org_scope is None else partial(_yours, platform, ctx))
            more = len(rows) > limit
            rows = rows[:limit]
            pending = service.count_pending(session, subscription_ids=[r.id for r in rows])
        now = platform.clock.now()
        items = [to_read(r, pending=pending[r.id], now=now) for r in rows]
        if status is not None:
            items = [i for i in items if i.status == status]
        return SubscriptionPage(items=items, next_cursor=encode_cursor(rows[-1].id) if more else None)

    return await platform.run(work)


async def list_notifications(
    platform: Platform, subscription_id: str, *, status: str | None, cursor: str | None, limit: int,
    ctx: Context,
) -> NotificationPage:
    before = None
    if cursor:
        decoded = decode_cursor(cursor)
        if not decoded.isdigit():
            raise InvalidInput.at("cursor", "not a cursor this API returned")
        before = int(decoded)

    def work() -> NotificationPage:
        with platform.session() as session:
            _require_yours(platform, ctx, service.get_subscription(session, subscription_id=subscription_id))
            rows = service.list_notifications(session, subscription_id=subscription_id, status=status,
                                              before=before, limit=limit + 1)
        more = len(rows) > limit
        rows = rows[:limit]
        items = [NotificationRead(id=r.id, entity_id=r.entity_id, entity_type=r.entity_type, operation=r.operation,
                                  status=r.status, attempts=r.attempts, created_at=r.created_at,  # type: ignore[arg-type]
                                  last_attempt_at=r.last_attempt_at, delivered_at=r.delivered_at,
                                  last_error=r.last_error, data=r.payload) for r in rows]
        return NotificationPage(items=items, next_cursor=encode_cursor(str(rows[-1].id)) if more else None)

    return await platform.run(work)


# ------------------------------------------------------------------------------------------- delivery


@dataclass(slots=True)
class Claim:
    """One subscription's batch, leased by this worker."""

    subscription_id: str
    endpoint: str
    throttling_s: float | None
    ids: list[int]
    attempts: list[int]
    payloads: list[dict[str, Any]]


@dataclass(slots=True)
class Outcome:
    ok: bool
    error: str | None = None


@dataclass(slots=True)
class RoundReport:
    """What one delivery round did (for logs and tests)."""

    delivered: int = 0
    failed: int = 0
    retrying: int = 0
    subscriptions: list[str] = field(default_factory=list)


def _wake_delivery(platform: Platform) -> None:
    from citybrain.hub.background import find_service

    delivery = find_service(platform, WebhookDelivery)
    if delivery is not None:
        delivery.wake()


class WebhookDelivery(HttpPollingService):
    """Sends the notification outbox to the subscriptions' webhooks."""

    name = "webhook-delivery"
    max_subscriptions_per_round = 16
    purge_every_s = 3600.0

    def __init__(self, platform: Platform) -> None:
        super().__init__(platform)
        self.matcher = matcher_for(platform)
        self._unsubscribers: list[Callable[[], Any]] = []
        self._last_reload = 0.0
        self._last_purge = 0.0

    async def setup(self) -> None:
        await super().setup()
        self.matcher.on_written = self.wake
        await self.platform.run(self.matcher.reload)
        self._last_reload = time.monotonic()
        for event_type in (SubscriptionsChanged, OrgTreeChanged):
            self._unsubscribers.append(await self.platform.bus.subscribe(event_type, self._reload))

    async def teardown(self) -> None:
        self.matcher.on_written = None
        for unsubscribe in self._unsubscribers:
            await unsubscribe()
        self._unsubscribers.clear()
        await super().teardown()

    async def _reload(self, _event: Any) -> None:
        await self.platform.run(self.matcher.reload)
        self._last_reload = time.monotonic()

    async def run_once(self) -> bool:
        if time.monotonic() - self._last_reload >= self.settings.subscription_cache_refresh_s:
            await self._reload(None)  # backstop for a missed event, and for expiries
        if time.monotonic() - self._last_purge >= self.purge_every_s:
            self._last_purge = time.monotonic()
            await self.platform.run(self._purge)
        report = await self.deliver_due()
        return bool(report.subscriptions)

    def _purge(self) -> None:
        cutoff = self.platform.clock.now() - timedelta(days=self.settings.notification_retention_days)
        with self.platform.transaction() as session:
            removed = service.purge_notifications(session, older_than=cutoff)
        if removed:
            log.info("purged %d settled notifications", removed)

    async def deliver_due(self) -> RoundReport:
        """One round: claim due subscriptions, POST a batch to each, record the outcomes."""
        token = new_id()
        claims = await self.platform.run(self._claim, token)
        report = RoundReport(subscriptions=[c.subscription_id for c in claims])
        if not claims:
            return report
        outcomes = await asyncio.gather(*(self._post(claim) for claim in claims))
        await self.platform.run(self._record, claims, outcomes, token, report)
        return report

    def _claim(self, token: str) -> list[Claim]:
        now = self.platform.clock.now()
        lease_until = now + timedelta(seconds=self.settings.delivery_lease_s)
        with self.platform.session() as session:
            due = service.due_subscriptions(session, now=now, limit=self.max_subscriptions_per_round)
        claims: list[Claim] = []
        for subscription_id in due:
            with self.platform.transaction() as session:
                if not service.claim_subscription(session, subscription_id=subscription_id, now=now, token=token,
                                                  lease_until=lease_until):
                    continue  # another worker got it
                row = session.get(SubscriptionRow, subscription_id)
                batch = service.pending_batch(session, subscription_id=subscription_id,
                                              limit=self.settings.webhook_batch_size)
                if row is None or not batch:
                    service.release_lease(session, subscription_id=subscription_id, token=token,
                                          next_attempt_at=None)
                    continue
                claims.append(Claim(subscription_id, row.endpoint, row.throttling_s, [n.id for n in batch],
                                    [n.attempts for n in batch], [n.payload for n in batch]))
        return claims

    async def _post(self, claim: Claim) -> Outcome:
        assert self.client is not None
        body = {
            # Same batch, same id: a receiver can drop a retried POST it already processed.
            "id": f"urn:ngsi-ld:Notification:{claim.ids[0]}-{claim.ids[-1]}",
            "type": "Notification",
            "subscriptionId": claim.subscription_id,
            "notifiedAt": format_datetime(self.platform.clock.now()),
            "data": claim.payloads,
        }
        try:
            response = await self.client.post(claim.endpoint, content=orjson.dumps(body),
                                              headers={"Content-Type": "application/json"})
        except httpx.TimeoutException:
            return Outcome(False, f"no answer within {self.settings.webhook_timeout_s:g} s")
        except httpx.HTTPError as exc:
            return Outcome(False, f"{type(exc).__name__}: {exc}"[:500])
        if 200 <= response.status_code < 300:
            return Outcome(True)
        return Outcome(False, f"HTTP {response.status_code}: {response.text[:300]}")

    def _record(self, claims: list[Claim], outcomes: list[Outcome], token: str, report: RoundReport) -> None:
        settings = self.settings
        now = self.platform.clock.now()
        with self.platform.transaction() as session:
            for claim, outcome in zip(claims, outcomes, strict=True):
                if outcome.ok:
                    report.delivered += service.mark_delivered(session, subscription_id=claim.subscription_id,
                                                               ids=claim.ids, now=now)
                    next_at = now + timedelta(seconds=claim.throttling_s) if claim.throttling_s else None
                else:
                    error = outcome.error or "failed"
                    failed = service.mark_attempt_failed(session, subscription_id=claim.subscription_id,
                                                         ids=claim.ids, now=now, error=error,
                                                         max_attempts=settings.webhook_max_attempts)
                    report.failed += failed
                    report.retrying += len(claim.ids) - failed
                    # The batch's most-tried notification sets the pace; once it is given up on, newer
                    # notifications get their own first try straight away.
                    attempts = max(claim.attempts) + 1
                    next_at = now if attempts >= settings.webhook_max_attempts else now + timedelta(
                        seconds=backoff_delay(attempts, base_s=settings.retry_backoff_base_s,
                                              max_s=settings.retry_backoff_max_s))
                    log.info("webhook %s for %s failed (attempt %d): %s", claim.endpoint, claim.subscription_id,
                             attempts, error)
                service.release_lease(session, subscription_id=claim.subscription_id, token=token,
                                      next_attempt_at=next_at)
