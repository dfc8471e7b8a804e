"""Fixtures shared by the hub tests."""

from tests.hub.receiver import receiver  # noqa: F401  (a fixture, found by name)
