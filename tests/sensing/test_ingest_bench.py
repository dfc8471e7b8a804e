"""The small version of bench/ingest.py, as a test of correctness (not of timings): a broker of its own, the
simulator publishing 10,000 registered devices' telemetry with injected incidents, and the City Brain
detecting them over MQTT."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def test_quick_ingest_bench_detects_the_injected_incidents(tmp_path: Path) -> None:
    if shutil.which("mosquitto") is None and not Path("/usr/sbin/mosquitto").exists():
        pytest.fail("the mosquitto binary is needed (Debian: apt-get install mosquitto)")
    out = tmp_path / "ingest.json"
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "ingest.py"),
            "--quick",
            "--no-record",
            "--broker-seconds",
            "2",
            "--json-out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    figures = json.loads(out.read_text())
    assert figures["incidents"] >= 20, figures  # enough incidents to mean something
    assert figures["recall"] >= 0.95 and figures["precision"] >= 0.95, figures
    assert figures["accepted"] >= 0.9 * figures["offered_msgs_per_s"] * figures["duration_s"] * 0.8, figures
    assert figures["dead_letters"] == 0 and figures["alert_latency_samples"] > 0, figures
