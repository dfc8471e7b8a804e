"""The audit log: append one record at a time onto a SHA-256 hash chain, verify the chain, search it.

Each record's hash covers its canonical form (sorted-key JSON of every field but the hash) and the
previous record's hash, starting from 64 zeros. Appends are serialised across threads and processes: on
SQLite by the write transaction's `BEGIN IMMEDIATE` lock, on PostgreSQL by a transaction-scoped advisory
lock, so two writers can never chain onto the same predecessor (and `seq` is the primary key besides).
Verification recomputes every hash in `seq` order; a changed, removed or inserted record breaks the chain
at that record. Cutting records off the end leaves a valid shorter chain, which only an anchor kept
elsewhere reveals: `citybrain audit head` prints one, `citybrain audit verify --anchor SEQ:HASH` checks it.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
import sqlalchemy as sa
from sqlalchemy.orm import Session

from citybrain.core.context import Context, new_id
from citybrain.core.errors import InvalidInput
from citybrain.governance.models import AuditRecordRow

if TYPE_CHECKING:
    from citybrain.platform import Platform

log = logging.getLogger(__name__)
GENESIS = "0" * 64
# pg_advisory_xact_lock key of the chain ("audit" in ASCII): any fixed number no other lock uses
CHAIN_LOCK = 0x6175646974
VERIFY_PAGE = 5_000


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """What to record; the log adds the number, time and hashes."""

    actor: str
    action: str
    resource: str
    outcome: str
    purpose: str | None = None
    context_id: str | None = None
    parent_id: str | None = None
    org_scope: tuple[str, ...] | None = None
    client: str | None = None
    detail: Mapping[str, Any] = field(default_factory=dict)
    # set when a record waited in the spool: when the act happened, and the record's id fixed beforehand so a
    # spool drained twice (a crash between commit and clean-up) adds it once
    at: datetime | None = None
    record_id: str | None = None

    @classmethod
    def of(cls, ctx: Context, *, action: str, resource: str, outcome: str, purpose: str | None = None,
           client: str | None = None, detail: Mapping[str, Any] | None = None) -> AuditEntry:
        """An entry for an act done in `ctx` (its actor, id, parent and scope)."""
        return cls(actor=ctx.actor, action=action, resource=resource, outcome=outcome, purpose=purpose,
                   context_id=ctx.id, parent_id=ctx.parent_id, org_scope=ctx.org_scope, client=client,
                   detail=dict(detail or {}))


def _moment(at: datetime) -> str:
    return at.astimezone(UTC).isoformat(timespec="microseconds")


def canonical(row: AuditRecordRow) -> bytes:
    """The bytes a record's hash covers: every field but the hash, as sorted-key JSON."""
    view = record_view(row)
    del view["hash"]
    return orjson.dumps(view, option=orjson.OPT_SORT_KEYS)


def chain_hash(row: AuditRecordRow) -> str:
    return hashlib.sha256(row.prev_hash.encode() + canonical(row)).hexdigest()


