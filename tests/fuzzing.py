"""Fuzz the running API from its own OpenAPI document with Schemathesis: every operation gets generated
requests (valid and edge-case values the schema admits), and any 5xx answer is a failure. Shared by the
CI test (`tests/governance/test_fuzz.py`, a few thousand cases) and `bench/fuzz.py` (more).

The server is a real `citybrain up` process on a free port with the Xihu district and a live traffic twin
(cologne1), so every capability is running, not answering 503 because it was never started.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from citybrain.core.context import ROLES
from tests.servers import free_port, make_key, start_citybrain, stop


@dataclass
class FuzzReport:
    cases: int = 0
    server_errors: list[str] = field(default_factory=list)  # "METHOD /path -> 500: request …"
    # answers that do not match the OpenAPI document: body against the declared schema, declared media type
    schema_violations: list[str] = field(default_factory=list)
    operations: int = 0
    seconds: float = 0.0


@contextmanager
def running_server(home: Path, *, district: str = "xihu", twin: str = "cologne1") -> Iterator[tuple[str, str]]:
    """A `citybrain up` process; yields its base URL and an API key once /health answers, and stops it
    after."""
    port = free_port()
    # signed in with every role and no scope (so every operation is reached, and authentication and the
    # access policy run on every case), and without a rate limit (the fuzz outpaces a caller's 100/s)
    server = start_citybrain(home, port, "up", "--district", district, timeout=120, env={
        **os.environ, "CITYBRAIN_TRAFFIC_SCENARIO": twin, "CITYBRAIN_AUTH_REQUIRED": "true",
        "CITYBRAIN_RATE_LIMIT_PER_S": "0"})
    try:
        yield f"http://127.0.0.1:{port}", make_key(home, "fuzz", ROLES)
    finally:
        stop(server)


def fuzz(base: str, key: str, per_operation: int, *, progress=None) -> FuzzReport:
    """`per_operation` generated requests for every operation of the server's OpenAPI document."""
    import schemathesis
    from hypothesis import HealthCheck, Phase, given, settings
    from schemathesis.checks import FailureGroup, content_type_conformance, response_schema_conformance

    schema = schemathesis.openapi.from_url(f"{base}/openapi.json")
    report = FuzzReport()
    started = time.perf_counter()
    for result in schema.get_all_operations():
        operation = result.ok()
        report.operations += 1

        @given(case=operation.as_strategy())
        @settings(max_examples=per_operation, deadline=None, database=None, phases=[Phase.generate],
                  suppress_health_check=list(HealthCheck))
        def run(case) -> None:  # called at once, within this round of the loop
            report.cases += 1
            response = case.call(timeout=60, headers={"X-API-Key": key})
            request = f"path {case.path_parameters} query {case.query} body {str(case.body)[:200]}"
            if response.status_code >= 500:
                report.server_errors.append(f"{case.operation.label} -> {response.status_code}: {request}")
            try:
                case.validate_response(response, checks=[response_schema_conformance, content_type_conformance])
            except FailureGroup as failure:  # say what and for which request
                first = next((line for line in str(failure).splitlines() if line.startswith("- ")), str(failure))
                report.schema_violations.append(
                    f"{case.operation.label} -> {response.status_code}: {first[:200]}; {request}")

        run()
        if progress is not None:
            progress(operation.label)
    report.seconds = time.perf_counter() - started
    return report
