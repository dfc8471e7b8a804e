"""The org tree: real divisions, departments, the API and the CSV importer."""

from __future__ import annotations

from pathlib import Path

import pytest

from citybrain.core.errors import InvalidInput
from citybrain.hub.org.divisions import read_divisions
from citybrain.hub.org.flows import import_district
from citybrain.hub.org.tree import OrgTree, Unit

BASE = "/api/v1/org"


@pytest.mark.parametrize(("name", "towns", "villages"), [("pudong", 42, 1526), ("haidian", 29, 678), ("xihu", 12, 222)])
def test_packaged_districts_have_the_real_counts(name, towns, villages):
    divisions = read_divisions(name)
    assert sum(d.kind == "town" for d in divisions) == towns
    assert sum(d.kind == "village" for d in divisions) == villages
    assert divisions[0].kind == "district"


def test_pudong_import_is_idempotent(platform):
    first = import_district(platform, "pudong")
    assert (first["towns"], first["villages"], first["created"]) == (42, 1526, 1 + 42 + 1526 + 20)
    again = import_district(platform, "310115")
    assert (again["created"], again["updated"]) == (0, 0)
    assert len(platform.org_tree.descendants("310115")) == 1 + 42 + 1526 + 20


def test_tree_api(client):
    root = client.get(f"{BASE}/tree/330106", params={"depth": 1}).json()
    kinds = [child["kind"] for child in root["children"]]
    assert kinds.count("town") == 12 and kinds.count("department") == 20
    gudang = next(c for c in root["children"] if c["name"] == "古荡街道")
    assert gudang["child_count"] > 0 and gudang["children"] == []
    summary = client.get(f"{BASE}/units/330106/summary").json()
    assert summary["counts"] == {"town": 12, "village": 222, "department": 20}
    unit = client.get(f"{BASE}/units/330106007").json()
    assert (unit["name"], unit["kind"], unit["level"], unit["parent_code"]) == ("古荡街道", "town", 2, "330106")
    assert unit["attributes"]["subkind"] == "街道"
    dept = client.get(f"{BASE}/units/330106-shengtai").json()
    assert (dept["name"], dept["name_en"], dept["kind"]) == ("生态环境局", "Ecology and Environment Bureau", "department")
    assert [r["code"] for r in client.get(f"{BASE}/roots").json()] == ["330106"]
    assert client.get(f"{BASE}/units/999").status_code == 404
    assert client.get(f"{BASE}/tree/999").status_code == 404
    assert client.get(f"{BASE}/tree/330106", params={"depth": 9}).status_code == 422


def test_units_list_filters_and_pages(client):
    villages, cursor = [], None
    while True:
        page = client.get(f"{BASE}/units", params={"under": "330106007", "kind": "village", "limit": 5,
                                                   **({"cursor": cursor} if cursor else {})}).json()
        villages += page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert villages and all(v["parent_code"] == "330106007" for v in villages)
    assert len({v["code"] for v in villages}) == len(villages)
    named = client.get(f"{BASE}/units", params={"name": "社区", "parent": "330106012"}).json()["items"]
    assert named and all("社区" in v["name"] for v in named)
    assert client.get(f"{BASE}/units", params={"kind": "galaxy"}).status_code == 422


def test_tree_helpers():
    tree = OrgTree.build([Unit("1", "d", "district", 1, None), Unit("11", "t", "town", 2, "1"),
                          Unit("111", "v", "village", 3, "11"), Unit("12", "t2", "town", 2, "1")])
    assert tree.descendants("1") == ["1", "11", "111", "12"]
    assert tree.ancestors("111") == ["1", "11"]
    assert tree.within("111", ["11"]) and not tree.within("12", ["11"])


def _write_district(folder: Path, towns: str, villages: str) -> Path:
    (folder / "999999-test.district.csv").write_text('999999,"测试区",9999,99\n', encoding="utf-8")
    (folder / "999999-test.towns.csv").write_text("code,name,areaCode,provinceCode,cityCode\n" + towns, encoding="utf-8")
    (folder / "999999-test.villages.csv").write_text(
        "code,name,streetCode,provinceCode,cityCode,areaCode\n" + villages, encoding="utf-8")
    return folder / "999999-test.towns.csv"


def test_any_district_in_the_csv_layout_imports(platform, tmp_path):
    path = _write_district(tmp_path, '999999001,"一号街道",999999,99,9999\n',
                           '999999001001,"甲社区",999999001,99,9999,999999\n')
    counts = import_district(platform, path)
    assert (counts["towns"], counts["villages"]) == (1, 1)
    assert platform.org_tree.ancestors("999999001001") == ["999999", "999999001"]


@pytest.mark.parametrize(("towns", "villages", "where"), [
    ('999999001,"一号街道",888888,99,9999\n', "", "999999-test.towns.csv:2"),
    ('999999001,"一号街道",999999,99,9999\n', '999999001001,"甲社区",999999777,99,9999,999999\n',
     "999999-test.villages.csv:2"),
    ('999999001,"一号街道",999999,99,9999\n999999001,"重复",999999,99,9999\n', "", "999999-test.towns.csv:3"),
    ("not,a,row\n", "", "999999-test.towns.csv:2"),
])
def test_bad_division_files_name_the_line(tmp_path, towns, villages, where):
    with pytest.raises(InvalidInput) as caught:
        read_divisions(_write_district(tmp_path, towns, villages))
    assert caught.value.errors[0].field.endswith(where)
