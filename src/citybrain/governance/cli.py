"""`citybrain audit` (verify the audit log's hash chain, print its head as an anchor, search it),
`citybrain user` and `citybrain key` (the people and systems who sign in)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from citybrain.cli_support import DbOpt, HomeOpt, console, err_console, fail, moment_option, open_store
from citybrain.core.context import ROLES, Context
from citybrain.core.errors import InvalidInput

if TYPE_CHECKING:
    from citybrain.platform import Platform

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
    with _store(db, home) as platform, platform.session() as session:
        total = session.scalar(sa.select(sa.func.count()).select_from(AuditRecordRow)) or 0
        with Progress(TextColumn("verifying"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      console=err_console, transient=True) as progress:
            task = progress.add_task("records", total=total)
            result = audit.verify(session, anchor=expected, progress=lambda n: progress.advance(task, n))
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

    with _store(db, home) as platform, platform.session() as session:
        seq, digest = audit.head(session)
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
    with _store(db, home) as platform, platform.session() as session:
        rows = audit.search(session, actor=actor, action=action, resource=resource, since=start, until=end,
                            limit=limit)
        table = Table("seq", "at (UTC)", "actor", "action", "resource", "outcome", "purpose")
        for row in rows:
            table.add_row(str(row.seq), row.at.strftime("%Y-%m-%d %H:%M:%S"), row.actor, row.action,
                          row.resource, row.outcome, row.purpose or "")
    console.print(table)
    console.print(f"{len(rows)} records", highlight=False)


user_app = typer.Typer(help="People who sign in: add, list, disable, enable, set a password.", no_args_is_help=True)
key_app = typer.Typer(help="API keys of devices and connected systems: create, list, rotate, revoke.",
                      no_args_is_help=True)

RolesOpt = Annotated[list[str], typer.Option("--role", help=f"A role (repeat for several): {', '.join(ROLES)}.")]
ScopeOpt = Annotated[list[str] | None, typer.Option(
    "--scope", help="An org unit code the holder acts within, its descendants included (repeat for several); "
                    "none = unrestricted.")]


def _operator() -> Context:
    """The person at the terminal, as audit records name them."""
    import getpass

    try:
        return Context(actor=f"cli:{getpass.getuser()}")
    except Exception:  # noqa: BLE001 - no login name (a container): still a CLI act
        return Context(actor="cli:unknown")


@contextmanager
def _store(db: str, home: Path) -> Iterator[Platform]:
    """The store for one command: a refusal (bad field, unknown user, conflict) becomes one line naming
    every field, and the store is closed whatever happens."""
    from citybrain.core.errors import CityBrainError

    platform = open_store(db, home)
    try:
        yield platform
    except CityBrainError as exc:
        fail("; ".join(f"{e.field}: {e.reason}" for e in exc.errors) or exc.detail)
    finally:
        platform.dispose()


def _scope(codes: list[str] | None) -> str:
    """An org scope as the tables and messages show it."""
    return ", ".join(codes) if codes is not None else "all"


def _read_password(password_stdin: bool) -> str:
    import sys

    if password_stdin:
        return sys.stdin.readline().rstrip("\n")
    return typer.prompt("password", hide_input=True, confirmation_prompt=True)


@user_app.command("add")
def user_add(
    username: Annotated[str, typer.Argument(help="Sign-in name: letters, digits, '.', '-', '_'.")],
    role: RolesOpt,
    scope: ScopeOpt = None,
    display_name: Annotated[str | None, typer.Option(help="Name shown to others.")] = None,
    password_stdin: Annotated[bool, typer.Option("--password-stdin", help="Read the password from the first "
                                                 "line of standard input instead of asking.")] = False,
    db: DbOpt = "", home: HomeOpt = Path(".citybrain"),
) -> None:
    """Add a user (the password is asked twice, or read with --password-stdin; 12 characters at least)."""
    from citybrain.governance import auth

    password = _read_password(password_stdin)
    with _store(db, home) as platform:
        auth.add_user(platform, username=username, password=password, roles=role, org_scope=scope,
                      display_name=display_name, by=_operator())
    console.print(f"user {username} added: roles {', '.join(role)}; scope {_scope(scope)}", highlight=False)


@user_app.command("list")
def user_list(db: DbOpt = "", home: HomeOpt = Path(".citybrain")) -> None:
    """Every user with roles, scope and state."""
    from citybrain.governance import auth

    with _store(db, home) as platform, platform.session() as session:
        users = auth.list_users(session)
    table = Table("username", "name", "roles", "scope", "state", "since")
    for user in users:
        table.add_row(user.username, user.display_name, ", ".join(user.roles), _scope(user.org_scope),
                      "disabled" if user.disabled else "active", user.created_at.strftime("%Y-%m-%d"))
    console.print(table)


def _set_disabled(username: str, disabled: bool, db: str, home: Path) -> None:
    from citybrain.governance import auth

    with _store(db, home) as platform:
        auth.set_disabled(platform, username, disabled, by=_operator())
    console.print(f"user {username} {'disabled' if disabled else 'enabled'}", highlight=False)


@user_app.command("disable")
def user_disable(username: Annotated[str, typer.Argument(help="Sign-in name.")], db: DbOpt = "",
                 home: HomeOpt = Path(".citybrain")) -> None:
    """Refuse the user's sign-ins and tokens (within CITYBRAIN_AUTH_CACHE_S seconds on running servers)."""
    _set_disabled(username, True, db, home)


