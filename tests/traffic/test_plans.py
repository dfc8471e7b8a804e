"""Signal plans through the API: checked on a forked twin, applied as hub commands only when predicted
better, with the measured outcome stored next to the prediction; worse plans rejected; bad ones 422."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from citybrain.settings import Settings
from citybrain.traffic.controllers.base import ControllerManifest, SignalController, controllers
from tests.traffic.test_live import GUDANG, wait_for

LIGHT = "GS_cluster_357187_359543"  # cologne1's one signalised intersection; greens 0, 2, 4, 6


class HoldsYellow(SignalController):
    """Names the yellow after each light's first green: always illegal."""

    manifest = ControllerManifest(slug="test-holds-yellow", title="Chooses a yellow (test)")

    def decide(self, observations: Mapping[str, object]) -> dict[str, int]:
        return {tls: self.context.tls[tls].green_phases[0] + 1 for tls in observations}


@pytest.fixture(autouse=True)
def illegal_controller() -> None:
    if "test-holds-yellow" not in controllers:
        controllers.add("test-holds-yellow", HoldsYellow)


@pytest.fixture
def settings(db_url: str, tmp_path: Path) -> Settings:
    # 120x: cologne1's hour lasts 30 s, long enough for a check (a few s) and a 600 s horizon (5 s).
    return Settings(db=db_url, home=tmp_path, bus="memory", traffic_scenario="cologne1", traffic_org_unit=GUDANG,
                    traffic_speedup=120, traffic_report_s=30)


def settled(client: TestClient, plan_id: str, states: tuple[str, ...]) -> dict:
    return wait_for(lambda: (p := client.get(f"/api/v1/traffic/plans/{plan_id}").json())["status"] in states and p,
                    timeout=40)


def test_a_better_plan_is_applied_as_commands_and_measured(client: TestClient) -> None:
    wait_for(lambda: client.get("/api/v1/traffic/status").json()["reports"] >= 1)
    created = client.post("/api/v1/traffic/plans", json={"intersections": [LIGHT], "controller": "maxpressure",
                                                         "horizon_s": 600})
    assert created.status_code == 201, created.text
    plan = created.json()
    assert plan["status"] == "proposed" and created.headers["Location"].endswith(plan["id"])
    applied = settled(client, plan["id"], ("applied", "measured", "rejected", "failed"))
    assert applied["status"] in ("applied", "measured"), applied["reason"]
    prediction = applied["prediction"]
    assert prediction["candidate"]["mean_delay_s"] <= 0.98 * prediction["baseline"]["mean_delay_s"]
    assert prediction["baseline"]["throughput"] > 0 and len(applied["commands"]) == 1

    command = wait_for(lambda: (c := client.get(f"/api/v1/commands/{applied['commands'][0]}").json())["status"]
                       == "acknowledged" and c)
    assert command["target"].endswith(LIGHT) and command["parameters"]["controller"] == "maxpressure"
    light = wait_for(lambda: [i for i in client.get("/api/v1/traffic/intersections").json()["items"]
                              if i["controlMode"] == "adaptive"])
    assert light[0]["controller"] == "maxpressure"

    measured = settled(client, plan["id"], ("measured", "failed"))
    assert measured["status"] == "measured", measured["reason"]
    outcome = measured["outcome"]
    assert outcome["seconds"] >= 600 and outcome["mean_delay_s"] >= 0 and outcome["throughput"] > 0
    assert outcome["predicted_mean_delay_s"] == prediction["candidate"]["mean_delay_s"]
    assert [h["status"] for h in measured["history"]] == ["proposed", "simulating", "applied", "measured"]


