"""Property tests of entity queries: the `q` filter compiled to SQL (SQLite and PostgreSQL) against its Python
evaluator, `bbox`/`near` against exact geometry, the subscription matcher against the query it mirrors,
pagination, and the parser and the API on arbitrary text.

The store-backed properties run on both backends, so each example writes its entities once and runs several
queries against them. Inputs that once broke (found by these properties) are kept as plain tests at the end.
"""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from citybrain.core.errors import InvalidInput
from citybrain.hub.entities import geo
from citybrain.hub.entities import service as entity_service
from citybrain.hub.entities.models import EntityHistoryRow, EntityRow
from citybrain.hub.entities.ngsi import EntityRecord, parse_entity, record_to_ngsi
from citybrain.hub.entities.query import (
    MAX_Q_LENGTH,
    MAX_Q_NESTING,
    And,
    Compare,
    Exists,
    Node,
    Or,
    Range,
    evaluate,
    parse_q,
)
from citybrain.hub.entities.service import EntityQuery, matches, query_entities
from tests.hub.strategies import (
    EXACT_INT,
    Q_TYPES,
    add_test_types,
    geometries,
    org_codes,
    polygons,
    positions,
    q_entity_sets,
    q_expressions,
    q_hints,
    q_nodes,
    q_soups,
    type_registry,
)

STORE_SETTINGS = settings(max_examples=30, deadline=None, suppress_health_check=[
    HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large])

GEO_BOX = (120.08, 30.18, 120.16, 30.26)  # about 8 km square, in Hangzhou
METERS_PER_DEG_HAVERSINE = geo.EARTH_RADIUS_M * math.pi / 180  # what haversine_m gives for one degree of arc
NEAR_TOLERANCE = 1e-6  # relative: entities this close to maxDistance are left out (float noise, not meaning)


def _org_sample() -> tuple[str, ...]:
    """The district, two streets and two communities under each: nesting for orgUnit queries."""
    codes = org_codes()
    district, streets = codes[0], [c for c in codes if len(c) == 9][:2]
    communities = [c for street in streets for c in codes if c.startswith(street) and c != street][:4]
    return (district, *streets, *communities)


ORG_SAMPLE = _org_sample()


# ------------------------------------------------------------------------------------------- helpers


def wire(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, allow_nan=False).encode()


def parse(raw: dict[str, Any]) -> EntityRecord:
    return parse_entity(raw, types=type_registry(), org_units=frozenset(org_codes()))


def clear_entities(platform: Any) -> None:
    """Each Hypothesis example starts from an empty store (the platform fixture lives for the whole test)."""
    with platform.transaction() as session:
        session.execute(sa.delete(EntityRow))
        session.execute(sa.delete(EntityHistoryRow))


def store(api: Any, platform: Any, batch: list[dict[str, Any]]) -> list[EntityRecord]:
    """Replace the store's entities by `batch`; returns them as the store keeps them."""
    clear_entities(platform)
    if batch:
        response = api.post("/api/v1/entityOperations/upsert", content=wire(batch))
        assert response.status_code == 200, response.text
        assert sorted(response.json()["success"]) == sorted(e["id"] for e in batch)
    return [parse(e) for e in batch]


def get_ids(api: Any, **params: Any) -> list[str]:
    """Ids of every match, in the order the API gives them (one page holds them all)."""
    response = api.get("/api/v1/entities", params={"limit": 1000, **params})
    assert response.status_code == 200, (params, response.text)
    body = response.json()
    assert body["next_cursor"] is None
    return [item["id"] for item in body["items"]]


def explain(text: str, records: list[EntityRecord], got: list[str], expected: list[str]) -> str:
    differing = sorted(set(got) ^ set(expected))
    attrs = {r.id: r.attrs for r in records if r.id in differing}
    return (f"q={text!r}\n  only SQL: {sorted(set(got) - set(expected))}\n"
            f"  only Python: {sorted(set(expected) - set(got))}\n  their attributes: {attrs}")


