"""/api/v1/catalogue through the test client, on SQLite and PostgreSQL: seeded from the scenarios,
filtered, paged, one type, categories; the city's imports override shipped types."""

from __future__ import annotations

import yaml

from citybrain.disposal.catalogue import flows, service
from citybrain.disposal.catalogue.spec import CATEGORIES
from tests.disposal.conftest import entry


def all_items(client, **params) -> list[dict]:
    """Every item of a listing, following next_cursor page by page."""
    items, cursor = [], None
    while True:
        page = client.get("/api/v1/catalogue", params={**params, **({"cursor": cursor} if cursor else {})})
        assert page.status_code == 200, page.text
        body = page.json()
        items += body["items"]
        cursor = body["next_cursor"]
        if cursor is None:
            return items


def test_a_fresh_store_serves_the_scenarios_catalogue(client):
    items = all_items(client, limit=40)
    assert len(items) == 129 and [i["code"] for i in items] == sorted(i["code"] for i in items)
    assert all(i["source"].startswith("scenario:") for i in items)
    gas = next(i for i in items if i["code"] == "XF-02-001")
    assert gas["priority"] == "emergency" and gas["sla"]["respond"] == "5m" and gas["joint"] is True


def test_filters(client):
    fire = all_items(client, category="fire_safety")
    assert fire and {i["category"] for i in fire} == {"fire_safety"}
    fire_brigade = {i["code"] for i in all_items(client, department="xiaofang")}
    assert {"XF-01-001", "SQ-02-001"} <= fire_brigade  # leads one, assists on the other
    assert {i["level"] for i in all_items(client, level="village")} == {"village"}
    assert [i["code"] for i in all_items(client, q="井盖")] == ["CG-04-001"]
    assert "XF-02-001" in {i["code"] for i in all_items(client, q="Gas Leak")}
    assert all_items(client, category="water", q="井盖") == []


def test_bad_filters_are_problems(client):
    for params in ({"category": "weather"}, {"department": "wizards"}, {"level": "province"}, {"limit": 0}):
        response = client.get("/api/v1/catalogue", params=params)
        assert response.status_code == 422, params
        assert response.headers["content-type"].startswith("application/problem+json")


def test_one_type_and_an_unknown_one(client):
    one = client.get("/api/v1/catalogue/SQ-02-001")
    assert one.status_code == 200
    assert one.json()["name"] == {"zh": "群租", "en": "Overcrowded shared rentals"}
    assert one.json()["assisting"] == ["gongan", "xiaofang"]
    missing = client.get("/api/v1/catalogue/XX-00-000")
    assert missing.status_code == 404
    assert missing.headers["content-type"].startswith("application/problem+json")
    assert "XX-00-000" in missing.json()["detail"]


def test_categories_with_counts(client):
    categories = client.get("/api/v1/catalogue/categories").json()
    assert [c["slug"] for c in categories] == list(CATEGORIES)
    assert sum(c["count"] for c in categories) == 129 and min(c["count"] for c in categories) > 0
    assert categories[0]["name"] == {"zh": "城市管理", "en": "City management"}


def test_imports_override_shipped_types_and_survive_seeding(client, platform):
    shipped = service.Catalogue(flows.shipped().entries.values()).get("XF-02-001")
    edited = shipped.model_dump(mode="json") | {"name": {"zh": "燃气泄漏（本区）", "en": "Gas leak (district)"}}
    text = yaml.safe_dump({"event_types": [edited, entry("CG-09-001", refs={"open311_code": "city-own"})]},
                          allow_unicode=True)
    located = service.read_files([("city.yaml", text, None)])
    assert flows.import_entries(platform, located).written == 2

    assert flows.seed(platform) == 0  # the city's version of XF-02-001 is not put back
    gas = client.get("/api/v1/catalogue/XF-02-001").json()
    assert gas["name"]["zh"] == "燃气泄漏（本区）" and gas["source"] == "import:city.yaml"
    assert client.get("/api/v1/catalogue/CG-09-001").status_code == 200
    assert len(all_items(client, limit=1000)) == 130
    # What the case flows route by sees the same catalogue.
    in_force = {spec.code: spec for spec in service.load_catalogue(platform)}
    assert len(in_force) == 130 and in_force["XF-02-001"].name.en == "Gas leak (district)"
