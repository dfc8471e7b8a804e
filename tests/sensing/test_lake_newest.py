"""What an ingest pipeline resumes from: each device's newest stored timestamp, on both lakes."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest

from citybrain.sensing.batch import ReadingBatch
from citybrain.sensing.lake.base import open_lake

T0 = datetime(2026, 11, 30, 23, 59, 0, tzinfo=UTC).timestamp()


def _batch(nums: list[int], ts: list[float]) -> ReadingBatch:
    n = len(nums)
    return ReadingBatch(
        "air_quality",
        np.array(nums),
        np.array(nums) - 1,
        np.array(ts),
        np.array(ts),
        np.full(n, -1),
        {"pm25": np.full(n, 10.0), "pm10": np.full(n, np.nan)},
    )


@pytest.mark.parametrize("backend", ["parquet", pytest.param("postgresql", marks=pytest.mark.integration)])
def test_newest_per_device_spans_days_and_flushes(backend: str, tmp_path, request) -> None:
    if backend == "parquet":
        lake = open_lake(str(tmp_path / "lake"))
    else:
        url = request.getfixturevalue("postgres_url").replace("postgresql+psycopg://", "postgresql://")
        lake = open_lake(url, schema=f"newest_{abs(hash(str(tmp_path))) % 10**8}")
    with lake:
        assert lake.newest(datetime.fromtimestamp(T0 - 3600, UTC))[0].size == 0
        lake.append(_batch([1, 2, 1], [T0, T0 + 10, T0 + 120.5]))  # the last one is on the next day
        lake.flush()
        lake.append(_batch([2], [T0 + 5]))  # older than device 2's newest
        lake.flush()
        nums, newest = lake.newest(datetime.fromtimestamp(T0 - 3600, UTC))
        found = dict(zip(nums.tolist(), newest.tolist(), strict=True))
        assert found == {1: pytest.approx(T0 + 120.5, abs=1e-6), 2: pytest.approx(T0 + 10, abs=1e-6)}
        nums, _ = lake.newest(datetime.fromtimestamp(T0 + 60, UTC))
        assert nums.tolist() == [1]
