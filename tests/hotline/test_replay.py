"""Real complaint records replayed through the API, in the order they happened, with the clock at each
record's moment: the cases are created, routed and closed, and the supervision figures computed from the
store match figures computed here, independently, from the raw files."""

from __future__ import annotations

import contextlib
import csv
import statistics
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
import uvicorn
from fastapi.testclient import TestClient

from citybrain.api.app import create_app
from citybrain.core.clock import FrozenClock
from citybrain.disposal import supervision
from citybrain.hotline import replay
from citybrain.hub.org.flows import import_district
from citybrain.platform import Platform
from citybrain.scenarios import scenario_catalogue
from citybrain.settings import Settings
from tests.hotline.conftest import SHARED
from tests.sensing.processes import free_port

LA311 = SHARED / "data" / "complaints" / "la311_2020_requests_10k.csv"
TIPDM = SHARED / "data" / "complaints" / "tipdm2020c_messages_labelled.csv"
KEY = "replay-key"


@pytest.fixture
def settings(db_url: str, tmp_path) -> Settings:
    return Settings(db=db_url, home=tmp_path, bus="memory", open311_api_keys=KEY)


@contextlib.contextmanager
def served(platform: Platform) -> Iterator[replay.HttpClient]:
    """The platform's app on a real server in a thread of this process (so the test's frozen clock is the
    server's), and a keep-alive client of it: a fraction of what the in-process test client costs."""
    config = uvicorn.Config(create_app(platform), host="127.0.0.1", port=free_port(), log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.02)
    try:
        with replay.HttpClient(f"http://127.0.0.1:{config.port}") as client:
            yield client
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def test_the_whole_la311_file_replayed_over_open311_matches_the_raw_figures(tmp_path) -> None:
    """All 10,000 MyLA311 requests, on the embedded store (the API tests run both stores)."""
    if not LA311.exists():
        pytest.skip(f"{LA311} is absent (the shared data folder sits next to the project)")
    with LA311.open(encoding="utf-8-sig", newline="") as handle:
        rows = list(csv.DictReader(handle))
    platform = Platform(Settings(home=tmp_path, bus="memory", open311_api_keys=KEY),
                        clock=FrozenClock(datetime(2026, 11, 25, tzinfo=UTC)))
    platform.migrate()
    platform.load_state()
    import_district(platform, "xihu")
    try:
        _replay_la311(platform, rows)
    finally:
        platform.dispose()


def _replay_la311(platform: Platform, rows: list[dict[str, str]]) -> None:
    catalogue = scenario_catalogue()
    codes = {t: s.refs.open311_code for s in catalogue for t in s.refs.la311}
    event_types = {t: s.code for s in catalogue for t in s.refs.la311}
    evidence = {s.refs.open311_code: list(s.evidence) for s in catalogue}
    steps = replay.la311_steps(LA311, service_codes=codes, evidence=evidence)
    with served(platform) as client:
        report = replay.replay(client, steps, kind="la311", api_key=KEY, set_clock=platform.clock.set)
    assert report.failed == [] and report.opened == len(rows)

    # Independently, from the raw rows: per request type, how many, how many ended (closed, or cancelled
    # and referred out: dismissed), and the mean hours from creation to closure of the closed ones.
    def moment(text: str) -> datetime:  # in UTC: subtracting two Los Angeles times would ignore DST
        return datetime.strptime(text, "%m/%d/%y %H:%M").replace(tzinfo=replay.LOS_ANGELES).astimezone(UTC)

    expected: dict[str, dict[str, float]] = defaultdict(lambda: {"cases": 0, "closed": 0, "dismissed": 0})
    hours: dict[str, list[float]] = defaultdict(list)
    for row in rows:
        entry = expected[event_types[row["requesttype"]]]
        entry["cases"] += 1
        if row["closeddate"] and row["status"] not in ("Open", "Pending"):
            entry["closed"] += 1
            if row["status"] == "Closed":
                hours[event_types[row["requesttype"]]].append(
                    (moment(row["closeddate"]) - moment(row["createddate"])).total_seconds() / 3600)
            else:
                entry["dismissed"] += 1
    with platform.session() as session:
        found = {r["key"]: r for r in supervision.rates(
            session, start=datetime(2019, 12, 1, tzinfo=UTC), end=datetime(2021, 1, 1, tzinfo=UTC),
            group_by="event_type")}
    assert set(found) == set(expected)
    for code, figures in expected.items():
        got = found[code]
        assert (got["cases"], got["closed"], got["dismissed"], got["reports"]) == (
            figures["cases"], figures["closed"], figures["dismissed"], figures["cases"]), code
        if hours[code]:
            assert got["meanHoursToClose"] == pytest.approx(statistics.fmean(hours[code]), abs=0.01), code
    # every request came over Open311
    with platform.session() as session:
        channels = supervision.rates(session, start=datetime(2019, 12, 1, tzinfo=UTC),
                                     end=datetime(2021, 1, 1, tzinfo=UTC), group_by="channel")
    assert [(r["key"], r["cases"]) for r in channels] == [("open311", len(rows))]


def test_tipdm_messages_replayed_through_the_hotline_are_all_accounted_for(client: TestClient,
                                                                          platform: Platform) -> None:
    if not TIPDM.exists():
        pytest.skip(f"{TIPDM} is absent (the shared data folder sits next to the project)")
    steps = replay.tipdm_steps(TIPDM)
    report = replay.replay(client, steps, kind="tipdm", set_clock=platform.clock.set)
    assert report.failed == []
    with TIPDM.open(encoding="utf-8-sig", newline="") as handle:
        raw = list(csv.DictReader(handle))
    per_year = Counter(row["留言时间"][:4] for row in raw)
    with platform.session() as session:
        for year, count in per_year.items():
            start = datetime(int(year), 1, 1, tzinfo=replay.CHINA)
            everything = supervision.rates(session, start=start, end=start.replace(year=start.year + 1),
                                           group_by="all")
            assert everything[0]["reports"] == count, year  # every message is a report of some case
        overall = supervision.rates(session, start=datetime(2010, 1, 1, tzinfo=UTC),
                                    end=datetime(2021, 1, 1, tzinfo=UTC), group_by="category")
    assert sum(r["reports"] for r in overall) == len(raw)
    assert sum(r["closed"] for r in overall) == sum(r["cases"] for r in overall)  # all taken to closure
    # The seed classifier knows only the catalogue's own examples; most messages still land in the
    # category their TipDM label belongs to.
    assert len(overall) >= 6
