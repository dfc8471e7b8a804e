"""Our guarded-pressure controller ("citybrain"): its rules on hand-made observations of one crossing, the
approach data the twin gives it, and a short episode where it beats fixed time without locking anything.
The contract test in test_controllers.py runs over it like over every registered controller."""

from __future__ import annotations

import pytest

from citybrain.traffic.controllers import ControlContext, controller, load_controllers
from citybrain.traffic.controllers.ours import GuardedPressure, GuardedPressureParameters, shipped_parameters
from citybrain.traffic.evaluate import GridlockRule, run_matrix
from citybrain.traffic.runtime import (
    ApproachState,
    LaneState,
    Movement,
    PhaseSpec,
    TlsDescription,
    TlsObservation,
    Twin,
)
from citybrain.traffic.scenarios import ScenarioManifest, scenario

NORTH, EAST = "north_0", "east_0"
SOUTH_OUT, WEST_OUT = "south_out_0", "west_out_0"
CROSSING = TlsDescription(
    id="X", program_id="0",
    phases=(PhaseSpec(0, "Gr", 30, (Movement(NORTH, SOUTH_OUT),)), PhaseSpec(1, "yr", 3, ()),
            PhaseSpec(2, "rG", 30, (Movement(EAST, WEST_OUT),)), PhaseSpec(3, "ry", 3, ())),
    links=((Movement(NORTH, SOUTH_OUT),), (Movement(EAST, WEST_OUT),)),
    incoming=(NORTH, EAST), outgoing=(SOUTH_OUT, WEST_OUT))
PARAMETERS = GuardedPressureParameters(reach=100, moving_weight=0.5, entry_weight=0.5, downstream_weight=1,
                                       spillback_occupancy=80, starvation=60, switch_margin=2,
                                       yellow_cost=0)


class Tuned(GuardedPressure):
    """The controller with parameters fixed for these tests, whatever the shipped ones are."""

    parameters = PARAMETERS


def crossing_controller() -> GuardedPressure:
    return Tuned(ControlContext("crossing", {"X": CROSSING}, 10.0, 3.0, 5.0))


def seen(time: float, phase: int, *, queues: dict[str, int],
         moving: dict[str, tuple[float, ...]] | None = None,
         jammed: tuple[str, ...] = ()) -> dict[str, TlsObservation]:
    """One observation of the crossing: halting vehicles per incoming lane, moving ones by distance."""
    moving = moving or {}

    def lane(halting: int) -> LaneState:
        return LaneState(halting, halting, min(100.0, halting * 10.0), 0.0 if halting else 13.9)

    outgoing = {name: LaneState(20, 20, 95.0, 0.0) if name in jammed else LaneState(0, 1, 5.0, 13.0)
                for name in CROSSING.outgoing}
    return {"X": TlsObservation(
        time, phase, 10.0, False, {name: lane(queues.get(name, 0)) for name in CROSSING.incoming}, outgoing,
        {name: ApproachState(queues.get(name, 0), moving.get(name, ())) for name in CROSSING.incoming})}


def test_it_is_registered_with_the_shipped_parameters() -> None:
    assert controller("citybrain") is GuardedPressure and "citybrain" in load_controllers()
    assert GuardedPressure.manifest.program == "external"
    assert isinstance(shipped_parameters(), GuardedPressureParameters)


def test_the_larger_queue_wins_but_only_by_more_than_the_switch_margin() -> None:
    control = crossing_controller()
    assert control.decide(seen(0, 0, queues={NORTH: 3, EAST: 4})) == {"X": 0}  # 4 < 3 + 2: no yellow for that
    assert control.decide(seen(10, 0, queues={NORTH: 3, EAST: 6})) == {"X": 2}


