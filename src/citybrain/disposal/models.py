"""Cases (工单), their transitions, the reports that raised them, supervision tasks and routing rules."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from citybrain.db.base import Base, JSONType, UTCDateTime

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


class CaseRow(Base):
    """One city event being disposed of, from report to verified closure.

    The SLA timer of the running stage lives on the row: `due_at` is set while a stage runs and cleared
    once it is breached, `warn_at` likewise once warned, so the timer scan reads only the rows it must act
    on, through their indexes, and a restart finds every timer where it was."""

    __tablename__ = "cases"

    id: Mapped[str] = mapped_column(sa.String(36), primary_key=True)
    number: Mapped[str] = mapped_column(sa.String(32), unique=True)
    event_type: Mapped[str] = mapped_column(sa.String(16))
    category: Mapped[str] = mapped_column(sa.String(32))
    title: Mapped[str] = mapped_column(sa.String(200))
    description: Mapped[str] = mapped_column(sa.Text, default="")
    status: Mapped[str] = mapped_column(sa.String(16))
    suspended_from: Mapped[str | None] = mapped_column(sa.String(16))
    priority: Mapped[str] = mapped_column(sa.String(16))
    level: Mapped[str] = mapped_column(sa.String(16))  # village | town | district: who handles it now
    org_unit: Mapped[str | None] = mapped_column(sa.String(64))  # where it happened (most precise unit)
    handling_unit: Mapped[str | None] = mapped_column(sa.String(64))  # the station / centre at `level`
    lead_department: Mapped[str] = mapped_column(sa.String(32))
    assisting: Mapped[list[str]] = mapped_column(JSONType, default=list)
    channel: Mapped[str] = mapped_column(sa.String(16))
    source_ref: Mapped[str | None] = mapped_column(sa.String(160))  # alert, device, 311 request …
    lon: Mapped[float | None] = mapped_column(sa.Float)
    lat: Mapped[float | None] = mapped_column(sa.Float)
    cell: Mapped[str | None] = mapped_column(sa.String(16))  # H3 cell (resolution 9) for hotspots
    address: Mapped[str | None] = mapped_column(sa.String(400))
    stage: Mapped[str | None] = mapped_column(sa.String(8))  # respond | handle | close
    stage_started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    due_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    warn_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    stage_due_at: Mapped[datetime | None] = mapped_column(UTCDateTime)  # kept after a breach, for reports
    warned_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    breached_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    suspended_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    escalations: Mapped[int] = mapped_column(sa.Integer, default=0)
    returns: Mapped[int] = mapped_column(sa.Integer, default=0)
    reopens: Mapped[int] = mapped_column(sa.Integer, default=0)
    reports: Mapped[int] = mapped_column(sa.Integer, default=1)
    breaches: Mapped[int] = mapped_column(sa.Integer, default=0)
    merged_into: Mapped[str | None] = mapped_column(sa.String(36))
    resolution: Mapped[str | None] = mapped_column(sa.String(16))  # resolved | dismissed | merged
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    dispatched_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    received_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    handled_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    responded_on_time: Mapped[bool | None] = mapped_column(sa.Boolean)
    handled_on_time: Mapped[bool | None] = mapped_column(sa.Boolean)
    closed_on_time: Mapped[bool | None] = mapped_column(sa.Boolean)
    version: Mapped[int] = mapped_column(sa.Integer, default=1)

    __table_args__ = (
        sa.Index("ix_cases_due_at", "due_at"),
        sa.Index("ix_cases_warn_at", "warn_at"),
        sa.Index("ix_cases_status_handling_unit", "status", "handling_unit"),
        sa.Index("ix_cases_event_type_created_at", "event_type", "created_at"),
        sa.Index("ix_cases_lead_department_created_at", "lead_department", "created_at"),
        sa.Index("ix_cases_org_unit_created_at", "org_unit", "created_at"),
        sa.Index("ix_cases_created_at", "created_at"),
        sa.Index("ix_cases_source_ref", "source_ref"),
        sa.Index("ix_cases_cell_event_type", "cell", "event_type"),
    )


class CaseTransitionRow(Base):
    """One step of a case: the action, the statuses it moved between, who did it, when, why, with what."""

    __tablename__ = "case_transitions"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    case_id: Mapped[str] = mapped_column(sa.String(36))
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    action: Mapped[str] = mapped_column(sa.String(16))
    from_status: Mapped[str | None] = mapped_column(sa.String(16))
    to_status: Mapped[str] = mapped_column(sa.String(16))
    actor: Mapped[str] = mapped_column(sa.String(256))
    reason: Mapped[str | None] = mapped_column(sa.Text)
    data: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)  # routing, level, stage …
    attachments: Mapped[list[dict[str, Any]]] = mapped_column(JSONType, default=list)
    context_id: Mapped[str | None] = mapped_column(sa.String(36))

    __table_args__ = (sa.Index("ix_case_transitions_case_id_id", "case_id", "id"),)


class CaseReportRow(Base):
    """One report of a case's problem: the first one and every duplicate merged into it (each citizen's
    诉求 counts on its own in the response, resolution and satisfaction rates). Contact fields hold
    personal data and are masked on the way out by role."""

    __tablename__ = "case_reports"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    case_id: Mapped[str] = mapped_column(sa.String(36))
    channel: Mapped[str] = mapped_column(sa.String(16))
    external_id: Mapped[str | None] = mapped_column(sa.String(160))
    text: Mapped[str] = mapped_column(sa.Text, default="")
    contact_name: Mapped[str | None] = mapped_column(sa.String(100))
    contact_phone: Mapped[str | None] = mapped_column(sa.String(40))
    contact_email: Mapped[str | None] = mapped_column(sa.String(200))
    address: Mapped[str | None] = mapped_column(sa.String(400))
    lon: Mapped[float | None] = mapped_column(sa.Float)
    lat: Mapped[float | None] = mapped_column(sa.Float)
    org_unit: Mapped[str | None] = mapped_column(sa.String(64))
    reported_at: Mapped[datetime] = mapped_column(UTCDateTime)
    classified_as: Mapped[str | None] = mapped_column(sa.String(16))
    confidence: Mapped[float | None] = mapped_column(sa.Float)
    contacted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)  # first reply to this reporter
    resolved: Mapped[bool | None] = mapped_column(sa.Boolean)  # the reporter's verdict
    satisfied: Mapped[bool | None] = mapped_column(sa.Boolean)
    feedback_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    feedback: Mapped[str | None] = mapped_column(sa.Text)
    data: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)  # channel-specific fields

    __table_args__ = (
        sa.Index("ix_case_reports_case_id", "case_id"),
        sa.Index("ix_case_reports_channel_external_id", "channel", "external_id"),
        sa.Index("ix_case_reports_reported_at", "reported_at"),
    )


class SupervisionTaskRow(Base):
    """A task of the big closed loop (大闭环): a department is asked to deal with a problem that keeps
    coming back (an event type recurring in one place) or with its own performance."""

    __tablename__ = "supervision_tasks"

    id: Mapped[str] = mapped_column(sa.String(36), primary_key=True)
    kind: Mapped[str] = mapped_column(sa.String(24))  # recurring_problem | hotspot | performance
    key: Mapped[str] = mapped_column(sa.String(200))  # what makes two findings the same task
    department: Mapped[str] = mapped_column(sa.String(32))
    event_type: Mapped[str | None] = mapped_column(sa.String(16))
    org_unit: Mapped[str | None] = mapped_column(sa.String(64))
    cell: Mapped[str | None] = mapped_column(sa.String(16))
    title: Mapped[str] = mapped_column(sa.String(300))
    evidence: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    status: Mapped[str] = mapped_column(sa.String(16))  # open | acknowledged | closed
    opened_at: Mapped[datetime] = mapped_column(UTCDateTime)
    due_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    note: Mapped[str | None] = mapped_column(sa.Text)

    __table_args__ = (
        sa.Index("ix_supervision_tasks_key_status", "key", "status"),
        sa.Index("ix_supervision_tasks_department_status", "department", "status"),
    )


class RoutingRulesRow(Base):
    """A version of the routing rules (the newest is in force); kept so every change is on record."""

    __tablename__ = "routing_rules"

    version: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=False)
    rules: Mapped[dict[str, Any]] = mapped_column(JSONType)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    actor: Mapped[str] = mapped_column(sa.String(256))


class CaseCounterRow(Base):
    """The next case number of a day (numbers are per district and day, like 12345 ticket numbers)."""

    __tablename__ = "case_counters"

    day: Mapped[str] = mapped_column(sa.String(8), primary_key=True)
    next: Mapped[int] = mapped_column(sa.Integer)
