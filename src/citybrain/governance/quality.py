"""Data quality rules as data, and their evaluation as records arrive.

A dataset's rules are declarative checks (written in YAML or JSON, validated on save):

- `completeness`: the field is present and not empty;
- `range`: the field is a number within `minimum` … `maximum`;
- `uniqueness`: no two records share the field's value (checked over the whole dataset each round);
- `freshness`: the newest record is at most `max_age` old (e.g. `15m`, `2h`, `1d`).

Each rule has a target share (`min_share`, default 1.0): a rule is met in an hour when passed / checked
reaches it. Record checks run as records arrive: entity writes through a change hook in the writing
transaction's process (counted in memory, added to the store each round: several server processes add to
the same hourly row); cases and complaints in rounds over what arrived since the last one. Dataset checks
(uniqueness, freshness) run once a round. Scores are kept per dataset, rule and hour (`quality_scores`).
"""

from __future__ import annotations

import math
import re
import threading
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, field_validator, model_validator

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d)\s*$")
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
RULE_ID = r"^[a-z0-9][a-z0-9_.-]{0,63}$"


class _Rule(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(pattern=RULE_ID, description="Names the rule in scores and alerts")
    description: str = Field("", max_length=500)
    min_share: float = Field(1.0, ge=0, le=1, description="Share of checks that must pass for the rule to hold")


class Completeness(_Rule):
    check: Literal["completeness"]
    field: str = Field(min_length=1, max_length=128)


class Range(_Rule):
    check: Literal["range"]
    field: str = Field(min_length=1, max_length=128)
    minimum: float | None = None
    maximum: float | None = None

    @model_validator(mode="after")
    def _bounds(self) -> Range:
        if self.minimum is None and self.maximum is None:
            raise ValueError("give minimum, maximum or both")
        if self.minimum is not None and self.maximum is not None and self.minimum > self.maximum:
            raise ValueError("minimum is above maximum")
        return self


class Uniqueness(_Rule):
    check: Literal["uniqueness"]
    field: str = Field(min_length=1, max_length=128)


class Freshness(_Rule):
    check: Literal["freshness"]
    max_age: str = Field(description="Oldest the newest record may be: 90s, 15m, 2h, 1d")

    @field_validator("max_age")
    @classmethod
    def _duration(cls, value: str) -> str:
        if not _DURATION.match(value):
            raise ValueError("a duration such as 90s, 15m, 2h or 1d")
        return value.strip()

    @property
    def max_age_s(self) -> float:
        match = _DURATION.match(self.max_age)
        assert match is not None
        return float(match.group(1)) * _SECONDS[match.group(2)]


Rule = Annotated[Completeness | Range | Uniqueness | Freshness, Field(discriminator="check")]
RECORD_CHECKS = ("completeness", "range")


class RuleSet(BaseModel):
    """What `PUT …/rules` and `citybrain catalog rules` take."""

    model_config = ConfigDict(extra="forbid")

    rules: list[Rule] = Field(default_factory=list, max_length=100)

    @field_validator("rules")
    @classmethod
    def _unique_ids(cls, rules: list[Any]) -> list[Any]:
        seen: set[str] = set()
        for rule in rules:
            if rule.id in seen:
                raise ValueError(f"rule id {rule.id!r} is used twice")
            seen.add(rule.id)
        return rules


_rules_adapter: TypeAdapter[list[Rule]] = TypeAdapter(list[Rule])


def parse_rules(raw: Iterable[Mapping[str, Any]]) -> list[Any]:
    """Rules as stored (already validated when saved)."""
    return _rules_adapter.validate_python(list(raw))


def check_fields(rules: list[Any], fields: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(field path, reason) for every rule naming a field the dataset does not have."""
    return [(f"rules[{i}].field", f"the dataset has no field {rule.field!r}; its fields: {', '.join(fields)}")
            for i, rule in enumerate(rules) if getattr(rule, "field", None) is not None and rule.field not in fields]


def _present(value: Any) -> bool:
    return value is not None and value != "" and value != [] and value != {}


def record_passes(rule: Any, record: Mapping[str, Any]) -> bool | None:
    """Whether one record passes a record rule (None: the rule does not look at single records)."""
    if rule.check == "completeness":
        return _present(record.get(rule.field))
    if rule.check == "range":
        value = record.get(rule.field)
        if not isinstance(value, int | float) or isinstance(value, bool) or math.isnan(value):
            return False
        return (rule.minimum is None or value >= rule.minimum) and (rule.maximum is None or value <= rule.maximum)
    return None


def hour_of(moment: datetime) -> datetime:
    return moment.replace(minute=0, second=0, microsecond=0)


@dataclass
class Tally:
    checked: int = 0
    passed: int = 0


class Accumulator:
    """Record checks counted in this process between two rounds (thread-safe: writes run in worker threads),
    and the newest arrival per dataset."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._tallies: dict[tuple[str, str, datetime], Tally] = defaultdict(Tally)
        self._arrivals: dict[str, datetime] = {}

    def add(self, dataset_id: str, results: Iterable[tuple[str, bool]], at: datetime) -> None:
        hour = hour_of(at)
        with self._lock:
            for rule_id, passed in results:
                tally = self._tallies[(dataset_id, rule_id, hour)]
                tally.checked += 1
                tally.passed += passed
            self._arrived(dataset_id, at)

    def take(self) -> tuple[dict[tuple[str, str, datetime], Tally], dict[str, datetime]]:
        with self._lock:
            tallies, arrivals = dict(self._tallies), dict(self._arrivals)
            self._tallies.clear()
            self._arrivals.clear()
        return tallies, arrivals

    def give_back(self, tallies: Mapping[tuple[str, str, datetime], Tally], arrivals: Mapping[str, datetime]) -> None:
        """A round that could not store what it took returns it, to be stored by the next."""
        with self._lock:
            for key, tally in tallies.items():
                mine = self._tallies[key]
                mine.checked += tally.checked
                mine.passed += tally.passed
            for dataset_id, at in arrivals.items():
                self._arrived(dataset_id, at)

    def _arrived(self, dataset_id: str, at: datetime) -> None:
        known = self._arrivals.get(dataset_id)
        if known is None or at > known:
            self._arrivals[dataset_id] = at
