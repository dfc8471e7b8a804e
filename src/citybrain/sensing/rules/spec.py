"""Rules as data: a YAML file per device type declares what to watch and how severe it is; detectors
(plug-ins in `rules.detectors`) execute them over columnar batches."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from citybrain.core.errors import FieldError, InvalidInput

Severity = Literal["info", "minor", "major", "critical"]
SEVERITIES: tuple[Severity, ...] = ("info", "minor", "major", "critical")
RULE_ID = r"^[a-z0-9][a-z0-9_.-]{1,63}$"


class RuleSpec(BaseModel):
    """One rule of one device type. `params` are the detector's own (each detector validates them with
    its `Params` model); `measurement` is None for rules about silence (stale) or about other rules
    (composite)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=RULE_ID, description="Unique within the device type, e.g. pm25-heavy")
    title: str
    title_zh: str = ""
    detector: str = Field(description="Detector slug: threshold, rate, stale, zscore, composite …")
    measurement: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    severity: Severity = "minor"
    suppress_s: float = Field(
        300.0, ge=0, description="A raise within this long after the same subject cleared reopens that alert")
    enabled: bool = True


class RuleFile(BaseModel):
    """The rules of one device type, as written in YAML."""

    model_config = ConfigDict(extra="forbid")

    device_type: str
    rules: list[RuleSpec] = Field(default_factory=list)


def parse_rules(text: str, *, source: str = "rules") -> RuleFile:
    """Parse and validate a rule file; errors name the rule's position and field."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise InvalidInput(f"{source}: not valid YAML: {exc}".splitlines()[0],
                           errors=[FieldError(source, "not valid YAML")]) from None
    try:
        parsed = RuleFile.model_validate(data)
    except ValidationError as exc:
        errors = [FieldError(".".join(str(p) for p in e["loc"]) or source, e["msg"]) for e in exc.errors()]
        raise InvalidInput(f"{source}: {errors[0].field}: {errors[0].reason}", errors=errors) from None
    seen: set[str] = set()
    for index, rule in enumerate(parsed.rules):
        if rule.id in seen:
            raise InvalidInput(f"{source}: rule id {rule.id!r} appears twice",
                               errors=[FieldError(f"rules.{index}.id", "duplicate rule id")])
        seen.add(rule.id)
    return parsed


def load_rules(path: Path) -> RuleFile:
    return parse_rules(path.read_text(encoding="utf-8"), source=str(path))


@dataclass(slots=True)
class Transitions:
    """What one rule's alert states did over one batch or tick.

    `subject` says what the indices index: "device" → positions within the device type (ReadingBatch.local),
    "area" → area ids (the composite rule's area kind). For each raise: the value and device timestamp
    that caused it; for each clear: the timestamp that cleared it. Within one Transitions a subject appears at
    most once in `raised` and once in `cleared`, never in both. When a subject went into and out of alert
    within one call, the engine returns that rule twice (the raise, then the clear): apply the list in order.
    """

    rule: RuleSpec
    subject: Literal["device", "area"]
    raised: np.ndarray
    raised_value: np.ndarray
    raised_ts: np.ndarray
    cleared: np.ndarray
    cleared_ts: np.ndarray

    def __bool__(self) -> bool:
        return bool(self.raised.size or self.cleared.size)
