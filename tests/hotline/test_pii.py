"""Personal data: detection of every kind, masking actions (one contract over every registered masker),
and masking policies by role."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from citybrain.hotline.pii import (
    DEFAULT_POLICY,
    KINDS,
    ROLES,
    SURNAMES,
    MaskContext,
    MaskingPolicy,
    PiiSpan,
    find_pii,
    luhn_valid,
    mask_record,
    mask_text,
    maskers,
    valid_id_card,
)
from citybrain.hotline.pii.detect import id_check_digit
from citybrain.hotline.pii.maskers import normalized_value

ID_NUMBER = "11010519491231002X"  # the GB 11643 standard's own example
SAMPLES: dict[str, str] = {
    "mobile": "13812345678",
    "landline": "021-62345678",
    "id_card": ID_NUMBER,
    "plate": "沪AD12345",
    "email": "zhang.san@example.com",
    "us_phone": "(212) 555-1234",
    "bank_card": "6222021234567890128",
    "name": "张三丰",
}


def kinds(text: str) -> list[tuple[str, str]]:
    return [(s.kind, s.text) for s in find_pii(text)]


# -- detection --------------------------------------------------------------------------------------------


@st.composite
def id_numbers(draw: st.DrawFn) -> str:
    region = draw(st.sampled_from(["110105", "310115", "330106", "430102", "440305"]))
    born = draw(st.dates(min_value=__import__("datetime").date(1920, 1, 1),
                         max_value=__import__("datetime").date(2020, 12, 31)))
    seq = draw(st.integers(0, 999))
    first17 = f"{region}{born:%Y%m%d}{seq:03d}"
    return first17 + id_check_digit(first17)


@st.composite
def mobiles(draw: st.DrawFn) -> tuple[str, str]:
    """(digits, as written): plain, 3-4-4 with spaces or dashes, with +86 or 86."""
    digits = "1" + draw(st.sampled_from("3456789")) + "".join(draw(st.lists(
        st.sampled_from("0123456789"), min_size=9, max_size=9)))
    sep = draw(st.sampled_from(["", " ", "-"]))
    written = f"{digits[:3]}{sep}{digits[3:7]}{sep}{digits[7:]}"
    prefix = draw(st.sampled_from(["", "+86 ", "+86", "86-"]))
    return digits, prefix + written


FILLER = st.text(alphabet="反映小区门口垃圾堆放很久没有清理噪音扰民请尽快处理谢谢，。！", max_size=30)


@given(id_numbers(), FILLER, FILLER)
def test_valid_id_numbers_are_found_and_never_shown_whole(number: str, before: str, after: str) -> None:
    text = f"{before}身份证{number}{after}"
    assert ("id_card", number) in kinds(text)
    for role in ("dispatcher", "analyst", "district_leader", "no-such-role"):
        assert number not in mask_text(text, role)
    assert number in mask_text(text, "auditor")


@given(id_numbers())
def test_a_wrong_check_character_is_not_an_id_number(number: str) -> None:
    wrong = number[:17] + next(c for c in "0123456789X" if c != number[17])
    assert not valid_id_card(wrong)
    assert ("id_card", wrong) not in kinds(f"号码{wrong}。")


def test_old_fifteen_digit_id_numbers_are_found() -> None:
    assert kinds("旧身份证110105491231002号") == [("id_card", "110105491231002")]
    assert not valid_id_card("110105491331002")  # month 13


@given(mobiles(), FILLER)
def test_mobile_numbers_are_found_in_any_usual_writing(mobile: tuple[str, str], filler: str) -> None:
    digits, written = mobile
    text = f"{filler}电话{written}联系"
    assert ("mobile", written) in kinds(text)
    assert f"{digits[:3]}****{digits[-4:]}" in mask_text(text, "dispatcher")


@given(st.text(alphabet="反映小区门口垃圾堆放很久没有清理噪音扰民请尽快处理谢谢的路口公交车站楼道灯坏了，。！？ ", max_size=80))
@settings(max_examples=200)
def test_text_without_personal_data_is_unchanged_by_masking(text: str) -> None:
    assert find_pii(text) == []
    for role in (*ROLES, "no-such-role"):
        assert mask_text(text, role) == text


@pytest.mark.parametrize(("text", "expected"), [
    ("座机021-62345678转123", [("landline", "021-62345678转123")]),
    ("电话(010)62345678", [("landline", "(010)62345678")]),
    ("0571-88886666", [("landline", "0571-88886666")]),
    ("+86 21 6234 5678", [("landline", "+86 21 6234 5678")]),
    ("call (212) 555-1234 or +1 415.555.2671", [("us_phone", "(212) 555-1234"), ("us_phone", "+1 415.555.2671")]),
    ("邮箱zhang.san@example.com。", [("email", "zhang.san@example.com")]),
    ("卡号6222021234567890128", [("bank_card", "6222021234567890128")]),
    ("卡号 6222 0212 3456 7890 128", [("bank_card", "6222 0212 3456 7890 128")]),
    ("车牌沪A12345，新能源沪AD12345和粤B12345F", [("plate", "沪A12345"), ("plate", "沪AD12345"),
                                                ("plate", "粤B12345F")]),
    ("沪A·D1234、使014578、京A1234领", [("plate", "沪A·D1234"), ("plate", "使014578"), ("plate", "京A1234领")]),
])
def test_numbers_codes_and_addresses(text: str, expected: list[tuple[str, str]]) -> None:
    assert kinds(text) == expected


@pytest.mark.parametrize("text", [
    "卡号6222021234567890127",  # Luhn fails
    "订单号2019123112345678",  # starts with 2: no card network
    "沪A股票上涨，京AB公司",  # plate-like but not a plate
    "13812345678901",  # too long for a phone
    "面积120平方米，2019年5月31日交房，12345热线",
    "投诉到总部400-889-3333，或拨800-555-0199",  # service lines, not persons
])
def test_number_look_alikes_are_not_personal_data(text: str) -> None:
    assert find_pii(text) == []


def test_luhn() -> None:
    assert luhn_valid("79927398713") and not luhn_valid("79927398710")


@pytest.mark.parametrize(("text", "names"), [
    ("我叫李建义，来自湖北", ["李建义"]),
    ("姓名：王小明 电话", ["王小明"]),
    ("联系人张先生，请回电", ["张先生"]),
    ("联系人：欧阳娜娜", ["欧阳娜娜"]),
    ("经营者：黄兵梅 地址", ["黄兵梅"]),
    ("请李女士和王师傅到场", ["李女士", "王师傅"]),
    ("投诉人：刘严联系电话：", ["刘严"]),
    ("控告人潘平安，住某地", ["潘平安"]),
    ("My name is John Smith and Ms. Brown called", ["John Smith", "Brown"]),
])
def test_names_after_cues_and_before_honorifics(text: str, names: list[str]) -> None:
    assert [s.text for s in find_pii(text) if s.kind == "name"] == names


@pytest.mark.parametrize("text", [
    "王府井大街人太多", "张江镇的路灯不亮", "我和老师一起去", "向老师反映过", "我是业主", "高桥镇政府",
    "李子园小区", "投诉人员态度差", "联系人员不在", "投诉人相信还有很多", "经营者严重违法", "值班老师要求",
    "校车师傅告知", "是位女士接的", "姓名和联系方式", "用我的姓名查询",
])
def test_places_and_words_that_start_with_a_surname_are_not_names(text: str) -> None:
    assert [s for s in find_pii(text) if s.kind == "name"] == []


def test_surname_list_is_the_common_one() -> None:
    assert {"王", "李", "张", "刘", "陈", "欧阳", "司马"} <= SURNAMES and len(SURNAMES) > 250


# -- maskers: one contract over every registered one ------------------------------------------------------


@pytest.mark.parametrize(("slug", "cls"), maskers.items(), ids=[slug for slug, _ in maskers.items()])
def test_masker_contract(slug: str, cls: type) -> None:
    manifest = cls.manifest
    assert manifest.slug == slug
    masker = cls()
    context = MaskContext(key=b"k")
    for kind, value in SAMPLES.items():
        span = PiiSpan(kind, 0, len(value), value)  # type: ignore[arg-type]
        out = masker.mask(span, context)
        assert isinstance(out, str) and out
        assert masker.mask(span, context) == out, "masking must be deterministic"
        if not manifest.reveals_value:
            assert value not in out and normalized_value(span) not in out
    assert (manifest.permissiveness == max(c.manifest.permissiveness for _, c in maskers.items())) \
        == manifest.reveals_value


@pytest.mark.parametrize(("kind", "masked"), [
    ("mobile", "138****5678"), ("id_card", "110***********002X"), ("plate", "沪A·****45"),
    ("email", "z***@example.com"), ("name", "张**"), ("landline", "021-****5678"),
    ("bank_card", "6222***********0128"), ("us_phone", "(***) ***-1234"),
])
def test_partial_shapes(kind: str, masked: str) -> None:
    value = SAMPLES[kind]
    assert maskers.get("partial")().mask(PiiSpan(kind, 0, len(value), value), MaskContext()) == masked  # type: ignore[arg-type]


def test_hash_links_the_same_value_however_written_and_depends_on_the_key() -> None:
    a = mask_text("电话138 1234 5678", "analyst", key=b"one")
    b = mask_text("手机+8613812345678", "analyst", key=b"one")
    c = mask_text("电话13812345678", "analyst", key=b"two")
    tag = a.removeprefix("电话")
    assert tag.startswith("[手机号#") and b.endswith(tag) and not c.endswith(tag)
    assert mask_text("电话13912345678", "analyst", key=b"one") != a


def test_redact_labels_follow_the_language() -> None:
    assert mask_text("电话13812345678", "stranger") == "电话[手机号]"
    assert mask_text("call (212) 555-1234", "stranger") == "call [phone]"


# -- policies -------------------------------------------------------------------------------------------


def test_default_policy_covers_every_role() -> None:
    assert set(DEFAULT_POLICY.roles) == set(ROLES)


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("kind", KINDS)
def test_each_role_gets_its_policy_action(role: str, kind: str) -> None:
    value = SAMPLES[kind]
    action = DEFAULT_POLICY.roles[role].get(kind, DEFAULT_POLICY.roles[role].get("*"))
    expected = maskers.get(action)().mask(PiiSpan(kind, 0, len(value), value), MaskContext(key=b"k"))  # type: ignore[arg-type]
    assert mask_record({"v": value, "other": value}, {"v": kind}, role, key=b"k") == {"v": expected, "other": value}


@pytest.mark.parametrize("kind", KINDS)
def test_unknown_roles_get_the_most_restrictive_action(kind: str) -> None:
    least = min((c.manifest.permissiveness, slug) for slug, c in maskers.items())[1]
    assert DEFAULT_POLICY.action("contractor", kind) == least == "redact"
    assert DEFAULT_POLICY.action([], kind) == least


def test_several_roles_get_the_most_permissive_action() -> None:
    assert DEFAULT_POLICY.action(["analyst", "dispatcher"], "mobile") == "partial"
    assert DEFAULT_POLICY.action(["village_station", "department_handler"], "mobile") == "none"
    assert DEFAULT_POLICY.action(["contractor", "analyst"], "bank_card") == "hash"
    record = {"phone": "13812345678", "name": "张三丰", "content": "我叫张三丰，电话13812345678"}
    fields = {"phone": "mobile", "name": "name", "content": "text"}
    assert mask_record(record, fields, ["village_station", "dispatcher"]) == {
        "phone": "138****5678", "name": "张**", "content": "我叫张**，电话138****5678"}


def test_policies_are_yaml_data_checked_on_load() -> None:
    assert MaskingPolicy.from_yaml(DEFAULT_POLICY.to_yaml()) == DEFAULT_POLICY
    custom = MaskingPolicy.from_yaml("roles:\n  dispatcher: {mobile: hash}\nunknown_role: redact\n")
    assert custom.action("dispatcher", "mobile") == "hash" and custom.action("dispatcher", "name") == "redact"
    with pytest.raises(ValueError, match="unknown action 'blur'"):
        MaskingPolicy.from_yaml("roles:\n  dispatcher: {mobile: blur}\n")
    with pytest.raises(ValueError, match="unknown kind 'iban'"):
        MaskingPolicy.from_yaml("roles:\n  dispatcher: {iban: none}\n")
    with pytest.raises(ValueError, match="unknown kind 'fax'"):
        mask_record({"f": "x"}, {"f": "fax"}, "auditor")


def test_the_hash_key_is_a_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    from citybrain.settings import get_settings

    get_settings.cache_clear()
    default = mask_text("电话13812345678", "analyst")
    monkeypatch.setenv("CITYBRAIN_PII_HASH_KEY", "district-secret")
    get_settings.cache_clear()
    try:
        keyed = mask_text("电话13812345678", "analyst")
        assert keyed != default and keyed == mask_text("电话13812345678", "analyst", key=b"district-secret")
    finally:
        monkeypatch.delenv("CITYBRAIN_PII_HASH_KEY")
        get_settings.cache_clear()
