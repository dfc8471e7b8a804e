"""Air quality monitoring (大气环境)."""

from citybrain.hub.entities.types import AttrSpec, TypeSpec
from citybrain.scenarios import Scenario, ScenarioManifest, scenarios
from citybrain.sensing.devices.spec import DeviceTypeSpec
from citybrain.sensing.devices.spec import MeasurementSpec as M
from citybrain.sensing.vitals.spec import IndicatorSpec

A = AttrSpec


@scenarios.register("air")
class AirQuality(Scenario):
    manifest = ScenarioManifest(
        slug="air", title="Air quality", title_zh="空气质量", department="shengtai",
        catalogue=["environment.yaml"],
        entity_types=[
            TypeSpec(name="AirQualityObserved", title="Air quality observation", title_zh="空气质量监测",
                     smart_data_model="dataModel.Environment",
                     attributes={
                         "dateObserved": A(kind="datetime"),
                         "pm25": A(kind="number", unit="GQ", minimum=0, description="PM2.5, µg/m³"),
                         "pm10": A(kind="number", unit="GQ", minimum=0, description="PM10, µg/m³"),
                         "no2": A(kind="number", unit="GQ", minimum=0),
                         "so2": A(kind="number", unit="GQ", minimum=0),
                         "o3": A(kind="number", unit="GQ", minimum=0),
                         "co": A(kind="number", unit="GP", minimum=0, description="mg/m³"),
                         "airQualityIndex": A(kind="integer", minimum=0, maximum=500, description="AQI (HJ 633)"),
                         "airQualityLevel": A(kind="string"),
                         "temperature": A(kind="number", unit="CEL"),
                         "relativeHumidity": A(kind="number", minimum=0, maximum=1),
                         "refDevice": A(kind="relationship"),
                     }),
        ],
        device_types=[
            DeviceTypeSpec(
                slug="air_quality", title="Air quality station", title_zh="空气质量监测站",
                entity_type="AirQualityObserved", report_interval_s=30, rules_file="rules/air_quality.yaml",
                measurements={
                    "pm25": M(unit="GQ", minimum=0, maximum=2000, description="PM2.5, µg/m³"),
                    "pm10": M(unit="GQ", minimum=0, maximum=3000, description="PM10, µg/m³"),
                    "no2": M(unit="GQ", minimum=0, maximum=2000),
                    "o3": M(unit="GQ", minimum=0, maximum=2000),
                    "temperature": M(unit="CEL", minimum=-60, maximum=70),
                    "relativeHumidity": M(minimum=0, maximum=1),
                }),
        ],
        indicators=[
            IndicatorSpec(slug="pm25_mean", title="PM2.5 (mean of stations' latest)", title_zh="PM2.5 均值",
                          kind="mean_latest", device_type="air_quality", measurement="pm25", unit="µg/m³"),
            IndicatorSpec(slug="air_quality_index", title="Air quality index (PM2.5)", title_zh="空气质量指数",
                          kind="mean_latest", device_type="air_quality", measurement="pm25", transform="aqi_pm25"),
        ],
    )
