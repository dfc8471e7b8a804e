"""hub: spatial index for shapes, org-unit + type index, history as one row per change

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01

* Bounding-box queries scanned half the table at a million entities: a (min_lon, min_lat) B-tree bounds only
  one side of an overlap test for shapes that have extent. Points (min = max) get a (lon_band, min_lat)
  B-tree instead (a box reads a few 0.01° bands, not a whole longitude slab); shapes (lines, polygons) get
  a spatial index of their own: an R*Tree virtual
  table `entity_shapes` on SQLite (keyed by the entity's rowid, kept in step by triggers) and a partial
  GiST index on PostgreSQL. Points stay out of both, because an R*Tree insert cost about twice what a
  B-tree insert did, and most city entities (stations, devices, lamps, bins) are points.
* `(org_unit)` becomes `(org_unit, type, id)`, so "this type in this village, in id order" is one range.
* PostgreSQL keeps 30 % of each entities page free, so attribute updates can be HOT updates.
* `attribute_history` (a row per attribute instance) becomes `entity_history` (a row per change holding the
  instances it wrote). Every old row carries over as a change of one attribute, with its seq, so history
  pages and their order stay as they were.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None

POSTGRES_BOX = "box(point(min_lon, min_lat), point(max_lon, max_lat))"
HAS_EXTENT = "(min_lon < max_lon OR min_lat < max_lat)"
BOX_COLUMNS = "min_lon, max_lon, min_lat, max_lat"  # the R*Tree's column order: each dimension's min, max


def _extent(row: str) -> str:
    return f"({row}.min_lon < {row}.max_lon OR {row}.min_lat < {row}.max_lat)"


# An update fires the trigger only when the box really moved: an upsert sets every column, and
# re-indexing an unchanged box would cost as much as indexing a new one.
SQLITE_SPATIAL = [
    f"CREATE VIRTUAL TABLE entity_shapes USING rtree(id, {BOX_COLUMNS})",
    f"""CREATE TRIGGER entities_shape_insert AFTER INSERT ON entities WHEN {_extent('new')} BEGIN
        INSERT INTO entity_shapes (id, {BOX_COLUMNS}) VALUES (new.rowid, new.min_lon, new.max_lon, new.min_lat,
        new.max_lat); END""",
    f"""CREATE TRIGGER entities_shape_update AFTER UPDATE OF min_lon, min_lat, max_lon, max_lat ON entities
        WHEN old.min_lon IS NOT new.min_lon OR old.min_lat IS NOT new.min_lat OR old.max_lon IS NOT new.max_lon
          OR old.max_lat IS NOT new.max_lat BEGIN
        DELETE FROM entity_shapes WHERE id = old.rowid;
        INSERT INTO entity_shapes (id, {BOX_COLUMNS}) SELECT new.rowid, new.min_lon, new.max_lon, new.min_lat,
        new.max_lat WHERE {_extent('new')}; END""",
    f"""CREATE TRIGGER entities_shape_delete AFTER DELETE ON entities WHEN {_extent('old')} BEGIN
        DELETE FROM entity_shapes WHERE id = old.rowid; END""",
    f"INSERT INTO entity_shapes (id, {BOX_COLUMNS}) SELECT rowid, {BOX_COLUMNS} FROM entities WHERE {HAS_EXTENT}",
]
SQLITE_SPATIAL_DROP = ["DROP TRIGGER IF EXISTS entities_shape_insert", "DROP TRIGGER IF EXISTS entities_shape_update",
                       "DROP TRIGGER IF EXISTS entities_shape_delete", "DROP TABLE IF EXISTS entity_shapes"]


def upgrade() -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    with op.batch_alter_table('entities', schema=None) as batch_op:
        batch_op.add_column(sa.Column('lon_band', sa.Integer(), nullable=True))
        batch_op.drop_index('ix_entities_org_unit')
        batch_op.drop_index('ix_entities_min_lon_min_lat')
        batch_op.create_index('ix_entities_org_unit_type_id', ['org_unit', 'type', 'id'], unique=False)
    # geo.lon_band in SQL: (lon + 180) · 100 is positive, so truncation is the floor on both backends.
    truncate = "CAST({} AS INTEGER)" if sqlite else "floor({})::integer"
    op.execute(f"UPDATE entities SET lon_band = {truncate.format('(min_lon + 180.0) * 100')} "
               "WHERE min_lon IS NOT NULL")
    with op.batch_alter_table('entities', schema=None) as batch_op:
        batch_op.create_index('ix_entities_lon_band_min_lat_min_lon', ['lon_band', 'min_lat', 'min_lon'], unique=False)
    if sqlite:
        for statement in SQLITE_SPATIAL:
            op.execute(statement)
    else:
        op.execute(f"CREATE INDEX ix_entities_shape_box ON entities USING gist ({POSTGRES_BOX}) WHERE {HAS_EXTENT}")
        # Room in each page for the next version of a row, so that an update of attributes alone (no indexed
        # column) stays on its page as a HOT update instead of adding an entry to every index: at 100 %
        # 0.3 % of such updates were HOT, at 70 % half of them, and the update cost 45 % less.
        op.execute("ALTER TABLE entities SET (fillfactor = 70)")

    op.create_table('entity_history',
    sa.Column('seq', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('entity_id', sa.String(length=512), nullable=False),
    sa.Column('instances', sa.JSON(), nullable=False),
    sa.Column('observed_from', sa.DateTime(timezone=True), nullable=False),
    sa.Column('observed_to', sa.DateTime(timezone=True), nullable=False),
    sa.Column('recorded_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('actor', sa.String(length=256), nullable=False),
    sa.PrimaryKeyConstraint('seq', name=op.f('pk_entity_history'))
    )
    instances = "json_object(attribute, json(instance))" if sqlite else "json_build_object(attribute, instance)"
    op.execute("INSERT INTO entity_history (seq, entity_id, instances, observed_from, observed_to, recorded_at, "
               f"actor) SELECT seq, entity_id, {instances}, coalesce(observed_at, recorded_at), "
               "coalesce(observed_at, recorded_at), recorded_at, actor FROM attribute_history ORDER BY seq")
    if not sqlite:
        op.execute("SELECT setval(pg_get_serial_sequence('entity_history', 'seq'), "
                   "coalesce((SELECT max(seq) FROM entity_history), 0) + 1, false)")
    with op.batch_alter_table('entity_history', schema=None) as batch_op:
        batch_op.create_index('ix_entity_history_entity_id_seq', ['entity_id', 'seq'], unique=False)
    with op.batch_alter_table('attribute_history', schema=None) as batch_op:
        batch_op.drop_index('ix_attribute_history_entity_attr_seq')
    op.drop_table('attribute_history')


def downgrade() -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    op.create_table('attribute_history',
    sa.Column('seq', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('entity_id', sa.String(length=512), nullable=False),
    sa.Column('attribute', sa.String(length=128), nullable=False),
    sa.Column('instance', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('observed_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('recorded_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('actor', sa.String(length=256), nullable=False),
    sa.PrimaryKeyConstraint('seq', name=op.f('pk_attribute_history'))
    )
    # A change of several attributes becomes several rows (new seqs); observedAt comes from each instance.
    if sqlite:
        observed = "nullif(h.observed_from, h.recorded_at)"  # SQLite keeps no zone-aware time to cast to
        instance = "a.value"
    else:
        observed = "(a.value ->> 'observedAt')::timestamptz"
        instance = "a.value::jsonb"
    op.execute("INSERT INTO attribute_history (entity_id, attribute, instance, observed_at, recorded_at, actor) "
               f"SELECT h.entity_id, a.key, {instance}, {observed}, h.recorded_at, h.actor "
               "FROM entity_history h, json_each(h.instances) a ORDER BY h.seq, a.key")
    with op.batch_alter_table('attribute_history', schema=None) as batch_op:
        batch_op.create_index('ix_attribute_history_entity_attr_seq', ['entity_id', 'attribute', 'seq'], unique=False)
    with op.batch_alter_table('entity_history', schema=None) as batch_op:
        batch_op.drop_index('ix_entity_history_entity_id_seq')
    op.drop_table('entity_history')
    if sqlite:
        for statement in SQLITE_SPATIAL_DROP:
            op.execute(statement)
    else:
        op.execute("DROP INDEX IF EXISTS ix_entities_shape_box")
        op.execute("ALTER TABLE entities RESET (fillfactor)")
    with op.batch_alter_table('entities', schema=None) as batch_op:
        batch_op.drop_index('ix_entities_lon_band_min_lat_min_lon')
        batch_op.drop_index('ix_entities_org_unit_type_id')
        batch_op.create_index('ix_entities_org_unit', ['org_unit'], unique=False)
        batch_op.create_index('ix_entities_min_lon_min_lat', ['min_lon', 'min_lat'], unique=False)
        batch_op.drop_column('lon_band')
