"""Duplicate detection: the incremental index (add, find, evict, remove; time window and place), and the
labelled duplicate sample's file."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from citybrain.hotline.dedup import DedupSettings, DuplicateIndex, distance_m
from citybrain.hub.org.tree import OrgTree

PAIRS = Path(__file__).resolve().parents[2] / "bench" / "data" / "hotline_duplicate_pairs.csv"
DAY = 86400.0
T0 = 1_764_590_400.0

NOISE = "梅园一村居委会门口的垃圾桶已经三天没人清理了，气味很大，夏天蚊蝇很多，请尽快处理。"
NOISE_AGAIN = "梅园一村门口垃圾桶三天没人清理，味道很大，蚊蝇很多，希望尽快处理！"
OTHER = "世纪大道地铁站出口共享单车乱停乱放，占用盲道，行人无法通行。"
FILLER = [
    "张江镇某小区地下车库漏水严重，物业不管。", "周浦镇菜市场占道经营，早上堵车。", "花木街道路灯不亮，晚上很黑。",
    "三林镇工地夜间施工噪音扰民。", "北蔡镇公交站台破损，下雨无处躲。", "川沙新镇河道有人倾倒建筑垃圾。",
]


def index(**overrides: float) -> DuplicateIndex:
    idx = DuplicateIndex(DedupSettings(**overrides))
    for i, text in enumerate(FILLER):
        idx.add(f"f{i}", text, T0 - 3600 * (i + 1))
    return idx


def test_the_same_problem_in_other_words_is_found_and_others_are_not() -> None:
    idx = index()
    idx.add("a", NOISE, T0)
    idx.add("b", OTHER, T0)
    found = idx.find(NOISE_AGAIN, T0 + 3600)
    assert [report for report, _ in found] == ["a"]
    assert 0.3 <= found[0][1] < 1.0
    assert idx.find(NOISE, T0 + 60)[0] == ("a", 1.0)
    assert idx.find("完全无关的内容：咨询社保卡补办流程", T0) == []


def test_reports_outside_the_window_are_not_duplicates_and_get_evicted() -> None:
    idx = index(window_s=7 * DAY)
    idx.add("old", NOISE, T0)
    assert [r for r, _ in idx.find(NOISE_AGAIN, T0 + 6 * DAY)] == ["old"]
    assert idx.find(NOISE_AGAIN, T0 + 8 * DAY) == []
    assert idx.find(NOISE_AGAIN, T0 - 8 * DAY) == []  # and not before it either
    size = len(idx)
    idx.add("new", OTHER, T0 + 8 * DAY)  # the newest report moves the window: "old" falls out
    assert "old" not in idx and len(idx) == size - len(FILLER)
    assert idx.find(NOISE, T0 + 8 * DAY) == []


def test_evict_and_remove() -> None:
    idx = index()
    idx.add("a", NOISE, T0)
    assert idx.evict(T0 - 1.5 * 3600) == len(FILLER) - 1 and "f0" in idx and "f1" not in idx
    assert idx.remove("a") and not idx.remove("a")
    assert idx.find(NOISE, T0) == []


def test_adding_an_id_again_replaces_it() -> None:
    idx = index()
    idx.add("a", NOISE, T0)
    idx.add("a", OTHER, T0)
    assert idx.find(NOISE_AGAIN, T0) == [] and [r for r, _ in idx.find(OTHER, T0)] == ["a"]


def test_points_further_apart_than_the_radius_are_different_problems() -> None:
    idx = index(radius_m=300)
    here = (121.5050, 31.2400)
    idx.add("near", NOISE, T0, point=here)
    nearby, far = (121.5060, 31.2405), (121.5200, 31.2400)
    assert 50 < distance_m(here, nearby) < 150 and distance_m(here, far) > 1000
    assert [r for r, _ in idx.find(NOISE_AGAIN, T0, point=nearby)] == ["near"]
    assert idx.find(NOISE_AGAIN, T0, point=far) == []
    assert [r for r, _ in idx.find(NOISE_AGAIN, T0)] == ["near"]  # no place given: text decides


def test_org_units_must_agree_when_both_are_known(pudong: OrgTree) -> None:
    for idx in (index(), DuplicateIndex(tree=pudong)):
        idx.add("v", NOISE, T0, org_unit="310115005001")  # 梅园一村居委会, 陆家嘴街道
        assert [r for r, _ in idx.find(NOISE_AGAIN, T0, org_unit="310115005001")] == ["v"]
        assert [r for r, _ in idx.find(NOISE_AGAIN, T0, org_unit="310115005")] == ["v"]  # its street
        assert idx.find(NOISE_AGAIN, T0, org_unit="310115005003") == []  # a neighbouring community
        assert idx.find(NOISE_AGAIN, T0, org_unit="310115004") == []  # another street


def test_thresholds_are_settings() -> None:
    strict = index(threshold=0.95)
    strict.add("a", NOISE, T0)
    assert strict.find(NOISE_AGAIN, T0) == [] and strict.find(NOISE, T0) == [("a", 1.0)]
    with pytest.raises(ValueError):
        DedupSettings(threshold=0)


@given(st.lists(st.text(alphabet="城市管理道路积水噪音扰民小区物业停车收费学校医院公交地铁垃圾绿化路灯施工", min_size=12,
                        max_size=60), min_size=1, max_size=12, unique=True))
@settings(max_examples=60, deadline=None)
def test_every_report_finds_itself_until_it_is_removed(texts: list[str]) -> None:
    idx = DuplicateIndex(DedupSettings(top_k=len(texts)))
    for i, text in enumerate(texts):
        idx.add(str(i), text, T0 + i)
    for i, text in enumerate(texts):
        found = dict(idx.find(text, T0 + i))
        # Not exactly 1: a report's vector keeps the IDF of the moment it was added, the query's is today's.
        assert found.get(str(i), 0) >= 0.9
        assert all(0 < score <= 1.0001 for score in found.values())
    for i in range(len(texts)):
        assert idx.remove(str(i))
    assert len(idx) == 0 and all(idx.find(t, T0) == [] for t in texts)


# -- the labelled sample ------------------------------------------------------------------------------------

KINDS = {"same_problem", "same_request", "same_topic_different_place", "same_place_different_problem",
         "same_topic_different_case", "different_request_same_sender", "unrelated"}
POSITIVE_KINDS = {"same_problem", "same_request"}


def read_pairs() -> list[dict[str, str]]:
    with PAIRS.open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def test_the_labelled_sample_is_well_formed() -> None:
    rows = read_pairs()
    assert list(rows[0]) == ["id_a", "id_b", "label", "kind", "route", "note"]
    assert len(rows) >= 400 and sum(r["label"] == "1" for r in rows) >= 120
    assert sum(r["kind"] in {"same_topic_different_place", "same_place_different_problem"} for r in rows) >= 60
    seen = set()
    for r in rows:
        assert r["id_a"].isdigit() and r["id_b"].isdigit() and int(r["id_a"]) < int(r["id_b"]), r
        assert (r["id_a"], r["id_b"]) not in seen, r
        seen.add((r["id_a"], r["id_b"]))
        assert r["label"] in {"0", "1"} and r["kind"] in KINDS, r
        assert (r["label"] == "1") == (r["kind"] in POSITIVE_KINDS), r
        assert r["route"] in {"high_sim", "place", "subject", "medium_sim", "random", "hard_neg", "audit"}, r
        assert 5 <= len(r["note"]) <= 120, r


def test_the_labelled_ids_exist_in_the_shared_messages(tipdm_messages: Path) -> None:
    with tipdm_messages.open(encoding="utf-8-sig", newline="") as handle:
        ids = {row["留言编号"] for row in csv.DictReader(handle)}
    missing = {i for r in read_pairs() for i in (r["id_a"], r["id_b"])} - ids
    assert not missing
