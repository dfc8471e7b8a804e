"""Reading and writing the org tree."""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.orm import Session

from citybrain.core.clock import Clock
from citybrain.db.base import get_or_404
from citybrain.hub.org.departments import DEPARTMENTS, department_code
from citybrain.hub.org.divisions import Division
from citybrain.hub.org.models import OrgUnitRow
from citybrain.hub.org.tree import OrgTree, Unit

LEVEL = {"district": 1, "department": 1, "town": 2, "village": 3}


def load_tree(session: Session) -> OrgTree:
    rows = session.execute(
        sa.select(OrgUnitRow.code, OrgUnitRow.name, OrgUnitRow.kind, OrgUnitRow.level, OrgUnitRow.parent_code)
    ).all()
    return OrgTree.build(Unit(*row) for row in rows)


def import_divisions(session: Session, *, divisions: Sequence[Division], clock: Clock) -> dict[str, int]:
    """Upsert a district's divisions and give it the standard departments. Idempotent: importing the
    same district again updates names and adds what is new, and never duplicates a unit."""
    now = clock.now()
    existing = {code: row for code, row in session.execute(
        sa.select(OrgUnitRow.code, OrgUnitRow).where(OrgUnitRow.code.in_([d.code for d in divisions]))
    )}
    paths: dict[str, str] = {}
    counts = {"created": 0, "updated": 0}
    district = divisions[0]
    units: list[tuple[str, str, str | None, str, str | None, dict[str, str]]] = [
        (d.code, d.name, None, d.kind, d.parent_code, {"subkind": d.subkind, **d.extra}) for d in divisions
    ]
    units += [
        (department_code(district.code, dept.slug), dept.name, dept.name_en, "department", district.code,
         {"slug": dept.slug})
        for dept in DEPARTMENTS
    ]
    dept_codes = [u[0] for u in units if u[3] == "department"]
    existing |= {code: row for code, row in session.execute(
        sa.select(OrgUnitRow.code, OrgUnitRow).where(OrgUnitRow.code.in_(dept_codes))
    )}
    for code, name, name_en, kind, parent, attributes in units:  # parents precede children in `divisions`
        paths[code] = (paths[parent] if parent else "/") + f"{code}/"
        row = existing.get(code)
        if row is None:
            session.add(OrgUnitRow(code=code, name=name, name_en=name_en, kind=kind, level=LEVEL[kind],
                                   parent_code=parent, path=paths[code], attributes=attributes,
                                   created_at=now, updated_at=now))
            counts["created"] += 1
        elif (row.name, row.parent_code, row.kind) != (name, parent, kind) or row.attributes != attributes:
            row.name, row.parent_code, row.kind, row.level = name, parent, kind, LEVEL[kind]
            row.path, row.attributes, row.updated_at = paths[code], attributes, now
            row.name_en = name_en or row.name_en
            counts["updated"] += 1
    counts["units"] = len(units)
    return counts


def get_unit(session: Session, *, code: str) -> OrgUnitRow:
    return get_or_404(session, OrgUnitRow, code, f"org unit {code!r}")


def list_units(
    session: Session,
    *,
    parent: str | None = None,
    kind: str | None = None,
    name_contains: str | None = None,
    under: str | None = None,
    after: str | None = None,
    limit: int = 100,
) -> list[OrgUnitRow]:
    """Units in code order, filtered; `under` restricts to a unit's subtree, `after` is the page cursor."""
    stmt = sa.select(OrgUnitRow).order_by(OrgUnitRow.code).limit(limit)
    if parent is not None:
        stmt = stmt.where(OrgUnitRow.parent_code == parent)
    if kind is not None:
        stmt = stmt.where(OrgUnitRow.kind == kind)
    if name_contains:
        stmt = stmt.where(OrgUnitRow.name.contains(name_contains, autoescape=True))
    if under is not None:
        root = get_unit(session, code=under)
        stmt = stmt.where(OrgUnitRow.path.startswith(root.path, autoescape=True))
    if after is not None:
        stmt = stmt.where(OrgUnitRow.code > after)
    return list(session.scalars(stmt))


def count_by_kind(session: Session, *, under: str | None = None) -> dict[str, int]:
    stmt = sa.select(OrgUnitRow.kind, sa.func.count()).group_by(OrgUnitRow.kind)
    if under is not None:
        stmt = stmt.where(OrgUnitRow.path.startswith(get_unit(session, code=under).path, autoescape=True))
    return {kind: count for kind, count in session.execute(stmt)}
