"""Tables of the governance capability: the append-only, hash-chained audit log."""

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
