"""Schemathesis against the running API (a real `citybrain up`): a few thousand generated requests over
every operation of the OpenAPI document, and not one 5xx. bench/fuzz.py runs more."""

from __future__ import annotations

from pathlib import Path

from tests.fuzzing import fuzz, running_server

PER_OPERATION = 25  # about 2,000 cases over the ~80 operations, ~15 s


def test_generated_requests_never_get_a_server_error(tmp_path: Path) -> None:
    with running_server(tmp_path) as (base, key):
        report = fuzz(base, key, PER_OPERATION)
    assert report.operations >= 60 and report.cases >= 1500
    assert report.server_errors == []
    assert report.schema_violations == []


def test_what_the_fuzzer_found_is_refused_as_input(client) -> None:
    # each of these answered 500 before: a number past 64 bits sent to the store, a superscript digit that
    # str.isdigit() accepts and int() does not, a window reaching before year 1
    too_big = 2**64
    answers = [
        client.post(f"/api/v1/reports/{too_big}/feedback", json={"resolved": True, "satisfied": True}),
        client.post(f"/api/v1/hotline/complaints/{too_big}/feedback", json={"resolved": True, "satisfied": True}),
        client.post("/api/v1/telemetry/dead-letters/replay", json={"ids": [too_big]}),
        client.get("/api/v1/audit/verify", params={"anchor": "¹:" + "0" * 64}),
        client.get("/api/v1/supervision/rates", params={"to": "0001-01-01T00:16:01Z"}),
    ]
    assert [answer.status_code for answer in answers] == [422] * 5
    assert all(answer.json()["errors"] for answer in answers)
