"""Duplicate reports: the same problem reported again, by the same or another citizen.

A `DuplicateIndex` holds the open reports of a time window and answers, for a new report, which of them
describe the same problem. Two reports are duplicates when

- their texts are near-duplicates: cosine similarity of character-bigram TF-IDF vectors ≥ `threshold`
  (no word segmenter needed; on the labelled TipDM pairs it separated duplicates better than Jaccard or
  containment of bigram or trigram sets — see bench/hotline_duplicates.py);
- they are at the same place, as far as both say: points within `radius_m` metres when both have one,
  else the same org unit (equal, or one inside the other) when both have one; a report without place
  information is compared on text alone;
- they are close in time: within `window_s` seconds of each other.

Sized for hundreds of thousands of open reports: every report keeps at most `max_terms` weighted bigrams
(NumPy arrays, ≈ 1.3 kB a report) and is posted under its `signature_terms` rarest bigrams only (prefix
filtering: near-duplicates share their rare bigrams — names of estates, companies, roads), so a query looks
at the reports sharing one of its own rarest bigrams, not at every report sharing a common one. IDF comes
from the index's own document frequencies and moves as reports come and go; a report's vector keeps the
IDF of the moment it was added. Entries older than the window (relative to the newest report seen) are
evicted as reports are added; `remove` drops a report whose case closed.
"""

from __future__ import annotations

import heapq
import itertools
import math
import operator
import re
import unicodedata
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from citybrain.hub.org.tree import OrgTree

_NOT_TEXT = re.compile(r"[\W_]+")
Point = tuple[float, float]  # (longitude, latitude), GeoJSON order


