"""Entity storage: batch upsert with change history, point reads, queries and deletes.

Writes are set-based (one SELECT for the batch's current state, one multi-row write per kind of change, one
history insert) because per-entity round trips cannot reach tens of thousands of upserts a second. The JSON
text of each entity is rendered before the write lock is taken (`prepare_entities`), so the lock is held
for the diff and the store's own work only.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, NamedTuple

import orjson
import sqlalchemy as sa
from sqlalchemy.orm import Session

from citybrain.core.errors import Conflict, InvalidInput, NotFound
from citybrain.db.base import get_or_404
from citybrain.db.point_reads import PointReader
from citybrain.hub.entities import geo
from citybrain.hub.entities.models import HAS_EXTENT, POSTGRES_BOX, EntityHistoryRow, EntityRow
from citybrain.hub.entities.ngsi import EntityRecord, parse_datetime, to_ngsi
from citybrain.hub.entities.query import Node, SqlCompiler, evaluate

UpsertMode = Literal["replace", "merge"]
ENTITY_COLUMNS = ("type", "org_unit", "location", "min_lon", "min_lat", "max_lon", "max_lat", "lon_band", "attrs",
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


@dataclass(slots=True)
class PreparedEntity:
    """A validated entity with what the store will write, worked out before the write lock is taken: its
    JSON text, and the span of its attributes' observation times (None where no attribute has observedAt;
    `timeless` when some attribute has none, whose time is then the write's)."""

    index: int  # in the request, so errors can name it
    record: EntityRecord
    attrs_json: str
    location_json: str
    observed_from: datetime | None
    observed_to: datetime | None
    timeless: bool


def prepare_entities(records: Sequence[tuple[int, EntityRecord]]) -> list[PreparedEntity]:
    """Render each record's stored JSON and observation span (outside the write transaction: neither needs
    stored state)."""
    prepared = []
    moments: dict[str, datetime | None] = {}
    for index, record in records:
        first, last, timeless = _observed_span(record.attrs.values(), moments)
        prepared.append(PreparedEntity(index, record, _json_text(record.attrs), _json_text(record.location),
                                       first, last, timeless))
    return prepared


def _observed_span(instances: Iterable[dict[str, Any]], moments: dict[str, datetime | None],
                   ) -> tuple[datetime | None, datetime | None, bool]:
    """Earliest and latest observedAt of some attribute instances, and whether any has none. `moments`
    memoises the parsed texts: a batch's readings share a few timestamps."""
    first = last = None
    timeless = False
    for instance in instances:
        text = instance.get("observedAt")
        moment = None
        if text is not None:
            moment = moments.get(text)
            if moment is None:
                moment = moments[text] = parse_datetime(text)
        if moment is None:
            timeless = True
            continue
        if first is None or moment < first:
            first = moment
        if last is None or moment > last:
            last = moment
    return first, last, timeless


_NO_PLACE: tuple[None, None, None, None, None] = (None, None, None, None, None)


def _place_columns(bbox: geo.BBox | None) -> tuple[Any, ...]:
    """min_lon, min_lat, max_lon, max_lat and lon_band of a stored entity."""
    return _NO_PLACE if bbox is None else (*bbox, geo.lon_band(bbox[0]))


class _StoredRow(NamedTuple):
    """What an upsert diffs against. `created_at` stays as the driver gave it: it is only written back."""

    type: str
    org_unit: str | None
    location: dict[str, Any] | None
    min_lon: float | None
    min_lat: float | None
    max_lon: float | None
    max_lat: float | None
    attrs: dict[str, Any]
    created_at: Any


def _stored_rows(session: Session, ids: list[str]) -> dict[str, _StoredRow]:
    """The stored state of some entities, read through the driver with JSON decoded by orjson: through
    SQLAlchemy's result processing (JSON and datetime per row) this read cost more than the write."""
    connection = session.connection()
    if connection.dialect.name == "postgresql":
        cursor = connection.connection.driver_connection.cursor()  # type: ignore[union-attr]
        # The ids go as one text that PostgreSQL splits: psycopg dumps a list element by element in Python,
        # which cost more than the query. A URN cannot hold the separator (U+001F).
        with cursor:
            cursor.execute(_POSTGRES_STORED_ROWS, ("\x1f".join(ids),))
            result: Any = cursor.fetchall()
    else:
        sql = f"SELECT id, {_STORED_COLUMNS} FROM entities WHERE id IN ({', '.join('?' * len(ids))})"
        result = connection.exec_driver_sql(sql, tuple(ids))
    loads = orjson.loads
    return {entity_id: _StoredRow(type_, org_unit, loads(location) if location is not None else None, min_lon, min_lat,
                                  max_lon, max_lat, loads(attrs), created_at)
            for entity_id, type_, org_unit, location, min_lon, min_lat, max_lon, max_lat, attrs, created_at in result}


