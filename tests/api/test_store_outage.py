"""A store connection lost under the API (a database restart) costs one request a 503, never a 500, and the
requests after it connect afresh."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from citybrain.api.app import create_app
from citybrain.platform import Platform
from tests.services import postgres_admin_url


@pytest.mark.integration
@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_lost_connections_answer_503_then_the_pool_reconnects(platform: Platform) -> None:
    # without the background services: one of their rounds could meet the dead connection first, and
    # the pool would be clean again before the request this test watches
    with TestClient(create_app(platform, manage_lifecycle=False)) as client:
        _lost_connection_costs_one_request(platform, client)


def _lost_connection_costs_one_request(platform: Platform, client: TestClient) -> None:
    assert client.get("/api/v1/cases").status_code == 200  # a pooled connection now exists
    database = platform.engine.url.database
    admin = sa.create_engine(postgres_admin_url(), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        ended = conn.execute(sa.text(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = :name AND pid <> pg_backend_pid()"), {"name": database}).scalar_one()
    admin.dispose()
    assert ended >= 1

    answers = [client.get("/api/v1/cases") for _ in range(3)]
    statuses = [answer.status_code for answer in answers]
    assert 503 in statuses, statuses  # the pooled connection was dead
    assert 500 not in statuses
    assert statuses[-1] == 200
    for answer in answers:
        if answer.status_code == 503:
            assert answer.headers["content-type"] == "application/problem+json"
            assert answer.headers["retry-after"] == "1"
            assert answer.json()["type"] == "/problems/store-unavailable"
    assert statuses.count(503) <= 1  # the pool drops every stale connection at the first failure
