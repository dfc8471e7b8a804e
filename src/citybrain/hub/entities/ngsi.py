"""NGSI-LD normalized form (ETSI GS CIM 009) in and out of the hub.

`parse_entity` validates one entity and returns the record the store keeps; every problem is reported with
the path of the offending field (`temperature.value`, `location.value.coordinates[0]`), all at once.
`to_ngsi` renders a stored record back; `parse_entity(to_ngsi(r))` gives `r` again (property-tested).
"""

from __future__ import annotations

import math
import re
from collections.abc import Container
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from citybrain.core.errors import ErrorCollector, InvalidInput
from citybrain.hub.entities.geo import BBox, validate_geometry
from citybrain.hub.entities.types import (
    ATTR_NAME_RE,
    ATTR_NAME_RULE,
    AttrKind,
    AttrSpec,
    TypeRegistry,
    TypeSpec,
    value_matches,
)

# RFC 8141: "urn:" NID ":" NSS. "/", "?" and "#" are refused in the NSS because ids travel as one URL
# path segment (/api/v1/entities/{id}/attrs).
# Spelled case by case rather than with IGNORECASE, which matched 2.4× slower and let [A-Za-z] match a few
# non-ASCII letters (ſ, ı, İ, the Kelvin sign); \Z, not $, which also matches before a trailing newline.
URN_RE = re.compile(r"[uU][rR][nN]:(?![uU][rR][nN]:)[A-Za-z0-9][A-Za-z0-9-]{0,31}:[A-Za-z0-9()+,\-.:=@;$_!*'~&]+\Z")
ORG_UNIT_PREFIX = "urn:ngsi-ld:OrgUnit:"
ATTRIBUTE_TYPES = ("Property", "Relationship", "GeoProperty", "LanguageProperty")
# Keys of an entity that are not attributes. createdAt/modifiedAt are system-generated and ignored on input.
ENTITY_KEYS = {"id", "type", "@context", "location", "orgUnit", "createdAt", "modifiedAt"}
ATTRIBUTE_META_KEYS = {"type", "value", "object", "languageMap", "unitCode", "observedAt", "datasetId",
                       "createdAt", "modifiedAt"}
MAX_ATTRIBUTES = 256
MAX_SUB_DEPTH = 2
EXACT_INT = 2**53  # integers up to this magnitude are exact doubles


@dataclass(slots=True)
class EntityRecord:
    """A validated entity, split the way the store keeps it."""

    id: str
    type: str
    org_unit: str | None
    location: dict[str, Any] | None
    bbox: BBox | None
    attrs: dict[str, dict[str, Any]]


def is_urn(value: Any) -> bool:
    return isinstance(value, str) and len(value) <= 512 and URN_RE.match(value) is not None


def format_datetime(moment: datetime) -> str:
    """Canonical NGSI-LD timestamp: UTC with a trailing Z."""
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def parse_datetime(value: Any) -> datetime | None:
    """An ISO 8601 timestamp with a zone (Z or ±hh:mm); None when it is not one, or when it falls outside
    the years 1–9999 in UTC (0001-01-01T00:00:00+01:00 has no UTC form)."""
    if not isinstance(value, str) or len(value) > 40:
        return None
    return _parse_timestamp(value)


# Readings of one batch mostly share a handful of timestamps, and parsing plus re-formatting them was a
# fifth of the cost of validating an entity; both are pure functions of the text, so they are memoised.
@lru_cache(maxsize=16384)
def _parse_timestamp(value: str) -> datetime | None:
    try:
        moment = datetime.fromisoformat(value)
        if moment.tzinfo is None:
            return None
        moment.astimezone(UTC)
    except (ValueError, OverflowError):
        return None
    return moment


# The form of a canonical timestamp with whole seconds, the usual spelling of a reading's time.
_UTC_SECONDS_RE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z")


@lru_cache(maxsize=16384)
def canonical_timestamp(value: str) -> str | None:
    """The canonical (UTC, Z) form of a timestamp text, or None when it is not one."""
    # Timestamps are seldom shared across the entities of a batch, so misses are common; text already in
    # canonical form is its own canonical form once it names a real moment, which costs a quarter as much.
    if _UTC_SECONDS_RE.fullmatch(value) is not None:
        try:
            datetime.fromisoformat(value)
        except ValueError:
            pass
        else:
            return value
    moment = parse_datetime(value)
    return None if moment is None else format_datetime(moment)