_STORED = ("type", "org_unit", "location", "min_lon", "min_lat", "max_lon", "max_lat", "attrs", "created_at")
_STORED_COLUMNS = ", ".join(_STORED)
# PostgreSQL sends the JSON columns as text, for orjson to decode.
_POSTGRES_STORED_ROWS = (
    "SELECT id, " + ", ".join(f"{name}::text" if name in ("location", "attrs") else name for name in _STORED)
    + " FROM entities WHERE id = ANY(string_to_array(%s, E'\\x1f'))")


def upsert_entities(
    session: Session,
    *,
    records: Sequence[PreparedEntity],
    mode: UpsertMode,
    actor: str,
    now: datetime,
) -> UpsertOutcome:
    """Create or update entities; ids must be unique within one call (the flow rejects repeats first).

    replace: the stored attributes become exactly the given ones; merge: given attributes are added to or
    overwrite the stored ones. An entity whose content would not change is not written at all; one whose
    place and org unit stay is rewritten without touching the org-unit and spatial indexes.
    """
    outcome = UpsertOutcome()
    if not records:
        return outcome
    current = _stored_rows(session, [prepared.record.id for prepared in records])
    to_db = _TimeBinder(session)
    db_now = to_db(now)
    writes = _Writes()
    for prepared in records:
        record = prepared.record
        old = current.get(record.id)
        attrs, attrs_json = record.attrs, prepared.attrs_json
        location, location_json, bbox, org_unit = record.location, prepared.location_json, record.bbox, record.org_unit
        if old is None:
            changed = list(attrs)
            operation: Literal["created", "updated"] = "created"
            moved, created_at = True, db_now
        else:
            if old.type != record.type:
                outcome.errors.append(ItemError(prepared.index, record.id, "type",
                                                f"entity exists with type {old.type}; delete it to change its type",
                                                409))
                continue
            if mode == "merge":
                attrs, attrs_json = {**old.attrs, **record.attrs}, None
                if location is None and old.location is not None:
                    location, location_json = old.location, None
                    bbox = (old.min_lon, old.min_lat, old.max_lon, old.max_lat)
                if org_unit is None:
                    org_unit = old.org_unit
            old_attrs = old.attrs
            changed = [name for name, value in attrs.items() if old_attrs.get(name) != value]
            changed += [name for name in old_attrs if name not in attrs]
            moved = False
            if location != old.location:
                changed.append("location")
                moved = True
            if org_unit != old.org_unit:
                changed.append("orgUnit")
                moved = True
            if not changed:
                outcome.unchanged.append(record.id)
                continue
            operation, created_at = "updated", old.created_at
        if attrs_json is None:
            attrs_json = _json_text(attrs)
        if moved:
            writes.upserts.append((record.id, record.type, org_unit, location_json or _json_text(location),
                                   *_place_columns(bbox), attrs_json, created_at, db_now, 1))
        else:
            writes.attrs_only.append((attrs_json, db_now, record.id))
        writes.add_history(prepared, attrs, attrs_json, changed, whole=operation == "created", now=now,
                           to_db=to_db, db_now=db_now, actor=actor)
        outcome.changes.append(EntityChange(record.id, record.type, org_unit, operation, changed,
                                            to_ngsi(record.id, record.type, org_unit, location, attrs)))
    writes.flush(session)
    return outcome


