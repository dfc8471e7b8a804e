"""Engines and sessions for SQLite (embedded) and PostgreSQL (scaled out)."""

from __future__ import annotations

import fcntl
import logging
import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.orm import Session, sessionmaker

log = logging.getLogger(__name__)
# Store work a process runs at once (Platform.run admits no more), and so the connections it keeps
# (settings.store_concurrency). An overflow connection is closed when it is returned, and on PostgreSQL each
# new one is a forked backend: with 16 clients and a pool of 10 the churn cost more than the writes it
# served. On two cores 8 beat 16: case transitions on PostgreSQL went ~450 → ~590/s, since sixteen
# transactions at once only made sixteen backends and threads take turns on the same cores.
STORE_CONCURRENCY = 8
WAL_AUTOCHECKPOINT_PAGES = 65_536  # 256 MB of 4 KB pages
# The WAL file is cut back to this when the log restarts after a checkpoint. It must stay below
# SqliteMaintenance's threshold: the file's length is how the maintenance thread tells a full log from one
# that restarted, and a file left longer than the threshold made it checkpoint after every commit.
WAL_SIZE_LIMIT_BYTES = 16 * 1024 * 1024


def _json_dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


def create_db_engine(url: str, *, pool_size: int = STORE_CONCURRENCY, **kwargs: Any) -> sa.Engine:
    """An engine tuned per backend: WAL + NORMAL sync for SQLite, a modest pool for PostgreSQL; `pool_size`
    connections and no overflow (see STORE_CONCURRENCY)."""
    url_obj = sa.make_url(url)
    if url_obj.get_backend_name() == "sqlite":
        if url_obj.database and url_obj.database != ":memory:":
            Path(url_obj.database).parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(
            url,
            json_serializer=_json_dumps,
            json_deserializer=orjson.loads,
            connect_args={"check_same_thread": False, "timeout": 30},
            pool_size=pool_size,
            max_overflow=0,
            **kwargs,
        )

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            cursor = dbapi_conn.cursor()
            # WAL lets readers proceed while a batch is written; NORMAL sync is durable across a process
            # crash (not a power cut), which matches what an embedded deployment promises.
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            # WalCheckpointer copies the WAL back from a background thread; this is only the backstop for
            # processes that do not run one (CLI imports) or a checkpointer that falls behind.
            cursor.execute(f"PRAGMA wal_autocheckpoint={WAL_AUTOCHECKPOINT_PAGES}")
            cursor.execute(f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT_BYTES}")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.execute("PRAGMA cache_size=-262144")
            cursor.execute("PRAGMA temp_store=MEMORY")
            cursor.close()

        return engine
    return sa.create_engine(
        url,
        json_serializer=_json_dumps,
        json_deserializer=orjson.loads,
        pool_size=pool_size,
        max_overflow=0,
        # No pre-ping: it cost a round trip per transaction (~15 % of a case transition). A connection lost
        # to a database restart fails its one request with a 503 (api.problems); SQLAlchemy then drops
        # every pooled connection older than the failure, so the next requests connect afresh.
        pool_pre_ping=False,
        **kwargs,
    )


