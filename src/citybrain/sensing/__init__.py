"""Sensing (全域感知): device registry, telemetry ingest (MQTT, HTTP), telemetry lake, streaming rules,
alerts and the city's vital signs.

The hot path is columnar: readings travel as `batch.ReadingBatch` (NumPy columns per device type), and
per-device state lives in arrays indexed by the device's position within its type, never in a Python
object per device. docs/sensing.md describes the data flow and the contracts between the parts.
"""