class _Writes:
    """The rows one batch writes, by statement: new or moved entities (a full upsert), entities whose
    attributes alone changed (an UPDATE that leaves the org-unit and spatial indexes alone), and history."""

    __slots__ = ("attrs_only", "history", "moments", "upserts")

    def __init__(self) -> None:
        self.upserts: list[tuple[Any, ...]] = []
        self.attrs_only: list[tuple[Any, ...]] = []
        self.history: list[tuple[Any, ...]] = []
        self.moments: dict[str, datetime | None] = {}  # observedAt text → time: a batch shares a few

    def add_history(self, prepared: PreparedEntity, attrs: dict[str, Any], attrs_json: str, changed: list[str], *,
                    whole: bool, now: datetime, to_db: _TimeBinder, db_now: Any, actor: str) -> None:
        """One history row holding the instances the change wrote (a removed attribute has none). `whole`:
        the change wrote every attribute, so the row is the entity's own JSON text and observation span."""
        if whole or (attrs is prepared.record.attrs and len(changed) == len(attrs)
                     and all(name in attrs for name in changed)):
            if not attrs:
                return
            instances_json = attrs_json
            first, last, timeless = prepared.observed_from, prepared.observed_to, prepared.timeless
        else:
            instances = {name: attrs[name] for name in changed if name in attrs}
            if not instances:
                return
            instances_json = _json_text(instances)
            first, last, timeless = _observed_span(instances.values(), self.moments)
        if timeless:  # an instance without observedAt was observed when it was recorded
            first, last = (now if first is None else min(first, now)), (now if last is None else max(last, now))
        self.history.append((prepared.record.id, instances_json, to_db(first), to_db(last), db_now, actor))

    def flush(self, session: Session) -> None:
        if not (self.upserts or self.attrs_only or self.history):
            return
        connection = session.connection()
        if connection.dialect.name == "postgresql":
            self._flush_postgres(connection)
            return
        if self.upserts:
            connection.exec_driver_sql(_SQLITE_ENTITY_UPSERT, self.upserts)
        if self.attrs_only:
            connection.exec_driver_sql(_SQLITE_ATTRS_UPDATE, self.attrs_only)
        if self.history:
            connection.exec_driver_sql(_SQLITE_HISTORY_INSERT, self.history)

    def _flush_postgres(self, connection: sa.Connection) -> None:
        # COPY into a session-local staging table, then one set-based statement per kind of change:
        # PostgreSQL spent about a third less on it than on an executemany of per-row upserts.
        cursor = connection.connection.driver_connection.cursor()  # type: ignore[union-attr]
        with cursor:
            if self.upserts or self.attrs_only:
                with cursor.copy(_POSTGRES_STAGE_COPY) as copy:
                    for row in self.upserts:
                        copy.write_row((*row, False))
                    for attrs_json, modified_at, entity_id in self.attrs_only:
                        copy.write_row((entity_id, *_NOTHING_BUT_ATTRS, attrs_json, None, modified_at, None, True))
                if self.upserts:
                    cursor.execute(_POSTGRES_ENTITY_UPSERT)
                if self.attrs_only:
                    cursor.execute(_POSTGRES_ATTRS_UPDATE)
            if self.history:
                with cursor.copy(_POSTGRES_HISTORY_COPY) as copy:
                    for row in self.history:
                        copy.write_row(row)


# Batch writes go through the driver: SQLAlchemy's per-row parameter processing (ORM bulk insert) cost about
# five times what SQLite itself spent on the rows. Values are converted exactly as the column types would
# (orjson for JSON, the dialect's own datetime processor), so reads through the ORM see no difference.
_ENTITY_INSERT = ("id", *ENTITY_COLUMNS[:-1], "created_at", "modified_at", "version")
_HISTORY_INSERT = ("entity_id", "instances", "observed_from", "observed_to", "recorded_at", "actor")
_ENTITY_ON_CONFLICT = (" ON CONFLICT (id) DO UPDATE SET "
                       + ", ".join(f"{name} = excluded.{name}" for name in ENTITY_COLUMNS)
                       + ", version = entities.version + 1")
_SQLITE_ENTITY_UPSERT = (f"INSERT INTO entities ({', '.join(_ENTITY_INSERT)}) "
                         f"VALUES ({', '.join('?' * len(_ENTITY_INSERT))})" + _ENTITY_ON_CONFLICT)
