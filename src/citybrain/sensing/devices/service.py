"""Device registry: registration in bulk (API, CSV, NGSI-LD), credentials, and the index the hot path uses.

Registration is set-based like the hub's entity writes: a million devices are one read of the ids already
taken and a few multi-row inserts, not a million round trips.
"""

from __future__ import annotations

import csv
import hashlib
import hmac
import io
import re
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
import sqlalchemy as sa
from sqlalchemy.orm import Session

from citybrain.hub.entities.service import ItemError
from citybrain.hub.org.tree import OrgTree
from citybrain.sensing.devices.index import DeviceIndex
from citybrain.sensing.devices.models import DeviceRow
from citybrain.sensing.devices.spec import DeviceTypeSpec

DEVICE_ID_RE = re.compile(r"[A-Za-z0-9_.-]{1,64}\Z")
CSV_COLUMNS = ("device_id", "device_type", "org_unit", "lon", "lat")


@dataclass(frozen=True, slots=True)
class DeviceInput:
    device_id: str
    device_type: str
    org_unit: str | None = None
    lon: float | None = None
    lat: float | None = None
    secret: str | None = None  # provisioned elsewhere; a new one is issued when None


@dataclass(slots=True)
class Registration:
    """What a bulk registration did: the new devices with their secrets (shown once), ids already
    registered, and each refused item."""

    created: list[tuple[str, int, str]] = field(default_factory=list)  # (device_id, num, secret)
    existing: list[str] = field(default_factory=list)
    errors: list[ItemError] = field(default_factory=list)
    rows: list[dict[str, Any]] = field(default_factory=list)  # the new devices as stored, for the index


def secret_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def check_secret(stored_hash: str, secret: str) -> bool:
    return hmac.compare_digest(stored_hash, secret_hash(secret))


def device_entity_id(device_id: str) -> str:
    return f"urn:ngsi-ld:Device:{device_id}"


def validate_devices(
    items: Sequence[DeviceInput],
    *,
    types: dict[str, DeviceTypeSpec],
    org_tree: OrgTree,
) -> tuple[list[tuple[int, DeviceInput]], list[ItemError]]:
    """Check each item on its own; a bad item is reported with its index and never blocks the others."""
    good: list[tuple[int, DeviceInput]] = []
    errors: list[ItemError] = []
    seen: dict[str, int] = {}
    for index, item in enumerate(items):
        problem: tuple[str, str] | None = None
        if not isinstance(item.device_id, str) or not DEVICE_ID_RE.match(item.device_id):
            problem = ("device_id", "1–64 characters of A–Z, a–z, 0–9, '_', '.', '-'")
        elif item.device_type not in types:
            problem = (
                "device_type",
                f"unknown device type {item.device_type!r}; known: {', '.join(sorted(types))}",
            )
        elif item.org_unit is not None and item.org_unit not in org_tree:
            problem = ("org_unit", f"unknown org unit {item.org_unit!r}")
        elif (item.lon is None) != (item.lat is None):
            problem = ("lon", "lon and lat go together")
        elif item.lon is not None and not (-180 <= item.lon <= 180 and -90 <= (item.lat or 0) <= 90):
            problem = ("lon", "lon within [-180, 180] and lat within [-90, 90]")
        elif item.device_id in seen:
            problem = ("device_id", f"the same device appears earlier at [{seen[item.device_id]}]")
        if problem is not None:
            errors.append(
                ItemError(
                    index,
                    item.device_id if isinstance(item.device_id, str) else None,
                    f"[{index}].{problem[0]}",
                    problem[1],
                )
            )
            continue
        seen[item.device_id] = index
        good.append((index, item))
    return good, errors


