"""API shapes of the org tree."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class OrgUnitRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    code: str = Field(description="National division code, or <district>-<slug> for a department")
    name: str
    name_en: str | None = None
    kind: str = Field(description="district | town | village | department")
    level: int = Field(description="1 district (and its departments), 2 town/street, 3 village/community")
    parent_code: str | None = None
    attributes: dict[str, Any] = {}


class OrgUnitPage(BaseModel):
    items: list[OrgUnitRead]
    next_cursor: str | None = None


class OrgTreeNode(BaseModel):
    code: str
    name: str
    kind: str
    children: list[OrgTreeNode] = []
    child_count: int = 0


class OrgSummary(BaseModel):
    code: str
    name: str
    counts: dict[str, int] = Field(description="units under it by kind")
