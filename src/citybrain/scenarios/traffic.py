"""Road traffic (交通)."""

from citybrain.hub.entities.types import AttrSpec, TypeSpec
from citybrain.scenarios import Scenario, ScenarioManifest, scenarios
from citybrain.sensing.devices.spec import DeviceTypeSpec
from citybrain.sensing.devices.spec import MeasurementSpec as M
from citybrain.sensing.vitals.spec import IndicatorSpec

A = AttrSpec


@scenarios.register("traffic")
class Traffic(Scenario):
    manifest = ScenarioManifest(
        slug="traffic", title="Traffic", title_zh="交通", department="jiaotong",
        catalogue=["traffic.yaml"],
        entity_types=[
            TypeSpec(name="TrafficFlowObserved", title="Traffic flow observation", title_zh="交通流量监测",
                     smart_data_model="dataModel.Transportation",
                     attributes={
                         "dateObserved": A(kind="datetime"),
                         "intensity": A(kind="number", minimum=0, description="vehicles in the period"),
                         "averageVehicleSpeed": A(kind="number", unit="KMH", minimum=0),
                         "occupancy": A(kind="number", minimum=0, maximum=1),
                         "congestionIndex": A(kind="number", minimum=1, description="travel-time index"),
                         "congested": A(kind="boolean"),
                         "laneId": A(kind="integer"),
                         "refRoadSegment": A(kind="relationship"),
                     }),
            TypeSpec(name="TrafficSignal", title="Signalised intersection controller", title_zh="信号灯控制机",
                     attributes={
                         "programId": A(kind="string"),
                         "phase": A(kind="integer", minimum=0),
                         "controlMode": A(kind="string", enum=["fixed", "actuated", "adaptive", "manual"]),
                         "controlledBy": A(kind="relationship"),
                     }),
        ],
        device_types=[
            DeviceTypeSpec(
                slug="traffic_detector", title="Traffic detector", title_zh="交通流量检测器",
                entity_type="TrafficFlowObserved", report_interval_s=30, rules_file="rules/traffic_detector.yaml",
                measurements={
                    "intensity": M(kind="integer", minimum=0, maximum=20_000, description="vehicles/hour"),
                    "averageVehicleSpeed": M(unit="KMH", minimum=0, maximum=250),
                    "occupancy": M(minimum=0, maximum=1),
                    "congestionIndex": M(minimum=1, maximum=10, description=(
                        "travel-time index: free-flow speed / mean speed (1 = free flow, capped at 10)")),
                }),
        ],
        indicators=[
            IndicatorSpec(slug="congested_detector_rate", title="Detectors reporting congestion",
                          title_zh="拥堵检测器比例", kind="share_in_alert", device_type="traffic_detector",
                          rule_id="congestion", unit="ratio"),
            IndicatorSpec(slug="congestion_index", title="Congestion index (travel-time index)",
                          title_zh="拥堵指数", kind="mean_latest", device_type="traffic_detector",
                          measurement="congestionIndex", unit="ratio"),
        ],
    )
