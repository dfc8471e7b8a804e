"""MaxPressure (Varaiya 2013): every decision, each light shows the green phase with the largest pressure.

The pressure of a phase is the sum, over the movements it gives green, of the queue on the movement's
incoming lane minus the queue on its outgoing lane (a queue is the lane's halting vehicles). Ties keep
the current phase, otherwise the lowest index wins. No memory, no cycle: it is the textbook baseline,
and it can starve a movement or lock a network that an upstream queue spills back into.
"""

from __future__ import annotations

from collections.abc import Mapping

from citybrain.traffic.controllers.base import ControllerManifest, SignalController, controllers
from citybrain.traffic.runtime import TlsObservation


@controllers.register("maxpressure")
class MaxPressure(SignalController):
    manifest = ControllerManifest(
        slug="maxpressure", title="MaxPressure",
        description="Green to the phase whose movements have the largest sum of incoming minus outgoing "
                    "halting vehicles; ties keep the current phase.",
        reference="Varaiya, Max pressure control of a network of signalized intersections, TR-C 2013")

    def decide(self, observations: Mapping[str, TlsObservation]) -> dict[str, int]:
        decisions = {}
        for tls_id, seen in observations.items():
            description = self.context.tls[tls_id]
            greens = description.green_phases
            if not greens:
                continue
            incoming, outgoing = seen.incoming, seen.outgoing

            def pressure(index: int) -> int:
                return sum(incoming[m.incoming].halting - outgoing[m.outgoing].halting
                           for m in description.phases[index].movements)

            decisions[tls_id] = max(greens, key=lambda index: (pressure(index), index == seen.phase, -index))
        return decisions
