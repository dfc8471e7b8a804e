"""The signal-control benchmark: every controller on every scenario over several seeds, summarised per map
next to the published RESCO figures and to fixed-time measured in the same run.

`run` executes the matrix (spawned workers, see `evaluate.run_matrix`); `summarise` turns episodes into one
`MapSummary` per scenario; `results_json`, `markdown` and `chart` render it for bench/results/traffic.json,
BENCHMARKS.md and a PNG. `citybrain traffic bench` drives it.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from citybrain.traffic.evaluate import EpisodeResult, run_matrix
from citybrain.traffic.runtime import TwinSettings

# Average delay (s) published by RESCO (Ault & Sharon 2021), from the result files in its repository, SUMO 1.9:
# baselines are means over episodes, learners their best episode (see data/SOURCES.md of the shared data).
PUBLISHED_DELAY_S: dict[str, dict[str, float]] = {
    "grid4x4": {"MaxPressure": 52.55, "Greedy": 34.32, "IDQN": 32.95, "IPPO": 44.00, "MPLight": 46.91,
                "FMA2C": 99.77},
    "arterial4x4": {"MaxPressure": 952.75, "Greedy": 820.81, "IDQN": 1168.32, "IPPO": 686.62, "MPLight": 837.75,
                    "FMA2C": 654.13},
    "ingolstadt1": {"FixedTime": 39.40, "MaxPressure": 23.62, "Greedy": 28.32, "IDQN": 21.48, "IPPO": 20.90,
                    "MPLight": 28.31, "FMA2C": 27.00},
    "ingolstadt7": {"FixedTime": 91.31, "MaxPressure": 46.82, "Greedy": 80.56, "IDQN": 31.19, "IPPO": 31.68,
                    "MPLight": 48.21, "FMA2C": 51.39},
    "ingolstadt21": {"FixedTime": 133.10, "MaxPressure": 136.72, "Greedy": 76.32, "IDQN": 59.64, "IPPO": 93.11,
                     "MPLight": 78.16, "FMA2C": 90.29},
    "cologne1": {"FixedTime": 56.61, "MaxPressure": 65.85, "Greedy": 27.81, "IDQN": 26.05, "IPPO": 43.24,
                 "MPLight": 28.74, "FMA2C": 30.79},
    "cologne3": {"FixedTime": 46.35, "MaxPressure": 162.28, "Greedy": 90.67, "IDQN": 23.99, "IPPO": 24.03,
                 "MPLight": 83.65, "FMA2C": 26.86},
    "cologne8": {"FixedTime": 63.77, "MaxPressure": 47.73, "Greedy": 21.87, "IDQN": 22.06, "IPPO": 21.62,
                 "MPLight": 60.42, "FMA2C": 33.88},
}
BASELINE = "fixed"  # the relative change of every controller is against the network's own programs
OURS = "citybrain"  # our own controller's slug (controllers/ours.py)


def best_published(scenario: str) -> tuple[str, float] | None:
    """The lowest published delay of a map and who reached it."""
    figures = PUBLISHED_DELAY_S.get(scenario)
    if not figures:
        return None
    method = min(figures, key=figures.__getitem__)
    return method, figures[method]


@dataclass(frozen=True, slots=True)
class ControllerSummary:
    """One controller on one map, averaged over its seeds."""

    controller: str
    seeds: tuple[int, ...]
    delay: float
    delay_stdev: float
    trip_time: float
    waiting_time: float
    queue: float
    throughput: float
    mean_speed: float
    gridlocked_seeds: tuple[int, ...]
    wall_seconds: float
    vs_baseline: float | None  # relative change of delay against fixed-time in the same run (−0.3 = 30 % less)


@dataclass(slots=True)
class MapSummary:
    scenario: str
    controllers: dict[str, ControllerSummary] = field(default_factory=dict)

    @property
    def best_published(self) -> tuple[str, float] | None:
        return best_published(self.scenario)

    def beats_published(self, slug: str) -> bool | None:
        """Whether a controller's delay is at or below the best published one (None: nothing published)."""
        best = self.best_published
        summary = self.controllers.get(slug)
        if best is None or summary is None:
            return None
        return summary.delay <= best[1]


