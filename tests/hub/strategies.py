"""Hypothesis strategies for the hub's data model: valid NGSI-LD normalized entities (over the registered
types and an open test type), one-field breakages of them, and GeoJSON near Hangzhou.

The strategies build plain JSON-like dicts, the way a client would send them; the tests decide whether to
hand them to `parse_entity` directly or through the HTTP API.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta, timezone
from functools import cache
from typing import Any

from hypothesis import assume
from hypothesis import strategies as st
from shapely.geometry import shape

from citybrain.hub.entities.ngsi import ATTRIBUTE_META_KEYS, ENTITY_KEYS, ORG_UNIT_PREFIX
from citybrain.hub.entities.query import And, Compare, Exists, Or, Range
from citybrain.hub.entities.types import AttrKind, AttrSpec, TypeRegistry, TypeSpec
from citybrain.hub.org.divisions import read_divisions

# An operator-style type with no declared attributes: anything goes, so it reaches every attribute shape.
OPEN_TYPE = TypeSpec(name="PropertyTestThing", title="Property-test thing", title_zh="属性测试对象", source="test")
OTHER_OPEN_TYPE = TypeSpec(name="PropertyTestOther", title="Another property-test thing", title_zh="另一测试对象",
                           source="test")
TEST_DISTRICT = "xihu"
HANGZHOU = (120.0, 30.1, 120.3, 30.4)  # min_lon, min_lat, max_lon, max_lat
EXACT_INT = 2**53

# ------------------------------------------------------------------------------------------- registries


@cache
def type_registry() -> TypeRegistry:
    """The scenario types plus the open test types (what the test platform knows once they are added)."""
    from citybrain.scenarios import scenario_types

    return TypeRegistry([*scenario_types(), OPEN_TYPE, OTHER_OPEN_TYPE])


@cache
def org_codes() -> tuple[str, ...]:
    """Codes of the test district's divisions (district, streets, communities)."""
    return tuple(d.code for d in read_divisions(TEST_DISTRICT))


def add_test_types(registry: TypeRegistry) -> None:
    for spec in (OPEN_TYPE, OTHER_OPEN_TYPE):
        registry.add(spec, replace=True)


# ------------------------------------------------------------------------------------------------ names

URN_NSS_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789()+,-.:=@;$_!*'~&"
URN_NIDS = st.one_of(
    st.sampled_from(["ngsi-ld", "cb", "citybrain", "x-1", "ISBN", "NGSI-LD"]),
    st.from_regex(r"[A-Za-z0-9][A-Za-z0-9-]{0,12}", fullmatch=True).filter(lambda s: s.lower() != "urn"),
)


@cache
def urns(nid: st.SearchStrategy[str] = URN_NIDS) -> st.SearchStrategy[str]:
    nss = st.text(alphabet=URN_NSS_ALPHABET, min_size=1, max_size=24)
    prefix = st.sampled_from(["urn", "urn", "URN", "Urn"])
    return st.builds(lambda p, n, s: f"{p}:{n}:{s}", prefix, nid, nss)


@cache
def entity_ids(type_name: str) -> st.SearchStrategy[str]:
    ngsi = st.text(alphabet=URN_NSS_ALPHABET, min_size=1, max_size=20).map(
        lambda s: f"urn:ngsi-ld:{type_name}:{s}")
    return st.one_of(ngsi, ngsi, urns())


NAME_START = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz_"
NAME_REST = NAME_START + "0123456789"


@cache
def attribute_names(exclude: frozenset[str] = frozenset()) -> st.SearchStrategy[str]:
    """Names that match ATTR_NAME_RE and are not entity keys (or anything in `exclude`)."""
    made = st.builds(lambda a, b: a + b, st.sampled_from(NAME_START), st.text(NAME_REST, max_size=12))
    return st.one_of(
        st.sampled_from(["temperature", "status", "name", "refThing", "_private", "a1", "value2", "T"]),
        made,
    ).filter(lambda n: n not in exclude and n not in ENTITY_KEYS)


# ------------------------------------------------------------------------------------------------ values

# Text anywhere in the plane (Chinese, emoji, combining marks, control characters) except NUL, which no
# PostgreSQL text can hold; surrogates are never generated (they are not valid JSON text).
TEXT_CHARS = st.characters(exclude_characters="\x00", exclude_categories=("Cs",))
texts = st.one_of(
    st.text(TEXT_CHARS, max_size=12),
    st.sampled_from(["", "ok", "杭州", "西湖区", "北山街道", "Ünïcödé", "🚦", "a\"b\\c", "line\nbreak"]),
)
# Whole numbers anywhere a double holds them exactly; beyond ±2^53 only those that are exact doubles.
safe_ints = st.integers(-EXACT_INT, EXACT_INT)
exact_big_ints = st.builds(lambda m, e, s: s * (m << e), st.integers(1, 2**20), st.integers(33, 80),
                           st.sampled_from([1, -1]))
