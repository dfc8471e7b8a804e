"""Community affairs (社区事务): event types only.

No devices: these cases come from citizens (12345) and grid inspectors."""

from citybrain.scenarios import Scenario, ScenarioManifest, scenarios


@scenarios.register("community")
class Community(Scenario):
    manifest = ScenarioManifest(
        slug="community", title="Community affairs", title_zh="社区事务", department="minzheng",
        description="Property management, housing, neighbourhood order and social assistance (物业, 群租, 邻里, 救助).",
        catalogue=["community.yaml"],
    )
