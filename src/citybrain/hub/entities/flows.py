"""Entity write flows: validate, write (with the outbox hooks) in one transaction, then publish events."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from citybrain.core.context import Context
from citybrain.core.errors import (
    Conflict,
    ErrorCollector,
    FieldError,
    Forbidden,
    InvalidInput,
    NotFound,
    PayloadTooLarge,
)
from citybrain.core.events import EntityChanged, EntityTypesChanged
from citybrain.governance import access
from citybrain.hub.entities import service
from citybrain.hub.entities.models import EntityRow, EntityTypeRow
from citybrain.hub.entities.ngsi import EntityRecord, parse_attributes, parse_entity
from citybrain.hub.entities.service import EntityChange, ItemError, UpsertMode
from citybrain.hub.entities.types import TypeRegistry, TypeSpec

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from citybrain.platform import Platform


@dataclass(slots=True)
class BatchResult:
    """NGSI-LD BatchOperationResult: ids written (or already identical), and each rejected item."""

    success: list[str] = field(default_factory=list)
    errors: list[ItemError] = field(default_factory=list)


def load_types(platform: Platform) -> TypeRegistry:
    from citybrain.scenarios import scenario_types

    registry = TypeRegistry(scenario_types())
    with platform.session() as session:
        for (spec,) in session.execute(sa.select(EntityTypeRow.spec)):
            registry.add(TypeSpec.model_validate(spec), replace=True)
    return registry


def _check_access(platform: Platform, ctx: Context, org_unit: str | None, type_name: str, where: str) -> None:
    """A caller writes only within its org scope, and only entities of types it is cleared to see."""
    if not access.within_scope(platform, ctx, org_unit):
        raise Forbidden(f"{where}: outside your org scope", errors=[])
    access.require_type_visible(platform, ctx, type_name, field=where)


def _events(changes: Sequence[EntityChange], ctx: Context) -> list[EntityChanged]:
    occurred_at = datetime.now(UTC)  # one write, one moment: a batch's events share it
    return [EntityChanged(context=ctx, entity_id=c.entity_id, entity_type=c.entity_type, org_unit=c.org_unit,
                          operation=c.operation, attributes=c.attributes, entity=c.entity, occurred_at=occurred_at)
            for c in changes]


def _run_hooks(platform: Platform, session: Session, changes: list[EntityChange]) -> None:
    if changes:
        for hook in platform.change_hooks:
            hook(session, changes)


def validate_batch(platform: Platform, items: Sequence[Any], ctx: Context) -> tuple[list[tuple[int, EntityRecord]], list[ItemError]]:
    """Validate each item on its own; a bad item is reported and never blocks the good ones."""
    good: list[tuple[int, EntityRecord]] = []
    errors: list[ItemError] = []
    first_index: dict[str, int] = {}
    for index, raw in enumerate(items):
        raw_id = raw.get("id") if isinstance(raw, dict) else None
        try:
            record = parse_entity(raw, types=platform.types, org_units=platform.org_tree, prefix=f"[{index}].")
            _check_access(platform, ctx, record.org_unit, record.type, f"[{index}].orgUnit")
        except (InvalidInput, Forbidden) as exc:
            for err in exc.errors or [None]:
                errors.append(ItemError(index, raw_id if isinstance(raw_id, str) else None,
                                        err.field if err else f"[{index}].orgUnit",
                                        err.reason if err else exc.detail, exc.status))
            continue
        if record.id in first_index:
            errors.append(ItemError(index, record.id, f"[{index}].id",
                                    f"the same entity appears earlier in this batch at [{first_index[record.id]}]"))
            continue
        first_index[record.id] = index
        good.append((index, record))
    return good, errors


async def upsert_batch(platform: Platform, items: Sequence[Any], *, mode: UpsertMode, ctx: Context) -> BatchResult:
    if len(items) > platform.settings.max_batch_entities:
        raise PayloadTooLarge(
            f"a batch holds at most {platform.settings.max_batch_entities} entities, this one has {len(items)}",
            errors=[FieldError("body", f"at most {platform.settings.max_batch_entities} entities per batch")])

    def work() -> tuple[BatchResult, list[EntityChange]]:
        good, errors = validate_batch(platform, items, ctx)
        prepared = service.prepare_entities(good)
        with platform.transaction() as session:
            return _write_prepared(platform, session, good, prepared, errors, mode=mode, ctx=ctx)

    result, changes = await platform.run(work)
    await platform.bus.publish(*_events(changes, ctx))
    return result


def _write_prepared(platform: Platform, session: Session, good: list[tuple[int, EntityRecord]],
                    prepared: list[service.PreparedEntity], errors: list[ItemError], *, mode: UpsertMode,
                    ctx: Context) -> tuple[BatchResult, list[EntityChange]]:
    outcome = service.upsert_entities(session, records=prepared, mode=mode, actor=ctx.actor, now=platform.clock.now())
    _run_hooks(platform, session, outcome.changes)
    failed = {e.index for e in outcome.errors}
    result = BatchResult(success=[record.id for index, record in good if index not in failed],
                         errors=sorted(errors + outcome.errors, key=lambda e: e.index))
    return result, outcome.changes


def write_entities_in(platform: Platform, session: Session, items: Sequence[Any], *, mode: UpsertMode,
                      ctx: Context) -> tuple[BatchResult, list[EntityChanged]]:
    """Upsert entities inside a transaction another capability holds (its own rows and the entities commit
    together); returns the result and the events to publish once that transaction has committed."""
    good, errors = validate_batch(platform, items, ctx)
    result, changes = _write_prepared(platform, session, good, service.prepare_entities(good), errors, mode=mode,
                                      ctx=ctx)
    return result, _events(changes, ctx)


async def write_entity(platform: Platform, raw: Any, *, ctx: Context, create_only: bool) -> dict[str, Any]:
    """Create (409 if it exists) or replace one entity; returns its normalized form."""

    def work() -> tuple[dict[str, Any], list[EntityChange]]:
        record = parse_entity(raw, types=platform.types, org_units=platform.org_tree)
        _check_access(platform, ctx, record.org_unit, record.type, "orgUnit")
        with platform.transaction() as session:
            if create_only and session.get(EntityRow, record.id) is not None:
                raise Conflict(f"entity {record.id} already exists; use PUT to replace it")
            outcome = service.upsert_entities(session, records=service.prepare_entities([(0, record)]),
                                              mode="replace", actor=ctx.actor,
                                              now=platform.clock.now())
            if outcome.errors:
                raise Conflict(outcome.errors[0].reason, errors=[FieldError("type", outcome.errors[0].reason)])
            _run_hooks(platform, session, outcome.changes)
            row = service.get_entity(session, entity_id=record.id)
            return service.row_to_ngsi(row, sys_attrs=True), outcome.changes

    entity, changes = await platform.run(work)
    await platform.bus.publish(*_events(changes, ctx))
    return entity


async def update_attributes(platform: Platform, entity_id: str, raw_attrs: Any, *, ctx: Context) -> dict[str, Any]:
    """Add or overwrite some attributes of an existing entity (the others stay)."""

    def work() -> tuple[dict[str, Any], list[EntityChange]]:
        with platform.transaction() as session:
            row = service.get_entity(session, entity_id=entity_id)
            _check_access(platform, ctx, row.org_unit, row.type, "orgUnit")
            errors = ErrorCollector()
            attrs = parse_attributes(raw_attrs, platform.types.get(row.type), errors,
                                     skip=("id", "type", "@context", "createdAt", "modifiedAt"))
            if isinstance(raw_attrs, dict) and ("location" in raw_attrs or "orgUnit" in raw_attrs):
                errors.add("location" if "location" in raw_attrs else "orgUnit",
                           "change location or orgUnit by replacing the entity (PUT) or a merge upsert")
            errors.raise_if_any()
            if not attrs:
                raise InvalidInput.at("", "no attributes given")
            record = EntityRecord(row.id, row.type, row.org_unit, row.location, None, attrs)
            outcome = service.upsert_entities(session, records=service.prepare_entities([(0, record)]),
                                              mode="merge", actor=ctx.actor,
                                              now=platform.clock.now())
            _run_hooks(platform, session, outcome.changes)
            session.flush()
            session.expire_all()
            return service.row_to_ngsi(service.get_entity(session, entity_id=entity_id), sys_attrs=True), outcome.changes

    entity, changes = await platform.run(work)
    await platform.bus.publish(*_events(changes, ctx))
    return entity


async def delete_entities(platform: Platform, entity_ids: Sequence[str], *, ctx: Context) -> BatchResult:
    def work() -> tuple[BatchResult, list[EntityChange]]:
        result, changes = BatchResult(), []
        with platform.transaction() as session:
            for index, entity_id in enumerate(entity_ids):
                try:
                    row = service.get_entity(session, entity_id=entity_id)
                    _check_access(platform, ctx, row.org_unit, row.type, f"[{index}]")
                    changes.append(service.delete_entity(session, entity_id=entity_id))
                    result.success.append(entity_id)
                except (NotFound, Forbidden) as exc:
                    result.errors.append(ItemError(index, entity_id, f"[{index}]", exc.detail, exc.status))
            _run_hooks(platform, session, changes)
        return result, changes

    result, changes = await platform.run(work)
    await platform.bus.publish(*_events(changes, ctx))
    return result


async def delete_attribute(platform: Platform, entity_id: str, attribute: str, *, ctx: Context) -> None:
    def work() -> list[EntityChange]:
        with platform.transaction() as session:
            row = service.get_entity(session, entity_id=entity_id)
            _check_access(platform, ctx, row.org_unit, row.type, "orgUnit")
            changes = [service.delete_attribute(session, entity_id=entity_id, attribute=attribute,
                                                now=platform.clock.now())]
            _run_hooks(platform, session, changes)
            return changes

    changes = await platform.run(work)
    await platform.bus.publish(*_events(changes, ctx))


async def define_type(platform: Platform, spec: TypeSpec, *, now: datetime, ctx: Context) -> TypeSpec:
    existing = platform.types.get(spec.name)
    if existing is not None and existing.source != "operator":
        raise Conflict(f"type {spec.name} is defined by {existing.source} and cannot be changed through the API")
    spec = spec.model_copy(update={"source": "operator"})

    def work() -> None:
        with platform.transaction() as session:
            row = session.get(EntityTypeRow, spec.name)
            if row is None:
                session.add(EntityTypeRow(name=spec.name, spec=spec.model_dump(mode="json"), created_at=now))
            else:
                row.spec = spec.model_dump(mode="json")

    await platform.run(work)
    platform.types.add(spec, replace=True)
    await platform.bus.publish(EntityTypesChanged(context=ctx, type_name=spec.name, operation="defined"))
    return spec


async def remove_type(platform: Platform, name: str, *, ctx: Context) -> None:
    existing = platform.types.get(name)
    if existing is None:
        raise NotFound(f"entity type {name} does not exist")
    if existing.source != "operator":
        raise Conflict(f"type {name} is defined by {existing.source} and cannot be removed through the API")

    def work() -> None:
        with platform.transaction() as session:
            service.ensure_type_unused(session, type_name=name)
            row = session.get(EntityTypeRow, name)
            if row is not None:
                session.delete(row)

    await platform.run(work)
    platform.types.remove(name)
    await platform.bus.publish(EntityTypesChanged(context=ctx, type_name=name, operation="removed"))
