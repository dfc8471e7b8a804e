"""Who may do what, decided in one place: roles × org scope × data classification.

Every API route belongs to a *family* (its first OpenAPI tag, or the `x-access` mark of a route that differs
from the rest of its router). The policy below says, per family, which roles may read (GET) and which may
write (any other method), and how the data the family returns is classified. `authorize` runs before every
route (from `api.deps.get_context`): a role that may not, or a caller cleared below the family's
classification, is refused with 403 before the route's code runs. A route without a family in the policy is
refused to everyone: a new route is closed until someone decides who may use it.

The org-scope half is per resource, so the routes ask here: `scope_units` turns an `orgUnit` parameter into
the units a caller may query (403 when the asked unit lies outside the caller's scope), `require_in_scope`
refuses a single resource outside it (404, so a station cannot learn what exists elsewhere).
Classification also applies within a family: an entity type may be classified above its family (citizens'
service requests are personal data), and `visible_types` says which types a caller may see.

Every refusal is audited (`core.errors.AccessDenied` marks it; the audit middleware records it).

The roles follow the separation of duties China's classified protection standard (等保 2.0) asks of a
platform: the administrator manages identities, types and connected systems but reads no operational or
audit data; the auditor reads the audit log and nothing else; the platform's own services (`system`) and
the people who run the city hold the rest.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from citybrain.core.context import LEVELS, ROLES, Classification, Context
from citybrain.core.errors import Forbidden, InvalidInput, OutOfScope

if TYPE_CHECKING:
    from citybrain.platform import Platform

LEVEL_NAMES_ZH = {"public": "公开", "internal": "内部", "personal": "个人信息", "sensitive": "敏感"}
_RANK = {level: rank for rank, level in enumerate(LEVELS)}

# The highest classification each role may read
CLEARANCE: dict[str, Classification] = {
    "district_leader": "personal", "dispatcher": "personal", "department_handler": "personal",
    "village_station": "personal", "analyst": "internal", "auditor": "sensitive", "system": "sensitive",
    "admin": "internal",
}

ACCESS_MARK = "x-access"
READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

PEOPLE_ON_CASES = frozenset({"district_leader", "dispatcher", "department_handler", "village_station"})
EVERY_ROLE = frozenset(ROLES)


@dataclass(frozen=True, slots=True)
class Family:
    """The routes of one kind of data: who reads, who writes, how the data is classified."""

    name: str
    classification: Classification
    read: frozenset[str]
    write: frozenset[str]
    description: str
    open: bool = False  # callable without signing in (liveness, signing in itself, Open311's own keys)
    district_wide: bool = False  # figures or settings of the whole district: a caller's scope must cover it


def _family(name: str, classification: Classification, read: Iterable[str], write: Iterable[str],
            description: str, *, open: bool = False, district_wide: bool = False) -> Family:
    return Family(name, classification, frozenset(read), frozenset(write), description, open, district_wide)


_OPERATIONS = PEOPLE_ON_CASES | {"system"}
POLICY: dict[str, Family] = {f.name: f for f in (
    _family("entities", "internal", _OPERATIONS | {"analyst"}, {"dispatcher", "department_handler",
            "village_station", "system"}, "The city's entities and their history"),
    _family("entity types", "public", EVERY_ROLE, {"admin", "system"}, "The data model: entity types"),
    _family("org tree", "public", EVERY_ROLE, (), "Districts, towns, villages and departments"),
    _family("subscriptions", "internal", _OPERATIONS | {"analyst"}, _OPERATIONS | {"analyst"},
            "Live feeds of entity changes to a caller's webhook"),
    _family("connected systems", "internal", {"dispatcher", "admin", "system"}, {"admin", "system"},
            "Department systems connected to the hub", district_wide=True),
    _family("commands", "internal", {"district_leader", "dispatcher", "system"}, {"dispatcher", "system"},
            "Commands sent back out to devices and department systems (from the district centre)",
            district_wide=True),
    _family("sensing", "internal", _OPERATIONS | {"analyst"}, {"system"},
            "Devices, telemetry, dead letters, vital signs"),
    _family("alerts", "internal", _OPERATIONS | {"analyst"}, _OPERATIONS, "Alerts raised by streaming rules"),
    _family("catalogue", "public", EVERY_ROLE, (), "The event catalogue (一张清单)"),
    _family("disposal", "personal", _OPERATIONS, _OPERATIONS, "Cases, their steps, reports and attachments"),
    _family("routing", "internal", _OPERATIONS | {"analyst"}, {"dispatcher", "system"},
            "Which unit and department a case goes to", district_wide=True),
    _family("supervision", "internal", {"district_leader", "dispatcher", "department_handler", "analyst",
            "system"}, {"district_leader", "dispatcher", "system"}, "Rates, hotspots, recurring problems, briefs",
            district_wide=True),
    _family("hotline", "personal", {"district_leader", "dispatcher", "department_handler", "system"},
            {"dispatcher", "system"}, "Citizens' complaints (12345) and their follow-up"),
    _family("hotline tools", "internal", {"dispatcher", "analyst", "system"},
            {"dispatcher", "analyst", "system"}, "Classifying and locating a complaint's text"),
    _family("traffic", "internal", {"district_leader", "dispatcher", "analyst", "system"}, {"dispatcher", "system"},
            "The traffic twin, intersections and signal plans", district_wide=True),
    _family("data catalog", "internal", EVERY_ROLE, {"admin", "system", "analyst"},
            "Datasets, their owners, lineage and quality rules (数据资产)"),
    _family("data sharing", "internal", EVERY_ROLE - {"auditor"}, EVERY_ROLE - {"auditor"},
            "Departments asking each other for datasets, the grants, and reading through them"),
    _family("audit", "sensitive", {"auditor"}, (), "The tamper-evident audit log", district_wide=True),
    _family("authentication", "public", EVERY_ROLE, EVERY_ROLE, "Signing in and who the caller is"),
    _family("open311", "public", (), (), "Open311 GeoReport v2 (its clients send its api_key)", open=True),
    _family("operations", "public", (), (), "Liveness and metrics", open=True),
)}


def rank(level: str) -> int:
    return _RANK[level]


def clearance(ctx: Context) -> int:
    """The highest classification rank the caller may read. A context without roles is the platform
    itself (`SYSTEM`, the CLI) or, with `auth_required` off, an anonymous caller of an open installation:
    neither is limited here (people and keys always hold a role, and masking still treats a context without
    roles as the least trusted reader)."""
    if not ctx.roles:
        return _RANK["sensitive"]
    return max((_RANK[CLEARANCE[role]] for role in ctx.roles if role in CLEARANCE), default=-1)


def may_read_level(ctx: Context, level: str) -> bool:
    return clearance(ctx) >= _RANK[level]


def family_of(route: Any) -> str | None:
    """The family a route belongs to: its `x-access` mark, else its first tag."""
    mark = (getattr(route, "openapi_extra", None) or {}).get(ACCESS_MARK)
    if mark:
        return mark
    tags = getattr(route, "tags", None)
    return str(tags[0]) if tags else None


def family_of_operation(operation: dict[str, Any]) -> str | None:
    """The family of an operation of the OpenAPI document (what `family_of` says of its route)."""
    tags = operation.get("tags") or [None]
    return operation.get(ACCESS_MARK) or tags[0]


def access(family: str) -> dict[str, Any]:
    """`openapi_extra` for a route whose family differs from its router's tag (it shows in the OpenAPI)."""
    if family not in POLICY:
        raise KeyError(f"no family {family!r} in the access policy")
    return {ACCESS_MARK: family}