def run(scenarios: Sequence[Any], controllers: Sequence[str], seeds: Sequence[int], *, workers: int = 2,
        settings: TwinSettings | None = None, duration: float | None = None,
        progress: Callable[[EpisodeResult], None] | None = None) -> list[EpisodeResult]:
    """Every episode of the matrix (see evaluate.run_matrix)."""
    return run_matrix(scenarios, controllers, seeds, workers=workers, settings=settings, duration=duration,
                      progress=progress)


def summarise(results: Iterable[EpisodeResult]) -> list[MapSummary]:
    """One summary per scenario, in the order the scenarios first appear."""
    cells: dict[str, dict[str, list[EpisodeResult]]] = defaultdict(lambda: defaultdict(list))
    for result in results:
        cells[result.scenario][result.controller].append(result)
    maps = []
    for scenario, by_controller in cells.items():
        baseline_runs = by_controller.get(BASELINE)
        baseline = statistics.fmean(r.delay for r in baseline_runs) if baseline_runs else None
        summary = MapSummary(scenario)
        for slug, runs in by_controller.items():
            delay = statistics.fmean(r.delay for r in runs)
            summary.controllers[slug] = ControllerSummary(
                controller=slug, seeds=tuple(r.seed for r in runs), delay=delay,
                delay_stdev=statistics.stdev(r.delay for r in runs) if len(runs) > 1 else 0.0,
                trip_time=statistics.fmean(r.trip_time for r in runs),
                waiting_time=statistics.fmean(r.waiting_time for r in runs),
                queue=statistics.fmean(r.queue for r in runs),
                throughput=statistics.fmean(r.throughput for r in runs),
                mean_speed=statistics.fmean(r.mean_speed for r in runs),
                gridlocked_seeds=tuple(r.seed for r in runs if r.gridlocked),
                wall_seconds=statistics.fmean(r.wall_seconds for r in runs),
                vs_baseline=(delay - baseline) / baseline if baseline else None)
        maps.append(summary)
    return maps


