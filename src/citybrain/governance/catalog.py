"""The data catalog (数据资产目录): every dataset the platform holds or receives, with its owner department,
classification, fields, lineage and quality rules, and the rounds that score those rules.

Datasets the platform defines itself are registered from the code and the scenario plug-ins at start
(`sync`), so the catalog cannot drift from what runs: one per entity type (`entities:AirQualityObserved`),
one per device type's telemetry (`telemetry:air_quality`), the cases, their reports (complaints and
inspectors' findings) and the alerts. An
operator's import registers the file it came from (`import:lights.ndjson`) with its lineage. Operators set
the quality rules (`governance.quality`), never the managed description.

Ids use `:` (not `/`) so they sit in a URL path as one segment.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from citybrain.core.context import Context
from citybrain.core.errors import ErrorCollector, InvalidInput, NotFound
from citybrain.governance import audit, quality
from citybrain.governance.models import DatasetRow, LineageRow, QualityScoreRow
from citybrain.hub.background import PollingService

if TYPE_CHECKING:
    from citybrain.hub.entities.service import EntityChange
    from citybrain.platform import Platform

log = logging.getLogger(__name__)

KINDS = ("entities", "telemetry", "cases", "reports", "alerts", "import")
TABLE_ROUND_LIMIT = 50_000  # records of one table dataset checked per round; the rest wait for the next
TABLE_SETTLE = timedelta(seconds=5)  # how old a record must be before a round checks it


@dataclass(frozen=True)
class DatasetSpec:
    """A dataset as the code defines it."""

    id: str
    kind: str
    title: str
    title_zh: str
    owner: str
    classification: str
    fields: dict[str, dict[str, Any]]
    source: str
    default_rules: tuple[dict[str, Any], ...] = ()


@dataclass(frozen=True)
class TableSource:
    """A dataset kept in one table of the store: its rows are its records, `arrived` says when each came."""

    model: Any
    arrived: str
    skip: frozenset[str] = frozenset()
    personal: frozenset[str] = frozenset()  # columns holding citizens' data (the dataset may be lower)

    def fields(self) -> dict[str, dict[str, Any]]:
        return {column.key: {"kind": _kind_of(column.type),
                             **({"classification": "personal"} if column.key in self.personal else {})}
                for column in self.model.__table__.columns if column.key not in self.skip}


def _kind_of(column_type: Any) -> str:
    for kind, types in (("integer", (sa.Integer, sa.BigInteger)), ("number", (sa.Float, sa.Numeric)),
                        ("boolean", (sa.Boolean,)), ("datetime", (sa.DateTime,)), ("string", (sa.String, sa.Text))):
        if isinstance(column_type, types):
            return kind
    return "object"


def table_sources() -> dict[str, TableSource]:
    from citybrain.disposal.models import CaseReportRow, CaseRow
    from citybrain.sensing.alerts.models import AlertRow

    return {"cases": TableSource(CaseRow, "created_at", frozenset({"cell", "suspended_from"}),
                                 frozenset({"title", "description", "address"})),
            "reports": TableSource(CaseReportRow, "reported_at", frozenset({"data"}),
                                   frozenset({"text", "contact_name", "contact_phone", "contact_email", "address",
                                              "feedback"})),
            "alerts": TableSource(AlertRow, "raised_at")}


def defined_datasets(platform: Platform) -> tuple[list[DatasetSpec], list[tuple[str, str, str]]]:
    """The datasets and lineage edges (upstream, downstream, process) the running code defines."""
    from citybrain.scenarios import load_scenarios

    owner_of_scenario = {slug: s.manifest.department for slug, s in load_scenarios().items()}
    specs: list[DatasetSpec] = []
    edges: list[tuple[str, str, str]] = []
    for spec in platform.types.all():
        scenario = spec.source.removeprefix("scenario:") if spec.source.startswith("scenario:") else None
        fields = {name: {"kind": attr.kind.value, **({"unit": attr.unit} if attr.unit else {}),
                         **({"classification": attr.classification} if attr.classification else {})}
                  for name, attr in spec.attributes.items()}
        fields.update({"location": {"kind": "geo"}, "orgUnit": {"kind": "string"}})
        specs.append(DatasetSpec(
            f"entities:{spec.name}", "entities", spec.title or spec.name, spec.title_zh or spec.name,
            owner_of_scenario.get(scenario or "", "operations"), spec.classification, fields,
            f"entity type {spec.name} ({spec.source})"))
    for slug, scenario in load_scenarios().items():
        for device in scenario.manifest.device_types:
            fields = {name: {"kind": m.kind, **{k: v for k, v in (("unit", m.unit), ("minimum", m.minimum),
                                                                   ("maximum", m.maximum)) if v is not None}}
                      for name, m in device.measurements.items()}
            freshness = max(3 * device.report_interval_s, 60.0)
            specs.append(DatasetSpec(
                f"telemetry:{device.slug}", "telemetry", f"{device.title} readings", f"{device.title_zh}监测数据",
                scenario.manifest.department, "internal", fields,
                f"devices of type {device.slug} over MQTT or HTTP (scenario {slug})",
                ({"id": "fresh", "check": "freshness", "max_age": f"{int(freshness)}s",
                  "description": "a reading arrived within three reporting intervals"},)))
            edges.append((f"telemetry:{device.slug}", f"entities:{device.entity_type}",
                          "sensing ingest: the device's entity carries its latest reading"))
            edges.append((f"telemetry:{device.slug}", "alerts", "streaming rules"))
    tables = table_sources()
    specs.append(DatasetSpec(
        "cases", "cases", "Cases", "案件", "operations", "personal", tables["cases"].fields(),
        "every channel: grid inspectors, department systems, alerts, the hotline",
        ({"id": "located", "check": "completeness", "field": "org_unit", "min_share": 0.95,
          "description": "a case says where it happened"},
         {"id": "number-unique", "check": "uniqueness", "field": "number"})))
    specs.append(DatasetSpec(
        "reports", "reports", "Reports: citizens' complaints and inspectors' findings", "诉求与上报", "operations",
        "personal", tables["reports"].fields(), "12345 hotline, apps, Open311, grid inspectors, department systems",
        ({"id": "located", "check": "completeness", "field": "org_unit", "min_share": 0.9,
          "description": "a report says where"},)))
    specs.append(DatasetSpec(
        "alerts", "alerts", "Alerts", "告警", "operations", "internal", tables["alerts"].fields(),
        "streaming rules over the telemetry"))
    edges += [("alerts", "entities:Alert", "alerts mirrored as hub entities"),
              ("alerts", "cases", "an alert of a catalogue event opens a case"),
              ("reports", "cases", "intake: a report opens a case or joins its duplicate")]
    return specs, edges


def sync(platform: Platform) -> int:
    """Register or refresh every dataset and edge the code defines; rules, arrivals and scores stay. Returns
    how many datasets are new."""
    specs, edges = defined_datasets(platform)
    now = platform.clock.now()
    with platform.transaction() as session:
        known = {row.id: row for row in session.scalars(sa.select(DatasetRow))}
        new = 0
        for spec in specs:
            row = known.get(spec.id)
            if row is None:
                new += 1
                session.add(DatasetRow(
                    id=spec.id, kind=spec.kind, title=spec.title, title_zh=spec.title_zh, owner=spec.owner,
                    classification=spec.classification, fields=spec.fields, source=spec.source,
                    rules=list(spec.default_rules), managed=True, registered_at=now, updated_at=now,
                    updated_by="system", last_ingest_at=None, checked_until=None))
            elif row.managed and (row.title, row.title_zh, row.owner, row.classification, row.fields, row.source) != (
                    spec.title, spec.title_zh, spec.owner, spec.classification, spec.fields, spec.source):
                row.title, row.title_zh, row.owner, row.classification = (spec.title, spec.title_zh, spec.owner,
                                                                          spec.classification)
                row.fields, row.source, row.updated_at = spec.fields, spec.source, now
        present = {(up, down) for up, down in session.execute(sa.select(LineageRow.upstream, LineageRow.downstream))}
        for upstream, downstream, process in dict.fromkeys(edges):
            if (upstream, downstream) not in present:
                session.add(LineageRow(upstream=upstream, downstream=downstream, process=process, managed=True,
                                       recorded_at=now))
    return new


def register_import(platform: Platform, session: Session, *, name: str, entity_types: Iterable[str],
                    records: int, by: Context) -> str:
    """An operator's import of entities: the file becomes a dataset feeding each entity type it held."""
    dataset_id = f"import:{name[:180]}"
    now = platform.clock.now()
    row = session.get(DatasetRow, dataset_id)
    if row is None:
        row = DatasetRow(id=dataset_id, kind="import", title=name[:200], title_zh=name[:200], owner="operations",
                         classification="internal", fields={}, source=f"imported by {by.actor}", rules=[],
                         managed=False, registered_at=now, updated_at=now, updated_by=by.actor,
                         last_ingest_at=now, checked_until=None)
        session.add(row)
    row.updated_at, row.updated_by, row.last_ingest_at = now, by.actor, now
    row.source = f"imported by {by.actor}: {records} records"
    for entity_type in set(entity_types):
        downstream = f"entities:{entity_type}"
        if session.get(LineageRow, (dataset_id, downstream)) is None:
            session.add(LineageRow(upstream=dataset_id, downstream=downstream, process="citybrain import entities",
                                   managed=False, recorded_at=now))
    return dataset_id


