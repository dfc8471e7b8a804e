"""The entity type registry: which types the hub accepts and what their attributes must look like.

Types are data (`TypeSpec`), contributed by scenario plug-ins in code or defined by operators through the
API. A declared attribute is checked on write (kind, Property vs Relationship); undeclared attributes are
accepted as given, because cities always know more about a thing than its type anticipated.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from citybrain.core.context import Classification

# \Z, not $: a $ also matches before a trailing newline, and "temp\n" is no attribute name.
TYPE_NAME_RE = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,127}\Z")
ATTR_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}\Z")
ATTR_NAME_RULE = "ASCII letters, digits and _, not starting with a digit, at most 128 characters"


class AttrKind(StrEnum):
    number = "number"
    integer = "integer"
    string = "string"
    boolean = "boolean"
    datetime = "datetime"
    object = "object"
    array = "array"
    geometry = "geometry"
    relationship = "relationship"
    language = "language"
    any = "any"


class AttrSpec(BaseModel):
    """What one attribute of a type holds."""

    model_config = ConfigDict(extra="forbid")

    kind: AttrKind = AttrKind.any
    unit: str | None = Field(None, description="UN/CEFACT unit code expected, e.g. CEL, MTR, GQ (µg/m³).")
    required: bool = False
    description: str = ""
    enum: list[str | int | float] | None = Field(None, description="Allowed values, when the set is closed.")
    minimum: float | None = None
    maximum: float | None = None
    classification: Classification | None = Field(
        None, description="This attribute's own classification, when above its type's (a resident's name, an ID "
        "number): a reader cleared below it does not get the attribute; personal or sensitive text is masked "
        "by the reader's role.")


class TypeSpec(BaseModel):
    """An entity type: a Smart Data Models name where one exists, its attributes and who contributed it."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="Type name, e.g. AirQualityObserved.")
    title: str = ""
    title_zh: str = ""
    description: str = ""
    smart_data_model: str | None = Field(None, description="Smart Data Models subject, e.g. dataModel.Environment.")
    attributes: dict[str, AttrSpec] = Field(default_factory=dict)
    source: str = Field("operator", description="Which scenario plug-in or 'operator' defined it.")
    classification: Classification = Field(
        "internal", description="How entities of this type are classified (public, internal, personal, sensitive): "
        "callers cleared below it do not see them.")

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not TYPE_NAME_RE.match(value):
            raise ValueError("a type name starts with a letter and holds only letters, digits and '_'")
        return value

    @field_validator("attributes")
    @classmethod
    def _attribute_names(cls, value: dict[str, AttrSpec]) -> dict[str, AttrSpec]:
        for name in value:
            if not ATTR_NAME_RE.match(name):
                raise ValueError(f"attribute name {name!r}: {ATTR_NAME_RULE}")
        return value


class TypeRegistry:
    """Types known to one running hub: code-contributed ones plus those stored in the database."""

    def __init__(self, specs: list[TypeSpec] | None = None) -> None:
        self._specs: dict[str, TypeSpec] = {}
        for spec in specs or []:
            self.add(spec)

    def add(self, spec: TypeSpec, *, replace: bool = False) -> None:
        existing = self._specs.get(spec.name)
        if existing is not None and not replace and existing != spec:
            raise ValueError(f"entity type {spec.name} is already defined by {existing.source}")
        self._specs[spec.name] = spec

    def get(self, name: str) -> TypeSpec | None:
        return self._specs.get(name)

    def __contains__(self, name: object) -> bool:
        return name in self._specs

    def names(self) -> list[str]:
        return sorted(self._specs)

    def all(self) -> list[TypeSpec]:
        return [self._specs[name] for name in self.names()]

    def remove(self, name: str) -> None:
        self._specs.pop(name, None)


def value_matches(kind: AttrKind, value: Any) -> bool:
    """Whether a Property value has the declared kind."""
    match kind:
        case AttrKind.number:
            return isinstance(value, int | float) and not isinstance(value, bool)
        case AttrKind.integer:
            return isinstance(value, int) and not isinstance(value, bool)
        case AttrKind.string | AttrKind.datetime:
            return isinstance(value, str)
        case AttrKind.boolean:
            return isinstance(value, bool)
        case AttrKind.object:
            return isinstance(value, dict)
        case AttrKind.array:
            return isinstance(value, list)
        case _:
            return True
