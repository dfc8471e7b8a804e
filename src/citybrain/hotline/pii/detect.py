"""Finding personal data in free text: typed spans (kind, start, end, text).

Each kind is a regular expression plus, where the format has one, a validator (the GB 11643 check digit of
resident ID numbers, the Luhn digit of bank cards, the calendar date inside an ID number). Candidates of
all kinds are collected, then overlaps are resolved: the earliest span wins, then the longest, then the
kind listed first in `KINDS` (so an 18-digit number that is a valid ID number is an ID, not a bank card).

Names are the hard part, and precision matters more than recall there: a name is only taken after a cue
(我叫…, 姓名：…, 联系人…, 举报人…, my name is …) or before an honorific (张先生, 李女士, 王师傅, Mr. Smith),
and a Chinese name must start with a common surname (`SURNAMES`). So 王府井 or 张江镇 are not names, while
张先生 and 我叫李建国 are.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date
from typing import Literal

PiiKind = Literal["mobile", "landline", "id_card", "plate", "email", "us_phone", "bank_card", "name"]
KINDS: tuple[PiiKind, ...] = ("id_card", "mobile", "landline", "us_phone", "bank_card", "email", "plate", "name")


@dataclass(frozen=True, slots=True)
class PiiSpan:
    """One piece of personal data found in a text: `text == source[start:end]`."""

    kind: PiiKind
    start: int
    end: int
    text: str


# -- surnames -------------------------------------------------------------------------------------------------

# The ~300 most common single-character surnames (they cover well over 95 % of the population) and the
# compound ones that still occur.
_SINGLE = (
    "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘于蒋蔡余杜叶程苏魏吕丁任沈"
    "姚卢姜崔钟谭陆汪范金石廖贾夏韦付方白邹孟熊秦邱江尹薛闫段雷侯龙史陶黎贺顾毛郝龚邵万钱严覃武戴莫孔向"
    "汤常温康施文牛樊葛邢安齐易乔伍庞颜倪庄聂章鲁岳翟殷詹申欧耿关兰焦俞左柳甘祝包宁尚符舒阮柯纪梅童凌毕"
    "单季裴霍涂成苗谷盛曲翁冉骆蓝路游辛靳管柴蒙鲍华喻祁蒲房滕屈饶解牟艾尤阳时穆农司卓古吉缪简车项连芦麦"
    "褚娄窦戚岑景党宫费卜冷晏席卫米柏宗瞿桂全佟应臧闵苟邬边卞姬师和仇栾隋商刁沙荣巫寇桑郎甄丛仲虞敖巩明"
    "佘池查麻苑迟邝官封谈匡鞠惠荆乐冀郁胥南班储原栗燕楚鄢劳谌奚皮粟冼蔺楼盘满闻位厉伊仝区郜海阚花权强帅"
    "屠豆朴盖练廉禹井祖漆巴丰支卿国狄平计索宣晋相初门云容敬来扈晁芮都普阙浦戈伏鹿薄邸雍辜羊阿乌母裘亓修"
    "邰赫杭况那宿鲜印逯隆茹诸战慕危玉银亢嵇公哈湛宾戎勾茅利於呼居揭干但尉冶斯元束檀衣信展阴昝智幸奉植衡"
    "富尧闭由"
)
_COMPOUND = (
    "欧阳", "司马", "诸葛", "上官", "东方", "皇甫", "尉迟", "公孙", "慕容", "令狐", "长孙", "宇文", "司徒",
    "夏侯", "轩辕", "端木", "独孤", "南宫", "西门", "百里", "呼延", "万俟", "申屠", "钟离", "闻人", "赫连",
    "澹台", "太史", "濮阳", "淳于", "单于", "公羊", "东郭", "鲜于", "拓跋", "左丘", "第五", "谷梁",
)
SURNAMES: frozenset[str] = frozenset(_SINGLE) | frozenset(_COMPOUND)
_SURNAME_RE = "(?:" + "|".join(_COMPOUND) + "|[" + _SINGLE + "])"

# Characters that end a given name in running text ("我叫张三今年…" → 张三): common function words and
# verbs that follow a name, never the second character of one.
_NOT_IN_NAME = set("的了是在和与及或今现住家从来去到说要想向给被把让请我你他她它们也都就还已曾将对于为因所以"
                   "，。、；：！？“”‘’（）()《》【】 \t\n")
_HONORIFICS = ("先生", "女士", "小姐", "师傅", "阿姨", "大爷", "大妈", "大姐", "大哥", "老师", "老伯", "奶奶", "爷爷")
# Surnames that are also everyday words before a form of address (和老师 "and the teacher", 向师傅 "to the
# driver"): taken only after a cue, never from the honorific alone.
_WORDLIKE_SURNAMES = set("和向于时都但那来信相也被给对跟请问找叫让与及或是有在的把为位")
# Strong cues are followed by a name; weak ones (举报人, 经营者 …) often by a verb (投诉人相信, 经营者严重…),
# so after a weak cue a name counts only after a colon or a space, or when punctuation, a digit or the
# end of the text follows it.
_STRONG_CUES = ("我叫", "本人叫", "名字叫", "我的名字是", "我的名字叫", "本人姓名", "姓名", "联系人")
_WEAK_CUES = ("举报人", "投诉人", "反映人", "控告人", "被控告人", "申请人", "求助人", "来电人", "报案人", "经营者", "户主",
              "法人代表", "法定代表人")
_CUE_RE = re.compile("(" + "|".join(sorted(_STRONG_CUES + _WEAK_CUES, key=len, reverse=True))
                     + r")(?:是|为)?([:：\s]{0,3})")
_NAME_END_OK = re.compile(r"$|[\s\d，。、；：！？,.;:!?（）()“”\"'《》【】\-—]")
# Two-character words that start with a surname character and follow cues or precede titles in
# complaints; never read as a name.
_NOT_NAMES = frozenset(("严重", "利用", "相信", "单方", "单位", "方面", "方便", "方式", "时间", "时候", "高度", "全部", "全体",
                        "全面", "明确", "明显", "安全", "安排", "关于", "关系", "公司", "公开", "公共", "公示", "和联", "向上",
                        "任何", "周边", "周围", "马上", "常年", "于是", "应该", "管理", "成立", "包括", "程序", "施工", "申请",
                        "解决", "车辆", "车位", "路口", "路面", "未经", "没有", "曾经", "多次", "多年", "查询", "查看", "登记"))
# Before a surname + title (王先生, 李老师) stands punctuation, a non-Chinese character, or one of these
# words; any other character makes the surname the end of another word (值班老师, 校车师傅, 一位女士).
_BEFORE_TITLE = set("的请找叫让给被和与跟向对问是将把由及称姓老小位名个有说在经等为从替帮喊诉系电知过或了着到见遇")
_HAN = re.compile(r"[\u4e00-\u9fff]")
_FIELD_WORDS = frozenset(("联系", "日期", "电话", "手机", "身份", "地址", "性别", "年龄", "住址", "籍贯"))

_EN_CUE_RE = re.compile(r"\b(?:[Mm]y name is|[Nn]ame\s*:|[Cc]ontact(?: person)?\s*:|[Cc]aller\s*:)\s*"
                        r"((?:[A-Z][a-z'\-]+)(?:\s+[A-Z][a-z'\-]+){0,2})")
_EN_TITLE_RE = re.compile(r"\b(?:Mr|Mrs|Ms|Miss|Dr)\.?\s+((?:[A-Z][a-z'\-]+)(?:\s+[A-Z][a-z'\-]+)?)")


def _given_name(text: str, start: int) -> int:
    """End of a 1–2 character given name starting at `start` (start itself if there is none)."""
    end = start
    while end < len(text) and end - start < 2 and _HAN.match(text[end]) and text[end] not in _NOT_IN_NAME:
        end += 1
    if end - start == 2 and text[end - 1:end + 1] in _FIELD_WORDS:  # 刘严联系电话: the name is 刘严
        end -= 1
    return end


def _surname_at(text: str, i: int) -> int:
    """Length of the surname starting at i (2 for a compound one), 0 if none."""
    if text[i:i + 2] in SURNAMES:
        return 2
    return 1 if i < len(text) and text[i] in SURNAMES else 0


def _names(text: str) -> list[PiiSpan]:
    out: list[PiiSpan] = []
    for cue in _CUE_RE.finditer(text):
        i = cue.end()
        length = _surname_at(text, i) if i < len(text) else 0
        if not length:
            continue
        end = _given_name(text, i + length)
        separated = bool(cue.group(2))
        if end == i + length or text[i:i + 2] in _NOT_NAMES:  # a surname alone is too little to be sure
            continue
        if not separated and (text[i] in _WORDLIKE_SURNAMES
                              or (cue.group(1) in _WEAK_CUES and not _NAME_END_OK.match(text, end))):
            continue
        out.append(PiiSpan("name", i, end, text[i:end]))
    for honorific in _HONORIFICS:
        for m in re.finditer(_SURNAME_RE + "(?=" + honorific + ")", text):
            start = m.start()
            if m.group() in _WORDLIKE_SURNAMES:
                continue
            before = text[start - 1] if start else ""
            if before and _HAN.match(before) and before not in _BEFORE_TITLE:
                continue
            # 老王师傅 / 小李老师: the prefix belongs to the form of address, the surname is what identifies.
            out.append(PiiSpan("name", start, m.end() + len(honorific), text[start:m.end() + len(honorific)]))
    for pattern in (_EN_CUE_RE, _EN_TITLE_RE):
        for m in pattern.finditer(text):
            out.append(PiiSpan("name", m.start(1), m.end(1), m.group(1)))
    return out


# -- numbers and codes ----------------------------------------------------------------------------------------

_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_ID_CHECK = "10X98765432"


def id_check_digit(first17: str) -> str:
    """The GB 11643-1999 check character (0–9 or X) of the first 17 digits of a resident ID number."""
    return _ID_CHECK[sum(int(d) * w for d, w in zip(first17, _ID_WEIGHTS, strict=True)) % 11]


def _valid_date(year: int, month: int, day: int) -> bool:
    try:
        born = date(year, month, day)
    except ValueError:
        return False
    return date(1900, 1, 1) <= born <= date(2100, 1, 1)


def valid_id_card(value: str) -> bool:
    """An 18-character ID number with a real birth date and the right check character, or a 15-digit one
    (the pre-1999 format: 6-digit region, YYMMDD born in the 1900s, 3-digit sequence) with a real date."""
    value = value.upper()
    if len(value) == 18 and value[:17].isdigit():
        return (_valid_date(int(value[6:10]), int(value[10:12]), int(value[12:14]))
                and id_check_digit(value[:17]) == value[17])
    if len(value) == 15 and value.isdigit():
        return _valid_date(1900 + int(value[6:8]), int(value[8:10]), int(value[10:12]))
    return False


def luhn_valid(digits: str) -> bool:
    """The Luhn (mod 10) check used by bank card numbers."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


