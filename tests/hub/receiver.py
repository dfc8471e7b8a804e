"""A real HTTP receiver standing in for a department system or webhook consumer, and a bounded wait."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

# ------------------------------------------------------------------------------------ a real receiver


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: Any


class Receiver:
    """A real HTTP server on 127.0.0.1 (own thread) that records every request and answers as told:
    `fail_next` requests get `fail_status`, the others `reply_status` with `reply_body`; GET /health
    answers `health_status` with `health_body`."""

    def __init__(self) -> None:
        self.requests: list[Received] = []
        self.fail_next = 0
        self.fail_status = 500
        self.reply_status = 200
        self.reply_body: Any = {}
        self.health_status = 200
        self.health_body: Any = {"status": "ok"}
        self._changed = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_args: Any) -> None:
                pass

            def _answer(self, status: int, body: Any) -> None:
                raw = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def do_GET(self) -> None:
                receiver._record(self, None)
                self._answer(receiver.health_status, receiver.health_body)

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with receiver._changed:
                    failing = receiver.fail_next > 0
                    if failing:
                        receiver.fail_next -= 1
                receiver._record(self, json.loads(raw) if raw else None)
                if failing:
                    self._answer(receiver.fail_status, {"error": "told to fail"})
                else:
                    self._answer(receiver.reply_status, receiver.reply_body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def _record(self, handler: BaseHTTPRequestHandler, body: Any) -> None:
        with self._changed:
            self.requests.append(Received(handler.command, handler.path, dict(handler.headers), body))
            self._changed.notify_all()

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}{path}"

    def posts(self, path: str | None = None) -> list[Received]:
        with self._changed:
            return [r for r in self.requests if r.method == "POST" and (path is None or r.path == path)]

    def wait_for_posts(self, count: int, path: str | None = None, timeout: float = 10.0) -> list[Received]:
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                posts = [r for r in self.requests if r.method == "POST" and (path is None or r.path == path)]
                if len(posts) >= count:
                    return posts
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"expected {count} POSTs to {path or 'any path'}, got {len(posts)}")
                self._changed.wait(remaining)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.close()


def wait_until(check: Callable[[], Any], timeout: float = 10.0, what: str = "condition",
               every: float = 0.02) -> Any:
    """Poll `check` every `every` seconds until it returns something truthy (bounded)."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(every)