finite_floats = st.floats(allow_nan=False, allow_infinity=False)
numbers = st.one_of(safe_ints, st.integers(-1000, 1000), finite_floats, exact_big_ints)
scalars = st.one_of(numbers, texts, st.booleans())


@cache
def json_values(leaves: st.SearchStrategy[Any] = scalars, *, allow_null: bool = True) -> st.SearchStrategy[Any]:
    """Any JSON value with `leaves` at the bottom; nulls only inside containers."""
    keys = st.one_of(st.text(TEXT_CHARS, max_size=8), st.sampled_from(["x", "y", "z", "名称", "a.b", "$"]))
    inner = leaves | st.none() if allow_null else leaves
    nested = st.recursive(inner, lambda kids: st.lists(kids, max_size=3) | st.dictionaries(keys, kids, max_size=3),
                          max_leaves=4)
    return st.one_of(leaves, leaves, st.lists(nested, max_size=3), st.dictionaries(keys, nested, max_size=3))


# Fixed offsets from -23:59 to +23:59, including ones with seconds (Python's ISO parser accepts them).
zones = st.one_of(
    st.just(UTC),
    st.builds(lambda minutes: timezone(timedelta(minutes=minutes)), st.integers(-23 * 60 - 59, 23 * 60 + 59)),
    st.builds(lambda seconds: timezone(timedelta(seconds=seconds)), st.integers(-86399, 86399)),
)


@st.composite
def _timestamps(draw: st.DrawFn) -> str:
    """An ISO 8601 timestamp with a zone, in the spellings clients use."""
    moment = draw(st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=zones))
    text = moment.isoformat(timespec=draw(st.sampled_from(["auto", "seconds", "milliseconds", "microseconds",
                                                           "minutes"])))
    if text.endswith("+00:00") and draw(st.booleans()):
        text = text.removesuffix("+00:00") + "Z"
    return text


timestamps = _timestamps()


# ------------------------------------------------------------------------------------------------- geo


def _coordinate(low: float, high: float) -> st.SearchStrategy[float]:
    return st.floats(low, high, allow_nan=False, allow_infinity=False)


@st.composite
def positions(draw: st.DrawFn, box: tuple[float, float, float, float] = HANGZHOU) -> list[float]:
    position = [draw(_coordinate(box[0], box[2])), draw(_coordinate(box[1], box[3]))]
    if draw(st.integers(0, 4)) == 0:
        position.append(draw(_coordinate(-100.0, 9000.0)))
    return position


def star_ring(draw: st.DrawFn, center: tuple[float, float], max_radius: float) -> list[list[float]]:
    """A simple closed ring: vertices in angular order around `center` (a star-shaped polygon)."""
    count = draw(st.integers(3, 8))
    step = 2 * math.pi / count
    ring = []
    for k in range(count):
        angle = step * k + draw(st.floats(-0.2, 0.2)) * step
        radius = draw(st.floats(0.2 * max_radius, max_radius))
        ring.append([center[0] + radius * math.cos(angle), center[1] + radius * math.sin(angle)])
    return [*ring, list(ring[0])]


@st.composite
def polygons(draw: st.DrawFn, box: tuple[float, float, float, float] = HANGZHOU,
             max_radius: float = 0.02) -> dict[str, Any]:
    center = (draw(_coordinate(box[0] + max_radius, box[2] - max_radius)),
              draw(_coordinate(box[1] + max_radius, box[3] - max_radius)))
    shell = star_ring(draw, center, max_radius)
    rings = [shell]
    if draw(st.booleans()):
        # Shell vertices lie at ≥ 0.2 r with angular gaps ≤ 0.93 π, so the shell keeps ≥ 0.2 r · cos(0.47 π)
        # ≈ 0.02 r away from the centre: a hole of 0.005 r never touches it.
        hole = star_ring(draw, center, 0.005 * max_radius)
        rings.append(list(reversed(hole)))
    polygon = {"type": "Polygon", "coordinates": rings}
    assume(shape(polygon).is_valid)  # float rounding can, rarely, fold a near-collinear vertex
    return polygon


@cache
def geometries(box: tuple[float, float, float, float] = HANGZHOU) -> st.SearchStrategy[dict[str, Any]]:
    point = st.builds(lambda p: {"type": "Point", "coordinates": p}, positions(box))
    line = st.builds(lambda ps: {"type": "LineString", "coordinates": ps}, st.lists(positions(box), min_size=2,
                                                                                    max_size=6))
    multipoint = st.builds(lambda ps: {"type": "MultiPoint", "coordinates": ps}, st.lists(positions(box),
                                                                                         min_size=1, max_size=4))
    multiline = st.builds(lambda ls: {"type": "MultiLineString", "coordinates": ls},
                          st.lists(st.lists(positions(box), min_size=2, max_size=4), min_size=1, max_size=3))
    return st.one_of(point, point, line, polygons(box), multipoint, multiline)


world_points = st.builds(lambda lon, lat: {"type": "Point", "coordinates": [lon, lat]},
                         _coordinate(-180, 180), _coordinate(-90, 90))

# -------------------------------------------------------------------------------------------- attributes

