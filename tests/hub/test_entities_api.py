"""The entity API through HTTP, on both store backends."""

from __future__ import annotations

from typing import Any

import pytest

BASE = "/api/v1"
LINGYIN = "330106012"  # a street of Xihu district (灵隐街道) in the test org tree


def air(n: int | str, pm25: float = 30.0, *, lon: float = 120.10, lat: float = 30.25,
        org: str | None = None, **extra: Any) -> dict[str, Any]:
    entity: dict[str, Any] = {
        "id": f"urn:ngsi-ld:AirQualityObserved:XH-{n}",
        "type": "AirQualityObserved",
        "pm25": {"type": "Property", "value": pm25, "unitCode": "GQ", "observedAt": "2026-11-25T08:00:00Z"},
        "location": {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [lon, lat]}},
        **extra,
    }
    if org:
        entity["orgUnit"] = {"type": "Relationship", "object": f"urn:ngsi-ld:OrgUnit:{org}"}
    return entity


def problem(response) -> dict[str, Any]:
    assert response.headers["content-type"] == "application/problem+json", response.text
    body = response.json()
    assert {"type", "title", "status", "detail"} <= body.keys()
    assert body["status"] == response.status_code
    return body


def fields(response) -> set[str]:
    return {e["field"] for e in problem(response)["errors"]}


def test_create_read_replace_delete(client):
    created = client.post(f"{BASE}/entities", json=air(1, org=LINGYIN))
    assert created.status_code == 201, created.text
    assert created.headers["location"].endswith("urn:ngsi-ld:AirQualityObserved:XH-1")
    assert created.json()["createdAt"] == "2026-11-25T08:00:00Z"

    got = client.get(f"{BASE}/entities/urn:ngsi-ld:AirQualityObserved:XH-1").json()
    assert got == air(1, org=LINGYIN)

    assert client.post(f"{BASE}/entities", json=air(1)).status_code == 409

    replaced = client.put(f"{BASE}/entities/urn:ngsi-ld:AirQualityObserved:XH-1",
                          json={"type": "AirQualityObserved", "pm10": {"type": "Property", "value": 80}})
    assert replaced.status_code == 200
    body = client.get(f"{BASE}/entities/urn:ngsi-ld:AirQualityObserved:XH-1").json()
    assert "pm25" not in body and body["pm10"]["value"] == 80 and "location" not in body

    assert client.delete(f"{BASE}/entities/urn:ngsi-ld:AirQualityObserved:XH-1").status_code == 204
    assert problem(client.get(f"{BASE}/entities/urn:ngsi-ld:AirQualityObserved:XH-1"))["status"] == 404
    assert client.delete(f"{BASE}/entities/urn:ngsi-ld:AirQualityObserved:XH-1").status_code == 404


def test_patch_attributes_merges_and_delete_attribute(client):
    client.post(f"{BASE}/entities", json=air(2))
    patched = client.patch(f"{BASE}/entities/urn:ngsi-ld:AirQualityObserved:XH-2/attrs",
                           json={"pm10": {"type": "Property", "value": 55.0}})
    assert patched.status_code == 200, patched.text
    assert patched.json()["pm25"]["value"] == 30.0 and patched.json()["pm10"]["value"] == 55.0
    assert fields(client.patch(f"{BASE}/entities/urn:ngsi-ld:AirQualityObserved:XH-2/attrs",
                               json={"pm10": {"type": "Property", "value": "high"}})) == {"pm10.value"}
    assert client.delete(f"{BASE}/entities/urn:ngsi-ld:AirQualityObserved:XH-2/attrs/pm10").status_code == 204
    assert "pm10" not in client.get(f"{BASE}/entities/urn:ngsi-ld:AirQualityObserved:XH-2").json()
    assert client.delete(f"{BASE}/entities/urn:ngsi-ld:AirQualityObserved:XH-2/attrs/pm10").status_code == 404


