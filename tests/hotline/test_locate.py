"""Address → org unit on the real division names of Pudong, Haidian and Xihu."""

from __future__ import annotations

from collections import Counter

import pytest

from citybrain.hotline.locate import Locator, locate, name_variants
from citybrain.hub.org.tree import OrgTree


@pytest.fixture(scope="module")
def pd(pudong: OrgTree) -> Locator:
    return Locator(pudong)


def where(locator: Locator, text: str) -> tuple[str, str] | None:
    found = locator.locate(text)
    return None if found is None else (found.code, found.kind)


@pytest.mark.parametrize("text", ["陆家嘴街道", "陆家嘴街道办事处门口", "找陆家嘴街道办反映", "浦东新区陆家嘴有人占道"])
def test_a_street_by_its_name_and_variants(pd: Locator, text: str) -> None:
    assert where(pd, text) == ("310115005", "town")


def test_short_bare_names_are_less_sure(pd: Locator) -> None:
    short, full = pd.locate("花木有人占道"), pd.locate("花木街道有人占道")
    assert short is not None and full is not None and short.code == full.code == "310115016"
    assert short.confidence < 0.6 < full.confidence


@pytest.mark.parametrize("text", ["浦东新区陆家嘴街道梅园一村居委会附近垃圾乱堆", "梅园一村居民委员会", "梅园一村社区楼道灯坏了",
                                  "梅园一村居委会"])
def test_a_community_under_lujiazui(pd: Locator, text: str) -> None:
    found = pd.locate(text)
    assert found is not None and (found.code, found.kind, found.town_code) == ("310115005001", "village", "310115005")
    assert text[found.start:found.end] == found.matched


def test_a_village_in_the_named_street_is_surer(pd: Locator) -> None:
    alone, with_town = pd.locate("梅园一村居委会"), pd.locate("陆家嘴街道梅园一村居委会")
    assert alone is not None and with_town is not None and with_town.confidence > alone.confidence


def test_a_name_shared_by_several_communities_needs_its_street(pd: Locator) -> None:
    # 东南居委会 exists under 潍坊新村街道, 周浦镇 and 新场镇 (or their neighbours): alone it says nothing.
    assert pd.locate("东南居委会门口") is None
    assert where(pd, "潍坊新村街道东南居委会门口") == ("310115004030", "village")
    # Named with a street it does not belong to: the street is all that is certain.
    assert where(pd, "洋泾街道东南居委会") == ("310115013", "town")


def test_ambiguous_villages_within_one_town_give_the_town(haidian: OrgTree) -> None:
    names = Counter(u.name for u in haidian.units.values() if u.kind == "village")
    shared = [n for n, c in names.items() if c > 1]
    assert shared  # 航天社区居委会
    towns = {u.parent_code for u in haidian.units.values() if u.name == shared[0]}
    found = Locator(haidian).locate(shared[0])
    if len(towns) == 1:
        assert found is not None and found.kind == "town" and found.confidence < 0.7
    else:
        assert found is None


@pytest.mark.parametrize("text", ["张江路上有个大坑", "南码头路100号门口", "崂山东路123号", "世纪大道地铁站", "浦东新区"])
def test_roads_and_the_district_are_not_units(pd: Locator, text: str) -> None:
    assert pd.locate(text) is None


def test_a_street_named_after_a_road(pd: Locator) -> None:
    assert where(pd, "南码头路街道") == ("310115010", "town")
    assert pd.locate("南码头路888号") is None


def test_longest_name_wins_over_a_name_inside_it(pd: Locator) -> None:
    # 南高桥村 (in 川沙新镇) contains 高桥 (高桥镇): the village wins, and the 高桥镇 named before it lowers
    # its confidence instead of moving it.
    found = pd.locate("高桥镇南高桥村")
    assert found is not None and found.code == "310115103205" and found.confidence < 0.7
    assert where(pd, "金桥经济技术开发区") == ("310115502", "town")
    assert where(pd, "金桥镇") == ("310115120", "town")
    assert where(pd, "合庆镇") == ("310115110", "town")  # not 合庆镇居委会, whose bare name it also is


def test_haidian(haidian: OrgTree) -> None:
    loc = Locator(haidian)
    assert where(loc, "海淀区中关村街道") == ("110108011", "town")
    assert loc.locate("北京市海淀区") is None  # 海淀 inside 海淀区 is the district, not 海淀街道
    assert where(loc, "海淀街道办事处") == ("110108012", "town")
    assert where(loc, "翠微路社区居委会") == ("110108001001", "village")
    assert where(loc, "青龙桥村") == ("110108023203", "village")
    assert loc.locate("翠微路口") is None


def test_xihu(xihu: OrgTree) -> None:
    loc = Locator(xihu)
    assert where(loc, "西湖区西湖街道") == ("330106008", "town")
    assert where(loc, "杭州西湖区龙井村茶园") == ("330106008205", "village")
    assert loc.locate("去西湖边走走") is None
    assert where(loc, "三墩镇") == ("330106109", "town")


@pytest.mark.parametrize("district", ["pudong", "haidian", "xihu"])
def test_every_unit_is_found_by_its_official_name(district: str, request: pytest.FixtureRequest) -> None:
    tree: OrgTree = request.getfixturevalue(district)
    loc = Locator(tree)
    names = Counter(u.name for u in tree.units.values())
    for unit in tree.units.values():
        if unit.kind == "district":
            continue
        if names[unit.name] == 1:
            text = f"反映{unit.name}的问题"
        else:  # shared names: the street settles it
            text = f"{tree.units[unit.parent_code].name}{unit.name}"  # type: ignore[index]
        found = loc.locate(text)
        assert found is not None and found.code == unit.code, (unit, found)


def test_variants_of_a_rural_village() -> None:
    from citybrain.hub.org.tree import Unit

    variants = name_variants(Unit("1", "太平村村委会", "village", 3, "0"))
    assert {"太平村", "太平村村委会", "太平村村民委员会"} <= set(variants)
    assert name_variants(Unit("2", "川沙新镇", "town", 2, "0")).keys() >= {"川沙新镇", "川沙镇", "川沙"}
    assert "南码头路" not in name_variants(Unit("3", "南码头路街道", "town", 2, "0"))


def test_one_off_helper(xihu: OrgTree) -> None:
    found = locate("梅家坞村委会", xihu)
    assert found is not None and found.kind == "village"
