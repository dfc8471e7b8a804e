"""The columnar unit of the telemetry hot path: readings of one device type."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(slots=True)
class ReadingBatch:
    """Accepted readings of one device type, one row per reading, in arrival order.

    - `device_num`: the registry's integer device id (int64), global across types.
    - `local`: the device's position within its type (int64): the index into per-type state arrays.
    - `ts`: the device's own timestamp, float64 epoch seconds (UTC); `received`: arrival time, same unit.
    - `seq`: the device's message sequence number (int64; -1 when the device sent none).
    - `values`: numeric measurement → float64 column (booleans 0/1; NaN where the reading lacks it).
    - `texts`: string measurement → list of str | None.
    Rows are validated against the device type before a batch is built: a value outside the type's
    physical range never reaches a batch (it goes to the dead-letter store).
    """

    device_type: str
    device_num: np.ndarray
    local: np.ndarray
    ts: np.ndarray
    received: np.ndarray
    seq: np.ndarray
    values: dict[str, np.ndarray] = field(default_factory=dict)
    texts: dict[str, list[str | None]] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.device_num.shape[0])

    def take(self, rows: np.ndarray) -> ReadingBatch:
        """The rows at these positions (an index array or a boolean mask), as a new batch."""
        if rows.dtype == bool:
            rows = np.flatnonzero(rows)
        return ReadingBatch(
            self.device_type,
            self.device_num[rows],
            self.local[rows],
            self.ts[rows],
            self.received[rows],
            self.seq[rows],
            {name: column[rows] for name, column in self.values.items()},
            {name: [column[i] for i in rows.tolist()] for name, column in self.texts.items()},
        )

    @classmethod
    def concat(cls, batches: list[ReadingBatch]) -> ReadingBatch:
        """Batches of one device type as one, rows in the order given. A measurement missing from some
        batches is NaN (numeric) or None (text) in their rows."""
        if len(batches) == 1:
            return batches[0]
        first = batches[0]
        if any(b.device_type != first.device_type for b in batches):
            raise ValueError("ReadingBatch.concat needs batches of one device type")
        numeric = list(dict.fromkeys(name for b in batches for name in b.values))
        textual = list(dict.fromkeys(name for b in batches for name in b.texts))

        def column(batch: ReadingBatch, name: str) -> np.ndarray:
            found = batch.values.get(name)
            return found if found is not None else np.full(len(batch), np.nan)

        return cls(
            first.device_type,
            np.concatenate([b.device_num for b in batches]),
            np.concatenate([b.local for b in batches]),
            np.concatenate([b.ts for b in batches]),
            np.concatenate([b.received for b in batches]),
            np.concatenate([b.seq for b in batches]),
            {name: np.concatenate([column(b, name) for b in batches]) for name in numeric},
            {name: [v for b in batches for v in _texts(b, name)] for name in textual},
        )

    @classmethod
    def empty(cls, device_type: str, numeric: list[str], textual: tuple[str, ...] = ()) -> ReadingBatch:
        ints, floats = np.empty(0, np.int64), np.empty(0, np.float64)
        return cls(
            device_type,
            ints,
            ints.copy(),
            floats,
            floats.copy(),
            ints.copy(),
            {name: floats.copy() for name in numeric},
            {name: [] for name in textual},
        )


def _texts(batch: ReadingBatch, name: str) -> list[str | None]:
    column = batch.texts.get(name)
    if column is None:
        return [None] * len(batch)
    return column if isinstance(column, list) else list(column.to_pylist())  # an Arrow array
