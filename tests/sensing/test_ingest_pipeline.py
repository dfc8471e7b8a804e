"""The ingest pipeline and the device index: topic → device → typed decode → checks → ReadingBatch."""

from __future__ import annotations

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from citybrain.scenarios import scenario_device_types
from citybrain.sensing.devices.index import DeviceIndex, id_hashes
from citybrain.sensing.ingest.pipeline import IngestPipeline

TYPES = {spec.slug: spec for spec in scenario_device_types()}
T0 = 1_764_590_400.0


def _pipeline(count: int = 100) -> tuple[IngestPipeline, list[str]]:
    index = DeviceIndex(list(TYPES), ["310115", "310115001001"])
    ids = [f"AQ-{i:07d}" for i in range(count)]
    index.add(
        np.arange(1, count + 1), ids, ["air_quality"] * count, np.arange(count), ["310115001001"] * count
    )
    water = ["WL-0000001", "WL-0000002"]
    index.add(np.array([count + 1, count + 2]), water, ["water_level"] * 2, np.arange(2), [None, None])
    return IngestPipeline(index=index, types=TYPES, districts={"310115"}), ids


def _msg(device_id: str, payload: dict, device_type: str = "air_quality", district: str = "310115") -> tuple:
    return (f"city/{district}/{device_type}/{device_id}/telemetry", orjson.dumps(payload), T0 + 1)


def test_good_readings_become_one_columnar_batch_per_type() -> None:
    pipeline, ids = _pipeline()
    report = pipeline.process(
        [
            _msg(ids[0], {"ts": T0, "seq": 1, "pm25": 35.5, "pm10": 50}),
            _msg(ids[1], {"ts": "2025-12-01T12:00:00Z", "pm25": 12}),
            _msg("WL-0000001", {"ts": T0, "height": 2.5}, "water_level"),
        ]
    )
    assert report.dead == []
    by_type = {b.device_type: b for b in report.accepted}
    air = by_type["air_quality"]
    assert air.device_num.tolist() == [1, 2] and air.local.tolist() == [0, 1]
    assert air.values["pm25"].tolist() == [35.5, 12.0]
    assert air.values["pm10"][0] == 50.0 and np.isnan(air.values["pm10"][1])  # absent → NaN
    assert air.ts[1] == 1_764_590_400.0  # RFC 3339 text read as epoch seconds
    assert air.seq.tolist() == [1, -1]
    assert by_type["water_level"].local.tolist() == [0]


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        (("bad/topic", b"{}", 0.0), "topic is not"),
        (("city/999999/air_quality/AQ-0000001/telemetry", b'{"ts": 1}', 0.0), "unknown district"),
        (("city/310115/no_such_type/AQ-0000001/telemetry", b'{"ts": 1}', 0.0), "unknown device type"),
        (("city/310115/air_quality/NOPE/telemetry", b'{"ts": 1}', 0.0), "unknown device"),
        (("city/310115/water_level/AQ-0000001/telemetry", b'{"ts": 1}', 0.0), "unauthorised"),
        (
            ("city/310115/air_quality/AQ-0000001/telemetry", b'{"ts": 1, "pm25": -1}', 0.0),
            "below the minimum",
        ),
        (
            ("city/310115/air_quality/AQ-0000001/telemetry", b'{"ts": 1, "pm25": 99999}', 0.0),
            "above the maximum",
        ),
        (("city/310115/air_quality/AQ-0000001/telemetry", b'{"ts": 1, "smell": 3}', 0.0), "unknown field"),
        (
            ("city/310115/air_quality/AQ-0000001/telemetry", b'{"ts": 1, "pm25": "high"}', 0.0),
            "invalid payload",
        ),
        (("city/310115/air_quality/AQ-0000001/telemetry", b'{"pm25": 3}', 0.0), "invalid payload"),
        (("city/310115/air_quality/AQ-0000001/telemetry", b'{"ts": "yesterday"}', 0.0), "ts:"),
        (("city/310115/air_quality/AQ-0000001/telemetry", b'{"ts": "2025-12-01T12:00:00"}', 0.0), "ts:"),
        (("city/310115/air_quality/AQ-0000001/telemetry", b"not json", 0.0), "not JSON"),
        (("city/310115/air_quality/" + "A" * 80 + "/telemetry", b'{"ts": 1}', 0.0), "unknown device"),
        (("city/310115/air_quality/设备/telemetry", b'{"ts": 1}', 0.0), "unknown device"),
    ],
)
def test_bad_messages_become_dead_letters_and_never_stop_the_good_ones(message: tuple, reason: str) -> None:
    pipeline, ids = _pipeline()
    good = _msg(ids[5], {"ts": T0, "pm25": 20})
    report = pipeline.process([message, good])
    assert [d.position for d in report.dead] == [0]
    assert reason in report.dead[0].reason
    assert report.accepted_count == 1 and report.accepted[0].device_num.tolist() == [6]