_ID_RE = re.compile(r"(?<![0-9A-Za-z])(?:[1-9]\d{16}[\dXx]|[1-9]\d{14})(?![0-9A-Za-z])")
_MOBILE_RE = re.compile(r"(?<![\d+])(?:(?:\+|00)?86[ -]?)?1[3-9]\d(?:[ -]?\d{4}){2}(?!\d)")
# Area codes: 010, 02x, 0xxx (three digits after the 0, not starting with 0 or 1); with +86 the 0 drops.
_LANDLINE_RE = re.compile(
    r"(?<![\d+])(?:(?:(?:\+|00)86[ -]?\(?0?)|\(?0)(?:10|2\d|[3-9]\d{2})\)?[ -]?[2-9]\d{2,3}[ -]?\d{4}"
    r"(?:\s?(?:转|-|ext\.?\s?)\d{1,5})?(?!\d)")
# North American numbers need a separator or parentheses between the groups, so that an 11-digit Chinese
# mobile number (1 + 10 digits) is never read as +1 and ten digits.
# 400 and 800 numbers (Chinese and North American service lines) are companies', not persons'.
_US_RE = re.compile(r"(?<![\d+])(?:(?:\+1|1)[ .-]?)?(?!\(?[48]00\b)(?:\([2-9]\d{2}\) ?|[2-9]\d{2}[ .-])[2-9]\d{2}[ .-]\d{4}"
                    r"(?!\d)")
