"""`create_app`: assembles routers, error handling, limits and metrics around one Platform."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from citybrain import __version__
from citybrain.api import problems
from citybrain.api.limits import BodySizeLimit
from citybrain.api.metrics import Metrics, MetricsMiddleware, metrics_endpoint
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


def create_app(platform: Platform, *, manage_lifecycle: bool = True) -> FastAPI:
    """Build the API around a platform. With `manage_lifecycle`, the app starts and stops the platform's
    bus and background services with the server."""

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        if manage_lifecycle:
            await platform.start()
        try:
            yield
        finally:
            if manage_lifecycle:
                await platform.stop()

    app = FastAPI(title="CityBrain", version=__version__, description=DESCRIPTION, lifespan=lifespan)
    app.state.platform = platform
    app.state.metrics = Metrics()
    problems.install(app)

    from citybrain.hub.entities.router import router as entities_router
    from citybrain.hub.entities.router import types_router
    from citybrain.hub.org.router import router as org_router

    for router in (entities_router, types_router, org_router, *_extra_routers()):
        app.include_router(router)

    @app.get("/health", tags=["operations"], summary="Liveness and the state of the store and bus")
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
        return {"status": "ok" if db_ok else "degraded", "version": __version__,
                "store": {"dialect": platform.dialect, "ok": db_ok}, "bus": platform.bus.describe,
                "org_units": len(platform.org_tree)}

    app.add_api_route("/metrics", metrics_endpoint, methods=["GET"], include_in_schema=False)
    app.add_middleware(BodySizeLimit, max_bytes=platform.settings.max_body_bytes)
    app.add_middleware(MetricsMiddleware, metrics=app.state.metrics)
    return app


def _extra_routers() -> list:
    """Routers of hub parts that register themselves (subscriptions, commands, systems)."""
    from citybrain.hub import routers

    return routers.extra()
