"""The catalogue in memory and in the store: parse and check YAML files, look event types up by their code
or by what points at them (a TipDM path, a 311 request type, an Open311 service code, a sensing rule),
and read and write the `catalogue_entries` table.

Pydantic checks one entry at a time; `check` does what needs the whole catalogue (codes and references
unique, sensing triggers naming rules that exist, emergencies timed on the clock). Every problem names its
field by path, e.g. `fire.yaml: event_types[12].sla.handle`.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
import yaml
from pydantic import ValidationError
from sqlalchemy.orm import Session

from citybrain.core.errors import ErrorCollector, FieldError, InvalidInput, NotFound, field_path
from citybrain.disposal.catalogue.models import CatalogueEntryRow
from citybrain.disposal.catalogue.spec import CATEGORIES, CatalogueFile, EventTypeSpec

if TYPE_CHECKING:
    from citybrain.platform import Platform

# A message of a model-level check starts with the field it is about ("joint: …"): moved into the path.
_FIELD_PREFIX = re.compile(r"^(?:Value error, )?([a-z_]+): (.*)$", re.DOTALL)


@dataclass(frozen=True, slots=True)
class CatalogueEntry:
    """An event type and where it came from: `scenario:<slug>` or `import:<file name>`."""

    spec: EventTypeSpec
    source: str
    enabled: bool = True


@dataclass(frozen=True, slots=True)
class Located:
    """An entry with the field path of its place in a file (`fire.yaml: event_types[3]`), for errors."""

    entry: CatalogueEntry
    where: str


# ---------------------------------------------------------------------------------------------- files


def parse_file(text: str, *, source: str, errors: ErrorCollector | None = None) -> CatalogueFile | None:
    """Parse and validate one catalogue file, naming each problem by its path in the file
    (`event_types[12].sla.handle`). Problems go to `errors` (whose prefix usually names the file) and the
    result is None; without a collector, InvalidInput lists them all."""
    collector = errors if errors is not None else ErrorCollector()
    document, _ = _parse(text, collector)
    if errors is None:
        collector.raise_if_any(f"{source}: {len(collector.errors)} problems")
    return document


def _parse(text: str, errors: ErrorCollector) -> tuple[CatalogueFile | None, list[tuple[int, EventTypeSpec]]]:
    """The document when it is valid, and the valid entries with their positions either way: a file with
    one broken entry still has its other entries checked against the rest of the catalogue."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        errors.add("yaml", f"not valid YAML{at}: {getattr(exc, 'problem', None) or exc}")
        return None, []
    try:
        document = CatalogueFile.model_validate(data)
    except ValidationError as exc:
        broken: set[object] = set()
        for error in exc.errors():
            loc = error["loc"]
            if len(loc) > 1 and loc[0] == "event_types":
                broken.add(loc[1])
            path, message = field_path(loc), error["msg"]
            named = _FIELD_PREFIX.match(message)
            if named and error["type"] == "value_error" and named.group(1) in EventTypeSpec.model_fields:
                path, message = f"{path}.{named.group(1)}" if path else named.group(1), named.group(2)
            errors.add(path or "document", message.removeprefix("Value error, "))
        items = data.get("event_types") if isinstance(data, dict) else None
        salvaged = [(index, EventTypeSpec.model_validate(item)) for index, item in enumerate(items)
                    if index not in broken] if isinstance(items, list) else []
        return None, salvaged
    return document, list(enumerate(document.event_types))


def dump_file(specs: Iterable[EventTypeSpec]) -> str:
    """YAML that `parse_file` reads back into the same specs (defaults left out, keys in schema order)."""
    document = CatalogueFile(event_types=list(specs)).model_dump(mode="json", exclude_defaults=True)
    document = {"version": 1, **document}
    return yaml.safe_dump(document, allow_unicode=True, sort_keys=False, width=110)


# ---------------------------------------------------------------------------------------------- checks


def sensing_rules() -> dict[str, set[str]]:
    """Rule ids per device type, from the loaded scenarios' device types and their rule files."""
    from citybrain.scenarios import scenario_device_types
    from citybrain.sensing.rules.engine import rules_for

    return {spec.slug: {rule.id for rule in rules_for(spec).rules} for spec in scenario_device_types()}


def tipdm_levels(path: str) -> list[str] | None:
    """The levels of a TipDM path (`一级`, `一级/二级` or `一级/二级/三级`), or None when malformed."""
    levels = path.split("/")
    well_formed = 1 <= len(levels) <= 3 and all(level and level.strip() == level for level in levels)
    return levels if well_formed else None