def register_devices(
    session: Session,
    *,
    items: Sequence[DeviceInput],
    types: dict[str, DeviceTypeSpec],
    org_tree: OrgTree,
    index: DeviceIndex,
    now: datetime,
) -> Registration:
    """Register new devices; ids already registered are reported as existing and left as they are.

    Runs inside the caller's write transaction (which serialises registrations, so the numbers and
    positions handed out here cannot be taken twice)."""
    outcome = Registration()
    good, outcome.errors = validate_devices(items, types=types, org_tree=org_tree)
    if not good:
        return outcome
    taken = _registered_ids(session, [item.device_id for _, item in good])
    fresh = [(i, item) for i, item in good if item.device_id not in taken]
    outcome.existing = [item.device_id for _, item in good if item.device_id in taken]
    if fresh:
        collides = index.colliding([item.device_id for _, item in fresh])
        for (i, item), bad in zip(fresh, collides.tolist(), strict=True):
            if bad:
                outcome.errors.append(
                    ItemError(
                        i,
                        item.device_id,
                        f"[{i}].device_id",
                        "its hash equals another device's; choose another id",
                        409,
                    )
                )
        fresh = [pair for pair, bad in zip(fresh, collides.tolist(), strict=True) if not bad]
    if not fresh:
        return outcome
    next_num = (session.scalar(sa.select(sa.func.max(DeviceRow.num))) or 0) + 1
    next_local = dict(
        session.execute(
            sa.select(DeviceRow.device_type, sa.func.max(DeviceRow.local)).group_by(DeviceRow.device_type)
        ).all()
    )
    rows: list[dict[str, Any]] = []
    for offset, (_, item) in enumerate(fresh):
        local = next_local.get(item.device_type)
        local = 0 if local is None else local + 1
        next_local[item.device_type] = local
        secret = item.secret or secrets.token_urlsafe(24)
        num = next_num + offset
        rows.append(
            {
                "num": num,
                "device_id": item.device_id,
                "device_type": item.device_type,
                "local": local,
                "org_unit": item.org_unit,
                "lon": item.lon,
                "lat": item.lat,
                "secret_hash": secret_hash(secret),
                "enabled": True,
                "created_at": now,
                "last_seen_at": None,
            }
        )
        outcome.created.append((item.device_id, num, secret))
    session.execute(sa.insert(DeviceRow), rows)
    outcome.rows = rows
    return outcome


def add_to_index(index: DeviceIndex, rows: Iterable[dict[str, Any]] | Iterable[Any]) -> None:
    """Index stored devices (dicts as `register_devices` wrote them, or DeviceRow-like objects)."""
    rows = list(rows)
    if not rows:
        return

    def get(row: Any, name: str) -> Any:
        return row[name] if isinstance(row, dict) else getattr(row, name)

    index.add(
        np.array([get(r, "num") for r in rows], np.int64),
        [get(r, "device_id") for r in rows],
        [get(r, "device_type") for r in rows],
        np.array([get(r, "local") for r in rows], np.int32),
        [get(r, "org_unit") for r in rows],
        np.array([get(r, "enabled") for r in rows], bool),
    )


def load_index(
    session: Session, *, types: Sequence[str], org_tree: OrgTree, chunk: int = 200_000
) -> DeviceIndex:
    """The index of every registered device, read in chunks (3 million rows stay a few hundred MB of
    transient Python objects at most)."""
    index = DeviceIndex(types, list(org_tree.units))
    last = 0
    columns = (
        DeviceRow.num,
        DeviceRow.device_id,
        DeviceRow.device_type,
        DeviceRow.local,
        DeviceRow.org_unit,
        DeviceRow.enabled,
    )
    while True:
        rows = session.execute(
            sa.select(*columns).where(DeviceRow.num > last).order_by(DeviceRow.num).limit(chunk)
        ).all()
        known = [r for r in rows if r.device_type in index.type_codes]
        add_to_index(index, [r._asdict() for r in known])
        if len(rows) < chunk:
            return index
        last = rows[-1].num


def _registered_ids(session: Session, ids: list[str]) -> set[str]:
    taken: set[str] = set()
    for start in range(0, len(ids), 900):  # SQLite's bound-parameter limit is 999 on old builds
        part = ids[start : start + 900]
        taken.update(session.scalars(sa.select(DeviceRow.device_id).where(DeviceRow.device_id.in_(part))))
    return taken


