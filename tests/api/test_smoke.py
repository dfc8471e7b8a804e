"""The app comes up on each backend with the org tree and its docs."""


def test_health_and_docs(client):
    health = client.get("/health").json()
    assert health["status"] == "ok"
    assert health["org_units"] == 1 + 12 + 222 + 20  # district, streets, communities, departments
    assert client.get("/docs").status_code == 200
    spec = client.get("/openapi.json").json()
    assert "/api/v1/entities" in spec["paths"]


def test_unknown_route_is_a_problem(client):
    response = client.get("/api/v1/nothing-here")
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["status"] == 404
