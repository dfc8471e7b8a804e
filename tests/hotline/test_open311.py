"""Open311 GeoReport v2 against the machine-readable spec (../shared/data/complaints/
open311_georeport_v2-1_swagger.yaml): every JSON answer validates against the swagger's definitions, XML
answers have the spec's elements, errors have Open311's shape, and a request follows its case."""

from __future__ import annotations

from xml.etree import ElementTree as ET

import jsonschema
import pytest
import yaml
from fastapi.testclient import TestClient

from citybrain.platform import Platform
from citybrain.settings import Settings
from tests.hotline.conftest import SHARED

SWAGGER = SHARED / "data" / "complaints" / "open311_georeport_v2-1_swagger.yaml"
KEY = "k-7a1d3e"


@pytest.fixture
def settings(db_url: str, tmp_path) -> Settings:  # overrides the shared one: with an API key
    return Settings(db=db_url, home=tmp_path, bus="memory", open311_api_keys=f"{KEY}=311-test-client")


@pytest.fixture(scope="module")
def spec() -> dict:
    if not SWAGGER.exists():
        pytest.skip(f"{SWAGGER} is absent (the shared data folder sits next to the project)")
    return yaml.safe_load(SWAGGER.read_text(encoding="utf-8"))


def check(spec: dict, instance: object, schema: dict) -> None:
    jsonschema.validate(instance, {**schema, "definitions": spec["definitions"]})


def array_of(name: str) -> dict:
    return {"type": "array", "items": {"$ref": f"#/definitions/{name}"}}


def _post(client: TestClient, **fields: object) -> object:
    return client.post("/open311/v2/requests.json", data={"api_key": KEY, **fields})


def test_services_and_definitions_follow_the_spec(client: TestClient, spec: dict) -> None:
    services = client.get("/open311/v2/services.json", params={"jurisdiction_id": "330106"})
    assert services.status_code == 200
    check(spec, services.json(), array_of("Service"))
    codes = {s["service_code"]: s for s in services.json()}
    assert len(codes) >= 80 and codes["graffiti"]["service_name"] == "乱涂写乱张贴"
    english = client.get("/open311/v2/services.json", headers={"Accept-Language": "en-US"}).json()
    assert next(s for s in english if s["service_code"] == "graffiti")["group"] == "City management"
    definition = client.get("/open311/v2/services/graffiti.json")
    check(spec, definition.json(), {"$ref": "#/definitions/ServiceDefinition"})
    xml = ET.fromstring(client.get("/open311/v2/services.xml").content)
    assert xml.tag == "services" and xml[0].tag == "service"
    assert {child.tag for child in xml[0]} >= {"service_code", "service_name", "type", "metadata"}
    missing = client.get("/open311/v2/services/nothing.json")
    assert missing.status_code == 404 and missing.json()[0]["code"] == 404


def test_a_request_is_filed_followed_and_closed_with_its_case(client: TestClient, spec: dict,
                                                              platform: Platform) -> None:
    answer = _post(client, service_code="graffiti", lat="30.2741", long="120.1551", address_string="北山街 12 号",
                   description="墙上有大片涂鸦，电话 13812345678", first_name="Li", email="li@example.com",
                   **{"attribute[wall]": "north"})
    assert answer.status_code == 200, answer.text
    check(spec, answer.json(), array_of("RequestResponse"))
    request_id = answer.json()[0]["service_request_id"]
    one = client.get(f"/open311/v2/request/{request_id}.json")
    check(spec, one.json(), {"$ref": "#/definitions/Request"})
    request = one.json()
    assert request["status"] == "open" and request["service_code"] == "graffiti" and request["lat"] == 30.2741
    assert "13812345678" not in request["description"]  # the public sees personal data redacted
    listed = client.get(f"/open311/v2/requests/{request_id}.json").json()
    check(spec, listed, array_of("Request"))
    case_id = client.get(f"/api/v1/hotline/complaints/{request_id}").json()["case"]["id"]
    evidence = [{"kind": "photo_before", "note": "before"}, {"kind": "photo_after", "note": "after"}]
    for body in ({"action": "receive"}, {"action": "handle", "attachments": evidence, "reason": "已清除"},
                 {"action": "verify"}, {"action": "close", "reason": "Graffiti removed"}):
        assert client.post(f"/api/v1/cases/{case_id}/transitions", json=body).status_code == 200
    closed = client.get(f"/open311/v2/requests/{request_id}.json").json()[0]
    assert closed["status"] == "closed" and closed["status_notes"] == "Graffiti removed"
    everything = client.get("/open311/v2/requests.json", params={"status": "closed", "service_code": "graffiti"})
    check(spec, everything.json(), array_of("Request"))
    assert [r["service_request_id"] for r in everything.json()] == [request_id]
    assert client.get("/open311/v2/requests.json", params={"status": "open"}).json() == []
    xml = ET.fromstring(client.get(f"/open311/v2/requests/{request_id}.xml").content)
    assert xml.tag == "service_requests" and xml[0].tag == "request"
    assert xml[0].find("status").text == "closed" and xml[0].find("service_request_id").text == request_id


@pytest.mark.parametrize(
    ("fields", "status", "says"),
    [
        ({"api_key": ""}, 401, "api_key"),
        ({"api_key": "wrong"}, 403, "api_key"),
        ({"service_code": "nope"}, 400, "service_code"),
        ({"service_code": None}, 400, "service_code: required"),
        ({"lat": None, "long": None}, 400, "location"),
        ({"lat": "91"}, 400, "lat"),
        ({"long": None}, 400, "lat/long"),
        ({"jurisdiction_id": "000000"}, 404, "jurisdiction_id"),
    ],
)
def test_bad_requests_get_open311_errors(client: TestClient, spec: dict, fields: dict, status: int,
                                         says: str) -> None:
    form = {"api_key": KEY, "service_code": "graffiti", "lat": "30.27", "long": "120.15", **fields}
    answer = client.post("/open311/v2/requests.json", data={k: v for k, v in form.items() if v is not None})
    assert answer.status_code == status, answer.text
    error = answer.json()[0]
    assert error["code"] == status and says in error["description"]
    xml = client.post("/open311/v2/requests.xml", data={k: v for k, v in form.items() if v is not None})
    root = ET.fromstring(xml.content)
    assert root.tag == "errors" and root[0].find("code").text == str(status)


def test_queries_are_bounded_and_bad_ones_explained(client: TestClient, spec: dict) -> None:
    assert _post(client, service_code="graffiti", lat="30.27", long="120.15").status_code == 200
    wide = client.get("/open311/v2/requests.json", params={"start_date": "2026-01-01T00:00:00Z",
                                                           "end_date": "2026-06-01T00:00:00Z"})
    assert wide.status_code == 400 and "90 days" in wide.json()[0]["description"]
    for params, field in (({"start_date": "yesterday"}, "start_date"), ({"status": "pending"}, "status"),
                          ({"service_request_id": "a,b"}, "service_request_id")):
        answer = client.get("/open311/v2/requests.json", params=params)
        assert answer.status_code == 400 and answer.json()[0]["description"].startswith(field)
    assert client.get("/open311/v2/requests.yaml").status_code == 400
    assert client.get("/open311/v2/request/99999.json").status_code == 404
    assert client.get("/open311/v2/tokens/abc.json").status_code == 404
    discovery = ET.fromstring(client.get("/open311/v2/discovery.xml").content)
    assert discovery.tag == "discovery" and discovery.find("endpoints/endpoint/formats/format") is not None
    found = client.get("/open311/v2/requests.json").json()
    check(spec, found, array_of("Request"))
    assert len(found) == 1
