"""The `citybrain` command line. Every command has --help; errors are one line and a non-zero exit."""

from __future__ import annotations

import asyncio
import logging
import sys
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from citybrain.cli_support import (
    BusOpt,
    DbOpt,
    HomeOpt,
    console,
    err_console,
    fail,
    open_platform,
    read_json_items,
    settings_from,
)
from citybrain.core.context import Context
from citybrain.core.errors import CityBrainError
from citybrain.settings import Settings

app = typer.Typer(help="CityBrain — an open-source City Brain (城市大脑).", no_args_is_help=True,
                  pretty_exceptions_enable=False, add_completion=False)
import_app = typer.Typer(help="Load data into the City Brain.", no_args_is_help=True)
export_app = typer.Typer(help="Write data out of the City Brain.", no_args_is_help=True)
app.add_typer(import_app, name="import")
app.add_typer(export_app, name="export")


def _add_capability_commands() -> None:
    from citybrain.disposal.catalogue.cli import catalogue_app
    from citybrain.disposal.cli import cases_app, routing_app, supervision_app
    from citybrain.governance.cli import audit_app, datasets_app, key_app, user_app
    from citybrain.hotline.cli import hotline_app
    from citybrain.sensing.cli import alerts_app, devices_app, telemetry_app
    from citybrain.sim.cli import simulate_app
    from citybrain.traffic.cli import traffic_app

    app.add_typer(devices_app, name="devices")
    app.add_typer(alerts_app, name="alerts")
    app.add_typer(telemetry_app, name="telemetry")
    app.add_typer(simulate_app, name="simulate")
    app.add_typer(cases_app, name="cases")
    app.add_typer(supervision_app, name="supervision")
    app.add_typer(routing_app, name="routing")
    app.add_typer(catalogue_app, name="catalogue")
    app.add_typer(hotline_app, name="hotline")
    app.add_typer(traffic_app, name="traffic")
    app.add_typer(audit_app, name="audit")
    app.add_typer(user_app, name="user")
    app.add_typer(key_app, name="key")
    app.add_typer(datasets_app, name="datasets")


_add_capability_commands()
def _logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not verbose:  # alembic narrates its plugin set-up at INFO; the migration result is logged by us
        logging.getLogger("alembic").setLevel(logging.WARNING)


WorkersOpt = Annotated[int, typer.Option(
    "--workers", min=1, max=64,
    help="API server processes. More than one needs a shared bus (--bus nats://…), so that every process "
         "sees the changes the others make (org tree, types, subscriptions).")]


def _serve(settings: Settings, platform: Any, workers: int = 1) -> None:
    import uvicorn

    from citybrain.api.app import create_app

    url = f"http://{settings.host}:{settings.port}"
    console.print(f"[bold green]CityBrain is up[/bold green] at [link={url}]{url}[/link]  "
                  f"(API docs {url}/docs · store {platform.dialect} · bus {settings.bus}"
                  f"{f' · {workers} workers' if workers > 1 else ''}) — Ctrl-C stops it")
    if workers > 1:
        # Each worker builds its own platform from the environment; this one only migrated the store.
        platform.dispose()
        from citybrain.api.workers import WorkersFailed, serve_workers

        environment = {"CITYBRAIN_DB": settings.database_url, "CITYBRAIN_BUS": settings.bus,
                       "CITYBRAIN_HOME": str(settings.home), "CITYBRAIN_BUS_STREAM": settings.bus_stream}
        try:
            serve_workers(settings.host, settings.port, workers, environment)
        except OSError as exc:
            fail(f"cannot listen on {settings.host}:{settings.port}: {exc.strerror or exc}")
        except WorkersFailed as exc:
            fail(str(exc))
        return
    api = create_app(platform)
    uvicorn.run(api, host=settings.host, port=settings.port, log_level="info", access_log=False,
                timeout_graceful_shutdown=5)
    platform.dispose()


def _check_workers(workers: int, bus: str) -> None:
    if workers > 1 and bus == "memory":
        fail(f"--workers {workers} needs a shared bus: add --bus nats://127.0.0.1:4222 (the in-process bus "
              "cannot tell one worker what another changed)")


