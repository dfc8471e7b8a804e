"""Measurements of the MQTT path: `MqttSource`'s receive rate and CPU, with the simulator as the load.

    python -m citybrain.sim.bench source --broker mqtt://127.0.0.1:18830 --qos 1 --rate 40000 --seconds 15

runs the simulator in this process (devices = rate × interval) and an `MqttSource` with a callback that
only counts in a child process, and prints what the child measured as JSON: messages into the callback
per second and the CPU the child used (user + system) while they arrived. The child is a separate process
so that its CPU is its own and the two do not share a GIL.
"""

from __future__ import annotations

import asyncio
import json
import resource
import subprocess
import sys
import time
import uuid
from typing import Any

from citybrain.sensing.ingest.mqtt import MqttSource


async def _receive(url: str, qos: int, seconds: float, idle_s: float, max_batch: int, max_delay_s: float,
                   client_id: str, coalesce_s: float) -> dict[str, Any]:
    state = {"messages": 0, "first": 0.0, "last": 0.0, "cpu0": 0.0, "batches": 0}

    async def on_batch(messages: list[tuple[str, bytes, float]]) -> None:
        now = time.monotonic()
        if not state["messages"]:
            usage = resource.getrusage(resource.RUSAGE_SELF)
            state["first"], state["cpu0"] = now, usage.ru_utime + usage.ru_stime
        state["messages"] += len(messages)
        state["batches"] += 1
        state["last"] = now

    source = MqttSource(url, on_batch, qos=qos, client_id=client_id, max_batch=max_batch,
                        max_delay_s=max_delay_s, session_expiry_s=60, read_coalesce_s=coalesce_s)
    await source.start()
    print("ready", flush=True)
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        await asyncio.sleep(0.25)
        if state["messages"] and time.monotonic() - state["last"] > idle_s:
            break
    usage = resource.getrusage(resource.RUSAGE_SELF)
    stats = source.stats()
    await source.stop()
    elapsed = max(1e-9, state["last"] - state["first"])
    cpu = usage.ru_utime + usage.ru_stime - state["cpu0"]
    return {"qos": qos, "messages": state["messages"], "batches": state["batches"],
            "seconds": round(elapsed, 3),
            "rate": round(state["messages"] / elapsed), "cpu_s": round(cpu, 3),
            "cpu_cores": round(cpu / (elapsed + idle_s), 3),
            "us_per_message": round(cpu / max(1, state["messages"]) * 1e6, 2),
            "acked": stats["acked"], "redelivered": stats["redelivered"], "coalesce_s": coalesce_s}


def source_receive_rate(url: str, *, qos: int = 0, rate: int = 40_000, seconds: float = 15.0,
                        interval: float = 1.0, connections: int = 10, coalesce_s: float = 0.001,
                        max_batch: int = 5000) -> dict[str, Any]:
    """Publish `rate` messages/s for `seconds` with the simulator and measure an `MqttSource` receiving them
    in a child process (see the module docstring). Returns the child's figures plus the simulator's."""
    from citybrain.sim.devices import TelemetryGenerator, run_simulation
    from citybrain.sim.fleet import build_fleet

    client_id = f"citybrain-bench-source-{uuid.uuid4().hex[:8]}"
    child = subprocess.Popen(
        [sys.executable, "-m", "citybrain.sim.bench", "receive", "--broker", url, "--qos", str(qos),
         "--seconds", str(seconds + 60), "--client-id", client_id, "--coalesce", str(coalesce_s),
         "--max-batch", str(max_batch)],
        stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None
    if child.stdout.readline().strip() != "ready":
        child.kill()
        raise RuntimeError("the receiving MqttSource did not start")
    fleet = build_fleet(int(rate * interval), seed=7)
    generator = TelemetryGenerator(fleet, interval=interval, tick=0.05, connections=connections, qos=qos,
                                   seed=7)
    report = run_simulation(generator, url, duration=seconds)
    output, _ = child.communicate(timeout=120)
    result = json.loads(output.strip().splitlines()[-1])
    result["published"] = report.sent
    result["publisher_rate"] = round(report.rate)
    result["broker_accepted_rate"] = round(report.accepted_rate)
    return result


def main(argv: list[str] | None = None) -> None:
    """`receive` (the child) or `source` (the whole measurement); see the module docstring."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m citybrain.sim.bench")
    sub = parser.add_subparsers(dest="command", required=True)
    receive = sub.add_parser("receive")
    source = sub.add_parser("source")
    for p in (receive, source):
        p.add_argument("--broker", default="mqtt://127.0.0.1:1883")
        p.add_argument("--qos", type=int, default=0)
        p.add_argument("--seconds", type=float, default=15.0)
        p.add_argument("--coalesce", type=float, default=0.001)
        p.add_argument("--max-batch", type=int, default=5000)
    receive.add_argument("--client-id", required=True)
    receive.add_argument("--idle", type=float, default=2.0)
    source.add_argument("--rate", type=int, default=40_000)
    source.add_argument("--connections", type=int, default=10)
    args = parser.parse_args(argv)
    if args.command == "receive":
        from citybrain.sim.devices import event_loop_factory

        with asyncio.Runner(loop_factory=event_loop_factory()) as runner:
            result = runner.run(_receive(args.broker, args.qos, args.seconds, args.idle, args.max_batch, 0.02,
                                         args.client_id, args.coalesce))
        print(json.dumps(result), flush=True)
    else:
        print(json.dumps(source_receive_rate(args.broker, qos=args.qos, rate=args.rate, seconds=args.seconds,
                                             connections=args.connections, coalesce_s=args.coalesce,
                                             max_batch=args.max_batch)))


if __name__ == "__main__":
    main()