def test_a_switch_pays_for_its_yellow_out_of_the_next_interval() -> None:
    class CountsYellow(GuardedPressure):
        parameters = PARAMETERS.model_copy(update={"yellow_cost": 1.0})

    control = CountsYellow(ControlContext("crossing", {"X": CROSSING}, 10.0, 3.0, 5.0))
    assert control.decide(seen(0, 0, queues={NORTH: 3, EAST: 6})) == {"X": 0}  # 6 × 7/10 < 3 + 2
    assert control.decide(seen(10, 0, queues={NORTH: 3, EAST: 8})) == {"X": 2}  # 8 × 7/10 ≥ 3 + 2


def test_moving_vehicles_within_reach_count_and_those_beyond_do_not() -> None:
    control = crossing_controller()
    near = {NORTH: (5.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 80.0)}  # 8 × 0.5 = 4 vehicles of demand
    assert control.decide(seen(0, 2, queues={EAST: 1}, moving=near)) == {"X": 0}
    far = {NORTH: (150.0, 160.0, 170.0, 180.0, 190.0, 200.0, 210.0, 220.0)}
    assert control.decide(seen(10, 2, queues={EAST: 1}, moving=far)) == {"X": 2}


def test_a_phase_that_keeps_the_first_vehicle_red_moves_nothing_on_its_lane() -> None:
    left, straight = Movement(NORTH, WEST_OUT), Movement(NORTH, SOUTH_OUT)
    shared = TlsDescription(
        id="X", program_id="0",
        phases=(PhaseSpec(0, "Gr", 30, (straight,)), PhaseSpec(1, "yr", 3, ()), PhaseSpec(2, "rG", 30, (left,)),
                PhaseSpec(3, "ry", 3, ())),
        links=((straight,), (left,)), incoming=(NORTH,), outgoing=(SOUTH_OUT, WEST_OUT))

    class MindsTheFront(GuardedPressure):
        parameters = PARAMETERS.model_copy(update={"head_of_line": 0.0})

    control = MindsTheFront(ControlContext("shared", {"X": shared}, 10.0, 3.0, 5.0))
    lane = LaneState(5, 5, 40.0, 0.0)
    outgoing = {name: LaneState(0, 0, 0.0, 13.9) for name in shared.outgoing}

    def front_heads_for(target: str) -> dict[str, TlsObservation]:
        return {"X": TlsObservation(0, 0, 10.0, False, {NORTH: lane}, outgoing,
                                    {NORTH: ApproachState(5, (), 0.0, target)})}

    assert control.decide(front_heads_for(WEST_OUT)) == {"X": 2}  # the straight green would move nothing
    assert control.decide(front_heads_for(SOUTH_OUT)) == {"X": 0}


def test_no_green_goes_to_a_movement_whose_outgoing_lane_is_jammed() -> None:
    control = crossing_controller()
    assert control.decide(seen(0, 0, queues={NORTH: 1, EAST: 15}, jammed=(WEST_OUT,))) == {"X": 0}
    assert control.decide(seen(10, 0, queues={NORTH: 1, EAST: 15})) == {"X": 2}  # jam cleared


LINK, SIDE, BEYOND = "link_0", "side_0", "beyond_0"  # LINK: 12 m from light X to light Y
TO_LINK, TO_WEST = Movement(NORTH, LINK), Movement(EAST, WEST_OUT)
OUT_OF_LINK, OUT_OF_SIDE = Movement(LINK, BEYOND), Movement(SIDE, BEYOND)
LIGHT_AFTER_LINK = TlsDescription(
    id="Y", program_id="0",
    phases=(PhaseSpec(0, "Gr", 30, (OUT_OF_LINK,)), PhaseSpec(1, "yr", 3, ()),
            PhaseSpec(2, "rG", 30, (OUT_OF_SIDE,)), PhaseSpec(3, "ry", 3, ())),
    links=((OUT_OF_LINK,), (OUT_OF_SIDE,)), incoming=(LINK, SIDE), outgoing=(BEYOND,),
    lane_lengths={LINK: 12.0, SIDE: 100.0, BEYOND: 100.0})
