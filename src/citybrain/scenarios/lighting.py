"""Street lighting (路灯)."""

from citybrain.hub.entities.types import AttrSpec, TypeSpec
from citybrain.scenarios import Scenario, ScenarioManifest, scenarios
from citybrain.sensing.devices.spec import DeviceTypeSpec
from citybrain.sensing.devices.spec import MeasurementSpec as M
from citybrain.sensing.vitals.spec import IndicatorSpec

A = AttrSpec


@scenarios.register("lighting")
class Lighting(Scenario):
    manifest = ScenarioManifest(
        slug="lighting", title="Street lighting", title_zh="城市照明", department="chengguan",
        catalogue=["lighting.yaml"],
        entity_types=[
            TypeSpec(name="Streetlight", title="Streetlight", title_zh="路灯",
                     smart_data_model="dataModel.Streetlighting",
                     attributes={
                         "status": A(kind="string", enum=["ok", "defectiveLamp", "columnIssue", "brokenLantern"]),
                         "powerState": A(kind="string", enum=["on", "off", "low", "bootingUp"]),
                         "illuminanceLevel": A(kind="number", minimum=0, maximum=1),
                         "controlledBy": A(kind="relationship"),
                     }),
        ],
        device_types=[
            DeviceTypeSpec(
                slug="streetlight", title="Streetlight controller", title_zh="路灯单灯控制器",
                entity_type="Streetlight", report_interval_s=30, rules_file="rules/streetlight.yaml",
                measurements={
                    "illuminanceLevel": M(minimum=0, maximum=1),
                    "powerConsumption": M(unit="WTT", minimum=0, maximum=5000),
                    "voltage": M(unit="VLT", minimum=0, maximum=500),
                    "lampOn": M(kind="boolean"),
                    "status": M(kind="string", description="ok, defectiveLamp, columnIssue …"),
                }),
        ],
        indicators=[
            IndicatorSpec(slug="streetlight_undervoltage_rate", title="Streetlights on low voltage",
                          title_zh="路灯欠压比例", kind="share_in_alert", device_type="streetlight",
                          rule_id="undervoltage", unit="ratio"),
        ],
    )