_SQLITE_ATTRS_UPDATE = "UPDATE entities SET attrs = ?, modified_at = ?, version = version + 1 WHERE id = ?"
_SQLITE_HISTORY_INSERT = (f"INSERT INTO entity_history ({', '.join(_HISTORY_INSERT)}) "
                          f"VALUES ({', '.join('?' * len(_HISTORY_INSERT))})")


def stage_entity_writes(dbapi_connection: Any, _record: Any = None) -> None:
    """Create the session-local staging table batch writes COPY into, on each new PostgreSQL connection
    (an engine "connect" listener): per batch, even "CREATE … IF NOT EXISTS" cost a catalog lookup and a
    notice. Its columns are the entities columns a write stages, typed from the model, all nullable (an
    attributes-only row carries its id, attrs and modified_at alone)."""
    from sqlalchemy.dialects import postgresql

    dialect = postgresql.dialect()
    columns = ", ".join(f"{name} {EntityRow.__table__.c[name].type.compile(dialect)}" for name in _ENTITY_INSERT)
    with dbapi_connection.cursor() as cursor:
        cursor.execute(f"CREATE TEMP TABLE IF NOT EXISTS entity_writes ({columns}, attrs_only boolean) "
                       "ON COMMIT DELETE ROWS")
    dbapi_connection.commit()


_POSTGRES_STAGE_COPY = f"COPY entity_writes ({', '.join(_ENTITY_INSERT)}, attrs_only) FROM STDIN"
# An attributes-only row stages its id, attrs and modified_at; the columns between id and attrs stay empty.
_NOTHING_BUT_ATTRS = (None,) * (_ENTITY_INSERT.index("attrs") - 1)
_POSTGRES_ENTITY_UPSERT = (f"INSERT INTO entities ({', '.join(_ENTITY_INSERT)}) SELECT {', '.join(_ENTITY_INSERT)} "
                           "FROM entity_writes WHERE NOT attrs_only" + _ENTITY_ON_CONFLICT)
_POSTGRES_ATTRS_UPDATE = ("UPDATE entities SET attrs = w.attrs, modified_at = w.modified_at, "
                          "version = entities.version + 1 FROM entity_writes w WHERE w.attrs_only AND entities.id = w.id")
_POSTGRES_HISTORY_COPY = f"COPY entity_history ({', '.join(_HISTORY_INSERT)}) FROM STDIN"


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
        self._fast = self._to_driver is not None and _sqlite_text(_PROBE_TIME) == self._slow(_PROBE_TIME)

    def _slow(self, moment: datetime) -> Any:
        value = self._column_type.process_bind_param(moment, self._dialect)
        return value if self._to_driver is None else self._to_driver(value)

    def __call__(self, moment: datetime | None) -> Any:
        if moment is None:
            return None
        value = self._seen.get(moment)
        if value is None:
            value = self._seen[moment] = _sqlite_text(moment) if self._fast else self._slow(moment)
        return value


# SQLAlchemy's SQLite DATETIME processor formats field by field (~5 µs); isoformat gives the same text in a
# fraction of that. _TimeBinder checks the two agree before it uses the fast one.
_PROBE_TIME = datetime(2026, 1, 2, 3, 4, 5, 60708, tzinfo=UTC)


