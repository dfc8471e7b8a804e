"""Address → org unit: which village/community and town/street a complaint (or an address) names.

`Locator(tree)` builds, once per org tree, an Aho–Corasick automaton over every name variant of every unit
(the official name, the usual suffix variants — 街道/街道办事处/街道办, 镇, 地区, 居委会/居民委员会/社区,
村委会/村民委员会/村 — and the bare name where it is specific enough), so `locate(text)` is one pass over
the text however many units the district has. How a text is resolved:

1. All name hits are collected; overlapping hits are settled longest-first (陆家嘴街道 beats 陆家嘴, 南高桥村
   beats 高桥), so a name that is a substring of another never wins over it.
2. A bare name followed by a road or area suffix (张江路, 海淀区, 世纪大道) is a road or a district, not the
   unit: it is dropped. Names that themselves end in 路/街 (南码头路街道, 崂山东路居委会) get no bare variant.
3. Towns named in the text settle villages: a village name shared by several units (东南居委会 exists in
   three towns) resolves to the one under a named town; a village under a named town gains confidence.
4. The answer is the most specific unit that is unambiguous: a village if one resolves; else, if an
   ambiguous village name lies within one town, that town (lower confidence); else the named town.

Confidence is a prior, not a calibrated probability: official name 0.95, suffix variant 0.9, bare town
name 0.75 (0.5 for a two-character one: 金桥, 书院 are also words), bare village name 0.65; +0.04 when a village lies in a named town; ×0.7 when it contradicts the
named town; an ambiguous village name that only identifies its town gives 0.6.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass

import ahocorasick

from citybrain.hub.org.tree import OrgTree, Unit

FULL, VARIANT, BARE = "full", "variant", "bare"
CONFIDENCE = {(FULL, "town"): 0.95, (VARIANT, "town"): 0.9, (BARE, "town"): 0.75,
              (FULL, "village"): 0.95, (VARIANT, "village"): 0.9, (BARE, "village"): 0.65,
              (FULL, "district"): 0.95, (VARIANT, "district"): 0.9, (BARE, "district"): 0.75}
# Two-character bare town names (金桥, 高桥, 书院) are also ordinary words and other cities' places.
SHORT_BARE_TOWN = 0.5
IN_NAMED_TOWN_BONUS = 0.04
CONTRADICTS_TOWN_FACTOR = 0.7
TOWN_OF_AMBIGUOUS_VILLAGE = 0.6

_TOWN_SUFFIXES = ("街道办事处", "街道", "新镇", "镇", "乡", "地区")
_VILLAGE_SUFFIXES = ("社区居民委员会", "社区居委会", "居民委员会", "村民委员会", "居委会", "村委会", "社区")
_DISTRICT_SUFFIXES = ("新区", "区", "县", "市")
# After a bare name these make it a road, a district or some other place, not the unit itself.
_NOT_UNIT_AFTER = re.compile(r"(?:路|街|巷|弄|大道|公路|区|县|市|省|村|站|号|桥)")
_ROADLIKE_END = ("路", "街", "道", "巷", "弄", "号", "里")
_MIN_BARE = {"town": 2, "village": 3, "district": 2}


@dataclass(frozen=True, slots=True)
class Location:
    """Where a text points: the unit, how sure, and which words said so (`text[start:end] == matched`)."""

    code: str
    kind: str
    name: str
    confidence: float
    matched: str
    start: int
    end: int
    town_code: str | None = None


@dataclass(frozen=True, slots=True)
class _Candidate:
    code: str
    kind: str
    form: str


@dataclass(frozen=True, slots=True)
class _Hit:
    start: int
    end: int
    alias: str
    candidates: tuple[_Candidate, ...]


def _strip(name: str, suffixes: tuple[str, ...]) -> tuple[str, str]:
    for suffix in suffixes:
        if name.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)], suffix
    return name, ""


def name_variants(unit: Unit) -> dict[str, str]:
    """Alias → form (`full`, `variant`, `bare`) for one unit."""
    name = unit.name.strip()
    out = {name: FULL}
    if unit.kind == "district":
        base, _ = _strip(name, _DISTRICT_SUFFIXES)
        variants = {base + s for s in ("区", "新区")} if base != name else set()
    elif unit.kind == "town":
        base, suffix = _strip(name, _TOWN_SUFFIXES)
        if suffix in ("街道", "街道办事处"):
            variants = {base + s for s in ("街道", "街道办事处", "街道办", "办事处")}
        elif suffix == "新镇":  # 川沙新镇 is also called 川沙镇
            variants = {base + "新镇", base + "镇"}
        elif suffix in ("镇", "乡"):
            variants = {base + suffix, base + suffix + "人民政府"}
        elif suffix == "地区":  # Haidian's 地区 are also 乡 or 镇 with an 办事处
            variants = {base + s for s in ("地区", "地区办事处", "乡", "镇")}
        else:
            variants = set()
    else:
        head = name.split("股份经济合作社")[0] if "股份经济合作社" in name else name
        base, suffix = _strip(head, _VILLAGE_SUFFIXES)
        if suffix in ("村委会", "村民委员会") or (head != name and base.endswith("村")):
            village = base if base.endswith("村") else base + "村"
            variants = {village, village + "委会", village + "村委会", village + "民委员会", base + "村委会",
                        base + "村民委员会"}
        elif suffix:
            variants = {base + s for s in ("居委会", "居民委员会", "社区", "社区居委会", "社区居民委员会")}
        else:
            variants = set()
    for alias in variants - {name}:
        out[alias] = VARIANT
    if base and base != name and len(base) >= _MIN_BARE[unit.kind] and not base.endswith(_ROADLIKE_END):
        out.setdefault(base, BARE)
    return out


class Locator:
    """Resolves texts to org units of one tree; build once, call `locate` per text (one pass each)."""

    def __init__(self, tree: OrgTree) -> None:
        self.tree = tree
        aliases: dict[str, list[_Candidate]] = defaultdict(list)
        for unit in tree.units.values():
            if unit.kind not in ("district", "town", "village"):
                continue
            for alias, form in name_variants(unit).items():
                aliases[alias].append(_Candidate(unit.code, unit.kind, form))
        self._automaton = ahocorasick.Automaton()
        rank = {FULL: 0, VARIANT: 1, BARE: 2}
        for alias, candidates in aliases.items():
            # 合庆镇 is a town's official name and the bare name of 合庆镇居委会: the stronger form wins.
            best = min(rank[c.form] for c in candidates)
            self._automaton.add_word(alias, (alias, tuple(c for c in candidates if rank[c.form] == best)))
        self._automaton.make_automaton()
        self.aliases = len(aliases)

    def _town_of(self, code: str) -> str | None:
        unit = self.tree.units.get(code)
        while unit is not None and unit.kind != "town":
            unit = self.tree.units.get(unit.parent_code) if unit.parent_code else None
        return unit.code if unit is not None else None

    def hits(self, text: str) -> list[_Hit]:
        """Name hits in text order, overlaps settled longest-first, bare road/district look-alikes dropped."""
        found = []
        for end, (alias, candidates) in self._automaton.iter(text):
            start = end - len(alias) + 1
            if all(c.form == BARE for c in candidates) and _NOT_UNIT_AFTER.match(text, end + 1):
                continue
            found.append(_Hit(start, end + 1, alias, candidates))
        found.sort(key=lambda h: (-(h.end - h.start), h.start))
        taken: list[_Hit] = []
        for hit in found:
            if all(hit.end <= t.start or hit.start >= t.end for t in taken):
                taken.append(hit)
        return sorted(taken, key=lambda h: h.start)

    def locate(self, text: str) -> Location | None:
        """The most specific unit `text` names unambiguously, or None."""
        hits = self.hits(text)
        if not hits:
            return None
        towns: dict[str, tuple[_Hit, _Candidate]] = {}
        for hit in hits:
            town_candidates = [c for c in hit.candidates if c.kind == "town"]
            if len(town_candidates) == 1 and len(hit.candidates) == 1:
                towns.setdefault(town_candidates[0].code, (hit, town_candidates[0]))
        best: Location | None = None
        for hit in hits:
            villages = [c for c in hit.candidates if c.kind == "village"]
            if not villages or len(villages) != len(hit.candidates):
                continue
            in_named = [c for c in villages if self._town_of(c.code) in towns]
            if len(in_named) == 1 or (len(villages) == 1 and not towns):
                chosen = in_named[0] if in_named else villages[0]
                confidence = CONFIDENCE[(chosen.form, "village")]
                if in_named:
                    confidence = min(0.99, confidence + IN_NAMED_TOWN_BONUS)
                location = self._location(chosen.code, confidence, hit)
            elif len(villages) == 1:  # one village, but the text names other towns than its own
                chosen = villages[0]
                confidence = CONFIDENCE[(chosen.form, "village")] * CONTRADICTS_TOWN_FACTOR
                location = self._location(chosen.code, confidence, hit)
            else:
                parents = {self._town_of(c.code) for c in (in_named or villages)}
                if len(parents) != 1 or None in parents:
                    continue
                location = self._location(parents.pop(), TOWN_OF_AMBIGUOUS_VILLAGE, hit)  # type: ignore[arg-type]
            if best is None or (location.kind, location.confidence) > (best.kind, best.confidence):
                best = location  # 'village' > 'town', so a resolved village beats a town
        if best is not None and best.kind == "village":
            return best
        town_locations = [
            self._location(c.code, SHORT_BARE_TOWN if c.form == BARE and len(h.alias) <= 2
                           else CONFIDENCE[(c.form, "town")], h)
            for h, c in towns.values()]
        if best is not None:
            town_locations.append(best)
        if not town_locations:
            return None
        return max(town_locations, key=lambda loc: (loc.confidence, loc.end - loc.start))

    def _location(self, code: str, confidence: float, hit: _Hit) -> Location:
        unit = self.tree.units[code]
        town = code if unit.kind == "town" else self._town_of(code)
        return Location(code, unit.kind, unit.name, round(confidence, 3), hit.alias, hit.start, hit.end, town)


def locate(text: str, tree: OrgTree) -> Location | None:
    """One-off convenience; build a `Locator` once when resolving many texts against the same tree."""
    return Locator(tree).locate(text)
