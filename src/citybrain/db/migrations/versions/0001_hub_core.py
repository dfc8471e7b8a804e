"""hub core: entities, history, types, org units

Revision ID: 0001
Revises: 
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
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
    with op.batch_alter_table('attribute_history', schema=None) as batch_op:
        batch_op.create_index('ix_attribute_history_entity_attr_seq', ['entity_id', 'attribute', 'seq'], unique=False)

    op.create_table('entities',
    sa.Column('id', sa.String(length=512), nullable=False),
    sa.Column('type', sa.String(length=128), nullable=False),
    sa.Column('org_unit', sa.String(length=64), nullable=True),
    sa.Column('location', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=True),
    sa.Column('min_lon', sa.Float(), nullable=True),
    sa.Column('min_lat', sa.Float(), nullable=True),
    sa.Column('max_lon', sa.Float(), nullable=True),
    sa.Column('max_lat', sa.Float(), nullable=True),
    sa.Column('attrs', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('modified_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_entities'))
    )
    with op.batch_alter_table('entities', schema=None) as batch_op:
        batch_op.create_index('ix_entities_min_lon_min_lat', ['min_lon', 'min_lat'], unique=False)
        batch_op.create_index('ix_entities_org_unit', ['org_unit'], unique=False)
        batch_op.create_index('ix_entities_type_id', ['type', 'id'], unique=False)

    op.create_table('entity_types',
    sa.Column('name', sa.String(length=128), nullable=False),
    sa.Column('spec', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('name', name=op.f('pk_entity_types'))
    )
    op.create_table('org_units',
    sa.Column('code', sa.String(length=64), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('name_en', sa.String(length=200), nullable=True),
    sa.Column('kind', sa.String(length=32), nullable=False),
    sa.Column('level', sa.Integer(), nullable=False),
    sa.Column('parent_code', sa.String(length=64), nullable=True),
    sa.Column('path', sa.String(length=400), nullable=False),
    sa.Column('attributes', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['parent_code'], ['org_units.code'], name=op.f('fk_org_units_parent_code_org_units')),
    sa.PrimaryKeyConstraint('code', name=op.f('pk_org_units'))
    )
    with op.batch_alter_table('org_units', schema=None) as batch_op:
        batch_op.create_index('ix_org_units_kind', ['kind'], unique=False)
        batch_op.create_index('ix_org_units_parent_code', ['parent_code'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('org_units', schema=None) as batch_op:
        batch_op.drop_index('ix_org_units_parent_code')
        batch_op.drop_index('ix_org_units_kind')

    op.drop_table('org_units')
    op.drop_table('entity_types')
    with op.batch_alter_table('entities', schema=None) as batch_op:
        batch_op.drop_index('ix_entities_type_id')
        batch_op.drop_index('ix_entities_org_unit')
        batch_op.drop_index('ix_entities_min_lon_min_lat')

    op.drop_table('entities')
    with op.batch_alter_table('attribute_history', schema=None) as batch_op:
        batch_op.drop_index('ix_attribute_history_entity_attr_seq')

    op.drop_table('attribute_history')
