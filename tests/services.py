"""Reaching the real services on this machine (PostgreSQL, NATS, Mosquitto).

Where a service is down, a test that needs it is skipped on a developer machine, but fails when
CITYBRAIN_REQUIRE_SERVICES=1 (set by .ci/run): in CI the services exist, so a skip would hide a fault.
"""

from __future__ import annotations

import os
import socket

import pytest

POSTGRES_HOST = os.environ.get("CITYBRAIN_TEST_PG_HOST", "127.0.0.1")
POSTGRES_PORT = int(os.environ.get("CITYBRAIN_TEST_PG_PORT", "5432"))
POSTGRES_USER = os.environ.get("CITYBRAIN_TEST_PG_USER", "postgres")
NATS_URL = os.environ.get("CITYBRAIN_TEST_NATS_URL", "nats://127.0.0.1:4222")
MQTT_HOST, MQTT_PORT = "127.0.0.1", 1883


def reachable(host: str, port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def require_service(name: str, host: str, port: int) -> None:
    if reachable(host, port):
        return
    message = f"{name} is not reachable at {host}:{port}"
    if os.environ.get("CITYBRAIN_REQUIRE_SERVICES") == "1":
        pytest.fail(f"{message} (CITYBRAIN_REQUIRE_SERVICES=1: services must exist here)")
    pytest.skip(message)


def postgres_admin_url(database: str = "postgres") -> str:
    return f"postgresql+psycopg://{POSTGRES_USER}@{POSTGRES_HOST}:{POSTGRES_PORT}/{database}"


def require_postgres() -> None:
    require_service("PostgreSQL", POSTGRES_HOST, POSTGRES_PORT)


def require_nats() -> None:
    host, port = NATS_URL.removeprefix("nats://").split(":")
    require_service("NATS", host, int(port))


def require_mqtt() -> None:
    require_service("Mosquitto", MQTT_HOST, MQTT_PORT)