def results_json(maps: Sequence[MapSummary], *, ours: str, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """bench/results/traffic.json: per map `<controller>_delay_s` (ours first, as `ours_delay_s`), the
    gridlocked seeds of every controller, the best published figure; headline counts at the top."""
    out_maps: dict[str, dict[str, Any]] = {}
    for summary in maps:
        entry: dict[str, Any] = {}
        if ours in summary.controllers:
            entry["ours_delay_s"] = round(summary.controllers[ours].delay, 2)
        for slug, cs in summary.controllers.items():
            entry[f"{slug}_delay_s"] = round(cs.delay, 2)
        entry["gridlocked_seeds"] = sum(len(cs.gridlocked_seeds) for cs in summary.controllers.values())
        if ours in summary.controllers:
            entry["ours_gridlocked_seeds"] = len(summary.controllers[ours].gridlocked_seeds)
            if summary.controllers[ours].vs_baseline is not None:
                entry["ours_vs_fixed_delay_change"] = round(summary.controllers[ours].vs_baseline, 4)
        best = summary.best_published
        if best is not None:
            entry["best_published_delay_s"] = best[1]
            entry["best_published_method"] = best[0]
        out_maps[summary.scenario] = entry
    beaten = [s.beats_published(ours) for s in maps]
    headline = {
        "ours": ours,
        "maps": out_maps,
        "maps_at_or_below_best_published": sum(1 for b in beaten if b),
        "maps_with_published_figures": sum(1 for b in beaten if b is not None),
        "ours_gridlocked_seeds": sum(len(s.controllers[ours].gridlocked_seeds) for s in maps if ours in s.controllers),
    }
    return headline | (extra or {})


def _fmt(value: float | None, digits: int = 1) -> str:
    return "–" if value is None else f"{value:,.{digits}f}"


def markdown(maps: Sequence[MapSummary], controllers: Sequence[str], *, ours: str) -> list[str]:
    """The delay table (with gridlocked seeds), ours against fixed-time and the best published figure, and a
    second table of the other metrics."""
    lines = ["| map | " + " | ".join(f"{c} delay (s)" for c in controllers)
             + " | ours vs fixed | best published (method) | ours ≤ published |",
             "|---|" + "---:|" * len(controllers) + "---:|---|:---:|"]
    for summary in maps:
        cells = []
        for slug in controllers:
            cs = summary.controllers.get(slug)
            if cs is None:
                cells.append("–")
                continue
            cell = f"{cs.delay:,.1f} ± {cs.delay_stdev:,.1f}"
            if cs.gridlocked_seeds:
                cell += f" (gridlock: seeds {', '.join(map(str, cs.gridlocked_seeds))})"
            cells.append(cell)
        mine = summary.controllers.get(ours)
        change = f"{mine.vs_baseline:+.0%}" if mine and mine.vs_baseline is not None else "–"
        best = summary.best_published
        verdict = summary.beats_published(ours)
        lines.append(f"| {summary.scenario} | " + " | ".join(cells) + f" | {change} | "
                     + (f"{best[1]:g} ({best[0]})" if best else "–") + " | "
                     + ("–" if verdict is None else "yes" if verdict else "**no**") + " |")
    lines += ["", "| map | controller | trip time (s) | waiting (s) | queue (veh) | arrived | mean speed (m/s) | "
              "wall s / episode |", "|---|---|---:|---:|---:|---:|---:|---:|"]
    for summary in maps:
        for slug in controllers:
            cs = summary.controllers.get(slug)
            if cs is not None:
                lines.append(f"| {summary.scenario} | {slug} | {cs.trip_time:,.1f} | {cs.waiting_time:,.1f} | "
                             f"{cs.queue:,.1f} | {cs.throughput:,.0f} | {cs.mean_speed:.2f} | {cs.wall_seconds:.1f} |")
    return lines


def chart(maps: Sequence[MapSummary], controllers: Sequence[str], path: Path, *, title: str) -> Path:
    """Grouped bars of delay per map and controller (log scale: arterial4x4's delays are ten times the
    others'), with the best published delay of each map as a black tick."""
    import matplotlib

    matplotlib.use("Agg")  # no display on a server
    import matplotlib.pyplot as plt

    width = 0.8 / max(1, len(controllers))
    fig, ax = plt.subplots(figsize=(max(8.0, 1.3 * len(maps) + 2), 4.8), dpi=120)
    for index, slug in enumerate(controllers):
        xs, ys = [], []
        for position, summary in enumerate(maps):
            cs = summary.controllers.get(slug)
            if cs is not None:
                xs.append(position - 0.4 + width * (index + 0.5))
                ys.append(max(cs.delay, 0.1))
        ax.bar(xs, ys, width=width, label=slug)
    labelled = False
    for position, summary in enumerate(maps):
        best = summary.best_published
        if best is not None:
            ax.hlines(best[1], position - 0.45, position + 0.45, colors="black", linewidth=1.6,
                      label=None if labelled else "best published (RESCO)")
            labelled = True
    ax.set_yscale("log")
    ax.set_xticks(range(len(maps)), [s.scenario for s in maps], rotation=20)
    ax.set_ylabel("average delay per vehicle (s, log scale)")
    ax.set_title(title)
    handles, labels = ax.get_legend_handles_labels()
    unique = dict(zip(labels, handles, strict=False))
    ax.legend(unique.values(), unique.keys(), fontsize=8, ncols=min(5, len(unique)))
    ax.grid(axis="y", which="both", alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def default_ours(controllers: Sequence[str]) -> str:
    """The controller the benchmark measures against the published figures: ours if it runs, else the last
    one given (the baselines come first)."""
    return OURS if OURS in controllers else controllers[-1]


def machine() -> str:
    """CPU, cores, memory and SUMO version: what a reader needs to weigh the wall times."""
    import os
    import platform as host
    from importlib.metadata import PackageNotFoundError, version

    cpu = host.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        sumo = version("eclipse-sumo")
    except PackageNotFoundError:
        sumo = "?"
    return f"{os.cpu_count()} × {cpu}, Linux {host.release()}, Python {host.python_version()}, SUMO {sumo}"
