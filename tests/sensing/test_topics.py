"""The batch topic parser agrees with parsing topic by topic, on well-formed and on malformed topics."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from citybrain.sensing.devices.index import id_hashes
from citybrain.sensing.ingest.topics import MALFORMED, UNKNOWN_TYPE, parse_slowly, parse_topics

TYPES = {"air_quality": 0, "smoke_detector": 1}
DISTRICTS = {"310115", "330106"}


def _check(topics: list[str]) -> None:
    fast, slow = parse_topics(topics, TYPES, DISTRICTS), parse_slowly(topics, TYPES, DISTRICTS)
    assert fast.type_of.tolist() == slow.type_of.tolist()
    usable = (fast.type_of >= 0) & ~fast.too_long
    assert fast.too_long[fast.type_of >= 0].tolist() == slow.too_long[slow.type_of >= 0].tolist()
    assert fast.id_hash[usable].tolist() == slow.id_hash[usable].tolist()


def test_well_formed_topics_give_their_type_and_the_hash_of_their_id() -> None:
    topics = ["city/310115/air_quality/AQ-1/telemetry", "city/330106/smoke_detector/SM-22/telemetry"]
    parsed = parse_topics(topics, TYPES, DISTRICTS)
    assert parsed.type_of.tolist() == [0, 1]
    assert parsed.id_hash.tolist() == id_hashes(["AQ-1", "SM-22"]).tolist()
    assert not parsed.too_long.any()


def test_malformed_topics_are_told_apart() -> None:
    topics = [
        "city/999999/air_quality/AQ-1/telemetry",  # unknown district
        "city/310115/bicycle/B-1/telemetry",  # unknown type
        "city/310115/air_quality/AQ-1/status",  # wrong suffix
        "town/310115/air_quality/AQ-1/telemetry",  # wrong prefix
        "city/310115/air_quality/AQ/1/telemetry",  # a slash in the id
        "city/310115/air_quality/telemetry",  # no id
        "city/310115/air_quality//telemetry",  # an empty id: a known type, no such device
        "city/310115/air_quality/" + "X" * 65 + "/telemetry",  # longer than any registered id
        "",
    ]
    parsed = parse_topics(topics, TYPES, DISTRICTS)
    assert parsed.type_of.tolist() == [MALFORMED, UNKNOWN_TYPE, MALFORMED, MALFORMED, MALFORMED, MALFORMED,
                                       0, 0, MALFORMED]
    assert parsed.too_long.tolist()[7] and not parsed.too_long.tolist()[6]
    _check(topics)


def test_a_batch_with_a_non_ascii_topic_is_parsed_topic_by_topic() -> None:
    topics = ["city/310115/air_quality/AQ-1/telemetry", "city/310115/air_quality/空气-1/telemetry"]
    parsed = parse_topics(topics, TYPES, DISTRICTS)
    assert parsed.type_of.tolist() == [0, 0] and parsed.too_long.tolist() == [False, True]


segment = st.sampled_from(["city", "310115", "330106", "air_quality", "smoke_detector", "telemetry", "",
                           "AQ-1", "x" * 70, "a/b", "99"])


@settings(max_examples=300, deadline=None)
@given(st.lists(st.lists(segment, min_size=1, max_size=6).map("/".join), min_size=1, max_size=30))
def test_the_batch_parser_agrees_with_the_slow_one(topics: list[str]) -> None:
    _check(topics)


def test_a_large_batch_agrees_too() -> None:
    rng = np.random.default_rng(3)
    topics = [f"city/{rng.choice(['310115', '330106', '1'])}/{rng.choice(['air_quality', 'bike'])}/"
              f"D-{int(rng.integers(0, 10**9))}/telemetry" for _ in range(5000)]
    _check(topics)
