"""traffic plans: signal plans checked on a forked twin, with prediction and outcome

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-04

* `traffic_plans`: one row per plan (controller or timing change for some intersections), its state,
  the predicted delay/throughput of baseline and candidate, and the measured outcome (JSON; JSONB on
  PostgreSQL).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), 'postgresql')


def upgrade() -> None:
    op.create_table('traffic_plans',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('scenario', sa.String(length=128), nullable=False),
    sa.Column('intersections', JSON, nullable=False),
    sa.Column('controller', sa.String(length=64), nullable=True),
    sa.Column('timing', JSON, nullable=True),
    sa.Column('horizon_s', sa.Float(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('reason', sa.Text(), nullable=True),
    sa.Column('prediction', JSON, nullable=True),
    sa.Column('outcome', JSON, nullable=True),
    sa.Column('commands', JSON, nullable=False),
    sa.Column('applied_sim_time', sa.Float(), nullable=True),
    sa.Column('history', JSON, nullable=False),
    sa.Column('created_by', sa.String(length=200), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_traffic_plans'))
    )
    op.create_index('ix_traffic_plans_status', 'traffic_plans', ['status'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_traffic_plans_status', table_name='traffic_plans')
    op.drop_table('traffic_plans')
