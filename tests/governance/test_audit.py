"""The audit log on both stores: the chain, what verification catches (a changed, removed or inserted
record; records cut off the end, with an anchor), the store refusing UPDATE and DELETE, concurrent
appends, and what the API middleware records (writes and reads of personal data, not other reads)."""

from __future__ import annotations

import threading
from itertools import pairwise

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from citybrain.cli import app
from citybrain.core.context import Context
from citybrain.governance import audit
from citybrain.governance.models import AuditRecordRow
from citybrain.platform import Platform

runner = CliRunner()


def _entry(number: int, actor: str = "dispatcher:li") -> audit.AuditEntry:
    ctx = Context(actor=actor, org_scope=("330106",))
    return audit.AuditEntry.of(ctx, action="POST /api/v1/cases", resource=f"/api/v1/cases/{number}",
                               outcome="201", purpose="12345 hotline", client="127.0.0.1",
                               detail={"number": number})


def _fill(platform: Platform, count: int) -> None:
    for number in range(1, count + 1):
        audit.append(platform, _entry(number))


def _verify(platform: Platform, anchor: tuple[int, str] | None = None) -> audit.Verification:
    with platform.session() as session:
        return audit.verify(session, anchor=anchor)


def _tamper(platform: Platform, statement: str) -> None:
    """Run a statement with the append-only triggers out of the way, as an intruder with the database's
    own client would."""
    with platform.engine.begin() as conn:
        if platform.dialect == "postgresql":
            conn.exec_driver_sql("ALTER TABLE audit_log DISABLE TRIGGER audit_log_append_only")
            conn.exec_driver_sql(statement)
            conn.exec_driver_sql("ALTER TABLE audit_log ENABLE TRIGGER audit_log_append_only")
        else:
            conn.exec_driver_sql("DROP TRIGGER audit_log_no_update")
            conn.exec_driver_sql("DROP TRIGGER audit_log_no_delete")
            conn.exec_driver_sql(statement)


def test_records_chain_onto_each_other_and_verify(platform: Platform) -> None:
    _fill(platform, 5)
    with platform.session() as session:
        rows = audit.search(session, limit=10)
        assert [row.seq for row in rows] == [1, 2, 3, 4, 5]
        assert rows[0].prev_hash == audit.GENESIS
        assert all(later.prev_hash == earlier.hash for earlier, later in pairwise(rows))
        assert rows[0].org_scope == ["330106"] and rows[0].detail == {"number": 1}
        assert audit.head(session) == (5, rows[-1].hash)
    result = _verify(platform)
    assert result.intact and result.records == 5 and result.head_seq == 5


def test_the_store_refuses_to_change_or_delete_a_record(platform: Platform) -> None:
    _fill(platform, 2)
    for statement in ("UPDATE audit_log SET actor = 'someone else' WHERE seq = 1", "DELETE FROM audit_log WHERE seq = 2"):
        with pytest.raises(sa.exc.DBAPIError, match="append-only"), platform.engine.begin() as conn:
            conn.exec_driver_sql(statement)
    assert _verify(platform).records == 2


@pytest.mark.parametrize(("statement", "broken_at", "reason"), [
    ("UPDATE audit_log SET actor = 'someone else' WHERE seq = 3", 3, "does not match its hash"),
    ("UPDATE audit_log SET detail = '{\"number\": 99}' WHERE seq = 2", 2, "does not match its hash"),
    ("DELETE FROM audit_log WHERE seq = 4", 4, "record 4 is missing"),
])
def test_verification_names_the_first_record_that_was_tampered_with(platform: Platform, statement: str,
                                                                     broken_at: int, reason: str) -> None:
    _fill(platform, 6)
    _tamper(platform, statement)
    result = _verify(platform)
    assert not result.intact and result.broken_at == broken_at and reason in (result.reason or "")
    assert result.records == broken_at - 1


def test_a_record_rewritten_with_a_fresh_hash_still_breaks_the_next_link(platform: Platform) -> None:
    _fill(platform, 4)
    with platform.session() as session:
        row = session.get(AuditRecordRow, 2)
        assert row is not None
        row.actor = "someone else"
        forged = audit.chain_hash(row)
        session.rollback()
    _tamper(platform, f"UPDATE audit_log SET actor = 'someone else', hash = '{forged}' WHERE seq = 2")
    result = _verify(platform)
    assert result.broken_at == 3 and "prev_hash" in (result.reason or "")


def test_an_anchor_catches_records_cut_off_the_end(platform: Platform) -> None:
    _fill(platform, 5)
    with platform.session() as session:
        anchor = audit.head(session)
    _tamper(platform, "DELETE FROM audit_log WHERE seq >= 4")
    assert _verify(platform).intact  # a shorter chain is a valid chain ...
    cut = _verify(platform, anchor=anchor)  # ... which the anchor kept elsewhere exposes
    assert not cut.intact and cut.broken_at == 5 and "cut off the end" in (cut.reason or "")
    assert _verify(platform, anchor=(3, "f" * 64)).broken_at == 3  # a rewritten log fails its anchor


