"""A synthetic device fleet over a district's real villages, as columns (NumPy arrays).

`build_fleet(count, district="pudong", seed=0)` spreads `count` devices over the district's villages and
communities (real codes from `hub.org.divisions`) with a realistic type mix: many streetlight controllers,
smoke detectors and waste-bin sensors, fewer manhole-cover sensors and traffic detectors, few air-quality
stations and water-level gauges. The same arguments give the same fleet, row for row.

Coordinates are synthetic. The divisions files carry no geometry, so each village gets a plausible point
derived from its code alone (stable across seeds and fleet sizes): towns are placed inside the district's
bounding box (street offices, 街道, inside the urban core), their villages around them, and devices scatter
a few hundred metres around their village. Good enough for maps, bounding-box queries and "stations of one
village"; not a survey.

Urban communities (居委会, 社区) carry more devices than rural villages (村), and every village's share
varies (log-normal), so some villages have many devices of a type and others none.
"""

from __future__ import annotations

import csv
import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from citybrain.core.errors import InvalidInput
from citybrain.hub.org.divisions import Division, read_divisions

FLEET_COLUMNS = ("device_id", "device_type", "org_unit", "lon", "lat")
DEVICE_ID = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")

DEFAULT_MIX: dict[str, float] = {
    "streetlight": 0.34,
    "smoke_detector": 0.26,
    "waste_bin": 0.18,
    "manhole_cover": 0.12,
    "traffic_detector": 0.05,
    "air_quality": 0.03,
    "water_level": 0.02,
}
TYPE_PREFIXES: dict[str, str] = {
    "air_quality": "AQ", "smoke_detector": "SD", "streetlight": "SL", "traffic_detector": "TD",
    "waste_bin": "WB", "water_level": "WL", "manhole_cover": "MC",
}
ID_DIGITS = 7

# (min lon, min lat, max lon, max lat): the district's bounding box and the urban core where street offices
# (街道) sit. Approximate, WGS 84.
DISTRICT_BOUNDS: dict[str, tuple[float, float, float, float]] = {
    "310115": (121.45, 30.85, 121.98, 31.40),   # Shanghai Pudong
    "110108": (116.04, 39.89, 116.39, 40.16),   # Beijing Haidian
    "330106": (119.98, 30.12, 120.20, 30.33),   # Hangzhou Xihu
}
URBAN_CORES: dict[str, tuple[float, float, float, float]] = {
    "310115": (121.49, 31.14, 121.62, 31.28),
    "110108": (116.26, 39.94, 116.36, 40.03),
    "330106": (120.08, 30.25, 120.16, 30.30),
}
DEVICE_SCATTER_DEG = 0.004  # ≈ 400 m: devices around their village's point
URBAN_WEIGHT = 1.6          # urban communities carry more devices than rural villages


@dataclass(frozen=True, eq=False)
class Fleet:
    """Devices as columns: `device_id`, `device_type` and `org_unit` (village code) are NumPy string
    arrays, `lon` and `lat` float64 arrays, all of the same length."""

    device_id: np.ndarray
    device_type: np.ndarray
    org_unit: np.ndarray
    lon: np.ndarray
    lat: np.ndarray

    def __post_init__(self) -> None:
        columns = (self.device_id, self.device_type, self.org_unit, self.lon, self.lat)
        lengths = {len(column) for column in columns}
        if len(lengths) != 1:
            raise ValueError(f"fleet columns have different lengths: {sorted(lengths)}")

    def __len__(self) -> int:
        return len(self.device_id)

    def types(self) -> list[str]:
        """The device types present, sorted."""
        return sorted(np.unique(self.device_type).tolist())

    def counts(self) -> dict[str, int]:
        """Devices per type."""
        names, counts = np.unique(self.device_type, return_counts=True)
        return {str(n): int(c) for n, c in zip(names, counts, strict=True)}

    def equals(self, other: Fleet) -> bool:
        """Same devices in the same order (coordinates compared at the CSV's 1e-6° precision)."""
        return (len(self) == len(other)
                and bool(np.array_equal(self.device_id, other.device_id))
                and bool(np.array_equal(self.device_type, other.device_type))
                and bool(np.array_equal(self.org_unit, other.org_unit))
                and bool(np.allclose(self.lon, other.lon, atol=1e-6, rtol=0))
                and bool(np.allclose(self.lat, other.lat, atol=1e-6, rtol=0)))


