"""The running hotline of one process: the complaint classifier, the address locator over the org tree,
and the index of open complaints that new ones are checked against for duplicates.

The classifier is the city's own model when one was trained (`citybrain hotline train`, saved under
`{home}/models/`), else one trained at start from the catalogue's own examples and keywords, so a fresh
install classifies from its first complaint without downloading anything. A classifier's labels may be
catalogue codes, or another taxonomy's labels (TipDM paths, 311 request types) that the catalogue's
references map onto event types.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import orjson
import sqlalchemy as sa

from citybrain.disposal.catalogue.service import Catalogue

if TYPE_CHECKING:
    from citybrain.disposal.catalogue.spec import EventTypeSpec
    from citybrain.hotline.locate import Location
    from citybrain.platform import Platform

log = logging.getLogger(__name__)
MODEL_NAME = "hotline-classifier"
MIN_CONFIDENCE = 0.25  # below it a complaint waits for a dispatcher's triage instead of going out at once
FALLBACK_CODE = "CG-99-001"  # when no label maps into the catalogue: the general city-management type


# Seed classifiers by catalogue content: every platform of a process (tests make many) shares one, and a
# restart reads it from `{home}/models/` instead of training again (~3 s for the shipped catalogue).
_SEEDS: dict[str, Any] = {}
_SEEDS_LOCK = threading.Lock()


def catalogue_key(specs: Sequence[EventTypeSpec]) -> str:
    """A digest of what a seed classifier learns from: the types' codes, names, examples and keywords."""
    digest = hashlib.sha256()
    for spec in sorted(specs, key=lambda s: s.code):
        digest.update(orjson.dumps([spec.code, spec.name.model_dump(), spec.examples.model_dump(),
                                    spec.keywords.model_dump()]))
    return digest.hexdigest()


