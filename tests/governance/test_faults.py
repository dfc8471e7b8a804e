"""kill -9 of a real server under concurrent writes, a few cycles (bench/faults.py runs 20 and more):
no acknowledged write or audit record lost or duplicated, and the audit chain intact."""

from __future__ import annotations

from pathlib import Path

from tests.faults import kill9_cycles


def test_kill9_under_load_loses_and_duplicates_nothing_acknowledged(tmp_path: Path) -> None:
    report = kill9_cycles(tmp_path, cycles=3)
    assert report.cycles == 3 and report.acknowledged > 0 and report.transitions > 0
    assert report.lost == [] and report.duplicated == []
    assert report.chain_intact and report.audit_records >= report.acknowledged


def test_postgresql_stopped_and_started_under_writes_loses_nothing_acknowledged(tmp_path: Path) -> None:
    """A PostgreSQL of the test's own is stopped and started twice under four writers; the server stays up."""
    from tests.faults import store_outage_cycles

    report = store_outage_cycles(tmp_path, cycles=2)
    assert report.cycles == 2 and report.acknowledged > 0
    assert report.server_errors == []  # while the store is down: 503 with Retry-After, never a 500
    assert report.unavailable > 0 and report.degraded_seen == 2  # and /health said so each time
    assert all(seconds < 30 for seconds in report.recovery_s), report.recovery_s  # back by itself
    assert report.lost == [] and report.duplicated == [] and report.chain_intact


def test_nats_stopped_and_started_under_writes_fails_and_loses_nothing(tmp_path: Path) -> None:
    """A NATS server of the test's own is stopped and started twice under four writers: /health says the bus
    is disconnected meanwhile; the writes wait for the reconnection (an event whose acknowledgement was lost
    is sent again, kept once by its message id) and none fails."""
    from tests.faults import bus_outage_cycles

    report = bus_outage_cycles(tmp_path, cycles=2)
    assert report.cycles == 2 and report.acknowledged > 0
    assert report.server_errors == [] and report.degraded_seen == 2
    assert all(seconds < 30 for seconds in report.recovery_s), report.recovery_s
    assert report.lost == [] and report.duplicated == [] and report.chain_intact


def test_spooled_audit_records_reach_the_log_once_with_their_own_time(platform) -> None:
    import shutil
    from datetime import timedelta

    import sqlalchemy as sa

    from citybrain.governance import audit
    from citybrain.governance.models import AuditRecordRow

    spool = audit.spool_of(platform)
    then = platform.clock.now() - timedelta(minutes=5)
    entries = [audit.AuditEntry(actor="user:li", action="POST /api/v1/entities", resource=f"/r/{n}", outcome="201")
               for n in range(3)]
    spool.keep(entries, then)
    (kept,) = list(spool.folder.glob("spool-*.ndjson"))
    copy = kept.with_name("copy.bak")
    shutil.copy(kept, copy)
    assert spool.drain(platform) == 3
    copy.rename(kept.with_name("draining-again.ndjson"))  # as if a drain crashed after its commit
    assert spool.drain(platform) == 0  # nothing twice
    with platform.session() as session:
        rows = list(session.scalars(sa.select(AuditRecordRow).where(AuditRecordRow.actor == "user:li")))
        assert [r.resource for r in rows] == ["/r/0", "/r/1", "/r/2"] and {r.at for r in rows} == {then}
        assert audit.verify(session).intact
    assert list(spool.folder.glob("*.ndjson")) == []