EMPTY = LaneState(0, 0, 0.0, 13.9)


def pair_controller(first_phase: tuple[Movement, ...]) -> GuardedPressure:
    """Light X (phase 0: `first_phase`; phase 2: east to west) feeding light Y through the 12 m link."""
    x = TlsDescription(
        id="X", program_id="0",
        phases=(PhaseSpec(0, "G" * len(first_phase) + "r" * (2 - len(first_phase)), 30, first_phase),
                PhaseSpec(1, "y" * len(first_phase) + "r" * (2 - len(first_phase)), 3, ()),
                PhaseSpec(2, "rG", 30, (TO_WEST,)), PhaseSpec(3, "ry", 3, ())),
        links=((TO_LINK,), (TO_WEST,)), incoming=(NORTH, EAST), outgoing=(LINK, WEST_OUT),
        lane_lengths={NORTH: 100.0, EAST: 100.0, LINK: 12.0, WEST_OUT: 100.0})
    return Tuned(ControlContext("pair", {"X": x, "Y": LIGHT_AFTER_LINK}, 10.0, 3.0, 5.0))


def y_seen(y_phase: int) -> TlsObservation:
    return TlsObservation(0, y_phase, 10.0, False, {LINK: EMPTY, SIDE: EMPTY}, {BEYOND: EMPTY},
                          {LINK: ApproachState(0, ()), SIDE: ApproachState(0, ())})


def test_no_green_sends_cars_into_a_short_link_while_the_light_at_its_end_is_red() -> None:
    control = pair_controller((TO_LINK,))

    def both(y_phase: int) -> dict[str, TlsObservation]:
        x_seen = TlsObservation(0, 2, 10.0, False, {NORTH: LaneState(10, 10, 60.0, 0.0), EAST: EMPTY},
                                {LINK: EMPTY, WEST_OUT: EMPTY},
                                {NORTH: ApproachState(10, ()), EAST: ApproachState(0, ())})
        return {"X": x_seen, "Y": y_seen(y_phase)}

    assert control.decide(both(y_phase=2))["X"] == 2  # Y is red for the link: the queue waits at X
    assert control.decide(both(y_phase=0))["X"] == 0


def test_no_first_vehicle_is_let_into_the_junction_towards_a_blocked_short_link() -> None:
    # X's phase 0 gives green to the north lane (into a 12 m link to light Y) and to the east lane; phase 2
    # to the east lane alone. With Y red for the link, the north lane's movement carries nothing, so both
    # phases weigh the same, but phase 0 would still let the north lane's first car into X's box, where it
    # would stop across the other movements: X must show phase 2
    def both(y_phase: int, north_heads_for: str = LINK) -> dict[str, TlsObservation]:
        x_seen = TlsObservation(
            0, 0, 10.0, False, {NORTH: LaneState(3, 3, 20.0, 0.0), EAST: LaneState(10, 10, 60.0, 0.0)},
            {LINK: EMPTY, WEST_OUT: EMPTY},
            {NORTH: ApproachState(3, (), 0.0, north_heads_for), EAST: ApproachState(10, (), 0.0, WEST_OUT)})
        return {"X": x_seen, "Y": y_seen(y_phase)}

    def control() -> GuardedPressure:
        return pair_controller((TO_LINK, TO_WEST))

    assert control().decide(both(y_phase=2))["X"] == 2  # the link is blocked: keep its first car out
    assert control().decide(both(y_phase=0))["X"] == 0  # Y lets the link out: serve both lanes
    assert control().decide(both(y_phase=2, north_heads_for=""))["X"] == 0  # nobody at the line: no box risk


def queued(halting: int) -> LaneState:
    return LaneState(halting, halting, min(100.0, halting * 10.0), 0.0 if halting else 13.9)


