"""`citybrain traffic bench`: the summary arithmetic, the results' shape, and a smoke run of the whole
machinery (every map including Hangzhou, every controller, one seed, episodes cut short) as CI runs it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from citybrain.cli import app
from citybrain.traffic import benchmark
from citybrain.traffic.evaluate import EpisodeResult
from citybrain.traffic.scenarios import RESCO_MAPS

HANGZHOU = Path(__file__).resolve().parents[3] / "shared" / "data" / "traffic" / "hangzhou_4x4"


def episode(scenario: str, controller: str, seed: int, delay: float, *, gridlocked: bool = False) -> EpisodeResult:
    return EpisodeResult(
        scenario=scenario, controller=controller, seed=seed, vehicles=100, arrived=90, never_inserted=2,
        in_network_at_end=8, halting_at_end=3, stuck_at_end=12 if gridlocked else 0, longest_standstill=0.0,
        arrivals_in_window=10, delay=delay, trip_time=delay + 60, waiting_time=delay / 2, queue=4.0, mean_speed=8.0,
        gridlocked=gridlocked, wall_seconds=1.0, simulated_seconds=3600.0)


def test_summary_compares_with_fixed_time_in_the_same_run_and_with_the_best_published_figure() -> None:
    results = [episode("cologne8", "fixed", 1, 50.0), episode("cologne8", "fixed", 2, 30.0),
               episode("cologne8", "citybrain", 1, 20.0), episode("cologne8", "citybrain", 2, 22.0),
               episode("cologne8", "maxpressure", 1, 25.0), episode("cologne8", "maxpressure", 2, 400.0, gridlocked=True)]
    [summary] = benchmark.summarise(results)
    ours = summary.controllers["citybrain"]
    assert ours.delay == pytest.approx(21.0)
    assert ours.vs_baseline == pytest.approx((21.0 - 40.0) / 40.0)
    assert summary.best_published == ("IPPO", 21.62)
    assert summary.beats_published("citybrain") is True
    assert summary.beats_published("maxpressure") is False
    assert summary.controllers["maxpressure"].gridlocked_seeds == (2,)

    figures = benchmark.results_json([summary], ours="citybrain")
    entry = figures["maps"]["cologne8"]
    assert entry["ours_delay_s"] == 21.0 and entry["fixed_delay_s"] == 40.0 and entry["maxpressure_delay_s"] == 212.5
    assert entry["gridlocked_seeds"] == 1 and entry["ours_gridlocked_seeds"] == 0
    assert figures["maps_at_or_below_best_published"] == 1 and figures["ours_gridlocked_seeds"] == 0

    lines = benchmark.markdown([summary], ["fixed", "maxpressure", "citybrain"], ours="citybrain")
    assert any("gridlock: seeds 2" in line and "21.62 (IPPO)" in line and "| yes |" in line for line in lines)


def test_a_map_without_published_figures_is_compared_with_fixed_time_only() -> None:
    [summary] = benchmark.summarise([episode("hangzhou_4x4", "fixed", 1, 400.0),
                                     episode("hangzhou_4x4", "citybrain", 1, 200.0)])
    assert summary.best_published is None and summary.beats_published("citybrain") is None
    assert summary.controllers["citybrain"].vs_baseline == pytest.approx(-0.5)


def test_smoke_run_of_every_map_and_controller(tmp_path: Path) -> None:
    """The CI version of `citybrain traffic bench --all`: one seed, the first five minutes of each episode."""
    if not HANGZHOU.is_dir():
        pytest.fail(f"the shared Hangzhou data set is missing at {HANGZHOU}")
    out, markdown = tmp_path / "results", tmp_path / "BENCHMARKS.md"
    result = CliRunner().invoke(app, [
        "traffic", "bench", "--all", "--seeds", "1", "--duration", "300", "--cityflow", str(HANGZHOU),
        "--out", str(out), "--benchmarks", str(markdown), "--home", str(tmp_path / "home")])
    assert result.exit_code == 0, result.output
    figures = json.loads((out / "traffic.json").read_text())
    assert set(figures["maps"]) == {*RESCO_MAPS, "hangzhou_4x4"}
    for name, entry in figures["maps"].items():
        assert {"fixed_delay_s", "maxpressure_delay_s", "gridlocked_seeds"} <= entry.keys(), name
        assert entry["fixed_delay_s"] >= 0
    assert figures["episode_duration_s"] == 300
    assert (out / "traffic.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    section = markdown.read_text()
    assert "## traffic" in section and "best published" in section and "cologne8" in section
    assert "average delay per vehicle" in result.output


@pytest.mark.parametrize(("arguments", "message"), [
    (["--map", "atlantis"], "unknown traffic scenario"),
    (["--map", "grid4x4", "--controller", "oracle"], "unknown signal controller"),
    (["--map", "hangzhou_4x4", "--cityflow", "/nonexistent"], "needs the CityFlow data set"),
])
def test_bad_choices_are_one_line_and_exit_2(arguments: list[str], message: str, tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["traffic", "bench", *arguments, "--no-record", "--home", str(tmp_path)])
    assert result.exit_code == 2, result.output
    assert message in result.output
