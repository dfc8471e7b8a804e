"""Entity storage: batch upsert with attribute history, point reads, queries and deletes.

Writes are set-based (one SELECT for the batch's current state, one multi-row upsert, one history insert)
because per-entity round trips cannot reach tens of thousands of upserts a second.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

import orjson
import sqlalchemy as sa
from sqlalchemy.orm import Session

from citybrain.core.errors import Conflict, InvalidInput, NotFound
from citybrain.db.base import get_or_404
from citybrain.db.point_reads import PointReader
from citybrain.hub.entities import geo
from citybrain.hub.entities.models import AttributeHistoryRow, EntityRow
from citybrain.hub.entities.ngsi import EntityRecord, parse_datetime, to_ngsi
from citybrain.hub.entities.query import Node, SqlCompiler, evaluate

UpsertMode = Literal["replace", "merge"]
ENTITY_COLUMNS = ("type", "org_unit", "location", "min_lon", "min_lat", "max_lon", "max_lat", "attrs",
                  "modified_at")


@dataclass(slots=True)
class EntityChange:
    """What one write did to one entity; becomes an EntityChanged event and feeds subscriptions."""

    entity_id: str
    entity_type: str
    org_unit: str | None
    operation: Literal["created", "updated", "deleted"]
    attributes: list[str]
    entity: dict[str, Any] | None


@dataclass(slots=True)
class ItemError:
    index: int
    entity_id: str | None
    field: str
    reason: str
    status: int = 422


@dataclass(slots=True)
class UpsertOutcome:
    changes: list[EntityChange] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    errors: list[ItemError] = field(default_factory=list)


_NO_BBOX: tuple[None, None, None, None] = (None, None, None, None)


def upsert_entities(
    session: Session,
    *,
    records: Sequence[tuple[int, EntityRecord]],
    mode: UpsertMode,
    actor: str,
    now: datetime,
) -> UpsertOutcome:
    """Create or update entities. `records` pairs each with its index in the request, so errors can name it;
    ids must be unique within one call (the flow rejects repeats before they get here).

    replace: the stored attributes become exactly the given ones; merge: given attributes are added to or
    overwrite the stored ones. An entity whose content would not change is not written at all.
    """
    outcome = UpsertOutcome()
    if not records:
        return outcome
    ids = [record.id for _, record in records]
    current = {
        row.id: row
        for row in session.execute(
            sa.select(EntityRow.id, EntityRow.type, EntityRow.org_unit, EntityRow.location, EntityRow.min_lon,
                      EntityRow.min_lat, EntityRow.max_lon, EntityRow.max_lat, EntityRow.attrs,
                      EntityRow.created_at).where(EntityRow.id.in_(ids))
        )
    }
    to_db = _TimeBinder(session)
    db_now = to_db(now)
    rows: list[tuple[Any, ...]] = []
    history: list[tuple[Any, ...]] = []
    changes = outcome.changes
    for index, record in records:
        old = current.get(record.id)
        if old is not None and old.type != record.type:
            outcome.errors.append(ItemError(index, record.id, "type",
                                            f"entity exists with type {old.type}; delete it to change its type", 409))
            continue
        if old is None:
            attrs, location, bbox, org_unit = record.attrs, record.location, record.bbox, record.org_unit
            changed = list(attrs)
            operation: Literal["created", "updated"] = "created"
            created_at = db_now
        else:
            if mode == "merge":
                attrs = {**old.attrs, **record.attrs}
                location = record.location if record.location is not None else old.location
                bbox = record.bbox if record.location is not None else (
                    None if old.min_lon is None else (old.min_lon, old.min_lat, old.max_lon, old.max_lat))
                org_unit = record.org_unit if record.org_unit is not None else old.org_unit
            else:
                attrs, location, bbox, org_unit = record.attrs, record.location, record.bbox, record.org_unit
            changed = [name for name, value in attrs.items() if old.attrs.get(name) != value]
            changed += [name for name in old.attrs if name not in attrs]
            if location != old.location:
                changed.append("location")
            if org_unit != old.org_unit:
                changed.append("orgUnit")
            if not changed:
                outcome.unchanged.append(record.id)
                continue
            operation, created_at = "updated", to_db(old.created_at)
        rows.append((record.id, record.type, org_unit, _json_text(location), *(bbox or _NO_BBOX),
                     _json_text(attrs), created_at, db_now, 1))
        for name in changed:
            instance = attrs.get(name)
            if instance is not None:
                observed = instance.get("observedAt")
                history.append((record.id, name, _json_text(instance),
                                to_db(parse_datetime(observed)) if observed is not None else None, db_now, actor))
        changes.append(EntityChange(record.id, record.type, org_unit, operation, changed,
                                    to_ngsi(record.id, record.type, org_unit, location, attrs)))
    _write(session, rows, history)
    return outcome


# Batch writes go through the driver: SQLAlchemy's per-row parameter processing (ORM bulk insert) cost about
# five times what SQLite itself spent on the rows. Values are converted exactly as the column types would
# (orjson for JSON, the dialect's own datetime processor), so reads through the ORM see no difference.
_ENTITY_INSERT = ("id", *ENTITY_COLUMNS[:-1], "created_at", "modified_at", "version")
_HISTORY_INSERT = ("entity_id", "attribute", "instance", "observed_at", "recorded_at", "actor")
_ENTITY_UPSERT_SQL = (
    f"INSERT INTO entities ({', '.join(_ENTITY_INSERT)}) VALUES ({{values}}) ON CONFLICT (id) DO UPDATE SET "
    + ", ".join(f"{name} = excluded.{name}" for name in ENTITY_COLUMNS)
    + ", version = entities.version + 1"
)
_SQLITE_ENTITY_UPSERT = _ENTITY_UPSERT_SQL.format(values=", ".join("?" * len(_ENTITY_INSERT)))
_SQLITE_HISTORY_INSERT = (f"INSERT INTO attribute_history ({', '.join(_HISTORY_INSERT)}) "
                          f"VALUES ({', '.join('?' * len(_HISTORY_INSERT))})")
_POSTGRES_ENTITY_UPSERT = _ENTITY_UPSERT_SQL.format(
    values=", ".join("%s::jsonb" if name in ("location", "attrs") else "%s" for name in _ENTITY_INSERT))
_POSTGRES_HISTORY_COPY = f"COPY attribute_history ({', '.join(_HISTORY_INSERT)}) FROM STDIN"


def _json_text(value: Any) -> str:
    return orjson.dumps(value).decode()  # what the engine's json_serializer writes (None becomes JSON null)


class _TimeBinder:
    """Timestamps as the driver takes them for our UTC column type (memoised: a batch shares a few)."""

    def __init__(self, session: Session) -> None:
        dialect = session.get_bind().dialect
        self._column_type = EntityRow.__table__.c.created_at.type
        self._dialect = dialect
        self._to_driver = (None if dialect.name == "postgresql"
                           else self._column_type.dialect_impl(dialect).bind_processor(dialect))
        self._seen: dict[datetime, Any] = {}

    def __call__(self, moment: datetime | None) -> Any:
        if moment is None:
            return None
        value = self._seen.get(moment)
        if value is None:
            value = self._column_type.process_bind_param(moment, self._dialect)
            if self._to_driver is not None:
                value = self._to_driver(value)
            self._seen[moment] = value
        return value


def _write(session: Session, rows: list[tuple[Any, ...]], history: list[tuple[Any, ...]]) -> None:
    if not rows and not history:
        return
    connection = session.connection()
    if connection.dialect.name == "postgresql":
        cursor = connection.connection.driver_connection.cursor()  # type: ignore[union-attr]
        with cursor:
            if rows:
                cursor.executemany(_POSTGRES_ENTITY_UPSERT, rows)
            if history:
                with cursor.copy(_POSTGRES_HISTORY_COPY) as copy:
                    for row in history:
                        copy.write_row(row)
        return
    if rows:
        connection.exec_driver_sql(_SQLITE_ENTITY_UPSERT, rows)
    if history:
        connection.exec_driver_sql(_SQLITE_HISTORY_INSERT, history)


def row_to_ngsi(row: Any, *, sys_attrs: bool = False) -> dict[str, Any]:
    return to_ngsi(row.id, row.type, row.org_unit, row.location, row.attrs,
                   created_at=row.created_at if sys_attrs else None,
                   modified_at=row.modified_at if sys_attrs else None)


_READ_ENTITY_SQL = ("SELECT id, type, org_unit, location, attrs, created_at, modified_at FROM entities "
                    "WHERE id = ?")


async def read_entity(reader: PointReader, entity_id: str, *, sys_attrs: bool = False,
                      ) -> tuple[str | None, dict[str, Any]] | None:
    """One entity's org unit and NGSI-LD form, or None; the API's hot read (see db.point_reads)."""
    row = await reader.fetch_one(_READ_ENTITY_SQL, (entity_id,), json_columns=(3, 4),
                                 time_columns=(5, 6) if sys_attrs else ())
    if row is None:
        return None
    entity = to_ngsi(row[0], row[1], row[2], row[3], row[4],
                     created_at=row[5] if sys_attrs else None, modified_at=row[6] if sys_attrs else None)
    return row[2], entity


def get_entity(session: Session, *, entity_id: str) -> EntityRow:
    return get_or_404(session, EntityRow, entity_id, f"entity {entity_id}")


def delete_entity(session: Session, *, entity_id: str) -> EntityChange:
    row = get_entity(session, entity_id=entity_id)
    session.delete(row)
    return EntityChange(row.id, row.type, row.org_unit, "deleted", list(row.attrs), None)


def delete_attribute(session: Session, *, entity_id: str, attribute: str, now: datetime) -> EntityChange:
    row = get_entity(session, entity_id=entity_id)
    if attribute not in row.attrs:
        raise NotFound(f"entity {entity_id} has no attribute {attribute!r}")
    row.attrs = {k: v for k, v in row.attrs.items() if k != attribute}
    row.modified_at, row.version = now, row.version + 1
    return EntityChange(row.id, row.type, row.org_unit, "updated", [attribute], row_to_ngsi(row))


def ensure_type_unused(session: Session, *, type_name: str) -> None:
    if session.scalar(sa.select(EntityRow.id).where(EntityRow.type == type_name).limit(1)) is not None:
        raise Conflict(f"entities of type {type_name} exist; delete them before the type")


# --------------------------------------------------------------------------------------------- queries


@dataclass(frozen=True, slots=True)
class EntityQuery:
    types: tuple[str, ...] = ()
    ids: tuple[str, ...] = ()
    q: Node | None = None
    bbox: geo.BBox | None = None
    near: tuple[float, float, float] | None = None  # lon, lat, max distance (m)
    org_units: tuple[str, ...] | None = None  # already expanded to descendants; None = no filter
    attrs: tuple[str, ...] = ()  # which attributes to return; () = all


def encode_cursor(last_id: str) -> str:
    return base64.urlsafe_b64encode(last_id.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> str:
    try:
        decoded = base64.b64decode(cursor + "=" * (-len(cursor) % 4), altchars=b"-_", validate=True).decode()
    except (ValueError, UnicodeDecodeError):
        decoded = ""
    if not decoded:
        raise InvalidInput.at("cursor", "not a cursor this API returned")
    return decoded


def _where(query: EntityQuery, dialect: str) -> list[Any]:
    clauses: list[Any] = []
    if query.types:
        clauses.append(EntityRow.type.in_(query.types))
    if query.ids:
        clauses.append(EntityRow.id.in_(query.ids))
    if query.org_units is not None:
        clauses.append(EntityRow.org_unit.in_(query.org_units))
    if query.q is not None:
        clauses.append(SqlCompiler(EntityRow.attrs, dialect).compile(query.q))
    boxes = [query.bbox] if query.bbox else []
    if query.near:
        boxes.append(geo.box_around(*query.near))
    for box in boxes:  # bounding-box overlap: exact for points, a pre-filter for other shapes
        clauses += [EntityRow.min_lon <= box[2], EntityRow.max_lon >= box[0],
                    EntityRow.min_lat <= box[3], EntityRow.max_lat >= box[1]]
    return clauses


def _geo_exact(query: EntityQuery, location: dict[str, Any] | None) -> bool:
    if location is None:
        return not (query.bbox or query.near)
    if query.bbox and location["type"] != "Point" and not geo.intersects_box(location, query.bbox):
        return False
    if query.near:
        lon, lat, meters = query.near
        return geo.distance_m(location, lon, lat) <= meters
    return True


def query_entities(
    session: Session, *, query: EntityQuery, after: str | None, limit: int
) -> tuple[list[EntityRow], str | None]:
    """One page of matching entities in id order, and the cursor of the next page (None at the end)."""
    dialect = session.get_bind().dialect.name
    base = sa.select(EntityRow).where(*_where(query, dialect)).order_by(EntityRow.id)
    needs_exact = bool(query.near) or bool(query.bbox)
    page: list[EntityRow] = []
    cursor = after
    chunk = limit + 1 if not needs_exact else max(2 * limit, 100)
    while True:
        stmt = base.limit(chunk)
        if cursor is not None:
            stmt = stmt.where(EntityRow.id > cursor)
        rows = list(session.scalars(stmt))
        for row in rows:
            if not needs_exact or _geo_exact(query, row.location):
                page.append(row)
                if len(page) > limit:
                    return page[:limit], encode_cursor(page[limit - 1].id)
        if len(rows) < chunk:
            return page, None
        cursor = rows[-1].id


def count_entities(session: Session, *, query: EntityQuery) -> int:
    dialect = session.get_bind().dialect.name
    if not (query.near or query.bbox):
        return session.scalar(sa.select(sa.func.count()).select_from(EntityRow).where(*_where(query, dialect))) or 0
    stmt = sa.select(EntityRow.location).where(*_where(query, dialect))
    return sum(1 for (location,) in session.execute(stmt) if _geo_exact(query, location))


def matches(query: EntityQuery, entity: dict[str, Any], org_unit: str | None) -> bool:
    """The same query evaluated in Python on one normalized entity (for subscriptions)."""
    if query.types and entity["type"] not in query.types:
        return False
    if query.ids and entity["id"] not in query.ids:
        return False
    if query.org_units is not None and org_unit not in query.org_units:
        return False
    if query.q is not None and not evaluate(query.q, entity):
        return False
    location = entity.get("location", {}).get("value")
    if query.bbox or query.near:
        if location is None:
            return False
        if query.bbox and location["type"] == "Point":
            x, y = location["coordinates"][:2]
            box = query.bbox
            if not (box[0] <= x <= box[2] and box[1] <= y <= box[3]):
                return False
        return _geo_exact(query, location)
    return True


def attribute_history(
    session: Session,
    *,
    entity_id: str,
    attributes: Iterable[str] = (),
    since: datetime | None = None,
    until: datetime | None = None,
    after_seq: int | None = None,
    limit: int = 100,
) -> list[AttributeHistoryRow]:
    """Attribute instances of one entity in arrival order (`since`/`until` bound the observation time,
    or the arrival time for instances without observedAt)."""
    stmt = sa.select(AttributeHistoryRow).where(AttributeHistoryRow.entity_id == entity_id)
    names = list(attributes)
    if names:
        stmt = stmt.where(AttributeHistoryRow.attribute.in_(names))
    moment = sa.func.coalesce(AttributeHistoryRow.observed_at, AttributeHistoryRow.recorded_at)
    if since is not None:
        stmt = stmt.where(moment >= since)
    if until is not None:
        stmt = stmt.where(moment < until)
    if after_seq is not None:
        stmt = stmt.where(AttributeHistoryRow.seq > after_seq)
    return list(session.scalars(stmt.order_by(AttributeHistoryRow.seq).limit(limit)))
