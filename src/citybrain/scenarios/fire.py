"""Fire safety (消防): smoke detectors in residential and public buildings."""

from citybrain.scenarios import Scenario, ScenarioManifest, scenarios
from citybrain.sensing.devices.spec import DeviceTypeSpec
from citybrain.sensing.devices.spec import MeasurementSpec as M
from citybrain.sensing.vitals.spec import IndicatorSpec


@scenarios.register("fire")
class FireSafety(Scenario):
    manifest = ScenarioManifest(
        slug="fire", title="Fire safety", title_zh="消防安全", department="xiaofang",
        catalogue=["fire.yaml"],
        device_types=[
            DeviceTypeSpec(
                slug="smoke_detector", title="Smoke detector", title_zh="独立式烟感探测器",
                entity_type="Device", report_interval_s=30, rules_file="rules/smoke_detector.yaml",
                measurements={
                    "smokeDensity": M(unit="P1", minimum=0, maximum=100, description="obscuration, %/m"),
                    "temperature": M(unit="CEL", minimum=-40, maximum=200),
                    "alarm": M(kind="boolean", description="the detector's own alarm output"),
                    "batteryLevel": M(minimum=0, maximum=1),
                }),
        ],
        indicators=[
            IndicatorSpec(slug="smoke_alarm_rate", title="Smoke detectors in alarm", title_zh="烟感报警比例",
                          kind="share_in_alert", device_type="smoke_detector", rule_id="smoke", unit="ratio"),
        ],
    )
