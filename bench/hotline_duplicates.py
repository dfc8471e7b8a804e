#!/usr/bin/env python3
"""Duplicate detection benchmark: precision and recall of `DuplicateIndex` on the labelled TipDM pairs, the
threshold trade-off, and messages/s for indexing and querying all 4,326 messages.

The messages (../shared/data/complaints/tipdm2020c_messages_unlabelled.csv) are replayed in time order: each
one is first looked up (`find`) among the reports already indexed, then added (`add`). A labelled pair
(bench/data/hotline_duplicate_pairs.csv, built as bench/data/README.md describes) counts as predicted
duplicate when the later message's lookup returned the earlier one. Three runs:

- default  — `DedupSettings()` as shipped (30-day window): the operating point and the throughput figure;
- sweep    — the same with a low threshold and no result cap, so one run gives every threshold's figures;
- no window — text alone (a 10-year window): 121 of the 418 labelled duplicates are more than 30 days
              apart (the same problem raised again months later), which the window deliberately misses.

Pairs of the `audit` route are not in these figures: they were drawn from what the default settings link
and labelled afterwards, and give the precision of the links the detector actually makes
(`dedup_audit_precision`).

TipDM messages have no coordinates and anonymised places, so place agreement plays no part here; the
unit tests cover it. The text of a message is its subject and details.

    .venv/bin/python bench/hotline_duplicates.py            # prints a table, records the figures
    .venv/bin/python bench/hotline_duplicates.py --no-record
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from datetime import datetime
from pathlib import Path

from rich.console import Console
from rich.table import Table

from citybrain.hotline.dedup import DedupSettings, DuplicateIndex

ROOT = Path(__file__).resolve().parent.parent
PAIRS = ROOT / "bench" / "data" / "hotline_duplicate_pairs.csv"
MESSAGES = Path("data") / "complaints" / "tipdm2020c_messages_unlabelled.csv"
SWEEP = (0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.5, 0.6)
NO_WINDOW_S = 3650 * 86400.0


def _timestamp(text: str) -> float:
    for pattern in ("%Y/%m/%d %H:%M:%S", "%Y-%m-%d %H:%M:%S"):
        try:
            return datetime.strptime(text.strip(), pattern).timestamp()
        except ValueError:
            continue
    raise ValueError(f"unreadable time {text!r}")


def load_messages(shared_dir: Path) -> list[tuple[str, str, float]]:
    """(id, subject + details, timestamp) of every TipDM message, in time order."""
    with (shared_dir / MESSAGES).open(encoding="utf-8-sig", newline="") as handle:
        rows = [(r["留言编号"], f"{r['留言主题']}\n{r['留言详情']}", _timestamp(r["留言时间"]))
                for r in csv.DictReader(handle)]
    return sorted(rows, key=lambda row: (row[2], int(row[0])))


def load_pairs(path: Path = PAIRS, *, audit: bool = False) -> dict[frozenset[str], bool]:
    """The labelled pairs; the `audit` route (pairs the detector linked, labelled afterwards to estimate
    its precision in the wild) is kept apart: `audit=True` returns only those, otherwise all the others."""
    with path.open(encoding="utf-8", newline="") as handle:
        return {frozenset((r["id_a"], r["id_b"])): r["label"] == "1" for r in csv.DictReader(handle)
                if (r["route"] == "audit") == audit}


def replay(messages: list[tuple[str, str, float]], settings: DedupSettings) -> tuple[dict[frozenset[str], float], float]:
    """Pairs linked by `find` (best score per pair) and the wall time of the whole replay."""
    index = DuplicateIndex(settings)
    linked: dict[frozenset[str], float] = {}
    started = time.perf_counter()
    for report_id, text, ts in messages:
        for other, score in index.find(text, ts):
            key = frozenset((report_id, other))
            linked[key] = max(score, linked.get(key, 0.0))
        index.add(report_id, text, ts)
    return linked, time.perf_counter() - started


def scores(linked: dict[frozenset[str], float], pairs: dict[frozenset[str], bool], threshold: float,
           among: set[frozenset[str]] | None = None) -> dict[str, float]:
    tp = fp = fn = 0
    for pair, duplicate in pairs.items():
        if among is not None and pair not in among:
            continue
        predicted = linked.get(pair, 0.0) >= threshold
        tp += predicted and duplicate
        fp += predicted and not duplicate
        fn += duplicate and not predicted
    precision = tp / (tp + fp) if tp + fp else 1.0
    recall = tp / (tp + fn) if tp + fn else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "tp": tp, "fp": fp, "fn": fn}


def run_duplicates(shared_dir: Path) -> tuple[dict[str, float | int], list[str]]:
    """Figures (flat, `dedup_*`) and Markdown lines for the duplicate-detection section."""
    messages = load_messages(shared_dir)
    pairs = load_pairs()
    settings = DedupSettings()
    when = {report_id: ts for report_id, _, ts in messages}
    in_window = {p for p in pairs if abs(when[min(p)] - when[max(p)]) <= settings.window_s}

    linked, seconds = replay(messages, settings)
    default = scores(linked, pairs, settings.threshold)
    reachable = scores(linked, pairs, settings.threshold, in_window)
    swept, _ = replay(messages, settings.model_copy(update={"threshold": min(SWEEP), "top_k": 10_000}))
    unwindowed, _ = replay(messages, settings.model_copy(
        update={"threshold": min(SWEEP), "top_k": 10_000, "window_s": NO_WINDOW_S}))

    audit = load_pairs(audit=True)
    audit_linked = sum(1 for p in audit if linked.get(p, 0.0) >= settings.threshold)
    figures: dict[str, float | int] = {
        "dedup_pairs": len(pairs),
        "dedup_positive_pairs": sum(pairs.values()),
        "dedup_threshold": settings.threshold,
        "dedup_window_days": round(settings.window_s / 86400, 1),
        "dedup_precision": round(default["precision"], 3),
        "dedup_recall": round(default["recall"], 3),
        "dedup_f1": round(default["f1"], 3),
        "dedup_recall_within_window": round(reachable["recall"], 3),
        "dedup_precision_no_window": round(scores(unwindowed, pairs, settings.threshold)["precision"], 3),
        "dedup_recall_no_window": round(scores(unwindowed, pairs, settings.threshold)["recall"], 3),
        "dedup_linked_pairs": sum(1 for s in linked.values() if s >= settings.threshold),
        "dedup_audit_pairs": len(audit),
        "dedup_audit_precision": round(sum(audit.values()) / len(audit), 3) if audit else 0.0,
        "dedup_audit_still_linked": audit_linked,
        "dedup_messages": len(messages),
        "dedup_msgs_per_s": round(len(messages) / seconds, 1),
    }
    lines = [
        (f"{len(pairs)} labelled pairs ({sum(pairs.values())} duplicates) of the {len(messages):,} TipDM messages, "
         "replayed in time order through `DuplicateIndex` (find, then add); text = subject + details, no place."),
        "",
        ("| threshold | precision (30-day window) | recall | recall of pairs ≤ 30 days apart | "
         "precision (text only, no window) | recall |"),
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for threshold in SWEEP:
        windowed = scores(swept, pairs, threshold)
        near = scores(swept, pairs, threshold, in_window)
        free = scores(unwindowed, pairs, threshold)
        mark = " ◀" if threshold == settings.threshold else ""
        lines.append(f"| {threshold:.2f}{mark} | {windowed['precision']:.3f} | {windowed['recall']:.3f} | "
                     f"{near['recall']:.3f} | {free['precision']:.3f} | {free['recall']:.3f} |")
    lines += [
        "",
        (f"Operating point (◀): threshold {settings.threshold}, the lowest whose precision stays clearly above "
         "0.9 (≥ 0.93) even on text alone without the window, because merging two different problems costs more "
         "than a missed merge; 0.25 sits at the 0.9 line there, too close for a sample of this size."),
        (f"Audit: {len(audit)} pairs drawn at random from those the default settings link but the sample did not "
         f"hold, then labelled by reading: {sum(audit.values())} are duplicates (precision "
         f"{figures['dedup_audit_precision']}); most errors are one prolific sender's template-worded but "
         "different requests. The sample above overstates precision somewhat: its pairs were not drawn from "
         "what the detector links."),
        (f"Replay of all {len(messages):,} messages with the default settings: "
         f"{figures['dedup_msgs_per_s']:,} messages/s (index + query), "
         f"{figures['dedup_linked_pairs']:,} pairs linked."),
    ]
    return figures, lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shared", type=Path, default=ROOT.parent / "shared",
                        help="the shared data folder (default: ../shared)")
    parser.add_argument("--no-record", action="store_true", help="print only; no BENCHMARKS.md, no JSON")
    args = parser.parse_args()
    if not (args.shared / MESSAGES).exists():
        print(f"missing {args.shared / MESSAGES}", file=sys.stderr)
        return 2
    figures, lines = run_duplicates(args.shared)
    table = Table(title="Hotline duplicate detection")
    table.add_column("figure")
    table.add_column("value", justify="right")
    for key, value in figures.items():
        table.add_row(key, f"{value:,}" if isinstance(value, int) else f"{value}")
    console = Console()
    console.print(table)
    for line in lines:
        console.print(line, markup=False)
    if not args.no_record:
        sys.path.insert(0, str(ROOT / "bench"))
        from recording import append_section, figure_table, write_json

        write_json("hotline_duplicates", figures)
        append_section("hotline duplicates", "hotline_duplicates.py", [*figure_table(figures), "", *lines])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
