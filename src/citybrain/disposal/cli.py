"""Disposal commands: `citybrain cases …`, `citybrain supervision …` and `citybrain routing …`."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from citybrain.cli_support import DbOpt, HomeOpt, console, fail, moment_option, open_store

cases_app = typer.Typer(help="Cases (工单): list them, show one with its steps, act on one.", no_args_is_help=True)
supervision_app = typer.Typer(help="The big loop: 三率 and on-time rates, hotspots, supervision tasks and the "
                                   "daily brief for the leadership.", no_args_is_help=True)
routing_app = typer.Typer(help="Routing rules: who handles which event type where (rules as data).",
                          no_args_is_help=True)


def _open(db: str, home: Path) -> Any:
    """A platform and a disposal of the store (the catalogue and rules in force)."""
    from citybrain.core.errors import CityBrainError
    from citybrain.disposal.runtime import Disposal

    platform = open_store(db, home)
    try:
        return platform, Disposal(platform)
    except CityBrainError as exc:
        fail(exc.detail)


@cases_app.command("list")
def list_cases(
    status: Annotated[str | None, typer.Option(help="Statuses, comma-separated, or 'open'.")] = None,
    event_type: Annotated[str | None, typer.Option("--type", help="An event type code.")] = None,
    department: Annotated[str | None, typer.Option(help="A lead department slug (chengguan, jiaotong …).")] = None,
    handling_unit: Annotated[str | None, typer.Option("--unit", help="A handling unit's code.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=10_000)] = 50,
    db: DbOpt = "",
    home: HomeOpt = Path(".citybrain"),
) -> None:
    """List cases, newest first."""
    from citybrain.core.errors import CityBrainError
    from citybrain.disposal import service
    from citybrain.disposal.lifecycle import statuses_of

    try:
        statuses = statuses_of(status)
    except CityBrainError as exc:
        fail(f"--{exc.detail}")
    platform, _disposal = _open(db, home)
    table = Table("number", "type", "status", "level", "unit", "dept", "due", "title")
    with platform.session() as session:
        for row in service.list_cases(session, status=statuses, event_type=event_type, department=department,
                                      handling_units=[handling_unit] if handling_unit else None, limit=limit):
            due = row.stage_due_at.astimezone(service.NUMBER_ZONE).strftime("%m-%d %H:%M") if row.stage else ""
            table.add_row(row.number, row.event_type, row.status, row.level, row.handling_unit or "",
                          row.lead_department, due + (" ⚠" if row.breached_at else ""), row.title[:40])
    console.print(table)
    platform.dispose()


@cases_app.command("show")
def show_case(
    case: Annotated[str, typer.Argument(help="Case number (20261203-000042) or id.")],
    db: DbOpt = "",
    home: HomeOpt = Path(".citybrain"),
) -> None:
    """One case with every step it took."""
    from citybrain.core.errors import CityBrainError
    from citybrain.disposal import service

    platform, _disposal = _open(db, home)
    with platform.session() as session:
        try:
            row = service.get_case(session, case_ref=case)
        except CityBrainError as exc:
            fail(exc.detail)
        view = service.case_view(row)
        console.print(f"[bold]{view['number']}[/bold] {view['title']}  ({view['eventType']}, {view['status']})")
        console.print(f"level {view['level']} · unit {view['handlingUnit']} · lead {view['leadDepartment']}"
                      + (f" · assisting {', '.join(view['assisting'])}" if view["assisting"] else "")
                      + (f" · due {view['dueAt']}" if view["dueAt"] else ""))
        table = Table("at", "action", "from", "to", "actor", "reason")
        for step in service.transitions(session, case_id=row.id):
            table.add_row(step.at.astimezone(service.NUMBER_ZONE).strftime("%Y-%m-%d %H:%M"), step.action,
                          step.from_status or "", step.to_status, step.actor, (step.reason or "")[:60])
        console.print(table)
    platform.dispose()


@cases_app.command("act")
def act(
    case: Annotated[str, typer.Argument(help="Case number or id.")],
    action: Annotated[str, typer.Argument(help="triage, dispatch, receive, start, handle, verify, reject, close, "
                                               "return, escalate, suspend, resume, merge, dismiss, reopen")],
    reason: Annotated[str | None, typer.Option(help="Why (required for return, suspend, reject, dismiss, "
                                                    "reopen).")] = None,
    into: Annotated[str | None, typer.Option(help="merge: the case to join.")] = None,
    evidence: Annotated[list[str] | None, typer.Option(help="kind=url, e.g. photo_after=https://… (repeatable)")]
    = None,
    actor: Annotated[str, typer.Option(help="Who acts (recorded with the step).")] = "cli:operator",
    db: DbOpt = "",
    home: HomeOpt = Path(".citybrain"),
) -> None:
    """Apply one action to a case (the transition table decides what is allowed)."""
    from pydantic import ValidationError

    from citybrain.core.context import Context
    from citybrain.core.errors import CityBrainError
    from citybrain.disposal import flows
    from citybrain.disposal.schemas import Attachment, TransitionRequest

    try:
        attachments = [Attachment(kind=kind, url=url) for kind, _, url in (e.partition("=") for e in evidence or [])]
        request = TransitionRequest(action=action, reason=reason, into=into, attachments=attachments)
    except ValidationError as exc:
        error = exc.errors()[0]
        fail(f"{'.'.join(str(p) for p in error['loc'])}: {error['msg']}")
    platform, disposal = _open(db, home)
    try:
        outcome = flows.transition(platform, disposal, case, request, ctx=Context(actor=actor))
    except CityBrainError as exc:
        fail(exc.detail)
    console.print(f"{outcome.case['number']}: {outcome.case['status']} (allowed next: "
                  f"{', '.join(outcome.case['allowedActions']) or 'none'})")
    platform.dispose()


@supervision_app.command("rates")
def rates(
    by: Annotated[str, typer.Option(help="department, town, org_unit, event_type, category, channel, "
                                         "handling_unit or all")] = "department",
    days: Annotated[float, typer.Option(min=0.01, help="The window, ending now.")] = 30.0,
    start: Annotated[str | None, typer.Option("--from", help="Window start (with zone); overrides --days.")] = None,
    end: Annotated[str | None, typer.Option("--to", help="Window end (with zone).")] = None,
    db: DbOpt = "",
    home: HomeOpt = Path(".citybrain"),
) -> None:
    """三率 (response, resolution, satisfaction) and on-time rates per group."""
    from citybrain.core.errors import CityBrainError
    from citybrain.disposal import supervision

    finish = moment_option(end, "to") or datetime.now(UTC)
    begin = moment_option(start, "from") or finish - timedelta(days=days)
    platform, _disposal = _open(db, home)
    try:
        with platform.session() as session:
            rows = supervision.rates(session, start=begin, end=finish, group_by=by,
                                     towns_of=supervision.towns_of(platform.org_tree) if by == "town" else None)
    except CityBrainError as exc:
        fail(exc.detail)
    table = Table(by, "cases", "closed", "respond ✓", "handle ✓", "close ✓", "response", "resolution",
                  "satisfaction", "h to close", "escalated", "reopened")

    def pct(value: float | None) -> str:
        return "—" if value is None else f"{value * 100:.1f}%"

    for row in rows:
        table.add_row(str(row["key"]), f"{row.get('cases', 0):,}", pct(row.get("closedShare")),
                      pct(row.get("respondOnTime")), pct(row.get("handleOnTime")), pct(row.get("closeOnTime")),
                      pct(row.get("responseRate")), pct(row.get("resolutionRate")), pct(row.get("satisfactionRate")),
                      "—" if row.get("meanHoursToClose") is None else f"{row['meanHoursToClose']:.1f}",
                      str(row.get("escalations", 0)), str(row.get("reopens", 0)))
    console.print(table)
    platform.dispose()


@supervision_app.command("scan")
def scan(
    window_days: Annotated[float, typer.Option(min=0.1, help="Look back this many days.")] = 30.0,
    min_cases: Annotated[int, typer.Option(min=2, help="Cases of one type in one place that make a problem.")] = 5,
    db: DbOpt = "",
    home: HomeOpt = Path(".citybrain"),
) -> None:
    """Look for recurring problems now and open a supervision task for each new one."""
    from citybrain.disposal import supervision

    platform, disposal = _open(db, home)
    opened = supervision.open_recurring_tasks(platform, disposal, window_days=window_days, min_cases=min_cases)
    for task in opened:
        console.print(f"opened: {task['title']} → {task['department']}")
    console.print(f"{len(opened)} supervision task(s) opened")
    platform.dispose()


@supervision_app.command("brief")
def daily_brief(
    day: Annotated[str | None, typer.Option("--date", help="The local day, YYYY-MM-DD (default: yesterday).")]
    = None,
    out: Annotated[Path, typer.Option("-o", "--out", help="brief.html or brief.pdf")] = Path("brief.html"),
    lang: Annotated[str, typer.Option(help="zh or en")] = "zh",
    db: DbOpt = "",
    home: HomeOpt = Path(".citybrain"),
) -> None:
    """Write the daily brief for the district's leadership (HTML with charts, or PDF)."""
    from citybrain.core.errors import CityBrainError
    from citybrain.disposal import brief
    from citybrain.disposal.service import NUMBER_ZONE

    if out.suffix not in (".html", ".pdf"):
        fail(f"{out}: the file name ends in .html or .pdf")
    try:
        chosen = date.fromisoformat(day) if day else datetime.now(NUMBER_ZONE).date() - timedelta(days=1)
    except ValueError:
        fail(f"--date: not a day: {day!r} (YYYY-MM-DD)")
    platform, disposal = _open(db, home)
    try:
        figures = brief.build(platform, disposal, day=chosen, lang=lang)
    except CityBrainError as exc:
        fail(exc.detail)
    try:
        if out.suffix == ".pdf":
            out.write_bytes(brief.render_pdf(figures))
        else:
            out.write_text(brief.render_html(figures), encoding="utf-8")
    except OSError as exc:
        fail(f"cannot write {out}: {exc.strerror or exc}")
    console.print(f"brief of {chosen.isoformat()} written to {out} ({figures.headline['new']} new cases, "
                  f"{figures.headline['closed']} closed)")
    platform.dispose()


