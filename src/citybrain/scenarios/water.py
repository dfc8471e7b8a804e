"""Water quality and levels (水务)."""

from citybrain.hub.entities.types import AttrSpec, TypeSpec
from citybrain.scenarios import Scenario, ScenarioManifest, scenarios
from citybrain.sensing.devices.spec import DeviceTypeSpec
from citybrain.sensing.devices.spec import MeasurementSpec as M
from citybrain.sensing.vitals.spec import IndicatorSpec

A = AttrSpec


@scenarios.register("water")
class Water(Scenario):
    manifest = ScenarioManifest(
        slug="water", title="Water", title_zh="水务", department="shuiwu",
        catalogue=["water.yaml"],
        entity_types=[
            TypeSpec(name="WaterQualityObserved", title="Water quality observation", title_zh="水质监测",
                     smart_data_model="dataModel.WaterQuality",
                     attributes={
                         "dateObserved": A(kind="datetime"),
                         "pH": A(kind="number", minimum=0, maximum=14),
                         "O2": A(kind="number", unit="M1", minimum=0, description="dissolved oxygen, mg/L"),
                         "turbidity": A(kind="number", minimum=0, description="NTU"),
                         "conductivity": A(kind="number", minimum=0),
                         "temperature": A(kind="number", unit="CEL"),
                         "refDevice": A(kind="relationship"),
                     }),
            TypeSpec(name="WaterObserved", title="Water level and flow observation", title_zh="水位流量监测",
                     smart_data_model="dataModel.Environment",
                     attributes={
                         "dateObserved": A(kind="datetime"),
                         "height": A(kind="number", unit="MTR", description="water level above datum, m"),
                         "flow": A(kind="number", description="m³/s"),
                         "alertLevel": A(kind="number", unit="MTR"),
                         "refDevice": A(kind="relationship"),
                     }),
        ],
        device_types=[
            DeviceTypeSpec(
                slug="water_level", title="Water level gauge", title_zh="水位监测仪",
                entity_type="WaterObserved", report_interval_s=30, rules_file="rules/water_level.yaml",
                measurements={
                    "height": M(unit="MTR", minimum=-20, maximum=100, description="level above datum, m"),
                    "flow": M(minimum=0, maximum=100_000, description="m³/s"),
                    "batteryLevel": M(minimum=0, maximum=1),
                }),
            DeviceTypeSpec(
                slug="manhole_cover", title="Manhole cover sensor", title_zh="井盖监测器",
                entity_type="Device", report_interval_s=30, rules_file="rules/manhole_cover.yaml",
                measurements={
                    "tilt": M(unit="DD", minimum=0, maximum=180, description="tilt from level, degrees"),
                    "open": M(kind="boolean", description="cover lifted off its seat"),
                    "waterLevel": M(unit="MTR", minimum=0, maximum=20, description="water below the cover, m"),
                    "batteryLevel": M(minimum=0, maximum=1),
                }),
        ],
        indicators=[
            IndicatorSpec(slug="water_level_warning_rate", title="Gauges above the warning level",
                          title_zh="水位超警戒比例", kind="share_in_alert", device_type="water_level",
                          rule_id="level-warning", unit="ratio"),
            IndicatorSpec(slug="manhole_open_rate", title="Manhole covers lifted", title_zh="井盖异常比例",
                          kind="share_in_alert", device_type="manhole_cover", rule_id="cover-open", unit="ratio"),
        ],
    )