@pytest.mark.parametrize(("mutate", "field"), [
    (lambda e: e.update(id="not-a-urn"), "id"),
    (lambda e: e.update(id="urn:x"), "id"),
    (lambda e: e.update(type="Spaceship"), "type"),
    (lambda e: e["pm25"].update(value="very high"), "pm25.value"),
    (lambda e: e["pm25"].update(value=-3), "pm25.value"),
    (lambda e: e["pm25"].update(unitCode="CEL"), "pm25.unitCode"),
    (lambda e: e["pm25"].update(observedAt="yesterday"), "pm25.observedAt"),
    (lambda e: e["pm25"].update(observedAt="2026-11-25T08:00:00"), "pm25.observedAt"),
    (lambda e: e["pm25"].update(type="Quantity"), "pm25.type"),
    (lambda e: e["pm25"].pop("value"), "pm25.value"),
    (lambda e: e.update(refDevice={"type": "Relationship", "object": "device-7"}), "refDevice.object"),
    (lambda e: e.update(refDevice={"type": "Property", "value": "x"}), "refDevice.type"),
    (lambda e: e["location"]["value"].update(coordinates=[120.1, 95.0]), "location.value.coordinates"),
    (lambda e: e["location"]["value"].update(type="Circle"), "location.value.type"),
    (lambda e: e["location"].update(value={"type": "Polygon", "coordinates": [[[120, 30], [120.1, 30], [120.1, 30.1]]]}),
     "location.value.coordinates[0]"),
    (lambda e: e["location"].update(value={"type": "Polygon", "coordinates": [[[120, 30], [120.1, 30.1], [120.1, 30], [120, 30.1], [120, 30]]]}),
     "location.value.coordinates"),
    (lambda e: e.update(orgUnit={"type": "Relationship", "object": "urn:ngsi-ld:OrgUnit:999999"}), "orgUnit.object"),
    (lambda e: e.update({"bad name": {"type": "Property", "value": 1}}), "bad name"),
])
def test_bad_entities_name_the_field(client, mutate, field):
    entity = air("bad")
    mutate(entity)
    response = client.post(f"{BASE}/entities", json=entity)
    assert response.status_code == 422
    assert field in fields(response)


def test_malformed_bodies_are_problems_not_crashes(client):
    for body, content_type in [(b"{not json", "application/json"), (b"", "application/json"),
                               (b'{"id": NaN}', "application/json"), (b"[1,2", "application/json"),
                               ("\u00ff".encode("latin-1"), "text/plain")]:
        response = client.post(f"{BASE}/entities", content=body, headers={"content-type": content_type})
        assert response.status_code == 422
        assert "body" in fields(response)
    assert client.post(f"{BASE}/entities", json=[1, 2]).status_code == 422
    assert client.post(f"{BASE}/entityOperations/upsert", json={"id": "x"}).status_code == 422
    assert problem(client.get(f"{BASE}/entities/not-a-urn"))["errors"][0]["field"] == "entityId"


def test_batch_keeps_good_items_and_reports_each_bad_one(client):
    batch = [air(10), {"id": "nope", "type": "Spaceship"}, air(11, pm25="x"), air(12), air(10, pm25=1.0), 7]
    response = client.post(f"{BASE}/entityOperations/upsert", json=batch)
    assert response.status_code == 207
    body = response.json()
    assert body["success"] == ["urn:ngsi-ld:AirQualityObserved:XH-10", "urn:ngsi-ld:AirQualityObserved:XH-12"]
    by_index = {e["index"]: e for e in body["errors"]}
    assert sorted(by_index) == [1, 2, 4, 5]
    assert {e["field"] for e in by_index[1]["error"]["errors"]} == {"[1].id", "[1].type"}
    assert by_index[2]["error"]["errors"] == [{"field": "[2].pm25.value", "reason": "expected number, got str"}]
    assert "earlier in this batch" in by_index[4]["error"]["detail"]
    assert by_index[5]["entityId"] is None
    page = client.get(f"{BASE}/entities", params={"type": "AirQualityObserved"}).json()
    assert [e["id"] for e in page["items"]] == body["success"]


def test_batch_upsert_modes_and_type_conflict(client):
    assert client.post(f"{BASE}/entityOperations/upsert", json=[air(20)]).status_code == 200
    merge = client.post(f"{BASE}/entityOperations/upsert", params={"options": "update"},
                        json=[{"id": air(20)["id"], "type": "AirQualityObserved", "pm10": {"type": "Property", "value": 9}}])
    assert merge.status_code == 200
    got = client.get(f"{BASE}/entities/{air(20)['id']}").json()
    assert got["pm25"]["value"] == 30.0 and got["pm10"]["value"] == 9 and "location" in got
    clash = client.post(f"{BASE}/entityOperations/upsert",
                        json=[{"id": air(20)["id"], "type": "Streetlight"}])
    assert clash.status_code == 207
    assert clash.json()["errors"][0]["error"]["status"] == 409


