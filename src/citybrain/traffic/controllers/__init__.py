"""Signal controllers as plug-ins: the networks' fixed-time programs, SUMO's actuated control, MaxPressure,
and whatever else registers in `controllers` (see `base`)."""

from citybrain.traffic.controllers.base import (
    ControlContext,
    ControllerManifest,
    SignalController,
    controller,
    controllers,
    load_controllers,
)

__all__ = ["ControlContext", "ControllerManifest", "SignalController", "controller", "controllers",
           "load_controllers"]
