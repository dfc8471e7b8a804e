"""The live twin on the converted Hangzhou 4x4 (Gudang): a network without georeference is placed around
the configured origin, in the org unit it belongs to."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from citybrain.settings import Settings
from citybrain.traffic.cityflow import convert_cityflow
from tests.traffic.test_live import GUDANG, wait_for

HANGZHOU = Path(__file__).resolve().parents[3] / "shared" / "data" / "traffic" / "hangzhou_4x4"


@pytest.fixture(scope="module")
def hangzhou_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not (HANGZHOU / "roadnet_4_4.json").exists():
        pytest.skip(f"the shared Hangzhou data is not at {HANGZHOU} (../shared is absent)")
    folder = tmp_path_factory.mktemp("scenarios") / "hangzhou_4x4"
    convert_cityflow(HANGZHOU / "roadnet_4_4.json", HANGZHOU / "anon_4_4_hangzhou_real.json", folder, "hangzhou_4x4")
    return folder


@pytest.fixture
def settings(db_url: str, tmp_path: Path, hangzhou_folder: Path) -> Settings:
    return Settings(db=db_url, home=tmp_path, bus="memory", traffic_scenario=str(hangzhou_folder),
                    traffic_org_unit=GUDANG, traffic_speedup=300, traffic_report_s=30, traffic_origin="120.117,30.283")


def test_hangzhou_is_placed_in_gudang(client: TestClient) -> None:
    status = wait_for(lambda: (s := client.get("/api/v1/traffic/status").json())["reports"] >= 2 and s)
    assert status["scenario"] == "hangzhou_4x4" and status["intersections"] == 16
    lights = client.get("/api/v1/traffic/intersections").json()["items"]
    assert len(lights) == 16 and all(len(light["greenPhases"]) == 8 for light in lights)
    lons = [light["location"][0] for light in lights]
    lats = [light["location"][1] for light in lights]
    # centred on the origin; the 4x4 grid spans a few hundred metres to a couple of kilometres
    assert abs((min(lons) + max(lons)) / 2 - 120.117) < 0.01 and abs((min(lats) + max(lats)) / 2 - 30.283) < 0.01
    assert 0.001 < max(lons) - min(lons) < 0.05 and 0.001 < max(lats) - min(lats) < 0.05
    devices = client.get("/api/v1/devices", params={"deviceType": "traffic_detector", "orgUnit": GUDANG}).json()
    assert len(devices["items"]) == status["roads"] >= 16