# ------------------------------------------------------------------------------------------------ reading


def get_dataset(session: Session, dataset_id: str) -> DatasetRow:
    row = session.get(DatasetRow, dataset_id)
    if row is None:
        raise NotFound(f"no dataset {dataset_id} in the catalog")
    return row


def list_datasets(session: Session, *, kind: str | None = None, owner: str | None = None,
                  text: str | None = None) -> list[DatasetRow]:
    query = sa.select(DatasetRow).order_by(DatasetRow.id)
    if kind:
        query = query.where(DatasetRow.kind == kind)
    if owner:
        query = query.where(DatasetRow.owner == owner)
    rows = list(session.scalars(query))
    if text:
        needle = text.lower()
        rows = [r for r in rows if needle in r.id.lower() or needle in r.title.lower() or needle in r.title_zh]
    return rows


def lineage(session: Session, dataset_id: str, *, depth: int = 10) -> dict[str, Any]:
    """Everything upstream and downstream of a dataset, up to `depth` steps, as nodes and edges."""
    get_dataset(session, dataset_id)
    edges = list(session.scalars(sa.select(LineageRow)))
    up: dict[str, list[LineageRow]] = defaultdict(list)
    down: dict[str, list[LineageRow]] = defaultdict(list)
    for edge in edges:
        up[edge.downstream].append(edge)
        down[edge.upstream].append(edge)
    kept: dict[tuple[str, str], LineageRow] = {}
    for neighbours, key in ((up, "upstream"), (down, "downstream")):
        frontier, seen = [dataset_id], {dataset_id}
        for _ in range(depth):
            following = []
            for node in frontier:
                for edge in neighbours.get(node, ()):
                    kept[(edge.upstream, edge.downstream)] = edge
                    nxt = getattr(edge, key)
                    if nxt not in seen:
                        seen.add(nxt)
                        following.append(nxt)
            frontier = following
    nodes = sorted({dataset_id} | {e.upstream for e in kept.values()} | {e.downstream for e in kept.values()})
    titles = {row_id: title for row_id, title in session.execute(
        sa.select(DatasetRow.id, DatasetRow.title).where(DatasetRow.id.in_(nodes)))}
    return {"dataset": dataset_id,
            "nodes": [{"id": n, "title": titles.get(n, n), "registered": n in titles} for n in nodes],
            "edges": [{"from": e.upstream, "to": e.downstream, "process": e.process}
                      for e in sorted(kept.values(), key=lambda e: (e.upstream, e.downstream))]}