class Hotline:
    """Background service (nothing runs in the background but the start-up load) and the intake's tools."""

    name = "hotline"

    def __init__(self, platform: Platform) -> None:
        self.platform = platform
        self.classifier: Any = None
        self.min_confidence = MIN_CONFIDENCE
        self._locator: Any = None
        self._index: Any = None
        self._cases: dict[str, tuple[str, str]] = {}  # report id → (case id, event type)
        self._reports_of: dict[str, set[str]] = {}  # case id → its report ids in the index
        self._unsubscribe: Any = None
        self._lock = threading.Lock()  # the index is used from the store threads

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        from citybrain.disposal.events import CaseTransitioned

        await anyio.to_thread.run_sync(self.load)
        # Plain, not a group: every process keeps its own index of open complaints.
        self._unsubscribe = await self.platform.bus.subscribe(CaseTransitioned, self._on_case)

    async def stop(self) -> None:
        if self._unsubscribe is not None:
            await self._unsubscribe()
            self._unsubscribe = None

    async def _on_case(self, event: Any) -> None:
        if event.to_status in ("closed", "merged"):
            self.forget_case(event.case_id)

    def load(self) -> None:
        """Build the classifier, the locator and the duplicate index (from open cases)."""
        from citybrain.disposal.catalogue import flows as catalogue_flows
        from citybrain.hotline.dedup import DuplicateIndex
        from citybrain.hotline.locate import Locator

        self.classifier = self._load_or_train(list(catalogue_flows.load(self.platform)))
        self._locator = Locator(self.platform.org_tree)
        self._index = DuplicateIndex(tree=self.platform.org_tree)
        self._fill_index()

    def model_path(self) -> Path:
        return self.platform.settings.home / "models" / MODEL_NAME

    def _load_or_train(self, specs: Sequence[EventTypeSpec]) -> Any:
        from citybrain.hotline.classify import load_classifier, seed_classifier

        path = self.model_path()
        try:
            model = load_classifier(path)
            if model is not None:
                log.info("hotline: classifier %s loaded from %s", getattr(model, "slug", "?"), path)
                return model
        except Exception:
            log.exception("hotline: the saved classifier at %s could not be loaded; training a seed model", path)
        key = catalogue_key(specs)
        with _SEEDS_LOCK:
            model = _SEEDS.get(key)
            if model is not None:
                return model
            seed_path = path.with_name(f"seed-{key[:16]}")
            try:
                model = load_classifier(seed_path)
            except Exception:  # noqa: BLE001 - any damage to a cache means: build it again
                log.warning("hotline: the cached seed classifier at %s is unreadable; training again", seed_path)
                model = None
            if model is None:
                started = time.perf_counter()
                model = seed_classifier(specs)
                log.info("hotline: seed classifier trained on the catalogue's examples (%d event types) in %.1f s",
                         len(specs), time.perf_counter() - started)
                try:
                    seed_path.parent.mkdir(parents=True, exist_ok=True)
                    model.save(seed_path)
                except OSError as exc:
                    log.warning("hotline: could not keep the seed classifier at %s: %s", seed_path, exc)
            _SEEDS[key] = model
        return model

    def _fill_index(self) -> None:
        from citybrain.disposal.models import CaseReportRow, CaseRow

        assert self._index is not None
        horizon = self.platform.clock.now() - timedelta(seconds=self._index.settings.window_s)
        with self.platform.session() as session:
            rows = session.execute(
                sa.select(CaseReportRow.id, CaseReportRow.case_id, CaseReportRow.text, CaseReportRow.reported_at,
                          CaseReportRow.lon, CaseReportRow.lat, CaseReportRow.org_unit, CaseRow.event_type)
                .join(CaseRow, CaseRow.id == CaseReportRow.case_id)
                .where(CaseRow.status.not_in(["closed", "merged"]), CaseReportRow.reported_at >= horizon,
                       CaseRow.channel.not_in(["sensing", "inspector", "department"]))
                .order_by(CaseReportRow.reported_at)).all()
        for row in rows:
            point = (row.lon, row.lat) if row.lon is not None and row.lat is not None else None
            self.remember(row.id, row.case_id, row.text, row.reported_at.timestamp(), point=point,
                          org_unit=row.org_unit, event_type=row.event_type)
        log.info("hotline: %d open complaints indexed for duplicate detection", len(rows))

    # ------------------------------------------------------------------ understanding

    def top(self, text: str, catalogue: Catalogue, k: int = 5) -> list[tuple[str, float]]:
        """The likeliest event types of a text, best first, with the classifier's confidences; labels are
        read through the catalogue in force (the disposal's, which follows imports)."""
        prediction = self.classifier.predict([text])[0]
        seen: dict[str, float] = {}
        for label, score in [(prediction.label, prediction.confidence), *prediction.alternatives]:
            code = event_type_of(label, catalogue)
            if code is not None and code not in seen:
                seen[code] = round(float(score), 4)
        return list(seen.items())[:k]

    def classify(self, text: str, catalogue: Catalogue) -> tuple[str, float]:
        """(event type code, confidence) of a complaint's text; the general city-management type with no
        confidence when no label maps into the catalogue."""
        best = self.top(text, catalogue, 1)
        if best:
            return best[0]
        return FALLBACK_CODE, 0.0

    def locate(self, text: str) -> Location | None:
        return self._locator.locate(text) if self._locator is not None and text else None

    def find_duplicate(self, text: str, ts: float, *, point: tuple[float, float] | None, org_unit: str | None,
                       event_type: str) -> tuple[int, str] | None:
        """(report id, case id) of the open complaint this one repeats, if any (same event type only)."""
        with self._lock:
            matches = self._index.find(text, ts, point=point, org_unit=org_unit)
        for report_id, _score in matches:
            case = self._cases.get(report_id)
            if case is not None and case[1] == event_type:
                return int(report_id), case[0]
        return None

    def remember(self, report_id: int, case_id: str, text: str, ts: float, *, point: tuple[float, float] | None,
                 org_unit: str | None, event_type: str) -> None:
        with self._lock:
            self._index.add(str(report_id), text, ts, point=point, org_unit=org_unit)
            self._cases[str(report_id)] = (case_id, event_type)
            self._reports_of.setdefault(case_id, set()).add(str(report_id))

    def forget_case(self, case_id: str) -> None:
        """A closed (or merged) case takes its complaints out of the duplicate index."""
        with self._lock:
            for report_id in self._reports_of.pop(case_id, set()):
                self._index.remove(report_id)
                self._cases.pop(report_id, None)


def event_type_of(label: str, catalogue: Catalogue) -> str | None:
    """The event type a classifier label stands for: a catalogue code, or a label of a taxonomy the
    catalogue refers to (a TipDM path or its nearest mapped ancestor, a 311 request type)."""
    if label in catalogue:
        return label
    for lookup in (catalogue.for_tipdm, catalogue.for_la311, catalogue.for_nyc311, catalogue.for_open311):
        spec = lookup(label)
        if spec is not None:
            return spec.code
    return None
