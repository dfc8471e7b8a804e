"""One contract for every registered signal controller, on the first 300 s of grid4x4: a deciding
controller only ever names green phases, and the lights it drives show a yellow of exactly the yellow
time between two different greens and no green shorter than min green; a SUMO-driven one runs the
program it declares. Plus: illegal choices are clear errors, also from a worker process."""

from __future__ import annotations

from collections.abc import Mapping

import pytest

from citybrain.core.errors import InvalidInput, NotFound
from citybrain.traffic.controllers import ControlContext, ControllerManifest, SignalController, controller
from citybrain.traffic.controllers import load_controllers
from citybrain.traffic.evaluate import run_episode, run_matrix
from citybrain.traffic.runtime import ACTUATED_PROGRAM_ID, Twin, TwinSettings, yellow_state
from citybrain.traffic.scenarios import ScenarioManifest, scenario

SECONDS = 300


def grid_window() -> ScenarioManifest:
    return scenario("grid4x4").model_copy(update={"end": SECONDS})


def test_the_built_in_controllers_are_registered() -> None:
    assert {"fixed", "actuated", "maxpressure"} <= set(load_controllers())


@pytest.mark.parametrize("slug", list(load_controllers()))
def test_controller_contract(slug: str) -> None:
    cls = controller(slug)
    manifest = cls.manifest
    assert manifest.slug == slug
    settings = TwinSettings(min_green=5)
    with Twin().start(grid_window(), seed=1, settings=settings, program=manifest.program) as twin:
        lights = twin.controlled if manifest.program == "external" else tuple(twin.tls)
        instance = cls(ControlContext("grid4x4", {t: twin.tls[t] for t in lights}, 10.0, 3.0, 5.0))
        if manifest.program != "external":
            expected = ACTUATED_PROGRAM_ID if manifest.program == "actuated" else "0"
            assert {twin.sim.trafficlight.getProgram(t) for t in lights} == {expected}  # type: ignore[union-attr]
            twin.advance(twin.end_time)
            assert twin.finish()
            return
        shown: dict[str, list[str]] = {t: [] for t in lights}
        while not twin.done:
            decisions = instance.decide(twin.observe(lights))
            assert isinstance(decisions, Mapping)
            for tls_id, phase in decisions.items():
                assert phase in twin.tls[tls_id].green_phases, (tls_id, phase)
            twin.set_phases(decisions)
            for _ in range(10):
                for tls_id in lights:
                    shown[tls_id].append(twin.sim.trafficlight.getRedYellowGreenState(tls_id))  # type: ignore[union-attr]
                twin.step()
    for tls_id, states in shown.items():
        greens = {twin.tls[tls_id].phases[i].state for i in twin.tls[tls_id].green_phases}
        runs: list[tuple[str, int]] = []
        for state in states:
            if runs and runs[-1][0] == state:
                runs[-1] = (state, runs[-1][1] + 1)
            else:
                runs.append((state, 1))
        for position, (state, length) in enumerate(runs):
            last = position == len(runs) - 1
            if state in greens:
                assert last or length >= 5, (tls_id, state, length)  # min green
                continue
            # anything else is the yellow between the greens around it, shown for exactly 3 s
            assert 0 < position and runs[position - 1][0] in greens, (tls_id, state)
            if not last:
                assert state == yellow_state(runs[position - 1][0], runs[position + 1][0]), (tls_id, state)
                assert length == 3, (tls_id, state, length)
        assert len(runs) > 1 or slug != "maxpressure"


class ChoosesYellow(SignalController):
    """Names the yellow after the first green: always illegal."""

    manifest = ControllerManifest(slug="chooses-yellow", title="Chooses yellow (test)")

    def decide(self, observations: Mapping[str, object]) -> dict[str, int]:
        return {tls: self.context.tls[tls].green_phases[0] + 1 for tls in observations}


def test_an_illegal_choice_fails_the_episode_with_the_light_and_the_legal_phases() -> None:
    with pytest.raises(InvalidInput) as caught:
        run_episode(grid_window(), ChoosesYellow, seed=1)
    error = caught.value.errors[0]
    assert error.field.startswith("phases.") and "legal green phases: 0, 2, 4, 6" in error.reason
    assert "chooses-yellow" in caught.value.detail


def test_unknown_controller_is_not_found() -> None:
    with pytest.raises(NotFound) as caught:
        controller("clairvoyant")
    assert "maxpressure" in caught.value.detail


def test_worker_processes_run_episodes_and_bring_back_errors() -> None:
    short = scenario("cologne1").model_copy(update={"end": 25200 + 600})
    seen = []
    results = run_matrix([short], ["fixed", "maxpressure"], [1], workers=2, progress=seen.append)
    assert [r.controller for r in results] == ["fixed", "maxpressure"] and len(seen) == 2
    assert all(r.vehicles == short.demand() and r.delay >= 0 and not r.gridlocked for r in results)
    with pytest.raises(InvalidInput) as caught:
        run_matrix([short], [ChoosesYellow], [1], workers=1)
    assert caught.value.errors[0].field.startswith("phases.")


def test_an_episode_gives_the_same_result_whatever_ran_before_it_in_the_matrix() -> None:
    # libsumo keeps state from one simulation to the next in a process: on one worker, our controller's
    # cologne1 episode after fixed time and actuated ran 18.2 s instead of 17.5 s until each episode got
    # its own process
    after_others = run_matrix(["cologne1"], ["fixed", "actuated", "citybrain"], [1], workers=1)
    alone = run_matrix(["cologne1"], ["citybrain"], [1], workers=1)
    assert after_others[-1].controller == "citybrain"
    assert after_others[-1].delay == alone[0].delay
    assert after_others[-1].arrived == alone[0].arrived
