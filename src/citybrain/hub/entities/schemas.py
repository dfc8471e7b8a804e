"""API shapes of the entity routes (for validation of parameters and for the OpenAPI document).

Entity bodies are validated by `ngsi.parse_entity`, which names every bad field; these models describe
them in /docs."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class GeoJSONGeometry(BaseModel):
    type: Literal["Point", "MultiPoint", "LineString", "MultiLineString", "Polygon", "MultiPolygon"]
    coordinates: list[Any]


class PropertyDoc(BaseModel):
    model_config = ConfigDict(extra="allow", title="Property")
    type: Literal["Property"]
    value: Any
    unitCode: str | None = Field(None, description="UN/CEFACT code, e.g. CEL")
    observedAt: str | None = Field(None, description="ISO 8601 with zone")
    datasetId: str | None = None


class RelationshipDoc(BaseModel):
    model_config = ConfigDict(extra="allow", title="Relationship")
    type: Literal["Relationship"]
    object: str = Field(description="URN of the related entity")


class GeoPropertyDoc(BaseModel):
    model_config = ConfigDict(title="GeoProperty")
    type: Literal["GeoProperty"]
    value: GeoJSONGeometry


class EntityDoc(BaseModel):
    """An entity in NGSI-LD normalized form; every key other than those listed is an attribute
    (Property, Relationship, GeoProperty or LanguageProperty)."""

    model_config = ConfigDict(
        extra="allow",
        title="Entity",
        json_schema_extra={"example": {
            "id": "urn:ngsi-ld:AirQualityObserved:PD-LJZ-001",
            "type": "AirQualityObserved",
            "pm25": {"type": "Property", "value": 35.2, "unitCode": "GQ", "observedAt": "2026-11-25T08:00:00Z"},
            "airQualityIndex": {"type": "Property", "value": 50},
            "location": {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [121.5055, 31.2397]}},
            "orgUnit": {"type": "Relationship", "object": "urn:ngsi-ld:OrgUnit:310115005"},
        }},
    )
    id: str = Field(description="URN (RFC 8141), e.g. urn:ngsi-ld:Streetlight:PD-0001")
    type: str = Field(description="A registered entity type (GET /api/v1/types)")
    location: GeoPropertyDoc | None = None
    orgUnit: RelationshipDoc | None = Field(None, description="object: urn:ngsi-ld:OrgUnit:<code>")


class ItemProblem(BaseModel):
    type: str
    title: str
    status: int
    detail: str
    errors: list[dict[str, str]] = []


class BatchItemError(BaseModel):
    index: int = Field(description="Position of the item in the request array")
    entityId: str | None
    error: ItemProblem


class BatchOperationResult(BaseModel):
    """Which items were written (or already held exactly that content) and why each other one was not.
    Good items are kept even when others fail (status 207)."""

    success: list[str]
    errors: list[BatchItemError]


class EntityPage(BaseModel):
    items: list[EntityDoc]
    next_cursor: str | None = Field(None, description="Pass as `cursor` for the next page; null at the end")
    count: int | None = Field(None, description="Total matches, when count=true")


class AttributeInstance(BaseModel):
    """One attribute instance the hub accepted. `seq` numbers the change that wrote it: the instances one
    change wrote share it and come in attribute-name order."""

    seq: int
    attribute: str
    instance: dict[str, Any]
    observedAt: str | None
    recordedAt: str
    actor: str


class HistoryPage(BaseModel):
    entityId: str
    items: list[AttributeInstance]
    next_cursor: str | None = None
