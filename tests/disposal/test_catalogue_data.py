"""The catalogue the scenarios ship: it validates, and it covers what a district's operations centre and
the classifier need (every category, every TipDM first-level class, every LA 311 request type, the
sensing rules that should open cases)."""

from __future__ import annotations

import csv
from collections import Counter

import pytest

from citybrain.disposal.catalogue import service
from citybrain.disposal.catalogue.spec import CATEGORIES
from citybrain.scenarios import scenario_catalogue
from tests.disposal.conftest import column

TIPDM_CLASSES = ("城乡建设", "劳动和社会保障", "教育文体", "卫生计生", "交通运输", "商贸旅游", "环境保护")


@pytest.fixture(scope="module")
def catalogue() -> service.Catalogue:
    return scenario_catalogue()


def test_the_shipped_catalogue_covers_every_category(catalogue):
    assert len(catalogue) >= 80
    per_category = catalogue.counts()["category"]
    assert set(per_category) == set(CATEGORIES)
    assert min(per_category.values()) >= 8, per_category
    assert {entry.source for entry in catalogue.entries.values()} >= {"scenario:fire", "scenario:labour"}


def test_every_la311_request_type_is_referenced_once(catalogue, complaints):
    request_types = set(column(complaints / "la311_2020_requests_10k.csv", "requesttype"))
    referenced = Counter(ref for spec in catalogue for ref in spec.refs.la311)
    assert set(referenced) == request_types
    assert set(referenced.values()) == {1}
    assert catalogue.for_la311("Bulky Items").code == "CG-03-004"


def test_references_name_real_311_types_and_tipdm_paths(catalogue, complaints):
    nyc = set(column(complaints / "nyc311_2013-12-25_2386.csv", "Complaint Type"))
    used_nyc = {ref for spec in catalogue for ref in spec.refs.nyc311}
    assert used_nyc <= nyc
    assert len(used_nyc) >= 60  # the administrative ones (literature requests, internal) map to no event
    with (complaints / "tipdm2020c_taxonomy.csv").open(encoding="utf-8", newline="") as handle:
        paths = set()
        for row in csv.reader(list(handle)[1:]):
            paths |= {row[0], "/".join(row[:2]), "/".join(row)}
    unknown = [(spec.code, ref) for spec in catalogue for ref in spec.refs.tipdm if ref not in paths]
    assert unknown == []


@pytest.mark.parametrize("first_level", TIPDM_CLASSES)
def test_every_tipdm_first_level_class_has_a_general_type(catalogue, first_level):
    general = catalogue.for_tipdm(first_level)
    assert general is not None and first_level in general.refs.tipdm
    assert general.code.endswith("-99-001")
    # A label the catalogue does not map itself lands on its class's general type.
    assert catalogue.for_tipdm(f"{first_level}/某二级/某三级") == general


def test_fine_tipdm_labels_map_to_their_own_type(catalogue):
    assert catalogue.for_tipdm("城乡建设/城乡规划/违章建筑").code == "CG-02-001"
    assert catalogue.for_tipdm("城乡建设/城市建设和市政管理/燃气供应").priority == "emergency"


def test_sensing_triggers_point_at_real_rules(catalogue):
    rules = service.sensing_rules()
    triggers = [(t.device_type, t.rule) for spec in catalogue for t in spec.sensing]
    assert triggers and all(rule in rules[device] for device, rule in triggers)
    assert len(triggers) == len(set(triggers))
    assert catalogue.for_sensing("smoke_detector", "smoke").code == "XF-01-001"
    assert catalogue.for_sensing("manhole_cover", "cover-open").code == "CG-04-001"
    assert catalogue.for_sensing("waste_bin", "overflow").code == "CG-03-001"
    assert catalogue.for_sensing("water_level", "level-warning").category == "water"
    assert catalogue.for_sensing("air_quality", "pm25-heavy").department == "shengtai"
    assert catalogue.for_sensing("traffic_detector", "congestion").category == "roads_traffic"
    # Every rule of every device type opens some event type: no alert is left without a case to open.
    unmapped = {(d, r) for d, ids in rules.items() for r in ids} - set(triggers)
    assert unmapped == set()


def test_every_type_is_publishable_and_seeded(catalogue):
    codes = [spec.refs.open311_code for spec in catalogue]
    assert None not in codes and len(set(codes)) == len(codes)
    for spec in catalogue:
        assert 3 <= len(spec.examples.zh) <= 5 and 2 <= len(spec.examples.en) <= 3, spec.code
        assert spec.keywords.zh and spec.keywords.en, spec.code
        assert spec.code.startswith({"city_management": ("CG", "XF"), "roads_traffic": ("JT",),
                                     "environment": ("HB",), "water": ("SW",), "fire_safety": ("XF",),
                                     "community": ("SQ",), "market": ("SC",), "health": ("WJ",),
                                     "education": ("JY",), "labour": ("LD",)}[spec.category]), spec.code


def test_emergencies_are_answered_in_minutes(catalogue):
    emergencies = [spec for spec in catalogue if spec.priority == "emergency"]
    assert {spec.code for spec in emergencies} >= {"XF-01-001", "XF-02-001", "SW-02-001"}
    for spec in emergencies:
        assert spec.sla.respond.clock.total_seconds() <= 15 * 60, spec.code
        assert not spec.sla.handle.working, spec.code


def test_joint_types_name_the_departments_that_act(catalogue):
    shared_rental = catalogue.get("SQ-02-001")
    assert shared_rental.joint and shared_rental.department == "fangguan"
    assert set(shared_rental.assisting) == {"gongan", "xiaofang"}
    assert all(spec.assisting for spec in catalogue if spec.joint)
