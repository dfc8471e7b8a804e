"""Labour and social security (劳动和社会保障): event types only.

No devices: these cases come from citizens (12345) and grid inspectors."""

from citybrain.scenarios import Scenario, ScenarioManifest, scenarios


@scenarios.register("labour")
class Labour(Scenario):
    manifest = ScenarioManifest(
        slug="labour", title="Labour and social security", title_zh="劳动和社会保障", department="renshe",
        description="Unpaid wages, labour contracts, social insurance, work injury, employment and training.",
        catalogue=["labour.yaml"],
    )