def district_code_of(org_unit: str) -> str:
    """The district part of a village code (its first six digits), used as the topic's district segment."""
    return org_unit[:6] if len(org_unit) >= 6 and org_unit[:6].isdigit() else org_unit


def type_prefix(device_type: str, taken: Mapping[str, str] | None = None) -> str:
    """The id prefix of a device type: the shipped ones have fixed prefixes (AQ, SL …), others the initials
    of their slug, lengthened until unique among `taken` (type → prefix)."""
    if device_type in TYPE_PREFIXES:
        return TYPE_PREFIXES[device_type]
    used = set((taken or {}).values()) | set(TYPE_PREFIXES.values())
    words = [w for w in device_type.split("_") if w]
    prefix = "".join(w[0] for w in words).upper() or device_type[:2].upper()
    letters = device_type.replace("_", "").upper()
    for extra in letters:
        if prefix not in used:
            break
        prefix += extra
    return prefix


def _unit_hash(text: str, salt: str) -> tuple[float, float]:
    digest = hashlib.blake2b(f"{salt}:{text}".encode(), digest_size=16).digest()
    return int.from_bytes(digest[:8], "big") / 2**64, int.from_bytes(digest[8:], "big") / 2**64


def village_points(divisions: list[Division]) -> dict[str, tuple[float, float]]:
    """A synthetic (lon, lat) per village code, derived from the codes only (see the module docstring)."""
    district = next(d for d in divisions if d.kind == "district")
    bounds = DISTRICT_BOUNDS.get(district.code)
    if bounds is None:  # an imported district we know nothing about: a ≈ 30 km box at a stable spot
        u, v = _unit_hash(district.code, "district")
        lon0, lat0 = 100 + 20 * u, 22 + 18 * v
        bounds = (lon0, lat0, lon0 + 0.3, lat0 + 0.3)
    core = URBAN_CORES.get(district.code, bounds)
    towns = [d for d in divisions if d.kind == "town"]
    min_lon, min_lat, max_lon, max_lat = bounds
    radius = 0.5 * ((max_lon - min_lon) * (max_lat - min_lat) / max(1, len(towns))) ** 0.5
    centres: dict[str, tuple[float, float]] = {}
    for town in towns:
        box = core if town.subkind == "街道" else bounds
        u, v = _unit_hash(town.code, "town")
        centres[town.code] = (box[0] + u * (box[2] - box[0]), box[1] + v * (box[3] - box[1]))
    points: dict[str, tuple[float, float]] = {}
    for village in (d for d in divisions if d.kind == "village"):
        cx, cy = centres.get(village.parent_code or "", ((min_lon + max_lon) / 2, (min_lat + max_lat) / 2))
        u, v = _unit_hash(village.code, "village")
        r, angle = radius * u ** 0.5, 2 * np.pi * v
        points[village.code] = (float(np.clip(cx + r * np.cos(angle), min_lon, max_lon)),
                                float(np.clip(cy + r * np.sin(angle), min_lat, max_lat)))
    return points


def _apportion(count: int, mix: Mapping[str, float]) -> dict[str, int]:
    """Split `count` by the mix's shares (largest remainder), giving every type at least one device when
    there are enough devices to go round."""
    names = list(mix)
    shares = np.array([mix[n] for n in names], dtype=float)
    shares = shares / shares.sum()
    exact = shares * count
    counts = np.floor(exact).astype(int)
    for i in np.argsort(-(exact - counts), kind="stable")[: count - int(counts.sum())]:
        counts[i] += 1
    if count >= len(names):
        for i in np.flatnonzero(counts == 0):
            donor = int(np.argmax(counts))
            counts[donor] -= 1
            counts[i] += 1
    return {n: int(c) for n, c in zip(names, counts, strict=True) if c > 0}


def _check_mix(mix: Mapping[str, float]) -> dict[str, float]:
    from citybrain.scenarios import scenario_device_types

    known = {spec.slug for spec in scenario_device_types()}
    clean: dict[str, float] = {}
    for name, share in mix.items():
        if name not in known:
            raise InvalidInput.at(f"mix.{name}", f"unknown device type; known: {', '.join(sorted(known))}")
        if not np.isfinite(share) or share < 0:
            raise InvalidInput.at(f"mix.{name}", "a share must be a number ≥ 0")
        if share > 0:
            clean[name] = float(share)
    if not clean:
        raise InvalidInput.at("mix", "no device type has a share above 0")
    return clean


