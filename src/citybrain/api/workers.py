"""Several API server processes on one port, each with a listening socket of its own (SO_REUSEPORT).

uvicorn's own `--workers` shares one listening socket among its processes, and asyncio accepts every
pending connection in one go: when a client opens its keep-alive connections at once, one process often
took them all while the other idled (seen here: four connections, one worker at 100 % and one at 0 %).
With a socket per process the kernel spreads connections across them by their addresses.

The supervisor restarts a worker that dies, and gives up (exit 1, one line) when workers keep dying
within seconds of starting, rather than looping.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import socket
import threading
import time
from multiprocessing.process import BaseProcess

log = logging.getLogger(__name__)
APP_FACTORY = "citybrain.api.app:app_from_environment"
QUICK_DEATH_S = 10.0  # a worker that dies sooner than this after starting counts towards giving up
QUICK_DEATHS_MAX = 3


class WorkersFailed(RuntimeError):
    """The workers kept dying right after they started: the reason is in their log."""


def listening_socket(host: str, port: int) -> socket.socket:
    """A socket bound with SO_REUSEPORT, so every worker can listen on the same port."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


def _run_worker(host: str, port: int, environment: dict[str, str]) -> None:
    """One worker process: its own socket, the app built from CITYBRAIN_* variables, uvicorn's signals."""
    import uvicorn

    os.environ.update(environment)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    sock = listening_socket(host, port)
    sock.listen(2048)
    config = uvicorn.Config(APP_FACTORY, factory=True, host=host, port=port, log_level="info",
                            access_log=False, timeout_graceful_shutdown=5)
    uvicorn.Server(config).run(sockets=[sock])


def serve_workers(host: str, port: int, workers: int, environment: dict[str, str]) -> None:
    """Run `workers` API processes until SIGINT or SIGTERM, restarting any that dies.

    Raises OSError when the port is taken and WorkersFailed when workers keep dying at start-up."""
    listening_socket(host, port).close()  # fail here, in one line, if another program holds the port
    context = multiprocessing.get_context("spawn")  # a fresh interpreter: no state forked from this one
    stopping = threading.Event()

    def on_signal(_signum: int, _frame: object) -> None:
        stopping.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}

    def start() -> tuple[BaseProcess, float]:
        process = context.Process(target=_run_worker, args=(host, port, environment), name="citybrain-api",
                                  daemon=False)
        process.start()
        return process, time.monotonic()

    running = [start() for _ in range(workers)]
    quick_deaths = 0
    try:
        while not stopping.wait(0.5):
            for slot, (process, started) in enumerate(running):
                if process.is_alive():
                    continue
                lived = time.monotonic() - started
                log.warning("API worker %s exited with %s after %.1f s; starting another", process.pid,
                            process.exitcode, lived)
                quick_deaths = quick_deaths + 1 if lived < QUICK_DEATH_S else 0
                if quick_deaths >= QUICK_DEATHS_MAX:
                    raise WorkersFailed(f"API workers died {quick_deaths} times within {QUICK_DEATH_S:.0f} s "
                                        "of starting; see the log above for why")
                running[slot] = start()
    finally:
        for process, _ in running:
            if process.is_alive() and process.pid is not None:
                os.kill(process.pid, signal.SIGINT)  # uvicorn's graceful shutdown (Ctrl-C reaches them too)
        deadline = time.monotonic() + 30
        for process, _ in running:
            process.join(timeout=max(0.0, deadline - time.monotonic()))
            if process.is_alive():
                log.warning("API worker %s did not stop in time; killing it", process.pid)
                process.kill()
                process.join()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