unit_codes = st.one_of(st.sampled_from(["CEL", "GQ", "MTR", "KMH", "P1", "C62"]),
                       st.text(TEXT_CHARS, min_size=1, max_size=16))
language_maps = st.dictionaries(st.sampled_from(["zh", "en", "zh-Hans", "fr", "de-CH"]) | st.text(TEXT_CHARS, max_size=5),
                                texts, min_size=1, max_size=3)


@cache
def meta(depth: int, unit: st.SearchStrategy[str] | None = unit_codes) -> st.SearchStrategy[dict[str, Any]]:
    """Optional unitCode, observedAt, datasetId and sub-attributes of one attribute."""
    sub_names = st.lists(attribute_names(frozenset(ATTRIBUTE_META_KEYS)), min_size=1, max_size=2, unique=True)
    # Built lazily: sub-attributes are attributes one level down.
    sub_attributes = st.deferred(lambda: attributes(depth + 1))

    @st.composite
    def draw_meta(draw: st.DrawFn) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if unit is not None and draw(st.integers(0, 3)) == 0:
            out["unitCode"] = draw(unit)
        if draw(st.integers(0, 2)) == 0:
            out["observedAt"] = draw(timestamps)
        if draw(st.integers(0, 6)) == 0:
            out["datasetId"] = draw(urns())
        if depth < 2 and draw(st.integers(0, 5 + 10 * depth)) == 0:
            for name in draw(sub_names):
                out[name] = draw(sub_attributes)
        return out

    return draw_meta()


@cache
def properties(values: st.SearchStrategy[Any], depth: int = 0,
               unit: st.SearchStrategy[str] | None = unit_codes) -> st.SearchStrategy[dict[str, Any]]:
    return st.builds(lambda v, m: {"type": "Property", "value": v, **m}, values, meta(depth, unit))


@cache
def relationships(depth: int = 0) -> st.SearchStrategy[dict[str, Any]]:
    return st.builds(lambda o, m: {"type": "Relationship", "object": o, **m}, urns(), meta(depth))


@cache
def geo_properties(depth: int = 0) -> st.SearchStrategy[dict[str, Any]]:
    return st.builds(lambda g, m: {"type": "GeoProperty", "value": g, **m}, geometries(), meta(depth))


@cache
def language_properties(depth: int = 0) -> st.SearchStrategy[dict[str, Any]]:
    return st.builds(lambda lm, m: {"type": "LanguageProperty", "languageMap": lm, **m}, language_maps,
                     meta(depth))


@cache
def attributes(depth: int = 0) -> st.SearchStrategy[dict[str, Any]]:
    """Any attribute of an undeclared name (no type spec applies)."""
    return st.one_of(properties(json_values(), depth), properties(json_values(), depth), relationships(depth),
                     geo_properties(depth), language_properties(depth))


def _bounded_numbers(spec: AttrSpec, integer: bool) -> st.SearchStrategy[Any]:
    low = spec.minimum if spec.minimum is not None else None
    high = spec.maximum if spec.maximum is not None else None
    ints = st.integers(math.ceil(low) if low is not None else -EXACT_INT,
                       math.floor(high) if high is not None else EXACT_INT)
    if integer:
        return ints
    return ints | st.floats(low, high, allow_nan=False, allow_infinity=False)


@cache
def declared_attributes(type_name: str, name: str) -> st.SearchStrategy[dict[str, Any]]:
    """An attribute that satisfies its declaration in a registered type."""
    spec = type_registry().get(type_name).attributes[name]  # type: ignore[union-attr]
    unit = st.just(spec.unit) if spec.unit else unit_codes
    match spec.kind:
        case AttrKind.relationship:
            return relationships()
        case AttrKind.geometry:
            return geo_properties()
        case AttrKind.language:
            return language_properties() | properties(texts)
        case AttrKind.any:
            return attributes()
    values: st.SearchStrategy[Any]
    if spec.enum is not None:
        values = st.sampled_from(spec.enum)
    else:
        values = {
            AttrKind.number: _bounded_numbers(spec, integer=False),
            AttrKind.integer: _bounded_numbers(spec, integer=True),
            AttrKind.string: texts,
            AttrKind.boolean: st.booleans(),
            AttrKind.datetime: timestamps,
            AttrKind.object: st.dictionaries(st.text(TEXT_CHARS, max_size=6), json_values(), max_size=3),
            AttrKind.array: st.lists(json_values(), max_size=3),
        }[spec.kind]
    return properties(values, unit=unit)


# ---------------------------------------------------------------------------------------------- entities


def org_units() -> st.SearchStrategy[dict[str, Any]]:
    return st.sampled_from(org_codes()).map(lambda code: {"type": "Relationship", "object": ORG_UNIT_PREFIX + code})


