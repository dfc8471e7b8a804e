"""The sensing commands: help, bulk device import with per-row errors, listings and telemetry queries."""

from __future__ import annotations

import csv

import pytest
from typer.testing import CliRunner

from citybrain.cli import app

runner = CliRunner()


@pytest.mark.parametrize(
    "command",
    [
        ["devices"],
        ["devices", "import"],
        ["devices", "list"],
        ["devices", "types"],
        ["alerts"],
        ["alerts", "list"],
        ["telemetry"],
        ["telemetry", "query"],
        ["telemetry", "replay"],
    ],
)
def test_every_sensing_command_explains_itself(command: list[str]) -> None:
    result = runner.invoke(app, [*command, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output


def test_devices_import_registers_good_rows_reports_bad_ones_and_is_idempotent(tmp_path) -> None:
    home = ["--home", str(tmp_path)]
    assert runner.invoke(app, ["import", "divisions", "xihu", *home]).exit_code == 0
    fleet = tmp_path / "fleet.csv"
    with fleet.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["device_id", "device_type", "org_unit", "lon", "lat"])
        for i in range(25):
            writer.writerow([f"WB-{i:04d}", "waste_bin", "330106007", 120.1 + i / 1000, 30.25])
        writer.writerow(["WB-bad!", "waste_bin", "", "", ""])
        writer.writerow(["SM-1", "no_such_type", "", "", ""])
    secrets = tmp_path / "secrets.csv"
    first = runner.invoke(app, ["devices", "import", str(fleet), "--secrets-out", str(secrets), *home])
    assert first.exit_code == 1, first.output  # two rows refused
    assert "25 devices registered, 0 already registered, 2 refused" in first.output
    assert "item 25: device_id" in first.output and "item 26: device_type" in first.output
    assert len(secrets.read_text().splitlines()) == 26  # header + one secret per new device
    again = runner.invoke(app, ["devices", "import", str(fleet), *home])
    assert "0 devices registered, 25 already registered, 2 refused" in again.output
    listed = runner.invoke(
        app, ["devices", "list", "--type", "waste_bin", "--org-unit", "330106", "--limit", "3", *home]
    )
    assert listed.exit_code == 0 and "WB-0002" in listed.output and "WB-0003" not in listed.output
    assert "overflow" in runner.invoke(app, ["devices", "types"]).output
    assert runner.invoke(app, ["alerts", "list", *home]).exit_code == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["devices", "import", "missing.csv"], "file not found"),
        (["devices", "list", "--org-unit", "000"], "unknown org unit"),
        (["alerts", "list", "--status", "open"], "status"),
        (["telemetry", "query", "--end", "2026-12-02T00:00:00Z"], "--start is required"),
        (["telemetry", "query", "--start", "2026-12-01T00:00:00", "--end", "2026-12-02T00:00:00Z"], "zone"),
        (
            [
                "telemetry",
                "query",
                "--start",
                "2026-12-01T00:00:00Z",
                "--end",
                "2026-12-02T00:00:00Z",
                "--bucket",
                "0",
            ],
            "bucket",
        ),
        (
            [
                "telemetry",
                "query",
                "--start",
                "2026-12-01T00:00:00Z",
                "--end",
                "2026-12-02T00:00:00Z",
                "--device",
                "NOPE",
            ],
            "unknown device",
        ),
        (
            [
                "telemetry",
                "query",
                "--start",
                "2026-12-01T00:00:00Z",
                "--end",
                "2026-12-02T00:00:00Z",
                "-o",
                "x.txt",
            ],
            ".parquet or .csv",
        ),
    ],
)
def test_bad_sensing_commands_fail_in_one_line(tmp_path, args: list[str], message: str) -> None:
    result = runner.invoke(app, [*args, "--home", str(tmp_path)])
    assert result.exit_code == 2, result.output
    assert message in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "name the dead letters to replay"),
        (["--device", "AQ-1", "--url", "http://127.0.0.1:9"], "cannot reach the City Brain at http://127.0.0.1:9"),
        (["--since", "yesterday"], "--since: not a time"),
    ],
)
def test_replay_refuses_in_one_line(args: list[str], message: str) -> None:
    result = runner.invoke(app, ["telemetry", "replay", *args])
    assert result.exit_code == 2, result.output
    assert message in result.output