@routing_app.command("show")
def show_rules(db: DbOpt = "", home: HomeOpt = Path(".citybrain")) -> None:
    """The routing rules in force (YAML)."""
    import yaml

    platform, disposal = _open(db, home)
    console.print(f"# version {disposal.router.version}")
    console.print(yaml.safe_dump(disposal.router.rules.model_dump(mode="json", exclude_defaults=True),
                                 allow_unicode=True, sort_keys=False), highlight=False)
    platform.dispose()


@routing_app.command("import")
def import_rules(
    path: Annotated[Path, typer.Argument(help="YAML with `rules:` (see docs/disposal.md).")],
    actor: Annotated[str, typer.Option(help="Who changes them (recorded).")] = "cli:operator",
    db: DbOpt = "",
    home: HomeOpt = Path(".citybrain"),
) -> None:
    """Validate routing rules and put them in force as a new version."""
    import yaml
    from pydantic import ValidationError

    from citybrain.core.errors import CityBrainError
    from citybrain.disposal import service
    from citybrain.disposal.routing import Router, RoutingRules

    if not path.exists():
        fail(f"{path}: file not found")
    try:
        rules = RoutingRules.model_validate(yaml.safe_load(path.read_text(encoding="utf-8")) or {})
    except yaml.YAMLError as exc:
        fail(f"{path}: not YAML: {str(exc).splitlines()[0]}")
    except ValidationError as exc:
        error = exc.errors()[0]
        fail(f"{path}: {'.'.join(str(p) for p in error['loc'])}: {error['msg'].removeprefix('Value error, ')}")
    platform = open_store(db, home)
    try:
        Router(rules, platform.org_tree)
    except CityBrainError as exc:
        fail(f"{path}: {exc.detail}")
    with platform.transaction() as session:
        version = service.store_routing_rules(session, rules=rules.model_dump(mode="json", exclude_defaults=True),
                                              actor=actor, now=datetime.now(UTC))
    console.print(f"{len(rules.rules)} routing rule(s) in force as version {version} "
                  "(running servers pick them up when told over the bus, or at their next start)")
    platform.dispose()