def org_unit_urn(code: str) -> str:
    return f"{ORG_UNIT_PREFIX}{code}"


class _Unstorable(ValueError):
    """A value that JSON cannot carry or the store cannot keep; the message is the reason."""


def _storable(value: Any) -> Any:
    """The value as the hub keeps it, or _Unstorable.

    Numbers are IEEE doubles, as JSON readers treat them (I-JSON, RFC 7493): finite, and an integer beyond
    ±2^53 must be one a double holds exactly. A whole number of that size is kept as an int while it fits
    the store's JSON codec (orjson: -2^63 … 2^64-1), because PostgreSQL's jsonb prints 1.152921504606847e18
    back as 1152921504606847000, a different number unless both sides are the exact integer. Text may not
    hold NUL, which PostgreSQL cannot store.
    """
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        if -EXACT_INT <= value <= EXACT_INT:
            return value
        try:
            as_double = float(value)
        except OverflowError:
            raise _Unstorable("numbers must be within the range of a double") from None
        if as_double != value:
            raise _Unstorable("integers beyond ±2^53 must be exact doubles (JSON numbers are doubles)")
        value = as_double
    if isinstance(value, float):
        if not math.isfinite(value):
            raise _Unstorable("numbers must be finite (no NaN or Infinity)")
        if abs(value) >= EXACT_INT and -(2**63) <= value < 2**64:
            return int(value)
        return value
    if isinstance(value, str):
        if "\x00" in value:
            raise _Unstorable("text cannot contain NUL (U+0000)")
        return value
    if isinstance(value, list):
        return [_storable(v) for v in value]
    if isinstance(value, dict):
        return {_storable(k): _storable(v) for k, v in value.items()}
    return value


def _parse_attribute(
    raw: Any, spec: AttrSpec | None, path: str, errors: ErrorCollector, depth: int = 0
) -> dict[str, Any] | None:
    if not isinstance(raw, dict):
        errors.add(path, "an attribute is an object with a type: " + ", ".join(ATTRIBUTE_TYPES))
        return None
    kind = raw.get("type")
    before = len(errors.errors)
    out: dict[str, Any] = {"type": kind}
    match kind:
        case "Property":
            if "value" not in raw or raw["value"] is None:
                errors.add(f"{path}.value", "a Property needs a non-null value (delete the attribute to clear it)")
            else:
                try:
                    out["value"] = _storable(raw["value"])
                except _Unstorable as exc:
                    errors.add(f"{path}.value", str(exc))
        case "Relationship":
            target = raw.get("object")
            if not is_urn(target):
                errors.add(f"{path}.object", "a Relationship's object must be the URN of an entity")
            else:
                out["object"] = target
        case "GeoProperty":
            if validate_geometry(raw.get("value"), f"{path}.value", errors) is not None:
                out["value"] = raw["value"]
        case "LanguageProperty":
            language_map = raw.get("languageMap")
            if not (isinstance(language_map, dict) and language_map
                    and all(isinstance(k, str) and isinstance(v, str) for k, v in language_map.items())):
                errors.add(f"{path}.languageMap", "a LanguageProperty needs a map of language code to text")
            else:
                try:
                    out["languageMap"] = _storable(language_map)
                except _Unstorable as exc:
                    errors.add(f"{path}.languageMap", str(exc))
        case _:
            errors.add(f"{path}.type", f"attribute type must be one of {', '.join(ATTRIBUTE_TYPES)}, not {kind!r}")
            return None
    if "unitCode" in raw:
        unit = raw["unitCode"]
        if not (isinstance(unit, str) and 0 < len(unit) <= 16 and "\x00" not in unit):
            errors.add(f"{path}.unitCode", "a UN/CEFACT unit code is a short string, e.g. CEL")
        else:
            out["unitCode"] = unit
    if "observedAt" in raw:
        observed = raw["observedAt"]
        canonical = canonical_timestamp(observed) if isinstance(observed, str) and len(observed) <= 40 else None
        if canonical is None:
            errors.add(f"{path}.observedAt", "an ISO 8601 timestamp with a zone is required, e.g. 2026-01-01T08:00:00Z")
        else:
            out["observedAt"] = canonical
    if "datasetId" in raw:
        if not is_urn(raw["datasetId"]):
            errors.add(f"{path}.datasetId", "a datasetId must be a URN")
        else:
            out["datasetId"] = raw["datasetId"]
    for key, sub in raw.items():
        if key in ATTRIBUTE_META_KEYS:
            continue
        sub_path = f"{path}.{key}"
        if depth >= MAX_SUB_DEPTH:
            errors.add(sub_path, f"sub-attributes nest at most {MAX_SUB_DEPTH} levels deep")
        elif not ATTR_NAME_RE.match(key):
            errors.add(sub_path, f"attribute names are {ATTR_NAME_RULE}")
        else:
            parsed = _parse_attribute(sub, None, sub_path, errors, depth + 1)
            if parsed is not None:
                out[key] = parsed
    if spec is not None and len(errors.errors) == before:
        _check_spec(out, spec, path, errors)
    return out if len(errors.errors) == before else None