def append_in(session: Session, entries: Sequence[AuditEntry], *, at: datetime) -> list[AuditRecordRow]:
    """Append records within the caller's write transaction (so a write and its records commit together)."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": CHAIN_LOCK})
    seq, prev_hash = head(session)
    rows = []
    for entry in entries:
        seq += 1
        row = AuditRecordRow(
            seq=seq, id=entry.record_id or new_id(), at=entry.at or at, actor=entry.actor[:200], action=entry.action[:200],
            resource=entry.resource[:500], outcome=entry.outcome[:32],
            purpose=entry.purpose[:500] if entry.purpose else None, context_id=entry.context_id,
            parent_id=entry.parent_id, org_scope=list(entry.org_scope) if entry.org_scope is not None else None,
            client=entry.client[:200] if entry.client else None,
            detail=orjson.loads(orjson.dumps(dict(entry.detail))), prev_hash=prev_hash)
        row.hash = prev_hash = chain_hash(row)
        rows.append(row)
    session.add_all(rows)
    session.flush()
    return rows


def append_many(platform: Platform, entries: Sequence[AuditEntry]) -> list[AuditRecordRow]:
    """Append records in one transaction of their own; returns them once committed."""
    with platform.transaction() as session:
        rows = append_in(session, entries, at=platform.clock.now())
        for row in rows:
            session.expunge(row)
    return rows


def append(platform: Platform, entry: AuditEntry) -> AuditRecordRow:
    """Append one record in a transaction of its own; returns it once committed."""
    return append_many(platform, [entry])[0]


class Spool:
    """Audit records the store could not take (it is down or restarting), kept on the server's disk until
    it can: each batch appended to this process's file and fsynced before the request is answered, so an
    acknowledged act keeps its record through a store outage and a crash. `drain` moves every process's
    spooled records into the log once the store answers again (the governance round runs it each minute,
    and a process that spooled runs it after its next successful append)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.pending = False  # this process spooled since its last drain

    def keep(self, entries: Sequence[AuditEntry], at: datetime) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        lines = b"".join(orjson.dumps({
            "actor": e.actor, "action": e.action, "resource": e.resource, "outcome": e.outcome,
            "purpose": e.purpose, "context_id": e.context_id, "parent_id": e.parent_id,
            "org_scope": list(e.org_scope) if e.org_scope is not None else None, "client": e.client,
            "detail": dict(e.detail), "at": _moment(e.at or at), "record_id": e.record_id or new_id()}) + b"\n"
            for e in entries)
        with (self.folder / f"spool-{os.getpid()}.ndjson").open("ab") as handle:
            handle.write(lines)
            handle.flush()
            os.fsync(handle.fileno())
        self.pending = True

    def drain(self, platform: Platform) -> int:
        """Append every spooled record to the log (each file in one transaction, skipping records already
        there); a file is removed once its records are committed. Returns how many were appended."""
        if not self.folder.exists():
            return 0
        moved = 0
        for path in sorted(self.folder.glob("spool-*.ndjson")):
            claimed = path.with_name(f"draining-{new_id()}.ndjson")
            with contextlib.suppress(FileNotFoundError):  # another process claimed it first
                path.rename(claimed)
        for path in sorted(self.folder.glob("draining-*.ndjson")):
            try:
                handle = path.open("rb")
            except FileNotFoundError:
                continue
            with handle:
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:  # another process is draining it now
                    continue
                entries = [_spooled(orjson.loads(line)) for line in handle.read().splitlines() if line.strip()]
                with platform.transaction() as session:
                    ids = [e.record_id for e in entries]
                    present = set(session.scalars(sa.select(AuditRecordRow.id).where(AuditRecordRow.id.in_(ids))))
                    fresh = [e for e in entries if e.record_id not in present]
                    if fresh:
                        append_in(session, fresh, at=platform.clock.now())
                moved += len(fresh)
                path.unlink(missing_ok=True)
        self.pending = False
        return moved


def _spooled(raw: dict[str, Any]) -> AuditEntry:
    return AuditEntry(actor=raw["actor"], action=raw["action"], resource=raw["resource"], outcome=raw["outcome"],
                      purpose=raw["purpose"], context_id=raw["context_id"], parent_id=raw["parent_id"],
                      org_scope=tuple(raw["org_scope"]) if raw["org_scope"] is not None else None,
                      client=raw["client"], detail=raw["detail"], at=datetime.fromisoformat(raw["at"]),
                      record_id=raw["record_id"])


def spool_of(platform: Platform) -> Spool:
    return Spool(platform.settings.home / "audit-spool")


class GroupCommit:
    """Audit records of concurrent requests share one transaction: each caller waits until its own record
    is committed, but whoever gets to write takes every record waiting by then (a leader, not a timer: a
    lone request pays one transaction, a hundred concurrent ones about one each per batch). When the store
    cannot take a batch, the batch goes to the spool (on disk) and its callers go on as recorded."""

    def __init__(self, platform: Platform) -> None:
        self.platform = platform
        self.spool = spool_of(platform)
        self._waiting: list[tuple[AuditEntry, asyncio.Future[None]]] = []
        # made on first use, and again if the app is served by another event loop (a lock belongs to one)
        self._turn: asyncio.Lock | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.batches = 0

    async def record(self, entry: AuditEntry) -> None:
        """Return once the entry is in the log; raise what the store raised if it could not be written."""
        loop = asyncio.get_running_loop()
        if self._turn is None or self._loop is not loop:
            self._turn, self._loop, self._waiting = asyncio.Lock(), loop, []
        future: asyncio.Future[None] = loop.create_future()
        self._waiting.append((entry, future))
        async with self._turn:
            if not future.done():
                batch, self._waiting = self._waiting, []
                entries = [item for item, _ in batch]
                try:
                    await self.platform.run(self._append, entries)
                except Exception as exc:  # noqa: BLE001 - every waiter of the batch gets it
                    for _, waiter in batch:
                        waiter.set_exception(exc)
                else:
                    self.batches += 1
                    for _, waiter in batch:
                        waiter.set_result(None)
        await future

    def _append(self, entries: list[AuditEntry]) -> None:
        """In the store, else in the spool (raising only if neither could keep them)."""
        at = self.platform.clock.now()
        try:
            append_many(self.platform, entries)
        except sa.exc.OperationalError:
            log.warning("audit: the store is unavailable; %d records spooled to %s", len(entries),
                        self.spool.folder)
            self.spool.keep(entries, at)
            return
        if self.spool.pending:
            try:
                moved = self.spool.drain(self.platform)
            except sa.exc.OperationalError:
                return
            log.info("audit: %d spooled records moved into the log", moved)


