"""Sensing commands: `citybrain devices …` and `citybrain alerts …`."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from citybrain.cli_support import (
    DbOpt,
    HomeOpt,
    KeyOpt,
    console,
    err_console,
    fail,
    key_headers,
    moment_option,
    open_store,
    read_json_items,
)

devices_app = typer.Typer(
    help="The device registry: register devices in bulk, list them, list device types.", no_args_is_help=True
)
alerts_app = typer.Typer(help="Alerts raised by the sensing rules.", no_args_is_help=True)

CHUNK = 10_000




@devices_app.command("import")
def import_devices(
    path: Annotated[
        Path,
        typer.Argument(
            help="CSV with a header (device_id, device_type[, org_unit, lon, lat, "
            "secret]) or NGSI-LD Device entities (JSON array or NDJSON)."
        ),
    ],
    secrets_out: Annotated[
        Path | None,
        typer.Option(
            "--secrets-out",
            help="Write each new device's secret here (CSV: device_id,secret); shown nowhere else.",
        ),
    ] = None,
    db: DbOpt = "",
    home: HomeOpt = Path(".citybrain"),
) -> None:
    """Register devices from a file in chunks, with a progress bar. Devices already registered are left as
    they are; bad rows are listed and the good ones kept (exit 1 when any row was refused)."""
    from citybrain.core.context import Context
    from citybrain.sensing.devices import flows, service
    from citybrain.sensing.runtime import device_types

    if not path.exists():
        fail(f"{path}: file not found")
    raw = path.read_bytes()
    if raw.lstrip()[:1] in (b"[", b"{"):
        data = read_json_items(path)
        items, problems = service.from_ngsi(data)
    else:
        try:
            items, problems = service.parse_csv(raw.decode("utf-8-sig"))
        except UnicodeDecodeError:
            fail(f"{path}: not UTF-8 text")
    if problems and problems[0].field == "header":
        fail(f"{path}: {problems[0].reason}")
    platform = open_store(db, home)
    types = device_types()
    with platform.session() as session:
        index = service.load_index(session, types=list(types), org_tree=platform.org_tree)
    ctx = Context(actor="cli:devices-import")
    created = existing = 0
    refused = [(p.index, p.field, p.reason) for p in problems]
    secrets_file = secrets_out.open("w", newline="") if secrets_out else None
    writer = csv.writer(secrets_file) if secrets_file else None
    if writer:
        writer.writerow(("device_id", "secret"))
    with Progress(
        TextColumn("registering"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=err_console
    ) as progress:
        task = progress.add_task("devices", total=len(items))
        for start in range(0, len(items), CHUNK):
            chunk = items[start : start + CHUNK]
            outcome, _events = flows.register(platform, items=chunk, types=types, index=index, ctx=ctx)
            service.add_to_index(index, outcome.rows)
            created += len(outcome.created)
            existing += len(outcome.existing)
            refused += [(start + e.index, e.field.split("].", 1)[-1], e.reason) for e in outcome.errors]
            if writer:
                writer.writerows((device_id, secret) for device_id, _, secret in outcome.created)
            progress.advance(task, len(chunk))
    if secrets_file:
        secrets_file.close()
    for index_, field, reason in refused[:20]:
        err_console.print(f"item {index_}: {field}: {reason}", highlight=False)
    console.print(
        f"{created} devices registered, {existing} already registered, {len(refused)} refused"
        + (" (first 20 shown)" if len(refused) > 20 else "")
        + (f"; secrets in {secrets_out}" if secrets_out and created else "")
    )
    platform.dispose()
    if refused:
        raise typer.Exit(1)


@devices_app.command("list")
def list_devices(
    device_type: Annotated[str | None, typer.Option("--type", help="Only this device type.")] = None,
    org_unit: Annotated[
        str | None, typer.Option("--org-unit", help="Only this org unit and its descendants.")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=100_000)] = 50,
    db: DbOpt = "",
    home: HomeOpt = Path(".citybrain"),
) -> None:
    """List registered devices."""
    import sqlalchemy as sa

    from citybrain.sensing.devices.models import DeviceRow

    platform = open_store(db, home)
    if org_unit is not None and org_unit not in platform.org_tree:
        fail(f"unknown org unit {org_unit!r}")
    stmt = sa.select(DeviceRow).order_by(DeviceRow.num).limit(limit)
    if device_type:
        stmt = stmt.where(DeviceRow.device_type == device_type)
    if org_unit:
        stmt = stmt.where(DeviceRow.org_unit.in_(platform.org_tree.descendants(org_unit)))
    table = Table("num", "device id", "type", "org unit", "lon", "lat", "enabled")
    with platform.session() as session:
        for row in session.scalars(stmt):
            table.add_row(
                str(row.num),
                row.device_id,
                row.device_type,
                row.org_unit or "",
                "" if row.lon is None else f"{row.lon:.5f}",
                "" if row.lat is None else f"{row.lat:.5f}",
                "yes" if row.enabled else "no",
            )
    console.print(table)
    platform.dispose()


@devices_app.command("types")
def list_device_types() -> None:
    """List the device types scenario plug-ins contribute, with their measurements and rules."""
    from citybrain.sensing.rules.engine import rules_for
    from citybrain.sensing.runtime import device_types

    table = Table("device type", "title", "entity type", "every", "measurements", "rules")
    for slug, spec in sorted(device_types().items()):
        rules = rules_for(spec)
        table.add_row(
            slug,
            f"{spec.title} / {spec.title_zh}",
            spec.entity_type,
            f"{spec.report_interval_s:g} s",
            ", ".join(spec.measurements),
            ", ".join(r.id for r in rules.rules) if rules else "",
        )
    console.print(table)


@alerts_app.command("list")
def list_alerts(
    status: Annotated[str | None, typer.Option(help="active, acknowledged or cleared.")] = None,
    severity: Annotated[str | None, typer.Option(help="info, minor, major or critical.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=10_000)] = 50,
    db: DbOpt = "",
    home: HomeOpt = Path(".citybrain"),
) -> None:
    """List alerts, oldest first."""
    from citybrain.core.errors import CityBrainError
    from citybrain.sensing.alerts import service

    platform = open_store(db, home)
    table = Table("raised", "severity", "status", "rule", "subject", "org unit", "value", "title")
    with platform.session() as session:
        try:
            rows, _ = service.list_alerts(
                session,
                status=status,
                severity=severity,
                org_units=None,
                device_type=None,
                after=None,
                limit=limit,
            )
        except CityBrainError as exc:
            fail(exc.detail)
        for row in rows:
            table.add_row(
                row.raised_at.strftime("%Y-%m-%d %H:%M:%S"),
                row.severity,
                row.status,
                f"{row.device_type}/{row.rule_id}",
                row.subject,
                row.org_unit or "",
                "" if row.value is None else f"{row.value:g}",
                row.title,
            )
    console.print(table)
    platform.dispose()


telemetry_app = typer.Typer(
    help="The telemetry lake: query readings by device or type over a time range, "
    "raw or in buckets, and export them.",
    no_args_is_help=True,
)


@telemetry_app.command("query")
def query_telemetry(
    start: Annotated[str | None, typer.Option(help="Inclusive start, with its zone.")] = None,
    end: Annotated[str | None, typer.Option(help="Exclusive end, with its zone.")] = None,
    device: Annotated[list[str] | None, typer.Option("--device", help="A device id (repeatable).")] = None,
    device_type: Annotated[str | None, typer.Option("--type", help="A device type.")] = None,
    measurement: Annotated[list[str] | None, typer.Option(help="A measurement (repeatable).")] = None,
    bucket: Annotated[
        int | None, typer.Option(help="Bucket length in seconds; omit for raw readings.")
    ] = None,
    agg: Annotated[
        list[str] | None, typer.Option(help="avg, min, max, count, last (repeatable; default all).")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=1_000_000)] = 10_000,
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="Write to this .parquet or .csv file instead of printing a table."),
    ] = None,
    lake: Annotated[
        str, typer.Option(help="Lake: empty = Parquet under --home; postgresql://… when scaled out.")
    ] = "",
    db: DbOpt = "",
    home: HomeOpt = Path(".citybrain"),
) -> None:
    """Query the telemetry lake directly (no server needed)."""
    from citybrain.core.errors import CityBrainError
    from citybrain.sensing import telemetry
    from citybrain.sensing.lake.base import open_lake
    from citybrain.sensing.lake.query import export_table
    from citybrain.sensing.runtime import device_types

    begin, finish = moment_option(start, "start", required=True), moment_option(end, "end", required=True)
    if out is not None and out.suffix.lower() not in (".parquet", ".csv"):
        fail(f"--out: {out.name} must end in .parquet or .csv")
    platform = open_store(db, home)
    try:
        store = open_lake(lake, home=home)
    except (ValueError, OSError) as exc:
        fail(f"cannot open the lake: {exc}")
    try:
        with platform.session() as session:
            query = telemetry.build_query(
                session,
                device_ids=device or [],
                device_type=device_type,
                measurements=measurement or [],
                start=begin,
                end=finish,
                bucket_s=bucket,
                aggregations=agg or [],
                limit=limit,
                types=list(device_types()),
            )
            assert query is not None  # only a query limited to an org scope can match nothing
            table = telemetry.with_device_ids(session, store.query(query))
    except CityBrainError as exc:
        fail(exc.detail)
    finally:
        store.close(flush=False)
        platform.dispose()
    if out is not None:
        written = export_table(table.drop_columns(["device_num"]), out)
        console.print(f"{written} rows written to {out}")
        return
    result = Table(*[name for name in table.column_names if name != "device_num"])
    for row in telemetry.rows(table.drop_columns(["device_num"])):
        result.add_row(
            *["" if v is None else f"{v:g}" if isinstance(v, float) else str(v) for v in row.values()]
        )
    console.print(result)
    console.print(f"{table.num_rows} rows")


@telemetry_app.command("replay")
def replay_dead_letters(
    url: Annotated[str, typer.Option("--url", help="The running City Brain's API (its pipeline does the work).")]
    = "http://127.0.0.1:8000",
    dead_letter: Annotated[list[int] | None, typer.Option("--id", help="A dead letter id (repeatable).")] = None,
    device: Annotated[str | None, typer.Option("--device", help="The dead letters of one device.")] = None,
    reason: Annotated[str | None, typer.Option("--reason", help="Those whose reason contains this text.")] = None,
    since: Annotated[str | None, typer.Option("--since", help="Those received at or after this time.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=100_000, help="At most this many, oldest first.")] = 10_000,
    key: KeyOpt = "",
) -> None:
    """Send dead letters through the ingest again, e.g. after registering the devices they came from. What
    is accepted now is stored and judged by the rules; what is refused again stays a dead letter with
    today's reason."""
    import httpx

    body: dict[str, Any] = {"limit": limit}
    if dead_letter:
        body["ids"] = dead_letter
    if device:
        body["deviceId"] = device
    if reason:
        body["reason"] = reason
    if since:
        body["since"] = moment_option(since, "since").isoformat()
    if len(body) == 1:
        fail("name the dead letters to replay: --id, --device, --reason or --since")
    try:
        answer = httpx.post(f"{url.rstrip('/')}/api/v1/telemetry/dead-letters/replay", json=body, timeout=600,
                            headers=key_headers(key))
    except httpx.HTTPError as exc:
        fail(f"cannot reach the City Brain at {url}: {exc}")
    if answer.status_code != 200:
        detail = answer.json().get("detail") if answer.headers.get("content-type", "").endswith("json") else None
        fail(f"the City Brain refused the replay ({answer.status_code}): {detail or answer.text[:200]}")
    outcome = answer.json()
    console.print(f"{outcome['replayed']:,} dead letters replayed: {outcome['accepted']:,} readings accepted, "
                  f"{outcome['refused']:,} refused again, {outcome['duplicates']:,} duplicates, "
                  f"{outcome['outOfOrder']:,} out of order")


