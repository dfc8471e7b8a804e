"""A city's own labelled complaints, unlabelled backlog and hint lists, read from files for training.

Rows come from CSV (UTF-8, with or without a byte-order mark; the first line names the columns) or from
JSON Lines / a JSON array of objects. Every problem is a `ValueError` whose message names the file and,
where it helps, the columns the file has.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

TITLE_JOIN = "\n"  # text columns are joined by a line break: the first column is the title


@dataclass(frozen=True, slots=True)
class Labelled:
    """Texts and their labels, in file order; rows with an empty label are left out and counted."""

    texts: list[str]
    labels: list[str]
    skipped: int


def read_rows(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    """(column names, rows as text) of a CSV or JSON/JSON Lines file."""
    if not path.is_file():
        raise ValueError(f"{path}: file not found")
    try:
        raw = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: not UTF-8 text (byte {exc.start}); save it as UTF-8") from None
    stripped = raw.lstrip()
    if path.suffix.lower() in (".jsonl", ".ndjson", ".json") or stripped.startswith(("{", "[")):
        return _json_rows(path, stripped)
    reader = csv.DictReader(io.StringIO(raw, newline=""))
    columns = [c for c in (reader.fieldnames or []) if c is not None]
    if not columns:
        raise ValueError(f"{path}: empty file (a CSV's first line names its columns)")
    rows = [{k: (v if isinstance(v, str) else "") for k, v in row.items() if k is not None} for row in reader]
    return columns, rows


def _json_rows(path: Path, text: str) -> tuple[list[str], list[dict[str, str]]]:
    try:
        items = json.loads(text) if text.startswith("[") else [
            json.loads(line) for line in text.splitlines() if line.strip()]
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not JSON Lines or a JSON array (line {exc.lineno}: {exc.msg})") from None
    columns: dict[str, None] = {}
    rows = []
    for number, item in enumerate(items, start=1):
        if not isinstance(item, dict):
            raise ValueError(f"{path}: item {number} is not an object")  # noqa: TRY004 - callers catch ValueError
        rows.append({str(k): "" if v is None else str(v) for k, v in item.items()})
        columns.update(dict.fromkeys(rows[-1]))
    return list(columns), rows


def _check_columns(path: Path, columns: list[str], wanted: Sequence[str]) -> None:
    missing = [c for c in wanted if c not in columns]
    if missing:
        raise ValueError(f"{path}: no column {', '.join(map(repr, missing))}; it has {', '.join(columns) or 'none'}")


def read_labelled(path: Path, text_columns: Sequence[str], label_column: str) -> Labelled:
    """The texts (text columns joined, the first as the title) and labels of a labelled file."""
    columns, rows = read_rows(path)
    _check_columns(path, columns, [*text_columns, label_column])
    texts, labels, skipped = [], [], 0
    for row in rows:
        label = row.get(label_column, "").strip()
        if not label:
            skipped += 1
            continue
        texts.append(TITLE_JOIN.join(row.get(c, "").strip() for c in text_columns))
        labels.append(label)
    if not texts:
        raise ValueError(f"{path}: no row has a label in column {label_column!r}")
    return Labelled(texts, labels, skipped)


def read_texts(path: Path, text_columns: Sequence[str]) -> list[str]:
    """The texts of an unlabelled file (the same text columns as the labelled one)."""
    columns, rows = read_rows(path)
    _check_columns(path, columns, text_columns)
    return [TITLE_JOIN.join(row.get(c, "").strip() for c in text_columns) for row in rows]


def read_hints(path: Path) -> dict[str, list[str]]:
    """Phrases per label: a JSON object `{label: [phrase, …]}`, or a CSV whose first column is the label
    and whose other columns, joined by spaces, are one phrase of it (a taxonomy file as it is: 一级分类,
    二级分类, 三级分类)."""
    if path.suffix.lower() == ".json":
        if not path.is_file():
            raise ValueError(f"{path}: file not found")
        try:
            data = json.loads(path.read_text(encoding="utf-8-sig"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"{path}: not a JSON object of label → phrases ({exc})") from None
        if not isinstance(data, dict) or not all(isinstance(v, list) for v in data.values()):
            raise ValueError(f"{path}: expected a JSON object of label → list of phrases")
        return {str(k): [str(p) for p in v if str(p).strip()] for k, v in data.items()}
    columns, rows = read_rows(path)
    if len(columns) < 2:
        raise ValueError(f"{path}: a hint CSV has the label in its first column and phrases after it")
    hints: dict[str, list[str]] = {}
    for row in rows:
        label = row.get(columns[0], "").strip()
        phrase = " ".join(row.get(c, "").strip() for c in columns[1:]).strip()
        if label and phrase:
            hints.setdefault(label, []).append(phrase)
    return hints
