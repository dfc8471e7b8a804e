"""The running disposal capability of one process: the catalogue, the routing rules and the working
calendar in memory; the SLA timer scan; and the intake of sensing alerts from the bus."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

import anyio

from citybrain.core.context import Context
from citybrain.core.errors import InvalidInput
from citybrain.disposal import flows, service
from citybrain.disposal.calendar import WorkingCalendar
from citybrain.disposal.catalogue.service import Catalogue, CatalogueEntry
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
        self._given_catalogue = (Catalogue(CatalogueEntry(spec, "given") for spec in catalogue)
                                 if catalogue is not None else None)
        self.catalogue = self._given_catalogue or Catalogue([])
        self.specs: dict[str, EventTypeSpec] = {}
        self.calendar = calendar or WorkingCalendar()
        self._router = Router(RoutingRules(), platform.org_tree)
        self._unsubscribers: list[Any] = []
        self._supervised_at: datetime | None = None
        self.fired = 0
        self.load()

    # ------------------------------------------------------------------ state

    def load(self) -> None:
        """(Re)read the catalogue and the routing rules in force."""
        self._refresh_catalogue()
        with self.platform.session() as session:
            version, rules = service.routing_rules(session)
        self._router = Router(RoutingRules.model_validate(rules), self.platform.org_tree, version=version)

    @property
    def router(self) -> Router:
        """The routes in force, over the org tree in force (a district import replaces the tree)."""
        if self._router.tree is not self.platform.org_tree:
            self._router = Router(self._router.rules, self.platform.org_tree, version=self._router.version)
        return self._router

    def _refresh_catalogue(self) -> None:
        """The store's catalogue, rebuilt only when it changed (one cheap read otherwise): a `citybrain
        catalogue import` reaches running servers within a poll."""
        if self._given_catalogue is not None:
            catalogue = self._given_catalogue
        else:
            from citybrain.disposal.catalogue import flows as catalogue_flows

            catalogue = catalogue_flows.load(self.platform)
        if catalogue is not self.catalogue or not self.specs:
            self.catalogue = catalogue
            self.specs = {spec.code: spec for spec in catalogue}

    def event_type(self, code: str, *, field: str) -> EventTypeSpec:
        spec = self.specs.get(code)
        if spec is None:
            raise InvalidInput.at(field, f"unknown event type {code!r} (see /api/v1/catalogue)")
        return spec

    def for_sensing(self, device_type: str, rule: str) -> EventTypeSpec | None:
        return self.catalogue.for_sensing(device_type, rule)

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
        """Fire the SLA timers that are due: warnings first, then breaches (with escalation); look for
        recurring problems when their interval has passed."""
        await self.platform.run(self._refresh_catalogue)
        now = self.platform.clock.now()
        await self._supervise(now)

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

    async def _supervise(self, now: datetime) -> None:
        settings = self.platform.settings
        if self._supervised_at is not None and (now - self._supervised_at).total_seconds() < settings.supervision_interval_s:
            return
        self._supervised_at = now
        from citybrain.disposal import supervision

        try:
            opened = await self.platform.run(supervision.open_recurring_tasks, self.platform, self,
                                             window_days=settings.recurring_window_days,
                                             min_cases=settings.recurring_min_cases)
        except Exception:
            log.exception("looking for recurring problems failed")
            return
        if opened:
            log.info("supervision: %d recurring problem(s) found, tasks opened", len(opened))
            await self.platform.bus.publish(*supervision.opened_events(opened, INTAKE_CONTEXT))

    # ------------------------------------------------------------------ sensing intake

    async def _on_alert(self, event: Any) -> None:
        from citybrain.disposal import intake

        outcome = await self.platform.run(intake.case_from_alert, self.platform, self, event.alert,
                                          ctx=event.context.child(actor=INTAKE_CONTEXT.actor))
        if outcome is not None and outcome.events:
            await self.platform.bus.publish(*outcome.events)