@telemetry_app.command("relay")
def relay(
    shards: Annotated[int, typer.Option("--shards", min=1, max=1024,
                                        help="Ingest workers the devices are split over (by town).")],
    broker: Annotated[str, typer.Option("--broker", help="MQTT broker the devices publish to.")] = "",
    nats_url: Annotated[str, typer.Option("--nats", help="NATS JetStream the workers read from.")] = "",
    qos: Annotated[int, typer.Option("--qos", min=0, max=1, help="QoS of the MQTT subscription.")] = 1,
    client_id: Annotated[str, typer.Option("--client-id", help="Stable MQTT client id of this relay "
                                                               "(its QoS 1 session); one per relay.")] = "",
    share_group: Annotated[str, typer.Option("--share-group", help="MQTT 5 shared-subscription group of "
                                                                   "the relays.")] = "citybrain-relay",
    reload_s: Annotated[float, typer.Option("--reload-s", min=1.0,
                                            help="How often to reload the device index.")] = 60.0,
    seconds: Annotated[float, typer.Option("--seconds", help="Stop after this long (0: until Ctrl-C).")] = 0,
    stream: Annotated[str, typer.Option("--stream", help="JetStream stream of the telemetry.")] = "",
    db: DbOpt = "",
    home: HomeOpt = Path(".citybrain"),
) -> None:
    """Forward device telemetry from MQTT to NATS JetStream, one subject per shard, for N ingest workers
    (`CITYBRAIN_TELEMETRY_NATS`, `CITYBRAIN_SENSING_SHARDS`, `CITYBRAIN_SENSING_SHARD`). A device's shard is
    its town's, so area rules see whole areas. At QoS 1 a message is acknowledged to the broker only after
    JetStream stored it. Run as many relays as the broker's load needs: they share one subscription."""
    import asyncio
    import logging
    import os

    from citybrain.cli_support import settings_from
    from citybrain.core.errors import CityBrainError

    settings = settings_from(db=db, home=home)
    broker = broker or settings.mqtt
    nats_url = nats_url or settings.telemetry_nats
    if not broker:
        fail("--broker (or CITYBRAIN_MQTT) is required: the MQTT broker the devices publish to")
    if not nats_url:
        fail("--nats (or CITYBRAIN_TELEMETRY_NATS) is required: the JetStream the workers read from")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    platform = open_store(db, home)
    try:
        client_id = client_id or f"citybrain-relay-{os.getpid()}"
        asyncio.run(_relay(platform, shards, broker, nats_url, qos, client_id, share_group, reload_s, seconds,
                           stream or settings.telemetry_stream))
    except CityBrainError as exc:
        fail(exc.detail)
    except OSError as exc:
        fail(f"cannot reach NATS at {nats_url}: {exc}")
    except KeyboardInterrupt:
        pass
    finally:
        platform.dispose()


