"""The twin: external control with yellow and min green owned by the runtime, illegal commands refused
without harm, per-vehicle metrics that count every scheduled vehicle, and gridlock detection."""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import pytest

from citybrain.core.errors import Conflict, InvalidInput
from citybrain.traffic.controllers import ControllerManifest, SignalController
from citybrain.traffic.evaluate import GridlockRule, run_episode
from citybrain.traffic.runtime import Twin, TwinSettings, yellow_state
from citybrain.traffic.scenarios import ScenarioManifest, scenario


def window(name: str, seconds: float) -> ScenarioManifest:
    """A scenario cut to its first `seconds`."""
    manifest = scenario(name)
    return manifest.model_copy(update={"end": manifest.begin + seconds})


@pytest.fixture
def grid() -> Iterator[Twin]:
    with Twin().start(window("grid4x4", 200), seed=3, program="external") as twin:
        yield twin


def test_yellow_comes_from_the_transition_between_two_greens() -> None:
    assert yellow_state("GGgrrs", "rrGGGs") == "yygrrs"  # g stays: it is green after the switch too
    assert yellow_state("GGrr", "GGGG") == "GGrr"  # nothing loses green: no yellow needed


def test_a_switch_shows_yellow_for_the_yellow_time_then_the_new_green_and_min_green_holds(grid: Twin) -> None:
    tl = grid.sim.trafficlight  # type: ignore[union-attr]
    a0 = grid.tls["A0"]
    first, second = a0.green_phases[0], a0.green_phases[1]
    assert tl.getRedYellowGreenState("A0") == a0.phases[first].state
    grid.advance(grid.time + 10)
    grid.set_phase("A0", second)
    expected_yellow = yellow_state(a0.phases[first].state, a0.phases[second].state)
    seen = []
    for _ in range(5):
        seen.append(tl.getRedYellowGreenState("A0"))
        grid.step()
    assert seen[:3] == [expected_yellow] * 3 and seen[3:] == [a0.phases[second].state] * 2
    observed = grid.observe(["A0"])["A0"]
    assert observed.phase == second and not observed.in_yellow and observed.time_in_phase == 2
    grid.set_phase("A0", first)  # asked back after 2 s of green: held until min green (5 s) is reached
    assert tl.getRedYellowGreenState("A0") == a0.phases[second].state
    grid.advance(grid.time + 3)
    assert tl.getRedYellowGreenState("A0") == yellow_state(a0.phases[second].state, a0.phases[first].state)
    assert grid.stats.held_for_min_green == 1 and grid.stats.switches == 2


def test_an_illegal_phase_is_refused_with_the_field_and_the_twin_runs_on(grid: Twin) -> None:
    a0 = grid.tls["A0"]
    for bad in (1, 99, -1, "2", None):
        with pytest.raises(InvalidInput) as caught:
            grid.set_phase("A0", bad)  # type: ignore[arg-type]
        assert caught.value.errors[0].field == "phases.A0"
    assert "legal green phases: 0, 2, 4" in str(caught.value.detail) or "integer" in str(caught.value.detail)
    with pytest.raises(InvalidInput) as caught:
        grid.set_phases({"A1": a0.green_phases[1], "nowhere": 0})
    assert caught.value.errors[0].field == "phases.nowhere"
    assert grid.observe(["A1"])["A1"].phase == a0.green_phases[0]  # checked all before applying any
    grid.advance(grid.time + 20)
    assert grid.time > grid.settings.begin  # type: ignore[operator]


def test_observations_cover_incoming_and_outgoing_lanes(grid: Twin) -> None:
    grid.advance(grid.time + 120)
    seen = grid.observe()
    assert set(seen) == set(grid.tls)
    a0 = seen["A0"]
    assert set(a0.incoming) == set(grid.tls["A0"].incoming) and set(a0.outgoing) == set(grid.tls["A0"].outgoing)
    assert sum(lane.vehicles for s in seen.values() for lane in s.incoming.values()) > 0
    assert all(0 <= lane.occupancy <= 100 and lane.halting <= lane.vehicles for lane in a0.incoming.values())


def test_one_twin_per_process(grid: Twin) -> None:
    with pytest.raises(Conflict):
        Twin().start(window("cologne1", 10))


def test_max_green_ends_a_green_that_lasted_too_long() -> None:
    settings = TwinSettings(max_green=30)
    with Twin().start(window("cologne1", 100), settings=settings, program="external") as twin:
        twin.advance(twin.time + 100)
        assert twin.stats.forced_by_max_green >= 2


def test_traci_fallback_runs_the_same_twin() -> None:
    with Twin().start(window("cologne1", 60), seed=1, settings=TwinSettings(backend="traci"),
                      program="external") as twin:
        assert twin.backend == "traci"
        light = twin.controlled[0]
        twin.set_phase(light, twin.tls[light].green_phases[1])
        twin.advance(twin.time + 30)
        trips = twin.finish()
    assert trips and all(t.delay >= 0 for t in trips)


class Stubborn(SignalController):
    """Never leaves its first green: the cross street starves and queues back to the entries."""

    manifest = ControllerManifest(slug="stubborn", title="Stubborn (test)")

    def decide(self, observations: Mapping[str, object]) -> dict[str, int]:
        return {tls: self.context.tls[tls].green_phases[0] for tls in observations}


def test_metrics_count_every_scheduled_vehicle_including_those_never_inserted() -> None:
    manifest = window("cologne1", 1200)
    result = run_episode(manifest, Stubborn, seed=1, rule=GridlockRule(stuck_after=300, min_stuck=10))
    assert result.vehicles == manifest.demand()
    assert result.never_inserted > 0 and result.arrived + result.never_inserted <= result.vehicles
    assert result.delay > 0 and result.trip_time >= result.delay * 0 and result.waiting_time >= 0
    assert result.gridlocked and result.stuck_at_end >= 10 and result.longest_standstill >= 300


def test_a_working_controller_on_the_same_window_is_not_gridlocked() -> None:
    manifest = window("cologne1", 1200)
    result = run_episode(manifest, "maxpressure", seed=1, rule=GridlockRule(stuck_after=300, min_stuck=10))
    assert not result.gridlocked and result.stuck_at_end == 0
    assert result.vehicles == manifest.demand() and result.arrived > 0.8 * result.vehicles
    assert 0 <= result.delay < 100 and result.mean_speed > 0 and result.queue >= 0
