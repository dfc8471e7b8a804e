"""The command line: help everywhere, one-line errors with a non-zero exit, import/export round trip."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from citybrain.cli import app

runner = CliRunner()


@pytest.mark.parametrize("command", [[], ["up"], ["serve"], ["migrate"], ["import"], ["import", "divisions"],
                                     ["import", "entities"], ["export", "entities"], ["types"], ["audit"],
                                     ["audit", "verify"], ["audit", "head"], ["audit", "search"], ["user"],
                                     ["user", "add"], ["key"], ["key", "create"], ["key", "rotate"]])
def test_every_command_explains_itself(command):
    result = runner.invoke(app, [*command, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output


def test_migrate_import_export_round_trip(tmp_path):
    home = ["--home", str(tmp_path)]
    assert "revision 0" in runner.invoke(app, ["migrate", *home]).output
    assert "already at revision" in runner.invoke(app, ["migrate", *home]).output
    imported = runner.invoke(app, ["import", "divisions", "xihu", *home])
    assert imported.exit_code == 0 and "12 towns/streets, 222 villages/communities" in imported.output

    entities = [{"id": f"urn:ngsi-ld:Streetlight:XH-{i}", "type": "Streetlight",
                 "powerState": {"type": "Property", "value": "on"},
                 "orgUnit": {"type": "Relationship", "object": "urn:ngsi-ld:OrgUnit:330106007"}} for i in range(2500)]
    source = tmp_path / "lights.ndjson"
    source.write_text("\n".join(json.dumps(e) for e in entities), encoding="utf-8")
    loaded = runner.invoke(app, ["import", "entities", str(source), *home])
    assert loaded.exit_code == 0, loaded.output
    assert "2500 entities written, 0 problems" in loaded.output

    out = tmp_path / "out.json"
    exported = runner.invoke(app, ["export", "entities", "--type", "Streetlight", "--org-unit", "330106", "-o", str(out), *home])
    assert exported.exit_code == 0, exported.output
    assert sorted(json.loads(out.read_text()), key=lambda e: e["id"]) == sorted(entities, key=lambda e: e["id"])


def test_import_reports_bad_items_and_keeps_good_ones(tmp_path):
    home = ["--home", str(tmp_path)]
    source = tmp_path / "mixed.json"
    source.write_text(json.dumps([{"id": "urn:ngsi-ld:Streetlight:ok", "type": "Streetlight"},
                                  {"id": "broken", "type": "Streetlight"}]), encoding="utf-8")
    result = runner.invoke(app, ["import", "entities", str(source), *home])
    assert result.exit_code == 1
    assert "item 1: [1].id" in result.output and "1 entities written, 1 problems" in result.output


@pytest.mark.parametrize(("args", "message"), [
    (["import", "divisions", "/nonexistent/x.towns.csv"], "file not found"),
    (["import", "entities", "/nonexistent.json"], "file not found"),
    (["migrate", "--db", "postgresql://nobody@127.0.0.1:1/none"], "cannot migrate"),
    (["export", "entities", "--type", "Spaceship"], "unknown entity type"),
    (["import", "entities", "x.json", "--mode", "sideways"], "--mode is replace or merge"),
])
def test_errors_are_one_line_and_non_zero(tmp_path, args, message):
    result = runner.invoke(app, [*args, "--home", str(tmp_path)])
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0], result.output
    assert "Traceback" not in result.output


def test_bad_json_file_is_one_line(tmp_path):
    broken = tmp_path / "broken.json"
    broken.write_text("[{", encoding="utf-8")
    result = runner.invoke(app, ["import", "entities", str(broken), "--home", str(tmp_path)])
    assert result.exit_code == 2 and "not JSON or NDJSON" in result.output


@pytest.mark.parametrize("env, message", [
    ({"CITYBRAIN_MQTT_QOS": "5"}, "CITYBRAIN_MQTT_QOS: Input should be less than or equal to 1"),
    ({"CITYBRAIN_SENSING_SHARDS": "2", "CITYBRAIN_SENSING_SHARD": "2"}, "sensing_shard 2 is not below"),
])
def test_a_bad_setting_is_one_line_naming_it(tmp_path, env, message):
    result = runner.invoke(app, ["migrate", "--home", str(tmp_path)], env=env)
    assert result.exit_code == 2
    assert message in result.output and "Traceback" not in result.output
