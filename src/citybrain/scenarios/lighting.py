"""Street lighting (路灯)."""

from citybrain.hub.entities.types import AttrSpec, TypeSpec
from citybrain.scenarios import Scenario, ScenarioManifest, scenarios

A = AttrSpec


@scenarios.register("lighting")
class Lighting(Scenario):
    manifest = ScenarioManifest(
        slug="lighting", title="Street lighting", title_zh="城市照明",
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
    )
