"""Org tree routes."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import Path, Query

from citybrain.api.deps import PageDep, PlatformDep
from citybrain.api.routing import PathRouter
from citybrain.core.errors import NotFound
from citybrain.hub.org import service
from citybrain.hub.org.schemas import OrgSummary, OrgTreeNode, OrgUnitPage, OrgUnitRead

router = PathRouter(prefix="/api/v1/org", tags=["org tree"])
Code = Annotated[str, Path(max_length=64, description="Org unit code, e.g. 310115 or 310115004")]


@router.get("/units", response_model=OrgUnitPage, summary="List org units")
async def list_units(
    platform: PlatformDep,
    page: PageDep,
    parent: Annotated[str | None, Query(max_length=64, description="Only the children of this unit")] = None,
    under: Annotated[str | None, Query(max_length=64, description="Only this unit's subtree")] = None,
    kind: Annotated[Literal["district", "town", "village", "department"] | None, Query()] = None,
    name: Annotated[str | None, Query(max_length=100, description="Name contains")] = None,
) -> OrgUnitPage:
    def work() -> OrgUnitPage:
        with platform.session() as session:
            rows = service.list_units(session, parent=parent, kind=kind, name_contains=name, under=under,
                                      after=page.cursor, limit=page.limit + 1)
            items = [OrgUnitRead.model_validate(r) for r in rows[: page.limit]]
            return OrgUnitPage(items=items, next_cursor=items[-1].code if len(rows) > page.limit else None)

    return await platform.run(work)


@router.get("/units/{code}", response_model=OrgUnitRead, summary="One org unit")
async def get_unit(platform: PlatformDep, code: Code) -> OrgUnitRead:
    def work() -> OrgUnitRead:
        with platform.session() as session:
            return OrgUnitRead.model_validate(service.get_unit(session, code=code))

    return await platform.run(work)


@router.get("/units/{code}/summary", response_model=OrgSummary, summary="How many units of each kind lie under one")
async def summary(platform: PlatformDep, code: Code) -> OrgSummary:
    def work() -> OrgSummary:
        with platform.session() as session:
            unit = service.get_unit(session, code=code)
            counts = service.count_by_kind(session, under=code)
            counts[unit.kind] -= 1
            return OrgSummary(code=unit.code, name=unit.name, counts={k: v for k, v in counts.items() if v})

    return await platform.run(work)


@router.get("/tree/{code}", response_model=OrgTreeNode, summary="A subtree, to a given depth")
async def tree(platform: PlatformDep, code: Code, depth: Annotated[int, Query(ge=0, le=3)] = 1) -> OrgTreeNode:
    org = platform.org_tree
    if code not in org:
        raise NotFound(f"org unit {code!r} does not exist")

    def node(current: str, remaining: int) -> OrgTreeNode:
        unit = org.units[current]
        children = org.children.get(current, [])
        return OrgTreeNode(code=unit.code, name=unit.name, kind=unit.kind, child_count=len(children),
                           children=[node(c, remaining - 1) for c in children] if remaining > 0 else [])

    return node(code, depth)


@router.get("/roots", response_model=list[OrgUnitRead], summary="Top-level units (districts)")
async def roots(platform: PlatformDep) -> list[OrgUnitRead]:
    def work() -> list[OrgUnitRead]:
        with platform.session() as session:
            return [OrgUnitRead.model_validate(r) for r in service.list_units(session, kind="district", limit=1000)]

    return await platform.run(work)