def check(located: list[Located], *, rules: Mapping[str, set[str]] | None = None) -> list[FieldError]:
    """What must hold across the whole catalogue. `rules` (device type → rule ids) checks sensing
    triggers against the rules that exist; None skips that check."""
    problems: list[FieldError] = []
    owners: dict[tuple[str, str], str] = {}

    def claim(kind: str, key: str, where: str, what: str) -> None:
        # A reference may lead to one event type only: lookups by it must have one answer.
        first = owners.setdefault((kind, key), where)
        if first != where:
            problems.append(FieldError(where, f"{what} {key!r} is already used at {first}"))

    for item in located:
        spec, at = item.entry.spec, item.where
        claim("code", spec.code, f"{at}.code", "code")
        if spec.refs.open311_code is not None:
            claim("open311", spec.refs.open311_code, f"{at}.refs.open311_code", "Open311 service code")
        for kind in ("tipdm", "la311", "nyc311"):
            for index, value in enumerate(getattr(spec.refs, kind)):
                where = f"{at}.refs.{kind}[{index}]"
                if kind == "tipdm" and tipdm_levels(value) is None:
                    problems.append(FieldError(where, f"{value!r} is not a TipDM path "
                                                      "(一级, 一级/二级 or 一级/二级/三级)"))
                    continue
                claim(kind, value, where, f"{kind} reference")
        for index, trigger in enumerate(spec.sensing):
            where = f"{at}.sensing[{index}]"
            if rules is not None and trigger.device_type not in rules:
                problems.append(FieldError(f"{where}.device_type",
                                           f"no scenario defines device type {trigger.device_type!r}"))
            elif rules is not None and trigger.rule not in rules[trigger.device_type]:
                known = ", ".join(sorted(rules[trigger.device_type]))
                problems.append(FieldError(f"{where}.rule", f"device type {trigger.device_type!r} has no "
                                                            f"rule {trigger.rule!r}; it has: {known}"))
            else:
                claim("sensing", f"{trigger.device_type}/{trigger.rule}", where, "sensing trigger")
        if spec.priority == "emergency":
            # An emergency's first two stages run on the clock: nights and holidays do not pause a gas leak.
            for stage in ("respond", "handle"):
                if getattr(spec.sla, stage).working:
                    problems.append(FieldError(f"{at}.sla.{stage}", "an emergency is timed on the clock "
                                                                   "(m, h, d), not in working time"))
    return problems


def read_files(files: Iterable[tuple[str, str, str | None]]) -> list[Located]:
    """Parse catalogue files given as (name, text, source) and check them as one catalogue, sensing
    triggers against the scenarios' rules. InvalidInput names every problem as `<name>: <field path>`.
    `source` is what the entries record as their origin (None: `import:<name>`)."""
    errors: list[FieldError] = []
    located: list[Located] = []
    for name, text, source in files:
        file_errors = ErrorCollector(prefix=f"{name}: ")
        _, entries = _parse(text, file_errors)
        errors += file_errors.errors
        located += [Located(CatalogueEntry(spec, source or f"import:{name}"), f"{name}: event_types[{index}]")
                    for index, spec in entries]
    errors += check(located, rules=sensing_rules())
    if errors:
        raise InvalidInput(f"{len(errors)} problems; the first: {errors[0].field}: {errors[0].reason}",
                           errors=errors)
    return located


# ---------------------------------------------------------------------------------------------- catalogue


class Catalogue:
    """The event types in memory, with the lookups routing, classification and sensing need. Built from
    checked entries (`Catalogue.checked`) or trusted ones (the store's, checked when they were written)."""

    def __init__(self, entries: Iterable[CatalogueEntry]) -> None:
        ordered = sorted(entries, key=lambda e: e.spec.code)
        self.entries: dict[str, CatalogueEntry] = {entry.spec.code: entry for entry in ordered}
        self._refs: dict[tuple[str, str], EventTypeSpec] = {}
        for entry in self.entries.values():
            spec = entry.spec
            if spec.refs.open311_code:
                self._refs[("open311", spec.refs.open311_code)] = spec
            for kind in ("tipdm", "la311", "nyc311"):
                for value in getattr(spec.refs, kind):
                    self._refs.setdefault((kind, value), spec)
            for trigger in spec.sensing:
                self._refs.setdefault(("sensing", f"{trigger.device_type}/{trigger.rule}"), spec)

    @classmethod
    def checked(cls, located: list[Located], *, rules: Mapping[str, set[str]] | None = None) -> Catalogue:
        """A catalogue of these entries, or InvalidInput naming every cross-entry problem."""
        problems = check(located, rules=rules)
        if problems:
            collector = ErrorCollector(errors=problems)
            collector.raise_if_any(f"the catalogue has {len(problems)} problems")
        return cls(item.entry for item in located)

    def __len__(self) -> int:
        return len(self.entries)

    def __iter__(self):
        return (entry.spec for entry in self.entries.values())

    def __contains__(self, code: object) -> bool:
        return code in self.entries

    def entry(self, code: str) -> CatalogueEntry:
        """The entry with this code, or NotFound."""
        entry = self.entries.get(code)
        if entry is None:
            raise NotFound(f"event type {code!r} is not in the catalogue")
        return entry

    def get(self, code: str) -> EventTypeSpec:
        """The event type with this code, or NotFound."""
        return self.entry(code).spec

    def by_category(self, category: str) -> list[EventTypeSpec]:
        return [spec for spec in self if spec.category == category]

    def by_department(self, slug: str, *, assisting: bool = True) -> list[EventTypeSpec]:
        """Types the department leads (and, with `assisting`, those it assists on)."""
        return [spec for spec in self if spec.department == slug or (assisting and slug in spec.assisting)]

    def for_tipdm(self, path: str) -> EventTypeSpec | None:
        """The type a TipDM label maps to: the full path, else its nearest mapped ancestor (a classifier
        that only knows the first level still lands on that level's general type)."""
        levels = tipdm_levels(path) or []
        for depth in range(len(levels), 0, -1):
            spec = self._refs.get(("tipdm", "/".join(levels[:depth])))
            if spec is not None:
                return spec
        return None

    def for_la311(self, request_type: str) -> EventTypeSpec | None:
        return self._refs.get(("la311", request_type))

    def for_nyc311(self, complaint_type: str) -> EventTypeSpec | None:
        return self._refs.get(("nyc311", complaint_type))

    def for_open311(self, service_code: str) -> EventTypeSpec | None:
        return self._refs.get(("open311", service_code))

    def for_sensing(self, device_type: str, rule: str) -> EventTypeSpec | None:
        """The type an alert of this rule opens a case of."""
        return self._refs.get(("sensing", f"{device_type}/{rule}"))

    def search(self, *, category: str | None = None, department: str | None = None, level: str | None = None,
               text: str | None = None, after: str | None = None) -> list[EventTypeSpec]:
        """Types matching every filter given, by code: `department` leads or assists, `text` is found in the
        code, names, subcategory or keywords (case-insensitively), `after` is the last code of the
        previous page."""
        needle = text.casefold().strip() if text else None
        found = []
        for spec in self:
            if after is not None and spec.code <= after:
                continue
            if (category and spec.category != category) or (level and spec.level != level):
                continue
            if department and department != spec.department and department not in spec.assisting:
                continue
            if needle and not any(needle in value.casefold() for value in _searchable(spec)):
                continue
            found.append(spec)
        return found

    def counts(self) -> dict[str, Counter[str]]:
        """How many types per category, lead department, level and priority."""
        return {field: Counter(getattr(spec, field) for spec in self)
                for field in ("category", "department", "level", "priority")}

    def category_counts(self) -> list[tuple[str, str, str, int]]:
        """(slug, zh, en, count) for every category, in the schema's order, empty ones too."""
        counted = self.counts()["category"]
        return [(slug, zh, en, counted[slug]) for slug, (zh, en) in CATEGORIES.items()]


