"""`citybrain traffic`: import networks, run controllers on scenarios, benchmark them."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from citybrain.cli_support import HomeOpt, console, fail, settings_from

traffic_app = typer.Typer(help="治堵: the SUMO digital twin, signal controllers and their benchmark.",
                          no_args_is_help=True)


@traffic_app.command("import-cityflow")
def import_cityflow(
    roadnet: Annotated[Path, typer.Argument(help="CityFlow road network (e.g. roadnet_4_4.json).")],
    flow: Annotated[Path, typer.Argument(help="CityFlow flow: vehicles, their routes and start times.")],
    name: Annotated[str | None, typer.Option(
        help="Scenario name, used for the file names. Default: the road network's folder name.")] = None,
    out: Annotated[Path | None, typer.Option(
        "--out", "-o", help="Folder to write into. Default: {home}/traffic/scenarios/NAME.")] = None,
    home: HomeOpt = Path(".citybrain"),
) -> None:
    """Convert a CityFlow network and flow (the CoLight / PressLight data sets) into a SUMO scenario:
    NAME.net.xml (built by netconvert, with CityFlow's fixed-time signal programs), NAME.rou.xml (one
    vehicle per CityFlow vehicle), NAME.sumocfg and NAME.manifest.json (sources, counts, SUMO version,
    which SUMO phase is which CityFlow phase). A broken file is one line naming the field."""
    from citybrain.core.errors import CityBrainError
    from citybrain.traffic.cityflow import convert_cityflow, scenario_counts

    scenario_name = name or roadnet.resolve().parent.name
    folder = out or settings_from(home=home).home / "traffic" / "scenarios" / scenario_name
    try:
        with console.status(f"converting {roadnet.name} and {flow.name}"):
            scenario = convert_cityflow(roadnet, flow, folder, scenario_name)
    except CityBrainError as exc:
        fail(exc.detail)
    table = Table(title=f"{scenario.name} (SUMO {scenario.sumo_version})", show_edge=False)
    table.add_column("converted")
    table.add_column("count", justify="right")
    for what, count in scenario_counts(scenario):
        table.add_row(what, f"{count:,}")
    console.print(table)
    console.print(f"wrote {scenario.config}, {scenario.net.name}, {scenario.routes.name} and "
                  f"{scenario.manifest.name}", highlight=False)
