"""Authentication on both stores: passwords (Argon2id), bearer tokens (signed, expiring, refused once the
user is disabled), API keys (shown once, hashed, revoked, rotated, expiring), `auth_required`, the caller
reaching the audit log, and the `user` and `key` commands."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from citybrain.api.app import create_app
from citybrain.cli import app as cli
from citybrain.core.clock import FrozenClock
from citybrain.governance import auth
from citybrain.governance.models import ApiKeyRow, UserRow
from citybrain.platform import Platform

PASSWORD = "correct horse battery"


@pytest.fixture
def live(platform: Platform) -> Platform:
    platform.settings = platform.settings.model_copy(update={"auth_cache_s": 0.0})  # see changes at once
    return platform


def _sign_in(client: TestClient, username: str = "li.wei", password: str = PASSWORD) -> str:
    answer = client.post("/api/v1/auth/token", data={"username": username, "password": password})
    assert answer.status_code == 200, answer.text
    assert answer.json()["token_type"] == "bearer" and answer.headers["cache-control"] == "no-store"
    return answer.json()["access_token"]


def _dispatcher(platform: Platform) -> UserRow:
    town = next(code for code, unit in platform.org_tree.units.items() if unit.kind == "town")
    return auth.add_user(platform, username="li.wei", password=PASSWORD, roles=["dispatcher"], org_scope=[town])


def test_a_password_is_kept_as_argon2id_and_a_wrong_one_is_refused(live: Platform) -> None:
    user = _dispatcher(live)
    assert user.password_hash.startswith("$argon2id$") and PASSWORD not in user.password_hash
    with TestClient(create_app(live)) as client:
        for username, password in (("li.wei", "wrong password!"), ("nobody", PASSWORD)):
            answer = client.post("/api/v1/auth/token", data={"username": username, "password": password})
            assert answer.status_code == 401 and answer.json()["detail"] == "wrong username or password"
            assert answer.headers["www-authenticate"].startswith("Bearer")
            assert answer.headers["content-type"].startswith("application/problem+json")


def test_a_token_makes_the_caller_itself_until_it_expires(live: Platform, clock: FrozenClock) -> None:
    user = _dispatcher(live)
    with TestClient(create_app(live)) as client:
        token = _sign_in(client)
        me = client.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {token}"}).json()
        assert me == {"actor": "user:li.wei", "roles": ["dispatcher"], "org_scope": user.org_scope}
        anonymous = client.get("/api/v1/auth/me").json()
        assert anonymous["actor"] == "api:testclient" and anonymous["roles"] == []
        forged = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
        for bad in (f"Bearer {forged}", "Basic bGk6d2Vp", "Bearer "):
            refused = client.get("/api/v1/auth/me", headers={"Authorization": bad})
            assert refused.status_code == 401, bad  # bad credentials are never taken as anonymous
        clock.advance(live.settings.token_lifetime_s + 1)
        expired = client.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {token}"})
        assert expired.status_code == 401 and "expired" in expired.json()["detail"]


def test_a_disabled_user_is_refused_with_a_token_still_valid(live: Platform) -> None:
    _dispatcher(live)
    with TestClient(create_app(live)) as client:
        token = _sign_in(client)
        auth.set_disabled(live, "li.wei", True)
        answer = client.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {token}"})
        assert answer.status_code == 401 and "disabled" in answer.json()["detail"]
        again = client.post("/api/v1/auth/token", data={"username": "li.wei", "password": PASSWORD})
        assert again.status_code == 401
        auth.set_disabled(live, "li.wei", False)
        assert client.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {token}"}).status_code == 200


def test_an_api_key_is_shown_once_kept_hashed_revoked_and_rotated(live: Platform, clock: FrozenClock) -> None:
    made = auth.create_key(live, name="water-department", roles=["system"], org_scope=None)
    with live.session() as session:
        stored = session.get(ApiKeyRow, made.row.id)
        assert stored is not None and made.secret not in (stored.secret_hash, stored.name)
    with TestClient(create_app(live)) as client:
        def me(key: str) -> dict:
            return client.get("/api/v1/auth/me", headers={"X-API-Key": key}).json()

        assert me(made.secret)["actor"] == f"key:{made.row.id}"
        assert me(made.secret[:-1] + "x")["status"] == 401
        fresh = auth.rotate_key(live, made.row.id)
        assert me(fresh.secret)["roles"] == ["system"]
        refused = me(made.secret)
        assert refused["status"] == 401 and f"replaced by {fresh.row.id}" in refused["detail"]
        auth.revoke_key(live, fresh.row.id)
        assert me(fresh.secret)["status"] == 401
        brief = auth.create_key(live, name="pilot", roles=["analyst"], org_scope=None,
                                expires_at=clock.now() + timedelta(hours=1))
        assert me(brief.secret)["actor"] == f"key:{brief.row.id}"
        clock.advance(hours=2)
        assert "expired" in me(brief.secret)["detail"]


def test_unknown_roles_and_units_are_named(live: Platform) -> None:
    with pytest.raises(Exception) as refused:
        auth.add_user(live, username="x y", password="short", roles=["mayor"], org_scope=["999999"])
    fields = {error.field for error in refused.value.errors}
    assert fields == {"username", "roles", "org_scope"}
    with pytest.raises(Exception, match="at least 12"):
        auth.add_user(live, username="ok", password="short", roles=["analyst"])


def test_with_auth_required_only_the_open_paths_answer_anonymous_callers(live: Platform) -> None:
    _dispatcher(live)
    live.settings = live.settings.model_copy(update={"auth_required": True})
    with TestClient(create_app(live)) as client:
        assert client.get("/api/v1/entities").status_code == 401
        assert client.post("/api/v1/entities", json={"id": "urn:ngsi-ld:Streetlight:1", "type": "Streetlight"}
                           ).status_code == 401
        assert client.get("/health").status_code == 200
        assert client.get("/openapi.json").status_code == 200
        token = _sign_in(client)
        listed = client.get("/api/v1/entities", headers={"Authorization": f"Bearer {token}"})
        assert listed.status_code == 200
        assert client.get("/api/v1/audit", headers={"Authorization": f"Bearer {token}"}).status_code == 403
        auditor = auth.create_key(live, name="auditor", roles=["auditor"], org_scope=None).secret
        records = client.get("/api/v1/audit", headers={"X-API-Key": auditor}).json()["items"]
        assert [(r["actor"], r["outcome"]) for r in records if r["action"].startswith("POST /api/v1/entities")] \
            == [("api:testclient", "401")]
        # refused reads are on the record too: the anonymous one (401) and the dispatcher's look at the log (403)
        assert [(r["actor"], r["outcome"], r["detail"]["denied"]) for r in records if r["action"].startswith("GET")] \
            == [("api:testclient", "401", "unauthorized"), ("user:li.wei", "403", "forbidden")]
        signed_in = [r for r in records if r["action"] == "POST /api/v1/auth/token"]
        assert signed_in and "password" not in str(signed_in[0])  # the form body is never recorded


def test_user_and_key_commands(live: Platform, tmp_path: Path) -> None:
    runner = CliRunner()
    where = ["--db", live.engine.url.render_as_string(hide_password=False), "--home", str(tmp_path)]
    added = runner.invoke(cli, ["user", "add", "wang.fang", "--role", "auditor", "--password-stdin", *where],
                          input=PASSWORD + "\n")
    assert added.exit_code == 0, added.output
    listed = runner.invoke(cli, ["user", "list", *where])
    assert "wang.fang" in listed.output and "auditor" in listed.output and "active" in listed.output
    assert runner.invoke(cli, ["user", "disable", "wang.fang", *where]).exit_code == 0
    assert "disabled" in runner.invoke(cli, ["user", "list", *where]).output
    twice = runner.invoke(cli, ["user", "add", "wang.fang", "--role", "auditor", "--password-stdin", *where],
                          input=PASSWORD + "\n")
    assert twice.exit_code == 2 and "already exists" in twice.output
    bad = runner.invoke(cli, ["user", "add", "zhao", "--role", "mayor", "--password-stdin", *where], input="x\n")
    assert bad.exit_code == 2 and "roles" in bad.output
    made = runner.invoke(cli, ["key", "create", "fire-brigade", "--role", "system", *where])
    assert made.exit_code == 0, made.output
    secret = next(line for line in made.output.splitlines() if line.startswith("cbk_"))
    key_id = secret.split("_")[1]
    rotated = runner.invoke(cli, ["key", "rotate", key_id, *where])
    assert rotated.exit_code == 0 and "cbk_" in rotated.output
    keys = runner.invoke(cli, ["key", "list", *where]).output
    assert "revoked" in keys and secret not in keys
    assert runner.invoke(cli, ["key", "revoke", "nope", *where]).exit_code == 2


def test_the_first_run_makes_an_admin_with_a_password_of_its_own(live: Platform, capsys) -> None:
    from citybrain import cli as cli_module

    cli_module._first_admin(live.settings, live)
    printed = capsys.readouterr().out
    password = printed.split("password ", 1)[1].split(" ", 1)[0]
    assert len(password) >= 16 and "/api/v1/auth/token" in printed
    with live.session() as session:
        admin = auth.authenticate(session, "admin", password)
        assert "admin" in admin.roles
    cli_module._first_admin(live.settings, live)  # users exist: nothing new, nothing printed
    assert capsys.readouterr().out == ""
    with live.session() as session:
        assert auth.count_users(session) == 1


def test_changes_to_users_and_keys_are_audited_without_secrets(live: Platform) -> None:
    from citybrain.core.context import Context

    admin = Context(actor="user:admin")
    auth.add_user(live, username="zhao", password=PASSWORD, roles=["analyst"], by=admin)
    auth.set_disabled(live, "zhao", True, by=admin)
    made = auth.create_key(live, name="sensors", roles=["system"], org_scope=None, by=admin)
    auth.rotate_key(live, made.row.id, by=admin)
    from citybrain.governance import audit

    with live.session() as session:
        records = audit.search(session, actor="user:admin")
        assert [r.action for r in records] == ["user.add", "user.disable", "key.create", "key.create", "key.revoke"]
        assert all(PASSWORD not in str(r.detail) and made.secret not in str(r.detail) for r in records)
        assert records[-1].detail["replaced_by"] == records[-2].resource.removeprefix("key:")
    assert _verify_chain(live)


def _verify_chain(platform: Platform) -> bool:
    from citybrain.governance import audit

    with platform.session() as session:
        return audit.verify(session).intact
