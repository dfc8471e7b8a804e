"""The network's own fixed-time programs: the twin leaves the lights alone."""

from __future__ import annotations

from citybrain.traffic.controllers.base import ControllerManifest, SignalController, controllers


@controllers.register("fixed")
class FixedTime(SignalController):
    manifest = ControllerManifest(
        slug="fixed", title="Fixed time (the network's programs)", program="static",
        description="Every light runs the static program stored in the network file, yellows included.")
