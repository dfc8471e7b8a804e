"""Bad catalogue files are refused, each problem named by its field path, all problems at once."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from citybrain.core.errors import InvalidInput
from citybrain.disposal.catalogue import service
from citybrain.disposal.catalogue.spec import EventTypeSpec
from citybrain.scenarios import Scenario, ScenarioManifest, scenario_catalogue, scenarios
from tests.disposal.conftest import entry


def problems(*files: list[dict[str, Any]] | str) -> list[tuple[str, str]]:
    """(field, reason) of every problem of the files (named a.yaml, b.yaml, …), [] when they are valid."""
    texts = [(f"{'abc'[i]}.yaml",
              f if isinstance(f, str) else yaml.safe_dump({"event_types": f}, allow_unicode=True), None)
             for i, f in enumerate(files)]
    try:
        service.read_files(texts)
    except InvalidInput as exc:
        return [(e.field, e.reason) for e in exc.errors]
    return []


def fields(*files: list[dict[str, Any]] | str) -> list[str]:
    return [field for field, _ in problems(*files)]


def test_a_valid_file_passes():
    assert problems([entry(), entry("CG-01-902")]) == []


@pytest.mark.parametrize(("bad", "field"), [
    ({"department": "wizards"}, "a.yaml: event_types[1].department"),
    ({"assisting": ["gongan", "wizards"]}, "a.yaml: event_types[1].assisting[1]"),
    ({"sla": {"respond": "2h", "handle": "3 weeks", "close": "1wd"}}, "a.yaml: event_types[1].sla.handle"),
    ({"sla": {"respond": "0h", "handle": "3wd", "close": "1wd"}}, "a.yaml: event_types[1].sla.respond"),
    ({"joint": True}, "a.yaml: event_types[1].joint"),
    ({"assisting": ["chengguan"]}, "a.yaml: event_types[1].assisting"),
    ({"assisting": ["gongan", "gongan"]}, "a.yaml: event_types[1].assisting"),
    ({"code": "cg-1"}, "a.yaml: event_types[1].code"),
    ({"category": "weather"}, "a.yaml: event_types[1].category"),
    ({"level": "province"}, "a.yaml: event_types[1].level"),
    ({"evidence": ["selfie"]}, "a.yaml: event_types[1].evidence[0]"),
    ({"colour": "red"}, "a.yaml: event_types[1].colour"),
    ({"code": "CG-01-901", "refs": {"open311_code": "other"}}, "a.yaml: event_types[1].code"),
    ({"refs": {"open311_code": "cg-01-901"}}, "a.yaml: event_types[1].refs.open311_code"),
    ({"refs": {"tipdm": ["城乡建设//违章建筑"]}}, "a.yaml: event_types[1].refs.tipdm[0]"),
    ({"sensing": [{"device_type": "smoke_detector", "rule": "smell"}]}, "a.yaml: event_types[1].sensing[0].rule"),
    ({"sensing": [{"device_type": "weather_vane", "rule": "spin"}]},
     "a.yaml: event_types[1].sensing[0].device_type"),
    ({"priority": "emergency", "sla": {"respond": "1wh", "handle": "4h", "close": "1d"}},
     "a.yaml: event_types[1].sla.respond"),
])
def test_a_bad_entry_is_named_by_its_field_path(bad, field):
    assert fields([entry(), entry(**{"code": "CG-01-902", **bad})]) == [field]


def test_every_problem_is_reported_not_only_the_first():
    found = fields([entry(department="wizards", sla={"respond": "soon", "handle": "3wd", "close": "1wd"}),
                    entry("CG-01-902", joint=True)])
    assert found == ["a.yaml: event_types[0].department", "a.yaml: event_types[0].sla.respond",
                     "a.yaml: event_types[1].joint"]


def test_references_used_twice_name_both_places():
    first = entry(refs={"open311_code": "a", "la311": ["Bulky Items"], "nyc311": ["Noise"]},
                  sensing=[{"device_type": "waste_bin", "rule": "overflow"}])
    second = entry("CG-01-902", refs={"open311_code": "b", "la311": ["Bulky Items"], "nyc311": ["Noise"]},
                   sensing=[{"device_type": "waste_bin", "rule": "overflow"}])
    found = problems([first], [second])
    assert [f for f, _ in found] == ["b.yaml: event_types[0].refs.la311[0]", "b.yaml: event_types[0].refs.nyc311[0]",
                                     "b.yaml: event_types[0].sensing[0]"]
    assert all("a.yaml: event_types[0]" in reason for _, reason in found)


def test_a_code_in_two_files_names_both():
    [(field, reason)] = problems([entry()], [entry(refs={"open311_code": "other"})])
    assert field == "b.yaml: event_types[0].code" and "a.yaml: event_types[0]" in reason


@pytest.mark.parametrize(("text", "field"), [
    ("event_types: [", "a.yaml: yaml"),
    ("- just a list", "a.yaml: document"),
    ("event_types: []", "a.yaml: event_types"),
    ("version: 0\nevent_types: [{code: CG-01-001}]", "a.yaml: version"),
])
def test_a_broken_file_is_refused(text, field):
    assert fields(text)[0] == field


def test_invalid_yaml_says_where():
    [(_, reason)] = problems("event_types:\n  - code: [CG\n")
    assert "line 3" in reason


def test_parse_file_alone_gives_paths_within_the_file():
    text = yaml.safe_dump({"event_types": [entry(department="wizards")]})
    with pytest.raises(InvalidInput) as caught:
        service.parse_file(text, source="x.yaml")
    assert [e.field for e in caught.value.errors] == ["event_types[0].department"]


def test_dump_reads_back_to_the_same_specs():
    specs = [EventTypeSpec.model_validate(entry(sla={"respond": "0.5h", "handle": "3wd", "close": "1wd"},
                                                keywords={"zh": ["井盖"], "en": ["manhole"]}))]
    again = service.parse_file(service.dump_file(specs), source="dump")
    assert again.event_types == specs
    assert "respond: 0.5h" in service.dump_file(specs)


def test_a_code_shipped_by_two_scenarios_names_both(monkeypatch):
    class Copycat(Scenario):
        manifest = ScenarioManifest(slug="copycat", title="Copycat", title_zh="重复", catalogue=["fire.yaml"])

    monkeypatch.setitem(scenarios._items, "copycat", Copycat)
    with pytest.raises(InvalidInput) as caught:
        scenario_catalogue()
    first = caught.value.errors[0]
    assert first.field.startswith("scenario fire catalogue/fire.yaml: event_types[0]")
    assert "scenario copycat catalogue/fire.yaml" in first.reason


def test_a_missing_scenario_file_is_named(monkeypatch):
    class Forgetful(Scenario):
        manifest = ScenarioManifest(slug="forgetful", title="Forgetful", title_zh="遗漏", catalogue=["none.yaml"])

    monkeypatch.setitem(scenarios._items, "forgetful", Forgetful)
    with pytest.raises(InvalidInput, match="forgetful catalogue/none.yaml"):
        scenario_catalogue()
