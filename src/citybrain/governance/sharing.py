"""Data sharing between departments (数据共享): a department asks for another's dataset, the owner grants
it with the fields, the org units and the time it sees fit, and the grant is the only way in.

- A caller acts for a department when its org scope holds the department's unit (`{district}-{slug}`), or
  when it has no scope (the district level acts for every department, and for the operations centre that
  owns the platform's own datasets).
- A grant is never wider than the request: fewer fields, units within the asked ones, an earlier end.
- Records are read through `GET /api/v1/shares/{id}/records` only while the grant is approved and unexpired,
  by a caller acting for the requesting department and cleared for the dataset's classification; each read
  is audited as a read of personal data, with the share named. At its end a grant expires by itself (the
  data-quality round marks it, with an audit record), and either side may revoke it before.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from citybrain.core.context import Context, new_id
from citybrain.core.errors import Conflict, ErrorCollector, Forbidden, InvalidInput, NotFound
from citybrain.governance import access, audit, catalog
from citybrain.governance.models import DatasetRow, ShareRow

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from citybrain.platform import Platform

MAX_GRANT = timedelta(days=366)
READABLE_KINDS = ("entities", "cases")


class ShareRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    requester: str = Field(max_length=64, description="The department asking (a slug, e.g. shengtai)")
    purpose: str = Field(min_length=1, max_length=500, description="Why: kept with the grant and every read")
    fields: list[str] = Field(min_length=1, max_length=200)
    orgScope: list[str] | None = Field(None, max_length=100, description="Org units; none = the whole district")
    until: AwareDatetime = Field(description="When the grant ends (at most a year ahead)")


class ShareDecision(BaseModel):
    model_config = ConfigDict(extra="forbid")

    approve: bool
    reason: str | None = Field(None, max_length=500)
    fields: list[str] | None = Field(None, max_length=200, description="Grant fewer fields than asked")
    orgScope: list[str] | None = Field(None, max_length=100, description="Grant fewer units than asked")
    until: AwareDatetime | None = Field(None, description="End the grant earlier than asked")


def _departments() -> set[str]:
    from citybrain.hub.org.departments import DEPARTMENTS

    return {d.slug for d in DEPARTMENTS}


def acts_for(platform: Platform, ctx: Context, department: str) -> bool:
    if ctx.org_scope is None:
        return True
    if department not in _departments():
        return False
    from citybrain.hub.org.departments import department_code

    return any(access.within_scope(platform, ctx, department_code(root, department))
               for root in platform.org_tree.roots)


def effective_status(row: ShareRow, now: datetime) -> str:
    return "expired" if row.status == "approved" and row.until <= now else row.status


def share_view(row: ShareRow, now: datetime) -> dict[str, Any]:
    return {"id": row.id, "dataset": row.dataset_id, "requester": row.requester, "owner": row.owner,
            "purpose": row.purpose, "fields": row.fields, "orgScope": row.org_scope, "until": row.until.isoformat(),
            "status": effective_status(row, now), "requestedBy": row.requested_by,
            "requestedAt": row.requested_at.isoformat(), "decidedBy": row.decided_by,
            "decidedAt": row.decided_at.isoformat() if row.decided_at else None, "reason": row.reason}


def _audited(session: Session, by: Context, action: str, row: ShareRow, at: datetime, **detail: Any) -> None:
    audit.append_in(session, [audit.AuditEntry.of(by, action=action, resource=f"share:{row.id}", outcome="ok",
                                                  client=by.actor.partition(":")[0],
                                                  detail={"dataset": row.dataset_id, "requester": row.requester,
                                                          **detail})], at=at)


def _check_scope_units(platform: Platform, units: list[str] | None, field: str, errors: ErrorCollector) -> None:
    for i, code in enumerate(units or ()):
        if code not in platform.org_tree:
            errors.add(f"{field}[{i}]", f"unknown org unit {code!r}")


def request_share(platform: Platform, dataset_id: str, body: ShareRequest, *, ctx: Context) -> dict[str, Any]:
    now = platform.clock.now()
    errors = ErrorCollector()
    if body.requester not in _departments():
        errors.add("requester", f"unknown department {body.requester!r}")
    elif not acts_for(platform, ctx, body.requester):
        raise Forbidden(f"requester: {ctx.actor} does not act for {body.requester}", errors=[])
    _check_scope_units(platform, body.orgScope, "orgScope", errors)
    if body.until <= now:
        errors.add("until", "lies in the past")
    elif body.until - now > MAX_GRANT:
        errors.add("until", "at most a year ahead; ask again when it ends")
    with platform.transaction() as session:
        dataset = catalog.get_dataset(session, dataset_id)
        if dataset.fields:
            for i, name in enumerate(body.fields):
                if name not in dataset.fields:
                    errors.add(f"fields[{i}]", f"the dataset has no field {name!r}")
        if body.requester == dataset.owner:
            errors.add("requester", f"{dataset.owner} owns {dataset_id}: its own data needs no share")
        errors.raise_if_any("The share request has invalid fields")
        row = ShareRow(id=new_id(), dataset_id=dataset_id, requester=body.requester, owner=dataset.owner,
                       purpose=body.purpose, fields=list(dict.fromkeys(body.fields)), org_scope=body.orgScope,
                       until=body.until, status="requested", requested_by=ctx.actor, requested_at=now,
                       decided_by=None, decided_at=None, reason=None)
        session.add(row)
        session.flush()
        _audited(session, ctx, "share.request", row, now, fields=row.fields, org_scope=row.org_scope)
        return share_view(row, now)


def decide(platform: Platform, share_id: str, body: ShareDecision, *, ctx: Context) -> dict[str, Any]:
    now = platform.clock.now()
    with platform.transaction() as session:
        row = _get(session, share_id)
        if not acts_for(platform, ctx, row.owner):
            raise Forbidden(f"{ctx.actor} does not act for {row.owner}, which owns {row.dataset_id}")
        if row.status != "requested":
            raise Conflict(f"share {share_id} is {effective_status(row, now)}; only a request is decided")
        if body.approve:
            errors = ErrorCollector()
            fields = body.fields if body.fields is not None else row.fields
            for i, name in enumerate(fields):
                if name not in row.fields:
                    errors.add(f"fields[{i}]", f"{name!r} was not asked for: a grant is never wider than its request")
            scope = body.orgScope if body.orgScope is not None else row.org_scope
            _check_scope_units(platform, scope, "orgScope", errors)
            if row.org_scope is not None and body.orgScope is not None:
                for i, code in enumerate(body.orgScope):
                    if code in platform.org_tree and not platform.org_tree.within(code, row.org_scope):
                        errors.add(f"orgScope[{i}]", f"{code} lies outside the units asked for")
            until = body.until or row.until
            if until > row.until:
                errors.add("until", "later than asked for")
            elif until <= now:
                errors.add("until", "lies in the past")
            errors.raise_if_any("The grant is wider than the request")
            row.fields, row.org_scope, row.until = list(dict.fromkeys(fields)), scope, until
        row.status = "approved" if body.approve else "rejected"
        row.decided_by, row.decided_at, row.reason = ctx.actor, now, body.reason
        _audited(session, ctx, "share.approve" if body.approve else "share.reject", row, now,
                 fields=row.fields, org_scope=row.org_scope, until=row.until.isoformat())
        return share_view(row, now)


def revoke(platform: Platform, share_id: str, reason: str | None, *, ctx: Context) -> dict[str, Any]:
    now = platform.clock.now()
    with platform.transaction() as session:
        row = _get(session, share_id)
        if not (acts_for(platform, ctx, row.owner) or acts_for(platform, ctx, row.requester)):
            raise Forbidden(f"{ctx.actor} acts for neither {row.owner} nor {row.requester}")
        if effective_status(row, now) != "approved":
            raise Conflict(f"share {share_id} is {effective_status(row, now)}; only a live grant is revoked")
        row.status, row.reason = "revoked", reason or row.reason
        _audited(session, ctx, "share.revoke", row, now, reason=reason)
        return share_view(row, now)


def expire_due(platform: Platform) -> int:
    """Mark grants past their end as expired, each with an audit record (the quality round calls this)."""
    now = platform.clock.now()
    with platform.transaction() as session:
        due = list(session.scalars(sa.select(ShareRow).where(ShareRow.status == "approved", ShareRow.until <= now)))
        for row in due:
            row.status = "expired"
            _audited(session, Context(actor="system"), "share.expire", row, now)
    return len(due)


def list_shares(platform: Platform, *, ctx: Context, status: str | None, dataset_id: str | None,
                department: str | None) -> list[dict[str, Any]]:
    """The shares the caller's departments take part in (every share at the district level)."""
    now = platform.clock.now()
    with platform.session() as session:
        query = sa.select(ShareRow).order_by(ShareRow.requested_at.desc()).limit(1000)
        if dataset_id:
            query = query.where(ShareRow.dataset_id == dataset_id)
        if department:
            query = query.where(sa.or_(ShareRow.requester == department, ShareRow.owner == department))
        rows = list(session.scalars(query))
    views = [share_view(r, now) for r in rows
             if acts_for(platform, ctx, r.requester) or acts_for(platform, ctx, r.owner)]
    return [v for v in views if status is None or v["status"] == status]


