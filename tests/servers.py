"""Real `citybrain` server processes for the tests that need one from outside (fuzz, kill -9)."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def make_key(home: Path, name: str, roles: Sequence[str], *, scope: Sequence[str] = ()) -> str:
    """An API key in HOME's store, made as an operator would (`citybrain key create`)."""
    command = [sys.executable, "-m", "citybrain", "key", "create", name, "--home", str(home)]
    command += [part for role in roles for part in ("--role", role)]
    command += [part for code in scope for part in ("--scope", code)]
    made = subprocess.run(command, check=False, capture_output=True, text=True, timeout=120)
    if made.returncode != 0:
        raise RuntimeError(f"citybrain key create failed: {made.stderr[-2000:]}")
    return made.stdout.strip()


def start_citybrain(home: Path, port: int, *command: str, env: Mapping[str, str] | None = None,
                    timeout: float = 60.0) -> subprocess.Popen[bytes]:
    """`python -m citybrain COMMAND --home HOME --port PORT`, its output appended to HOME/server.log;
    returns once /health answers (RuntimeError with the log's end if it exits or the timeout passes)."""
    with (home / "server.log").open("ab") as log:
        server = subprocess.Popen([sys.executable, "-m", "citybrain", *command, "--home", str(home),
                                   "--port", str(port)], env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=5).status_code == 200:
                return server
        except httpx.TransportError:
            pass
        if server.poll() is not None or time.monotonic() > deadline:
            server.kill()
            raise RuntimeError(f"the server did not come up: {(home / 'server.log').read_text()[-2000:]}")
        time.sleep(0.2)


def stop(server: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL if it has not ended within 30 s."""
    server.terminate()
    try:
        server.wait(timeout=30)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()