@user_app.command("enable")
def user_enable(username: Annotated[str, typer.Argument(help="Sign-in name.")], db: DbOpt = "",
                home: HomeOpt = Path(".citybrain")) -> None:
    """Let a disabled user sign in again."""
    _set_disabled(username, False, db, home)


@user_app.command("passwd")
def user_passwd(
    username: Annotated[str, typer.Argument(help="Sign-in name.")],
    password_stdin: Annotated[bool, typer.Option("--password-stdin", help="Read it from standard input.")] = False,
    db: DbOpt = "", home: HomeOpt = Path(".citybrain"),
) -> None:
    """Set a user's password."""
    from citybrain.governance import auth

    password = _read_password(password_stdin)
    with _store(db, home) as platform:
        auth.set_password(platform, username, password, by=_operator())
    console.print(f"password of {username} set", highlight=False)


@key_app.command("create")
def key_create(
    name: Annotated[str, typer.Argument(help="What holds the key, e.g. 'water-department-system'.")],
    role: RolesOpt,
    scope: ScopeOpt = None,
    expires: Annotated[str | None, typer.Option(help="Expiry (ISO 8601 with zone); none = until revoked.")] = None,
    db: DbOpt = "", home: HomeOpt = Path(".citybrain"),
) -> None:
    """Make a key and print it once (only its hash is kept): the holder sends it as `X-API-Key`."""
    from citybrain.governance import auth

    expires_at = moment_option(expires, "expires")
    with _store(db, home) as platform:
        made = auth.create_key(platform, name=name, roles=role, org_scope=scope, expires_at=expires_at,
                               by=_operator())
    err_console.print(f"key {made.row.id} for {name} (shown once; keep it secret):", highlight=False)
    console.print(made.secret, highlight=False)


@key_app.command("list")
def key_list(db: DbOpt = "", home: HomeOpt = Path(".citybrain")) -> None:
    """Every key with its holder, roles, scope and state (never the secret)."""
    from citybrain.governance import auth

    with _store(db, home) as platform, platform.session() as session:
        keys = auth.list_keys(session)
    table = Table("id", "name", "roles", "scope", "state", "created")
    for key in keys:
        state = (f"revoked {key.revoked_at:%Y-%m-%d}" + (f" → {key.replaced_by}" if key.replaced_by else "")
                 if key.revoked_at else f"expires {key.expires_at:%Y-%m-%d}" if key.expires_at else "active")
        table.add_row(key.id, key.name, ", ".join(key.roles), _scope(key.org_scope), state,
                      key.created_at.strftime("%Y-%m-%d"))
    console.print(table)


