"""SQLite sessions: background maintenance (WAL checkpoints, planner statistics)."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from citybrain.db.session import SqliteMaintenance, WriterQueue, create_db_engine


def test_maintenance_copies_the_log_back_so_it_restarts(tmp_path: Path) -> None:
    database = str(tmp_path / "wal.db")
    engine = create_db_engine(f"sqlite:///{database}")
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE readings (body TEXT)")
    writers = WriterQueue(database)
    checkpointer = SqliteMaintenance(database, writers, threshold_bytes=256 * 1024, catch_up_frames=8)
    checkpointer.start()
    try:
        for _ in range(300):  # ~2 pages a commit: far beyond the threshold, far below SQLite's own backstop
            with writers.turn(), engine.begin() as conn:
                conn.exec_driver_sql("INSERT INTO readings VALUES (?)", ("x" * 5000,))
            checkpointer.committed()
        deadline = time.monotonic() + 20
        while checkpointer.checkpoints == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        # a checkpoint may have come while the writes went on (a loaded machine schedules the thread late):
        # wait for a round that began after the last commit, which copies what those commits appended
        rounds = checkpointer.passes
        checkpointer.committed()
        while checkpointer.passes <= rounds + 1 and time.monotonic() < deadline:
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


def test_maintenance_gathers_planner_statistics(tmp_path: Path) -> None:
    database = str(tmp_path / "stats.db")
    engine = create_db_engine(f"sqlite:///{database}")
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE things (id TEXT PRIMARY KEY, unit TEXT)")
        conn.exec_driver_sql("CREATE INDEX ix_things_unit ON things (unit)")
        conn.exec_driver_sql("WITH RECURSIVE n(v) AS (SELECT 1 UNION ALL SELECT v + 1 FROM n WHERE v < 3000) "
                             "INSERT INTO things SELECT 'x' || v, 'u' || (v % 3) FROM n")
    writers = WriterQueue(database)
    maintenance = SqliteMaintenance(database, writers, analyze_every=2)
    maintenance.start()
    try:
        deadline = time.monotonic() + 20
        while maintenance.analyses == 0 and time.monotonic() < deadline:  # the first round analyses at once
            maintenance.committed()
            time.sleep(0.05)
    finally:
        maintenance.stop()
    with sqlite3.connect(database) as probe:
        stats = dict(probe.execute("SELECT idx, stat FROM sqlite_stat1 WHERE tbl = 'things'").fetchall())
    # 1,000 rows per unit in truth; the sampled estimate is rough, but far from the planner's default of 10
    assert int(stats["ix_things_unit"].split()[1]) > 100
    writers.close()
    engine.dispose()
