"""The event catalogue (一张清单) as data: what kinds of city events exist, who owns each, at which level it
is handled, how long each stage may take and what evidence closes it.

Entries are YAML (contributed by scenario plug-ins, or imported by a city with `citybrain catalogue
import`), validated by these models; the engines (routing, SLA, classification) execute them.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    PlainValidator,
    model_validator,
)

from citybrain.hub.org.departments import DEPARTMENTS

LEVELS = ("village", "town", "district")
Level = Literal["village", "town", "district"]
Priority = Literal["routine", "urgent", "emergency"]
CATEGORIES: dict[str, tuple[str, str]] = {
    "city_management": ("城市管理", "City management"),
    "roads_traffic": ("道路交通", "Roads and traffic"),
    "environment": ("生态环境", "Environment"),
    "water": ("水务", "Water"),
    "fire_safety": ("消防与安全生产", "Fire and safety"),
    "community": ("社区事务", "Community affairs"),
    "market": ("市场监管", "Market regulation"),
    "health": ("卫生健康", "Health"),
    "education": ("教育", "Education"),
    "labour": ("劳动和社会保障", "Labour and social security"),
}
Category = Literal[
    "city_management", "roads_traffic", "environment", "water", "fire_safety",
    "community", "market", "health", "education", "labour",
]
Evidence = Literal[
    "photo_before", "photo_after", "video", "document", "signature", "inspection_record", "measurement",
    "reply_to_citizen",
]
DEPARTMENT_SLUGS = frozenset(d.slug for d in DEPARTMENTS)
CODE = r"^[A-Z]{2,4}-\d{2}-\d{2,3}$"
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(m|h|d|wh|wd)\s*$")


class Duration(BaseModel):
    """A stage's time limit: minutes, hours or days on the clock (`30m`, `4h`, `2d`), or working hours and
    working days on the district's working calendar (`8wh`, `3wd`), which skips weekends and public
    holidays. Written in YAML as the short text."""

    model_config = ConfigDict(frozen=True)

    amount: float = Field(gt=0)
    unit: Literal["m", "h", "d", "wh", "wd"]

    @property
    def working(self) -> bool:
        return self.unit in ("wh", "wd")

    @property
    def clock(self) -> timedelta:
        """The length on the clock (for `m`/`h`/`d`); working units are resolved by the calendar."""
        if self.working:
            raise ValueError("a working-time duration needs the working calendar")
        return timedelta(minutes=self.amount) if self.unit == "m" else (
            timedelta(hours=self.amount) if self.unit == "h" else timedelta(days=self.amount))

    def __str__(self) -> str:
        amount = int(self.amount) if self.amount == int(self.amount) else self.amount
        return f"{amount}{self.unit}"

    @classmethod
    def parse(cls, value: object) -> Duration:
        if isinstance(value, Duration):
            return value
        if not isinstance(value, str):
            raise ValueError("a duration is text such as 30m, 4h, 2d, 8wh or 3wd")  # noqa: TRY004 - pydantic reports ValueError
        match = _DURATION.match(value)
        if match is None:
            raise ValueError(f"{value!r} is not a duration (30m, 4h, 2d on the clock; 8wh, 3wd working time)")
        amount = float(match.group(1))
        if amount <= 0:
            raise ValueError("a duration must be longer than zero")
        return cls(amount=amount, unit=match.group(2))  # type: ignore[arg-type]


DurationText = Annotated[Duration, PlainValidator(Duration.parse), PlainSerializer(str, return_type=str)]


def _department_slug(slug: str) -> str:
    if slug not in DEPARTMENT_SLUGS:
        raise ValueError(f"unknown department {slug!r}; known: {', '.join(sorted(DEPARTMENT_SLUGS))}")
    return slug


# Checked where the field is (not in a model validator), so an error names `event_types[3].assisting[1]`.
DepartmentSlug = Annotated[str, AfterValidator(_department_slug)]


class LocalizedText(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    zh: str = Field(min_length=1, max_length=200)
    en: str = Field(min_length=1, max_length=200)


class LocalizedList(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    zh: list[str] = Field(default_factory=list)
    en: list[str] = Field(default_factory=list)


class StageSla(BaseModel):
    """Time limits per stage: `respond` from dispatch until the handling unit receives (签收) the case,
    `handle` from receipt until it is handled with evidence, `close` from handled until verified and
    closed (the reply to the citizen included)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    respond: DurationText
    handle: DurationText
    close: DurationText
    warn_at: float = Field(0.8, gt=0, lt=1, description="Share of a stage's time after which a warning goes out")


class SensingTrigger(BaseModel):
    """Alerts of this sensing rule open (or join) a case of the event type."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    device_type: str
    rule: str


class ExternalRefs(BaseModel):
    """Where the type sits in other taxonomies: the TipDM 2020 three-level path (一级/二级/三级), and the
    311 request types of Los Angeles and New York it corresponds to (for replays and classifier labels)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    tipdm: list[str] = Field(default_factory=list)
    la311: list[str] = Field(default_factory=list)
    nyc311: list[str] = Field(default_factory=list)
    open311_code: str | None = Field(None, description="service_code published on the Open311 API")


class EventTypeSpec(BaseModel):
    """One entry of the catalogue."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    code: str = Field(pattern=CODE, description="Stable code, e.g. CG-01-003 (category prefix, group, item)")
    name: LocalizedText
    category: Category
    subcategory: LocalizedText | None = None
    department: DepartmentSlug = Field(description="Lead department slug (hub.org.departments)")
    assisting: list[DepartmentSlug] = Field(
        default_factory=list, description="Departments that assist on joint cases")
    joint: bool = Field(False, description="Needs several departments (lead + assisting) to close")
    level: Level = Field("town", description="Default handling level")
    priority: Priority = "routine"
    sla: StageSla
    evidence: list[Evidence] = Field(default_factory=lambda: ["photo_after"])
    keywords: LocalizedList = Field(default_factory=LocalizedList)
    examples: LocalizedList = Field(default_factory=LocalizedList, description="Typical reports (classifier seeds)")
    refs: ExternalRefs = Field(default_factory=ExternalRefs)
    sensing: list[SensingTrigger] = Field(default_factory=list)
    description: str = ""

    @model_validator(mode="after")
    def _departments(self) -> EventTypeSpec:
        # Messages start with the field they are about: the loader turns that prefix into the field path.
        if self.department in self.assisting:
            raise ValueError("assisting: the lead department cannot also assist")
        if len(set(self.assisting)) != len(self.assisting):
            raise ValueError("assisting: a department is named twice")
        if self.joint and not self.assisting:
            raise ValueError("joint: a joint event type names its assisting departments")
        return self


class CatalogueFile(BaseModel):
    """One YAML file of the catalogue."""

    model_config = ConfigDict(extra="forbid")

    version: int = Field(1, ge=1)
    event_types: list[EventTypeSpec] = Field(min_length=1)