@key_app.command("revoke")
def key_revoke(key_id: Annotated[str, typer.Argument(help="The key's id (`key list`).")], db: DbOpt = "",
               home: HomeOpt = Path(".citybrain")) -> None:
    """Refuse the key from now on (within CITYBRAIN_AUTH_CACHE_S seconds on running servers)."""
    from citybrain.governance import auth

    with _store(db, home) as platform:
        auth.revoke_key(platform, key_id, by=_operator())
    console.print(f"key {key_id} revoked", highlight=False)


@key_app.command("rotate")
def key_rotate(key_id: Annotated[str, typer.Argument(help="The key's id (`key list`).")], db: DbOpt = "",
               home: HomeOpt = Path(".citybrain")) -> None:
    """Replace a key: a new one with the same holder, roles and scope is printed once; the old one is revoked."""
    from citybrain.governance import auth

    with _store(db, home) as platform:
        made = auth.rotate_key(platform, key_id, by=_operator())
    err_console.print(f"key {key_id} revoked; its replacement {made.row.id} (shown once):", highlight=False)
    console.print(made.secret, highlight=False)


# ------------------------------------------------------------------------------------ the data catalog

datasets_app = typer.Typer(help="The data catalog (数据资产): datasets, owners, classification, lineage, quality "
                                "rules and scores.", no_args_is_help=True)


@datasets_app.command("list")
def datasets_list(
    kind: Annotated[str | None, typer.Option(help="entities, telemetry, cases, reports, alerts or import")] = None,
    owner: Annotated[str | None, typer.Option(help="A department slug, or 'operations'.")] = None,
    db: DbOpt = "", home: HomeOpt = Path(".citybrain"),
) -> None:
    """Every dataset with its owner, classification and how its quality rules did in the last 24 h."""
    from citybrain.governance import catalog

    with _store(db, home) as platform, platform.session() as session:
        catalog.sync(platform)
        since, until = catalog.window(None, None, platform.clock.now())
        table = Table("dataset", "title", "owner", "class", "rules", "quality (24 h)", "last arrival")
        for row in catalog.list_datasets(session, kind=kind, owner=owner):
            summary = catalog.rule_summary(row, catalog.scores(session, row.id, since=since, until=until))
            table.add_row(row.id, row.title_zh if row.title_zh != row.title else row.title, row.owner,
                          row.classification, str(len(row.rules)), _quality_cell(summary),
                          row.last_ingest_at.strftime("%Y-%m-%d %H:%M") if row.last_ingest_at else "–")
    console.print(table)


def _quality_cell(summary: list[dict]) -> str:
    if not summary:
        return "–"
    failing = [s["id"] for s in summary if s["status"] == "failing"]
    if failing:
        return f"[red]failing: {', '.join(failing)}[/red]"
    if all(s["status"] == "no data" for s in summary):
        return "no data"
    return "[green]met[/green]"


