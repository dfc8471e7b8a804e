"""The routers beyond entities, types and the org tree (hub parts and capabilities); each adds its router
here."""

from __future__ import annotations

from fastapi import APIRouter


def extra() -> list[APIRouter]:
    from citybrain.disposal.catalogue.router import router as catalogue_router
    from citybrain.disposal.router import router as cases_router
    from citybrain.disposal.router import supervision_router
    from citybrain.governance.auth_router import router as auth_router
    from citybrain.governance.catalog_router import router as catalog_data_router
    from citybrain.governance.router import router as audit_router
    from citybrain.governance.sharing_router import router as sharing_router
    from citybrain.hotline.open311 import router as open311_router
    from citybrain.hotline.router import router as hotline_router
    from citybrain.hub.commands.router import commands_router, systems_router
    from citybrain.hub.subscriptions.router import router as subscriptions_router
    from citybrain.sensing.router import router as sensing_router
    from citybrain.traffic.router import router as traffic_router

    return [subscriptions_router, systems_router, commands_router, sensing_router, catalogue_router, cases_router,
            supervision_router, hotline_router, open311_router, traffic_router, audit_router,
            auth_router, catalog_data_router, sharing_router]
