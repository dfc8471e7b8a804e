"""data sharing between departments: a request for a dataset, the owner's grant (fields, org units, expiry)

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = '0012'
down_revision = '0011'
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), 'postgresql')


def upgrade() -> None:
    op.create_table('data_shares',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('dataset_id', sa.String(length=200), nullable=False),
    sa.Column('requester', sa.String(length=64), nullable=False),
    sa.Column('owner', sa.String(length=64), nullable=False),
    sa.Column('purpose', sa.String(length=500), nullable=False),
    sa.Column('fields', JSON, nullable=False),
    sa.Column('org_scope', JSON, nullable=True),
    sa.Column('until', sa.DateTime(timezone=True), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('requested_by', sa.String(length=200), nullable=False),
    sa.Column('requested_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('decided_by', sa.String(length=200), nullable=True),
    sa.Column('decided_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('reason', sa.String(length=500), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_data_shares'))
    )
    op.create_index('ix_data_shares_dataset_id_status', 'data_shares', ['dataset_id', 'status'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_data_shares_dataset_id_status', table_name='data_shares')
    op.drop_table('data_shares')
