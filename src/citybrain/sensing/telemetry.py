"""Telemetry queries in device ids rather than device numbers: shared by the API and the CLI."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import pyarrow as pa
import sqlalchemy as sa
from sqlalchemy.orm import Session

from citybrain.core.errors import FieldError, InvalidInput, OutOfScope
from citybrain.sensing.devices.models import DeviceRow
from citybrain.sensing.lake.query import TelemetryQuery

API_NAMES = {
    "bucket_s": "bucket",
    "aggregations": "agg",
    "device_nums": "deviceId",
    "device_type": "deviceType",
    "measurements": "measurement",
}


def device_numbers(
    session: Session, device_ids: Sequence[str], org_units: Sequence[str] | None = None
) -> tuple[list[int], set[str]]:
    """Numbers of these devices and the types they are of; an unknown id is refused by name. With
    `org_units` (a caller's scope), a device placed elsewhere is refused as not found."""
    found: dict[str, tuple[int, str]] = {}
    places: dict[str, str | None] = {}
    for start in range(0, len(device_ids), 900):
        part = list(device_ids[start : start + 900])
        stmt = sa.select(DeviceRow.device_id, DeviceRow.num, DeviceRow.device_type, DeviceRow.org_unit).where(
            DeviceRow.device_id.in_(part)
        )
        for device_id, num, kind, org_unit in session.execute(stmt).all():
            found[device_id] = (num, kind)
            places[device_id] = org_unit
    if org_units is not None:
        allowed = set(org_units)
        outside = [d for d in device_ids if d in found and places[d] not in allowed]
        if outside:
            raise OutOfScope(f"deviceId: no device {outside[0]!r} in your area")
    unknown = [d for d in device_ids if d not in found]
    if unknown:
        raise InvalidInput.at(
            "deviceId",
            f"unknown device {unknown[0]!r}"
            + (f" (and {len(unknown) - 1} more)" if len(unknown) > 1 else ""),
        )
    return [found[d][0] for d in device_ids], {found[d][1] for d in device_ids}


def build_query(
    session: Session,
    *,
    device_ids: Sequence[str],
    device_type: str | None,
    measurements: Sequence[str],
    start: datetime | None,
    end: datetime | None,
    bucket_s: int | None,
    aggregations: Sequence[str],
    limit: int,
    types: Sequence[str],
    org_units: Sequence[str] | None = None,
) -> TelemetryQuery | None:
    """The lake query for these API or CLI parameters. With `org_units` (a caller's scope) it covers only
    devices placed there; None when no device of the caller's area can match."""
    if device_type is not None and device_type not in types:
        raise InvalidInput.at("deviceType", f"unknown device type {device_type!r}")
    if start is None or end is None:
        raise InvalidInput.at(
            "start" if start is None else "end", "start and end (with their zone) are required"
        )
    nums = None
    if device_ids:
        nums, kinds = device_numbers(session, device_ids, org_units)
        if device_type is None and len(kinds) == 1:
            device_type = kinds.pop()  # the lake then reads that type's partitions only
    elif org_units is not None:
        stmt = sa.select(DeviceRow.num).where(DeviceRow.org_unit.in_(list(org_units)))
        if device_type is not None:
            stmt = stmt.where(DeviceRow.device_type == device_type)
        nums = list(session.scalars(stmt))
        if not nums:
            return None
    try:
        return TelemetryQuery(
            start=start,
            end=end,
            device_nums=nums,
            device_type=device_type,
            measurements=list(measurements) or None,
            bucket_s=bucket_s,
            aggregations=list(aggregations) or None,
            limit=limit,
        )
    except InvalidInput as exc:  # name the fields as the API and the CLI spell them
        errors = [FieldError(API_NAMES.get(e.field.split(".")[0], e.field), e.reason) for e in exc.errors]
        raise InvalidInput(
            f"{errors[0].field}: {errors[0].reason}" if errors else exc.detail, errors=errors
        ) from None


def with_device_ids(session: Session, table: pa.Table) -> pa.Table:
    """The result with a `device_id` column in front of `device_num`."""
    nums = sorted(set(table.column("device_num").to_pylist())) if table.num_rows else []
    names: dict[int, str] = {}
    for start in range(0, len(nums), 900):
        names.update(
            (num, device_id)
            for num, device_id in session.execute(
                sa.select(DeviceRow.num, DeviceRow.device_id).where(
                    DeviceRow.num.in_(nums[start : start + 900])
                )
            ).all()
        )
    ids = pa.array([names.get(n) for n in table.column("device_num").to_pylist()], pa.string())
    return table.add_column(table.schema.get_field_index("device_num"), "device_id", ids)


def rows(table: pa.Table) -> list[dict[str, Any]]:
    out = table.to_pylist()
    for row in out:
        for key in ("ts", "bucket"):
            if key in row and row[key] is not None:
                row[key] = row[key].isoformat().replace("+00:00", "Z")
    return out