_CARD_RE = re.compile(r"(?<!\d)[3-6]\d{3}(?:[ -]?\d{4}){2,3}(?:[ -]?\d{1,3})?(?!\d)")
_EMAIL_RE = re.compile(r"(?<![A-Za-z0-9._%+-])[A-Za-z0-9][A-Za-z0-9._%+-]*@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
                       r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*\.[A-Za-z]{2,24}(?![A-Za-z0-9-])")
PROVINCES = "京津沪渝冀豫云辽黑湘皖鲁新苏浙赣鄂桂甘晋蒙陕吉闽贵粤青藏川宁琼"
_L = "A-HJ-NP-Za-hj-np-z"  # plate letters: I and O are never used
_PLATE_RE = re.compile(
    rf"(?<![{PROVINCES}])[{PROVINCES}][{_L}][·•・. -]?"
    rf"(?:[DFdf][{_L}0-9]\d{{4}}|\d{{5}}[DFdf]|[{_L}0-9]{{4}}[{_L}0-9挂学警港澳领])(?![{_L}0-9])"
    rf"|使[·•・ -]?\d{{3}}[·•・ -]?\d{{3}}(?!\d)")


def _digits(text: str) -> str:
    return "".join(ch for ch in text if ch.isdigit())


def _numbers(text: str) -> list[PiiSpan]:
    out: list[PiiSpan] = []
    for m in _ID_RE.finditer(text):
        if valid_id_card(m.group()):
            out.append(PiiSpan("id_card", m.start(), m.end(), m.group()))
    for kind, pattern in (("mobile", _MOBILE_RE), ("landline", _LANDLINE_RE), ("us_phone", _US_RE),
                          ("email", _EMAIL_RE)):
        out.extend(PiiSpan(kind, m.start(), m.end(), m.group()) for m in pattern.finditer(text))
    for m in _CARD_RE.finditer(text):
        digits = _digits(m.group())
        if 15 <= len(digits) <= 19 and luhn_valid(digits):
            out.append(PiiSpan("bank_card", m.start(), m.end(), m.group()))
    for m in _PLATE_RE.finditer(text):
        body = m.group()
        # A real plate carries at least two digits; this keeps 沪A股票 or 京AB公司 out.
        if body.startswith("使") or sum(ch.isdigit() for ch in body) >= 2:
            out.append(PiiSpan("plate", m.start(), m.end(), body))
    return out


def find_pii(text: str) -> list[PiiSpan]:
    """Every piece of personal data in `text`, as non-overlapping spans in text order."""
    if not text:
        return []
    candidates = _numbers(text) + _names(text)
    order = {kind: i for i, kind in enumerate(KINDS)}
    candidates.sort(key=lambda s: (s.start, -(s.end - s.start), order[s.kind]))
    out: list[PiiSpan] = []
    taken_until = 0
    for span in candidates:
        if span.start >= taken_until:
            out.append(span)
            taken_until = span.end
    return out
