"""Market regulation (市场监管): event types only.

No devices: these cases come from citizens (12345) and grid inspectors."""

from citybrain.scenarios import Scenario, ScenarioManifest, scenarios


@scenarios.register("market")
class Market(Scenario):
    manifest = ScenarioManifest(
        slug="market", title="Market regulation", title_zh="市场监管", department="shichang",
        description="Food and drug safety, prices, licensing, advertising, consumer disputes and special equipment.",
        catalogue=["market.yaml"],
    )