def authorize(platform: Platform, ctx: Context, family_name: str | None, method: str) -> Family:
    """Refuse (403) a caller whose roles may not use this family this way, whose clearance is below the
    family's classification, or whose org scope does not cover the district for a district-wide family.
    Returns the family."""
    family = POLICY.get(family_name or "")
    if family is None:
        raise Forbidden(f"no access policy covers this route (family {family_name!r}): refused to everyone")
    if family.open:
        return family
    writing = method not in READ_METHODS
    allowed = family.write if writing else family.read
    if not allowed.intersection(ctx.roles):
        verb = "change" if writing else "read"
        held = ", ".join(ctx.roles) or "no role"
        raise Forbidden(f"{ctx.actor} ({held}) may not {verb} {family.name}; roles that may: "
                        f"{', '.join(sorted(allowed)) or 'none'}")
    if not may_read_level(ctx, family.classification):
        raise Forbidden(f"{family.name} is classified {family.classification} "
                        f"({LEVEL_NAMES_ZH[family.classification]}); {ctx.actor} is not cleared for it")
    if family.district_wide and not covers_district(platform, ctx):
        raise Forbidden(f"{family.name} covers the whole district; {ctx.actor}'s org scope "
                        f"({', '.join(ctx.org_scope or ())}) is part of it")
    return family


