"""GeoJSON geometry validation and the distance/box tests used by entity queries.

City-scale distances use a local equirectangular projection around the query point: at ≤ 50 km its
error is far below a GPS fix, and it lets shapely measure distance to lines and polygons exactly.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import shapely
from shapely.geometry import Point, shape

from citybrain.core.errors import ErrorCollector

GEOMETRY_TYPES = {"Point", "MultiPoint", "LineString", "MultiLineString", "Polygon", "MultiPolygon"}
EARTH_RADIUS_M = 6_371_008.8
METERS_PER_DEG_LAT = EARTH_RADIUS_M * math.pi / 180  # ≈ 111,195 m: the sphere haversine_m measures on

BBox = tuple[float, float, float, float]  # min_lon, min_lat, max_lon, max_lat
# Points are indexed by (longitude band, latitude): a box then reads a few bands' latitude ranges instead
# of a whole longitude slab (at 0.01°, about 1 km, a 1 km box reads ~650 index entries of a million,
# not 20,000). Migration 0003 computes the same bands in SQL: keep the two in step.
LON_BANDS_PER_DEGREE = 100


def lon_band(lon: float) -> int:
    """The longitude band of a point (0.01° wide, counted from -180°)."""
    return int((lon + 180.0) * LON_BANDS_PER_DEGREE)


def _finite(number: float) -> bool:
    try:
        return math.isfinite(number)
    except OverflowError:  # an int no double can hold, such as 10**400
        return False


def _check_position(position: Any, path: str, errors: ErrorCollector) -> bool:
    if not isinstance(position, list) or len(position) not in (2, 3):
        errors.add(path, "a position is [longitude, latitude] or [longitude, latitude, altitude]")
        return False
    if not all(isinstance(c, int | float) and not isinstance(c, bool) and _finite(c) for c in position):
        errors.add(path, "coordinates must be finite numbers")
        return False
    lon, lat = position[0], position[1]
    if not -180 <= lon <= 180:
        errors.add(path, f"longitude {lon} is outside [-180, 180]")
        return False
    if not -90 <= lat <= 90:
        errors.add(path, f"latitude {lat} is outside [-90, 90]")
        return False
    return True


def _check_positions(items: Any, path: str, errors: ErrorCollector, minimum: int) -> bool:
    if not isinstance(items, list) or len(items) < minimum:
        errors.add(path, f"needs a list of at least {minimum} positions")
        return False
    return all(_check_position(p, f"{path}[{i}]", errors) for i, p in enumerate(items))


def _check_ring(ring: Any, path: str, errors: ErrorCollector) -> bool:
    if not _check_positions(ring, path, errors, 4):
        return False
    if ring[0][:2] != ring[-1][:2]:
        errors.add(path, "a linear ring must end where it starts")
        return False
    return True


def _check_polygon(rings: Any, path: str, errors: ErrorCollector) -> bool:
    if not isinstance(rings, list) or not rings:
        errors.add(path, "a polygon is a non-empty list of linear rings")
        return False
    return all(_check_ring(r, f"{path}[{i}]", errors) for i, r in enumerate(rings))


def _planar(coordinates: Any) -> Any:
    """Coordinates without altitude. GeoJSON lets positions of one geometry differ in dimension, which
    shapely refuses; every test here is planar anyway."""
    if coordinates and not isinstance(coordinates[0], list):
        return coordinates[:2]
    return [_planar(c) for c in coordinates]


def _shape(geometry: dict[str, Any]) -> Any:
    return shape({"type": geometry["type"], "coordinates": _planar(geometry["coordinates"])})


def validate_geometry(geometry: Any, path: str, errors: ErrorCollector) -> BBox | None:
    """Check a GeoJSON geometry (RFC 7946); returns its bounding box, or None after adding errors."""
    if not isinstance(geometry, dict):
        errors.add(path, "a GeoJSON geometry object is required")
        return None
    kind = geometry.get("type")
    if kind not in GEOMETRY_TYPES:
        errors.add(f"{path}.type", f"unsupported GeoJSON type {kind!r}; use one of {sorted(GEOMETRY_TYPES)}")
        return None
    coords = geometry.get("coordinates")
    cpath = f"{path}.coordinates"
    before = len(errors.errors)
    match kind:
        case "Point":
            _check_position(coords, cpath, errors)
        case "MultiPoint":
            _check_positions(coords, cpath, errors, 1)
        case "LineString":
            _check_positions(coords, cpath, errors, 2)
        case "MultiLineString":
            if not isinstance(coords, list) or not coords:
                errors.add(cpath, "a MultiLineString is a non-empty list of line strings")
            else:
                for i, line in enumerate(coords):
                    _check_positions(line, f"{cpath}[{i}]", errors, 2)
        case "Polygon":
            _check_polygon(coords, cpath, errors)
        case "MultiPolygon":
            if not isinstance(coords, list) or not coords:
                errors.add(cpath, "a MultiPolygon is a non-empty list of polygons")
            else:
                for i, polygon in enumerate(coords):
                    _check_polygon(polygon, f"{cpath}[{i}]", errors)
    if len(errors.errors) > before:
        return None
    if kind == "Point":
        return (coords[0], coords[1], coords[0], coords[1])
    geom = _shape(geometry)
    if kind in ("Polygon", "MultiPolygon") and not geom.is_valid:
        errors.add(cpath, f"invalid polygon: {shapely.is_valid_reason(geom)}")
        return None
    return tuple(float(v) for v in geom.bounds)  # type: ignore[return-value]


def haversine_m(lon1: float, lat1: float, lon2: float, lat2: float) -> float:
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(a)))


def distance_m(geometry: dict[str, Any], lon: float, lat: float) -> float:
    """Distance in metres from a point to the nearest part of a geometry (0 inside a polygon)."""
    if geometry["type"] == "Point":
        c = geometry["coordinates"]
        return haversine_m(lon, lat, c[0], c[1])
    kx = METERS_PER_DEG_LAT * math.cos(math.radians(lat))

    def project(coords: np.ndarray) -> np.ndarray:
        return np.column_stack(((coords[:, 0] - lon) * kx, (coords[:, 1] - lat) * METERS_PER_DEG_LAT))

    projected = shapely.transform(_shape(geometry), project)
    return float(projected.distance(Point(0.0, 0.0)))


def box_around(lon: float, lat: float, meters: float) -> BBox:
    """A box that contains every point within `meters` (great-circle, as haversine_m) of (lon, lat).

    The bounds of a spherical cap: its latitude reach is its angular radius; its longitude reach is
    asin(sin(radius) / cos(lat)), all 180° once the cap holds a pole. A 0.01 % margin absorbs rounding.
    """
    radius = meters / EARTH_RADIUS_M
    dlat = math.degrees(radius) * 1.0001
    reach = math.sin(min(radius, math.pi / 2)) / max(math.cos(math.radians(lat)), 1e-12)
    dlon = 180.0 if radius >= math.pi / 2 or reach >= 1 else min(180.0, math.degrees(math.asin(reach)) * 1.0001)
    return (max(-180.0, lon - dlon), max(-90.0, lat - dlat), min(180.0, lon + dlon), min(90.0, lat + dlat))


def intersects_box(geometry: dict[str, Any], box: BBox) -> bool:
    if geometry["type"] == "Point":
        x, y = geometry["coordinates"][:2]
        return box[0] <= x <= box[2] and box[1] <= y <= box[3]
    return bool(_shape(geometry).intersects(shapely.box(*box)))

