"""The data catalog over HTTP: datasets with their owner, classification, fields, lineage and quality."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import Path, Query
from fastapi.responses import Response
from pydantic import BaseModel, Field

from citybrain.api.deps import ContextDep, JsonBody, PlatformDep, json_response
from citybrain.api.routing import PathRouter
from citybrain.core.errors import InvalidInput
from citybrain.governance import catalog, quality

# /datasets, not /catalog: the event catalogue (一张清单) already answers at /api/v1/catalogue
router = PathRouter(prefix="/api/v1/datasets", tags=["data catalog"])
DatasetId = Annotated[str, Path(max_length=200, pattern=r"^[A-Za-z0-9_.:-]+$",
                                description="e.g. entities:AirQualityObserved, telemetry:air_quality, cases")]


class RuleStatus(BaseModel):
    id: str
    check: str
    field: str | None
    minShare: float
    checked: int
    passed: int
    share: float | None
    status: Literal["met", "failing", "no data"]


class DatasetRead(BaseModel):
    id: str
    kind: str
    title: str
    titleZh: str
    owner: str
    classification: str
    fields: dict[str, dict[str, Any]]
    source: str
    rules: list[dict[str, Any]]
    managed: bool
    registeredAt: str
    updatedAt: str
    updatedBy: str
    lastIngestAt: str | None
    quality: list[RuleStatus] | None = None


class DatasetPage(BaseModel):
    items: list[DatasetRead]


class QualityPoint(BaseModel):
    hour: str
    rule: str
    checked: int
    passed: int
    share: float


class QualitySeries(BaseModel):
    dataset: str
    points: list[QualityPoint]


class LineageNode(BaseModel):
    id: str
    title: str
    registered: bool


class LineageEdge(BaseModel):
    from_: str = Field(alias="from")
    to: str
    process: str


class LineageGraph(BaseModel):
    dataset: str
    nodes: list[LineageNode]
    edges: list[LineageEdge]


class RoundRead(BaseModel):
    datasets: int
    recordsChecked: int


def _aware(name: str, moment: datetime | None) -> None:
    if moment is not None and moment.tzinfo is None:
        raise InvalidInput.at(name, "a time with its zone is required, e.g. 2026-12-04T08:00:00+08:00")


@router.get("", summary="Every dataset with its owner, classification and quality in the last 24 h",
            responses={200: {"model": DatasetPage}})
async def list_datasets(
    platform: PlatformDep,
    kind: Annotated[Literal["entities", "telemetry", "cases", "reports", "alerts", "import"] | None,
                    Query()] = None,
    owner: Annotated[str | None, Query(max_length=64, description="A department slug, or 'operations'")] = None,
    q: Annotated[str | None, Query(max_length=200, description="Text in the id or title")] = None,
) -> Response:
    now = platform.clock.now()
    since, until = catalog.window(None, None, now)

    def work() -> list[dict[str, Any]]:
        with platform.session() as session:
            rows = catalog.list_datasets(session, kind=kind, owner=owner, text=q)
            return [catalog.dataset_view(row, catalog.rule_summary(
                row, catalog.scores(session, row.id, since=since, until=until)) if row.rules else [])
                for row in rows]

    return json_response({"items": await platform.run(work)})


@router.get("/{dataset_id}", summary="One dataset, with its rules' status over the last 24 h",
            responses={200: {"model": DatasetRead}})
async def get_dataset(platform: PlatformDep, dataset_id: DatasetId) -> Response:
    since, until = catalog.window(None, None, platform.clock.now())

    def work() -> dict[str, Any]:
        with platform.session() as session:
            row = catalog.get_dataset(session, dataset_id)
            return catalog.dataset_view(row, catalog.rule_summary(row, catalog.scores(session, row.id, since=since,
                                                                                       until=until)))

    return json_response(await platform.run(work))


@router.put("/{dataset_id}/rules", summary="Replace a dataset's quality rules (checked as a whole)",
            responses={200: {"model": DatasetRead}},
            openapi_extra={"requestBody": {"required": True, "content": {"application/json": {
                "schema": quality.RuleSet.model_json_schema()}}}})
async def put_rules(platform: PlatformDep, ctx: ContextDep, dataset_id: DatasetId, body: JsonBody) -> Response:
    """`{"rules": [{"id": "pm25-present", "check": "completeness", "field": "pm25", "min_share": 0.95},
    {"id": "fresh", "check": "freshness", "max_age": "15m"}]}`; checks: completeness, range (minimum,
    maximum), uniqueness, freshness (max_age)."""
    row = await platform.run(catalog.set_rules, platform, dataset_id, body, by=ctx)
    return json_response(catalog.dataset_view(row))


@router.get("/{dataset_id}/quality", summary="Hourly quality scores of a dataset's rules",
            responses={200: {"model": QualitySeries}})
async def quality_scores(
    platform: PlatformDep,
    dataset_id: DatasetId,
    since: Annotated[datetime | None, Query(alias="from", description="Default: 7 days before `to`")] = None,
    until: Annotated[datetime | None, Query(alias="to", description="Default: now")] = None,
    rule: Annotated[str | None, Query(max_length=64)] = None,
) -> Response:
    _aware("from", since)
    _aware("to", until)
    start, end = catalog.window(since, until, platform.clock.now(), hours=24 * 7)
    if start >= end:
        raise InvalidInput.at("from", "must be before `to`")

    def work() -> dict[str, Any]:
        with platform.session() as session:
            catalog.get_dataset(session, dataset_id)
            found = catalog.scores(session, dataset_id, since=start, until=end, rule_id=rule)
        return {"dataset": dataset_id, "points": [
            {"hour": s.hour.isoformat(), "rule": s.rule_id, "checked": s.checked, "passed": s.passed,
             "share": round(s.passed / s.checked, 4) if s.checked else 0.0} for s in found]}

    return json_response(await platform.run(work))


@router.get("/{dataset_id}/lineage",
            summary="What feeds a dataset and what it feeds, as JSON or a Mermaid flowchart",
            responses={200: {"model": LineageGraph, "content": {"text/plain": {"schema": {"type": "string"}}}}})
async def dataset_lineage(
    platform: PlatformDep,
    dataset_id: DatasetId,
    depth: Annotated[int, Query(ge=1, le=20)] = 10,
    format: Annotated[Literal["json", "mermaid"], Query()] = "json",
) -> Response:
    def work() -> dict[str, Any]:
        with platform.session() as session:
            return catalog.lineage(session, dataset_id, depth=depth)

    graph = await platform.run(work)
    if format == "mermaid":
        return Response(catalog.lineage_mermaid(graph), media_type="text/plain; charset=utf-8")
    return json_response(graph)


@router.post("/quality-check", summary="Score the quality rules now (they are also scored every minute)",
             responses={200: {"model": RoundRead}})
async def check_quality(platform: PlatformDep) -> Response:
    report = await platform.run(catalog.check_now, platform)
    return json_response({"datasets": report.datasets, "recordsChecked": report.records_checked})
