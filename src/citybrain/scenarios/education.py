"""Education (教育): event types only.

No devices: these cases come from citizens (12345) and grid inspectors."""

from citybrain.scenarios import Scenario, ScenarioManifest, scenarios


@scenarios.register("education")
class Education(Scenario):
    manifest = ScenarioManifest(
        slug="education", title="Education", title_zh="教育", department="jiaoyu",
        description="School admission, fees, off-campus tutoring, safety around schools, culture and sports venues.",
        catalogue=["education.yaml"],
    )
