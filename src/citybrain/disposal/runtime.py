"""The running disposal capability of one process: the catalogue, the routing rules and the working
calendar in memory; the SLA timer scan; and the intake of sensing alerts from the bus."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import anyio

from citybrain.core.context import Context
from citybrain.core.errors import InvalidInput
from citybrain.disposal import flows, service
from citybrain.disposal.calendar import WorkingCalendar
from citybrain.disposal.catalogue.spec import EventTypeSpec
from citybrain.disposal.events import RoutingRulesChanged
from citybrain.disposal.routing import Router, RoutingRules
from citybrain.hub.background import PollingService

if TYPE_CHECKING:
    from citybrain.core.events import Event
    from citybrain.platform import Platform

log = logging.getLogger(__name__)
TIMER_BATCH = 500
INTAKE_CONTEXT = Context(id="00000000-0000-7000-8000-0000000d15b0", actor="system:disposal")


class Disposal(PollingService):
    """Background service and the flows' view of the catalogue, the routes and the calendar."""

    name = "disposal"

    def __init__(self, platform: Platform, *, catalogue: Sequence[EventTypeSpec] | None = None,
                 calendar: WorkingCalendar | None = None) -> None:
        super().__init__(platform)
        self._given_catalogue = catalogue
        self.specs: dict[str, EventTypeSpec] = {}
        self._by_sensing: dict[tuple[str, str], EventTypeSpec] = {}
        self.calendar = calendar or WorkingCalendar()
        self.router = Router(RoutingRules(), platform.org_tree)
        self._unsubscribers: list[Any] = []
        self.fired = 0
        self.load()

    # ------------------------------------------------------------------ state

    def load(self) -> None:
        """(Re)read the catalogue and the routing rules in force."""
        specs = list(self._given_catalogue) if self._given_catalogue is not None else load_catalogue(self.platform)
        self.specs = {spec.code: spec for spec in specs}
        self._by_sensing = {(t.device_type, t.rule): spec for spec in specs for t in spec.sensing}
        with self.platform.session() as session:
            version, rules = service.routing_rules(session)
        self.router = Router(RoutingRules.model_validate(rules), self.platform.org_tree, version=version)

    def event_type(self, code: str, *, field: str) -> EventTypeSpec:
        spec = self.specs.get(code)
        if spec is None:
            raise InvalidInput.at(field, f"unknown event type {code!r} (see /api/v1/catalogue)")
        return spec

    def for_sensing(self, device_type: str, rule: str) -> EventTypeSpec | None:
        return self._by_sensing.get((device_type, rule))

    # ------------------------------------------------------------------ lifecycle

    async def setup(self) -> None:
        from citybrain.sensing.alerts.events import AlertRaised

        bus = self.platform.bus
        # A group: with several processes on NATS, each alert opens its case once.
        self._unsubscribers.append(await bus.subscribe(AlertRaised, self._on_alert, group="disposal-intake"))
        self._unsubscribers.append(await bus.subscribe(RoutingRulesChanged, self._on_rules))

    async def teardown(self) -> None:
        for unsubscribe in self._unsubscribers:
            await unsubscribe()
        self._unsubscribers.clear()

    async def _on_rules(self, _event: RoutingRulesChanged) -> None:
        await anyio.to_thread.run_sync(self.load)

    async def run_once(self) -> bool:
        """Fire the SLA timers that are due: warnings first, then breaches (with escalation)."""
        now = self.platform.clock.now()

        def due() -> tuple[list[tuple[str, int]], list[tuple[str, int]]]:
            with self.platform.session() as session:
                return (flows.due_warnings(session, now=now, limit=TIMER_BATCH),
                        flows.due_breaches(session, now=now, limit=TIMER_BATCH))

        warnings, breaches = await self.platform.run(due)
        events: list[Event] = []
        for case_id, version in [*warnings, *breaches]:
            try:
                events += await self.platform.run(flows.fire_timer, self.platform, self, case_id, version)
            except Exception:
                log.exception("SLA timer of case %s failed", case_id)
        self.fired += len(warnings) + len(breaches)
        if events:
            await self.platform.bus.publish(*events)
        return len(warnings) == TIMER_BATCH or len(breaches) == TIMER_BATCH

    # ------------------------------------------------------------------ sensing intake

    async def _on_alert(self, event: Any) -> None:
        from citybrain.disposal import intake

        outcome = await self.platform.run(intake.case_from_alert, self.platform, self, event.alert,
                                          ctx=event.context.child(actor=INTAKE_CONTEXT.actor))
        if outcome is not None and outcome.events:
            await self.platform.bus.publish(*outcome.events)


def load_catalogue(platform: Platform) -> list[EventTypeSpec]:
    """The event types in force: the store's catalogue (seeded from the scenarios)."""
    from citybrain.disposal.catalogue import service as catalogue_service

    return catalogue_service.load_catalogue(platform)