@st.composite
def entities(draw: st.DrawFn, type_names: st.SearchStrategy[str] | None = None) -> dict[str, Any]:
    """A valid NGSI-LD normalized entity of a registered type."""
    registry = type_registry()
    type_name = draw(type_names or st.sampled_from(registry.names()))
    spec = registry.get(type_name)
    assert spec is not None
    entity: dict[str, Any] = {"id": draw(entity_ids(type_name)), "type": type_name}
    declared = draw(st.lists(st.sampled_from(sorted(spec.attributes)), unique=True, max_size=3)) \
        if spec.attributes else []
    for name in declared:
        entity[name] = draw(declared_attributes(type_name, name))
    for name in draw(st.lists(attribute_names(frozenset(spec.attributes)), unique=True, max_size=3)):
        entity[name] = draw(attributes())
    if draw(st.booleans()):
        entity["location"] = {"type": "GeoProperty", "value": draw(geometries())}
    if draw(st.booleans()):
        entity["orgUnit"] = draw(org_units())
    # Keys a client may send that the hub ignores or recomputes.
    if draw(st.integers(0, 5)) == 0:
        entity["@context"] = "https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context.jsonld"
    if draw(st.integers(0, 5)) == 0:
        entity["createdAt"] = "2020-01-01T00:00:00Z"
    return entity


def entity_batches(max_size: int = 8) -> st.SearchStrategy[list[dict[str, Any]]]:
    return st.lists(entities(), min_size=1, max_size=max_size, unique_by=lambda e: e["id"])


# ------------------------------------------------------------------------------------------ breakages

# Each breakage returns the broken entity and the path of the field it broke; the hub must name that
# field (or a position inside it) and nothing else.

BAD_URNS = st.one_of(
    st.sampled_from(["", "not-a-urn", "urn:", "urn:x", "urn::abc", "urn:urn:x:y", "urn:ngsi-ld:Foo/1",
                     "urn:ngsi-ld:Foo?1", "urn:ngsi-ld:Foo#1", "urn:-bad:x", "http://example.com/x",
                     "urn:ngsi-ld:Foo 1", "urn:ngsi-ld:温度:1", "urn:" + "n" * 40 + ":x", "urn:x:" + "y" * 600]),
    st.integers(),
    st.none(),
)


def _attribute_paths(entity: dict[str, Any]) -> list[str]:
    return sorted(k for k in entity if k not in ENTITY_KEYS)


@st.composite
def breakages(draw: st.DrawFn, *, json_only: bool = False) -> tuple[dict[str, Any], str]:
    """A valid entity with exactly one field made invalid, and that field's path.

    With `json_only`, only breakages JSON can carry (no NaN, no numbers beyond a double).
    """
    registry = type_registry()
    entity = draw(entities())
    spec = registry.get(entity["type"])
    assert spec is not None
    names = _attribute_paths(entity)
    kinds = ["id", "type", "location", "orgUnit", "new_attribute"]
    if names:
        kinds += ["attribute"] * 4
    typed = [n for n in spec.attributes if spec.attributes[n].kind not in (AttrKind.any,)]
    if typed:
        kinds += ["declared"] * 2
    kind = draw(st.sampled_from(kinds))
    broken = dict(entity)
    match kind:
        case "id":
            broken["id"] = draw(BAD_URNS)
            return broken, "id"
        case "type":
            broken["type"] = draw(st.one_of(
                st.sampled_from(["NoSuchType", "airqualityobserved", "", "Air Quality"]),
                st.text(TEXT_CHARS, max_size=10).filter(lambda t: t not in registry),
                st.integers(), st.none(), st.lists(st.just("Device"), max_size=1)))
            return broken, "type"
        case "orgUnit":
            choice = draw(st.integers(0, 2))
            if choice == 0:
                code = draw(st.text(alphabet="0123456789", min_size=1, max_size=12).filter(
                    lambda c: c not in org_codes()))
                broken["orgUnit"] = {"type": "Relationship", "object": ORG_UNIT_PREFIX + code}
                return broken, "orgUnit.object"
            broken["orgUnit"] = draw(st.sampled_from([
                {"type": "Property", "value": "330106"}, {"type": "Relationship", "object": "urn:x:330106"},
                "330106", {"type": "Relationship"}, None]))
            return broken, "orgUnit"
        case "location":
            geometry, path = draw(broken_geometries())
            if geometry is _NOT_GEO:
                broken["location"] = draw(st.sampled_from([
                    {"type": "Property", "value": {"type": "Point", "coordinates": [120.1, 30.2]}},
                    {"type": "Point", "coordinates": [120.1, 30.2]}, "120.1,30.2", None]))
                return broken, "location.type"
            broken["location"] = {"type": "GeoProperty", "value": geometry}
            return broken, "location.value" + path
        case "new_attribute":
            name = draw(st.sampled_from(["bad-name", "1st", "名称", "a b", "x" * 129, "a.b"]))
            broken[name] = {"type": "Property", "value": 1}
            return broken, name
        case "declared":
            name = draw(st.sampled_from(typed))
            attribute, path = draw(wrong_for_declaration(entity["type"], name))
            broken[name] = attribute
            return broken, name + path
        case _:
            name = draw(st.sampled_from(names))
            attribute, path = draw(broken_attributes(broken[name], json_only=json_only))
            broken[name] = attribute
            return broken, name + path


