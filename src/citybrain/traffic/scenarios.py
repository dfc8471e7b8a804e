"""Traffic scenarios: a road network, its demand and the evaluation settings that go with them.

A scenario is a `Scenario` registered under a slug in `scenarios`; its `manifest` is data (paths, time
window, decision interval, yellow) that crosses process boundaries, so the twin in a worker process needs
nothing but the manifest. Built in: the eight RESCO benchmark maps shipped in the `sumo-rl` wheel (only
their network and route files are used) and any folder holding a `NAME.sumocfg`, such as a converted
CityFlow network (`register_folder`).
"""

from __future__ import annotations

import importlib.util
import json
import logging
import xml.etree.ElementTree as ET
from functools import cached_property
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from citybrain.core.errors import InvalidInput, NotFound, field_path
from citybrain.core.registry import Registry

log = logging.getLogger(__name__)


class ScenarioManifest(BaseModel):
    """What a twin needs to run a scenario, and what a reader needs to trust it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,80}$")
    title: str = ""
    description: str = ""
    source: str = Field("", description="Where the network and demand come from")
    licence: str = Field("", description="Licence note for the data, or why it is unclear")
    sumocfg: Path | None = Field(None, description="The SUMO configuration; optional when net and routes are given")
    net_file: Path
    route_files: tuple[Path, ...] = ()
    additional_files: tuple[Path, ...] = ()
    begin: float = 0.0
    end: float = Field(3600.0, description="Episode end (simulation seconds); SUMO stops here")
    decision_interval: float = Field(10.0, gt=0, description="Seconds between controller decisions")
    yellow: float = Field(3.0, ge=0, description="Yellow inserted by the twin between two different greens")
    min_green: float = Field(5.0, ge=0, description="Shortest green the twin allows before switching")

    def demand(self) -> int:
        """Vehicles in the route files scheduled to depart in [begin, end] (SUMO loads a vehicle departing
        at the end time and it never runs): what every metric counts."""
        count = 0
        for path in self.route_files:
            for _, element in ET.iterparse(path):
                if element.tag in ("vehicle", "trip"):
                    depart = element.get("depart", "0")
                    try:
                        if self.begin <= float(depart) <= self.end:
                            count += 1
                    except ValueError:  # "triggered", "now": counted, their time is decided at run time
                        count += 1
                    element.clear()
                elif element.tag == "flow":
                    raise InvalidInput.at("route_files", "flows are not counted yet; use vehicles or trips")
        return count


class Scenario:
    """Base of every scenario plug-in: subclasses provide `slug` and `manifest` (an attribute or a
    property computed on first use)."""

    slug: str
    manifest: ScenarioManifest


scenarios: Registry[Scenario] = Registry("traffic scenario")


def read_sumocfg(path: Path) -> dict[str, object]:
    """Net, route and additional files (resolved against the file's folder) and begin/end of a sumocfg.

    A missing or unreadable file is an InvalidInput naming it."""
    if not path.is_file():
        raise InvalidInput.at("sumocfg", f"{path} does not exist")
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as error:
        raise InvalidInput.at("sumocfg", f"{path} is not valid XML: {error}") from None
    found: dict[str, object] = {}

    def value(*names: str) -> str | None:
        for name in names:
            element = root.find(f".//{name}")
            if element is not None and element.get("value"):
                return element.get("value")
        return None

    def files(*names: str) -> tuple[Path, ...]:
        raw = value(*names)
        if not raw:
            return ()
        return tuple((path.parent / part.strip()).resolve() for part in raw.replace(";", ",").split(",")
                     if part.strip())

    nets = files("net-file", "n")
    if not nets:
        raise InvalidInput.at("sumocfg", f"{path} names no net-file")
    found["net_file"] = nets[0]
    found["route_files"] = files("route-files", "r")
    found["additional_files"] = files("additional-files", "a")
    for key in ("begin", "end"):
        raw = value(key, key[0])
        if raw is not None:
            try:
                found[key] = float(raw)
            except ValueError:
                raise InvalidInput.at("sumocfg", f"{path}: {key} {raw!r} is not a number") from None
    return found


def check_files(manifest: ScenarioManifest) -> None:
    """Every file the manifest names exists (SUMO's own parse errors surface when the twin starts)."""
    for label, paths in (("net_file", (manifest.net_file,)), ("route_files", manifest.route_files),
                         ("additional_files", manifest.additional_files)):
        for path in paths:
            if not Path(path).is_file():
                raise InvalidInput.at(label, f"{path} does not exist")


# -- RESCO ---------------------------------------------------------------------------------------------------

RESCO_SOURCE = ("RESCO benchmark (Ault & Sharon, NeurIPS 2021 Datasets and Benchmarks), network and route "
                "files as shipped in the sumo-rl package, folder sumo_rl/nets/RESCO")
RESCO_MAPS: dict[str, tuple[str, str]] = {
    "grid4x4": ("Synthetic 4x4 grid", "MIT (sumo-rl); synthetic"),
    "arterial4x4": ("Synthetic 4x4 arterial network with heavy demand", "MIT (sumo-rl); synthetic"),
    "cologne1": ("Cologne, 1 intersection, 07:00-08:00 (TAPASCologne)",
                 "TAPASCologne: CC BY-SA 3.0 (DLR); files via sumo-rl (MIT)"),
    "cologne3": ("Cologne, 3 intersections, 07:00-08:00 (TAPASCologne)",
                 "TAPASCologne: CC BY-SA 3.0 (DLR); files via sumo-rl (MIT)"),
    "cologne8": ("Cologne, 8 intersections, 07:00-08:00 (TAPASCologne)",
                 "TAPASCologne: CC BY-SA 3.0 (DLR); files via sumo-rl (MIT)"),
    "ingolstadt1": ("Ingolstadt, 1 intersection, 16:00-17:00 (InTAS)", "InTAS: GPL-3.0; files via sumo-rl (MIT)"),
    "ingolstadt7": ("Ingolstadt, 7 intersections, 16:00-17:00 (InTAS); sumo-rl's copy comments out one phase",
                    "InTAS: GPL-3.0; files via sumo-rl (MIT)"),
    "ingolstadt21": ("Ingolstadt, 21 intersections, 16:00-17:00 (InTAS); sumo-rl's copy comments out one phase",
                     "InTAS: GPL-3.0; files via sumo-rl (MIT)"),
}


def resco_root() -> Path:
    """The RESCO folder inside the installed sumo-rl, found without importing sumo_rl (its import needs
    SUMO_HOME and has side effects)."""
    spec = importlib.util.find_spec("sumo_rl")
    if spec is None or not spec.submodule_search_locations:
        raise NotFound("the sumo-rl package (which ships the RESCO networks) is not installed")
    return Path(list(spec.submodule_search_locations)[0]) / "nets" / "RESCO"


class RescoScenario(Scenario):
    """One RESCO benchmark map with the RESCO evaluation settings: 1-hour episodes (the time window of the
    map's sumocfg), a decision every 10 s with 3 s yellow; arterial4x4 5 s and 2 s."""

    def __init__(self, slug: str, description: str, licence: str) -> None:
        self.slug = slug
        self._description = description
        self._licence = licence

    @cached_property
    def manifest(self) -> ScenarioManifest:
        folder = resco_root() / self.slug
        config = folder / f"{self.slug}.sumocfg"
        fast = self.slug == "arterial4x4"
        return ScenarioManifest(
            name=self.slug, title=f"RESCO {self.slug}", description=self._description, source=RESCO_SOURCE,
            licence=self._licence, sumocfg=config, **read_sumocfg(config),
            decision_interval=5.0 if fast else 10.0, yellow=2.0 if fast else 3.0, min_green=3.0 if fast else 5.0)


for _slug, (_description, _licence) in RESCO_MAPS.items():
    scenarios.add(_slug, RescoScenario(_slug, _description, _licence))


# -- folders -------------------------------------------------------------------------------------------------


class FolderScenario(Scenario):
    """A folder holding `NAME.sumocfg` (and optionally `NAME.manifest.json` with manifest fields such as
    title, source, licence, decision_interval, yellow): e.g. a CityFlow network converted to SUMO."""

    def __init__(self, directory: Path | str, name: str | None = None) -> None:
        self.directory = Path(directory).resolve()
        if not self.directory.is_dir():
            raise InvalidInput.at("directory", f"{self.directory} is not a folder")
        configs = sorted(self.directory.glob("*.sumocfg"))
        if name is None:
            if len(configs) != 1:
                names = ", ".join(c.name for c in configs) or "none"
                raise InvalidInput.at("directory", f"{self.directory} must hold exactly one .sumocfg (found {names});"
                                                   " or give the scenario name")
            name = configs[0].name.removesuffix(".sumocfg")
        self.slug = name
        self.manifest = self._read()

    def _read(self) -> ScenarioManifest:
        config = self.directory / f"{self.slug}.sumocfg"
        fields: dict[str, object] = {"name": self.slug, "sumocfg": config, **read_sumocfg(config)}
        extra = self.directory / f"{self.slug}.manifest.json"
        if extra.is_file():
            try:
                data = json.loads(extra.read_text(encoding="utf-8"))
            except (OSError, ValueError) as error:
                raise InvalidInput.at("manifest", f"{extra} is not readable JSON: {error}") from None
            if isinstance(data, dict):
                # The converter's manifest may carry more than ours (counts, mappings): take what we know.
                known = set(ScenarioManifest.model_fields) - {"name", "sumocfg", "net_file", "route_files",
                                                              "additional_files"}
                fields.update({key: data[key] for key in known if key in data and data[key] is not None})
                if "license" in data and "licence" not in fields:
                    fields["licence"] = data["license"]
        try:
            manifest = ScenarioManifest.model_validate(fields)
        except ValidationError as error:
            first = error.errors()[0]
            raise InvalidInput.at(field_path(first["loc"]) or "manifest", first["msg"]) from None
        check_files(manifest)
        return manifest


def register_folder(directory: Path | str, name: str | None = None, *, replace: bool = False) -> Scenario:
    """Register the scenario in a folder under its name (the sumocfg's stem unless given). Registering the
    same folder again is a no-op; another scenario under that name is an error unless `replace`."""
    found = FolderScenario(directory, name)
    if found.slug in scenarios:
        existing = scenarios.get(found.slug)
        if existing.manifest == found.manifest:
            return existing
        if not replace:
            raise InvalidInput.at("name", f"a different scenario is already registered as {found.slug!r}")
        scenarios._items.pop(found.slug)  # noqa: SLF001 - replacing a rewritten folder is asked for
    scenarios.add(found.slug, found)
    return found


def scenario(name: str) -> ScenarioManifest:
    """The manifest of a registered scenario; NotFound lists the known ones."""
    if name not in scenarios:
        known = ", ".join(scenarios) or "none"
        raise NotFound(f"unknown traffic scenario {name!r}; known: {known}")
    return scenarios.get(name).manifest


def resolve(spec: str | Path | ScenarioManifest | Scenario) -> ScenarioManifest:
    """A manifest from a registered name, a Scenario, a manifest, or a folder path."""
    if isinstance(spec, ScenarioManifest):
        return spec
    if isinstance(spec, Scenario):
        return spec.manifest
    if isinstance(spec, Path) or (isinstance(spec, str) and spec not in scenarios and Path(spec).is_dir()):
        return FolderScenario(spec).manifest
    return scenario(str(spec))