def x_looking(phase: int, north: int, north_heads_for: str = LINK) -> TlsObservation:
    """Light X showing `phase`, with `north` cars at the north stop line (the first heading for the link)."""
    return TlsObservation(0, phase, 10.0, False, {NORTH: queued(north), EAST: EMPTY}, {LINK: EMPTY, WEST_OUT: EMPTY},
                          {NORTH: ApproachState(north, (), 0.0, north_heads_for if north else ""),
                           EAST: ApproachState(0, ())})


def y_looking(phase: int, link: int, side: int) -> TlsObservation:
    return TlsObservation(0, phase, 10.0, False, {LINK: queued(link), SIDE: queued(side)}, {BEYOND: EMPTY},
                          {LINK: ApproachState(link, (), 0.0, BEYOND if link else ""),
                           SIDE: ApproachState(side, (), 0.0, BEYOND if side else "")})


def test_a_light_decided_earlier_in_the_round_counts_with_the_phase_it_will_show() -> None:
    # Y decides first and turns green for the link (the queue behind it, at X, is its demand); X, seeing
    # the phase Y will show rather than the one it shows, lets its queue into the link in the same round
    control = pair_controller((TO_LINK,))
    assert control.decide({"Y": y_looking(2, link=10, side=0), "X": x_looking(2, north=10)}) == {"Y": 0, "X": 0}
    # decided the other way round, X sees Y still red for the link and keeps its queue out of it
    control = pair_controller((TO_LINK,))
    assert control.decide({"X": x_looking(2, north=10), "Y": y_looking(2, link=10, side=0)}) == {"X": 2, "Y": 0}


def test_a_light_lets_out_with_a_protected_green_the_short_link_its_neighbour_now_feeds() -> None:
    # X keeps sending its north queue into the 12 m link; Y's side street outweighs the link, but a phase
    # that holds the link red would leave the cars X sends standing in X's junction: Y shows the link's green
    control = pair_controller((TO_LINK,))
    assert control.decide({"X": x_looking(0, north=10), "Y": y_looking(0, link=0, side=10)}) == {"X": 0, "Y": 0}
    # nobody at X's stop line heads for the link: Y serves its side street
    control = pair_controller((TO_LINK,))
    assert control.decide({"X": x_looking(0, north=10, north_heads_for=""),
                           "Y": y_looking(0, link=0, side=10)}) == {"X": 0, "Y": 2}


def test_a_vehicle_standing_in_the_junction_past_the_patience_makes_the_light_change_phase() -> None:
    class Patient(GuardedPressure):
        parameters = PARAMETERS.model_copy(update={"box_patience": 20.0})

    def looking(box_standing: float) -> dict[str, TlsObservation]:
        observed = seen(0, 0, queues={NORTH: 12, EAST: 2})["X"]
        return {"X": TlsObservation(observed.time, observed.phase, observed.time_in_phase, False,
                                    observed.incoming, observed.outgoing, observed.approaches,
                                    box_standing=box_standing)}

    control = Patient(ControlContext("crossing", {"X": CROSSING}, 10.0, 3.0, 5.0))
    assert control.decide(looking(box_standing=19.0)) == {"X": 0}  # the north queue outweighs the east
    # a turner has stood 25 s in the box with nothing ahead: what phase 0 shows is not clearing it
    assert control.decide(looking(box_standing=25.0)) == {"X": 2}


def test_a_queue_kept_red_past_the_starvation_time_gets_green_whatever_the_pressure() -> None:
    control = crossing_controller()
    chosen = []
    for second in range(0, 120, 10):
        chosen.append(control.decide(seen(second, 0, queues={NORTH: 30, EAST: 1}))["X"])
    assert chosen[:6] == [0] * 6  # the single car on the side street waits ...
    assert chosen[6] == 2  # ... until it has waited 60 s


def window(name: str, seconds: float) -> ScenarioManifest:
    manifest = scenario(name)
    return manifest.model_copy(update={"end": manifest.begin + seconds})