_NOT_GEO = object()


@st.composite
def broken_geometries(draw: st.DrawFn) -> tuple[Any, str]:
    """A geometry that is not valid GeoJSON, and the path (below the geometry) of what is wrong."""
    choice = draw(st.integers(0, 9))
    lon = draw(_coordinate(120.0, 120.3))
    lat = draw(_coordinate(30.1, 30.4))
    match choice:
        case 0:
            bad_lat = draw(st.one_of(_coordinate(90.000001, 1e9), _coordinate(-1e9, -90.000001)))
            return {"type": "Point", "coordinates": [lon, bad_lat]}, ".coordinates"
        case 1:
            bad_lon = draw(st.one_of(_coordinate(180.000001, 1e9), _coordinate(-1e9, -180.000001)))
            return {"type": "LineString", "coordinates": [[lon, lat], [bad_lon, lat]]}, ".coordinates[1]"
        case 2:  # a ring that does not end where it starts
            ring = star_ring(draw, (lon, lat), 0.01)
            ring[-1] = [ring[-1][0] + draw(st.floats(1e-6, 0.01)), ring[-1][1]]
            return {"type": "Polygon", "coordinates": [ring]}, ".coordinates[0]"
        case 3:  # a self-intersecting bow tie
            d = draw(st.floats(0.001, 0.05))
            ring = [[lon, lat], [lon + d, lat + d], [lon + d, lat], [lon, lat + d], [lon, lat]]
            return {"type": "Polygon", "coordinates": [ring]}, ".coordinates"
        case 4:
            return {"type": draw(st.sampled_from(["Circle", "point", "GeometryCollection", "Feature", None])),
                    "coordinates": [lon, lat]}, ".type"
        case 5:
            return {"type": "Point", "coordinates": draw(st.sampled_from(
                [[lon], [lon, lat, 1.0, 2.0], [str(lon), lat], [True, lat], None, {"lon": lon}]))}, ".coordinates"
        case 6:
            return {"type": "LineString", "coordinates": [[lon, lat]]}, ".coordinates"
        case 7:
            return {"type": "Polygon", "coordinates": draw(st.sampled_from([[], None, [[[lon, lat], [lon, lat]]]]))}, \
                ".coordinates"
        case 8:
            return draw(st.sampled_from(["POINT(120 30)", [lon, lat], None])), ""
        case _:
            return _NOT_GEO, ""


@st.composite
def broken_attributes(draw: st.DrawFn, attribute: dict[str, Any], *, json_only: bool) -> tuple[Any, str]:
    """One attribute made invalid, and the path below the attribute's name of what is wrong."""
    choice = draw(st.integers(0, 11))
    kind = attribute.get("type")
    match choice:
        case 0:
            return {**attribute, "type": draw(st.sampled_from(["property", "Text", "", None, 3]))}, ".type"
        case 1:
            return draw(st.sampled_from(["plain", 42, None, [1, 2]])), ""
        case 2:
            return {**attribute, "unitCode": draw(st.sampled_from(["", "X" * 17, 7, "a\x00b"]))}, ".unitCode"
        case 3:
            return {**attribute, "observedAt": draw(st.sampled_from([
                "yesterday", "2026-01-01T08:00:00", "2026-13-01T00:00:00Z", 1700000000, "",
                "0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"]))}, ".observedAt"
        case 4:
            return {**attribute, "datasetId": draw(BAD_URNS)}, ".datasetId"
        case 5:
            return {**attribute, draw(st.sampled_from(["bad-name", "1x", "名"])): {"type": "Property", "value": 1}}, ""
        case 6:  # sub-attributes nest at most two levels deep
            leaf = {"type": "Property", "value": 1}
            return {**attribute, "sub": {"type": "Property", "value": 1, "subsub": {
                "type": "Property", "value": 2, "tooDeep": leaf}}}, ".sub.subsub.tooDeep"
        case 7:
            return {"type": "Relationship", "object": draw(BAD_URNS)}, ".object"
        case 8:
            return {"type": "LanguageProperty", "languageMap": draw(st.sampled_from(
                [{}, {"en": 3}, "text", None, {"zh": "杭\x00州"}]))}, ".languageMap"
        case 9:
            geometry, path = draw(broken_geometries())
            if geometry is _NOT_GEO:
                geometry = "not geometry"
            return {"type": "GeoProperty", "value": geometry}, ".value" + path
        case _:
            # NUL (PostgreSQL text cannot hold it); whole numbers beyond ±2^53 that no double holds exactly.
            bad = [None, {"a": "x\x00y"}, "nul\x00inside", ["ok", "\x00"], {"k\x00": 1}, EXACT_INT + 1,
                   -(2**60 + 1), [2**64 - 1]]
            if not json_only:
                bad += [math.nan, math.inf, -math.inf, [1.0, math.nan], {"x": {"y": math.inf}}, 10**400, -(10**400)]
            value = draw(st.sampled_from(bad))
            return {"type": "Property", "value": value, **({} if kind != "Property" else {
                k: v for k, v in attribute.items() if k not in ("type", "value", "object", "languageMap")})}, \
                ".value"


