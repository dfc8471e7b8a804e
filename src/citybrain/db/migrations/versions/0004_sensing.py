"""sensing: device registry, telemetry dead letters, alerts, vital signs

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01

* `devices`: the registry. `num` is the integer id of the hot path, `(device_type, local)` the position in
  the type's state arrays; both unique and never reused.
* `telemetry_dead_letters`: messages the ingest refused, with the reason.
* `alerts`: one row per alert, from raise to clear.
* `vital_signs`: indicator time series per org unit.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('alerts',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('device_type', sa.String(length=41), nullable=False),
    sa.Column('rule_id', sa.String(length=64), nullable=False),
    sa.Column('subject', sa.String(length=64), nullable=False),
    sa.Column('subject_kind', sa.String(length=8), nullable=False),
    sa.Column('org_unit', sa.String(length=64), nullable=True),
    sa.Column('severity', sa.String(length=8), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('title', sa.String(length=256), nullable=False),
    sa.Column('raised_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('cleared_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('raises', sa.Integer(), nullable=False),
    sa.Column('value', sa.Float(), nullable=True),
    sa.Column('reading', sa.JSON().with_variant(postgresql.JSONB(), 'postgresql'), nullable=False),
    sa.Column('assignee', sa.String(length=256), nullable=True),
    sa.Column('acknowledged_by', sa.String(length=256), nullable=True),
    sa.Column('acknowledged_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_alerts'))
    )
    with op.batch_alter_table('alerts', schema=None) as batch_op:
        batch_op.create_index('ix_alerts_org_unit_status', ['org_unit', 'status'], unique=False)
        batch_op.create_index('ix_alerts_rule_subject', ['device_type', 'rule_id', 'subject'], unique=False)
        batch_op.create_index('ix_alerts_status_severity', ['status', 'severity'], unique=False)

    op.create_table('devices',
    sa.Column('num', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('device_id', sa.String(length=64), nullable=False),
    sa.Column('device_type', sa.String(length=41), nullable=False),
    sa.Column('local', sa.Integer(), nullable=False),
    sa.Column('org_unit', sa.String(length=64), nullable=True),
    sa.Column('lon', sa.Float(), nullable=True),
    sa.Column('lat', sa.Float(), nullable=True),
    sa.Column('secret_hash', sa.String(length=64), nullable=False),
    sa.Column('enabled', sa.Boolean(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('last_seen_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('num', name=op.f('pk_devices')),
    sa.UniqueConstraint('device_id', name=op.f('uq_devices_device_id')),
    sa.UniqueConstraint('device_type', 'local', name=op.f('uq_devices_device_type_local'))
    )
    with op.batch_alter_table('devices', schema=None) as batch_op:
        batch_op.create_index('ix_devices_org_unit_device_type', ['org_unit', 'device_type'], unique=False)

    op.create_table('telemetry_dead_letters',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('received_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('source', sa.String(length=16), nullable=False),
    sa.Column('topic', sa.String(length=512), nullable=False),
    sa.Column('device_id', sa.String(length=64), nullable=True),
    sa.Column('reason', sa.String(length=512), nullable=False),
    sa.Column('payload', sa.LargeBinary(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_telemetry_dead_letters'))
    )
    with op.batch_alter_table('telemetry_dead_letters', schema=None) as batch_op:
        batch_op.create_index('ix_telemetry_dead_letters_received_at', ['received_at'], unique=False)

    op.create_table('vital_signs',
    sa.Column('org_unit', sa.String(length=64), nullable=False),
    sa.Column('indicator', sa.String(length=64), nullable=False),
    sa.Column('ts', sa.DateTime(timezone=True), nullable=False),
    sa.Column('value', sa.Float(), nullable=True),
    sa.PrimaryKeyConstraint('org_unit', 'indicator', 'ts', name=op.f('pk_vital_signs'))
    )


def downgrade() -> None:
    op.drop_table('vital_signs')
    with op.batch_alter_table('telemetry_dead_letters', schema=None) as batch_op:
        batch_op.drop_index('ix_telemetry_dead_letters_received_at')

    op.drop_table('telemetry_dead_letters')
    with op.batch_alter_table('devices', schema=None) as batch_op:
        batch_op.drop_index('ix_devices_org_unit_device_type')

    op.drop_table('devices')
    with op.batch_alter_table('alerts', schema=None) as batch_op:
        batch_op.drop_index('ix_alerts_status_severity')
        batch_op.drop_index('ix_alerts_rule_subject')
        batch_op.drop_index('ix_alerts_org_unit_status')

    op.drop_table('alerts')
