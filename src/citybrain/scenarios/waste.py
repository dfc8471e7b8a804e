"""Waste collection (垃圾分类与清运)."""

from citybrain.hub.entities.types import AttrSpec, TypeSpec
from citybrain.scenarios import Scenario, ScenarioManifest, scenarios
from citybrain.sensing.devices.spec import DeviceTypeSpec
from citybrain.sensing.devices.spec import MeasurementSpec as M
from citybrain.sensing.vitals.spec import IndicatorSpec

A = AttrSpec


@scenarios.register("waste")
class Waste(Scenario):
    manifest = ScenarioManifest(
        slug="waste", title="Waste", title_zh="垃圾治理", department="lvrong",
        catalogue=["waste.yaml"],
        entity_types=[
            TypeSpec(name="WasteContainer", title="Waste container", title_zh="垃圾桶",
                     smart_data_model="dataModel.WasteManagement",
                     attributes={
                         "fillingLevel": A(kind="number", minimum=0, maximum=1),
                         "wasteType": A(kind="string", description="recyclable, kitchen, hazardous, residual"),
                         "status": A(kind="string", enum=["ok", "lidOpen", "dropped", "moved", "burning"]),
                         "dateLastEmptying": A(kind="datetime"),
                         "refDevice": A(kind="relationship"),
                     }),
        ],
        device_types=[
            DeviceTypeSpec(
                slug="waste_bin", title="Waste-bin fill sensor", title_zh="垃圾桶满溢监测器",
                entity_type="WasteContainer", report_interval_s=30, rules_file="rules/waste_bin.yaml",
                measurements={
                    "fillingLevel": M(minimum=0, maximum=1),
                    "temperature": M(unit="CEL", minimum=-60, maximum=400),
                    "lidOpen": M(kind="boolean"),
                    "batteryLevel": M(minimum=0, maximum=1),
                }),
        ],
        indicators=[
            IndicatorSpec(slug="waste_overflow_rate", title="Waste bins full", title_zh="垃圾满溢率",
                          kind="share_in_alert", device_type="waste_bin", rule_id="overflow", unit="ratio"),
        ],
    )
