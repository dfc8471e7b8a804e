"""The hub's routers beyond entities, types and the org tree; each part adds its router here."""

from __future__ import annotations

from fastapi import APIRouter


def extra() -> list[APIRouter]:
    return []