@app.command()
def up(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    db: DbOpt = "",
    bus: BusOpt = "",
    home: HomeOpt = Path(".citybrain"),
    district: Annotated[str, typer.Option(help="Demo district: pudong, haidian, xihu, or a division code.")] = "pudong",
    workers: WorkersOpt = 1,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Start the City Brain with the demo district: migrate the store, load the district's org tree
    (idempotent), then serve the API and docs until Ctrl-C."""
    _logging(verbose)
    settings = settings_from(host=host, port=port, db=db, bus=bus, home=home)
    _check_workers(workers, settings.bus)
    platform = open_platform(settings)
    from citybrain.hub.org.flows import import_district

    try:
        counts = import_district(platform, district)
    except CityBrainError as exc:
        fail(exc.detail)
    console.print(f"Demo district {counts['name']} ({counts['district']}): {counts['towns']} towns/streets, "
                  f"{counts['villages']} villages/communities, {len(platform.org_tree)} org units in all")
    _first_admin(settings, platform)
    _serve(settings, platform, workers)


def _first_admin(settings: Settings, platform: Any) -> None:
    """On a store without users, an `admin` with a password made for this installation, printed once."""
    import secrets

    from citybrain.governance import auth

    with platform.session() as session:
        if auth.count_users(session):
            return
    password = secrets.token_urlsafe(15)
    auth.add_user(platform, username="admin", password=password, roles=["admin", "district_leader", "auditor"],
                  display_name="Administrator", by=Context(actor="system:first-run"))
    url = f"http://{settings.host}:{settings.port}"
    console.print(f"[bold]First run:[/bold] user [bold]admin[/bold] created with the password "
                  f"[bold]{password}[/bold] (shown this once). Sign in with\n"
                  f"  curl -d username=admin -d password='{password}' {url}/api/v1/auth/token\n"
                  f"and send the access_token as 'Authorization: Bearer …'; change the password with "
                  f"`citybrain user passwd admin`, add people with `citybrain user add`.", highlight=False)


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    db: DbOpt = "",
    bus: BusOpt = "",
    home: HomeOpt = Path(".citybrain"),
    workers: WorkersOpt = 1,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Serve the API on an existing store (migrating it first), without loading demo data."""
    _logging(verbose)
    settings = settings_from(host=host, port=port, db=db, bus=bus, home=home)
    _check_workers(workers, settings.bus)
    _serve(settings, open_platform(settings), workers)


@app.command()
def migrate(db: DbOpt = "", home: HomeOpt = Path(".citybrain")) -> None:
    """Upgrade the store's schema in place to this version (safe to run again)."""
    from citybrain.db.migrate import upgrade
    from citybrain.db.session import create_db_engine

    settings = settings_from(db=db, home=home)
    try:
        engine = create_db_engine(settings.database_url)
        before, after = upgrade(engine)
    except Exception as exc:  # noqa: BLE001 - any failure to reach or upgrade the store is one line
        fail(f"cannot migrate {settings.database_url_shown}: {type(exc).__name__}: "
             f"{settings.scrub(str(exc).splitlines()[0])}")
    console.print(f"store at revision {after} (was {before or 'empty'})" if before != after
                  else f"store already at revision {after}")


@import_app.command("divisions")
def import_divisions(
    source: Annotated[str, typer.Argument(help="A district's CSV (any of its three files, or their common "
                                               "prefix), or a packaged district: pudong, haidian, xihu.")],
    db: DbOpt = "",
    home: HomeOpt = Path(".citybrain"),
    bus: Annotated[str, typer.Option("--bus", help="Also tell the servers on this bus (nats://…) to reload "
                                                   "the tree; with 'memory' they see it when restarted.")] = "memory",
) -> None:
    """Load a district's towns/streets and villages/communities (china-division CSV layout), with the
    standard functional departments. Importing again updates and never duplicates."""
    from citybrain.hub.org.flows import announce, import_district

    platform = open_platform(settings_from(db=db, home=home, bus=bus))
    try:
        counts = import_district(platform, source)
    except CityBrainError as exc:
        fail(exc.detail)
    if bus != "memory":
        async def tell_servers() -> None:
            await platform.bus.start()
            try:
                await announce(platform, str(counts["district"]), Context(actor="cli", org_scope=None))
            finally:
                await platform.bus.stop()

        try:
            asyncio.run(tell_servers())
        except Exception as exc:  # noqa: BLE001 - the tree is stored either way; say what did not reach them
            fail(f"district stored, but the servers were not told ({bus}): {type(exc).__name__}: {exc}")
    console.print(f"{counts['name']} ({counts['district']}): {counts['towns']} towns/streets, "
                  f"{counts['villages']} villages/communities; {counts['created']} units created, "
                  f"{counts['updated']} updated")


@import_app.command("entities")
def import_entities(
    path: Annotated[Path, typer.Argument(help="NGSI-LD normalized entities: a JSON array or NDJSON.")],
    db: DbOpt = "",
    home: HomeOpt = Path(".citybrain"),
    mode: Annotated[str, typer.Option(help="replace or merge attributes of existing entities.")] = "replace",
) -> None:
    """Upsert entities from a file in batches, with a progress bar; bad items are listed, good ones kept."""
    if mode not in ("replace", "merge"):
        fail("--mode is replace or merge")
    from citybrain.hub.entities.flows import upsert_batch

    platform = open_platform(settings_from(db=db, home=home))
    items = read_json_items(path)
    ctx = Context(actor="cli:import")
    batch = platform.settings.max_batch_entities
    written, errors = 0, []

    async def run() -> None:
        nonlocal written
        with Progress(TextColumn("importing"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      console=err_console) as progress:
            task = progress.add_task("entities", total=len(items))
            for start in range(0, len(items), batch):
                result = await upsert_batch(platform, items[start:start + batch], mode=mode, ctx=ctx)  # type: ignore[arg-type]
                written += len(result.success)
                errors.extend((start + e.index, e.field, e.reason) for e in result.errors)
                progress.advance(task, min(batch, len(items) - start))

    asyncio.run(run())
    if written:  # the file joins the data catalog, feeding the entity types it held (lineage)
        from citybrain.governance.catalog import register_import, sync

        sync(platform)
        types = {item.get("type") for item in items if isinstance(item, dict) and isinstance(item.get("type"), str)}
        with platform.transaction() as session:
            register_import(platform, session, name=path.name, entity_types=sorted(types & set(platform.types.names())),
                            records=written, by=ctx)
    for index, field, reason in errors[:20]:
        err_console.print(f"item {index}: {field}: {reason}", highlight=False)
    console.print(f"{written} entities written, {len(errors)} problems" + (" (first 20 shown)" if len(errors) > 20 else ""))
    if errors:
        raise typer.Exit(1)


@export_app.command("entities")
def export_entities(
    out: Annotated[Path | None, typer.Option("--out", "-o", help="File to write (default: standard output).")] = None,
    type: Annotated[str | None, typer.Option("--type", help="Entity types, comma-separated.")] = None,
    org_unit: Annotated[str | None, typer.Option("--org-unit", help="Org unit code (with its descendants).")] = None,
    ndjson: Annotated[bool, typer.Option(help="One entity per line instead of a JSON array.")] = False,
    db: DbOpt = "",
    home: HomeOpt = Path(".citybrain"),
) -> None:
    """Write entities in NGSI-LD normalized form (what `import entities` reads back)."""
    from citybrain.hub.entities import service
    from citybrain.hub.entities.router import build_query

    platform = open_platform(settings_from(db=db, home=home))
    try:
        query = build_query(platform, type=type, id=None, q=None, bbox=None, near=None, max_distance=None,
                            org_unit=org_unit)
    except CityBrainError as exc:
        fail(exc.detail)
    handle = out.open("wb") if out else sys.stdout.buffer
    count, after = 0, None
    with platform.session() as session:
        handle.write(b"" if ndjson else b"[")
        while True:
            rows, _ = service.query_entities(session, query=query, after=after, limit=1000)
            for row in rows:
                prefix = b"" if ndjson or count == 0 else b",\n"
                handle.write(prefix + orjson.dumps(service.row_to_ngsi(row)) + (b"\n" if ndjson else b""))
                count += 1
            if len(rows) < 1000:
                break
            after = rows[-1].id
        handle.write(b"" if ndjson else b"]\n")
    if out:
        handle.close()
        console.print(f"{count} entities written to {out}")


@app.command("types")
def list_types() -> None:
    """List the entity types scenario plug-ins contribute."""
    from citybrain.scenarios import scenario_types

    table = Table("type", "title", "source", "attributes")
    for spec in scenario_types():
        table.add_row(spec.name, f"{spec.title} / {spec.title_zh}", spec.source, str(len(spec.attributes)))
    console.print(table)


def main() -> None:
    app()