def lineage_mermaid(graph: Mapping[str, Any]) -> str:
    """The lineage as a Mermaid flowchart (renders in GitLab, GitHub and most wikis)."""
    ids = {node["id"]: f"n{i}" for i, node in enumerate(graph["nodes"])}
    lines = ["flowchart LR"]
    for node in graph["nodes"]:
        label = node["title"].replace('"', "'")
        shape = f'{ids[node["id"]]}[["{label}<br/>{node["id"]}"]]' if node["id"] == graph["dataset"] else (
            f'{ids[node["id"]]}["{label}<br/>{node["id"]}"]')
        lines.append(f"  {shape}")
    for edge in graph["edges"]:
        process = edge["process"].replace('"', "'").replace("|", "/")
        lines.append(f'  {ids[edge["from"]]} -->|"{process}"| {ids[edge["to"]]}')
    return "\n".join(lines) + "\n"


def scores(session: Session, dataset_id: str, *, since: datetime, until: datetime,
           rule_id: str | None = None) -> list[QualityScoreRow]:
    query = sa.select(QualityScoreRow).where(QualityScoreRow.dataset_id == dataset_id,
                                             QualityScoreRow.hour >= quality.hour_of(since),
                                             QualityScoreRow.hour < until)
    if rule_id:
        query = query.where(QualityScoreRow.rule_id == rule_id)
    return list(session.scalars(query.order_by(QualityScoreRow.hour, QualityScoreRow.rule_id)))


