"""Signal controllers as plug-ins: the networks' fixed-time programs, SUMO's actuated control, MaxPressure,
our guarded pressure controller, and whatever else registers in `controllers` (see `base`)."""

from citybrain.traffic.controllers.base import (
    ControlContext,
    ControllerManifest,
    SignalController,
    controller,
    controllers,
    load_controllers,
)

# Registers "citybrain", our guarded-pressure controller (base.BUILTIN_MODULES lists the others).
from citybrain.traffic.controllers import ours  # noqa: E402, F401, I001

__all__ = ["ControlContext", "ControllerManifest", "SignalController", "controller", "controllers",
           "load_controllers"]
