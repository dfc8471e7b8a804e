"""Things every city has: devices, buildings, points of interest (Smart Data Models names)."""

from citybrain.hub.entities.types import AttrSpec, TypeSpec
from citybrain.scenarios import Scenario, ScenarioManifest, scenarios

A = AttrSpec


@scenarios.register("common")
class Common(Scenario):
    manifest = ScenarioManifest(
        slug="common", title="Common city objects", title_zh="通用城市对象", department="operations",
        entity_types=[
            TypeSpec(name="Device", title="IoT device", title_zh="物联网设备",
                     smart_data_model="dataModel.Device",
                     attributes={
                         "deviceCategory": A(kind="string", description="sensor, actuator, meter …"),
                         "deviceType": A(kind="string", description="the sensing device type, e.g. air_quality"),
                         "controlledProperty": A(kind="array"),
                         "deviceState": A(kind="string", enum=["ok", "lowBattery", "error", "offline"]),
                         "batteryLevel": A(kind="number", minimum=0, maximum=1),
                         "dateLastValueReported": A(kind="datetime"),
                         "serialNumber": A(kind="string"),
                         "controlledBy": A(kind="relationship", description="the connected system that commands it"),
                     }),
            TypeSpec(name="Building", title="Building", title_zh="建筑", smart_data_model="dataModel.Building",
                     attributes={"name": A(kind="string"), "category": A(kind="array"),
                                 "floorsAboveGround": A(kind="integer", minimum=0),
                                 "address": A(kind="object")}),
            TypeSpec(name="PointOfInterest", title="Point of interest", title_zh="兴趣点",
                     smart_data_model="dataModel.PointOfInterest",
                     attributes={"name": A(kind="string"), "category": A(kind="array"),
                                 "address": A(kind="object")}),
            TypeSpec(name="Alert", title="Alert", title_zh="告警", smart_data_model="dataModel.Alert",
                     description="Mirrors a sensing alert, so hub subscriptions (webhooks) and queries see it.",
                     attributes={
                         "category": A(kind="string", description="the device type that raised it"),
                         "subCategory": A(kind="string", description="the rule"),
                         "severity": A(kind="string", enum=["informational", "low", "medium", "high", "critical"]),
                         "description": A(kind="string"),
                         "alertSource": A(kind="relationship", description="the device (or org unit) in alert"),
                         "dateIssued": A(kind="datetime"),
                         "validTo": A(kind="datetime", description="when it cleared"),
                         "status": A(kind="string", enum=["active", "acknowledged", "cleared"]),
                         "value": A(kind="number", description="the reading that raised it"),
                     }),
        ],
    )