def _check_spec(attr: dict[str, Any], spec: AttrSpec, path: str, errors: ErrorCollector) -> None:
    kind = attr["type"]
    if spec.kind == AttrKind.relationship:
        if kind != "Relationship":
            errors.add(f"{path}.type", "this attribute is a Relationship in its entity type")
        return
    if spec.kind == AttrKind.geometry:
        if kind != "GeoProperty":
            errors.add(f"{path}.type", "this attribute is a GeoProperty in its entity type")
        return
    if spec.kind == AttrKind.language:
        if kind not in ("LanguageProperty", "Property"):
            errors.add(f"{path}.type", "this attribute is a LanguageProperty in its entity type")
        return
    if kind != "Property":
        if spec.kind != AttrKind.any:
            errors.add(f"{path}.type", f"this attribute is a Property holding {spec.kind.value} in its entity type")
        return
    value = attr["value"]
    if not value_matches(spec.kind, value):
        errors.add(f"{path}.value", f"expected {spec.kind.value}, got {type(value).__name__}")
        return
    if spec.kind == AttrKind.datetime and parse_datetime(value) is None:
        errors.add(f"{path}.value", "expected an ISO 8601 timestamp with a zone")
    if spec.enum is not None and value not in spec.enum:
        errors.add(f"{path}.value", f"must be one of {spec.enum}")
    if isinstance(value, int | float) and not isinstance(value, bool):
        if spec.minimum is not None and value < spec.minimum:
            errors.add(f"{path}.value", f"must be ≥ {spec.minimum}")
        if spec.maximum is not None and value > spec.maximum:
            errors.add(f"{path}.value", f"must be ≤ {spec.maximum}")
    if spec.unit and "unitCode" in attr and attr["unitCode"] != spec.unit:
        errors.add(f"{path}.unitCode", f"this attribute is measured in {spec.unit}")


def parse_attributes(
    raw: Any, spec: TypeSpec | None, errors: ErrorCollector, *, skip: Container[str] = ()
) -> dict[str, dict[str, Any]]:
    """Validate an attribute map (the attributes of an entity, or a partial update)."""
    attrs: dict[str, dict[str, Any]] = {}
    if not isinstance(raw, dict):
        errors.add("", "an object is required")
        return attrs
    count = 0
    for name, value in raw.items():
        if name in skip:
            continue
        count += 1
        if not ATTR_NAME_RE.match(name):
            errors.add(name, f"attribute names are {ATTR_NAME_RULE}")
            continue
        parsed = _parse_attribute(value, spec.attributes.get(name) if spec else None, name, errors)
        if parsed is not None:
            attrs[name] = parsed
    if count > MAX_ATTRIBUTES:
        errors.add("", f"an entity holds at most {MAX_ATTRIBUTES} attributes, this one has {count}")
    return attrs


def parse_entity(
    raw: Any, *, types: TypeRegistry, org_units: Container[str], prefix: str = ""
) -> EntityRecord:
    """Validate one NGSI-LD normalized entity; raises InvalidInput naming every bad field."""
    # Batch upserts validate a thousand entities per request and nearly all of them are fine: a lean pass
    # accepts those, and whatever it does not see as plainly valid is judged by the thorough validator, so
    # the errors (and anything else raised) are always that validator's.
    try:
        record = _plain_entity(raw, types, org_units)
    except Exception:  # noqa: BLE001 - whatever the lean pass trips over, the thorough one reports as it always did
        record = None
    if record is not None:
        return record
    return _validate_entity(raw, types, org_units, prefix)


