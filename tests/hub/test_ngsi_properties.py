"""Property tests of the NGSI-LD normalized form: the canonical form is a fixed point, what the store keeps
is what the API gives back (single writes, batches and the export), and every broken field is named.

The API-level properties run on both store backends, so they keep their example counts modest.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import orjson
import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from citybrain.cli import app as cli_app
from citybrain.core.errors import InvalidInput
from citybrain.hub.entities.models import EntityHistoryRow, EntityRow
from citybrain.hub.entities.ngsi import EntityRecord, parse_entity, record_to_ngsi, to_ngsi
from tests.hub.strategies import (
    add_test_types,
    breakages,
    entities,
    entity_batches,
    org_codes,
    same_json,
    type_registry,
)


def wire(value: Any) -> bytes:
    """JSON as any client may send it: whole numbers of any size (orjson stops at 64 bits)."""
    return json.dumps(value, ensure_ascii=False, allow_nan=False).encode()


API_SETTINGS = settings(max_examples=30, deadline=None,
                        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def parse(raw: Any, prefix: str = "") -> EntityRecord:
    return parse_entity(raw, types=type_registry(), org_units=frozenset(org_codes()), prefix=prefix)


def assert_same_record(a: EntityRecord, b: EntityRecord) -> None:
    assert same_json(record_to_ngsi(a), record_to_ngsi(b)), (record_to_ngsi(a), record_to_ngsi(b))
    assert same_json(a.bbox, b.bbox), (a.bbox, b.bbox)


def field_under(field: str, path: str) -> bool:
    """Whether an error's field is `path` or lies inside it (`path.x`, `path[0]`)."""
    return field == path or field.startswith(path + ".") or field.startswith(path + "[")


def clear_entities(platform: Any) -> None:
    """Each Hypothesis example starts from an empty store (the platform fixture lives for the whole test)."""
    with platform.transaction() as session:
        session.execute(sa.delete(EntityRow))
        session.execute(sa.delete(EntityHistoryRow))


@pytest.fixture
def api(client: Any, platform: Any) -> Any:
    add_test_types(platform.types)
    return client


# ----------------------------------------------------------------------------------------- the form


@settings(max_examples=300, deadline=None)
@given(entities())
def test_canonical_form_is_a_fixed_point(raw: dict[str, Any]) -> None:
    record = parse(raw)
    again = parse(to_ngsi(record.id, record.type, record.org_unit, record.location, record.attrs))
    assert_same_record(again, record)
    # … also after a trip over the wire, which is how an export is imported elsewhere.
    wire = orjson.loads(orjson.dumps(record_to_ngsi(record)))
    assert_same_record(parse(wire), record)
    assert same_json(record_to_ngsi(parse(wire)), wire)


@settings(max_examples=200, deadline=None)
@given(entities())
def test_timestamps_are_canonical_utc(raw: dict[str, Any]) -> None:
    def walk(attr: dict[str, Any]) -> None:
        if "observedAt" in attr:
            assert attr["observedAt"].endswith("Z")
        for value in attr.values():
            if isinstance(value, dict) and "type" in value and value is not attr.get("value"):
                walk(value)

    for attr in parse(raw).attrs.values():
        walk(attr)


@settings(max_examples=300, deadline=None)
@given(breakages())
def test_a_broken_field_is_named(broken: tuple[dict[str, Any], str]) -> None:
    raw, path = broken
    with pytest.raises(InvalidInput) as caught:
        parse(raw)
    fields = [error.field for error in caught.value.errors]
    assert fields, caught.value.detail
    assert all(field_under(field, path) for field in fields), (path, caught.value.errors)
    # In a batch the same errors carry the item's index.
    with pytest.raises(InvalidInput) as in_batch:
        parse(raw, prefix="[7].")
    assert [error.field for error in in_batch.value.errors] == [f"[7].{field}" for field in fields]


@settings(max_examples=300, deadline=None)
@given(st.one_of(entities(), breakages().map(lambda broken: broken[0])))
def test_lean_pass_is_the_thorough_validator_for_plain_entities(raw: dict[str, Any]) -> None:
    # parse_entity's lean pass takes every valid plain-JSON entity, with the record the thorough validator
    # gives; everything else it leaves to that validator.
    from citybrain.hub.entities import ngsi

    org_units = frozenset(org_codes())
    lean = ngsi._plain_entity(raw, type_registry(), org_units)
    try:
        thorough = ngsi._validate_entity(raw, type_registry(), org_units, "")
    except InvalidInput:
        assert lean is None, raw
    else:
        assert lean is not None, raw
        assert repr(lean) == repr(thorough)
        assert lean.location is thorough.location


