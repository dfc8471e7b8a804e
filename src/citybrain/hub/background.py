"""The hub's background services (webhook delivery, command dispatch, system health), built per platform."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from citybrain.platform import BackgroundService, Platform


def services_for(platform: Platform) -> list[BackgroundService]:
    return []
