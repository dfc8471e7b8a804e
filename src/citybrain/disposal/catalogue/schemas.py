"""What the catalogue API returns."""

from __future__ import annotations

from pydantic import BaseModel, Field

from citybrain.disposal.catalogue.service import CatalogueEntry
from citybrain.disposal.catalogue.spec import EventTypeSpec, LocalizedText


class EventTypeRead(EventTypeSpec):
    """An event type as stored, with where it came from."""

    source: str = Field(description="scenario:<slug> (shipped) or import:<file> (the city's own)")

    @classmethod
    def of(cls, entry: CatalogueEntry) -> EventTypeRead:
        return cls.model_validate({**entry.spec.model_dump(), "source": entry.source})


class EventTypePage(BaseModel):
    items: list[EventTypeRead]
    next_cursor: str | None = None


class CategoryRead(BaseModel):
    slug: str
    name: LocalizedText
    count: int = Field(description="Event types of the category in the district's catalogue")