class DedupSettings(BaseModel):
    """Thresholds of duplicate detection, chosen on the labelled TipDM sample (bench/data/README.md;
    figures from bench/hotline_duplicates.py): `threshold` 0.3 is the lowest whose precision stays clearly
    above 0.9 on text alone (0.93, recall 0.70; 0.96 with the window), since merging two different problems
    costs more than a missed merge. An audit of links it makes outside the sample found 35 of 40 right.
    `radius_m` is a prior (TipDM has no coordinates); `window_s` keeps merges to problems still open."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    threshold: float = Field(0.3, gt=0, le=1, description="Least text similarity (cosine) of a duplicate")
    window_s: float = Field(30 * 86400.0, gt=0, description="Reports further apart in time are never duplicates")
    radius_m: float = Field(300.0, gt=0, description="Reports with points further apart are never duplicates")
    max_terms: int = Field(160, ge=8, description="Bigrams kept per report (the highest-weighted)")
    signature_terms: int = Field(48, ge=1, description="Rarest bigrams a report is posted under")
    query_terms: int = Field(96, ge=1, description="Rarest bigrams of a query whose postings are read")
    max_posting: int = Field(20000, ge=1, description="Postings longer than this are not read (too common)")
    top_k: int = Field(10, ge=1, description="Most matches `find` returns")


@dataclass(slots=True)
class _Report:
    report_id: str
    ts: float
    point: Point | None
    org_unit: str | None
    terms: np.ndarray  # int32 term ids
    weights: np.ndarray  # float32, L2-normalised


def normalize_text(text: str) -> str:
    """NFKC, lower case, letters and digits only: what the bigrams are taken from."""
    return _NOT_TEXT.sub("", unicodedata.normalize("NFKC", text).lower())


def bigram_counts(text: str) -> dict[str, int]:
    """Character bigrams of the normalised text and how often each occurs (a one-character text is its
    own single term)."""
    clean = normalize_text(text)
    if len(clean) == 1:
        return {clean: 1}
    return Counter(map(operator.add, clean, clean[1:]))


def distance_m(a: Point, b: Point) -> float:
    """Great-circle distance in metres between two (lon, lat) points."""
    lon1, lat1, lon2, lat2 = map(math.radians, (a[0], a[1], b[0], b[1]))
    h = math.sin((lat2 - lat1) / 2) ** 2 + math.cos(lat1) * math.cos(lat2) * math.sin((lon2 - lon1) / 2) ** 2
    return 2 * 6_371_008.8 * math.asin(min(1.0, math.sqrt(h)))


class DuplicateIndex:
    """Incremental near-duplicate index over open reports (see the module docstring)."""

    def __init__(self, settings: DedupSettings | None = None, *, tree: OrgTree | None = None) -> None:
        self.settings = settings or DedupSettings()
        self.tree = tree
        self._vocab: dict[str, int] = {}
        self._df = np.zeros(1024, np.int64)
        self._reports: dict[int, _Report] = {}
        self._by_id: dict[str, int] = {}
        self._postings: dict[int, list[int]] = {}
        self._dead_postings = 0
        self._posting_entries = 0
        self._by_time: list[tuple[float, int]] = []
        self._next = 0
        self._newest = -math.inf
        self._scratch = np.zeros(1024, np.float32)

    def __len__(self) -> int:
        return len(self._reports)

    def __contains__(self, report_id: object) -> bool:
        return report_id in self._by_id

    # -- vectors ----------------------------------------------------------------------------------------------

    def _idf(self, terms: np.ndarray) -> np.ndarray:
        n = len(self._reports)
        return np.log((1.0 + n) / (1.0 + self._df[terms])) + 1.0

    def _term_ids(self, grams: Iterable[str]) -> np.ndarray:
        """Ids of `grams`, adding the new ones to the vocabulary."""
        ids = [self._vocab.setdefault(gram, len(self._vocab)) for gram in grams]
        if len(self._vocab) > len(self._df):
            self._df = np.concatenate([self._df, np.zeros(max(len(self._vocab), len(self._df)), np.int64)])
        return np.asarray(ids, np.int32)

    def _vector(self, counts: dict[str, int], ids: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Term ids and L2-normalised TF-IDF weights of the `max_terms` heaviest known terms (a term no
        report has cannot match, so a query's unknown terms are skipped). `ids`: the counts' term ids when
        the caller has them already (all known)."""
        tfs = np.array(list(counts.values()), np.float64)
        if ids is None:
            ids = np.array(list(map(self._vocab.get, counts, itertools.repeat(-1))), np.int64)
            known = ids >= 0
            if not known.all():
                ids, tfs = ids[known], tfs[known]
        if not len(ids):
            return np.empty(0, np.int32), np.empty(0, np.float32)
        terms = ids.astype(np.int32)
        weights = (1.0 + np.log(tfs)) * self._idf(terms)
        if len(terms) > self.settings.max_terms:
            keep = np.argpartition(-weights, self.settings.max_terms - 1)[: self.settings.max_terms]
            terms, weights = terms[keep], weights[keep]
        norm = float(np.sqrt(np.dot(weights, weights))) or 1.0
        return terms, (weights / norm).astype(np.float32)

    def _rarest(self, terms: np.ndarray, count: int) -> np.ndarray:
        if len(terms) <= count:
            return terms
        return terms[np.argpartition(self._df[terms], count - 1)[:count]]

    # -- place and time -----------------------------------------------------------------------------------------

    def _same_place(self, report: _Report, point: Point | None, org_unit: str | None) -> bool:
        if point is not None and report.point is not None:
            return distance_m(point, report.point) <= self.settings.radius_m
        if org_unit and report.org_unit:
            if self.tree is not None and org_unit in self.tree and report.org_unit in self.tree:
                return self.tree.within(org_unit, [report.org_unit]) or self.tree.within(report.org_unit, [org_unit])
            # Division codes are hierarchical (town 310115005 ⊂ village 310115005001).
            return org_unit.startswith(report.org_unit) or report.org_unit.startswith(org_unit)
        return True

    def evict(self, before_ts: float) -> int:
        """Drop reports older than `before_ts`; returns how many."""
        dropped = 0
        while self._by_time and self._by_time[0][0] < before_ts:
            _, number = heapq.heappop(self._by_time)
            report = self._reports.get(number)
            if report is not None and report.ts < before_ts:
                self._drop(number)
                dropped += 1
        return dropped

    def remove(self, report_id: str) -> bool:
        """Drop one report (its case was closed, or it was merged); False if it is not in the index."""
        number = self._by_id.get(report_id)
        if number is None:
            return False
        self._drop(number)
        return True

    def _drop(self, number: int) -> None:
        report = self._reports.pop(number)
        if self._by_id.get(report.report_id) == number:
            del self._by_id[report.report_id]
        self._df[report.terms] -= 1
        self._dead_postings += min(len(report.terms), self.settings.signature_terms)
        if self._dead_postings > 1024 and 2 * self._dead_postings > self._posting_entries:
            self._compact()

    def _compact(self) -> None:
        """Postings are cleaned lazily: rebuild them without dropped reports once those are the majority."""
        alive = self._reports
        self._postings = {t: kept for t, p in self._postings.items() if (kept := [n for n in p if n in alive])}
        self._dead_postings = 0
        self._posting_entries = sum(len(p) for p in self._postings.values())

    # -- the index ----------------------------------------------------------------------------------------------

    def add(self, report_id: str, text: str, ts: float, point: Point | None = None,
            org_unit: str | None = None) -> None:
        """Index a report (re-adding an id replaces it), after evicting what fell out of the window."""
        if report_id in self._by_id:
            self.remove(report_id)
        self._newest = max(self._newest, ts)
        self.evict(self._newest - self.settings.window_s)
        counts = bigram_counts(text)
        all_terms = self._term_ids(counts)
        self._df[all_terms] += 1  # ids are distinct: one increment per term
        terms, weights = self._vector(counts, all_terms)
        if len(terms) < len(all_terms):
            # Document frequency counts the terms a report keeps, so that dropping it undoes exactly this.
            self._df[np.setdiff1d(all_terms, terms, assume_unique=True)] -= 1
        number = self._next
        self._next += 1
        self._reports[number] = _Report(report_id, ts, point, org_unit, terms, weights)
        self._by_id[report_id] = number
        heapq.heappush(self._by_time, (ts, number))
        signature = self._rarest(terms, self.settings.signature_terms).tolist()
        for term in signature:
            self._postings.setdefault(term, []).append(number)
        self._posting_entries += len(signature)

    def find(self, text: str, ts: float, point: Point | None = None, org_unit: str | None = None,
             *, exclude: Iterable[str] = ()) -> list[tuple[str, float]]:
        """Open reports that duplicate this one, best first: [(report_id, similarity)]."""
        s = self.settings
        terms, weights = self._vector(bigram_counts(text))
        if not len(terms):
            return []
        skip = set(exclude)
        candidates: set[int] = set()
        for term in self._rarest(terms, s.query_terms).tolist():
            posting = self._postings.get(term)
            if posting and len(posting) <= s.max_posting:
                candidates.update(posting)
        chosen = []
        for number in candidates:
            report = self._reports.get(number)
            if (report is None or report.report_id in skip or abs(report.ts - ts) > s.window_s
                    or not self._same_place(report, point, org_unit)):
                continue
            chosen.append(report)
        if not chosen:
            return []
        if len(self._scratch) < len(self._vocab):
            self._scratch = np.zeros(2 * len(self._vocab), np.float32)
        self._scratch[terms] = weights
        lengths = np.array([len(r.terms) for r in chosen], np.int64)
        flat_terms = np.concatenate([r.terms for r in chosen])
        flat_weights = np.concatenate([r.weights for r in chosen])
        starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
        scores = np.add.reduceat(self._scratch[flat_terms] * flat_weights, starts)
        scores[lengths == 0] = 0.0
        self._scratch[terms] = 0.0
        order = np.argsort(-scores)
        return [(chosen[i].report_id, round(float(scores[i]), 4)) for i in order[: s.top_k]
                if scores[i] >= s.threshold]
