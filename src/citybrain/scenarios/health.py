"""Health (卫生健康): event types only.

No devices: these cases come from citizens (12345) and grid inspectors."""

from citybrain.scenarios import Scenario, ScenarioManifest, scenarios


@scenarios.register("health")
class Health(Scenario):
    manifest = ScenarioManifest(
        slug="health", title="Health", title_zh="卫生健康", department="weijian",
        description="Medical services, vaccination, public health emergencies, disease vectors and public-place hygiene.",
        catalogue=["health.yaml"],
    )
