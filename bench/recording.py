"""Where benchmarks leave their figures: a section appended to BENCHMARKS.md (date, exact command, the
machine) and the headline figures as a flat JSON object in bench/results/NAME.json."""

from __future__ import annotations

import json
import os
import platform as host
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = ROOT / "BENCHMARKS.md"


def cpu_model() -> str:
    with_model = Path("/proc/cpuinfo")
    if with_model.exists():
        for line in with_model.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return host.processor() or "unknown CPU"


def machine() -> str:
    return (f"{os.cpu_count()} × {cpu_model()}, Linux {host.release()}, Python {host.python_version()}")


def command(script: str) -> str:
    return " ".join(["python", f"bench/{script}", *sys.argv[1:]])


def write_json(name: str, figures: dict[str, Any]) -> Path:
    target = ROOT / "bench" / "results" / f"{name}.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")
    return target


def merge_json(name: str, figures: dict[str, Any]) -> Path:
    """`write_json` for a file several benchmarks fill (bench/results/security.json): their figures are kept,
    these replaced."""
    target = ROOT / "bench" / "results" / f"{name}.json"
    existing = json.loads(target.read_text(encoding="utf-8")) if target.exists() else {}
    return write_json(name, {**existing, **figures})


def append_section(name: str, script: str, body: list[str], *, date: str | None = None) -> None:
    """`## name — date`, the command and the machine, then `body` (Markdown lines)."""
    when = date or datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    lines = [f"\n## {name} — {when}\n", f"- command: `{command(script)}`", f"- machine: {machine()}", "",
             *body]
    with BENCHMARKS.open("a", encoding="utf-8") as handle:
        handle.write("\n".join(lines) + "\n")


def figure_table(figures: dict[str, Any], keys: list[str] | None = None) -> list[str]:
    """A two-column Markdown table of flat figures (all, or `keys` in that order)."""
    lines = ["| figure | value |", "|---|---:|"]
    for key in keys or list(figures):
        value = figures[key]
        shown = f"{value:,.1f}" if isinstance(value, float) else f"{value:,}" if isinstance(value, int) else value
        lines.append(f"| {key} | {shown} |")
    return lines
