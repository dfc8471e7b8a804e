"""/api/v1/catalogue: the district's event catalogue, read-only (writes arrive with authorization; until
then a city changes it with `citybrain catalogue import`)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Path, Query

from citybrain.api.deps import PageDep, PlatformDep
from citybrain.api.routing import PathRouter
from citybrain.core.errors import InvalidInput
from citybrain.disposal.catalogue import flows
from citybrain.disposal.catalogue.schemas import CategoryRead, EventTypePage, EventTypeRead
from citybrain.disposal.catalogue.spec import DEPARTMENT_SLUGS, Category, Level, LocalizedText

router = PathRouter(prefix="/api/v1/catalogue", tags=["catalogue"])


@router.get("", response_model=EventTypePage, summary="List event types")
async def list_event_types(
    platform: PlatformDep,
    page: PageDep,
    category: Annotated[Category | None, Query()] = None,
    department: Annotated[str | None, Query(max_length=32, description="Leads or assists")] = None,
    level: Annotated[Level | None, Query(description="Default handling level")] = None,
    q: Annotated[str | None, Query(max_length=100, description="Text in the code, names or keywords")] = None,
) -> EventTypePage:
    if department is not None and department not in DEPARTMENT_SLUGS:
        raise InvalidInput.at("department", f"unknown department {department!r}")
    catalogue = await platform.run(flows.load, platform)
    found = catalogue.search(category=category, department=department, level=level, text=q, after=page.cursor)
    items = [EventTypeRead.of(catalogue.entries[spec.code]) for spec in found[: page.limit]]
    return EventTypePage(items=items, next_cursor=items[-1].code if len(found) > page.limit else None)


@router.get("/categories", response_model=list[CategoryRead],
            summary="Categories, with how many types each has")
async def categories(platform: PlatformDep) -> list[CategoryRead]:
    catalogue = await platform.run(flows.load, platform)
    return [CategoryRead(slug=slug, name=LocalizedText(zh=zh, en=en), count=count)
            for slug, zh, en, count in catalogue.category_counts()]


@router.get("/{code}", response_model=EventTypeRead, summary="One event type")
async def get_event_type(
    platform: PlatformDep, code: Annotated[str, Path(max_length=32, description="e.g. XF-01-001")]
) -> EventTypeRead:
    catalogue = await platform.run(flows.load, platform)
    return EventTypeRead.of(catalogue.entry(code))