def make_session_factory(engine: sa.Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


class WriterQueue:
    """Lets one writer at a time into a SQLite file, across threads and processes, without polling.

    SQLite admits one writer; the others wait in its busy handler, which sleeps 1, 2, 5 … 100 ms between
    tries, so under load the lock sat idle between holders while waiters slept. Waiting here instead
    (a thread lock, then flock on a file beside the database) wakes the next writer the moment the
    previous one commits.
    """

    def __init__(self, database: str) -> None:
        self.path = Path(f"{database}.writer")
        self._threads = threading.Lock()
        self._fd: int | None = None

    @contextmanager
    def turn(self) -> Iterator[None]:
        with self._threads:
            if self._fd is None:
                self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            fcntl.flock(self._fd, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(self._fd, fcntl.LOCK_UN)

    def close(self) -> None:
        with self._threads:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None


class SqliteMaintenance:
    """Upkeep of a SQLite store from a background thread: WAL checkpoints and planner statistics.

    * Left to SQLite, the writer whose commit crosses the auto-checkpoint size copies the whole WAL while it
      holds the write lock: at a million entities that was half of what a batch commit cost. Here the thread
      does the copying (the driver releases the GIL while SQLite works, so it runs on the other core), and
      only the last few frames that writers appended meanwhile are copied under the write lock, so that
      the next writer can start the log from its beginning again instead of growing it.
    * Without statistics SQLite's planner guesses ten rows per index key: a district-wide org-unit filter
      (1,568 units) then sorted every entity instead of walking them in id order (22 ms → 1.3 ms at 100,000
      entities). A sampled ANALYZE (a few ms) runs after every `analyze_every` commits.
    """

    def __init__(self, database: str, writers: WriterQueue, *, threshold_bytes: int = 32 * 1024 * 1024,
                 catch_up_frames: int = 512, analyze_every: int = 500) -> None:
        self.database = database
        self.wal_path = Path(f"{database}-wal")
        self.writers = writers
        self.threshold_bytes = threshold_bytes
        self.catch_up_frames = catch_up_frames
        self.analyze_every = analyze_every
        self.checkpoints = 0
        self.analyses = 0
        self.passes = 0  # rounds of upkeep finished (each looks at the log as it is when the round begins)
        self._commits = 0
        self._analyzed_at_commit: int | None = None
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self._stopping.clear()
            self._thread = threading.Thread(target=self._run, name="sqlite-maintenance", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None

    def committed(self) -> None:
        """A writer committed: wake the thread when there is work for it. Waking it after every commit
        cost a thread switch per small transaction (6 % of a case transition's time under load); a stat of
        the log costs a few microseconds."""
        self._commits += 1
        if self._analysis_due(self._commits) or self._wal_bytes() >= self.threshold_bytes:
            self._wake.set()

    def _analysis_due(self, commits: int) -> bool:
        return self._analyzed_at_commit is None or commits - self._analyzed_at_commit >= self.analyze_every

    def _wal_bytes(self) -> int:
        try:
            return self.wal_path.stat().st_size
        except FileNotFoundError:
            return 0

    def _run(self) -> None:
        connection = sqlite3.connect(self.database, timeout=30, check_same_thread=False)
        try:
            while not self._stopping.is_set():
                self._wake.wait(timeout=1.0)
                self._wake.clear()
                if self._stopping.is_set():
                    break
                try:
                    self._checkpoint_if_large(connection)
                    self._analyze_if_due(connection)
                except sqlite3.Error:
                    log.exception("maintenance of %s failed; SQLite's own checkpoint stays as a backstop",
                                  self.database)
                    self._stopping.wait(5.0)
                self.passes += 1
        finally:
            connection.close()

    def _checkpoint_if_large(self, connection: sqlite3.Connection) -> None:
        if self._wal_bytes() < self.threshold_bytes:
            return
        # A restarted log reuses the file from its start, so its length can overstate the frames in use (up
        # to WAL_SIZE_LIMIT_BYTES); the frames the checkpoint reports say how much is really there.
        page_size = connection.execute("PRAGMA page_size").fetchone()[0]
        _busy, log_frames, copied = connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        if log_frames * page_size < self.threshold_bytes:
            return
        # Each pass copies what was there when it began; writers append meanwhile, so a few passes shrink
        # the remainder to what the short pass under the write lock can finish.
        for _ in range(8):
            if log_frames - copied <= self.catch_up_frames or self._stopping.is_set():
                break
            _busy, log_frames, copied = connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        with self.writers.turn():
            connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        self.checkpoints += 1

    def _analyze_if_due(self, connection: sqlite3.Connection) -> None:
        commits = self._commits
        if not self._analysis_due(commits):
            return
        with self.writers.turn():
            connection.execute("PRAGMA analysis_limit=400")  # sample each index: milliseconds, not minutes
            connection.execute("ANALYZE")
            connection.commit()
        self._analyzed_at_commit = commits
        self.analyses += 1
