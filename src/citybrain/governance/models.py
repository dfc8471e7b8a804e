"""Tables of the governance capability: the append-only, hash-chained audit log, users and keys, and the
data catalog (datasets, lineage, quality scores)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from citybrain.db.base import Base, JSONType, UTCDateTime


class AuditRecordRow(Base):
    """One audited act: a write, or a read of personal data.

    `seq` numbers the records without gaps from 1; `hash` is SHA-256 over the record's canonical form and
    the previous record's hash (`prev_hash`), so changing, removing or inserting a record breaks every
    hash after it. The store refuses UPDATE and DELETE on the table (triggers, migration 0009).
    """

    __tablename__ = "audit_log"

    seq: Mapped[int] = mapped_column(sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True,
                                     autoincrement=False)
    id: Mapped[str] = mapped_column(sa.String(64), unique=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    actor: Mapped[str] = mapped_column(sa.String(200))
    action: Mapped[str] = mapped_column(sa.String(200))  # "POST /cases/{case_ref}/transitions", "user.add"
    resource: Mapped[str] = mapped_column(sa.String(500))  # what it acted on: the request path, an object id
    outcome: Mapped[str] = mapped_column(sa.String(32))  # HTTP status, or "ok" / "failed"
    purpose: Mapped[str | None] = mapped_column(sa.String(500))  # why, as the caller stated it
    context_id: Mapped[str | None] = mapped_column(sa.String(64))
    parent_id: Mapped[str | None] = mapped_column(sa.String(64))
    org_scope: Mapped[list[str] | None] = mapped_column(JSONType)
    client: Mapped[str | None] = mapped_column(sa.String(200))  # where from: address, process, command
    detail: Mapped[dict[str, Any]] = mapped_column(JSONType)
    prev_hash: Mapped[str] = mapped_column(sa.String(64))
    hash: Mapped[str] = mapped_column(sa.String(64))

    __table_args__ = (sa.Index("ix_audit_log_actor_at", "actor", "at"), sa.Index("ix_audit_log_at", "at"))


class UserRow(Base):
    """A person who signs in: an Argon2id password hash, roles and the org units they act within."""

    __tablename__ = "users"

    username: Mapped[str] = mapped_column(sa.String(100), primary_key=True)
    display_name: Mapped[str] = mapped_column(sa.String(200))
    password_hash: Mapped[str] = mapped_column(sa.String(200))
    roles: Mapped[list[str]] = mapped_column(JSONType)
    org_scope: Mapped[list[str] | None] = mapped_column(JSONType)  # None: unrestricted
    disabled: Mapped[bool] = mapped_column(sa.Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    password_changed_at: Mapped[datetime] = mapped_column(UTCDateTime)


class ApiKeyRow(Base):
    """A key for a device or a connected system. Only the SHA-256 of its secret is kept (the secret is
    shown once, when the key is made); revoked keys stay, for the audit trail."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(sa.String(32), primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(200))
    secret_hash: Mapped[str] = mapped_column(sa.String(64))
    roles: Mapped[list[str]] = mapped_column(JSONType)
    org_scope: Mapped[list[str] | None] = mapped_column(JSONType)
    created_by: Mapped[str] = mapped_column(sa.String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    replaced_by: Mapped[str | None] = mapped_column(sa.String(32))


class DatasetRow(Base):
    """One dataset the platform holds or receives (数据资产): an entity type, a telemetry stream, the
    cases, the complaints, an imported file. `managed` rows are registered by the platform from what the
    code and plug-ins define (kept in step at start); the others by operators. `rules` are its declarative
    quality checks (governance.quality)."""

    __tablename__ = "datasets"

    id: Mapped[str] = mapped_column(sa.String(200), primary_key=True)  # "entities/AirQualityObserved"
    kind: Mapped[str] = mapped_column(sa.String(32))  # entities, telemetry, cases, reports, alerts, import
    title: Mapped[str] = mapped_column(sa.String(200))
    title_zh: Mapped[str] = mapped_column(sa.String(200))
    owner: Mapped[str] = mapped_column(sa.String(64))  # a department slug, or "operations" (the centre)
    classification: Mapped[str] = mapped_column(sa.String(16))
    fields: Mapped[dict[str, Any]] = mapped_column(JSONType)  # name -> {kind, unit, minimum, maximum, …}
    source: Mapped[str] = mapped_column(sa.String(500))  # where it comes from, in words
    rules: Mapped[list[dict[str, Any]]] = mapped_column(JSONType)
    managed: Mapped[bool] = mapped_column(sa.Boolean)
    registered_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_by: Mapped[str] = mapped_column(sa.String(200))
    last_ingest_at: Mapped[datetime | None] = mapped_column(UTCDateTime)  # newest record seen arriving
    checked_until: Mapped[datetime | None] = mapped_column(UTCDateTime)  # quality evaluated up to here


class LineageRow(Base):
    """`upstream` feeds `downstream` through `process` (e.g. telemetry/air_quality → entities/
    AirQualityObserved through the sensing ingest)."""

    __tablename__ = "dataset_lineage"

    upstream: Mapped[str] = mapped_column(sa.String(200), primary_key=True)
    downstream: Mapped[str] = mapped_column(sa.String(200), primary_key=True)
    process: Mapped[str] = mapped_column(sa.String(200))
    managed: Mapped[bool] = mapped_column(sa.Boolean)
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime)

    __table_args__ = (sa.Index("ix_dataset_lineage_downstream", "downstream"),)


class QualityScoreRow(Base):
    """What one quality rule found in one hour of one dataset: records checked and records that passed
    (for dataset-wide rules such as freshness, one check per evaluation). Several server processes add to
    the same row."""

    __tablename__ = "quality_scores"

    dataset_id: Mapped[str] = mapped_column(sa.String(200), primary_key=True)
    rule_id: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    hour: Mapped[datetime] = mapped_column(UTCDateTime, primary_key=True)
    checked: Mapped[int] = mapped_column(sa.BigInteger)
    passed: Mapped[int] = mapped_column(sa.BigInteger)


class ShareRow(Base):
    """A department's request for another department's dataset, and the owner's decision: which fields,
    which org units and until when. Read through `GET /api/v1/shares/{id}/records` only while approved and
    unexpired; every read is audited."""

    __tablename__ = "data_shares"

    id: Mapped[str] = mapped_column(sa.String(36), primary_key=True)
    dataset_id: Mapped[str] = mapped_column(sa.String(200))
    requester: Mapped[str] = mapped_column(sa.String(64))  # the department asking (a slug)
    owner: Mapped[str] = mapped_column(sa.String(64))  # the dataset's owner when asked
    purpose: Mapped[str] = mapped_column(sa.String(500))
    fields: Mapped[list[str]] = mapped_column(JSONType)  # asked for, then granted (never wider)
    org_scope: Mapped[list[str] | None] = mapped_column(JSONType)  # None: the whole district
    until: Mapped[datetime] = mapped_column(UTCDateTime)
    status: Mapped[str] = mapped_column(sa.String(16))  # requested, approved, rejected, revoked, expired
    requested_by: Mapped[str] = mapped_column(sa.String(200))
    requested_at: Mapped[datetime] = mapped_column(UTCDateTime)
    decided_by: Mapped[str | None] = mapped_column(sa.String(200))
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    reason: Mapped[str | None] = mapped_column(sa.String(500))

    __table_args__ = (sa.Index("ix_data_shares_dataset_id_status", "dataset_id", "status"),)