@st.composite
def wrong_for_declaration(draw: st.DrawFn, type_name: str, name: str) -> tuple[dict[str, Any], str]:
    """An attribute that is well formed but breaks its type's declaration."""
    spec = type_registry().get(type_name).attributes[name]  # type: ignore[union-attr]
    match spec.kind:
        case AttrKind.relationship:
            return {"type": "Property", "value": draw(urns())}, ".type"
        case AttrKind.geometry:
            return {"type": "Property", "value": {"type": "Point", "coordinates": [120.1, 30.2]}}, ".type"
        case AttrKind.language:
            return {"type": "Relationship", "object": "urn:x:y"}, ".type"
    if draw(st.booleans()):
        return {"type": draw(st.sampled_from(["Relationship", "GeoProperty"])),
                "object": "urn:x:y", "value": {"type": "Point", "coordinates": [120.1, 30.2]}}, ".type"
    wrong: st.SearchStrategy[Any] = {
        AttrKind.number: st.one_of(texts, st.booleans(), st.lists(st.integers(), max_size=2)),
        AttrKind.integer: st.one_of(finite_floats.filter(lambda f: abs(f) < EXACT_INT),
                                    texts, st.booleans()),
        AttrKind.string: st.one_of(numbers, st.booleans(), st.just({"a": 1})),
        AttrKind.boolean: st.one_of(st.sampled_from(["true", 1, 0, "yes"])),
        AttrKind.datetime: st.one_of(st.sampled_from(["2026-01-01", "2026-01-01T08:00:00", "now", 1700000000])),
        AttrKind.object: st.one_of(texts, numbers, st.lists(st.integers(), max_size=2)),
        AttrKind.array: st.one_of(texts, numbers, st.just({"a": 1})),
    }[spec.kind]
    if spec.enum is not None:
        wrong = wrong | st.sampled_from(["not-in-the-list", "OK", "Open"])
    if spec.minimum is not None:
        wrong = wrong | st.floats(-1e9, spec.minimum, exclude_max=True)
    if spec.maximum is not None:
        wrong = wrong | st.floats(spec.maximum, 1e9, exclude_min=True)
    if spec.unit is not None:
        value = draw(declared_attributes(type_name, name))["value"]
        if draw(st.booleans()):
            return {"type": "Property", "value": value, "unitCode": draw(
                st.sampled_from(["XXX", "KEL", "FAH"]).filter(lambda u: u != spec.unit))}, ".unitCode"
    return {"type": "Property", "value": draw(wrong)}, ".value"


# ------------------------------------------------------------------------------------------- comparing