def test_integer_measurements_must_be_integral() -> None:
    index = DeviceIndex(list(TYPES), [])
    index.add(np.array([1]), ["TD-1"], ["traffic_detector"], np.array([0]), [None])
    pipeline = IngestPipeline(index=index, types=TYPES, districts={"310115"})
    report = pipeline.process(
        [
            _msg("TD-1", {"ts": T0, "intensity": 12.5}, "traffic_detector"),
            _msg("TD-1", {"ts": T0 + 1, "intensity": 12}, "traffic_detector"),
        ]
    )
    assert [d.reason for d in report.dead] == ["intensity: 12.5 is not an integer"]
    assert report.accepted_count == 1


def test_duplicates_are_dropped_and_out_of_order_readings_skip_the_rules() -> None:
    pipeline, ids = _pipeline()
    first = pipeline.process([_msg(ids[0], {"ts": T0 + 10, "seq": 5, "pm25": 1})])
    assert first.accepted_count == 1 and len(first.in_order) == 1
    again = pipeline.process(
        [
            _msg(ids[0], {"ts": T0 + 10, "seq": 5, "pm25": 1}),
            _msg(ids[0], {"ts": T0 + 10, "seq": 5, "pm25": 1}),
        ]
    )
    assert again.duplicates == 2 and again.accepted_count == 0
    late = pipeline.process(
        [_msg(ids[0], {"ts": T0 + 5, "pm25": 2}), _msg(ids[0], {"ts": T0 + 20, "pm25": 3})]
    )
    assert late.out_of_order == 1
    assert late.accepted_count == 2  # both go to the lake …
    assert late.in_order[0].values["pm25"].tolist() == [3.0]  # … only the newer one to the rules
    assert pipeline.last_ts[1] == T0 + 20
    # a QoS 1 message sent again after a reconnection: older than the device's newest, but taken before
    resent = pipeline.process([_msg(ids[0], {"ts": T0 + 5, "pm25": 2}), _msg(ids[0], {"ts": T0 + 10, "seq": 5,
                                                                                     "pm25": 1})])
    assert resent.duplicates == 2 and resent.accepted_count == 0 and resent.out_of_order == 0
    other_late = pipeline.process([_msg(ids[0], {"ts": T0 + 6, "pm25": 2})])  # late, never seen: kept
    assert other_late.out_of_order == 1 and other_late.accepted_count == 1
    # after a restart this process has seen nothing: the lake says what a previous one stored
    fresh, _ = _pipeline()
    fresh.process([_msg(ids[0], {"ts": T0 + 20, "pm25": 3})])
    asked = []
    fresh.stored = lambda nums, ts: (asked.append(ts.tolist()), ts == T0 + 5)[1]
    resumed = fresh.process([_msg(ids[0], {"ts": T0 + 5, "pm25": 2}), _msg(ids[0], {"ts": T0 + 7, "pm25": 2})])
    assert resumed.duplicates == 1 and resumed.out_of_order == 1 and asked == [[T0 + 5, T0 + 7]]


def test_a_batch_is_ordered_per_device_before_the_rules_see_it() -> None:
    pipeline, ids = _pipeline()
    report = pipeline.process(
        [
            _msg(ids[0], {"ts": T0 + 3, "pm25": 3}),
            _msg(ids[1], {"ts": T0, "pm25": 9}),
            _msg(ids[0], {"ts": T0 + 1, "pm25": 1}),
        ]
    )
    batch = report.in_order[0]
    assert batch.device_num.tolist() == [1, 1, 2]
    assert batch.values["pm25"].tolist() == [1.0, 3.0, 9.0]


def test_disabled_devices_are_refused() -> None:
    pipeline, ids = _pipeline()
    pipeline.index.enabled[3] = False
    report = pipeline.process([_msg(ids[2], {"ts": T0, "pm25": 3})])
    assert report.dead[0].reason == "unauthorised: the device is disabled"


def test_index_finds_every_registered_id_and_nothing_else() -> None:
    index = DeviceIndex(["air_quality"], [])
    ids = [f"dev-{i}" for i in range(50_000)]
    index.add(np.arange(1, 50_001), ids, ["air_quality"] * 50_000, np.arange(50_000), [None] * 50_000)
    assert index.lookup(ids).tolist() == list(range(1, 50_001))
    assert index.lookup(["dev-50000", "dev-x", ""]).tolist() == [0, 0, 0]
    assert index.colliding(["dev-3", "new-1", "new-1"]).tolist() == [True, True, True]
    assert index.colliding(["new-2"]).tolist() == [False]
    assert index.nbytes / 50_000 < 40  # bytes per device: arrays, not a dict of strings


@given(st.lists(st.from_regex(r"[A-Za-z0-9_.-]{1,64}", fullmatch=True), min_size=1, max_size=50, unique=True))
@settings(max_examples=50, deadline=None)
def test_id_hashes_are_deterministic_and_distinguish_ids(ids: list[str]) -> None:
    first, second = id_hashes(ids), id_hashes(list(ids))
    assert (first == second).all()
    assert len(set(first.tolist())) == len(ids)