def _validate_entity(raw: Any, types: TypeRegistry, org_units: Container[str], prefix: str) -> EntityRecord:
    """The thorough validator: every problem of the entity, each named by its field's path."""
    errors = ErrorCollector(prefix)
    if not isinstance(raw, dict):
        errors.add("", "an entity is a JSON object with at least 'id' and 'type'")
        errors.raise_if_any()
    entity_id, type_name = raw.get("id"), raw.get("type")
    if not is_urn(entity_id):
        errors.add("id", "a URN is required, e.g. urn:ngsi-ld:AirQualityObserved:PD-001")
    spec: TypeSpec | None = None
    if not isinstance(type_name, str):
        errors.add("type", "an entity type name is required")
    else:
        spec = types.get(type_name)
        if spec is None:
            errors.add("type", f"unknown entity type {type_name!r}; known types are listed at /api/v1/types")

    location: dict[str, Any] | None = None
    bbox: BBox | None = None
    if "location" in raw:
        loc = raw["location"]
        if not isinstance(loc, dict) or loc.get("type") != "GeoProperty":
            errors.add("location.type", "location is a GeoProperty")
        else:
            bbox = validate_geometry(loc.get("value"), "location.value", errors)
            if bbox is not None:
                location = loc["value"]

    org_unit: str | None = None
    if "orgUnit" in raw:
        rel = raw["orgUnit"]
        target = rel.get("object") if isinstance(rel, dict) and rel.get("type") == "Relationship" else None
        if not (isinstance(target, str) and target.startswith(ORG_UNIT_PREFIX)):
            errors.add("orgUnit", f"orgUnit is a Relationship whose object is {ORG_UNIT_PREFIX}<code>")
        else:
            code = target.removeprefix(ORG_UNIT_PREFIX)
            if code not in org_units:
                errors.add("orgUnit.object", f"unknown org unit {code!r}")
            else:
                org_unit = code

    attrs = parse_attributes(raw, spec, errors, skip=ENTITY_KEYS)
    if spec is not None:
        for name, attr_spec in spec.attributes.items():
            if attr_spec.required and name not in raw:
                errors.add(name, f"required by type {spec.name}")
    errors.raise_if_any(f"entity {entity_id if is_urn(entity_id) else ''} has invalid fields".replace("  ", " "))
    return EntityRecord(entity_id, type_name, org_unit, location, bbox, attrs)


# ------------------------------------------------------------------------------------------- lean pass
# The functions below accept exactly what the thorough validator accepts, with the same result, but only in
# the shapes entities usually have (plain dicts and lists, str/int/float/bool); for anything else they
# answer None and leave the verdict to the thorough validator. They collect no errors and build no paths.

# AttrKind members are slow to look up on their class on Python 3.11 (≈ 65 ns each).
_RELATIONSHIP, _GEOMETRY, _LANGUAGE, _ANY, _DATETIME = (
    AttrKind.relationship, AttrKind.geometry, AttrKind.language, AttrKind.any, AttrKind.datetime)
# The exact types of value that value_matches accepts for a kind (a bool is not a number); instances of their
# subclasses are left to the thorough validator.
_KIND_TYPES: dict[AttrKind, frozenset[type]] = {
    AttrKind.number: frozenset({int, float}), AttrKind.integer: frozenset({int}), AttrKind.string: frozenset({str}),
    AttrKind.datetime: frozenset({str}), AttrKind.boolean: frozenset({bool}), AttrKind.object: frozenset({dict}),
    AttrKind.array: frozenset({list}),
}
_NUMBER_TYPES = (int, float)
# The attribute types other than Property, and the kind a type must declare for them.
_OTHER_KINDS = {"Relationship": _RELATIONSHIP, "GeoProperty": _GEOMETRY, "LanguageProperty": _LANGUAGE}

# Attribute names repeat across the entities of a batch, and matching ATTR_NAME_RE costs about as much as
# the rest of an attribute's checks. Only names that match are kept, and only so many (names come from
# clients).
_VALID_NAMES: set[str] = set()
_VALID_NAMES_MAX = 8192


