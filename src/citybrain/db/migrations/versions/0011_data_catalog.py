"""data catalog: datasets with owner, classification, schema and quality rules; lineage; quality scores

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-04

* `datasets`: every dataset the platform holds or receives (entity types, telemetry streams, cases,
  complaints, imported files), its owner department, classification, fields, source and quality rules.
* `dataset_lineage`: which dataset feeds which, through what process.
* `quality_scores`: per dataset, rule and hour, the records checked and the records that passed.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), 'postgresql')


def upgrade() -> None:
    op.create_table('datasets',
    sa.Column('id', sa.String(length=200), nullable=False),
    sa.Column('kind', sa.String(length=32), nullable=False),
    sa.Column('title', sa.String(length=200), nullable=False),
    sa.Column('title_zh', sa.String(length=200), nullable=False),
    sa.Column('owner', sa.String(length=64), nullable=False),
    sa.Column('classification', sa.String(length=16), nullable=False),
    sa.Column('fields', JSON, nullable=False),
    sa.Column('source', sa.String(length=500), nullable=False),
    sa.Column('rules', JSON, nullable=False),
    sa.Column('managed', sa.Boolean(), nullable=False),
    sa.Column('registered_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_by', sa.String(length=200), nullable=False),
    sa.Column('last_ingest_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('checked_until', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_datasets'))
    )
    op.create_table('dataset_lineage',
    sa.Column('upstream', sa.String(length=200), nullable=False),
    sa.Column('downstream', sa.String(length=200), nullable=False),
    sa.Column('process', sa.String(length=200), nullable=False),
    sa.Column('managed', sa.Boolean(), nullable=False),
    sa.Column('recorded_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('upstream', 'downstream', name=op.f('pk_dataset_lineage'))
    )
    op.create_index('ix_dataset_lineage_downstream', 'dataset_lineage', ['downstream'], unique=False)
    op.create_table('quality_scores',
    sa.Column('dataset_id', sa.String(length=200), nullable=False),
    sa.Column('rule_id', sa.String(length=64), nullable=False),
    sa.Column('hour', sa.DateTime(timezone=True), nullable=False),
    sa.Column('checked', sa.BigInteger(), nullable=False),
    sa.Column('passed', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('dataset_id', 'rule_id', 'hour', name=op.f('pk_quality_scores'))
    )


def downgrade() -> None:
    op.drop_table('quality_scores')
    op.drop_index('ix_dataset_lineage_downstream', table_name='dataset_lineage')
    op.drop_table('dataset_lineage')
    op.drop_table('datasets')
