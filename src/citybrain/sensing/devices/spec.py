"""Device types: what a kind of device measures and how often it reports. Scenario plug-ins contribute
them (`ScenarioManifest.device_types`); the registry here collects them."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

MeasurementKind = Literal["number", "integer", "boolean", "string"]
SLUG = r"^[a-z][a-z0-9_]{1,40}$"
MEASUREMENT = r"^[A-Za-z][A-Za-z0-9_]{0,63}$"


class MeasurementSpec(BaseModel):
    """One quantity a device reports. Numbers, integers and booleans travel as float64 columns (booleans
    as 0/1, a missing reading as NaN); strings as a list column."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: MeasurementKind = "number"
    unit: str | None = Field(None, description="UN/CEFACT unit code, as in NGSI-LD unitCode")
    minimum: float | None = Field(None, description="Smallest physically possible value; below it is invalid")
    maximum: float | None = Field(None, description="Largest physically possible value; above it is invalid")
    attribute: str | None = Field(None, description="Hub entity attribute it maps to (default: its own name)")
    description: str = ""

    @model_validator(mode="after")
    def _range(self) -> MeasurementSpec:
        if self.minimum is not None and self.maximum is not None and self.minimum > self.maximum:
            raise ValueError("minimum is above maximum")
        if self.kind == "string" and (self.minimum is not None or self.maximum is not None):
            raise ValueError("a string measurement has no range")
        return self


class DeviceTypeSpec(BaseModel):
    """A kind of device: its measurements, its reporting interval and the hub entity type it feeds."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    slug: str = Field(pattern=SLUG, description="Topic segment and registry key, e.g. air_quality")
    title: str
    title_zh: str
    entity_type: str = Field(description="Hub entity type of the device's readings, e.g. AirQualityObserved")
    measurements: dict[str, MeasurementSpec] = Field(min_length=1)
    report_interval_s: float = Field(30.0, gt=0, description="How often a device of this type reports")
    offline_after_s: float | None = Field(
        None, gt=0, description="Silence after which a device counts as offline (default: 3 intervals)"
    )
    rules_file: str | None = Field(
        None, description="YAML rule file shipped with the scenario (package-relative)"
    )

    @model_validator(mode="after")
    def _names(self) -> DeviceTypeSpec:
        import re

        for name in self.measurements:
            if not re.match(MEASUREMENT, name):
                raise ValueError(f"measurement name {name!r} must match {MEASUREMENT}")
            if name in ("ts", "seq"):
                raise ValueError(f"measurement name {name!r} is reserved by the payload format")
        return self

    @property
    def offline_after(self) -> float:
        return self.offline_after_s if self.offline_after_s is not None else 3 * self.report_interval_s

    def numeric(self) -> list[str]:
        """Measurements carried as float64 columns, in declaration order."""
        return [name for name, m in self.measurements.items() if m.kind != "string"]

    def textual(self) -> list[str]:
        return [name for name, m in self.measurements.items() if m.kind == "string"]