def same_json(a: Any, b: Any) -> bool:
    """JSON equality without Python's conveniences: True is not 1, but 1e15 and 10**15 are one number
    (JSON has a single number type, and PostgreSQL's jsonb prints whole numbers without a point)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same_json(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(same_json(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b


# -------------------------------------------------------------------------------------- q expressions

# Entities over a few attribute names and a small pool of values, and q expressions over the same names and
# values, so comparisons hit, and narrowly miss, what the entities hold. Expressions are drawn as trees of
# query.py's nodes and rendered to text, so a test can check the parser as well as the two evaluators.

Q_TYPES = (OPEN_TYPE.name, OTHER_OPEN_TYPE.name)
Q_NAMES = ("a", "b", "c", "rel", "value")
Q_KEYS = ("k", "m", "x", "value", "object")  # keys inside compound values (and what q puts in [brackets])
Q_SUB_ATTRIBUTES = ("k", "m")  # sub-attribute names, which `a[k]` must not reach (it goes into the value)
Q_URNS = ("urn:ngsi-ld:Thing:1", "urn:ngsi-ld:Thing:2", "urn:cb:z")
Q_NUMBERS = (0, 1, -1, 2, 7, -7, 1.5, -2.5, 0.1, 2.0, -0.0, 1e-9, 1e20, EXACT_INT, -EXACT_INT, 2**60, 1e300)
Q_STRINGS = ("", "ok", "OK", "ok ", "杭州", "西湖区", 'a"b', "a\\b", "b", "z", "é", "e\u0301", "🚦", "\uffff",
             "true", "1", *Q_URNS)


q_numbers = st.one_of(st.sampled_from(Q_NUMBERS), st.sampled_from(Q_NUMBERS), st.integers(-3, 3),
                      st.floats(-10, 10, allow_nan=False, allow_infinity=False), finite_floats,
                      st.integers(-EXACT_INT, EXACT_INT))
q_strings = st.one_of(st.sampled_from(Q_STRINGS), st.sampled_from(Q_STRINGS), st.text(TEXT_CHARS, max_size=4))
q_scalars = st.one_of(q_numbers, q_strings, st.booleans())
# Literals may also be whole numbers no double holds (stored values may not): PostgreSQL must compare them
# exactly, not as doubles.
q_literal_numbers = st.one_of(q_numbers, st.integers(-(2**63) + 1, 2**63 - 1),
                              st.sampled_from([EXACT_INT + 1, -EXACT_INT - 1, 2**62 + 1]))
q_literal_scalars = st.one_of(q_literal_numbers, q_strings, st.booleans())
_q_nested = st.recursive(q_scalars | st.none(),
                         lambda kids: st.dictionaries(st.sampled_from(Q_KEYS), kids, max_size=3)
                         | st.lists(kids, max_size=2), max_leaves=5)
q_values = st.one_of(q_scalars, q_scalars, st.dictionaries(st.sampled_from(Q_KEYS), _q_nested, min_size=1, max_size=3),
                     st.lists(_q_nested, max_size=2))


@st.composite
def q_attributes(draw: st.DrawFn) -> dict[str, Any]:
    """A Property (scalar or compound value, sometimes with a sub-attribute), a Relationship or a GeoProperty."""
    match draw(st.integers(0, 5)):
        case 0:
            return {"type": "Relationship", "object": draw(st.sampled_from(Q_URNS))}
        case 1:
            return {"type": "GeoProperty", "value": {"type": "Point", "coordinates": draw(positions())}}
        case 2:
            return {"type": "Property", "value": draw(q_values),
                    draw(st.sampled_from(Q_SUB_ATTRIBUTES)): {"type": "Property", "value": draw(q_scalars)}}
        case _:
            return {"type": "Property", "value": draw(q_values)}


@st.composite
def q_entity_sets(
    draw: st.DrawFn,
    *,
    max_size: int = 12,
    locations: st.SearchStrategy[dict[str, Any] | None] | None = None,
    org_unit_codes: tuple[str, ...] = (),
    varied_ids: bool = False,
) -> list[dict[str, Any]]:
    """Entities of the two open test types, each holding some of Q_NAMES (missing ones are the point), with
    unique ids (plain numbered ones, or any URN with `varied_ids`), a location drawn from `locations` (None:
    no location) and an orgUnit among `org_unit_codes` (or none)."""
    count = 0 if draw(st.integers(0, 9)) == 0 else draw(st.integers(min(3, max_size), max_size))
    ids: set[str] = set()
    out = []
    for index in range(count):
        type_name = draw(st.sampled_from(Q_TYPES))
        if varied_ids:
            entity_id = draw(entity_ids(type_name).filter(lambda i: i not in ids))
        else:
            entity_id = f"urn:ngsi-ld:{type_name}:{index:03d}"
        ids.add(entity_id)
        entity: dict[str, Any] = {"id": entity_id, "type": type_name}
        for name in Q_NAMES:
            if draw(st.booleans()):
                entity[name] = draw(q_attributes())
        if locations is not None:
            location = draw(locations)
            if location is not None:
                entity["location"] = {"type": "GeoProperty", "value": location}
        if org_unit_codes and draw(st.booleans()):
            entity["orgUnit"] = {"type": "Relationship", "object": ORG_UNIT_PREFIX + draw(st.sampled_from(org_unit_codes))}
        out.append(entity)
    return out


q_paths = st.builds(lambda name, keys: (name, *keys), st.sampled_from(Q_NAMES),
                    st.just([]) | st.just([]) | st.lists(st.sampled_from(Q_KEYS), min_size=1, max_size=2))


QHint = tuple[tuple[str, ...], str, Any]  # a path, the type name of the value there, the value if scalar


def q_hints(entities: list[dict[str, Any]]) -> tuple[QHint, ...]:
    """The paths q can reach in these entities and what they hold, so expressions can aim at them. The type
    name is part of each hint because 1, 1.0 and True are one key to a tuple's equality."""
    found: list[QHint] = []

    def walk(path: tuple[str, ...], value: Any) -> None:
        found.append((path, type(value).__name__, value if not isinstance(value, dict | list) else None))
        if isinstance(value, dict):
            for key, item in value.items():
                walk((*path, key), item)

    for entity in entities:
        for name in Q_NAMES:
            if name in entity:
                attribute = entity[name]
                walk((name,), attribute.get("value", attribute.get("object")))
    return tuple(dict.fromkeys(found))