def same_node(a: Any, b: Any) -> bool:
    """Structural equality of q nodes with JSON's strictness: true is not 1, 2.0 is not 2."""
    if isinstance(a, And | Or | Exists | Compare | Range | tuple):
        if type(a) is not type(b):
            return False
        if isinstance(a, tuple):
            return len(a) == len(b) and all(same_node(x, y) for x, y in zip(a, b, strict=True))
        return all(same_node(getattr(a, f), getattr(b, f)) for f in a.__slots__)  # type: ignore[union-attr]
    return type(a) is type(b) and a == b


def near_is_ambiguous(location: dict[str, Any], near: tuple[float, float, float]) -> bool:
    """Entities left out of `near` comparisons: within float noise of maxDistance."""
    lon, lat, meters = near
    distance = geo.distance_m(location, lon, lat)
    return abs(distance - meters) <= NEAR_TOLERANCE * max(meters, 1.0)


@pytest.fixture
def api(client: Any, platform: Any) -> Any:
    add_test_types(platform.types)
    return client


# -------------------------------------------------------------------------------------------- parser


@settings(max_examples=300, deadline=None)
@given(q_expressions())
def test_parse_q_reads_back_the_expression(expression: tuple[Node, str]) -> None:
    node, text = expression
    parsed = parse_q(text)
    assert same_node(parsed, node), (text, parsed, node)


SAMPLE_ATTRS = [
    {},
    {"a": {"type": "Property", "value": 3}, "b": {"type": "Property", "value": "x"},
     "rel": {"type": "Relationship", "object": "urn:x:1"}},
    {"a": {"type": "Property", "value": {"k": [1, None], "m": {"k": True}}}, "b": {"type": "Property", "value": None},
     "x1": {"type": "LanguageProperty", "languageMap": {"zh": "杭州"}}},
    {"a": {"type": "Property", "value": [1, "2"]}, "b": {"type": "Property", "value": False}, "_": "not an attribute"},
]


@settings(max_examples=500, deadline=None)
@given(st.one_of(st.text(), q_soups))
@example("(" * 100 + "a" + ")" * 100)
@example("a" * (MAX_Q_LENGTH + 1))
@example("a==1..2..3")
@example('a=="\\x"')
def test_parse_q_rejects_only_with_invalid_input(text: str) -> None:
    try:
        node = parse_q(text)
    except InvalidInput as exc:
        assert [error.field for error in exc.errors] == ["q"], exc.errors
        return
    # What parses, the subscription matcher can run on any attributes.
    for attrs in SAMPLE_ATTRS:
        assert isinstance(evaluate(node, attrs), bool)


@STORE_SETTINGS
@given(q=st.one_of(st.text(), q_soups, q_expressions().map(lambda expression: expression[1])))
@example(q="")
@example(q="   ")
@example(q="a" * (MAX_Q_LENGTH + 1))
@example(q="a\x00")
def test_api_answers_any_q_with_results_or_a_problem(api: Any, platform: Any, q: str) -> None:
    # A few entities (the upsert is a no-op after the first example) so the SQL has values to work on.
    batch = [{"id": f"urn:ngsi-ld:{Q_TYPES[0]}:{i}", "type": Q_TYPES[0], "a": value}
             for i, value in enumerate([{"type": "Property", "value": 3}, {"type": "Property", "value": "x"},
                                        {"type": "Property", "value": {"k": [1]}},
                                        {"type": "Relationship", "object": "urn:x:1"}])]
    assert api.post("/api/v1/entityOperations/upsert", content=wire(batch)).status_code == 200
    try:
        valid = q == "" or parse_q(q) is not None
    except InvalidInput:
        valid = False
    response = api.get("/api/v1/entities", params={"q": q})
    if valid:
        assert response.status_code == 200, (q, response.text)
        return
    assert response.status_code in (400, 422), (q, response.status_code, response.text)
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["status"] == response.status_code
    assert any(error["field"].endswith("q") for error in problem["errors"]), problem


# ------------------------------------------------------------------------------------ q: SQL vs Python


