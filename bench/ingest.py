"""Sensing benchmark, end to end in one process tree on this machine: a Mosquitto broker of its own, the
device simulator publishing a registered fleet's telemetry over many MQTT connections (with injected
incidents and their ground truth), and the City Brain taking it in (MQTT in → rules → alert on the bus and
out on MQTT → stored).

It reports sustained msgs/s through the pipeline, the latency from each alerting reading's device timestamp
to its alert on the bus (p50/p99/max), memory per million devices (the sensing state arrays, and the server's
whole RSS), detection precision and recall against the simulator's ground truth, and — measured in the same
run, on the same broker — the bare broker's publish→subscribe throughput, so the pipeline's share of the
physical limit is a ratio.

    .venv/bin/python bench/ingest.py                 # 3,000,000 devices, every 30 s (100,000 msgs/s offered)
    .venv/bin/python bench/ingest.py --quick         # 10,000 devices, 30 s: a check of the machinery

Needs Debian's mosquitto binary (/usr/sbin/mosquitto).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform as host
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "ingest.json"
BENCHMARKS = ROOT / "BENCHMARKS.md"
CLI = str(Path(sys.executable).parent / "citybrain")
console = Console()
TARGETS = {
    "msgs_per_s": 100_000,
    "p99_ms": 50.0,
    "broker_share": 0.9,
    "mb_per_million_devices": 100.0,
    "recall": 0.99,
    "precision": 0.99,
}
MATCH_TOLERANCE_S = 5.0  # an alert counts for an incident raised this close to its expected start


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def broker(work: Path) -> Any:
    """A Mosquitto of our own: TCP_NODELAY (else a 12–13 ms tail), no persistence, room for bursts."""
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    port = free_port()
    config = work / "mosquitto.conf"
    config.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous true\nset_tcp_nodelay true\n"
        "persistence false\nmax_queued_messages 1000000\nmax_inflight_messages 0\n"
        "max_keepalive 600\n"
    )
    proc = subprocess.Popen([binary, "-c", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 10
    while time.time() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            break
        time.sleep(0.1)
    else:
        proc.kill()
        sys.exit("mosquitto did not start")
    try:
        yield f"mqtt://127.0.0.1:{port}", proc.pid
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def register(home: Path, fleet_csv: Path, count: int) -> float:
    """Register the fleet (registry rows and Device hub entities) and return devices/s."""
    subprocess.run(
        [CLI, "import", "divisions", "pudong", "--home", str(home)], check=True, capture_output=True
    )
    started = time.perf_counter()
    result = subprocess.run([CLI, "devices", "import", str(fleet_csv), "--home", str(home)], text=True)
    if result.returncode != 0:
        sys.exit("registering the fleet failed")
    return count / (time.perf_counter() - started)


@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    port: int

    def status(self) -> dict[str, Any]:
        with urllib.request.urlopen(
            f"http://127.0.0.1:{self.port}/api/v1/sensing/status", timeout=30
        ) as answer:
            return orjson.loads(answer.read())

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=60) as answer:
            return orjson.loads(answer.read())

    def rss_bytes(self) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        return 0


@contextlib.contextmanager
def server(home: Path, broker_url: str, qos: int, log: Path) -> Any:
    port = free_port()
    environment = {
        **os.environ,
        "CITYBRAIN_MQTT": broker_url,
        "CITYBRAIN_MQTT_QOS": str(qos),
        "CITYBRAIN_MQTT_CLIENT_ID": f"bench-ingest-{os.getpid()}",
        # Vital signs every 10 s, so their cost is part of the load.
        "CITYBRAIN_VITALS_INTERVAL_S": "10",
    }
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [CLI, "serve", "--home", str(home), "--port", str(port)],
            env=environment,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    handle = Server(proc, port)
    deadline = time.time() + 600  # loading 3 M devices into the index takes a while
    while time.time() < deadline:
        if proc.poll() is not None:
            sys.exit(f"the server exited: see {log}")
        with contextlib.suppress(OSError, ValueError):
            if (handle.status().get("mqtt") or {}).get("connected"):
                break
        time.sleep(1)
    else:
        proc.kill()
        sys.exit(f"the server did not connect to the broker: see {log}")
    try:
        yield handle
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()


@dataclass
class Run:
    offered_per_s: float = 0.0
    published: int = 0
    sim_start: float = 0.0
    sim_end: float = 0.0
    samples: list[tuple[float, int]] = field(default_factory=list)  # (time, messages the pipeline took)
    rss_peak: int = 0
    status: dict[str, Any] = field(default_factory=dict)
    sim_report: str = ""


def simulate(
    srv: Server, fleet_csv: Path, broker_url: str, args: argparse.Namespace, truth: Path, log: Path
) -> Run:
    run = Run()
    command = [
        CLI,
        "simulate",
        "devices",
        "--fleet",
        str(fleet_csv),
        "--interval",
        str(args.interval),
        "--broker",
        broker_url,
        "--connections",
        str(args.connections),
        "--duration",
        str(args.duration),
        "--incident-rate",
        str(args.incident_rate),
        "--truth",
        str(truth),
        "--qos",
        str(args.qos),
        "--tick",
        str(args.tick),
        "--quiet",
    ]
    with log.open("wb") as out:
        run.sim_start = time.time()
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    with Progress(
        TextColumn("simulating"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("s"),
        TimeElapsedColumn(),
        console=console,
    ) as progress:
        task = progress.add_task("run", total=int(args.duration))
        while proc.poll() is None:
            time.sleep(1)
            run.samples.append((time.time(), srv.status()["counts"].get("messages", 0)))
            run.rss_peak = max(run.rss_peak, srv.rss_bytes())
            progress.update(task, completed=min(int(args.duration), int(time.time() - run.sim_start)))
    run.sim_end = time.time()
    run.sim_report = log.read_text(errors="replace")
    if proc.returncode != 0:
        sys.exit(f"the simulator failed:\n{run.sim_report[-2000:]}")
    # Let the pipeline drain what the broker still holds.
    last, steady = -1, 0
    while steady < 3:
        time.sleep(1)
        now = srv.status()["counts"].get("messages", 0)
        steady = steady + 1 if now == last else 0
        last = now
    run.status = srv.status()
    return run


def sustained_rate(run: Run, warmup_s: float) -> float:
    """Messages per second the pipeline took between the end of the warm-up and the end of the run."""
    window = [(t, n) for t, n in run.samples if t >= run.sim_start + warmup_s]
    if len(window) < 2:
        return 0.0
    (t0, n0), (t1, n1) = window[0], window[-1]
    return (n1 - n0) / (t1 - t0) if t1 > t0 else 0.0


def alerts_of(srv: Server) -> list[dict[str, Any]]:
    alerts: list[dict[str, Any]] = []
    cursor = None
    while True:
        path = "/api/v1/alerts?limit=1000" + (f"&cursor={cursor}" if cursor else "")
        page = srv.get(path)
        alerts += page["items"]
        cursor = page["next_cursor"]
        if not cursor:
            return alerts


def score(alerts: list[dict[str, Any]], truth_path: Path, sim_end: float) -> dict[str, Any]:
    """Precision and recall of the alerts against the injected incidents. An incident counts when the alert
    for its (device type, rule, subject) was raised within MATCH_TOLERANCE_S of its expected start; incidents
    expected in the last seconds of the run, and alerts raised after it (silence once the devices stop), are
    left out of both."""
    cutoff = sim_end - MATCH_TOLERANCE_S
    truth = [orjson.loads(line) for line in truth_path.read_bytes().splitlines() if line.strip()]
    truth = [t for t in truth if t["start_ts"] <= cutoff]
    raised: dict[tuple[str, str, str], list[float]] = {}
    considered = 0
    for alert in alerts:
        moment = datetime.fromisoformat(alert["raisedAt"].replace("Z", "+00:00")).timestamp()
        if moment > cutoff:
            continue
        considered += 1
        raised.setdefault((alert["deviceType"], alert["ruleId"], alert["subject"]), []).append(moment)
    matched_alerts: set[tuple[tuple[str, str, str], float]] = set()
    found = 0
    for incident in truth:
        key = (
            incident["device_type"],
            incident["rule_id"],
            incident.get("device_id") or incident.get("area"),
        )
        hits = [m for m in raised.get(key, []) if abs(m - incident["start_ts"]) <= MATCH_TOLERANCE_S]
        if hits:
            found += 1
            matched_alerts.add((key, min(hits, key=lambda m: abs(m - incident["start_ts"]))))
    by_rule: dict[str, list[int]] = {}
    for incident in truth:
        key = (
            incident["device_type"],
            incident["rule_id"],
            incident.get("device_id") or incident.get("area"),
        )
        hit = any(abs(m - incident["start_ts"]) <= MATCH_TOLERANCE_S for m in raised.get(key, []))
        counts = by_rule.setdefault(f"{incident['device_type']}/{incident['rule_id']}", [0, 0])
        counts[0] += int(hit)
        counts[1] += 1
    return {
        "incidents": len(truth),
        "detected": found,
        "alerts": considered,
        "true_alerts": len(matched_alerts),
        "recall": found / len(truth) if truth else None,
        "precision": len(matched_alerts) / considered if considered else None,
        "by_rule": {rule: f"{hit}/{total}" for rule, (hit, total) in sorted(by_rule.items())},
    }


def main(argv: list[str] | None = None) -> None:
    # an open installation (no sign-in): these figures are the capability's own; bench/access.py times what
    # the access decision adds to a signed-in request
    os.environ.setdefault("CITYBRAIN_AUTH_REQUIRED", "false")
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--devices", type=int, default=None, help="registered devices (default 3,000,000)")
    parser.add_argument("--interval", type=float, default=30.0, help="seconds between a device's readings")
    parser.add_argument("--duration", type=float, default=None, help="seconds of simulation (default 180)")
    parser.add_argument(
        "--warmup", type=float, default=None, help="seconds left out of the rate (default 30)"
    )
    parser.add_argument("--connections", type=int, default=1000, help="device MQTT connections")
    parser.add_argument("--qos", type=int, default=0, choices=(0, 1))
    parser.add_argument(
        "--tick",
        type=float,
        default=0.02,
        help="simulator send slot (s): a reading waits up to this long for its slot, which the "
        "latency includes",
    )
    parser.add_argument("--incidents", type=int, default=300, help="incidents to inject over the run (about)")
    parser.add_argument("--broker-seconds", type=float, default=10.0, help="seconds of the bare broker run")
    parser.add_argument(
        "--quick", action="store_true", help="10,000 devices for 30 s; records nothing unless --record"
    )
    parser.add_argument(
        "--record",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="append to BENCHMARKS.md and write bench/results/ingest.json (default: yes, no with --quick)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    parser.add_argument("--json-out", type=Path, default=None, help="also write the figures to this file")
    args = parser.parse_args(argv)
    args.devices = args.devices or (10_000 if args.quick else 3_000_000)
    args.duration = args.duration or (30.0 if args.quick else 180.0)
    args.warmup = args.warmup if args.warmup is not None else (5.0 if args.quick else 30.0)
    args.connections = min(args.connections, max(1, args.devices // 10))
    record = args.record if args.record is not None else not args.quick
    offered = args.devices / args.interval
    args.incident_rate = min(0.05, args.incidents / max(1.0, offered * args.duration))

    from citybrain.sim.devices import bare_broker_throughput
    from citybrain.sim.fleet import build_fleet, write_fleet

    work = Path(tempfile.mkdtemp(prefix="citybrain-ingest-"))
    home = work / "home"
    console.rule(
        f"[bold]ingest bench[/bold]: {args.devices:,} devices every {args.interval:g} s "
        f"({offered:,.0f} msgs/s offered) for {args.duration:g} s"
    )
    try:
        fleet = build_fleet(args.devices, district="pudong", seed=1)
        fleet_csv = write_fleet(fleet, work / "fleet.csv")
        registration = register(home, fleet_csv, args.devices)
        console.print(f"registered {args.devices:,} devices ({registration:,.0f}/s, with their hub entities)")
        with broker(work) as (broker_url, broker_pid):
            bare = bare_broker_throughput(
                broker_url, seconds=args.broker_seconds, connections=args.connections
            )
            console.print(f"bare broker: {bare.get('received_per_s', 0):,.0f} msgs/s publish→subscribe")
            with server(home, broker_url, args.qos, work / "server.log") as srv:
                state_before = srv.status()
                run = simulate(srv, fleet_csv, broker_url, args, work / "truth.jsonl", work / "simulator.log")
                alerts = alerts_of(srv)
                rss = srv.rss_bytes()
        scored = score(alerts, work / "truth.jsonl", run.sim_end)
        rate = sustained_rate(run, args.warmup)
        latency = run.status["alert_latency_ms"]
        counts = run.status["counts"]
        devices_m = args.devices / 1e6
        out: dict[str, Any] = {
            "devices": args.devices,
            "interval_s": args.interval,
            "duration_s": args.duration,
            "connections": args.connections,
            "qos": args.qos,
            "offered_msgs_per_s": round(offered, 1),
            "msgs_per_s": round(rate, 1),
            "bare_broker_msgs_per_s": round(float(bare.get("received_per_s", 0)), 1),
            "broker_share_ratio": round(rate / bare["received_per_s"], 3)
            if bare.get("received_per_s")
            else None,
            "offered_share_ratio": round(rate / offered, 3),
            "alert_latency_p50_ms": latency["p50"],
            "alert_latency_p99_ms": latency["p99"],
            "alert_latency_max_ms": latency["max"],
            "alert_latency_samples": latency["count"],
            "state_mb_per_million_devices": round(run.status["state_bytes"] / 1e6 / devices_m, 1),
            **{
                f"{stage}_p50_ms": run.status["ingest_stages_ms"][stage]["p50"]
                for stage in ("transit", "queued", "processed")
            },
            "rss_mb": round(max(rss, run.rss_peak) / 1e6, 1),
            "recall": None if scored["recall"] is None else round(scored["recall"], 4),
            "precision": None if scored["precision"] is None else round(scored["precision"], 4),
            "incidents": scored["incidents"],
            "alerts": scored["alerts"],
            "accepted": counts.get("accepted", 0),
            "dead_letters": counts.get("dead_letters", 0),
            "duplicates": counts.get("duplicates", 0),
            "registration_devices_per_s": round(registration, 1),
            "date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "cpu_count": os.cpu_count(),
        }
        print_table(out, scored)
        if args.json_out is not None:
            args.json_out.write_text(json.dumps({**out, "by_rule": scored["by_rule"]}, indent=2) + "\n")
        if record:
            write_results(out, scored, args)
        del state_before, broker_pid
    finally:
        if args.keep:
            console.print(f"work folder kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


def _verdict(out: dict[str, Any]) -> list[str]:
    missed = []
    if out["msgs_per_s"] < TARGETS["msgs_per_s"]:
        missed.append("msgs/s")
    if out["alert_latency_p99_ms"] is None or out["alert_latency_p99_ms"] > TARGETS["p99_ms"]:
        missed.append("p99 latency")
    if (out["broker_share_ratio"] or 0) < TARGETS["broker_share"]:
        missed.append("share of the bare broker")
    if out["state_mb_per_million_devices"] > TARGETS["mb_per_million_devices"]:
        missed.append("state memory")
    if (out["recall"] or 0) < TARGETS["recall"]:
        missed.append("recall")
    if (out["precision"] or 0) < TARGETS["precision"]:
        missed.append("precision")
    return missed


def rows(out: dict[str, Any]) -> list[tuple[str, str, str]]:
    def fmt(value: Any, digits: int = 0) -> str:
        return "–" if value is None else f"{value:,.{digits}f}"

    return [
        (
            "msgs/s sustained through the pipeline (MQTT in → rules → alert → stored)",
            fmt(out["msgs_per_s"]),
            "≥ 100,000",
        ),
        ("msgs/s offered by the simulator", fmt(out["offered_msgs_per_s"]), ""),
        ("bare broker publish→subscribe msgs/s (same run)", fmt(out["bare_broker_msgs_per_s"]), ""),
        ("pipeline / bare broker", fmt(out["broker_share_ratio"], 3), "≥ 0.9"),
        (
            "device timestamp → alert on the bus p50 / p99 / max (ms)",
            f"{fmt(out['alert_latency_p50_ms'], 1)} / {fmt(out['alert_latency_p99_ms'], 1)} / "
            f"{fmt(out['alert_latency_max_ms'], 1)}",
            "p99 ≤ 50",
        ),
        ("sensing state MB per million devices", fmt(out["state_mb_per_million_devices"], 1), "≤ 100"),
        ("server RSS MB (whole process, peak)", fmt(out["rss_mb"], 0), ""),
        (
            "per ingest batch p50: transit / queued / processed (ms)",
            " / ".join(fmt(out[f"{stage}_p50_ms"], 1) for stage in ("transit", "queued", "processed")),
            "",
        ),
        (
            "recall / precision on injected incidents",
            f"{fmt(out['recall'], 4)} / {fmt(out['precision'], 4)}",
            "≥ 0.99 / ≥ 0.99",
        ),
        ("incidents / alerts scored", f"{out['incidents']:,} / {out['alerts']:,}", ""),
        (
            "accepted / dead letters / duplicates",
            f"{out['accepted']:,} / {out['dead_letters']:,} / {out['duplicates']:,}",
            "",
        ),
        ("device registration /s (with hub entities)", fmt(out["registration_devices_per_s"]), ""),
    ]


def print_table(out: dict[str, Any], scored: dict[str, Any]) -> None:
    table = Table(
        "metric",
        "value",
        "target",
        title=f"ingest: {out['devices']:,} devices, {out['connections']:,} connections, QoS {out['qos']}",
    )
    for metric, value, target in rows(out):
        table.add_row(metric, value, target)
    console.print(table)
    console.print("detected per rule: " + ", ".join(f"{k} {v}" for k, v in scored["by_rule"].items()))
    missed = _verdict(out)
    console.print(
        "[green]all targets met[/green]" if not missed else f"[yellow]missed:[/yellow] {', '.join(missed)}"
    )


def write_results(out: dict[str, Any], scored: dict[str, Any], args: argparse.Namespace) -> None:
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(out, indent=2) + "\n")
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        host.processor(),
    )
    command = "python bench/ingest.py " + " ".join(sys.argv[1:])
    lines = [
        f"\n## ingest — {out['date']}\n",
        f"- command: `{command.strip()}`",
        f"- machine: {os.cpu_count()} × {cpu}, Linux {host.release()}, Python {host.python_version()}; "
        "broker, simulator and City Brain on the same cores",
        f"- load: {out['devices']:,} registered devices of 7 types in Pudong's villages, each reporting "
        "every "
        f"{out['interval_s']:g} s over {out['connections']:,} MQTT connections (QoS {out['qos']}) for "
        f"{out['duration_s']:g} s; ~{args.incidents} injected incidents with ground truth",
        "",
        "| metric | value | target |",
        "|---|---:|---:|",
    ]
    lines += [f"| {m} | {v} | {t} |" for m, v, t in rows(out)]
    missed = _verdict(out)
    lines += [
        "",
        f"Detected per rule: {', '.join(f'{k} {v}' for k, v in scored['by_rule'].items())}.",
        "",
        "Verdict: " + ("all targets met." if not missed else f"missed {', '.join(missed)}."),
    ]
    with BENCHMARKS.open("a") as handle:
        handle.write("\n".join(lines) + "\n")
    console.print(f"recorded in {BENCHMARKS.name} and {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
