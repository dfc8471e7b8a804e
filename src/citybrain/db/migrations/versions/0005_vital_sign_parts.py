"""sensing: per-shard parts of vital signs

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-04

* `vital_sign_parts`: with devices split over N ingest workers by town, a district's indicator is the sum
  of the workers' numerators over the sum of their denominators; each worker writes its part here and the
  one that completes a moment writes the value to `vital_signs`.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('vital_sign_parts',
    sa.Column('org_unit', sa.String(length=64), nullable=False),
    sa.Column('indicator', sa.String(length=64), nullable=False),
    sa.Column('ts', sa.DateTime(timezone=True), nullable=False),
    sa.Column('shard', sa.Integer(), nullable=False),
    sa.Column('shards', sa.Integer(), nullable=False),
    sa.Column('numerator', sa.Float(), nullable=False),
    sa.Column('denominator', sa.Float(), nullable=True),
    sa.PrimaryKeyConstraint('org_unit', 'indicator', 'ts', 'shard', name=op.f('pk_vital_sign_parts'))
    )


def downgrade() -> None:
    op.drop_table('vital_sign_parts')
