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

from tests.servers import free_port, start_citybrain, stop


@dataclass
class FuzzReport:
    cases: int = 0
    server_errors: list[str] = field(default_factory=list)  # "METHOD /path -> 500: request …"
    operations: int = 0
    seconds: float = 0.0


@contextmanager
def running_server(home: Path, *, district: str = "xihu", twin: str = "cologne1") -> Iterator[str]:
    """A `citybrain up` process; yields its base URL once /health answers, and stops it after."""
    port = free_port()
    server = start_citybrain(home, port, "up", "--district", district,
                             env={**os.environ, "CITYBRAIN_TRAFFIC_SCENARIO": twin}, timeout=120)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(server)


def fuzz(base: str, per_operation: int, *, progress=None) -> FuzzReport:
    """`per_operation` generated requests for every operation of the server's OpenAPI document."""
    import schemathesis
    from hypothesis import HealthCheck, Phase, given, settings

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
            response = case.call(timeout=60)
            if response.status_code >= 500:
                report.server_errors.append(
                    f"{case.operation.label} -> {response.status_code}: path {case.path_parameters} "
                    f"query {case.query} body {str(case.body)[:200]}")

        run()
        if progress is not None:
            progress(operation.label)
    report.seconds = time.perf_counter() - started
    return report
