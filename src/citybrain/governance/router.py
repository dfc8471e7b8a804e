"""The audit log over HTTP, for auditors: search it, and verify its chain."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import Query
from fastapi.responses import Response

from citybrain.api.deps import PlatformDep, json_response
from citybrain.api.routing import PathRouter
from citybrain.core.errors import InvalidInput
from citybrain.governance import audit

router = PathRouter(prefix="/api/v1/audit", tags=["audit"])


@router.get("", summary="Audit records in order, filtered (actor, action and resource prefixes, time)")
async def search_audit(
    platform: PlatformDep,
    actor: Annotated[str | None, Query(max_length=200, description="Exactly this actor.")] = None,
    action: Annotated[str | None, Query(max_length=200, description="Actions starting with this, e.g. `POST /cases`.")] = None,
    resource: Annotated[str | None, Query(max_length=500, description="Resources starting with this path.")] = None,
    since: Annotated[datetime | None, Query(description="From this time on (ISO 8601 with zone).")] = None,
    until: Annotated[datetime | None, Query(description="Before this time.")] = None,
    after: Annotated[int, Query(ge=0, le=2**63 - 1, description="Records after this seq (the previous page's `next_after`).")] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> Response:
    for name, moment in (("since", since), ("until", until)):
        if moment is not None and moment.tzinfo is None:
            raise InvalidInput.at(name, "give the time zone too, e.g. 2026-12-04T08:00:00+08:00")

    def work() -> dict[str, object]:
        with platform.session() as session:
            rows = audit.search(session, actor=actor, action=action, resource=resource, since=since, until=until,
                                after_seq=after, limit=limit)
            return {"items": [audit.record_view(row) for row in rows],
                    "next_after": rows[-1].seq if len(rows) == limit else None}

    return json_response(await platform.run(work))


@router.get("/verify", summary="Walk the hash chain: intact, or the first record that does not fit")
async def verify_audit(
    platform: PlatformDep,
    anchor: Annotated[str | None, Query(max_length=100, description="SEQ:HASH recorded earlier (`citybrain audit head`).")] = None,
) -> Response:
    expected = audit.parse_anchor(anchor) if anchor else None

    def work() -> audit.Verification:
        with platform.session() as session:
            return audit.verify(session, anchor=expected)

    result = await platform.run(work)
    return json_response({"intact": result.intact, "records": result.records, "head_seq": result.head_seq,
                          "head_hash": result.head_hash, "broken_at": result.broken_at, "reason": result.reason})
