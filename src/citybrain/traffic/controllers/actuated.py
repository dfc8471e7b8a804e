"""SUMO's gap-based actuated control, built by the twin from the network's static programs."""

from __future__ import annotations

from citybrain.traffic.controllers.base import ControllerManifest, SignalController, controllers


@controllers.register("actuated")
class Actuated(SignalController):
    manifest = ControllerManifest(
        slug="actuated", title="SUMO actuated", program="actuated",
        description="The network's phases run as SUMO 'actuated' programs: a green is extended while its "
                    "detectors see vehicles closer than the max gap, within the phase's minDur/maxDur "
                    "(5/50 s where the network gives none); SUMO places the detectors.",
        reference="https://sumo.dlr.de/docs/Simulation/Traffic_Lights.html#actuated_traffic_lights")
