"""Routing: event type × location → who handles a case (the level and its station or centre) and which
department leads, with the departments that assist on joint cases.

The catalogue gives every event type a default department and level. Routing rules, as data, change that
for some places or kinds of case: rules are tried in order and every rule that matches applies its
changes, so a general rule ("fire safety cases go to the district") can be refined by a later, more
specific one ("… except in 张江镇, whose sub-centre has a fire desk"). A city edits its rules through the
API or `citybrain routing import`; each change is a new version, kept.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field

from pydantic import BaseModel, ConfigDict, Field, model_validator

from citybrain.core.errors import InvalidInput
from citybrain.disposal.catalogue.spec import (
    DEPARTMENT_SLUGS,
    LEVELS,
    Category,
    EventTypeSpec,
    Level,
    Priority,
)
from citybrain.hub.org.tree import OrgTree


class RouteMatch(BaseModel):
    """When a rule applies: every given condition must hold. `event_types` are codes or shell patterns
    (`CG-01-*`); `org_units` match a case located in one of them or below."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    event_types: list[str] = Field(default_factory=list)
    categories: list[Category] = Field(default_factory=list)
    departments: list[str] = Field(default_factory=list)
    priorities: list[Priority] = Field(default_factory=list)
    org_units: list[str] = Field(default_factory=list)
    channels: list[str] = Field(default_factory=list)


class RouteRule(BaseModel):
    """A rule: when it matches, what it sets. Unset fields leave the route as earlier rules made it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=120)
    when: RouteMatch = Field(default_factory=RouteMatch)
    level: Level | None = None
    department: str | None = None
    assisting: list[str] | None = None
    add_assisting: list[str] = Field(default_factory=list)
    handling_unit: str | None = Field(None, description="A fixed unit instead of the one at `level`")

    @model_validator(mode="after")
    def _departments(self) -> RouteRule:
        named = [self.department] if self.department else []
        named += [*(self.assisting or []), *self.add_assisting, *self.when.departments]
        unknown = sorted({slug for slug in named if slug not in DEPARTMENT_SLUGS})
        if unknown:
            raise ValueError(f"unknown department {', '.join(unknown)}; known: {', '.join(sorted(DEPARTMENT_SLUGS))}")
        return self


class RoutingRules(BaseModel):
    model_config = ConfigDict(extra="forbid")

    rules: list[RouteRule] = Field(default_factory=list, max_length=10_000)


@dataclass(frozen=True, slots=True)
class Route:
    level: Level
    handling_unit: str | None
    department: str
    assisting: tuple[str, ...]
    rules: tuple[str, ...] = field(default=())  # names of the rules that applied, for the record


class Router:
    """Routes cases with the rules of one version against one org tree."""

    def __init__(self, rules: RoutingRules, tree: OrgTree, *, version: int = 0) -> None:
        self.rules = rules
        self.tree = tree
        self.version = version
        check_rules(rules, tree)

    def route(self, spec: EventTypeSpec, *, org_unit: str | None, channel: str = "",
              level: Level | None = None) -> Route:
        """The route of a case of type `spec` located at `org_unit` (None: not located, so the district
        handles it). `level` forces a level (escalation), after the rules."""
        chosen_level: Level = spec.level
        department = spec.department
        assisting = list(spec.assisting)
        fixed_unit: str | None = None
        applied: list[str] = []
        chain = set(self._chain(org_unit)) if org_unit else set()
        for rule in self.rules.rules:
            when = rule.when
            if when.event_types and not any(fnmatch.fnmatchcase(spec.code, p) for p in when.event_types):
                continue
            if when.categories and spec.category not in when.categories:
                continue
            if when.departments and department not in when.departments:
                continue
            if when.priorities and spec.priority not in when.priorities:
                continue
            if when.org_units and not chain.intersection(when.org_units):
                continue
            if when.channels and channel not in when.channels:
                continue
            applied.append(rule.name)
            chosen_level = rule.level or chosen_level
            department = rule.department or department
            if rule.assisting is not None:
                assisting = list(rule.assisting)
            assisting += [slug for slug in rule.add_assisting if slug not in assisting]
            fixed_unit = rule.handling_unit or fixed_unit
        if level is not None and LEVELS.index(level) > LEVELS.index(chosen_level):
            chosen_level, fixed_unit = level, None
        assisting = [slug for slug in assisting if slug != department]
        unit = fixed_unit or self.unit_at(org_unit, chosen_level)
        actual: Level = self.tree.units[unit].kind if unit in self.tree.units and self.tree.units[
            unit].kind in LEVELS else chosen_level  # type: ignore[assignment]
        return Route(actual, unit, department, tuple(assisting), tuple(applied))

    def _chain(self, code: str) -> list[str]:
        return [code, *self.tree.ancestors(code)] if code in self.tree.units else [code]

    def unit_at(self, org_unit: str | None, level: Level) -> str | None:
        """The unit of kind `level` that contains `org_unit` (itself included); a case located above that
        level (only to its town, say) goes to the most precise unit it has; an unlocated case to the
        district."""
        if org_unit is None or org_unit not in self.tree.units:
            return self.district()
        wanted = LEVELS.index(level)
        best = org_unit
        for code in [org_unit, *reversed(self.tree.ancestors(org_unit))]:
            kind = self.tree.units[code].kind
            if kind in LEVELS:
                best = code
                if LEVELS.index(kind) >= wanted:
                    return code
        return best

    def district(self) -> str | None:
        return next((code for code, unit in self.tree.units.items() if unit.kind == "district"), None)

    def level_above(self, level: str) -> Level | None:
        position = LEVELS.index(level) if level in LEVELS else len(LEVELS) - 1
        return LEVELS[position + 1] if position + 1 < len(LEVELS) else None  # type: ignore[return-value]


def check_rules(rules: RoutingRules, tree: OrgTree) -> None:
    """Cross-checks pydantic cannot make: org units that exist."""
    problems = []
    for i, rule in enumerate(rules.rules):
        for code in rule.when.org_units:
            if code not in tree.units:
                problems.append((f"rules[{i}].when.org_units", f"unknown org unit {code!r}"))
        if rule.handling_unit is not None and rule.handling_unit not in tree.units:
            problems.append((f"rules[{i}].handling_unit", f"unknown org unit {rule.handling_unit!r}"))
    if problems:
        from citybrain.core.errors import FieldError

        raise InvalidInput(f"{problems[0][0]}: {problems[0][1]}" if len(problems) == 1 else
                           "The routing rules have invalid fields",
                           errors=[FieldError(f, r) for f, r in problems])