def _searchable(spec: EventTypeSpec) -> list[str]:
    texts = [spec.code, spec.name.zh, spec.name.en, *spec.keywords.zh, *spec.keywords.en]
    if spec.subcategory is not None:
        texts += [spec.subcategory.zh, spec.subcategory.en]
    return texts


# ---------------------------------------------------------------------------------------------- store


def load_catalogue(platform: Platform) -> list[EventTypeSpec]:
    """The event types in force in the platform's store (seeded from the scenarios on first use), by code:
    what the case flows route by. `flows.load` gives the same as a `Catalogue` with its lookups."""
    from citybrain.disposal.catalogue import flows

    return list(flows.load(platform))


def stored_entries(session: Session) -> list[CatalogueEntry]:
    """Every stored entry, enabled or not, by code."""
    rows = session.scalars(sa.select(CatalogueEntryRow).order_by(CatalogueEntryRow.code))
    return [CatalogueEntry(EventTypeSpec.model_validate(row.spec), row.source, row.enabled) for row in rows]


def fingerprint(session: Session) -> tuple[Any, ...]:
    """Changes whenever a row is added, removed or rewritten by another process (which stamps its own
    time): what an in-memory copy compares to know it is stale."""
    return tuple(session.execute(sa.select(sa.func.count(), sa.func.max(CatalogueEntryRow.updated_at))).one())


def upsert(session: Session, *, entries: Iterable[CatalogueEntry], now: datetime) -> int:
    """Write entries by code (insert or replace the spec and source); returns how many rows changed."""
    written = 0
    for entry in entries:
        spec = entry.spec.model_dump(mode="json")
        row = session.get(CatalogueEntryRow, entry.spec.code)
        if row is None:
            session.add(CatalogueEntryRow(code=entry.spec.code, spec=spec, source=entry.source,
                                          enabled=entry.enabled, updated_at=now))
        elif row.spec != spec or row.source != entry.source or row.enabled != entry.enabled:
            row.spec, row.source, row.enabled, row.updated_at = spec, entry.source, entry.enabled, now
        else:
            continue
        written += 1
    session.flush()
    return written


def seed_plan(stored: list[CatalogueEntry], shipped: list[CatalogueEntry]) -> list[CatalogueEntry]:
    """What seeding writes: shipped types not stored yet, and shipped types whose stored row still comes
    from a scenario but differs (a newer release fixed it). A row the city imported is never replaced, and
    a scenario row keeps the enabled flag it was given."""
    by_code = {entry.spec.code: entry for entry in stored}
    plan = []
    for entry in shipped:
        current = by_code.get(entry.spec.code)
        if current is None:
            plan.append(entry)
        elif current.source.startswith("scenario:") and (current.spec, current.source) != (
                entry.spec, entry.source):
            plan.append(CatalogueEntry(entry.spec, entry.source, current.enabled))
    return plan
