"""Vital-sign indicators as data; `vitals.service` computes them."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from citybrain.sensing.rules.spec import SEVERITIES


class IndicatorSpec(BaseModel):
    """One vital sign. `kind` picks how it is computed; the other fields are that kind's parameters."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    slug: str = Field(pattern=r"^[a-z][a-z0-9_]{1,63}$")
    title: str
    title_zh: str
    kind: Literal["online_rate", "alerts_open", "share_in_alert", "mean_latest"]
    device_type: str | None = None
    rule_id: str | None = None
    measurement: str | None = None
    severity: str | None = None
    transform: str | None = Field(None, description="Applied to the mean: 'aqi_pm25' (HJ 633 IAQI of PM2.5)")
    unit: str | None = None


BUILTIN_INDICATORS = [
    IndicatorSpec(
        slug="device_online_rate",
        title="Devices online",
        title_zh="设备在线率",
        kind="online_rate",
        unit="ratio",
    ),
    *[
        IndicatorSpec(
            slug=f"alerts_open_{s}",
            title=f"Open {s} alerts",
            title_zh=f"未消除告警（{z}）",
            kind="alerts_open",
            severity=s,
        )
        for s, z in zip(SEVERITIES, ("提示", "一般", "较重", "严重"), strict=True)
    ],
]
