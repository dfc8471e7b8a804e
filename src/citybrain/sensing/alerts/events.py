"""Bus events of the alert lifecycle; `alert` is the alert as the API returns it
(alerts.service.alert_view)."""

from __future__ import annotations

from typing import Any

from citybrain.core.events import Event


class AlertRaised(Event, frozen=True, kw_only=True):
    """A rule's subject went into alert (disposal opens a case from it)."""

    alert: dict[str, Any]


class AlertUpdated(Event, frozen=True, kw_only=True):
    """An open alert changed: raised again within its suppression window, acknowledged or assigned."""

    alert: dict[str, Any]


class AlertCleared(Event, frozen=True, kw_only=True):
    """A rule's subject came out of alert."""

    alert: dict[str, Any]
