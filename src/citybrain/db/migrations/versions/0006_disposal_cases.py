"""disposal: cases, their transitions and reports, supervision tasks, routing rules

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-04

* `cases`: one row per case; the running SLA stage's deadline and warning time are columns (`due_at`,
  `warn_at`, indexed and cleared once fired), so the timer scan reads only what is due.
* `case_transitions`: every step with actor, time, reason, data and attachments.
* `case_reports`: every report of a case's problem (the first and the merged duplicates), with the
  reporter's contact and verdict.
* `supervision_tasks`: the big loop's tasks for departments.
* `routing_rules`: every version of the routing rules.
* `case_counters`: the next case number of each day.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('case_counters',
    sa.Column('day', sa.String(length=8), nullable=False),
    sa.Column('next', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('day', name=op.f('pk_case_counters'))
    )
    op.create_table('case_reports',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('case_id', sa.String(length=36), nullable=False),
    sa.Column('channel', sa.String(length=16), nullable=False),
    sa.Column('external_id', sa.String(length=160), nullable=True),
    sa.Column('text', sa.Text(), nullable=False),
    sa.Column('contact_name', sa.String(length=100), nullable=True),
    sa.Column('contact_phone', sa.String(length=40), nullable=True),
    sa.Column('contact_email', sa.String(length=200), nullable=True),
    sa.Column('address', sa.String(length=400), nullable=True),
    sa.Column('lon', sa.Float(), nullable=True),
    sa.Column('lat', sa.Float(), nullable=True),
    sa.Column('org_unit', sa.String(length=64), nullable=True),
    sa.Column('reported_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('classified_as', sa.String(length=16), nullable=True),
    sa.Column('confidence', sa.Float(), nullable=True),
    sa.Column('contacted_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('resolved', sa.Boolean(), nullable=True),
    sa.Column('satisfied', sa.Boolean(), nullable=True),
    sa.Column('feedback_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('feedback', sa.Text(), nullable=True),
    sa.Column('data', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_case_reports'))
    )
    with op.batch_alter_table('case_reports', schema=None) as batch_op:
        batch_op.create_index('ix_case_reports_case_id', ['case_id'], unique=False)
        batch_op.create_index('ix_case_reports_channel_external_id', ['channel', 'external_id'], unique=False)
        batch_op.create_index('ix_case_reports_reported_at', ['reported_at'], unique=False)

    op.create_table('case_transitions',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('case_id', sa.String(length=36), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('action', sa.String(length=16), nullable=False),
    sa.Column('from_status', sa.String(length=16), nullable=True),
    sa.Column('to_status', sa.String(length=16), nullable=False),
    sa.Column('actor', sa.String(length=256), nullable=False),
    sa.Column('reason', sa.Text(), nullable=True),
    sa.Column('data', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('attachments', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('context_id', sa.String(length=36), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_case_transitions'))
    )
    with op.batch_alter_table('case_transitions', schema=None) as batch_op:
        batch_op.create_index('ix_case_transitions_case_id_id', ['case_id', 'id'], unique=False)

    op.create_table('cases',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('number', sa.String(length=32), nullable=False),
    sa.Column('event_type', sa.String(length=16), nullable=False),
    sa.Column('category', sa.String(length=32), nullable=False),
    sa.Column('title', sa.String(length=200), nullable=False),
    sa.Column('description', sa.Text(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('suspended_from', sa.String(length=16), nullable=True),
    sa.Column('priority', sa.String(length=16), nullable=False),
    sa.Column('level', sa.String(length=16), nullable=False),
    sa.Column('org_unit', sa.String(length=64), nullable=True),
    sa.Column('handling_unit', sa.String(length=64), nullable=True),
    sa.Column('lead_department', sa.String(length=32), nullable=False),
    sa.Column('assisting', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('channel', sa.String(length=16), nullable=False),
    sa.Column('source_ref', sa.String(length=160), nullable=True),
    sa.Column('lon', sa.Float(), nullable=True),
    sa.Column('lat', sa.Float(), nullable=True),
    sa.Column('cell', sa.String(length=16), nullable=True),
    sa.Column('address', sa.String(length=400), nullable=True),
    sa.Column('stage', sa.String(length=8), nullable=True),
    sa.Column('stage_started_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('due_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('warn_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('stage_due_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('warned_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('breached_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('suspended_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('escalations', sa.Integer(), nullable=False),
    sa.Column('returns', sa.Integer(), nullable=False),
    sa.Column('reopens', sa.Integer(), nullable=False),
    sa.Column('reports', sa.Integer(), nullable=False),
    sa.Column('breaches', sa.Integer(), nullable=False),
    sa.Column('merged_into', sa.String(length=36), nullable=True),
    sa.Column('resolution', sa.String(length=16), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('dispatched_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('received_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('handled_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('closed_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('responded_on_time', sa.Boolean(), nullable=True),
    sa.Column('handled_on_time', sa.Boolean(), nullable=True),
    sa.Column('closed_on_time', sa.Boolean(), nullable=True),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_cases')),
    sa.UniqueConstraint('number', name=op.f('uq_cases_number'))
    )
    with op.batch_alter_table('cases', schema=None) as batch_op:
        batch_op.create_index('ix_cases_cell_event_type', ['cell', 'event_type'], unique=False)
        batch_op.create_index('ix_cases_created_at', ['created_at'], unique=False)
        batch_op.create_index('ix_cases_due_at', ['due_at'], unique=False)
        batch_op.create_index('ix_cases_event_type_created_at', ['event_type', 'created_at'], unique=False)
        batch_op.create_index('ix_cases_lead_department_created_at', ['lead_department', 'created_at'], unique=False)
        batch_op.create_index('ix_cases_org_unit_created_at', ['org_unit', 'created_at'], unique=False)
        batch_op.create_index('ix_cases_source_ref', ['source_ref'], unique=False)
        batch_op.create_index('ix_cases_status_handling_unit', ['status', 'handling_unit'], unique=False)
        batch_op.create_index('ix_cases_warn_at', ['warn_at'], unique=False)

    op.create_table('routing_rules',
    sa.Column('version', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('rules', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('actor', sa.String(length=256), nullable=False),
    sa.PrimaryKeyConstraint('version', name=op.f('pk_routing_rules'))
    )
    op.create_table('supervision_tasks',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('kind', sa.String(length=24), nullable=False),
    sa.Column('key', sa.String(length=200), nullable=False),
    sa.Column('department', sa.String(length=32), nullable=False),
    sa.Column('event_type', sa.String(length=16), nullable=True),
    sa.Column('org_unit', sa.String(length=64), nullable=True),
    sa.Column('cell', sa.String(length=16), nullable=True),
    sa.Column('title', sa.String(length=300), nullable=False),
    sa.Column('evidence', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('opened_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('due_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('closed_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('note', sa.Text(), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_supervision_tasks'))
    )
    with op.batch_alter_table('supervision_tasks', schema=None) as batch_op:
        batch_op.create_index('ix_supervision_tasks_department_status', ['department', 'status'], unique=False)
        batch_op.create_index('ix_supervision_tasks_key_status', ['key', 'status'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('supervision_tasks', schema=None) as batch_op:
        batch_op.drop_index('ix_supervision_tasks_key_status')
        batch_op.drop_index('ix_supervision_tasks_department_status')

    op.drop_table('supervision_tasks')
    op.drop_table('routing_rules')
    with op.batch_alter_table('cases', schema=None) as batch_op:
        batch_op.drop_index('ix_cases_warn_at')
        batch_op.drop_index('ix_cases_status_handling_unit')
        batch_op.drop_index('ix_cases_source_ref')
        batch_op.drop_index('ix_cases_org_unit_created_at')
        batch_op.drop_index('ix_cases_lead_department_created_at')
        batch_op.drop_index('ix_cases_event_type_created_at')
        batch_op.drop_index('ix_cases_due_at')
        batch_op.drop_index('ix_cases_created_at')
        batch_op.drop_index('ix_cases_cell_event_type')

    op.drop_table('cases')
    with op.batch_alter_table('case_transitions', schema=None) as batch_op:
        batch_op.drop_index('ix_case_transitions_case_id_id')

    op.drop_table('case_transitions')
    with op.batch_alter_table('case_reports', schema=None) as batch_op:
        batch_op.drop_index('ix_case_reports_reported_at')
        batch_op.drop_index('ix_case_reports_channel_external_id')
        batch_op.drop_index('ix_case_reports_case_id')

    op.drop_table('case_reports')
    op.drop_table('case_counters')
