"""Real `citybrain` server processes for the tests that need one from outside (fuzz, kill -9)."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Self

import httpx


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def make_key(home: Path, name: str, roles: Sequence[str], *, scope: Sequence[str] = (), db: str = "") -> str:
    """An API key in HOME's store (or `db`), made as an operator would (`citybrain key create`)."""
    command = [sys.executable, "-m", "citybrain", "key", "create", name, "--home", str(home)]
    command += ["--db", db] if db else []
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



class PrivatePostgres:
    """A PostgreSQL server of the test's own (initdb in a temporary folder, its own port), so a test can stop
    and start it under load without touching the machine's shared server. Runs as the `postgres` user, as
    PostgreSQL refuses to run as root."""

    def __init__(self) -> None:
        bins = sorted(Path("/usr/lib/postgresql").glob("*/bin"))
        if not bins:
            raise RuntimeError("PostgreSQL server binaries not found under /usr/lib/postgresql")
        self.bin = bins[-1]
        # its own folder under /tmp: the postgres user cannot reach into a test's private temporary folder
        self.folder = Path(tempfile.mkdtemp(prefix="citybrain-pg-"))
        self.port = free_port()
        shutil.chown(self.folder, "postgres")
        self._as_postgres(self.bin / "initdb", "-D", str(self.folder / "data"), "-A", "trust", "-U", "postgres",
                          "--no-sync", "-E", "UTF8")

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _as_postgres(self, *command: str | Path) -> None:
        run = subprocess.run(["runuser", "-u", "postgres", "--", *map(str, command)], check=False,
                             capture_output=True, text=True, timeout=120)
        if run.returncode != 0:
            raise RuntimeError(f"{Path(str(command[0])).name} failed: {run.stderr[-2000:]}")

    def start(self) -> None:
        self._as_postgres(self.bin / "pg_ctl", "-D", str(self.folder / "data"), "-l", str(self.folder / "log"), "-w",
                          "-o", f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1", "start")

    def stop(self) -> None:
        """Fast shutdown: open transactions are rolled back and connections cut, as in a crash of the host."""
        self._as_postgres(self.bin / "pg_ctl", "-D", str(self.folder / "data"), "-m", "fast", "-w", "stop")

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        with contextlib.suppress(RuntimeError):
            self.stop()
        shutil.rmtree(self.folder, ignore_errors=True)


class PrivateNats:
    """A NATS server with JetStream of the test's own (its own port and store folder), to stop and start."""

    def __init__(self) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="citybrain-nats-"))
        self.port = free_port()
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self) -> None:
        binary = shutil.which("nats-server") or "/usr/sbin/nats-server"
        self._process = subprocess.Popen([binary, "-a", "127.0.0.1", "-p", str(self.port), "-js", "-sd",
                                          str(self.folder)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 15
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=1):
                return
            if self._process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("nats-server did not start")
            time.sleep(0.05)

    def stop(self) -> None:
        if self._process is not None:
            self._process.terminate()
            self._process.wait(timeout=30)
            self._process = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()
        shutil.rmtree(self.folder, ignore_errors=True)
