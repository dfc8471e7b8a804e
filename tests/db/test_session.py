"""SQLite sessions: the background WAL checkpointer."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from citybrain.db.session import WalCheckpointer, WriterQueue, create_db_engine


def test_wal_checkpointer_copies_the_log_back_so_it_restarts(tmp_path: Path) -> None:
    database = str(tmp_path / "wal.db")
    engine = create_db_engine(f"sqlite:///{database}")
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE readings (body TEXT)")
    writers = WriterQueue(database)
    checkpointer = WalCheckpointer(database, writers, threshold_bytes=256 * 1024, catch_up_frames=8)
    checkpointer.start()
    try:
        for _ in range(300):  # ~2 pages a commit: far beyond the threshold, far below SQLite's own backstop
            with writers.turn(), engine.begin() as conn:
                conn.exec_driver_sql("INSERT INTO readings VALUES (?)", ("x" * 5000,))
            checkpointer.committed()
        deadline = time.monotonic() + 20
        while checkpointer.checkpoints == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        checkpointer.stop()
    assert checkpointer.checkpoints >= 1
    with writers.turn(), engine.begin() as conn:  # the first write after a full checkpoint restarts the log
        conn.exec_driver_sql("INSERT INTO readings VALUES ('last')")
    with sqlite3.connect(database) as probe:
        _busy, frames_in_use, _copied = probe.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        assert frames_in_use < 300  # 300 commits of 2+ pages were written in all
        assert probe.execute("SELECT count(*) FROM readings").fetchone()[0] == 301
    writers.close()
    engine.dispose()