async def _relay(platform: Any, shards: int, broker: str, nats_url: str, qos: int, client_id: str,
                 share_group: str, reload_s: float, seconds: float, stream: str) -> None:
    import asyncio
    import time

    import anyio

    from citybrain.sensing.devices import service as devices
    from citybrain.sensing.ingest.jetstream import TelemetryRelay
    from citybrain.sensing.ingest.mqtt import MqttSource
    from citybrain.sensing.runtime import device_types
    from citybrain.sensing.shards import ShardRouter

    types = list(device_types())
    districts = {code for code, unit in platform.org_tree.units.items() if unit.kind == "district"}

    def router() -> ShardRouter:
        with platform.session() as session:
            index = devices.load_index(session, types=types, org_tree=platform.org_tree)
        return ShardRouter(index, platform.org_tree, shards, index.type_codes, districts)

    current = await anyio.to_thread.run_sync(router)
    relay = TelemetryRelay(nats_url, lambda messages: current(messages), shards, stream=stream)
    await relay.start()
    source = MqttSource(broker, relay.forward, qos=qos, client_id=client_id, shared_group=share_group,
                        max_batch=20_000, max_delay_s=0.005, max_pending=200_000)
    await source.start()
    console.print(f"relaying {broker} → {nats_url} (stream {stream}) over {shards} shards "
                  f"({len(current.index):,} devices indexed)")
    console.file.flush()  # a supervisor reading a pipe waits for this line
    started = last_reload = time.monotonic()
    try:
        while not seconds or time.monotonic() - started < seconds:
            await asyncio.sleep(1.0)
            if time.monotonic() - last_reload >= reload_s:
                current = await anyio.to_thread.run_sync(router)
                last_reload = time.monotonic()
    finally:
        await source.stop()
        await relay.stop()
        console.print(f"relayed {relay.forwarded:,} messages in {relay.published:,} JetStream messages")
