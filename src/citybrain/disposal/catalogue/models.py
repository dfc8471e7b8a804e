"""The stored catalogue: one row per event type, its spec as JSON."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from citybrain.db.base import Base, JSONType, UTCDateTime


class CatalogueEntryRow(Base):
    """An event type of the district's catalogue. `source` says where it came from (`scenario:fire`: shipped
    with a scenario, refreshed when a release changes it; `import:<file>`: the city's own, never replaced
    by a scenario). A disabled entry stays stored but is left out of the catalogue."""

    __tablename__ = "catalogue_entries"

    code: Mapped[str] = mapped_column(sa.String(16), primary_key=True)
    spec: Mapped[dict[str, Any]] = mapped_column(JSONType)
    source: Mapped[str] = mapped_column(sa.String(256))
    enabled: Mapped[bool] = mapped_column(sa.Boolean, default=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
