"""Telemetry topics `city/{district}/{device_type}/{device_id}/telemetry`, parsed for a whole batch at once.

The topics become one NumPy byte-string array; the shape checks, the segments and the 64-bit hash of each
device id (the key of the device index) come out of `numpy.strings` operations over that array, so no
Python runs per message except building it. Only the distinct (district, type) pairs of a batch, a
handful, are decoded and checked in Python. A batch with a non-ASCII topic is parsed topic by topic
instead (`parse_slowly`), with the same outcome.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from citybrain.sensing.devices.index import ID_BYTES, id_hashes

MALFORMED = -2  # not city/{district}/{device_type}/{device_id}/telemetry, or an unknown district
UNKNOWN_TYPE = -1
PREFIX, SUFFIX = b"city/", b"/telemetry"


@dataclass(slots=True)
class ParsedTopics:
    """Per topic: the device type code (or MALFORMED / UNKNOWN_TYPE) and the device id's hash; `too_long`
    marks ids that no registered device can have (longer than 64 bytes; not ASCII)."""

    type_of: np.ndarray  # int64
    id_hash: np.ndarray  # uint64 (meaningful where type_of >= 0)
    too_long: np.ndarray  # bool


def parse_topics(topics: Sequence[str], type_codes: Mapping[str, int], districts: set[str]) -> ParsedTopics:
    n = len(topics)
    type_of = np.full(n, MALFORMED, np.int64)
    id_hash = np.zeros(n, np.uint64)
    too_long = np.zeros(n, bool)
    if n == 0:
        return ParsedTopics(type_of, id_hash, too_long)
    try:
        raw = np.array(topics, dtype="S")
    except UnicodeEncodeError:
        return parse_slowly(topics, type_codes, districts)
    strings = np.strings
    shaped = (strings.startswith(raw, PREFIX) & strings.endswith(raw, SUFFIX)
              & (strings.count(raw, b"/") == 4))
    rows = np.flatnonzero(shaped)
    if not rows.size:
        return ParsedTopics(type_of, id_hash, too_long)
    raw = raw[rows]
    type_end = strings.find(raw, b"/", strings.find(raw, b"/", len(PREFIX)) + 1)
    id_end = strings.str_len(raw) - len(SUFFIX)
    # (district, type) of each topic: "district/type" hashed, grouped, and each group checked once.
    pairs = strings.slice(raw, len(PREFIX), type_end)
    pair_hash = id_hashes(pairs)
    distinct, first, inverse = np.unique(pair_hash, return_index=True, return_inverse=True)
    codes = np.empty(distinct.size, np.int64)
    for group, row in enumerate(first.tolist()):
        codes[group] = _pair_code(pairs[row].decode(), type_codes, districts)
    type_of[rows] = codes[inverse.reshape(-1)]
    # "district/type" beyond 64 bytes hashes only its start: check those one by one.
    for row in rows[strings.str_len(pairs) > ID_BYTES].tolist():
        type_of[row] = parse_slowly([topics[row]], type_codes, districts).type_of[0]
    ids = strings.slice(raw, type_end + 1, id_end)
    id_hash[rows] = id_hashes(ids)
    too_long[rows] = id_end - type_end - 1 > ID_BYTES
    return ParsedTopics(type_of, id_hash, too_long)


def _pair_code(pair: str, type_codes: Mapping[str, int], districts: set[str]) -> int:
    district, _, device_type = pair.partition("/")
    if district not in districts:
        return MALFORMED
    return type_codes.get(device_type, UNKNOWN_TYPE)


def parse_slowly(topics: Sequence[str], type_codes: Mapping[str, int], districts: set[str]) -> ParsedTopics:
    """The same, topic by topic (for batches with non-ASCII topics)."""
    n = len(topics)
    type_of = np.full(n, MALFORMED, np.int64)
    id_hash = np.zeros(n, np.uint64)
    too_long = np.zeros(n, bool)
    for i, topic in enumerate(topics):
        parts = topic.split("/")
        if len(parts) != 5 or parts[0] != "city" or parts[4] != "telemetry":
            continue
        type_of[i] = _pair_code(f"{parts[1]}/{parts[2]}", type_codes, districts)
        device_id = parts[3]
        if not device_id.isascii() or len(device_id) > ID_BYTES:
            too_long[i] = True  # every registered id is ASCII of at most 64 bytes: this names no device
        else:
            id_hash[i] = id_hashes([device_id])[0]
    return ParsedTopics(type_of, id_hash, too_long)


def device_id_of(topic: str) -> str | None:
    """The device id segment of a telemetry topic, if it has one (for dead letters)."""
    parts = topic.split("/")
    return parts[3] if len(parts) == 5 else None
