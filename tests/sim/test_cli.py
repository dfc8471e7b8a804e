"""`simulate …` through Typer's CliRunner against the sub-app."""

from __future__ import annotations

import uuid
from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner

from citybrain.sim.cli import simulate_app
from citybrain.sim.fleet import read_fleet
from tests.services import MQTT_HOST, MQTT_PORT, require_mqtt

runner = CliRunner()


def one_line_error(result: object, text: str) -> None:
    output = result.output  # type: ignore[attr-defined]
    assert result.exit_code == 2, output  # type: ignore[attr-defined]
    assert "Traceback" not in output
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and text in errors[0], output


@pytest.mark.parametrize("command", [[], ["fleet"], ["devices"], ["count"], ["broker"]])
def test_every_command_has_help(command: list[str]) -> None:
    result = runner.invoke(simulate_app, [*command, "--help"])
    assert result.exit_code == 0 and "Usage" in result.output


def test_devices_help_names_its_options() -> None:
    result = runner.invoke(simulate_app, ["devices", "--help"], terminal_width=200)
    for option in ("--fleet", "--count", "--interval", "--broker", "--connections", "--duration",
                   "--incident-rate", "--truth", "--qos"):
        assert option in result.output


def test_fleet_writes_the_csv(tmp_path: Path) -> None:
    out = tmp_path / "fleet.csv"
    result = runner.invoke(simulate_app, ["fleet", "--count", "500", "--seed", "3", "--out", str(out)])
    assert result.exit_code == 0, result.output
    fleet = read_fleet(out)
    assert len(fleet) == 500 and "streetlight" in result.output
    again = tmp_path / "again.csv"
    runner.invoke(simulate_app, ["fleet", "--count", "500", "--seed", "3", "--out", str(again)])
    assert again.read_bytes() == out.read_bytes()


def test_fleet_with_a_mix(tmp_path: Path) -> None:
    out = tmp_path / "fleet.csv"
    result = runner.invoke(simulate_app, ["fleet", "--count", "100", "--mix", "air_quality=1,water_level=1",
                                          "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert read_fleet(out).counts() == {"air_quality": 50, "water_level": 50}


@pytest.mark.parametrize("args, text", [
    (["fleet", "--count", "10", "--mix", "toaster=1"], "unknown device type"),
    (["fleet", "--count", "10", "--mix", "air_quality"], "is not type=share"),
    (["fleet", "--count", "10", "--district", "atlantis"], "file not found"),
    (["devices"], "give either --fleet FILE or --count N"),
    (["devices", "--count", "10", "--fleet", "x.csv"], "give either --fleet FILE or --count N"),
    (["devices", "--fleet", "missing.csv"], "file not found"),
    (["devices", "--count", "10", "--broker", "http://127.0.0.1:1883"], "scheme 'http'"),
    (["devices", "--count", "10", "--broker", "mqtt://127.0.0.1:1"], "connection refused"),
    (["count", "--broker", "mqtt:/nowhere"], "not a broker URL"),
    (["broker", "--broker", "mqtt://127.0.0.1:1"], "connection refused"),
])
def test_errors_are_one_line_and_a_non_zero_exit(args: list[str], text: str, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    one_line_error(runner.invoke(simulate_app, args), text)


def test_out_of_range_options_are_refused() -> None:
    result = runner.invoke(simulate_app, ["devices", "--count", "10", "--qos", "2"])
    assert result.exit_code != 0
    result = runner.invoke(simulate_app, ["fleet", "--count", "0"])
    assert result.exit_code != 0


@pytest.mark.integration
def test_devices_publishes_and_writes_the_truth(tmp_path: Path) -> None:
    require_mqtt()
    fleet, truth = tmp_path / "fleet.csv", tmp_path / "truth.jsonl"
    assert runner.invoke(simulate_app, ["fleet", "--count", "200", "--out", str(fleet)]).exit_code == 0
    result = runner.invoke(simulate_app, [
        "devices", "--fleet", str(fleet), "--interval", "0.5", "--duration", "3", "--connections", "4",
        "--broker", f"mqtt://{MQTT_HOST}:{MQTT_PORT}", "--incident-rate", "0.05", "--truth", str(truth),
        "--qos", "1", "--quiet"], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert "msgs/s" in result.output and "PUBACKs" in result.output and "incidents started" in result.output
    records = [orjson.loads(line) for line in truth.read_bytes().splitlines()]
    assert records and all({"device_type", "rule_id", "start_ts", "end_ts"} <= set(r) for r in records)


@pytest.mark.integration
def test_count_and_broker_measure(tmp_path: Path) -> None:
    require_mqtt()
    url = f"mqtt://{MQTT_HOST}:{MQTT_PORT}"
    result = runner.invoke(simulate_app, ["count", "--broker", url, "--topic", f"cbtest-{uuid.uuid4().hex}/#",
                                          "--seconds", "1", "--json"])
    assert result.exit_code == 0, result.output
    assert orjson.loads(result.output)["messages"] == 0
    result = runner.invoke(simulate_app, ["broker", "--broker", url, "--seconds", "1", "--connections", "4"])
    assert result.exit_code == 0, result.output
    measured = orjson.loads(result.output)
    assert measured["received_per_s"] > 1000 and measured["connections"] == 4
