"""`citybrain catalogue …` through the CLI runner: validate, import, export, list — on both stores."""

from __future__ import annotations

import pytest
import yaml
from typer.testing import CliRunner

from citybrain.cli import app
from tests.disposal.conftest import entry

runner = CliRunner()
SHIPPED = sorted(str(p) for p in __import__("pathlib").Path(__file__).resolve().parents[2]
                 .joinpath("src/citybrain/scenarios/catalogue").glob("*.yaml"))


@pytest.mark.parametrize("command", [["catalogue"], ["catalogue", "validate"], ["catalogue", "import"],
                                     ["catalogue", "export"], ["catalogue", "list"]])
def test_every_catalogue_command_explains_itself(command):
    result = runner.invoke(app, [*command, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output


def test_validate_summarises_the_shipped_files():
    result = runner.invoke(app, ["catalogue", "validate", *SHIPPED])
    assert result.exit_code == 0, result.output
    assert f"in {len(SHIPPED)} file(s)" in result.output and "fire_safety (消防与安全生产)" in result.output
    assert "emergency" in result.output and "village" in result.output


def test_validate_lists_each_problem_and_exits_2(tmp_path):
    bad = tmp_path / "bad.yaml"
    entries = [entry(department="wizards"), entry("CG-01-902"), entry("CG-01-902", refs={"open311_code": "x"})]
    bad.write_text(yaml.safe_dump({"event_types": entries}), encoding="utf-8")
    result = runner.invoke(app, ["catalogue", "validate", str(bad)])
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert lines[0].startswith(f"error: {bad}: event_types[0].department: unknown department 'wizards'")
    # The valid entries of a file with a broken one are still checked against each other.
    duplicate = f"{bad}: event_types[2].code: code 'CG-01-902' is already used at {bad}: event_types[1].code"
    assert lines[1] == f"error: {duplicate}"
    assert len(lines) == 2
    assert runner.invoke(app, ["catalogue", "validate", str(tmp_path / "none.yaml")]).exit_code == 2


def test_export_import_round_trip(db_url, tmp_path):
    store = ["--db", db_url, "--home", str(tmp_path)]
    first = tmp_path / "catalogue.yaml"
    exported = runner.invoke(app, ["catalogue", "export", "-o", str(first), *store])
    assert exported.exit_code == 0, exported.output
    assert "129 event types written" in exported.output  # a fresh store holds the scenarios' catalogue

    # A city edits one type and adds its own, then imports the file back.
    document = yaml.safe_load(first.read_text(encoding="utf-8"))
    document["event_types"][0]["name"]["zh"] = "城市自定义名称"
    document["event_types"].append(entry("CG-09-001", refs={"open311_code": "city-own"}))
    edited = tmp_path / "city.yaml"
    edited.write_text(yaml.safe_dump(document, allow_unicode=True, sort_keys=False), encoding="utf-8")
    imported = runner.invoke(app, ["catalogue", "import", str(edited), *store])
    assert imported.exit_code == 0, imported.output
    assert "130 event types imported" in imported.output

    again = tmp_path / "again.yaml"
    assert runner.invoke(app, ["catalogue", "export", "-o", str(again), *store]).exit_code == 0
    by_code = {e["code"]: e for e in yaml.safe_load(again.read_text(encoding="utf-8"))["event_types"]}
    assert by_code == {e["code"]: e for e in document["event_types"]}
    # Importing the same file again changes nothing, and the export is the same text.
    unchanged = runner.invoke(app, ["catalogue", "import", str(edited), *store])
    assert "0 written, 130 unchanged" in unchanged.output
    third = runner.invoke(app, ["catalogue", "export", *store])
    assert third.output == again.read_text(encoding="utf-8")

    listed = runner.invoke(app, ["catalogue", "list", "--category", "city_management", *store])
    assert listed.exit_code == 0 and "27 event types" in listed.output and "CG-09-001" in listed.output
    assert "XF-01-001" not in listed.output


def test_import_writes_nothing_when_any_file_is_bad(db_url, tmp_path):
    store = ["--db", db_url, "--home", str(tmp_path)]
    good, bad = tmp_path / "good.yaml", tmp_path / "bad.yaml"
    good.write_text(yaml.safe_dump({"event_types": [entry("CG-09-001")]}), encoding="utf-8")
    bad.write_text(yaml.safe_dump({"event_types": [entry("CG-09-002", sla={"respond": "2h"})]}), encoding="utf-8")
    refused = runner.invoke(app, ["catalogue", "import", str(good), str(bad), *store])
    assert refused.exit_code == 2
    assert "bad.yaml: event_types[0].sla.handle" in refused.output
    listed = runner.invoke(app, ["catalogue", "list", *store])
    assert "CG-09-001" not in listed.output and "129 event types" in listed.output


def test_import_refuses_a_reference_a_stored_type_already_uses(db_url, tmp_path):
    store = ["--db", db_url, "--home", str(tmp_path)]
    clash = tmp_path / "clash.yaml"
    clash.write_text(yaml.safe_dump({"event_types": [entry("CG-09-001", refs={"open311_code": "gas-leak"})]}),
                     encoding="utf-8")
    refused = runner.invoke(app, ["catalogue", "import", str(clash), *store])
    assert refused.exit_code == 2
    assert "refs.open311_code" in refused.output and "XF-02-001" in refused.output


def test_list_filters_by_department_and_refuses_unknown_filters(tmp_path):
    home = ["--home", str(tmp_path)]
    listed = runner.invoke(app, ["catalogue", "list", "--department", "xiaofang", *home])
    assert listed.exit_code == 0
    assert "XF-01-001" in listed.output and "SQ-02-001" in listed.output  # leads one, assists on the other
    assert "JY-01-001" not in listed.output
    for args in (["--department", "wizards"], ["--category", "weather"]):
        refused = runner.invoke(app, ["catalogue", "list", *args, *home])
        assert refused.exit_code == 2 and "unknown" in refused.output