def _valid_name(name: str) -> bool:
    """Whether `name` matches ATTR_NAME_RE (remembered when it does)."""
    if name in _VALID_NAMES:
        return True
    if ATTR_NAME_RE.match(name) is None:
        return False
    if len(_VALID_NAMES) < _VALID_NAMES_MAX:
        _VALID_NAMES.add(name)
    return True


def _plain_bbox(geometry: Any) -> BBox | None:
    """What validate_geometry returns for a geometry it accepts; None when it refuses it."""
    if type(geometry) is dict and type(kind := geometry.get("type")) is str and kind == "Point":
        coords = geometry.get("coordinates")
        if type(coords) is list and 2 <= len(coords) <= 3:
            # In range means finite; an altitude needs only to be finite.
            lon, lat = coords[0], coords[1]
            if ((type(lon) is float or type(lon) is int) and -180 <= lon <= 180
                    and (type(lat) is float or type(lat) is int) and -90 <= lat <= 90
                    and (len(coords) == 2 or type(coords[2]) in _NUMBER_TYPES and math.isfinite(coords[2]))):
                return (lon, lat, lon, lat)
    return validate_geometry(geometry, "", ErrorCollector())


def _plain_attribute(raw: Any, spec: AttrSpec | None, depth: int = 0) -> dict[str, Any] | None:
    """What _parse_attribute returns for an attribute it accepts, or None to have it judged there."""
    if type(raw) is not dict:
        return None
    kind = raw.get("type")
    if type(kind) is not str:
        return None
    out: dict[str, Any]
    if kind == "Property":
        value = raw.get("value")
        # _storable keeps text without NUL, booleans and numbers well inside ±2^53 as they are.
        value_type = type(value)
        if value_type is str:
            if "\x00" in value:
                return None
        elif value_type is not bool and not (value_type in _NUMBER_TYPES and -EXACT_INT < value < EXACT_INT):
            if value is None:
                return None
            try:
                value = _storable(value)
            except _Unstorable:
                return None
        if spec is not None and not _property_allowed(value, raw, spec):
            return None
        out = {"type": kind, "value": value}
    elif kind in _OTHER_KINDS:
        # _check_spec lets these through only where their own kind (or any kind) is declared.
        if spec is not None and spec.kind != _OTHER_KINDS[kind] and spec.kind != _ANY:
            return None
        if kind == "Relationship":
            target = raw.get("object")
            if not is_urn(target):
                return None
            out = {"type": kind, "object": target}
        elif kind == "GeoProperty":
            value = raw.get("value")
            if _plain_bbox(value) is None:
                return None
            out = {"type": kind, "value": value}
        else:
            language_map = raw.get("languageMap")
            if not (type(language_map) is dict and language_map
                    and all(type(k) is str and type(v) is str for k, v in language_map.items())):
                return None
            try:
                out = {"type": kind, "languageMap": _storable(language_map)}
            except _Unstorable:
                return None
    else:
        return None
    known = 2  # "type" and the key holding the value
    if "unitCode" in raw:
        unit = raw["unitCode"]
        if not (type(unit) is str and 0 < len(unit) <= 16 and "\x00" not in unit):
            return None
        out["unitCode"] = unit
        known += 1
    if "observedAt" in raw:
        observed = raw["observedAt"]
        canonical = canonical_timestamp(observed) if type(observed) is str and len(observed) <= 40 else None
        if canonical is None:
            return None
        out["observedAt"] = canonical
        known += 1
    if "datasetId" in raw:
        if not is_urn(raw["datasetId"]):
            return None
        out["datasetId"] = raw["datasetId"]
        known += 1
    # Any other key is a sub-attribute or ignored metadata (createdAt, or an object on a Property).
    if len(raw) != known:
        for key, sub in raw.items():
            if key in ATTRIBUTE_META_KEYS:
                continue
            if depth >= MAX_SUB_DEPTH or not _valid_name(key):
                return None
            parsed = _plain_attribute(sub, None, depth + 1)
            if parsed is None:
                return None
            out[key] = parsed
    return out


