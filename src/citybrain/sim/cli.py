"""`citybrain simulate …`: write a synthetic fleet, publish its telemetry with incidents, measure the broker.

Exported as `simulate_app` (a Typer app) for the main command line to mount. Every command has --help;
errors are one line on stderr and exit code 2.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from citybrain.cli_support import console, fail
from citybrain.core.errors import CityBrainError

simulate_app = typer.Typer(
    help="Simulate a city's devices: a fleet over real villages, and its telemetry over MQTT with incidents.",
    no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)



def _parse_mix(text: str | None) -> dict[str, float] | None:
    if not text:
        return None
    mix: dict[str, float] = {}
    for part in text.split(","):
        name, sep, share = part.partition("=")
        if not sep or not name.strip():
            fail(f"--mix: {part!r} is not type=share (e.g. streetlight=0.4,air_quality=0.1)")
        try:
            mix[name.strip()] = float(share)
        except ValueError:
            fail(f"--mix: the share of {name.strip()} ({share!r}) is not a number")
    return mix


CountOpt = Annotated[int, typer.Option("--count", min=1, help="Number of devices.")]
SeedOpt = Annotated[int, typer.Option(
    "--seed", help="Seed: the same seed gives the same fleet and readings.")]
DistrictOpt = Annotated[str, typer.Option(
    "--district",
    help="Packaged district (pudong, haidian, xihu) or its code, whose villages get the devices.")]
BrokerOpt = Annotated[str, typer.Option(
    "--broker", help="MQTT broker: mqtt://host:port, mqtt://user:password@host:port or mqtts://…")]


@simulate_app.command("fleet", help="Write a synthetic fleet CSV over the district's real villages.")
def fleet_command(
    count: CountOpt,
    out: Annotated[Path, typer.Option(
        "--out", help="Fleet CSV to write (device_id,device_type,org_unit,lon,lat).")] = Path("fleet.csv"),
    seed: SeedOpt = 0,
    district: DistrictOpt = "pudong",
    mix: Annotated[str | None, typer.Option(
        "--mix", help="Device type shares, e.g. streetlight=0.4,smoke_detector=0.3 (default: a city's mix).")]
    = None,
) -> None:
    """Write a synthetic fleet CSV: devices spread over the district's real villages, with synthetic
    coordinates. `citybrain devices import` registers it; `simulate devices --fleet` makes it report."""
    from citybrain.sim.fleet import build_fleet, write_fleet

    try:
        fleet = build_fleet(count, district=district, seed=seed, mix=_parse_mix(mix))
        write_fleet(fleet, out)
    except CityBrainError as exc:
        fail(exc.detail)
    except OSError as exc:
        fail(f"cannot write {out}: {exc.strerror or exc}")
    villages = len(set(fleet.org_unit.tolist()))
    table = Table("device type", "devices", title=f"{len(fleet):,} devices in {villages:,} villages → {out}")
    for name, number in sorted(fleet.counts().items(), key=lambda item: -item[1]):
        table.add_row(name, f"{number:,}")
    console.print(table)


@simulate_app.command(
    "devices", help="Publish the fleet's telemetry over MQTT, with incidents and their ground truth.")
def devices_command(
    fleet_path: Annotated[Path | None, typer.Option(
        "--fleet", help="Fleet CSV (from `simulate fleet`).")] = None,
    count: Annotated[int | None, typer.Option(
        "--count", min=1, help="Or: simulate a fresh fleet of this size.")] = None,
    seed: SeedOpt = 0,
    district: DistrictOpt = "pudong",
    interval: Annotated[float, typer.Option(
        "--interval", min=0.01, help="Seconds between a device's readings.")] = 30.0,
    broker: BrokerOpt = "mqtt://127.0.0.1:1883",
    connections: Annotated[int, typer.Option(
        "--connections", min=1, max=60_000,
        help="MQTT connections; each carries a slice of the fleet.")] = 1000,
    duration: Annotated[float, typer.Option("--duration", help="Seconds to run (0: until Ctrl-C).")] = 60.0,
    incident_rate: Annotated[float, typer.Option(
        "--incident-rate", min=0.0, max=1.0,
        help="Chance per reading that an incident starts on that device (threshold crossings, fast rises, "
             "jumps, silence, village-wide PM2.5 episodes).")] = 0.0,
    truth: Annotated[Path | None, typer.Option(
        "--truth", help="Write the incidents' ground truth here as JSON lines.")] = None,
    qos: Annotated[int, typer.Option(
        "--qos", min=0, max=1, help="0, or 1 (counting the broker's PUBACKs).")] = 0,
    tick: Annotated[float, typer.Option(
        "--tick", min=0.005, help="Seconds per send slot: each connection writes once per slot.")] = 0.1,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress bar.")] = False,
) -> None:
    """Publish the fleet's telemetry to city/{district}/{device_type}/{device_id}/telemetry, each device once
    per --interval, spread evenly, injecting incidents that the shipped rules detect."""
    from citybrain.sensing.ingest.mqtt import parse_broker_url
    from citybrain.sim.devices import TelemetryGenerator, TruthWriter
    from citybrain.sim.fleet import build_fleet, read_fleet

    if (fleet_path is None) == (count is None):
        fail("give either --fleet FILE or --count N")
    writer = None
    try:
        address = parse_broker_url(broker)
        if fleet_path is not None:
            fleet = read_fleet(fleet_path)
        else:
            fleet = build_fleet(count or 0, district=district, seed=seed)
        writer = TruthWriter(truth) if truth is not None else None
        generator = TelemetryGenerator(fleet, interval=interval, tick=tick, connections=connections, qos=qos,
                                       seed=seed, incident_rate=incident_rate, truth=writer)
        console.print(f"{len(fleet):,} devices → {address.url} over {generator.connections:,} connections, "
                      f"every {generator.interval:g} s: {_rate(generator.rate)} msgs/s at QoS {qos}")
        report = _run_with_progress(generator, broker, duration, quiet)
    except CityBrainError as exc:
        fail(exc.detail)
    except OSError as exc:
        fail(f"{exc.strerror or exc}: {getattr(exc, 'filename', '') or ''}".rstrip(": "))
    finally:
        if writer is not None:
            writer.close()
    _print_report(report, truth)


def _run_with_progress(generator: Any, broker: str, duration: float, quiet: bool) -> Any:
    from citybrain.sim.devices import Simulator, event_loop_factory

    simulator = Simulator(generator, broker)
    columns = [TextColumn("[bold]simulating"), BarColumn() if duration > 0 else TextColumn(""),
               TextColumn("{task.fields[sent]:>12,} msgs · {task.fields[rate]:>9,.0f}/s · "
                          "{task.fields[incidents]:,} incidents"), TimeElapsedColumn()]
    with asyncio.Runner(loop_factory=event_loop_factory()) as runner:
        runner.run(simulator.connect())  # a broker that is not there fails here, before any progress output
        with Progress(*columns, console=console, disable=quiet, transient=False) as progress:
            task = progress.add_task("simulate", total=duration if duration > 0 else None, sent=0, rate=0.0,
                                     incidents=0)

            def update(snapshot: dict[str, Any]) -> None:
                progress.update(task, completed=min(snapshot["elapsed"], duration) if duration > 0 else None,
                                sent=snapshot["sent"], rate=snapshot["rate"], incidents=snapshot["incidents"])

            simulator.progress = update
            try:
                return runner.run(simulator.run(duration))
            except KeyboardInterrupt:
                return simulator.report


def _rate(value: float) -> str:
    return f"{value:,.0f}" if value >= 10 else f"{value:.2g}"


def _print_report(report: Any, truth: Path | None) -> None:
    console.print(f"sent {report.sent:,} messages in {report.seconds:.1f} s: "
                  f"[bold]{_rate(report.rate)} msgs/s[/bold] "
                  f"(schedule {_rate(report.target_rate)}/s, {report.cpu_s / report.seconds:.2f} CPU cores); "
                  f"the broker took {report.drain_s:.1f} s more to consume them → "
                  f"{_rate(report.accepted_rate)} msgs/s accepted"
                  + (f", {report.acks:,} PUBACKs" if report.qos else ""))
    if report.dropped or report.lost_connections:
        console.print(f"[yellow]{report.dropped:,} messages dropped on {report.lost_connections} "
                      "lost connections")
    if report.incidents:
        started = ", ".join(f"{rule} {n}" for rule, n in sorted(report.incidents.items()))
        console.print(f"incidents started: {started}; {report.truth_records:,} truth records"
                      + (f" → {truth}" if truth else ""))


@simulate_app.command("count", help="Count the messages on a broker (a subscriber that only counts).")
def count_command(
    broker: BrokerOpt = "mqtt://127.0.0.1:1883",
    topic: Annotated[list[str] | None, typer.Option("--topic", help="Topic filter (repeatable).")] = None,
    seconds: Annotated[float, typer.Option("--seconds", min=0.1, help="How long to count.")] = 60.0,
    qos: Annotated[int, typer.Option("--qos", min=0, max=1, help="Subscription QoS.")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Count messages on the broker (a subscriber that only counts, for benchmarks): messages/s per second
    and overall."""
    from citybrain.sensing.ingest.mqtt import parse_broker_url
    from citybrain.sim import wire
    from citybrain.sim.devices import COUNTER_COALESCE_S, event_loop_factory

    async def count() -> dict[str, Any]:
        counter = await wire.open_counter(parse_broker_url(broker), topic or ["city/#"], qos=qos,
                                          client_id=f"citybrain-count-{int(time.time())}",
                                          coalesce_s=COUNTER_COALESCE_S)
        started = time.monotonic()
        per_second: list[int] = []
        last = 0
        try:
            while time.monotonic() - started < seconds:
                await asyncio.sleep(1.0)
                per_second.append(counter.count - last)
                last = counter.count
                if not as_json:
                    console.print(f"{per_second[-1]:>10,} msgs/s   (total {counter.count:,})")
        finally:
            counter.close()
        active = counter.last_at - counter.first_at if counter.first_at and counter.last_at else 0.0
        return {"messages": counter.count, "seconds": round(time.monotonic() - started, 3),
                "rate_while_active": round(counter.count / active) if active > 0 else 0,
                "per_second": per_second}

    try:
        with asyncio.Runner(loop_factory=event_loop_factory()) as runner:
            result = runner.run(count())
    except CityBrainError as exc:
        fail(exc.detail)
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
    if as_json:
        console.print_json(json.dumps(result))
    else:
        console.print(f"{result['messages']:,} messages; {result['rate_while_active']:,} msgs/s "
                      "while they arrived")


@simulate_app.command("broker", help="Measure the broker's own publish→subscribe throughput.")
def broker_command(
    broker: BrokerOpt = "mqtt://127.0.0.1:1883",
    seconds: Annotated[float, typer.Option(
        "--seconds", min=1.0, help="Measured seconds (after a warm-up).")] = 10.0,
    connections: Annotated[int, typer.Option("--connections", min=1, help="Publisher connections.")] = 100,
    payload_bytes: Annotated[int, typer.Option("--payload-bytes", min=2, help="Payload size.")] = 120,
    qos: Annotated[int, typer.Option("--qos", min=0, max=1, help="QoS of publisher and subscriber.")] = 0,
) -> None:
    """Measure the broker's own publish→subscribe throughput: the simulator's publisher as fast as the broker
    takes it, and one subscriber that only counts. Prints JSON."""
    from citybrain.sim.devices import bare_broker_throughput

    try:
        result = bare_broker_throughput(broker, seconds=seconds, connections=connections,
                                        payload_bytes=payload_bytes, qos=qos)
    except CityBrainError as exc:
        fail(exc.detail)
    console.print_json(json.dumps(result))