def test_a_signal_index_shared_by_several_connections_describes_all_of_them() -> None:
    # ingolstadt21's light 243641585 gives one index to a lane's straight movement into the 12 m link
    # towards gneJ257 and to its right turn: the link is one of the light's exits and the phase serves it
    with Twin().start(window("ingolstadt21", 60), seed=1, program="external") as twin:
        light = twin.tls["243641585"]
        shared = [group for group in light.links if len({m.outgoing for m in group}) > 1]
        assert shared
        assert {"-174800513_1", "-174800513_2"} <= set(light.outgoing)
        for phase in light.phases:
            lit = {m for i, c in enumerate(phase.state) if c in "Gg" for m in light.links[i]}
            assert set(phase.movements) == lit


def test_the_twin_shows_each_approach_with_the_lanes_feeding_short_stop_lines() -> None:
    with Twin().start(window("ingolstadt7", 600), seed=1, program="external") as twin:
        descriptions = twin.tls.values()
        assert all(set(d.lane_lengths) >= {*d.incoming, *d.outgoing} for d in descriptions)
        short = [(d, lane) for d in descriptions for lane in d.incoming if d.lane_lengths[lane] < 30]
        assert short and any(d.feeders[lane] for d, lane in short)  # a 5 m approach is not the whole queue
        assert all(d.box_lanes and all(lane.startswith(":") for lane in d.box_lanes) for d in descriptions)
        twin.advance(twin.time + 600)
        for tls_id, observed in twin.observe().items():
            assert 0 <= observed.box_standing <= 600
            for lane, approach in observed.approaches.items():
                assert approach.halting >= observed.incoming[lane].halting
                assert list(approach.moving) == sorted(approach.moving)
                assert all(distance >= 0 for distance in approach.moving)
                assert approach.waiting_to_enter >= 0
                movements = {m.outgoing for group in twin.tls[tls_id].links for m in group if m.incoming == lane}
                assert approach.front_heads_for in movements | {""}
                assert bool(approach.front_heads_for) == bool(observed.incoming[lane].vehicles)


def test_a_feeder_shared_by_several_stop_lines_counts_once_over_all_of_them() -> None:
    # ingolstadt21 has three-lane stop lines fed by one lane upstream: summed over a light's approaches,
    # every standing vehicle on the light's lanes and feeders counts exactly once
    with Twin().start(window("ingolstadt21", 900), seed=1, program="external") as twin:
        shared = [d for d in twin.tls.values()
                  if len({f for chain in d.feeders.values() for f, _ in chain})
                  < sum(len(chain) for chain in d.feeders.values())]
        assert shared, "expected lights whose stop lines share feeders"
        twin.advance(twin.time + 900)
        observed = twin.observe()
        checked = 0
        for description in shared:
            # (a stop line of the light may also feed another of its stop lines: it counts as both)
            feeders = {f for chain in description.feeders.values() for f, _ in chain}
            lanes = [*description.incoming, *feeders]
            standing = twin.lane_states(lanes)
            expected = sum(standing[lane].halting for lane in lanes)
            counted = sum(a.halting for a in observed[description.id].approaches.values())
            assert counted == pytest.approx(expected)
            moving = sum(a.moving_within(float("inf")) for a in observed[description.id].approaches.values())
            assert moving == pytest.approx(sum(standing[lane].vehicles - standing[lane].halting for lane in lanes))
            checked += expected > 0
        assert checked, "no queue to count: the window is too short to test anything"


@pytest.mark.parametrize("name", ["cologne8"])
def test_it_beats_fixed_time_on_a_short_episode_without_a_lock(name: str) -> None:
    manifest = window(name, 1200)
    fixed, ours = run_matrix([manifest], ["fixed", "citybrain"], [1], workers=2,
                             rule=GridlockRule(stuck_after=300, min_stuck=1))
    assert not ours.gridlocked and ours.stuck_at_end == 0
    assert ours.vehicles == fixed.vehicles == manifest.demand()
    assert ours.delay < fixed.delay
