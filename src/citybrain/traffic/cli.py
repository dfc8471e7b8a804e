"""`citybrain traffic`: import networks, run controllers on scenarios, benchmark them."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from citybrain.cli_support import HomeOpt, KeyOpt, console, fail, key_headers, settings_from

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


DEFAULT_CITYFLOW = Path("../shared/data/traffic/hangzhou_4x4")


def _cityflow_scenario(directory: Path, home: Path) -> Path:
    """Convert the CityFlow data set in `directory` (a roadnet_*.json and a flow file) into a SUMO scenario
    under {home}/traffic/scenarios/NAME and return that folder."""
    from citybrain.core.errors import CityBrainError
    from citybrain.traffic.cityflow import convert_cityflow

    roadnets = sorted(directory.glob("roadnet*.json"))
    flows = sorted(p for p in directory.glob("*.json") if p not in roadnets)
    if len(roadnets) != 1 or len(flows) != 1:
        fail(f"{directory}: expected one roadnet*.json and one flow file, found {len(roadnets)} and {len(flows)}")
    folder = settings_from(home=home).home / "traffic" / "scenarios" / directory.resolve().name
    try:
        convert_cityflow(roadnets[0], flows[0], folder, directory.resolve().name)
    except CityBrainError as exc:
        fail(exc.detail)
    return folder


@traffic_app.command("scenarios")
def list_scenarios() -> None:
    """The registered scenarios: their source, time window, decision interval, yellow and demand."""
    from citybrain.traffic.scenarios import scenario, scenarios

    table = Table(show_edge=False)
    for column in ("scenario", "window (s)", "decide every (s)", "yellow (s)", "vehicles", "source"):
        table.add_column(column)
    for name in scenarios:
        manifest = scenario(name)
        table.add_row(name, f"{manifest.begin:g}–{manifest.end:g}", f"{manifest.decision_interval:g}",
                      f"{manifest.yellow:g}", f"{manifest.demand():,}", manifest.source[:60])
    console.print(table)


@traffic_app.command("bench")
def bench(
    all_maps: Annotated[bool, typer.Option(
        "--all", help="The eight RESCO maps and Hangzhou 4x4 (the default when no --map is given).")] = False,
    maps: Annotated[list[str] | None, typer.Option(
        "--map", "-m", help="A scenario to run (repeat). 'hangzhou_4x4' is converted from --cityflow.")] = None,
    controllers: Annotated[list[str] | None, typer.Option(
        "--controller", "-c", help="A controller slug (repeat). Default: every registered controller.")] = None,
    seeds: Annotated[int, typer.Option(min=1, max=50, help="Seeds per (map, controller): 1..N.")] = 3,
    workers: Annotated[int, typer.Option(min=1, max=16, help="Episodes run at once, one process each.")] = 2,
    duration: Annotated[float | None, typer.Option(
        min=1, help="Cut every episode to its first SECONDS (a smoke run of the machinery; the figures are "
                    "then not comparable with RESCO's).")] = None,
    ours: Annotated[str, typer.Option(help="The controller compared with the published figures.")] = "",
    cityflow: Annotated[Path, typer.Option(
        help="Folder of the Hangzhou 4x4 CityFlow data set (roadnet and flow JSON).")] = DEFAULT_CITYFLOW,
    out: Annotated[Path | None, typer.Option(
        help="Where traffic.json and traffic.png go. Default: bench/results when run from the repository, "
             "else {home}/traffic/bench.")] = None,
    benchmarks: Annotated[Path | None, typer.Option(
        help="Markdown file the run's section is appended to. Default: BENCHMARKS.md when run from the "
             "repository.")] = None,
    record: Annotated[bool, typer.Option(help="Write the JSON, the chart and the Markdown section.")] = True,
    home: HomeOpt = Path(".citybrain"),
) -> None:
    """Run every controller on every scenario with the RESCO settings (1-hour episodes, 10 s decisions, 3 s
    yellow; arterial4x4 5 s / 2 s; no teleporting) over several seeds, and print average delay (timeLoss +
    departDelay, counting vehicles never inserted), trip time, waiting time, queue, throughput and mean
    speed, next to the best published RESCO delay and the change against fixed-time in the same run."""
    import shlex
    import sys
    from datetime import UTC, datetime

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from citybrain.core.errors import CityBrainError
    from citybrain.traffic import benchmark
    from citybrain.traffic.controllers import controller, load_controllers
    from citybrain.traffic.scenarios import RESCO_MAPS, register_folder, resolve

    chosen_maps = list(maps or [])
    if all_maps or not chosen_maps:
        chosen_maps = [*RESCO_MAPS, "hangzhou_4x4", *(m for m in chosen_maps if m not in RESCO_MAPS)]
    if "hangzhou_4x4" in chosen_maps:
        if not cityflow.is_dir():
            fail(f"hangzhou_4x4 needs the CityFlow data set: no folder {cityflow} (give --cityflow DIR)")
        register_folder(_cityflow_scenario(cityflow, home), "hangzhou_4x4", replace=True)
    registry = load_controllers()
    chosen_controllers = list(controllers or registry)
    if benchmark.BASELINE not in chosen_controllers:
        chosen_controllers.insert(0, benchmark.BASELINE)  # every change is measured against it in this run
    ours = ours or benchmark.default_ours(chosen_controllers)
    try:  # unknown names are one line before any worker starts
        for name in chosen_maps:
            resolve(name)
        for slug in chosen_controllers:
            controller(slug)
    except CityBrainError as exc:
        fail(exc.detail)
    seed_list = list(range(1, seeds + 1))
    total = len(chosen_maps) * len(chosen_controllers) * len(seed_list)
    started = datetime.now(UTC)
    try:
        with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                      TimeElapsedColumn(), console=console) as progress:
            task = progress.add_task("episodes", total=total)

            def advance(result: benchmark.EpisodeResult) -> None:
                flag = " [red]gridlock[/red]" if result.gridlocked else ""
                progress.console.print(f"{result.scenario:<13} {result.controller:<12} seed {result.seed}: "
                                       f"delay {result.delay:8.1f} s{flag}", highlight=False)
                progress.advance(task)

            results = benchmark.run(chosen_maps, chosen_controllers, seed_list, workers=workers,
                                    duration=duration, progress=advance)
    except CityBrainError as exc:
        fail(exc.detail)
    wall = (datetime.now(UTC) - started).total_seconds()
    maps_summary = benchmark.summarise(results)
    lines = benchmark.markdown(maps_summary, chosen_controllers, ours=ours)
    _print_tables(maps_summary, chosen_controllers, ours, comparable=duration is None)
    console.print(f"{len(results)} episodes in {wall:.0f} s with {workers} workers"
                  + (f"; episodes cut to {duration:g} s (smoke run)" if duration else ""))
    if not record:
        return
    in_repo = Path("BENCHMARKS.md").is_file() and Path("bench").is_dir()
    target = out or (Path("bench/results") if in_repo else settings_from(home=home).home / "traffic" / "bench")
    figures = benchmark.results_json(maps_summary, ours=ours, extra={
        "seeds": seeds, "episodes": len(results), "bench_wall_s": round(wall, 1),
        "episode_duration_s": duration, "date": started.date().isoformat()})
    target.mkdir(parents=True, exist_ok=True)
    (target / "traffic.json").write_text(__import__("json").dumps(figures, indent=2) + "\n", encoding="utf-8")
    chart = benchmark.chart(maps_summary, chosen_controllers, target / "traffic.png",
                            title=f"Average delay per vehicle, {seeds} seed(s) per map"
                                  + (f", episodes cut to {duration:g} s" if duration else ""))
    markdown_file = benchmarks or (Path("BENCHMARKS.md") if in_repo else None)
    if markdown_file is not None:
        command = "citybrain traffic bench " + shlex.join(sys.argv[3:] if sys.argv[1:3] == ["traffic", "bench"]
                                                          else sys.argv[1:])
        section = [f"\n## traffic — {started:%Y-%m-%d %H:%M} UTC\n", f"- command: `{command.strip()}`",
                   f"- machine: {benchmark.machine()}",
                   f"- {len(results)} episodes ({len(chosen_maps)} maps × {len(chosen_controllers)} controllers × "
                   f"{seeds} seeds) in {wall:.0f} s with {workers} workers; chart: `{chart}`", "", *lines, ""]
        with markdown_file.open("a", encoding="utf-8") as handle:
            handle.write("\n".join(section) + "\n")
    console.print(f"wrote {target / 'traffic.json'}, {chart}" + (f" and {markdown_file}" if markdown_file else ""))


def _print_tables(maps_summary: list, controllers: list[str], ours: str, *, comparable: bool = True) -> None:
    table = Table(title="average delay per vehicle (s), mean ± sd over seeds", show_edge=False)
    table.add_column("map", no_wrap=True)
    for slug in controllers:
        table.add_column(slug, justify="right")
    table.add_column(f"{ours} vs fixed", justify="right")
    table.add_column("best published", justify="right")
    for summary in maps_summary:
        cells = []
        for slug in controllers:
            cs = summary.controllers.get(slug)
            text = "–" if cs is None else f"{cs.delay:,.1f} ± {cs.delay_stdev:,.1f}"
            if cs is not None and cs.gridlocked_seeds:
                text += f" [red]⛔{len(cs.gridlocked_seeds)}[/red]"
            cells.append(text)
        mine = summary.controllers.get(ours)
        change = f"{mine.vs_baseline:+.0%}" if mine and mine.vs_baseline is not None else "–"
        best = summary.best_published
        # a cut episode's delay says nothing against a full hour's published figure
        verdict = summary.beats_published(ours) if comparable else None
        best_text = "–" if best is None else f"{best[1]:g} {best[0]}" + (
            "" if verdict is None else " [green]✓[/green]" if verdict else " [red]✗[/red]")
        table.add_row(summary.scenario, *cells, change, best_text)
    # piped into a log, Rich assumes 80 columns and folds every cell: give the tables room to be read
    out = console if console.is_terminal else Console(width=160, soft_wrap=True)
    out.print(table)
    details = Table(title="other metrics (means over seeds)", show_edge=False)
    for column in ("map", "controller", "trip time (s)", "waiting (s)", "queue (veh)", "arrived",
                   "speed (m/s)", "wall s/episode"):
        named = column in ("map", "controller")
        details.add_column(column, justify="left" if named else "right", no_wrap=named)
    for summary in maps_summary:
        for slug in controllers:
            cs = summary.controllers.get(slug)
            if cs is not None:
                details.add_row(summary.scenario, slug, f"{cs.trip_time:,.1f}", f"{cs.waiting_time:,.1f}",
                                f"{cs.queue:,.1f}", f"{cs.throughput:,.0f}", f"{cs.mean_speed:.2f}",
                                f"{cs.wall_seconds:.1f}")
    out.print(details)


plan_app = typer.Typer(help="Signal plans on the live twin of a running City Brain (checked on a forked twin "
                            "first, applied only if predicted better).", no_args_is_help=True)
traffic_app.add_typer(plan_app, name="plan")
UrlOpt = Annotated[str, typer.Option("--url", help="The running City Brain's API (it runs the live twin).")]


def _api(method: str, url: str, key: str, path: str, body: object = None) -> object:
    import httpx

    try:
        answer = httpx.request(method, f"{url.rstrip('/')}/api/v1/traffic{path}", json=body, timeout=30,
                               headers=key_headers(key))
    except httpx.HTTPError as exc:
        fail(f"cannot reach the City Brain at {url}: {exc}")
    if answer.status_code >= 400:
        problem = answer.json() if answer.headers.get("content-type", "").endswith("json") else {}
        fields = "; ".join(f"{e['field']}: {e['reason']}" for e in problem.get("errors", []))
        fail(f"{problem.get('detail') or answer.text[:200]}" + (f" ({fields})" if fields else ""))
    return answer.json()


def _plan_line(plan: dict) -> str:
    change = plan["controller"] or ", ".join(f"phase {k} {v:g} s" for k, v in (plan["timing"] or {}).items())
    line = f"{plan['id']}  {plan['status']:<10} {change} at {', '.join(plan['intersections'])}"
    return line + (f"\n    {plan['reason']}" if plan.get("reason") else "")


@plan_app.command("propose")
def propose_plan(
    intersections: Annotated[list[str], typer.Argument(help="Traffic light ids (see `plan lights`).")],
    controller: Annotated[str | None, typer.Option("--controller", "-c", help="A controller slug.")] = None,
    timing: Annotated[list[str] | None, typer.Option(
        "--timing", "-t", help="PHASE=SECONDS, a green phase's duration (repeat).")] = None,
    horizon: Annotated[float, typer.Option(help="Simulated seconds the plan is judged over.")] = 900.0,
    url: UrlOpt = "http://127.0.0.1:8000",
    key: KeyOpt = "",
) -> None:
    """Propose a plan; prints it as proposed (see `plan show ID` for the verdict)."""
    body: dict[str, object] = {"intersections": intersections, "horizon_s": horizon}
    if controller:
        body["controller"] = controller
    if timing:
        parsed = {}
        for item in timing:
            phase, _, seconds = item.partition("=")
            try:
                parsed[str(int(phase))] = float(seconds)
            except ValueError:
                fail(f"--timing {item!r}: PHASE=SECONDS is required, e.g. 0=40")
        body["timing"] = parsed
    console.print(_plan_line(_api("POST", url, key, "/plans", body)), highlight=False)  # type: ignore[arg-type]


@plan_app.command("list")
def list_plans(url: UrlOpt = "http://127.0.0.1:8000", key: KeyOpt = "") -> None:
    """The plans, newest first, with their state and reason."""
    for plan in _api("GET", url, key, "/plans")["items"]:  # type: ignore[index]
        console.print(_plan_line(plan), highlight=False)


@plan_app.command("show")
def show_plan(plan_id: Annotated[str, typer.Argument(help="Plan id.")], url: UrlOpt = "http://127.0.0.1:8000",
              key: KeyOpt = "") -> None:
    """One plan as JSON: prediction (baseline and candidate) and measured outcome."""
    import json

    console.print_json(json.dumps(_api("GET", url, key, f"/plans/{plan_id}")))


@plan_app.command("lights")
def list_lights(url: UrlOpt = "http://127.0.0.1:8000", key: KeyOpt = "") -> None:
    """The live twin's signalised intersections: id, green phases, control now."""
    for light in _api("GET", url, key, "/intersections")["items"]:  # type: ignore[index]
        console.print(f"{light['id']}  greens {light['greenPhases']}  {light.get('controlMode', '?')} "
                      f"({light.get('controller', '?')})", highlight=False)