@STORE_SETTINGS
@given(data=st.data(), batch=q_entity_sets(), types=st.sampled_from([Q_TYPES, Q_TYPES[:1], Q_TYPES[1:]]))
def test_sql_filter_agrees_with_python_evaluator(api: Any, platform: Any, data: st.DataObject,
                                                 batch: list[dict[str, Any]], types: tuple[str, ...]) -> None:
    records = store(api, platform, batch)
    for _, text in data.draw(st.lists(q_expressions(q_hints(batch)), min_size=3, max_size=6)):
        node = parse_q(text)
        expected = sorted(r.id for r in records if r.type in types and evaluate(node, r.attrs))
        response = api.get("/api/v1/entities", params={"type": ",".join(types), "q": text, "limit": 1000,
                                                       "count": "true"})
        assert response.status_code == 200, (text, response.text)
        body = response.json()
        got = [item["id"] for item in body["items"]]
        assert got == expected, explain(text, records, got, expected)
        assert body["count"] == len(expected), text


# ------------------------------------------------------------------------------------------------ geo


@st.composite
def geo_cases(draw: st.DrawFn) -> tuple[list[dict[str, Any] | None], geo.BBox, tuple[float, float, float]]:
    """Locations (None: no location), a bbox and a near query in GEO_BOX, with points placed on the bbox's
    edges and around the near circle, where a wrong comparison would show."""
    coordinate_x = st.floats(GEO_BOX[0] - 0.01, GEO_BOX[2] + 0.01)
    coordinate_y = st.floats(GEO_BOX[1] - 0.01, GEO_BOX[3] + 0.01)
    x0, x1 = sorted((draw(coordinate_x), draw(coordinate_x)))
    y0, y1 = sorted((draw(coordinate_y), draw(coordinate_y)))
    box = (x0, y0, x1, y1)
    lon, lat = draw(positions(GEO_BOX))[:2]
    meters = draw(st.one_of(st.sampled_from([0.0, 1.0, 100.0, 1000.0]), st.floats(0, 6000)))
    locations: list[dict[str, Any] | None] = draw(st.lists(st.none() | geometries(GEO_BOX), max_size=10))
    for _ in range(draw(st.integers(0, 4))):  # on the bbox's edges and corners
        x = draw(st.sampled_from([x0, x1]) | st.floats(x0, x1))
        y = draw(st.sampled_from([y0, y1]) if x not in (x0, x1) else st.floats(y0, y1) | st.sampled_from([y0, y1]))
        locations.append({"type": "Point", "coordinates": [x, y]})
    for _ in range(draw(st.integers(0, 6))):  # around the near circle, more often along the axes
        bearing = math.radians(draw(st.sampled_from([0.0, 90.0, 180.0, 270.0]) | st.floats(0, 360))
                               + draw(st.floats(-2, 2)))
        r = meters * draw(st.floats(0.9, 1.1))
        dlat = r * math.cos(bearing) / METERS_PER_DEG_HAVERSINE
        dlon = r * math.sin(bearing) / (METERS_PER_DEG_HAVERSINE * math.cos(math.radians(lat)))
        locations.append({"type": "Point", "coordinates": [lon + dlon, lat + dlat]})
    if draw(st.booleans()):
        locations.append(draw(polygons((lon - 0.03, lat - 0.03, lon + 0.03, lat + 0.03), max_radius=0.01)))
    for _ in range(draw(st.integers(0, 2))):  # an L around a corner of the bbox: its own box covers the bbox
        gap = draw(st.sampled_from([0.0, 1e-9]) | st.floats(0, 0.01))
        sx, sy = draw(st.sampled_from([(1, 1), (1, -1), (-1, 1), (-1, -1)]))
        cx, cy = (x0 - gap, x1) if sx > 0 else (x1 + gap, x0), (y0 - gap, y1) if sy > 0 else (y1 + gap, y0)
        locations.append({"type": "LineString", "coordinates": [[cx[1], cy[0]], [cx[0], cy[0]], [cx[0], cy[1]]]})
    return locations, box, (lon, lat, meters)