def _property_allowed(value: Any, raw: dict[str, Any], spec: AttrSpec) -> bool:
    """Whether _check_spec accepts a Property holding `value` (its unitCode, when valid, is raw's)."""
    # A pydantic model keeps its fields in __dict__; reading them there skips BaseModel's __getattr__ hook
    # (≈ 4 % of a typical entity's cost). Were that to change, the KeyError would only cost the lean pass.
    fields = spec.__dict__
    expected = fields["kind"]
    accepted = _KIND_TYPES.get(expected)
    if accepted is not None:
        if type(value) not in accepted:
            return False
        # parse_datetime's verdict, from the cache that observedAt has usually filled (and only for text short
        # enough to be worth caching, as there).
        if expected == _DATETIME and (len(value) > 40 or canonical_timestamp(value) is None):
            return False
    elif expected == _RELATIONSHIP or expected == _GEOMETRY:
        return False
    elif expected == _LANGUAGE:
        return True
    enum = fields["enum"]
    if enum is not None and value not in enum:
        return False
    minimum, maximum = fields["minimum"], fields["maximum"]
    if (minimum is not None or maximum is not None) and isinstance(value, _NUMBER_TYPES) and type(value) is not bool:
        if minimum is not None and value < minimum:
            return False
        if maximum is not None and value > maximum:
            return False
    unit = fields["unit"]
    return not (unit and "unitCode" in raw and raw["unitCode"] != unit)


def _plain_entity(raw: Any, types: TypeRegistry, org_units: Container[str]) -> EntityRecord | None:
    """What the thorough validator returns for an entity it accepts, or None to have it judged there."""
    if type(raw) is not dict:
        return None
    entity_id, type_name = raw.get("id"), raw.get("type")
    if not is_urn(entity_id) or type(type_name) is not str:
        return None
    spec = types.get(type_name)
    if spec is None:
        return None

    location: dict[str, Any] | None = None
    bbox: BBox | None = None
    if "location" in raw:
        loc = raw["location"]
        if type(loc) is not dict or loc.get("type") != "GeoProperty":
            return None
        location = loc.get("value")
        bbox = _plain_bbox(location)
        if bbox is None:
            return None

    org_unit: str | None = None
    if "orgUnit" in raw:
        rel = raw["orgUnit"]
        if type(rel) is not dict or rel.get("type") != "Relationship":
            return None
        target = rel.get("object")
        if type(target) is not str or not target.startswith(ORG_UNIT_PREFIX):
            return None
        org_unit = target.removeprefix(ORG_UNIT_PREFIX)
        if org_unit not in org_units:
            return None

    declared = spec.attributes
    attrs: dict[str, dict[str, Any]] = {}
    for name, value in raw.items():
        if name in ENTITY_KEYS:
            continue
        if name not in _VALID_NAMES and not _valid_name(name):
            return None
        attr = _plain_attribute(value, declared.get(name))
        if attr is None:
            return None
        attrs[name] = attr
    if len(attrs) > MAX_ATTRIBUTES:
        return None
    for name, attr_spec in declared.items():
        if attr_spec.required and name not in raw:
            return None
    return EntityRecord(entity_id, type_name, org_unit, location, bbox, attrs)


def to_ngsi(
    entity_id: str,
    type_name: str,
    org_unit: str | None,
    location: dict[str, Any] | None,
    attrs: dict[str, Any],
    *,
    created_at: datetime | None = None,
    modified_at: datetime | None = None,
) -> dict[str, Any]:
    """The normalized NGSI-LD form of a stored entity (system attributes only when given)."""
    out: dict[str, Any] = {"id": entity_id, "type": type_name}
    out.update(attrs)
    if location is not None:
        out["location"] = {"type": "GeoProperty", "value": location}
    if org_unit is not None:
        out["orgUnit"] = {"type": "Relationship", "object": org_unit_urn(org_unit)}
    if created_at is not None:
        out["createdAt"] = format_datetime(created_at)
    if modified_at is not None:
        out["modifiedAt"] = format_datetime(modified_at)
    return out


def record_to_ngsi(record: EntityRecord) -> dict[str, Any]:
    return to_ngsi(record.id, record.type, record.org_unit, record.location, record.attrs)


__all__ = [
    "EntityRecord",
    "InvalidInput",
    "format_datetime",
    "is_urn",
    "org_unit_urn",
    "parse_attributes",
    "parse_datetime",
    "parse_entity",
    "record_to_ngsi",
    "to_ngsi",
]
