"""`citybrain audit`: verify the audit log's hash chain, print its head as an anchor, search it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from citybrain.cli_support import DbOpt, HomeOpt, console, err_console, fail, moment_option, open_store
from citybrain.core.errors import InvalidInput

audit_app = typer.Typer(help="The tamper-evident audit log: verify it, anchor it, search it.",
                        no_args_is_help=True)


@audit_app.command("verify")
def verify_command(
    anchor: Annotated[str | None, typer.Option(
        "--anchor", help="SEQ:HASH printed earlier by `citybrain audit head` and kept outside the store: also "
                         "catches records cut off the end of the log.")] = None,
    db: DbOpt = "", home: HomeOpt = Path(".citybrain"),
) -> None:
    """Recompute every record's hash in order. Exit 0 when the chain is intact, 1 naming the first record
    that was changed, removed or inserted (or the anchor that no longer matches)."""
    import sqlalchemy as sa

    from citybrain.governance import audit
    from citybrain.governance.models import AuditRecordRow

    try:
        expected = audit.parse_anchor(anchor) if anchor else None
    except InvalidInput as exc:
        fail(f"--{exc.detail}")
    platform = open_store(db, home)
    try:
        with platform.session() as session:
            total = session.scalar(sa.select(sa.func.count()).select_from(AuditRecordRow)) or 0
            with Progress(TextColumn("verifying"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                          console=err_console, transient=True) as progress:
                task = progress.add_task("records", total=total)
                result = audit.verify(session, anchor=expected, progress=lambda n: progress.advance(task, n))
    finally:
        platform.dispose()
    if result.intact:
        console.print(f"[green]intact[/green]: {result.records} records, head {result.head_seq}:{result.head_hash}",
                      highlight=False)
        return
    err_console.print(f"[red]broken[/red] at record {result.broken_at}: {result.reason} "
                      f"({result.records} records before it verified)", highlight=False)
    raise typer.Exit(1)


@audit_app.command("head")
def head_command(db: DbOpt = "", home: HomeOpt = Path(".citybrain")) -> None:
    """Print the last record as SEQ:HASH. Keep it somewhere else (a ticket, another system): a later
    `verify --anchor` then proves nothing before it was rewritten or cut off."""
    from citybrain.governance import audit

    platform = open_store(db, home)
    try:
        with platform.session() as session:
            seq, digest = audit.head(session)
    finally:
        platform.dispose()
    console.print(f"{seq}:{digest}", highlight=False)


@audit_app.command("search")
def search_command(
    actor: Annotated[str | None, typer.Option(help="Exactly this actor.")] = None,
    action: Annotated[str | None, typer.Option(help="Actions starting with this (e.g. 'POST /cases').")] = None,
    resource: Annotated[str | None, typer.Option(help="Resources starting with this path.")] = None,
    since: Annotated[str | None, typer.Option(help="From this time (ISO 8601 with zone).")] = None,
    until: Annotated[str | None, typer.Option(help="Before this time.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=100_000, help="At most this many records.")] = 50,
    db: DbOpt = "", home: HomeOpt = Path(".citybrain"),
) -> None:
    """Audit records in order, as a table."""
    from citybrain.governance import audit

    start, end = moment_option(since, "since"), moment_option(until, "until")
    platform = open_store(db, home)
    try:
        with platform.session() as session:
            rows = audit.search(session, actor=actor, action=action, resource=resource, since=start, until=end,
                                limit=limit)
            table = Table("seq", "at (UTC)", "actor", "action", "resource", "outcome", "purpose")
            for row in rows:
                table.add_row(str(row.seq), row.at.strftime("%Y-%m-%d %H:%M:%S"), row.actor, row.action,
                              row.resource, row.outcome, row.purpose or "")
    finally:
        platform.dispose()
    console.print(table)
    console.print(f"{len(rows)} records", highlight=False)