def test_a_worse_plan_is_rejected_with_its_prediction(client: TestClient) -> None:
    wait_for(lambda: client.get("/api/v1/traffic/status").json()["reports"] >= 1)
    # five seconds for each through movement, six for the left turns: the queues can only grow
    plan = client.post("/api/v1/traffic/plans", json={"intersections": [LIGHT], "timing": {"0": 5, "4": 5},
                                                      "horizon_s": 600}).json()
    rejected = settled(client, plan["id"], ("applied", "rejected", "failed"))
    assert rejected["status"] == "rejected", rejected["reason"]
    assert "not at least 2% better" in rejected["reason"]
    prediction = rejected["prediction"]
    assert prediction["candidate"]["mean_delay_s"] > prediction["baseline"]["mean_delay_s"]
    assert rejected["commands"] == [] and client.get("/api/v1/commands").json()["items"] == []
    listed = client.get("/api/v1/traffic/plans", params={"status": "rejected"}).json()["items"]
    assert [p["id"] for p in listed] == [plan["id"]]


def test_an_illegal_phase_fails_the_plan_not_the_twin(client: TestClient) -> None:
    wait_for(lambda: client.get("/api/v1/traffic/status").json()["reports"] >= 1)
    plan = client.post("/api/v1/traffic/plans", json={"intersections": [LIGHT], "controller": "test-holds-yellow",
                                                      "horizon_s": 300}).json()
    failed = settled(client, plan["id"], ("applied", "rejected", "failed"))
    assert failed["status"] == "failed" and "legal green phases: 0, 2, 4, 6" in failed["reason"]
    status = client.get("/api/v1/traffic/status").json()
    assert status["running"] and not status["degraded"] and status["restarts"] == 0


@pytest.mark.parametrize(("body", "field"), [
    ({"intersections": ["nowhere"], "controller": "maxpressure"}, "intersections[0]"),
    ({"intersections": [LIGHT], "controller": "clairvoyant"}, "controller"),
    ({"intersections": [LIGHT], "controller": "actuated"}, "controller"),
    ({"intersections": [LIGHT], "timing": {"1": 20}}, "timing.1"),
    ({"intersections": [LIGHT], "timing": {"0": 2}}, "body"),
    ({"intersections": [LIGHT]}, "body"),
])
def test_bad_plans_are_422_naming_the_field(client: TestClient, body: dict, field: str) -> None:
    wait_for(lambda: client.get("/api/v1/traffic/status").json()["reports"] >= 1)
    answer = client.post("/api/v1/traffic/plans", json=body)
    assert answer.status_code == 422 and answer.headers["content-type"].startswith("application/problem+json")
    assert answer.json()["errors"][0]["field"].startswith(field), answer.json()


def test_the_cli_proposes_lists_and_refuses_plans(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    import httpx
    from typer.testing import CliRunner

    from citybrain.cli import app

    monkeypatch.setattr(httpx, "request", lambda method, url, **kw: client.request(
        method, url.removeprefix("http://127.0.0.1:8000"), json=kw.get("json")))
    wait_for(lambda: client.get("/api/v1/traffic/status").json()["reports"] >= 1)
    runner = CliRunner()
    lights = runner.invoke(app, ["traffic", "plan", "lights"])
    assert lights.exit_code == 0 and LIGHT in lights.output and "[0, 2, 4, 6]" in lights.output
    bad = runner.invoke(app, ["traffic", "plan", "propose", LIGHT, "-t", "1=20"])
    assert bad.exit_code != 0 and "timing.1" in bad.output
    made = runner.invoke(app, ["traffic", "plan", "propose", LIGHT, "-t", "0=5", "-t", "4=5", "--horizon", "300"])
    assert made.exit_code == 0 and "proposed" in made.output, made.output
    plan_id = made.output.split()[0]
    settled(client, plan_id, ("applied", "rejected", "failed"))
    listed = runner.invoke(app, ["traffic", "plan", "list"])
    assert listed.exit_code == 0 and plan_id in listed.output
    shown = runner.invoke(app, ["traffic", "plan", "show", plan_id])
    assert shown.exit_code == 0 and '"prediction"' in shown.output