def _get(session: Session, share_id: str) -> ShareRow:
    row = session.get(ShareRow, share_id, with_for_update=True)
    if row is None:
        raise NotFound(f"no share {share_id}")
    return row


def read_records(platform: Platform, share_id: str, *, ctx: Context, after: str | None, limit: int
                 ) -> dict[str, Any]:
    """A page of the shared dataset as the grant allows: its fields, its org units, while it lasts."""
    now = platform.clock.now()
    with platform.session() as session:
        row = session.get(ShareRow, share_id)
        if row is None:
            raise NotFound(f"no share {share_id}")
        if not acts_for(platform, ctx, row.requester):
            raise Forbidden(f"{ctx.actor} does not act for {row.requester}, the department this share grants")
        status = effective_status(row, now)
        if status != "approved":
            raise Forbidden(f"share {share_id} is {status}: nothing is read through it")
        dataset = session.get(DatasetRow, row.dataset_id)
        if dataset is None:
            raise NotFound(f"dataset {row.dataset_id} is no longer in the catalog")
        if not access.may_read_level(ctx, dataset.classification):
            raise Forbidden(f"{row.dataset_id} is classified {dataset.classification}; {ctx.actor} is not "
                            "cleared for it, whatever the grant")
        if dataset.kind not in READABLE_KINDS:
            raise InvalidInput.at("share", f"{dataset.kind} datasets are not read through shares yet "
                                           f"(readable: {', '.join(READABLE_KINDS)})")
        units = None if row.org_scope is None else sorted(
            {code for unit in row.org_scope for code in platform.org_tree.descendants(unit)})
        if dataset.kind == "entities":
            items, next_cursor = _entity_records(session, dataset.id.removeprefix("entities:"), units, row.fields,
                                                 after, limit)
            items = [access.entity_for(platform, ctx, item) for item in items]
        else:
            items, next_cursor = _case_records(session, ctx, units, row.fields, after, limit)
    return {"share": share_id, "dataset": row.dataset_id, "fields": row.fields, "items": items,
            "next_cursor": next_cursor}


