"""Alerts out over MQTT: every alert event the bus carries is published to
`city/{district}/alerts/{severity}/{device_type}/{rule_id}` (QoS 1, JSON: the alert as the API shows it,
with `event` = raised | updated | cleared), so field systems and dashboards that speak MQTT hear them.

It takes its events from the bus with a consumer group, so with several ingest workers on NATS each alert
is published once."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import gmqtt
import orjson

from citybrain.core.bus import Bus
from citybrain.sensing.alerts.events import AlertCleared, AlertRaised, AlertUpdated
from citybrain.sensing.ingest.mqtt import parse_broker_url

log = logging.getLogger(__name__)
EVENT_NAMES = {AlertRaised: "raised", AlertUpdated: "updated", AlertCleared: "cleared"}


def alert_topic(district: str, alert: dict[str, Any]) -> str:
    return f"city/{district}/alerts/{alert['severity']}/{alert['deviceType']}/{alert['ruleId']}"


class AlertPublisher:
    """Publishes alert events to a broker; gmqtt reconnects by itself and resends unacknowledged QoS 1
    messages, and events that arrive while it is away wait in its queue."""

    def __init__(self, url: str, bus: Bus, *, district: str, client_id: str) -> None:
        self.address = parse_broker_url(url)
        self.bus = bus
        self.district = district
        self.client = gmqtt.Client(client_id, clean_session=True)
        if self.address.username:
            self.client.set_auth_credentials(self.address.username, self.address.password)
        self._unsubscribers: list[Any] = []
        self.published = 0

    async def start(self) -> None:
        self.client.set_config({"reconnect_retries": -1, "reconnect_delay": 2})
        try:
            await asyncio.wait_for(
                self.client.connect(self.address.host, self.address.port, ssl=self.address.tls, keepalive=60),
                timeout=10,
            )
        except (TimeoutError, OSError) as exc:
            # The platform still starts; gmqtt keeps trying and the first publishes wait for it.
            log.warning("alert publisher: broker %s not reachable yet (%s)", self.address.url, exc)
        for kind in EVENT_NAMES:
            self._unsubscribers.append(await self.bus.subscribe(kind, self._publish, group="alert-mqtt"))

    async def stop(self) -> None:
        for unsubscribe in self._unsubscribers:
            await unsubscribe()
        self._unsubscribers.clear()
        try:
            await asyncio.wait_for(self.client.disconnect(), timeout=5)
        except (TimeoutError, OSError, AttributeError):
            pass

    async def _publish(self, event: AlertRaised | AlertUpdated | AlertCleared) -> None:
        payload = {"event": EVENT_NAMES[type(event)], **event.alert}
        self.client.publish(alert_topic(self.district, event.alert), orjson.dumps(payload), qos=1)
        self.published += 1
