"""Org tree flows: importing a district and telling every process about it."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from citybrain.core.context import Context
from citybrain.core.events import OrgTreeChanged
from citybrain.hub.org import service
from citybrain.hub.org.divisions import read_divisions

if TYPE_CHECKING:
    from citybrain.platform import Platform


def import_district(platform: Platform, source: str | Path) -> dict[str, int | str]:
    """Load one district (packaged name/code or CSV path) into the store and the in-memory tree."""
    divisions = read_divisions(source)
    with platform.transaction() as session:
        counts: dict[str, int | str] = dict(service.import_divisions(session, divisions=divisions, clock=platform.clock))
    with platform.session() as session:
        platform.org_tree = service.load_tree(session)
    counts["district"] = divisions[0].code
    counts["name"] = divisions[0].name
    counts["towns"] = sum(1 for d in divisions if d.kind == "town")
    counts["villages"] = sum(1 for d in divisions if d.kind == "village")
    return counts


async def announce(platform: Platform, root_code: str, ctx: Context) -> None:
    await platform.bus.publish(OrgTreeChanged(context=ctx, root_code=root_code, units=len(platform.org_tree)))