# ---------------------------------------------------------------------------------------------- org scope


def within_scope(platform: Platform, ctx: Context, code: str | None) -> bool:
    if ctx.org_scope is None:
        return True
    return code is not None and platform.org_tree.within(code, ctx.org_scope)


def covers_district(platform: Platform, ctx: Context) -> bool:
    if ctx.org_scope is None:
        return True
    return all(within_scope(platform, ctx, root) for root in platform.org_tree.roots)


def require_in_scope(platform: Platform, ctx: Context, *codes: str | None, what: str) -> None:
    """A single resource located at any of `codes` (its place, its handling unit): refused as not found when
    none lies within the caller's scope, so a caller cannot probe for what exists elsewhere."""
    if ctx.org_scope is None:
        return
    if not any(within_scope(platform, ctx, code) for code in codes):
        raise OutOfScope(f"no such {what} in your area")


def scope_units(platform: Platform, ctx: Context, org_unit: str | None, *,
                field: str = "orgUnit") -> list[str] | None:
    """The org units a query may cover: the asked unit and its descendants, limited to the caller's scope.
    `None` means no limit. An unknown unit is bad input (422); a unit outside the caller's scope is refused
    (403) rather than answered with an empty page, so the caller knows why."""
    tree = platform.org_tree
    if org_unit is not None and org_unit not in tree:
        raise InvalidInput.at(field, f"unknown org unit {org_unit!r}")
    if ctx.org_scope is None:
        return tree.descendants(org_unit) if org_unit is not None else None
    if org_unit is not None:
        if within_scope(platform, ctx, org_unit):
            return tree.descendants(org_unit)
        raise Forbidden(f"{field}: {org_unit} is outside your org scope ({', '.join(ctx.org_scope)})",
                        errors=[])
    return sorted({code for unit in ctx.org_scope for code in tree.descendants(unit)})


# ------------------------------------------------------------------------------------------ classification


def visible_types(platform: Platform, ctx: Context) -> frozenset[str] | None:
    """The entity types the caller is cleared to see, or None when it may see every type."""
    specs = platform.types.all()
    level = clearance(ctx)
    visible = frozenset(spec.name for spec in specs if _RANK[spec.classification] <= level)
    return None if len(visible) == len(specs) else visible


def classified_attributes(platform: Platform, type_name: str) -> dict[str, str]:
    """The attributes of a type that carry their own classification."""
    spec = platform.types.get(type_name)
    if spec is None:
        return {}
    return {name: attr.classification for name, attr in spec.attributes.items() if attr.classification}


def entity_for(platform: Platform, ctx: Context, entity: dict[str, Any]) -> dict[str, Any]:
    """An entity as this reader may see it: attributes classified above its clearance left out, personal
    and sensitive text masked by its roles (as the hotline's policy masks complaints)."""
    classified = classified_attributes(platform, str(entity.get("type")))
    if not classified:
        return entity
    cleared = clearance(ctx)
    return {name: attribute_for(ctx, classified.get(name), value) for name, value in entity.items()
            if classified.get(name) is None or rank(classified[name]) <= cleared}


def attribute_for(ctx: Context, level: str | None, attribute: Any) -> Any:
    """One NGSI-LD attribute (or history instance) of the given classification, masked for the reader."""
    if level not in ("personal", "sensitive") or not isinstance(attribute, dict):
        return attribute
    value = attribute.get("value")
    if not isinstance(value, str):
        return attribute
    from citybrain.hotline.masking import text_masker

    return {**attribute, "value": text_masker(ctx)(value)}


def require_type_visible(platform: Platform, ctx: Context, type_name: str, *, field: str = "type") -> None:
    spec = platform.types.get(type_name)
    if spec is not None and _RANK[spec.classification] > clearance(ctx):
        raise Forbidden(f"{field}: entities of type {type_name} are classified {spec.classification} "
                        f"({LEVEL_NAMES_ZH[spec.classification]}); {ctx.actor} is not cleared for them", errors=[])
