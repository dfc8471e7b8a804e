"""Pydantic schemas of the traffic API: signal plans and the live twin's view."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

PlanStatus = Literal["proposed", "simulating", "applied", "rejected", "measured", "failed"]


class PlanCreate(BaseModel):
    """A change of signal control for some intersections of the live twin: a controller, or green
    durations per green phase (program index → seconds; phases left out keep the program's)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"example": {
        "intersections": ["GS_cluster_357187_359543"], "controller": "maxpressure", "horizon_s": 900}})

    intersections: list[str] = Field(min_length=1, max_length=500)
    controller: str | None = Field(None, max_length=64)
    timing: dict[int, float] | None = Field(None, description="green phase index → green seconds (5–300)")
    horizon_s: float = Field(900.0, ge=60, le=7200, description="Simulated seconds the plan is judged over")

    @model_validator(mode="after")
    def _one_change(self) -> PlanCreate:
        if (self.controller is None) == (self.timing is None):
            raise ValueError("give exactly one of controller or timing")
        if self.timing is not None:
            if not self.timing:
                raise ValueError("timing names no phase")
            for phase, seconds in self.timing.items():
                if not 5 <= seconds <= 300:
                    raise ValueError(f"timing.{phase}: a green lasts 5 to 300 s, not {seconds:g}")
        return self


class PlanRead(BaseModel):
    id: str
    scenario: str
    intersections: list[str]
    controller: str | None
    timing: dict[str, float] | None
    horizon_s: float
    status: PlanStatus
    reason: str | None
    prediction: dict[str, Any] | None = Field(
        None, description="baseline and candidate over the horizon: mean_delay_s, throughput, vehicles")
    outcome: dict[str, Any] | None = Field(None, description="measured on the live twin after applying")
    commands: list[str]
    applied_sim_time: float | None
    history: list[dict[str, Any]]
    created_by: str
    created_at: datetime
    updated_at: datetime


class PlanPage(BaseModel):
    items: list[PlanRead]
    next_cursor: str | None = None