def _ids(type_of: np.ndarray, numbers: np.ndarray, prefixes: list[str], width: int) -> np.ndarray:
    """`{prefix}-{number:0{width}d}` for every device, built as a byte matrix (np.char is ~10× slower)."""
    longest = max(len(p) for p in prefixes)
    out = np.full((len(numbers), longest + 1 + width), 0, dtype=np.uint8)
    for t, prefix in enumerate(prefixes):
        rows = type_of == t
        shift = longest - len(prefix)  # shorter prefixes are padded on the left with NULs, removed below
        out[np.ix_(rows, np.arange(shift, longest))] = np.frombuffer(prefix.encode(), dtype=np.uint8)
    out[:, longest] = ord("-")
    powers = 10 ** np.arange(width - 1, -1, -1, dtype=np.int64)
    out[:, longest + 1:] = (numbers[:, None] // powers % 10 + 48).astype(np.uint8)
    ids = out.view(f"S{out.shape[1]}").ravel()
    if any(len(p) != longest for p in prefixes):
        ids = np.char.lstrip(ids, b"\0")
    return ids.astype(str)


def build_fleet(count: int, *, district: str = "pudong", seed: int = 0,
                mix: Mapping[str, float] | None = None) -> Fleet:
    """`count` devices over the villages of `district` (a packaged district name or code, or a divisions
    prefix), typed by `mix` (device type → share, normalised; default `DEFAULT_MIX`). Deterministic in
    (count, district, seed, mix). Rows are ordered by village, so a contiguous slice of the fleet is a
    neighbourhood (the simulator gives each MQTT connection such a slice, like a gateway)."""
    if count < 1:
        raise InvalidInput.at("count", "a fleet needs at least one device")
    shares = _check_mix(mix if mix is not None else DEFAULT_MIX)
    divisions = read_divisions(district)
    villages = [d for d in divisions if d.kind == "village"]
    if not villages:
        raise InvalidInput.at("district", f"{district} has no villages to place devices in")
    points = village_points(divisions)
    rng = np.random.default_rng(seed)

    urban = np.array([d.subkind != "村" for d in villages])
    weights = np.where(urban, URBAN_WEIGHT, 1.0) * rng.lognormal(0.0, 0.5, len(villages))
    village_of = rng.choice(len(villages), size=count, p=weights / weights.sum())

    per_type = _apportion(count, shares)
    names = sorted(per_type)
    type_of = np.repeat(np.arange(len(names)), [per_type[n] for n in names])
    rng.shuffle(type_of)

    order = np.lexsort((type_of, village_of))  # by village, then type
    village_of, type_of = village_of[order], type_of[order]

    numbers = np.empty(count, dtype=np.int64)
    for t in range(len(names)):
        mask = type_of == t
        numbers[mask] = np.arange(1, int(mask.sum()) + 1)
    prefixes: dict[str, str] = {}
    for name in names:
        prefixes[name] = type_prefix(name, prefixes)
    width = max(ID_DIGITS, len(str(max(per_type.values()))))
    type_names = np.array(names)
    device_type = type_names[type_of]
    device_id = _ids(type_of, numbers, [prefixes[n] for n in names], width)

    codes = np.array([v.code for v in villages])
    vlon = np.array([points[v.code][0] for v in villages])
    vlat = np.array([points[v.code][1] for v in villages])
    bounds = DISTRICT_BOUNDS.get(next(d.code for d in divisions if d.kind == "district"))
    lon = vlon[village_of] + rng.normal(0.0, DEVICE_SCATTER_DEG, count)
    lat = vlat[village_of] + rng.normal(0.0, DEVICE_SCATTER_DEG * 0.85, count)
    if bounds is not None:
        lon = np.clip(lon, bounds[0], bounds[2])
        lat = np.clip(lat, bounds[1], bounds[3])
    return Fleet(device_id=device_id, device_type=device_type, org_unit=codes[village_of],
                 lon=np.round(lon, 6), lat=np.round(lat, 6))


def write_fleet(fleet: Fleet, path: Path | str) -> Path:
    """Write the fleet CSV (`device_id,device_type,org_unit,lon,lat`, coordinates to 1e-6°)."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    table = pa.table({"device_id": fleet.device_id, "device_type": fleet.device_type,
                      "org_unit": fleet.org_unit, "lon": np.round(fleet.lon, 6),
                      "lat": np.round(fleet.lat, 6)})
    with target.open("wb") as handle:
        handle.write((",".join(FLEET_COLUMNS) + "\n").encode())
        # Ids, slugs and codes hold no commas or quotes, so nothing needs quoting.
        pacsv.write_csv(table, handle, pacsv.WriteOptions(include_header=False, quoting_style="none"))
    return target


def read_fleet(path: Path | str) -> Fleet:
    """Read a fleet CSV; rejects it on the first bad row, naming the file and line."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    source = Path(path)
    if not source.exists():
        raise InvalidInput.at(str(source), "file not found")
    with source.open(encoding="utf-8-sig", newline="") as handle:
        header = next(csv.reader(handle), None)
    if header is None or [h.strip() for h in header] != list(FLEET_COLUMNS):
        raise InvalidInput.at(f"{source}:1", f"expected the header {','.join(FLEET_COLUMNS)}")
    try:
        table = pacsv.read_csv(source, convert_options=pacsv.ConvertOptions(
            column_types={"device_id": pa.string(), "device_type": pa.string(), "org_unit": pa.string(),
                          "lon": pa.float64(), "lat": pa.float64()}, strings_can_be_null=False))
    except (pa.ArrowInvalid, UnicodeDecodeError):
        _first_bad_row(source)  # names the line; pyarrow's own message does not
        raise InvalidInput.at(str(source), "not a readable fleet CSV") from None
    if table.num_rows == 0:
        raise InvalidInput.at(str(source), "the fleet has no devices")
    if not _rows_valid(table):
        _first_bad_row(source)
    strings = {name: table.column(name).to_numpy(zero_copy_only=False).astype(str)
               for name in ("device_id", "device_type", "org_unit")}
    return Fleet(device_id=strings["device_id"], device_type=strings["device_type"],
                 org_unit=strings["org_unit"], lon=table.column("lon").to_numpy().astype(np.float64),
                 lat=table.column("lat").to_numpy().astype(np.float64))


def _rows_valid(table: object) -> bool:
    """Every row well-formed and every id unique, checked column-wise in Arrow."""
    import pyarrow.compute as pc

    ids = table.column("device_id")  # type: ignore[attr-defined]
    column = table.column  # type: ignore[attr-defined]
    checks = [
        pc.all(pc.match_substring_regex(ids, DEVICE_ID.pattern)),
        pc.all(pc.greater(pc.utf8_length(column("device_type")), 0)),
        pc.all(pc.greater(pc.utf8_length(column("org_unit")), 0)),
        pc.all(pc.less_equal(pc.abs(column("lon")), 180)),
        pc.all(pc.less_equal(pc.abs(column("lat")), 90)),
    ]
    if not all(check.as_py() is True for check in checks):
        return False
    return pc.count_distinct(ids).as_py() == len(ids)


def _first_bad_row(source: Path) -> None:
    """Re-read row by row (only when something is wrong) to raise an error naming the first bad line."""
    seen: set[str] = set()
    with source.open(encoding="utf-8-sig", newline="") as handle:
        rows = csv.reader(handle)
        next(rows, None)
        for line, row in enumerate(rows, start=2):
            if not row or not any(cell.strip() for cell in row):
                continue
            where = f"{source}:{line}"
            if len(row) != 5:
                raise InvalidInput.at(where, f"expected 5 columns, found {len(row)}")
            device_id, device_type, org_unit = row[0].strip(), row[1].strip(), row[2].strip()
            if not DEVICE_ID.match(device_id):
                raise InvalidInput.at(where, f"device_id {device_id!r} must match [A-Za-z0-9_.-]{{1,64}}")
            if device_id in seen:
                raise InvalidInput.at(where, f"device {device_id} appears twice")
            if not device_type or not org_unit:
                raise InvalidInput.at(where, "device_type and org_unit must not be empty")
            try:
                lon, lat = float(row[3]), float(row[4])
            except ValueError:
                raise InvalidInput.at(where, "lon and lat must be numbers") from None
            if not (-180 <= lon <= 180 and -90 <= lat <= 90):
                raise InvalidInput.at(where, f"({lon}, {lat}) is not a WGS 84 position")
            seen.add(device_id)