def test_concurrent_appends_keep_one_unbroken_chain(platform: Platform) -> None:
    errors: list[BaseException] = []

    def writer(actor: str) -> None:
        try:
            for number in range(20):
                audit.append(platform, _entry(number, actor))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(f"worker:{i}",)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    result = _verify(platform)
    assert result.intact and result.records == 120


def test_the_api_records_writes_and_reads_of_personal_data_but_not_other_reads(client: TestClient,
                                                                               platform: Platform) -> None:
    village = next(code for code, unit in platform.org_tree.units.items() if unit.kind == "village")
    answer = client.post("/api/v1/cases", headers={"X-Purpose": "citizen called 12345"}, json={
        "eventType": "CG-01-002", "orgUnit": village, "description": "墙上小广告",
        "reporter": {"name": "王芳", "phone": "13912345678"}})
    assert answer.status_code == 201, answer.text
    case_id = answer.json()["id"]
    assert client.post("/api/v1/cases", json={"eventType": 5}).status_code == 422
    assert client.get(f"/api/v1/cases/{case_id}").status_code == 200  # not personal data: not audited
    assert client.get(f"/api/v1/cases/{case_id}/reports").status_code == 200

    records = client.get("/api/v1/audit").json()["items"]
    assert [(r["action"], r["outcome"]) for r in records] == [
        ("POST /api/v1/cases", "201"), ("POST /api/v1/cases", "422"),
        ("GET /api/v1/cases/{case_ref}/reports", "200")]
    created, _refused, read = records
    assert created["actor"] == "api:testclient" and created["purpose"] == "citizen called 12345"
    assert created["context_id"] and created["resource"] == "/api/v1/cases"
    assert read["resource"] == f"/api/v1/cases/{case_id}/reports" and read["detail"]["personal_data"] is True
    assert client.get("/api/v1/audit", params={"action": "GET"}).json()["items"] == [read]
    verified = client.get("/api/v1/audit/verify").json()
    assert verified["intact"] and verified["records"] == 3
    anchored = client.get("/api/v1/audit/verify", params={"anchor": f"3:{verified['head_hash']}"}).json()
    assert anchored["intact"]
    bad = client.get("/api/v1/audit/verify", params={"anchor": "three"})
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "anchor"


def test_the_cli_verifies_and_names_the_broken_record(platform: Platform, tmp_path) -> None:
    _fill(platform, 3)
    where = ["--db", str(platform.engine.url.render_as_string(hide_password=False)), "--home", str(tmp_path)]
    head = runner.invoke(app, ["audit", "head", *where])
    assert head.exit_code == 0, head.output
    anchor = head.output.strip()
    assert anchor.startswith("3:") and len(anchor) == 66
    intact = runner.invoke(app, ["audit", "verify", "--anchor", anchor, *where])
    assert intact.exit_code == 0 and "intact: 3 records" in intact.output
    listed = runner.invoke(app, ["audit", "search", "--actor", "dispatcher:li", *where])
    assert listed.exit_code == 0 and "3 records" in listed.output
    _tamper(platform, "UPDATE audit_log SET outcome = '200' WHERE seq = 2")
    broken = runner.invoke(app, ["audit", "verify", *where])
    assert broken.exit_code == 1 and "broken at record 2" in broken.output
    refused = runner.invoke(app, ["audit", "verify", "--anchor", "nonsense", *where])
    assert refused.exit_code == 2 and "anchor" in refused.output


def test_concurrent_requests_share_a_transaction_and_each_waits_for_its_record(platform: Platform) -> None:
    import asyncio

    log = audit.GroupCommit(platform)

    async def burst() -> None:
        await asyncio.gather(*(log.record(_entry(number, f"client:{number}")) for number in range(50)))

    asyncio.run(burst())
    result = _verify(platform)
    assert result.intact and result.records == 50
    assert 1 <= log.batches < 50  # the first record goes alone, the rest wait and go together
    with platform.session() as session:
        assert {row.actor for row in audit.search(session, limit=100)} == {f"client:{n}" for n in range(50)}


def test_the_same_log_serves_one_event_loop_after_another(platform: Platform) -> None:
    import asyncio

    log = audit.GroupCommit(platform)

    async def burst() -> None:
        await asyncio.wait_for(asyncio.gather(*(log.record(_entry(n)) for n in range(5))), 30)

    for _ in range(2):  # as an app served by one test client, then by another
        asyncio.run(burst())
    assert _verify(platform).records == 10
