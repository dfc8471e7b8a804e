"""Reading administrative divisions in the `china-division` CSV layout (three files per district):

    {prefix}.district.csv   code,name,cityCode,provinceCode            (no header)
    {prefix}.towns.csv      code,name,areaCode,provinceCode,cityCode    (header)
    {prefix}.villages.csv   code,name,streetCode,provinceCode,cityCode,areaCode   (header)

Any district in that layout can be imported; the packaged ones are Pudong, Haidian and Xihu.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from citybrain.core.errors import InvalidInput

SUFFIXES = (".district.csv", ".towns.csv", ".villages.csv")


@dataclass(frozen=True, slots=True)
class Division:
    code: str
    name: str
    kind: str  # district | town | village
    parent_code: str | None
    subkind: str  # 区 / 街道 / 镇 / 乡 / 社区 / 居委会 / 村 … read off the name
    extra: dict[str, str] = field(default_factory=dict)


def _subkind(name: str, kind: str) -> str:
    suffixes = {
        "district": ("新区", "区", "县", "市"),
        "town": ("街道", "镇", "乡", "地区", "管委会"),
        "village": ("社区居委会", "居委会", "社区", "村委会", "村"),
    }[kind]
    return next((s for s in suffixes if name.endswith(s)), "")


def packaged_districts() -> dict[str, Path]:
    """Packaged districts by code and by slug, e.g. {'310115': …, 'pudong': …}."""
    root = resources.files("citybrain") / "data" / "divisions"
    out: dict[str, Path] = {}
    for item in root.iterdir():
        if item.name.endswith(".district.csv"):
            prefix = Path(str(item)).with_name(item.name.removesuffix(".district.csv"))
            code, _, slug = prefix.name.partition("-")
            out[code] = prefix
            out[slug] = prefix
    return out


def resolve_prefix(path_or_name: str | Path) -> Path:
    """Accept a packaged district name or code, any one of the three files, or their common prefix."""
    text = str(path_or_name)
    packaged = packaged_districts()
    if text in packaged:
        return packaged[text]
    for suffix in SUFFIXES:
        if text.endswith(suffix):
            return Path(text.removesuffix(suffix))
    return Path(text)


def _rows(path: Path, *, header: bool) -> list[tuple[int, list[str]]]:
    if not path.exists():
        raise InvalidInput.at(str(path), "file not found")
    with path.open(encoding="utf-8-sig", newline="") as handle:
        rows = list(csv.reader(handle))
    start = 1 if header else 0
    return [(i + 1, row) for i, row in enumerate(rows[start:], start=start) if row and any(c.strip() for c in row)]


def read_divisions(path_or_name: str | Path) -> list[Division]:
    """Read one district's three files; rejects the whole district on the first bad row, naming it."""
    prefix = resolve_prefix(path_or_name)
    district_file, towns_file, villages_file = (Path(f"{prefix}{s}") for s in SUFFIXES)

    district_rows = _rows(district_file, header=False)
    if len(district_rows) != 1:
        raise InvalidInput.at(str(district_file), f"expected exactly one district row, found {len(district_rows)}")
    line, row = district_rows[0]
    if len(row) < 2 or not row[0].isdigit():
        raise InvalidInput.at(f"{district_file}:{line}", "expected code,name,cityCode,provinceCode")
    district = Division(row[0], row[1].strip(), "district", None, _subkind(row[1], "district"),
                        {"cityCode": row[2] if len(row) > 2 else "", "provinceCode": row[3] if len(row) > 3 else ""})
    out = [district]

    towns: set[str] = set()
    for line, row in _rows(towns_file, header=True):
        where = f"{towns_file}:{line}"
        if len(row) < 3 or not row[0].isdigit() or not row[1].strip():
            raise InvalidInput.at(where, "expected code,name,areaCode,provinceCode,cityCode")
        if row[2] != district.code:
            raise InvalidInput.at(where, f"areaCode {row[2]} is not the district {district.code}")
        if row[0] in towns:
            raise InvalidInput.at(where, f"town {row[0]} appears twice")
        towns.add(row[0])
        out.append(Division(row[0], row[1].strip(), "town", district.code, _subkind(row[1], "town")))

    seen: set[str] = set()
    for line, row in _rows(villages_file, header=True):
        where = f"{villages_file}:{line}"
        if len(row) < 3 or not row[0].isdigit() or not row[1].strip():
            raise InvalidInput.at(where, "expected code,name,streetCode,provinceCode,cityCode,areaCode")
        if row[2] not in towns:
            raise InvalidInput.at(where, f"streetCode {row[2]} is not a town of this district")
        if row[0] in seen:
            raise InvalidInput.at(where, f"village {row[0]} appears twice")
        seen.add(row[0])
        out.append(Division(row[0], row[1].strip(), "village", row[2], _subkind(row[1], "village")))
    return out