def test_oversized_batch_and_body(client, platform):
    too_many = [air(i) for i in range(platform.settings.max_batch_entities + 1)]
    response = client.post(f"{BASE}/entityOperations/upsert", json=too_many)
    assert response.status_code == 413
    assert fields(response) == {"body"}
    assert client.get(f"{BASE}/entities", params={"type": "AirQualityObserved"}).json()["items"] == []
    huge = b"[" + b" " * (platform.settings.max_body_bytes + 10) + b"]"
    assert problem(client.post(f"{BASE}/entityOperations/upsert", content=huge,
                               headers={"content-type": "application/json"}))["status"] == 413


def test_query_by_type_q_org_and_pagination(client):
    towns = ["330106007", "330106012"]
    villages = [u["code"] for u in client.get(f"{BASE}/org/units", params={"parent": towns[0]}).json()["items"]]
    batch = [air(i, pm25=float(i), org=villages[i % len(villages)]) for i in range(30)]
    batch += [air(f"t{i}", pm25=100.0 + i, org=towns[1]) for i in range(5)]
    assert client.post(f"{BASE}/entityOperations/upsert", json=batch).status_code == 200

    under_town = client.get(f"{BASE}/entities", params={"orgUnit": towns[0], "count": "true", "limit": 1000}).json()
    assert under_town["count"] == 30
    high = client.get(f"{BASE}/entities", params={"q": "pm25>=100", "count": "true"}).json()
    assert high["count"] == 5 and all(e["pm25"]["value"] >= 100 for e in high["items"])
    ranged = client.get(f"{BASE}/entities", params={"q": "pm25==10..12;pm25!=11"}).json()
    assert sorted(e["pm25"]["value"] for e in ranged["items"]) == [10.0, 12.0]

    seen, cursor, pages = [], None, 0
    while True:
        params = {"type": "AirQualityObserved", "limit": 7, **({"cursor": cursor} if cursor else {})}
        response = client.get(f"{BASE}/entities", params=params)
        page = response.json()
        seen += [e["id"] for e in page["items"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            assert "link" not in response.headers
            break
        assert 'rel="next"' in response.headers["link"]
    assert pages == 5 and len(seen) == 35 == len(set(seen)) and seen == sorted(seen)

    only = client.get(f"{BASE}/entities", params={"attrs": "pm25", "limit": 1}).json()["items"][0]
    assert set(only) == {"id", "type", "pm25"}
    for params, field in [({"q": "pm25>"}, "q"), ({"orgUnit": "000"}, "orgUnit"), ({"type": "Nope"}, "type"),
                          ({"bbox": "1,2,3"}, "bbox"), ({"near": "120,30"}, "maxDistance"),
                          ({"cursor": "%%%"}, "cursor"), ({"limit": "0"}, "query.limit")]:
        assert field in fields(client.get(f"{BASE}/entities", params=params)), params


def test_geo_queries_bbox_and_near(client):
    # A street-long LineString crossing the box but with no vertex inside it, and points around a centre.
    centre = (120.1300, 30.2600)
    entities = [air("c", lon=centre[0], lat=centre[1]),
                air("e300", lon=centre[0] + 0.0031, lat=centre[1]),  # ~298 m east
                air("n1k", lon=centre[0], lat=centre[1] + 0.009),  # ~1 km north
                air("far", lon=120.30, lat=30.40),
                {"id": "urn:ngsi-ld:Building:road", "type": "Building",
                 "location": {"type": "GeoProperty", "value": {"type": "LineString",
                              "coordinates": [[120.10, 30.2605], [120.16, 30.2605]]}}}]
    assert client.post(f"{BASE}/entityOperations/upsert", json=entities).status_code == 200

    def ids(**params: Any) -> set[str]:
        return {e["id"].rsplit(":", 1)[1] for e in client.get(f"{BASE}/entities", params=params).json()["items"]}

    assert ids(near=f"{centre[0]},{centre[1]}", maxDistance=310) == {"XH-c", "XH-e300", "road"}
    assert ids(near=f"{centre[0]},{centre[1]}", maxDistance=290) == {"XH-c", "road"}
    assert ids(near=f"{centre[0]},{centre[1]}", maxDistance=1100) == {"XH-c", "XH-e300", "XH-n1k", "road"}
    assert ids(bbox="120.129,30.259,120.131,30.261") == {"XH-c", "road"}
    assert ids(bbox="120.129,30.2606,120.131,30.27") == {"XH-n1k"}  # the road runs just south of this box
    assert ids(bbox="120.29,30.39,120.31,30.41", type="AirQualityObserved") == {"XH-far"}


def test_history_records_changes_in_order(client, clock):
    entity_id = air(40)["id"]
    client.post(f"{BASE}/entities", json=air(40, pm25=10.0))
    clock.advance(60)
    client.post(f"{BASE}/entityOperations/upsert", json=[air(40, pm25=10.0)])  # identical: no new instance
    later = air(40, pm25=20.0)
    later["pm25"]["observedAt"] = "2026-11-25T09:00:00+08:00"
    client.post(f"{BASE}/entityOperations/upsert", json=[later])
    history = client.get(f"{BASE}/entities/{entity_id}/history", params={"attrs": "pm25"}).json()
    assert [i["instance"]["value"] for i in history["items"]] == [10.0, 20.0]
    assert history["items"][1]["observedAt"] == "2026-11-25T01:00:00Z"
    assert history["items"][1]["recordedAt"] == "2026-11-25T08:01:00Z"
    windowed = client.get(f"{BASE}/entities/{entity_id}/history",
                          params={"since": "2026-11-25T00:30:00Z", "until": "2026-11-25T02:00:00Z"}).json()
    assert [i["instance"]["value"] for i in windowed["items"]] == [20.0]
    first = client.get(f"{BASE}/entities/{entity_id}/history", params={"limit": 1}).json()
    second = client.get(f"{BASE}/entities/{entity_id}/history", params={"limit": 1, "cursor": first["next_cursor"]}).json()
    assert [first["items"][0]["seq"]] < [second["items"][0]["seq"]]
    assert "since" in fields(client.get(f"{BASE}/entities/{entity_id}/history", params={"since": "2026-11-25T00:00:00"}))
    assert client.get(f"{BASE}/entities/urn:ngsi-ld:X:none/history").status_code == 404


def test_operator_defined_types(client):
    spec = {"name": "Manhole", "title": "Manhole cover", "title_zh": "井盖",
            "attributes": {"tilt": {"kind": "number", "unit": "DD", "maximum": 90}, "open": {"kind": "boolean"}}}
    assert client.put(f"{BASE}/types/Manhole", json=spec).status_code == 200
    assert client.get(f"{BASE}/types/Manhole").json()["source"] == "operator"
    manhole = {"id": "urn:ngsi-ld:Manhole:1", "type": "Manhole", "tilt": {"type": "Property", "value": 120}}
    assert "tilt.value" in fields(client.post(f"{BASE}/entities", json=manhole))
    manhole["tilt"]["value"] = 12.5
    assert client.post(f"{BASE}/entities", json=manhole).status_code == 201
    assert problem(client.delete(f"{BASE}/types/Manhole"))["status"] == 409
    assert problem(client.put(f"{BASE}/types/AirQualityObserved",
                              json={"name": "AirQualityObserved"}))["status"] == 409
    assert "name" in fields(client.put(f"{BASE}/types/Bad", json={"name": "Other"}))
    assert "body.name" in fields(client.put(f"{BASE}/types/9x", json={"name": "9x"}))
    client.delete(f"{BASE}/entities/urn:ngsi-ld:Manhole:1")
    assert client.delete(f"{BASE}/types/Manhole").status_code == 204
    assert client.get(f"{BASE}/types/Manhole").status_code == 404
    names = {t["name"] for t in client.get(f"{BASE}/types").json()}
    assert {"AirQualityObserved", "WaterQualityObserved", "TrafficFlowObserved", "Streetlight",
            "WasteContainer", "ServiceRequest"} <= names


@pytest.mark.parametrize("spatial_path", ["spatial-index", "id-order-scan"])
def test_boxes_follow_entities_that_move_change_shape_or_go(client, monkeypatch, spatial_path):
    from citybrain.hub.entities import service

    if spatial_path == "id-order-scan":
        monkeypatch.setattr(service, "SPATIAL_CANDIDATES_MAX", -1)

    def ids(box: str) -> set[str]:
        return {e["id"].rsplit(":", 1)[1] for e in client.get(f"{BASE}/entities", params={"bbox": box}).json()["items"]}

    def put(**location: Any) -> None:
        entity = {**air("mover"), "location": {"type": "GeoProperty", "value": location}} if location else air("mover")
        assert client.post(f"{BASE}/entityOperations/upsert", json=[entity]).status_code == 200

    near_a, middle_of_road, near_c = "120.09,30.24,120.11,30.26", "120.149,30.249,120.151,30.251", "120.19,30.19,120.21,30.21"
    put(type="Point", coordinates=[120.10, 30.25])
    assert ids(near_a) == {"XH-mover"} and ids(middle_of_road) == set()
    # A road whose ends both lie outside the box: only the index of shapes can find it.
    put(type="LineString", coordinates=[[120.14, 30.25], [120.16, 30.25]])
    assert ids(near_a) == set() and ids(middle_of_road) == {"XH-mover"}
    put(type="LineString", coordinates=[[120.14, 30.26], [120.16, 30.26]])  # the same shape, moved north
    assert ids(middle_of_road) == set()
    put(type="Point", coordinates=[120.20, 30.20])
    assert ids(middle_of_road) == set() and ids(near_c) == {"XH-mover"}
    assert ids("117,27,123,33") == {"XH-mover"}  # wider than the point index's bands: walked in id order
    merged = {"id": air("mover")["id"], "type": "AirQualityObserved",
              "pm25": {"type": "Property", "value": 99.0, "observedAt": "2026-11-25T09:00:00Z"}}
    assert client.post(f"{BASE}/entityOperations/upsert", params={"options": "update"}, json=[merged]).status_code == 200
    assert ids(near_c) == {"XH-mover"}  # a merge without location keeps the place
    assert client.delete(f"{BASE}/entities/{air('mover')['id']}").status_code == 204
    assert ids(near_c) == set()


def test_attribute_changes_keep_place_org_unit_and_creation(client, clock):
    entity = air(50, pm25=10.0, org=LINGYIN)
    client.post(f"{BASE}/entities", json=entity)
    clock.advance(60)
    entity["pm25"] = {"type": "Property", "value": 11.0, "observedAt": "2026-11-25T08:01:00Z"}
    assert client.post(f"{BASE}/entityOperations/upsert", json=[entity]).status_code == 200
    stored = client.get(f"{BASE}/entities/{entity['id']}", params={"options": "sysAttrs"}).json()
    assert stored["pm25"]["value"] == 11.0
    assert (stored["createdAt"], stored["modifiedAt"]) == ("2026-11-25T08:00:00Z", "2026-11-25T08:01:00Z")
    found = client.get(f"{BASE}/entities", params={"orgUnit": LINGYIN, "bbox": "120.09,30.24,120.11,30.26"}).json()
    assert [e["id"] for e in found["items"]] == [entity["id"]]


def test_history_pages_walk_the_instances_of_one_change(client, clock):
    entity = air(60, pm25=10.0, no2={"type": "Property", "value": 5.0, "observedAt": "2026-11-25T07:00:00Z"},
                 status={"type": "Property", "value": "ok"})
    client.post(f"{BASE}/entities", json=entity)
    url = f"{BASE}/entities/{entity['id']}/history"
    whole = client.get(url).json()["items"]
    assert [(i["attribute"], i["seq"] == whole[0]["seq"]) for i in whole] == [
        ("no2", True), ("pm25", True), ("status", True)]  # one change, in attribute-name order
    assert [i["observedAt"] for i in whole] == ["2026-11-25T07:00:00Z", "2026-11-25T08:00:00Z", None]
    walked, cursor = [], None
    while True:
        page = client.get(url, params={"limit": 1, **({"cursor": cursor} if cursor else {})}).json()
        walked += page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert walked == whole
    # The window applies to each instance: status has no observedAt, so its time is its arrival (08:00).
    window = client.get(url, params={"since": "2026-11-25T06:30:00Z", "until": "2026-11-25T07:30:00Z"}).json()
    assert [i["attribute"] for i in window["items"]] == ["no2"]
    clock.advance(60)
    entity["status"] = {"type": "Property", "value": "repair"}
    client.post(f"{BASE}/entityOperations/upsert", json=[entity])
    latest = client.get(url, params={"attrs": "status"}).json()["items"]
    assert [i["instance"]["value"] for i in latest] == ["ok", "repair"] and latest[1]["seq"] > whole[0]["seq"]
    assert "cursor" in fields(client.get(url, params={"cursor": "bm90LWEtY3Vyc29y"}))
