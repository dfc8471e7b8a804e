"""Water quality and levels (水务)."""

from citybrain.hub.entities.types import AttrSpec, TypeSpec
from citybrain.scenarios import Scenario, ScenarioManifest, scenarios

A = AttrSpec


@scenarios.register("water")
class Water(Scenario):
    manifest = ScenarioManifest(
        slug="water", title="Water", title_zh="水务",
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
    )