def devices_by_local(session: Session, *, device_type: str, locals_: Sequence[int]) -> dict[int, DeviceRow]:
    """Stored devices of a type at these positions (for the few a batch of transitions names)."""
    out: dict[int, DeviceRow] = {}
    values = sorted({int(v) for v in locals_})
    for start in range(0, len(values), 900):
        part = values[start : start + 900]
        for row in session.scalars(
            sa.select(DeviceRow).where(DeviceRow.device_type == device_type, DeviceRow.local.in_(part))
        ):
            out[row.local] = row
    return out


def parse_csv(text: str) -> tuple[list[DeviceInput], list[ItemError]]:
    """Devices from CSV with a header naming at least device_id and device_type (org_unit, lon, lat and
    secret are optional columns). A row that cannot be read is reported with its line number."""
    reader = csv.DictReader(io.StringIO(text))
    header = reader.fieldnames or []
    missing = [c for c in ("device_id", "device_type") if c not in header]
    if missing:
        return [], [ItemError(0, None, "header", f"missing column(s): {', '.join(missing)}")]
    items: list[DeviceInput] = []
    errors: list[ItemError] = []
    for line, row in enumerate(reader, start=2):
        try:
            lon = float(row["lon"]) if row.get("lon") else None
            lat = float(row["lat"]) if row.get("lat") else None
        except ValueError:
            errors.append(
                ItemError(line, row.get("device_id"), f"line {line}.lon", "lon and lat must be numbers")
            )
            continue
        items.append(
            DeviceInput(
                row["device_id"] or "",
                row["device_type"] or "",
                row.get("org_unit") or None,
                lon,
                lat,
                row.get("secret") or None,
            )
        )
    return items, errors


def from_ngsi(entities: Sequence[Any]) -> tuple[list[DeviceInput], list[ItemError]]:
    """Devices from NGSI-LD `Device` entities: the id's last segment is the device id, `deviceCategory`
    or `controlledProperty` is not enough to know the type, so the entity must carry `deviceType`."""
    items: list[DeviceInput] = []
    errors: list[ItemError] = []
    for i, entity in enumerate(entities):
        if not isinstance(entity, dict) or not isinstance(entity.get("id"), str):
            errors.append(ItemError(i, None, f"[{i}].id", "an NGSI-LD entity with an id is required"))
            continue
        device_id = entity["id"].rsplit(":", 1)[-1]
        device_type = (
            (entity.get("deviceType") or {}).get("value")
            if isinstance(entity.get("deviceType"), dict)
            else None
        )
        if not isinstance(device_type, str):
            errors.append(
                ItemError(i, device_id, f"[{i}].deviceType", "a Property naming the device type is required")
            )
            continue
        location = (entity.get("location") or {}).get("value") or {}
        lon = lat = None
        if isinstance(location, dict) and location.get("type") == "Point":
            coordinates = location.get("coordinates") or []
            if len(coordinates) >= 2 and all(isinstance(c, int | float) for c in coordinates[:2]):
                lon, lat = float(coordinates[0]), float(coordinates[1])
        org = (entity.get("orgUnit") or {}).get("object") if isinstance(entity.get("orgUnit"), dict) else None
        org_unit = org.rsplit(":", 1)[-1] if isinstance(org, str) else None
        items.append(DeviceInput(device_id, device_type, org_unit, lon, lat))
    return items, errors


def device_entity(row: DeviceRow | dict[str, Any], spec: DeviceTypeSpec) -> dict[str, Any]:
    """The hub entity of a device (NGSI-LD normalized, Smart Data Models `Device`)."""
    get = row.get if isinstance(row, dict) else lambda name: getattr(row, name)
    entity: dict[str, Any] = {
        "id": device_entity_id(get("device_id")),
        "type": "Device",
        "deviceCategory": {"type": "Property", "value": "sensor"},
        "deviceType": {"type": "Property", "value": spec.slug},
        "controlledProperty": {"type": "Property", "value": list(spec.measurements)},
        "deviceState": {"type": "Property", "value": "ok"},
    }
    if get("lon") is not None:
        entity["location"] = {
            "type": "GeoProperty",
            "value": {"type": "Point", "coordinates": [get("lon"), get("lat")]},
        }
    if get("org_unit"):
        entity["orgUnit"] = {"type": "Relationship", "object": f"urn:ngsi-ld:OrgUnit:{get('org_unit')}"}
    return entity
