"""The hub's background services (webhook delivery, command dispatch, system health), built per platform.

Each is a `PollingService`: a loop that looks for due work whenever it is woken (by the code that just
wrote that work, possibly from another thread) and at least every `background_poll_interval_s`. Due
times come from the platform clock, so tests move a frozen clock and wake the service instead of sleeping.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from typing import TYPE_CHECKING, TypeVar

import httpx

from citybrain import __version__

if TYPE_CHECKING:
    from citybrain.platform import BackgroundService, Platform

log = logging.getLogger(__name__)
S = TypeVar("S")


def backoff_delay(attempts: int, *, base_s: float, max_s: float, rng: random.Random | None = None) -> float:
    """Seconds to wait before the next try after `attempts` failed ones: exponential, capped, with "equal
    jitter" (half fixed, half random) so that many receivers failing together do not retry in lockstep.
    Never more than `base_s * 2**(attempts-1)` (capped), which tests rely on when they move the clock."""
    full = min(max_s, base_s * 2 ** max(0, attempts - 1))
    return full / 2 + (rng or random).uniform(0, full / 2)


class PollingService:
    """A background loop around `run_once`, woken early by `wake()` (safe from any thread)."""

    name = "polling"

    def __init__(self, platform: Platform) -> None:
        self.platform = platform
        self.interval_s = platform.settings.background_poll_interval_s
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wakeup: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    async def setup(self) -> None:
        """Acquire what the loop needs (HTTP clients, bus subscriptions); runs before the loop starts."""

    async def teardown(self) -> None:
        """Release what `setup` acquired."""

    async def run_once(self) -> bool:
        """Do one round of due work; True when more may be due right away."""
        raise NotImplementedError

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._wakeup = asyncio.Event()
        self._stopping = False
        await self.setup()
        self._task = asyncio.create_task(self._run(), name=self.name)

    async def stop(self) -> None:
        self._stopping = True
        if self._task is not None:
            self.wake()
            # A round in flight may be waiting on a slow receiver; anything it leaves claimed is
            # retried by whoever finds the lease expired, so cutting it short loses nothing.
            try:
                await asyncio.wait_for(asyncio.shield(self._task), timeout=2.0)
            except (TimeoutError, asyncio.CancelledError):
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await self._task
            self._task = None
        await self.teardown()

    def wake(self) -> None:
        """Look for due work now rather than at the next poll."""
        loop, event = self._loop, self._wakeup
        if loop is None or event is None or loop.is_closed():
            return
        try:
            loop.call_soon_threadsafe(event.set)
        except RuntimeError:  # the loop closed between the check and the call
            pass

    async def _run(self) -> None:
        assert self._wakeup is not None
        while not self._stopping:
            self._wakeup.clear()
            try:
                more = await self.run_once()
            except Exception:
                log.exception("%s: round failed", self.name)
                more = False
            if self._stopping:
                break
            if more:
                await asyncio.sleep(0)
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), timeout=self.interval_s)


class HttpPollingService(PollingService):
    """A polling service that talks HTTP to other systems through one pooled client."""

    follow_redirects = False

    def __init__(self, platform: Platform) -> None:
        super().__init__(platform)
        self.settings = platform.settings
        self.client: httpx.AsyncClient | None = None

    async def setup(self) -> None:
        self.client = httpx.AsyncClient(timeout=self.settings.webhook_timeout_s,
                                        follow_redirects=self.follow_redirects,
                                        headers={"User-Agent": f"CityBrain/{__version__}"})

    async def teardown(self) -> None:
        if self.client is not None:
            await self.client.aclose()
            self.client = None


def services_for(platform: Platform) -> list[BackgroundService]:
    from citybrain.disposal.runtime import Disposal
    from citybrain.governance.catalog import GovernanceRounds
    from citybrain.hotline.runtime import Hotline
    from citybrain.hub.commands.flows import CommandDispatcher, HealthChecker
    from citybrain.hub.subscriptions.flows import WebhookDelivery
    from citybrain.sensing.runtime import SensingRuntime
    from citybrain.traffic.live import LiveTraffic

    return [WebhookDelivery(platform), CommandDispatcher(platform), HealthChecker(platform), SensingRuntime(platform),
            Disposal(platform), Hotline(platform), LiveTraffic(platform), GovernanceRounds(platform)]


def find_service(platform: Platform, kind: type[S]) -> S | None:
    """The running service of a kind (to wake it after writing work for it); None before start."""
    return next((s for s in platform.services if isinstance(s, kind)), None)
