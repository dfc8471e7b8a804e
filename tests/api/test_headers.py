"""Security headers on every answer (the strict content policy everywhere but the OpenAPI pages), browser
cross-origin access only for configured origins, and no store password in what the CLI prints."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient
from typer.testing import CliRunner

from citybrain.api.app import create_app
from citybrain.cli import app as cli
from citybrain.platform import Platform
from citybrain.settings import Settings


def test_every_answer_carries_the_security_headers(client: TestClient) -> None:
    for answer in (client.get("/health"), client.get("/api/v1/entities/urn:ngsi-ld:Nothing:1"),
                   client.post("/api/v1/entities", content=b"{")):
        assert answer.headers["x-content-type-options"] == "nosniff"
        assert answer.headers["x-frame-options"] == "DENY"
        assert answer.headers["referrer-policy"] == "no-referrer"
        assert "frame-ancestors 'none'" in answer.headers["content-security-policy"]
    docs = client.get("/docs")
    assert docs.status_code == 200 and "content-security-policy" not in docs.headers  # Swagger UI from a CDN
    assert docs.headers["x-frame-options"] == "DENY"


def test_no_cross_origin_access_unless_the_origin_is_listed(platform: Platform) -> None:
    preflight = {"Origin": "https://cockpit.city.example", "Access-Control-Request-Method": "POST"}
    with TestClient(create_app(platform)) as closed:
        answer = closed.options("/api/v1/entities", headers=preflight)
        assert "access-control-allow-origin" not in answer.headers
    platform.settings = platform.settings.model_copy(update={"cors_origins": "https://cockpit.city.example/"})
    with TestClient(create_app(platform)) as opened:
        answer = opened.options("/api/v1/entities", headers=preflight)
        assert answer.status_code == 200
        assert answer.headers["access-control-allow-origin"] == "https://cockpit.city.example"
        other = opened.options("/api/v1/entities", headers={**preflight, "Origin": "https://evil.example"})
        assert other.headers.get("access-control-allow-origin") != "https://evil.example"


def test_the_cli_never_prints_the_store_password(tmp_path: Path) -> None:
    url = "postgresql://citybrain:s3cret-pass@127.0.0.1:1/nowhere"
    for command in (["migrate"], ["audit", "head"]):
        result = CliRunner().invoke(cli, [*command, "--db", url, "--home", str(tmp_path)])
        assert result.exit_code == 2
        assert "s3cret-pass" not in result.output and "***" in result.output
    assert Settings(db=url).scrub("password s3cret-pass rejected") == "password *** rejected"