def _beside(value: Any) -> list[Any]:
    """The value and (numbers only) its neighbours: one apart for whole numbers (beyond 2^53 also one ulp
    apart), one ulp apart otherwise."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return [value]
    if isinstance(value, int) and abs(value) < EXACT_INT:
        return [value, value - 1, value + 1]
    whole = [value - 1, value + 1] if isinstance(value, int) and abs(value) < 2**63 - 1 else []
    if isinstance(value, int) and abs(value) >= 2**63:  # q takes whole numbers within ±2^63 only
        value = float(value)
    beside = [value, *whole, math.nextafter(value, -math.inf), math.nextafter(value, math.inf)]
    return [v for v in beside if math.isfinite(v)]  # q refuses 1e309 and the like


@st.composite
def q_compares(draw: st.DrawFn, hints: tuple[QHint, ...] = ()) -> Compare:
    """A comparison; with hints, mostly one aimed at a value an entity holds."""
    scalar_hints = [h for h in hints if h[1] not in ("dict", "list", "NoneType")]
    aimed = bool(scalar_hints) and draw(st.integers(0, 2)) > 0
    if aimed:
        path, _, target = draw(st.sampled_from(scalar_hints))
        numbers = st.sampled_from(_beside(target)) if _is_q_number(target) else q_literal_numbers
        strings = st.just(target) if isinstance(target, str) else q_strings
        scalars = st.one_of(st.just(target), st.just(target), q_literal_scalars)
    else:
        path, numbers, strings, scalars = draw(q_paths), q_literal_numbers, q_strings, q_literal_scalars
    op = draw(st.sampled_from(["==", "!=", ">=", "<=", ">", "<"]))
    value: Any
    if op not in ("==", "!="):
        value = draw(st.one_of(numbers, strings) if not aimed or isinstance(target, bool) else
                     numbers if _is_q_number(target) else strings)
    else:
        ranged = aimed and _is_q_number(target)  # then ranges end at the value or beside it
        match draw(st.integers(0, 4)):
            case 2 | 3 if ranged:
                value = Range(draw(numbers), draw(numbers))  # low > high is allowed: an empty range
            case 3:
                value = Range(draw(numbers), draw(numbers))
            case 4:
                value = tuple(draw(st.lists(scalars, min_size=2, max_size=3)))
            case _:
                value = draw(scalars)
    return Compare(path, op, value)  # type: ignore[arg-type]


def _is_q_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def q_nodes(hints: tuple[QHint, ...] = ()) -> st.SearchStrategy[Any]:
    """Parsed q expressions: comparisons, existence tests, and `;`/`|` of them, a few levels deep; with
    `hints` (see q_hints), mostly aimed at what the entities hold."""
    paths = st.one_of(q_paths, st.sampled_from([h[0] for h in hints])) if hints else q_paths
    atoms = st.one_of(q_compares(hints), q_compares(hints), st.builds(Exists, paths, st.booleans()))
    return st.recursive(atoms, lambda kids: st.one_of(
        st.lists(kids, min_size=2, max_size=3).map(lambda terms: And(tuple(terms))),
        st.lists(kids, min_size=2, max_size=3).map(lambda terms: Or(tuple(terms))),
    ), max_leaves=6)


def _q_literal(value: Any, draw: st.DrawFn) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value)  # always has "." or "e", so it parses back as a float
    return json.dumps(value, ensure_ascii=draw(st.booleans()))


def render_q(node: Any, draw: st.DrawFn) -> str:
    """q text for a node, with optional spaces and redundant parentheses; parse_q gives the node back."""
    def space() -> str:
        return draw(st.sampled_from(["", "", " ", "  "]))

    def path(parts: tuple[str, ...]) -> str:
        return parts[0] + "".join(f"{space()}[{space()}{key}{space()}]" for key in parts[1:])

    match node:
        case Exists(parts, negated):
            return ("!" + space() if negated else "") + path(parts)
        case Compare(parts, op, value):
            if isinstance(value, Range):
                literal = f"{_q_literal(value.low, draw)}{space()}..{space()}{_q_literal(value.high, draw)}"
            elif isinstance(value, tuple):
                literal = f"{space()},{space()}".join(_q_literal(v, draw) for v in value)
            else:
                literal = _q_literal(value, draw)
            return f"{path(parts)}{space()}{op}{space()}{literal}"
        case And(terms) | Or(terms):
            separator = ";" if isinstance(node, And) else "|"
            parts = []
            for term in terms:
                text = render_q(term, draw)
                # A nested And/Or of the same kind, or an Or inside an And, needs its parentheses; the
                # others get them now and then, which must change nothing.
                needed = isinstance(term, And | Or) and (type(term) is type(node) or isinstance(term, Or))
                if needed or draw(st.integers(0, 3)) == 0:
                    text = f"({space()}{text}{space()})"
                parts.append(text)
            return f"{space()}{separator}{space()}".join(parts)
    raise TypeError(node)


@st.composite
def q_expressions(draw: st.DrawFn, hints: tuple[QHint, ...] = ()) -> tuple[Any, str]:
    """A q node and a text of it."""
    node = draw(q_nodes(hints))
    return node, render_q(node, draw)


# Token soup: mostly q's own tokens in any order, with some arbitrary text, so a parser sees near misses.
_q_tokens = st.one_of(
    st.sampled_from(["a", "b", "rel", "x1", "_", "(", ")", "[", "]", "!", ";", "|", ",", "..", "==", "!=", ">=",
                     "<=", ">", "<", "=", "true", "false", "null", "\"", "\\", "-", ".", "e", " ", "1e", "[k]"]),
    st.integers(-(2**63) + 1, 2**63 - 1).map(str),
    q_numbers.map(repr),
    st.text(max_size=4).map(json.dumps),
    st.text(max_size=3),
)
q_soups = st.lists(_q_tokens, max_size=40).map("".join)
