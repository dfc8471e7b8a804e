"""Scenario plug-ins: each contributes entity types, device types (with rules), vital-sign indicators and
event-catalogue files (and, as capabilities land, cockpit panels). The core knows none of them by name.

A scenario is a subclass of `Scenario` registered with `@scenarios.register("slug")`. Built-in scenarios
live in this package; third-party ones are found through the `citybrain.scenarios` entry-point group.
"""

from __future__ import annotations

import importlib
import logging
from importlib import resources
from importlib.metadata import entry_points
from typing import TYPE_CHECKING

from pydantic import BaseModel, Field, field_validator

from citybrain.core.registry import Registry
from citybrain.hub.entities.types import TypeSpec
from citybrain.sensing.devices.spec import DeviceTypeSpec
from citybrain.sensing.vitals.spec import IndicatorSpec

if TYPE_CHECKING:
    from citybrain.disposal.catalogue.service import Catalogue

log = logging.getLogger(__name__)

BUILTIN_MODULES = ("common", "environment", "water", "waste", "lighting", "traffic", "civic", "fire",
                   "community", "market", "health", "education", "labour")


class ScenarioManifest(BaseModel):
    slug: str = Field(pattern=r"^[a-z][a-z0-9_-]{1,40}$")
    title: str
    title_zh: str
    description: str = ""
    department: str = Field("operations", description="Who owns the data it brings (a department slug of "
                            "hub.org.departments, or 'operations': the city operations centre)")
    entity_types: list[TypeSpec] = Field(default_factory=list)

    @field_validator("department")
    @classmethod
    def _known_department(cls, slug: str) -> str:
        from citybrain.hub.org.departments import DEPARTMENTS

        known = {d.slug for d in DEPARTMENTS} | {"operations"}
        if slug not in known:
            raise ValueError(f"unknown department {slug!r}; known: {', '.join(sorted(known))}")
        return slug
    device_types: list[DeviceTypeSpec] = Field(default_factory=list)
    indicators: list[IndicatorSpec] = Field(default_factory=list)
    catalogue: list[str] = Field(
        default_factory=list, description="Event-catalogue YAML files shipped in `scenarios/catalogue/`")


class Scenario:
    """Base of every scenario plug-in; subclasses set `manifest`."""

    manifest: ScenarioManifest


scenarios: Registry[type[Scenario]] = Registry("scenario")


def load_scenarios() -> Registry[type[Scenario]]:
    """Import built-in and installed scenarios (idempotent) and return the registry."""
    for name in BUILTIN_MODULES:
        importlib.import_module(f"{__name__}.{name}")
    for entry in entry_points(group="citybrain.scenarios"):
        try:
            entry.load()
        except Exception:
            log.exception("scenario plug-in %s failed to load; it is skipped", entry.name)
    return scenarios


def scenario_types() -> list[TypeSpec]:
    specs: list[TypeSpec] = []
    for slug, scenario in load_scenarios().items():
        for spec in scenario.manifest.entity_types:
            specs.append(spec.model_copy(update={"source": f"scenario:{slug}"}))
    return specs


def scenario_device_types() -> list[DeviceTypeSpec]:
    """Every device type the loaded scenarios contribute; a slug defined twice is an error."""
    found: dict[str, tuple[str, DeviceTypeSpec]] = {}
    for slug, scenario in load_scenarios().items():
        for spec in scenario.manifest.device_types:
            if spec.slug in found:
                raise ValueError(f"device type {spec.slug!r} is defined by scenarios {found[spec.slug][0]} and {slug}")
            found[spec.slug] = (slug, spec)
    return [spec for _, spec in found.values()]


def scenario_indicators() -> list[IndicatorSpec]:
    """Every vital-sign indicator the loaded scenarios contribute."""
    return [spec for _, scenario in load_scenarios().items() for spec in scenario.manifest.indicators]


def scenario_catalogue() -> Catalogue:
    """The event types every loaded scenario ships (its `catalogue` files), validated and checked as one
    catalogue: a code or reference used twice is an error naming both places, sensing triggers must name
    rules the scenarios define. Each entry's source is `scenario:<slug>`."""
    from citybrain.core.errors import InvalidInput
    from citybrain.disposal.catalogue import service

    files: list[tuple[str, str, str | None]] = []
    for slug, scenario in load_scenarios().items():
        for name in scenario.manifest.catalogue:
            where = f"scenario {slug} catalogue/{name}"
            resource = resources.files(__name__).joinpath("catalogue", name)
            if not resource.is_file():
                raise InvalidInput.at(where, "file not found in the scenarios package")
            files.append((where, resource.read_text(encoding="utf-8"), f"scenario:{slug}"))
    return service.Catalogue(item.entry for item in service.read_files(files))