@pytest.mark.parametrize(("field", "value"), [
    ("id", "urn:ngsi-ld:AirQualityObserved:1\n"),  # ids travel as one URL path segment
    ("id", "urn:ngsi-ld:AirQualityObserved:\u212a"),  # the Kelvin sign, which IGNORECASE took for a k
    ("temp\n", {"type": "Property", "value": 1}),
    ("location", {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [10**400, 30]}}),
])
def test_near_misses_are_refused_by_name(field: str, value: Any) -> None:
    raw = {"id": "urn:ngsi-ld:AirQualityObserved:1", "type": "AirQualityObserved", field: value}
    with pytest.raises(InvalidInput) as caught:
        parse(raw)
    assert [error.field.split(".")[0] for error in caught.value.errors] == [field]


# ------------------------------------------------------------------------------------------ the API


@API_SETTINGS
@given(raw=entities())
def test_stored_entity_reads_back_canonical(api: Any, platform: Any, raw: dict[str, Any]) -> None:
    clear_entities(platform)
    canonical = record_to_ngsi(parse(raw))
    url = f"/api/v1/entities/{raw['id']}"
    written = api.put(url, content=wire(raw))
    assert written.status_code == 200, written.text
    body = written.json()
    assert body.pop("createdAt") and body.pop("modifiedAt")
    assert same_json(body, canonical), (body, canonical)
    read = api.get(url)
    assert read.status_code == 200, read.text
    assert same_json(read.json(), canonical), (read.json(), canonical)
    # What the API gives back can be written back (an export is an import), and changes nothing.
    again = api.put(url, content=read.content)
    assert again.status_code == 200, again.text
    assert same_json(api.get(url).json(), canonical)


@API_SETTINGS
@given(batch=entity_batches(), page_size=st.integers(1, 4))
def test_batch_upsert_then_export_reads_back(api: Any, platform: Any, batch: list[dict[str, Any]],
                                             page_size: int) -> None:
    clear_entities(platform)
    response = api.post("/api/v1/entityOperations/upsert", content=wire(batch))
    assert response.status_code == 200, response.text
    assert sorted(response.json()["success"]) == sorted(e["id"] for e in batch)
    exported: dict[str, Any] = {}
    url: str | None = f"/api/v1/entities?limit={page_size}"
    while url is not None:
        page = api.get(url)
        assert page.status_code == 200, page.text
        for item in page.json()["items"]:
            assert item["id"] not in exported
            exported[item["id"]] = item
        cursor = page.json()["next_cursor"]
        url = f"/api/v1/entities?limit={page_size}&cursor={cursor}" if cursor else None
    expected = {e["id"]: record_to_ngsi(parse(e)) for e in batch}
    assert exported.keys() == expected.keys()
    for entity_id, entity in expected.items():
        assert same_json(exported[entity_id], entity), (exported[entity_id], entity)


@settings(max_examples=6, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(batch=entity_batches(max_size=5))
def test_cli_export_is_what_the_batch_wrote(api: Any, platform: Any, tmp_path: Path,
                                            batch: list[dict[str, Any]]) -> None:
    clear_entities(platform)
    assert api.post("/api/v1/entityOperations/upsert", content=wire(batch)).status_code == 200
    out = tmp_path / "export.json"
    result = CliRunner().invoke(cli_app, ["export", "entities", "--db", platform.settings.database_url,
                                          "--home", str(tmp_path), "--out", str(out)])
    assert result.exit_code == 0, result.output
    exported = {item["id"]: item for item in orjson.loads(out.read_bytes())}
    expected = {e["id"]: record_to_ngsi(parse(e)) for e in batch}
    assert exported.keys() == expected.keys()
    for entity_id, entity in expected.items():
        assert same_json(exported[entity_id], entity)
        assert_same_record(parse(exported[entity_id]), parse(entity))


@API_SETTINGS
@given(broken=breakages(json_only=True))
def test_api_names_the_broken_field(api: Any, platform: Any, broken: tuple[dict[str, Any], str]) -> None:
    clear_entities(platform)
    raw, path = broken
    response = api.post("/api/v1/entities", content=wire(raw))
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["status"] == 422
    fields = [error["field"] for error in problem["errors"]]
    assert fields and all(field_under(field, path) for field in fields), (path, problem)


@API_SETTINGS
@given(good=entity_batches(max_size=4), broken=breakages(json_only=True), where=st.integers(0, 4))
def test_batch_keeps_good_items_and_names_the_bad_one(api: Any, platform: Any, good: list[dict[str, Any]],
                                                     broken: tuple[dict[str, Any], str], where: int) -> None:
    clear_entities(platform)
    raw, path = broken
    index = min(where, len(good))
    items = [*good[:index], raw, *good[index:]]
    response = api.post("/api/v1/entityOperations/upsert", content=wire(items))
    assert response.status_code == 207, response.text
    body = response.json()
    assert sorted(body["success"]) == sorted(e["id"] for e in good)
    [error] = body["errors"]
    assert error["index"] == index
    fields = [e["field"] for e in error["error"]["errors"]]
    assert fields and all(field_under(field, f"[{index}].{path}") for field in fields), (path, error)
