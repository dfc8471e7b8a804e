"""The signal-controller contract: a base class, the registry and the manifest.

A controller is built once per episode with the scenario's traffic lights (`ControlContext`) and is asked,
every decision interval, for the green phase each light should show: `decide(observations)` returns
{tls id: program phase index}. It may keep per-light state between calls. Lights it leaves out keep their
phase. The twin, not the controller, inserts yellows and enforces min/max green, so a controller only ever
names green phases (`TlsDescription.green_phases`); anything else is an InvalidInput.

Controllers that let SUMO drive the lights (`program` "static" or "actuated" in the manifest) are never
asked to decide. Third-party controllers subclass `SignalController`, set `manifest` and register with
`@controllers.register("slug")` (or through the `citybrain.signal_controllers` entry-point group); the
contract test runs over every registered one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

from pydantic import BaseModel, ConfigDict, Field

from citybrain.core.errors import NotFound
from citybrain.core.registry import Registry
from citybrain.traffic.runtime import SignalProgram, TlsDescription, TlsObservation

BUILTIN_MODULES = ("fixed", "actuated", "maxpressure")
ENTRY_POINT_GROUP = "citybrain.signal_controllers"


class ControllerManifest(BaseModel):
    """What a controller is, for the registry, the benchmark tables and the contract test."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    slug: str = Field(pattern=r"^[a-z][a-z0-9_-]{1,40}$")
    title: str
    description: str = ""
    program: SignalProgram = Field(
        "external", description="external: the controller decides; static/actuated: SUMO runs the lights")
    reference: str = Field("", description="Where the method is published, if anywhere")


@dataclass(frozen=True, slots=True)
class ControlContext:
    """What a controller knows of its episode before the first decision."""

    scenario: str
    tls: Mapping[str, TlsDescription]
    decision_interval: float
    yellow: float
    min_green: float


class SignalController:
    """Base of every signal controller."""

    manifest: ClassVar[ControllerManifest]

    def __init__(self, context: ControlContext) -> None:
        self.context = context

    def decide(self, observations: Mapping[str, TlsObservation]) -> dict[str, int]:
        """The green phase (program index) each light should show next; omitted lights keep theirs."""
        return {}


controllers: Registry[type[SignalController]] = Registry("signal controller")


def load_controllers() -> Registry[type[SignalController]]:
    """Import the built-in and installed controllers (idempotent) and return the registry."""
    return controllers.load((f"{__package__}.{name}" for name in BUILTIN_MODULES), ENTRY_POINT_GROUP)


def controller(slug: str) -> type[SignalController]:
    """A registered controller class; NotFound lists the known ones."""
    registry = load_controllers()
    if slug not in registry:
        raise NotFound(f"unknown signal controller {slug!r}; known: {', '.join(registry) or 'none'}")
    return registry.get(slug)
