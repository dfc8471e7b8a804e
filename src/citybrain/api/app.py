"""`create_app`: assembles routers, error handling, limits and metrics around one Platform."""

from __future__ import annotations

import gc
import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from citybrain import __version__
from citybrain.api import problems
from citybrain.api.headers import SecurityHeaders
from citybrain.api.limits import BodySizeLimit
from citybrain.api.metrics import Metrics, MetricsMiddleware, metrics_endpoint
from citybrain.api.ratelimit import RateLimiter
from citybrain.platform import Platform

log = logging.getLogger(__name__)

DESCRIPTION = """
The City Brain hub: one city data model (NGSI-LD normalized entities with GeoJSON), one API and one
event bus for every department system and device.

* **Errors** are RFC 9457 `application/problem+json`, with `errors: [{field, reason}]`.
* **Batches** (`/api/v1/entityOperations/*`) keep every good item and report each bad one with its
  index (status 207 when any item failed). At most 1,000 items per batch.
* **Pagination** everywhere: `limit` and the opaque `cursor` from the previous page's `next_cursor`
  (also sent as a `Link: rel="next"` header).
"""


def tune_garbage_collector() -> None:
    """Collect less often in a server process. A 1,000-entity batch allocates ~100k short-lived dicts,
    and with the default gen-0 threshold (700) the collector re-walked the long-lived heap (org tree,
    registries, modules) so often that it took a quarter of the batch's time. Objects alive at start-up
    are frozen out of collection; cyclic garbage is still collected, just in larger rounds."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)


def create_app(platform: Platform, *, manage_lifecycle: bool = True, dispose_on_shutdown: bool = False) -> FastAPI:
    """Build the API around a platform. With `manage_lifecycle`, the app starts and stops the platform's
    bus and background services with the server."""

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        if manage_lifecycle:
            await platform.start()
            tune_garbage_collector()
        try:
            yield
        finally:
            if manage_lifecycle:
                await platform.stop()
            if dispose_on_shutdown:
                platform.dispose()

    from fastapi import Depends

    from citybrain.api.deps import get_context
    from citybrain.governance.auth import Identities

    # who is calling is settled before every route, in one place (api.deps.get_context)
    app = FastAPI(title="CityBrain", version=__version__, description=DESCRIPTION, lifespan=lifespan,
                  dependencies=[Depends(get_context)])
    app.state.platform = platform
    app.state.identities = Identities(platform)
    app.state.rate_limiter = RateLimiter(platform.settings.rate_limit_per_s, platform.settings.rate_limit_burst)
    app.state.metrics = Metrics()
    problems.install(app)

    from citybrain.hub.entities.router import router as entities_router
    from citybrain.hub.entities.router import types_router
    from citybrain.hub.org.router import router as org_router

    for router in (entities_router, types_router, org_router, *_extra_routers()):
        app.include_router(router)

    @app.get("/health", tags=["operations"],
             summary="Liveness, the state of the store and bus, and which server process answered")
    async def health() -> dict[str, object]:
        def check_db() -> bool:
            import sqlalchemy as sa

            try:
                with platform.session() as session:
                    session.execute(sa.text("SELECT 1"))
                return True
            except Exception:
                log.exception("health: store unreachable")
                return False

        db_ok = await platform.run(check_db)
        bus_ok = platform.bus.connected
        ingest = _ingest_health(platform)
        ok = db_ok and bus_ok and all(v is not False for v in ingest.values())
        return {"status": "ok" if ok else "degraded", "version": __version__, "process": os.getpid(),
                "store": {"dialect": platform.dialect, "ok": db_ok}, "bus": platform.bus.describe,
                "bus_connected": bus_ok, "ingest": ingest,
                "org_units": len(platform.org_tree)}

    app.add_api_route("/metrics", metrics_endpoint, methods=["GET"], include_in_schema=False, tags=["operations"])
    from citybrain.governance.middleware import AuditMiddleware

    app.add_middleware(AuditMiddleware, platform=platform)  # innermost: it sees the matched route
    app.add_middleware(BodySizeLimit, max_bytes=platform.settings.max_body_bytes)
    if origins := platform.settings.allowed_origins():
        from starlette.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=origins, allow_methods=["*"],
                           allow_headers=["Authorization", "Content-Type", "X-API-Key", "X-Purpose"], max_age=600)
    app.add_middleware(SecurityHeaders)
    app.add_middleware(MetricsMiddleware, metrics=app.state.metrics)
    return app


def _ingest_health(platform: Platform) -> dict[str, bool]:
    """Whether the telemetry sources this process reads are connected (empty when it reads none)."""
    from citybrain.hub.background import find_service
    from citybrain.sensing.runtime import SensingRuntime

    sensing = find_service(platform, SensingRuntime)
    return sensing.source_health() if sensing is not None else {}


def _extra_routers() -> list:
    """Routers of hub parts that register themselves (subscriptions, commands, systems)."""
    from citybrain.hub import routers

    return routers.extra()


def app_from_environment() -> FastAPI:
    """The app of one server process, configured by CITYBRAIN_* variables: the factory behind
    `citybrain serve --workers N` (and `uvicorn --factory citybrain.api.app:app_from_environment`).
    The store must already be migrated; the process that spawns the workers does that once."""
    from citybrain.settings import Settings

    platform = Platform(Settings())
    platform.load_state()
    return create_app(platform, dispose_on_shutdown=True)