def rule_summary(row: DatasetRow, found: list[QualityScoreRow]) -> list[dict[str, Any]]:
    """Per rule: what was checked in the window, the share that passed, and whether the rule holds."""
    totals: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for score in found:
        totals[score.rule_id][0] += score.checked
        totals[score.rule_id][1] += score.passed
    out = []
    for rule in row.rules:
        checked, passed = totals.get(rule["id"], (0, 0))
        share = passed / checked if checked else None
        status = "no data" if share is None else "met" if share >= rule.get("min_share", 1.0) else "failing"
        out.append({"id": rule["id"], "check": rule["check"], "field": rule.get("field"),
                    "minShare": rule.get("min_share", 1.0), "checked": checked, "passed": passed,
                    "share": round(share, 4) if share is not None else None, "status": status})
    return out


def dataset_view(row: DatasetRow, summary: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    view = {"id": row.id, "kind": row.kind, "title": row.title, "titleZh": row.title_zh, "owner": row.owner,
            "classification": row.classification, "fields": row.fields, "source": row.source, "rules": row.rules,
            "managed": row.managed, "registeredAt": row.registered_at.isoformat(),
            "updatedAt": row.updated_at.isoformat(), "updatedBy": row.updated_by,
            "lastIngestAt": row.last_ingest_at.isoformat() if row.last_ingest_at else None}
    if summary is not None:
        view["quality"] = summary
    return view


# ------------------------------------------------------------------------------------------------ writing


def set_rules(platform: Platform, dataset_id: str, raw: Any, *, by: Context) -> DatasetRow:
    """Replace a dataset's quality rules (validated as a whole; audited in the same transaction)."""
    from pydantic import ValidationError

    from citybrain.core.errors import field_path

    try:
        ruleset = quality.RuleSet.model_validate(raw if isinstance(raw, dict) else {"rules": raw})
    except ValidationError as exc:
        problems = ErrorCollector()
        checks = {"completeness", "range", "uniqueness", "freshness"}
        for error in exc.errors():
            # a rule's location names its check's variant too (rules.0.range.minimum): leave that out
            loc = [part for i, part in enumerate(error["loc"]) if not (i == 2 and part in checks)]
            problems.add(field_path(loc) or "rules", error["msg"].removeprefix("Value error, "))
        problems.raise_if_any("The quality rules have invalid fields")
        raise AssertionError("unreachable") from None
    with platform.transaction() as session:
        row = get_dataset(session, dataset_id)
        if row.fields:
            problems = ErrorCollector()
            for field, reason in quality.check_fields(ruleset.rules, row.fields):
                problems.add(field, reason)
            problems.raise_if_any("The quality rules name fields the dataset does not have")
        if row.kind == "telemetry" and any(r.check in ("completeness", "range", "uniqueness") for r in ruleset.rules):
            raise InvalidInput.at("rules", "telemetry is checked for freshness here; its ranges are checked "
                                           "on ingest (the device type's minimum and maximum)")
        now = platform.clock.now()
        row.rules = [rule.model_dump(exclude_defaults=True) | {"id": rule.id, "check": rule.check}
                     for rule in ruleset.rules]
        row.updated_at, row.updated_by = now, by.actor
        audit.append_in(session, [audit.AuditEntry.of(by, action="dataset.rules", resource=f"dataset:{dataset_id}",
                                                      outcome="ok", client=by.actor.partition(":")[0],
                                                      detail={"rules": [r["id"] for r in row.rules]})], at=now)
        session.flush()
        session.expunge(row)
    return row


# ------------------------------------------------------------------------------------------ the rounds


class EntityQualityHook:
    """Checks each entity written against its type's record rules, in the writing process (a change hook:
    it runs inside the write's transaction, and only counts in memory)."""

    def __init__(self, platform: Platform, accumulator: quality.Accumulator) -> None:
        self.platform = platform
        self.accumulator = accumulator
        self.rules: dict[str, list[Any]] = {}  # dataset id -> record rules (reloaded each round)

    def __call__(self, _session: Session, changes: list[EntityChange]) -> None:
        now = self.platform.clock.now()
        results: dict[str, list[tuple[str, bool]]] = defaultdict(list)  # one count per dataset of the write
        for change in changes:
            if change.operation == "deleted" or change.entity is None:
                continue
            dataset_id = f"entities:{change.entity_type}"
            found = results[dataset_id]  # an arrival, with or without rules
            rules = self.rules.get(dataset_id)
            if rules:
                record = _entity_record(change.entity)
                found.extend((rule.id, bool(quality.record_passes(rule, record))) for rule in rules)
        for dataset_id, found in results.items():
            self.accumulator.add(dataset_id, found, now)


def _entity_record(entity: Mapping[str, Any]) -> dict[str, Any]:
    record: dict[str, Any] = {}
    for name, attr in entity.items():
        if isinstance(attr, dict):
            record[name] = attr.get("value", attr.get("object"))
    if "orgUnit" in record and isinstance(record["orgUnit"], str):
        record["orgUnit"] = record["orgUnit"].rsplit(":", 1)[-1]
    return record


@dataclass
class RoundReport:
    datasets: int = 0
    records_checked: int = 0
    failing: list[str] | None = None


def run_round(platform: Platform, accumulator: quality.Accumulator, hook: EntityQualityHook | None = None,
              *, now: datetime | None = None) -> RoundReport:
    """One round: store what the hook counted, check the table datasets' new records, run the dataset-wide
    rules, and reload the rules the hook uses."""
    now = now or platform.clock.now()
    _telemetry_arrivals(platform, accumulator)
    tallies, arrivals = accumulator.take()
    report = RoundReport(failing=[])
    try:
        with platform.transaction() as session:
            rows = {row.id: row for row in session.scalars(sa.select(DatasetRow))}
            for dataset_id, at in arrivals.items():
                row = rows.get(dataset_id)
                if row is not None and (row.last_ingest_at is None or at > row.last_ingest_at):
                    row.last_ingest_at = at
            found: dict[tuple[str, str, datetime], quality.Tally] = defaultdict(quality.Tally)
            for key, tally in tallies.items():
                found[key].checked += tally.checked
                found[key].passed += tally.passed
            sources = table_sources()
            for row in rows.values():
                rules = quality.parse_rules(row.rules)
                if not rules:
                    continue
                report.datasets += 1
                source = sources.get(row.id)
                if source is not None:
                    report.records_checked += _table_round(session, row, source, rules, found, now)
                for rule in rules:
                    if rule.check == "freshness" and row.last_ingest_at is not None:  # judged from the first record
                        fresh = (now - row.last_ingest_at).total_seconds() <= rule.max_age_s
                        _tally(found, row.id, rule.id, now, 1, int(fresh))
                    elif rule.check == "uniqueness":
                        total, duplicated = _duplicates(session, row, source, rule.field)
                        if total:
                            _tally(found, row.id, rule.id, now, total, total - duplicated)
            _store_scores(session, found)
    except Exception:
        accumulator.give_back(tallies, arrivals)
        raise
    if hook is not None:
        hook.rules = {row_id: [r for r in quality.parse_rules(row.rules) if r.check in quality.RECORD_CHECKS]
                      for row_id, row in rows.items() if row.kind in ("entities", "import") and row.rules}
    return report


def _telemetry_arrivals(platform: Platform, accumulator: quality.Accumulator) -> None:
    """The newest reading per device type that the ingest in this process accepted."""
    from citybrain.hub.background import find_service
    from citybrain.sensing.runtime import SensingRuntime

    sensing = find_service(platform, SensingRuntime)
    if sensing is None:
        return
    for slug, seen in sensing.newest_by_type().items():
        accumulator.add(f"telemetry:{slug}", (), datetime.fromtimestamp(seen, UTC))


def _tally(found: dict[tuple[str, str, datetime], quality.Tally], dataset_id: str, rule_id: str, at: datetime,
           checked: int, passed: int) -> None:
    tally = found[(dataset_id, rule_id, quality.hour_of(at))]
    tally.checked += checked
    tally.passed += passed


def _table_round(session: Session, row: DatasetRow, source: TableSource, rules: list[Any],
                 found: dict[tuple[str, str, datetime], quality.Tally], now: datetime) -> int:
    """Check the records that arrived after the watermark and at least TABLE_SETTLE before now: a record's
    time is set before its transaction commits, so a later one may become visible first; waiting a few
    seconds, and moving the watermark only past whole instants, counts each record once."""
    record_rules = [r for r in rules if r.check in quality.RECORD_CHECKS]
    arrived = getattr(source.model, source.arrived)
    cutoff = now - TABLE_SETTLE
    query = sa.select(source.model).where(arrived <= cutoff).order_by(arrived).limit(TABLE_ROUND_LIMIT)
    if row.checked_until is not None:
        query = query.where(arrived > row.checked_until)
    records = list(session.scalars(query))
    if len(records) == TABLE_ROUND_LIMIT:  # cut at a whole instant: the rest of the last one comes next round
        last = getattr(records[-1], source.arrived)
        records = [r for r in records if getattr(r, source.arrived) < last] or records
    for record in records:
        at = getattr(record, source.arrived)
        values = {column: getattr(record, column) for column in row.fields}
        for rule in record_rules:
            _tally(found, row.id, rule.id, at, 1, int(bool(quality.record_passes(rule, values))))
    if records:
        newest = getattr(records[-1], source.arrived)
        row.checked_until = newest
        if row.last_ingest_at is None or newest > row.last_ingest_at:
            row.last_ingest_at = newest
    return len(records)


def _duplicates(session: Session, row: DatasetRow, source: TableSource | None, field: str) -> tuple[int, int]:
    """(records, records sharing their value with another) over the whole dataset."""
    if source is not None:
        table, column = source.model, getattr(source.model, field)
        present = [column.is_not(None)]
    elif row.kind == "entities":
        from citybrain.hub.entities.models import EntityRow

        table, column = EntityRow, EntityRow.attrs[field]["value"].as_string()
        present = [EntityRow.type == row.id.removeprefix("entities:"), column.is_not(None)]
    else:
        return 0, 0
    total = session.scalar(sa.select(sa.func.count()).select_from(table).where(*present))
    shared = sa.select(sa.func.count().label("n")).select_from(table).where(*present).group_by(column) \
        .having(sa.func.count() > 1).subquery()
    return int(total or 0), int(session.scalar(sa.select(sa.func.coalesce(sa.func.sum(shared.c.n), 0))) or 0)


def _store_scores(session: Session, found: Mapping[tuple[str, str, datetime], quality.Tally]) -> None:
    """Add to the hourly rows (insert, or add to what another process stored)."""
    if not found:
        return
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert  # type: ignore[assignment]
    values = [{"dataset_id": d, "rule_id": r, "hour": h, "checked": t.checked, "passed": t.passed}
              for (d, r, h), t in found.items() if t.checked]
    if not values:
        return
    statement = insert(QualityScoreRow).values(values)
    statement = statement.on_conflict_do_update(
        index_elements=["dataset_id", "rule_id", "hour"],
        set_={"checked": QualityScoreRow.checked + statement.excluded.checked,
              "passed": QualityScoreRow.passed + statement.excluded.passed})
    session.execute(statement)


class GovernanceRounds(PollingService):
    """Registers the code's datasets at start; then, every `quality_interval_s`, registers entity types added
    since, moves audit records spooled during a store outage into the log, ends the data-sharing grants that
    reached their end and scores the quality rules."""

    name = "data-governance"

    def __init__(self, platform: Platform) -> None:
        super().__init__(platform)
        self.interval_s = platform.settings.quality_interval_s
        self.accumulator = quality.Accumulator()
        self.hook = EntityQualityHook(platform, self.accumulator)

    async def setup(self) -> None:
        # before the server answers: the catalog is complete from the first request on
        new = await self.platform.run(sync, self.platform)
        if new:
            log.info("data catalog: %d datasets registered", new)
        self.platform.change_hooks.append(self.hook)

    async def teardown(self) -> None:
        if self.hook in self.platform.change_hooks:
            self.platform.change_hooks.remove(self.hook)
        try:
            await self.platform.run(run_round, self.platform, self.accumulator, self.hook)
        except Exception:
            log.exception("data quality: the last round at stop failed")

    async def run_once(self) -> bool:
        from citybrain.governance.audit import spool_of
        from citybrain.governance.sharing import expire_due

        drained = await self.platform.run(spool_of(self.platform).drain, self.platform)
        if drained:
            log.info("audit: %d spooled records moved into the log", drained)
        expired = await self.platform.run(expire_due, self.platform)
        if expired:
            log.info("data sharing: %d grants reached their end and expired", expired)
        await self.platform.run(sync, self.platform)  # entity types added since the last round join the catalog
        report = await self.platform.run(run_round, self.platform, self.accumulator, self.hook)
        if report.records_checked:
            log.info("data quality: %d records of %d datasets checked", report.records_checked, report.datasets)
        return False


def quality_service(platform: Platform) -> GovernanceRounds | None:
    from citybrain.hub.background import find_service

    return find_service(platform, GovernanceRounds)


def check_now(platform: Platform) -> RoundReport:
    """A round now (the CLI, the API), with the running service's counts when it runs in this process."""
    sync(platform)
    service = quality_service(platform)
    if service is not None:
        return run_round(platform, service.accumulator, service.hook)
    return run_round(platform, quality.Accumulator())


def window(since: datetime | None, until: datetime | None, now: datetime, hours: float = 24.0
           ) -> tuple[datetime, datetime]:
    until = until or now + timedelta(seconds=1)
    return since or until - timedelta(hours=hours), until