def located(locations: list[dict[str, Any] | None]) -> list[dict[str, Any]]:
    out = []
    for index, location in enumerate(locations):
        entity: dict[str, Any] = {"id": f"urn:ngsi-ld:{Q_TYPES[0]}:{index:03d}", "type": Q_TYPES[0]}
        if location is not None:
            entity["location"] = {"type": "GeoProperty", "value": location}
        out.append(entity)
    return out


def csv(numbers: tuple[float, ...]) -> str:
    return ",".join(repr(n) for n in numbers)


@pytest.fixture(params=["spatial-index", "id-order-scan"])
def spatial_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Boxes answered from the spatial indexes (small ones), or by walking entities in id order (large)."""
    if request.param == "id-order-scan":
        monkeypatch.setattr(entity_service, "SPATIAL_CANDIDATES_MAX", -1)
    return request.param


@STORE_SETTINGS
@given(case=geo_cases())
def test_bbox_and_near_agree_with_exact_geometry(api: Any, platform: Any, spatial_path: str, case: Any) -> None:
    locations, box, near = case
    records = store(api, platform, located(locations))
    placed = [r for r in records if r.location is not None]

    expected = [r.id for r in placed if geo.intersects_box(r.location, box)]
    assert get_ids(api, bbox=csv(box)) == expected, (box, set(get_ids(api, bbox=csv(box))) ^ set(expected))

    lon, lat, meters = near
    ambiguous = {r.id for r in placed if near_is_ambiguous(r.location, near)}
    expected = [r.id for r in placed if r.id not in ambiguous and geo.distance_m(r.location, lon, lat) <= meters]
    got = [i for i in get_ids(api, near=csv((lon, lat)), maxDistance=repr(meters)) if i not in ambiguous]
    assert got == expected, (near, {i: geo.distance_m(next(r.location for r in placed if r.id == i), lon, lat)
                                    for i in set(got) ^ set(expected)})

    both = [i for i in expected if geo.intersects_box(next(r.location for r in placed if r.id == i), box)]
    got = [i for i in get_ids(api, bbox=csv(box), near=csv((lon, lat)), maxDistance=repr(meters))
           if i not in ambiguous]
    assert got == both, (box, near)


# ------------------------------------------------------------------------- the subscription matcher


@st.composite
def entity_queries(draw: st.DrawFn, batch: list[dict[str, Any]]) -> tuple[EntityQuery, str | None]:
    """An EntityQuery over some of type, id, q, bbox, near; and an org unit to restrict it to."""
    types = draw(st.sampled_from([(), Q_TYPES, Q_TYPES[:1], Q_TYPES[1:]]))
    ids = [e["id"] for e in batch]
    chosen = tuple(draw(st.lists(st.sampled_from(ids), max_size=3, unique=True))) if ids and draw(
        st.integers(0, 3)) == 0 else ()
    q = draw(st.none() | q_nodes(q_hints(batch)))
    box = near = None
    if draw(st.booleans()):
        x = sorted((draw(st.floats(GEO_BOX[0], GEO_BOX[2])), draw(st.floats(GEO_BOX[0], GEO_BOX[2]))))
        y = sorted((draw(st.floats(GEO_BOX[1], GEO_BOX[3])), draw(st.floats(GEO_BOX[1], GEO_BOX[3]))))
        box = (x[0], y[0], x[1], y[1])
    if draw(st.booleans()):
        lon, lat = draw(positions(GEO_BOX))[:2]
        near = (lon, lat, draw(st.floats(0, 6000)))
    org_unit = draw(st.none() | st.sampled_from(ORG_SAMPLE))
    return EntityQuery(types=types, ids=chosen, q=q, bbox=box, near=near), org_unit


@STORE_SETTINGS
@given(data=st.data(), batch=q_entity_sets(locations=st.none() | geometries(GEO_BOX), org_unit_codes=ORG_SAMPLE))
def test_subscription_matcher_agrees_with_query(api: Any, platform: Any, data: st.DataObject,
                                                batch: list[dict[str, Any]]) -> None:
    records = store(api, platform, batch)
    for _ in range(5):
        query, org_unit = data.draw(entity_queries(batch))
        if org_unit is not None:
            query = EntityQuery(types=query.types, ids=query.ids, q=query.q, bbox=query.bbox, near=query.near,
                                org_units=tuple(platform.org_tree.descendants(org_unit)))
        ambiguous = {r.id for r in records
                     if query.near and r.location is not None and near_is_ambiguous(r.location, query.near)}
        expected = sorted(r.id for r in records
                          if r.id not in ambiguous and matches(query, record_to_ngsi(r), r.org_unit))
        with platform.session() as session:
            rows, cursor = query_entities(session, query=query, after=None, limit=1000)
        got = [row.id for row in rows if row.id not in ambiguous]
        assert cursor is None
        assert got == expected, (query, explain(str(query.q), records, got, expected))


# ----------------------------------------------------------------------------------------- pagination


def all_pages(api: Any, limit: int, **params: Any) -> list[list[str]]:
    pages: list[list[str]] = []
    cursor: str | None = None
    while True:
        response = api.get("/api/v1/entities", params={**params, "limit": limit,
                                                       **({"cursor": cursor} if cursor else {})})
        assert response.status_code == 200, response.text
        body = response.json()
        pages.append([item["id"] for item in body["items"]])
        cursor = body["next_cursor"]
        assert ("link" in response.headers) == (cursor is not None)
        if cursor is None:
            return pages
        assert len(pages) <= 1000, "the cursor does not advance"


@STORE_SETTINGS
@given(batch=q_entity_sets(max_size=15, varied_ids=True, locations=st.none() | geometries(GEO_BOX)),
       q=st.none() | q_expressions().map(lambda expression: expression[1]),
       box=st.none() | st.just(GEO_BOX) | st.just((120.1, 30.2, 120.12, 30.22)),
       limit=st.integers(1, 4))
def test_pages_partition_the_result(api: Any, platform: Any, batch: list[dict[str, Any]], q: str | None,
                                    box: geo.BBox | None, limit: int) -> None:
    store(api, platform, batch)
    params = {k: v for k, v in {"q": q, "bbox": csv(box) if box else None}.items() if v is not None}
    everything = get_ids(api, **params)
    assert everything == sorted(set(everything))  # id order, no repeats
    pages = all_pages(api, limit, **params)
    assert all(len(page) == limit for page in pages[:-1]), pages
    assert len(pages[-1]) <= limit
    assert [i for page in pages for i in page] == everything


@settings(max_examples=5, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                 HealthCheck.too_slow])
@given(count=st.integers(90, 260), picks=st.sets(st.integers(0, 259), max_size=6), limit=st.integers(1, 3),
       use_near=st.booleans())
def test_pages_stay_whole_when_most_candidates_fail_the_exact_test(api: Any, platform: Any, count: int,
                                                                   picks: set[int], limit: int,
                                                                   use_near: bool) -> None:
    """Entities whose bounding box covers the query but whose shape does not: the store reads candidates in
    chunks and drops them in Python, and a page must still come out full and in order."""
    decoy = {"type": "LineString", "coordinates": [[120.125, 30.195], [120.095, 30.195], [120.095, 30.225]]}
    batch = []
    for index in range(count):
        location = ({"type": "Point", "coordinates": [120.108 + index % 5 * 0.001, 30.209]} if index in picks
                    else decoy)
        batch.append({"id": f"urn:ngsi-ld:{Q_TYPES[0]}:{index:04d}", "type": Q_TYPES[0],
                      "location": {"type": "GeoProperty", "value": location}})
    store(api, platform, batch)
    params = {"near": "120.11,30.21", "maxDistance": "1000"} if use_near else {"bbox": "120.1,30.2,120.12,30.22"}
    expected = [f"urn:ngsi-ld:{Q_TYPES[0]}:{index:04d}" for index in sorted(picks) if index < count]
    pages = all_pages(api, limit, **params)
    assert all(len(page) == limit for page in pages[:-1]), pages
    assert [i for page in pages for i in page] == expected


# ---------------------------------------------------------------------------- inputs that once broke
# Each of these was found by the properties above (as a 500 or a disagreement) and is kept as a plain test.


def test_near_finds_points_just_inside_max_distance(api: Any, platform: Any) -> None:
    north = 30.2 + 1000 / METERS_PER_DEG_HAVERSINE * 0.9995
    location = {"type": "Point", "coordinates": [120.1, north]}
    store(api, platform, located([location]))
    assert geo.distance_m(location, 120.1, 30.2) < 999.6
    assert get_ids(api, near="120.1,30.2", maxDistance="1000") == [f"urn:ngsi-ld:{Q_TYPES[0]}:000"]


@pytest.mark.parametrize("q", ["name", 'name[zh]=="杭州"'])
def test_q_on_language_property_agrees_with_python(api: Any, platform: Any, q: str) -> None:
    records = store(api, platform, [{"id": "urn:ngsi-ld:PropertyTestThing:1", "type": Q_TYPES[0],
                                     "name": {"type": "LanguageProperty", "languageMap": {"zh": "杭州"}}}])
    expected = [r.id for r in records if evaluate(parse_q(q), r.attrs)]
    assert get_ids(api, q=q) == expected


@pytest.mark.parametrize("q", ["location", "orgUnit", f'orgUnit=="urn:ngsi-ld:OrgUnit:{ORG_SAMPLE[0]}"',
                               '!location', 'location[type]=="Point"'])
def test_q_refuses_location_and_org_unit_and_points_to_their_filters(api: Any, q: str) -> None:
    # Queries keep them in columns and subscriptions see them as attributes: q would mean two things.
    with pytest.raises(InvalidInput) as caught:
        parse_q(q)
    assert [e.field for e in caught.value.errors] == ["q"]
    response = api.get("/api/v1/entities", params={"q": q})
    assert response.status_code == 422, response.text
    assert response.json()["errors"][0]["field"] == "q"
    assert "bbox" in response.text or "orgUnit=" in response.text


def test_big_int_literals_compare_exactly(api: Any, platform: Any) -> None:
    records = store(api, platform, [{"id": "urn:ngsi-ld:PropertyTestThing:1", "type": Q_TYPES[0],
                                     "a": {"type": "Property", "value": EXACT_INT}}])
    for q in (f"a=={EXACT_INT + 1}", f"a<{EXACT_INT + 1}", f"a!={EXACT_INT + 1}"):
        expected = [r.id for r in records if evaluate(parse_q(q), r.attrs)]
        assert get_ids(api, q=q) == expected, q


def test_api_handles_nul_in_string_literals(api: Any) -> None:
    response = api.get("/api/v1/entities", params={"q": 'a=="\\u0000"'})
    assert response.status_code == 422, response.text
    assert "NUL" in response.json()["errors"][0]["reason"]


def test_api_rejects_lone_surrogate_literals(api: Any) -> None:
    response = api.get("/api/v1/entities", params={"q": 'a=="\\ud800"'})
    assert response.status_code == 422, response.text


def test_api_rejects_int_literals_beyond_64_bits(api: Any) -> None:
    for literal in (2**64, 2**63, -(2**63)):
        response = api.get("/api/v1/entities", params={"q": f"a=={literal}"})
        assert response.status_code == 422, response.text
    assert api.get("/api/v1/entities", params={"q": f"a=={2**63 - 1}"}).status_code == 200


def test_parse_q_refuses_deep_nesting_with_a_reason() -> None:
    with pytest.raises(InvalidInput, match="nest at most"):
        parse_q("(" * 400 + "a" + ")" * 400)
    assert parse_q("(" * MAX_Q_NESTING + "a" + ")" * MAX_Q_NESTING) == Exists(("a",))


@pytest.mark.parametrize("levels", [18, 90])
def test_api_handles_deeply_nested_q(api: Any, levels: int) -> None:
    q = "(a|(a;" * levels + "a" + "))" * levels
    response = api.get("/api/v1/entities", params={"q": q})
    assert response.status_code == 422, response.text


def test_api_answers_the_deepest_allowed_q(api: Any) -> None:
    levels = MAX_Q_NESTING // 2
    q = "(a|(a;" * levels + "a" + "))" * levels
    assert api.get("/api/v1/entities", params={"q": q}).status_code == 200