@datasets_app.command("show")
def datasets_show(
    dataset_id: Annotated[str, typer.Argument(help="e.g. entities:AirQualityObserved, telemetry:air_quality, cases")],
    hours: Annotated[float, typer.Option(min=1, max=24 * 90, help="The window the rules' status covers.")] = 24,
    db: DbOpt = "", home: HomeOpt = Path(".citybrain"),
) -> None:
    """A dataset: fields, lineage, and each rule's share of passed checks hour by hour (a bar per hour)."""
    from citybrain.governance import catalog

    with _store(db, home) as platform, platform.session() as session:
        row = catalog.get_dataset(session, dataset_id)
        since, until = catalog.window(None, None, platform.clock.now(), hours=hours)
        found = catalog.scores(session, row.id, since=since, until=until)
        graph = catalog.lineage(session, row.id, depth=1)
        summary = catalog.rule_summary(row, found)
    console.print(f"[bold]{row.id}[/bold]  {row.title} · {row.title_zh}\nowner {row.owner} · classified "
                  f"{row.classification} · {row.source}", highlight=False)
    fields = Table("field", "kind", "unit", "range", title="fields")
    for name, about in row.fields.items():
        bounds = "" if about.get("minimum") is None and about.get("maximum") is None else (
            f"{about.get('minimum', '')} … {about.get('maximum', '')}")
        fields.add_row(name, str(about.get("kind", "")), str(about.get("unit") or ""), bounds)
    console.print(fields)
    for edge in graph["edges"]:
        console.print(f"  {edge['from']} → {edge['to']}  ({edge['process']})", highlight=False)
    rules = Table("rule", "check", "field", "target", "checked", "passed", "share", "status", "per hour",
                  title=f"quality, last {hours:g} h")
    for status in summary:
        series = [s for s in found if s.rule_id == status["id"]]
        spark = "".join(" ▁▂▃▄▅▆▇█"[min(8, round(8 * s.passed / s.checked))] if s.checked else " " for s in series)
        share = "–" if status["share"] is None else f"{status['share']:.1%}"
        colour = {"met": "green", "failing": "red"}.get(status["status"], "dim")
        rules.add_row(status["id"], status["check"], status["field"] or "", f"{status['minShare']:.0%}",
                      f"{status['checked']:,}", f"{status['passed']:,}", share,
                      f"[{colour}]{status['status']}[/{colour}]", spark)
    console.print(rules)


@datasets_app.command("rules")
def datasets_rules(
    dataset_id: Annotated[str, typer.Argument(help="The dataset whose rules the file replaces.")],
    path: Annotated[Path, typer.Argument(help="YAML or JSON: a list of rules, or {rules: [...]}.")],
    db: DbOpt = "", home: HomeOpt = Path(".citybrain"),
) -> None:
    """Replace a dataset's quality rules (completeness, range, uniqueness, freshness), checked as a whole."""
    import yaml

    from citybrain.governance import catalog

    if not path.exists():
        fail(f"{path}: file not found")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        fail(f"{path}: not YAML or JSON: {exc}")
    with _store(db, home) as platform:
        catalog.sync(platform)
        row = catalog.set_rules(platform, dataset_id, raw, by=_operator())
    console.print(f"{row.id}: {len(row.rules)} rules ({', '.join(r['id'] for r in row.rules) or 'none'})",
                  highlight=False)


@datasets_app.command("lineage")
def datasets_lineage(
    dataset_id: Annotated[str, typer.Argument(help="The dataset.")],
    depth: Annotated[int, typer.Option(min=1, max=20, help="Steps up and down stream.")] = 10,
    mermaid: Annotated[bool, typer.Option("--mermaid", help="Print a Mermaid flowchart to paste in a wiki.")] = False,
    db: DbOpt = "", home: HomeOpt = Path(".citybrain"),
) -> None:
    """What feeds a dataset and what it feeds."""
    from citybrain.governance import catalog

    with _store(db, home) as platform, platform.session() as session:
        catalog.sync(platform)
        graph = catalog.lineage(session, dataset_id, depth=depth)
    if mermaid:
        console.print(catalog.lineage_mermaid(graph), highlight=False, markup=False)
        return
    for edge in graph["edges"]:
        console.print(f"{edge['from']} → {edge['to']}  ({edge['process']})", highlight=False)


@datasets_app.command("check")
def datasets_check(db: DbOpt = "", home: HomeOpt = Path(".citybrain")) -> None:
    """Score the rules now over what arrived since the last round (a running server does it every minute)."""
    from citybrain.governance import catalog

    with _store(db, home) as platform:
        catalog.sync(platform)
        report = catalog.check_now(platform)
    console.print(f"{report.records_checked:,} records of {report.datasets} datasets with rules checked")