@dataclass(frozen=True, slots=True)
class Verification:
    """The result of walking the chain."""

    records: int
    head_seq: int
    head_hash: str
    broken_at: int | None = None  # seq of the first record that does not fit
    reason: str | None = None

    @property
    def intact(self) -> bool:
        return self.broken_at is None


def _rows(session: Session) -> Iterator[AuditRecordRow]:
    after = 0
    while True:
        page = session.scalars(sa.select(AuditRecordRow).where(AuditRecordRow.seq > after)
                               .order_by(AuditRecordRow.seq).limit(VERIFY_PAGE)).all()
        if not page:
            return
        yield from page
        after = page[-1].seq
        session.expunge_all()


def verify(session: Session, *, anchor: tuple[int, str] | None = None,
           progress: Any | None = None) -> Verification:
    """Recompute the chain from the first record; stop at the first record that does not fit. With an
    anchor (a seq and hash recorded earlier), also check the chain still reaches it with that hash."""
    expected_seq, prev_hash, count, anchored = 1, GENESIS, 0, anchor is None
    for row in _rows(session):
        count += 1
        if progress is not None:
            progress(1)
        problem = None
        if row.seq != expected_seq:
            problem = f"record {expected_seq} is missing (the next one is {row.seq})"
        elif row.prev_hash != prev_hash:
            problem = "its prev_hash is not the hash of the record before it"
        elif chain_hash(row) != row.hash:
            problem = "its content does not match its hash (changed after it was written)"
        if problem is not None:
            return Verification(count - 1, expected_seq - 1, prev_hash, broken_at=expected_seq, reason=problem)
        if anchor is not None and row.seq == anchor[0]:
            if row.hash != anchor[1]:
                return Verification(count, row.seq, row.hash, broken_at=row.seq,
                                    reason="its hash differs from the anchor's: the log was rewritten")
            anchored = True
        expected_seq, prev_hash = row.seq + 1, row.hash
    if not anchored:
        assert anchor is not None
        return Verification(count, expected_seq - 1, prev_hash, broken_at=anchor[0],
                            reason=f"the log ends at record {expected_seq - 1}, before the anchor's record "
                                   f"{anchor[0]}: records were cut off the end")
    return Verification(count, expected_seq - 1, prev_hash)


def head(session: Session) -> tuple[int, str]:
    """The last record's seq and hash ((0, GENESIS) for an empty log): an anchor to keep elsewhere."""
    last = session.execute(sa.select(AuditRecordRow.seq, AuditRecordRow.hash)
                           .order_by(AuditRecordRow.seq.desc()).limit(1)).first()
    return (last[0], last[1]) if last is not None else (0, GENESIS)


def parse_anchor(text: str) -> tuple[int, str]:
    """SEQ:HASH as `citybrain audit head` prints it."""
    seq, _, digest = text.partition(":")
    if not (seq.isascii() and seq.isdigit()) or not 1 <= int(seq) <= 2**63 - 1 or len(digest) != 64 \
            or any(c not in "0123456789abcdef" for c in digest):
        raise InvalidInput.at("anchor", "expected SEQ:HASH (a record number and its 64-hex-digit hash), "
                                        "as `citybrain audit head` prints it")
    return int(seq), digest


def search(session: Session, *, actor: str | None = None, action: str | None = None,
           resource: str | None = None, since: datetime | None = None, until: datetime | None = None,
           after_seq: int = 0, limit: int = 100) -> list[AuditRecordRow]:
    """Records in seq order after `after_seq`, filtered: exact actor, action and resource prefixes, time
    range [since, until)."""
    query = sa.select(AuditRecordRow).where(AuditRecordRow.seq > after_seq)
    if actor:
        query = query.where(AuditRecordRow.actor == actor)
    if action:
        query = query.where(AuditRecordRow.action.startswith(action, autoescape=True))
    if resource:
        query = query.where(AuditRecordRow.resource.startswith(resource, autoescape=True))
    if since is not None:
        query = query.where(AuditRecordRow.at >= since)
    if until is not None:
        query = query.where(AuditRecordRow.at < until)
    return list(session.scalars(query.order_by(AuditRecordRow.seq).limit(limit)))


def record_view(row: AuditRecordRow) -> dict[str, Any]:
    """A record as JSON: what the API answers, and (without the hash) what the hash covers."""
    return {"seq": row.seq, "id": row.id, "at": _moment(row.at), "actor": row.actor, "action": row.action,
            "resource": row.resource, "outcome": row.outcome, "purpose": row.purpose,
            "context_id": row.context_id, "parent_id": row.parent_id, "org_scope": row.org_scope,
            "client": row.client, "detail": row.detail, "prev_hash": row.prev_hash, "hash": row.hash}