def _entity_records(session: Session, entity_type: str, units: list[str] | None, fields: list[str],
                    after: str | None, limit: int) -> tuple[list[dict[str, Any]], str | None]:
    from citybrain.hub.entities import service
    from citybrain.hub.entities.service import EntityQuery

    query = EntityQuery(types=(entity_type,), org_units=tuple(units) if units is not None else None)
    rows, next_cursor = service.query_entities(session, query=query,
                                               after=service.decode_cursor(after) if after else None, limit=limit)
    wanted = set(fields)
    items = [{k: v for k, v in service.row_to_ngsi(r).items() if k in ("id", "type") or k in wanted} for r in rows]
    return items, next_cursor


def _case_records(session: Session, ctx: Context, units: list[str] | None, fields: list[str], after: str | None,
                  limit: int) -> tuple[list[dict[str, Any]], str | None]:
    from citybrain.disposal import service
    from citybrain.hotline.masking import text_masker

    mask = text_masker(ctx)
    before = service.check_page_cursor(after)
    rows = service.list_cases(session, org_units=units, before_id=before, limit=limit + 1)
    items = []
    for case in rows[:limit]:
        record: dict[str, Any] = {"id": case.id}
        for name in fields:
            value = getattr(case, name, None)
            record[name] = mask(value) if isinstance(value, str) and name in ("description", "title", "address") \
                else value.isoformat() if isinstance(value, datetime) else value
        items.append(record)
    return items, rows[limit - 1].id if len(rows) > limit else None