def _sqlite_text(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(" ", "microseconds")[:26]


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


# A box holding more candidates than this is cheaper to answer by walking the entities in id order (the
# page fills after about limit / selectivity rows) than by fetching and sorting every candidate the
# spatial indexes return. The two costs meet near sqrt(limit × entities): 10,000 at a page of 100 in a
# million entities.
SPATIAL_CANDIDATES_MAX = 10_000

_ENTITY_SHAPES = sa.table("entity_shapes", sa.column("id"), sa.column("min_lon"), sa.column("max_lon"),
                          sa.column("min_lat"), sa.column("max_lat"))


def _box_literal(box: geo.BBox) -> Any:
    return sa.func.box(sa.func.point(box[0], box[1]), sa.func.point(box[2], box[3]))


# A box wider than this many longitude bands is left to the id-order walk (it spans a whole district).
POINT_BANDS_MAX = 200


def _corners_in(box: geo.BBox) -> Any:
    """Entities whose lower corner lies in `box`: latitude ranges of the (lon_band, min_lat, min_lon) B-tree,
    one per longitude band the box spans. That is every point in the box (a point's corners are equal) and some
    shapes (the shape index finds those anyway)."""
    bands = list(range(geo.lon_band(box[0]), geo.lon_band(box[2]) + 1))
    return sa.and_(EntityRow.lon_band.in_(bands), EntityRow.min_lat >= box[1], EntityRow.min_lat <= box[3],
                   EntityRow.min_lon >= box[0], EntityRow.min_lon <= box[2])


def _shapes_meeting(box: geo.BBox) -> Any:
    """SQLite: rowids of the shapes with extent whose box may overlap `box`, from the R*Tree (its 32-bit
    floats are rounded outwards: a few extra rows, never fewer; the exact column tests in _where decide)."""
    shapes = _ENTITY_SHAPES.c
    return sa.select(shapes.id).where(shapes.min_lon <= box[2], shapes.max_lon >= box[0],
                                      shapes.min_lat <= box[3], shapes.max_lat >= box[1])


def _sqlite_candidates(box: geo.BBox) -> Any:
    # Spelled out as a rowid set, so the planner starts from the spatial indexes whatever its statistics.
    return sa.union_all(sa.select(sa.literal_column("entities.rowid")).select_from(EntityRow).where(_corners_in(box)),
                        _shapes_meeting(box))


def _spatial_candidates(box: geo.BBox, dialect: str) -> Any:
    """A clause that holds for every entity whose box may overlap `box`, answered from the spatial indexes:
    points through the B-tree, shapes through the R*Tree (SQLite) or the partial GiST index (PostgreSQL)."""
    if dialect == "postgresql":
        shapes = sa.and_(sa.literal_column(POSTGRES_BOX).op("&&")(_box_literal(box)), sa.literal_column(HAS_EXTENT))
        return sa.or_(_corners_in(box), shapes)
    return sa.literal_column("entities.rowid").in_(_sqlite_candidates(box))


def _small_box(session: Session, query: EntityQuery) -> geo.BBox | None:
    """The query's box (bbox, or the box around `near`) with the fewest candidates, when the spatial indexes
    find at most SPATIAL_CANDIDATES_MAX for it; None when every box is large (or there is none)."""
    dialect = session.get_bind().dialect.name
    best: tuple[int, geo.BBox] | None = None
    for box in _boxes(query):
        if geo.lon_band(box[2]) - geo.lon_band(box[0]) >= POINT_BANDS_MAX:
            continue
        if dialect == "postgresql":
            candidates = sa.select(sa.literal(1)).select_from(EntityRow).where(_spatial_candidates(box, dialect))
        else:
            candidates = _sqlite_candidates(box)
        probe = candidates.limit(SPATIAL_CANDIDATES_MAX + 1).subquery()
        count = session.scalar(sa.select(sa.func.count()).select_from(probe)) or 0
        if count <= SPATIAL_CANDIDATES_MAX and (best is None or count < best[0]):
            best = (count, box)
    return None if best is None else best[1]


def _boxes(query: EntityQuery) -> list[geo.BBox]:
    boxes = [query.bbox] if query.bbox else []
    if query.near:
        boxes.append(geo.box_around(*query.near))
    return boxes


def _unindexed(column: Any) -> Any:
    """The column behind SQLite's unary +, which keeps the planner from driving a query through its index."""
    return sa.literal_column(f"+{column.table.name}.{column.name}", type_=column.type)


def _where(query: EntityQuery, dialect: str, spatial_box: geo.BBox | None = None) -> list[Any]:
    """The SQL filter of a query; with `spatial_box`, candidates come from the spatial indexes.

    A small box has at most SPATIAL_CANDIDATES_MAX candidates, so SQLite is told to start from them: left
    to itself it walked a type's whole index (200,000 rows at a million entities) testing each against them.
    """
    steer = spatial_box is not None and dialect == "sqlite"
    type_column = _unindexed(EntityRow.type) if steer else EntityRow.type
    org_column = _unindexed(EntityRow.org_unit) if steer else EntityRow.org_unit
    clauses: list[Any] = []
    if query.types:
        clauses.append(type_column.in_(query.types))
    if query.ids:
        clauses.append(EntityRow.id.in_(query.ids))
    if query.org_units is not None:
        clauses.append(org_column.in_(query.org_units))
    if query.q is not None:
        clauses.append(SqlCompiler(EntityRow.attrs, dialect).compile(query.q))
    if spatial_box is not None:
        clauses.append(_spatial_candidates(spatial_box, dialect))
    for box in _boxes(query):  # bounding-box overlap: exact for points, a pre-filter for other shapes
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


_PAGE_COLUMNS = (EntityRow.id, EntityRow.type, EntityRow.org_unit, EntityRow.location, EntityRow.attrs)


def query_entities(
    session: Session, *, query: EntityQuery, after: str | None, limit: int, sys_attrs: bool = False,
) -> tuple[list[sa.Row[Any]], str | None]:
    """One page of matching entities in id order, and the cursor of the next page (None at the end).

    Rows, not ORM objects, with what `row_to_ngsi` reads (the timestamps only with `sys_attrs`): loading
    a page as mapped objects cost more than the query itself."""
    dialect = session.get_bind().dialect.name
    needs_exact = bool(query.near) or bool(query.bbox)
    spatial_box = _small_box(session, query) if needs_exact else None
    columns = (*_PAGE_COLUMNS, EntityRow.created_at, EntityRow.modified_at) if sys_attrs else _PAGE_COLUMNS
    base = sa.select(*columns).where(*_where(query, dialect, spatial_box)).order_by(EntityRow.id)
    page: list[sa.Row[Any]] = []
    cursor = after
    # A box's SQL test is exact for points, and most entities are points; around `near` the box's corners
    # fall outside the circle (a fifth of the box), so fetch that much more and loop when it is not enough.
    chunk = limit + 1 + (limit // 4 if query.near else 0)
    while True:
        stmt = base.limit(chunk)
        if cursor is not None:
            stmt = stmt.where(EntityRow.id > cursor)
        rows = list(session.execute(stmt))
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
    stmt = sa.select(EntityRow.location).where(*_where(query, dialect, _small_box(session, query)))
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


@dataclass(frozen=True, slots=True)
class HistoryItem:
    """One attribute instance of an entity's history: `seq` is the change that wrote it (a change of several
    attributes yields several items with one seq, in attribute-name order)."""

    seq: int
    attribute: str
    instance: dict[str, Any]
    observed_at: datetime | None
    recorded_at: datetime
    actor: str


HISTORY_CHUNK = 500  # changes read per round while filling a page


def attribute_history(
    session: Session,
    *,
    entity_id: str,
    attributes: Iterable[str] = (),
    since: datetime | None = None,
    until: datetime | None = None,
    after: tuple[int, str] | None = None,
    limit: int = 100,
) -> list[HistoryItem]:
    """Attribute instances of one entity in arrival order, after the (seq, attribute) cursor `after`.

    `since`/`until` bound the observation time (observedAt, or the arrival time for an instance without
    one); the SQL keeps only changes whose observation span meets the window, the exact test is per item.
    """
    names = set(attributes)
    stmt = sa.select(EntityHistoryRow).where(EntityHistoryRow.entity_id == entity_id)
    if since is not None:
        stmt = stmt.where(EntityHistoryRow.observed_to >= since)
    if until is not None:
        stmt = stmt.where(EntityHistoryRow.observed_from < until)
    items: list[HistoryItem] = []
    after_seq, after_attribute = after if after is not None else (None, None)
    while True:
        page = stmt if after_seq is None else stmt.where(EntityHistoryRow.seq >= after_seq)
        rows = list(session.scalars(page.order_by(EntityHistoryRow.seq).limit(HISTORY_CHUNK)))
        for row in rows:
            for name in sorted(row.instances):
                if row.seq == after_seq and after_attribute is not None and name <= after_attribute:
                    continue
                if names and name not in names:
                    continue
                instance = row.instances[name]
                observed_at = parse_datetime(instance.get("observedAt"))
                moment = observed_at or row.recorded_at
                if (since is not None and moment < since) or (until is not None and moment >= until):
                    continue
                items.append(HistoryItem(row.seq, name, instance, observed_at, row.recorded_at, row.actor))
                if len(items) == limit:
                    return items
        if len(rows) < HISTORY_CHUNK:
            return items
        after_seq, after_attribute = rows[-1].seq + 1, None
