"""catalogue: the event catalogue (一张清单)

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-04

* `catalogue_entries`: one row per event type, its spec as JSON (JSONB on PostgreSQL); `source` is
  `scenario:<slug>` for shipped entries or `import:<file>` for the city's own.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('catalogue_entries',
    sa.Column('code', sa.String(length=16), nullable=False),
    sa.Column('spec', sa.JSON().with_variant(postgresql.JSONB(), 'postgresql'), nullable=False),
    sa.Column('source', sa.String(length=256), nullable=False),
    sa.Column('enabled', sa.Boolean(), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('code', name=op.f('pk_catalogue_entries'))
    )


def downgrade() -> None:
    op.drop_table('catalogue_entries')
