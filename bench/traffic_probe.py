"""Quick probe (not the final bench): fixed time, SUMO actuated, MaxPressure and ours on the RESCO maps.

Prints mean delay per map and controller, the gridlocked seeds and wall seconds per episode, next to the
delays measured earlier on this machine kind (SOURCES.md, SUMO 1.28, 5 seeds) and RESCO's published ones.

    .venv/bin/python bench/traffic_probe.py [--seeds 1 2] [--maps grid4x4 cologne8] [--workers 2]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections import defaultdict

from citybrain.traffic.evaluate import EpisodeResult, run_matrix
from citybrain.traffic.scenarios import RESCO_MAPS

CONTROLLERS = ("fixed", "actuated", "maxpressure", "citybrain")
# SOURCES.md: "Measured here with SUMO 1.28 via libsumo, 5 seeds" (fixed, maxpressure)
MEASURED = {"cologne8": (49.1, 24.5), "grid4x4": (91.4, 46.4), "ingolstadt1": (29.7, 14.7),
            "cologne3": (36.1, 144.6), "ingolstadt21": (138.5, 262.6)}
# RESCO result files (SUMO 1.9): FixedTime, MaxPressure
PUBLISHED = {"grid4x4": (None, 52.55), "arterial4x4": (None, 952.75), "ingolstadt1": (39.40, 23.62),
             "ingolstadt7": (91.31, 46.82), "ingolstadt21": (133.10, 136.72), "cologne1": (56.61, 65.85),
             "cologne3": (46.35, 162.28), "cologne8": (63.77, 47.73)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--maps", nargs="+", default=list(RESCO_MAPS))
    parser.add_argument("--controllers", nargs="+", default=list(CONTROLLERS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()

    def progress(result: EpisodeResult) -> None:
        print(f"  {result.scenario:<13} {result.controller:<12} seed {result.seed}: delay {result.delay:7.1f} s"
              f"  arrived {result.arrived}/{result.vehicles}  never inserted {result.never_inserted}"
              f"  stuck {result.stuck_at_end}{'  GRIDLOCK' if result.gridlocked else ''}"
              f"  wall {result.wall_seconds:.1f} s", file=sys.stderr, flush=True)

    started = time.perf_counter()
    results = run_matrix(args.maps, args.controllers, args.seeds, workers=args.workers, progress=progress)
    cells: dict[tuple[str, str], list[EpisodeResult]] = defaultdict(list)
    for result in results:
        cells[result.scenario, result.controller].append(result)

    header = f"| map | {' | '.join(args.controllers)} | measured fixed / MP | RESCO fixed / MP |"
    print(f"\nMean delay (s) over seeds {args.seeds}; [gridlocked seeds]; (wall s per episode)\n")
    print(header)
    print("|" + "---|" * (len(args.controllers) + 3))
    for name in args.maps:
        row = []
        for slug in args.controllers:
            runs = cells[name, slug]
            locked = [r.seed for r in runs if r.gridlocked]
            cell = f"{statistics.fmean(r.delay for r in runs):.1f}"
            cell += f" [{','.join(map(str, locked))}]" if locked else ""
            cell += f" ({statistics.fmean(r.wall_seconds for r in runs):.1f})"
            row.append(cell)

        def pair(values: tuple[float | None, float | None] | None) -> str:
            return " / ".join("–" if v is None else f"{v:g}" for v in values) if values else "–"

        print(f"| {name} | {' | '.join(row)} | {pair(MEASURED.get(name))} | {pair(PUBLISHED.get(name))} |")
    print(f"\n{len(results)} episodes, {time.perf_counter() - started:.0f} s wall with {args.workers} workers")


if __name__ == "__main__":
    main()
