"""Citizen service requests (12345 / 311)."""

from citybrain.hub.entities.types import AttrSpec, TypeSpec
from citybrain.scenarios import Scenario, ScenarioManifest, scenarios

A = AttrSpec


@scenarios.register("civic")
class Civic(Scenario):
    manifest = ScenarioManifest(
        slug="civic", title="Citizen requests", title_zh="市民诉求", department="xinfang",
        catalogue=["civic.yaml"],
        entity_types=[
            TypeSpec(name="ServiceRequest", title="Service request (Open311)", title_zh="市民诉求工单",
                     smart_data_model="dataModel.IssueTracking", classification="personal",
                     attributes={
                         "service_code": A(kind="string"),
                         "description": A(kind="string"),
                         "status": A(kind="string", enum=["open", "closed"]),
                         "requested_datetime": A(kind="datetime"),
                         "address_string": A(kind="string"),
                     }),
        ],
    )
