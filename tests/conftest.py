"""Real servers for the tests: Mosquitto, InfluxDB 1.x and VictoriaMetrics (InfluxDB v2 API),
started once per session on free loopback ports."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from gearwatch import localservers as ls


@pytest.fixture(scope="session")
def servers_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("servers")


@pytest.fixture(scope="session")
def mosquitto(servers_dir: Path) -> Iterator[ls.LocalServer]:
    with ls.mosquitto(servers_dir).start() as s:
        yield s


@pytest.fixture(scope="session")
def influxdb(servers_dir: Path) -> Iterator[ls.LocalServer]:
    with ls.influxdb(servers_dir).start() as s:
        yield s


@pytest.fixture(scope="session")
def victoria(servers_dir: Path) -> Iterator[ls.LocalServer]:
    with ls.victoria_metrics(servers_dir).start() as s:
        yield s


@pytest.fixture
def db_name(request: pytest.FixtureRequest) -> str:
    """A fresh InfluxDB database per test."""
    return "t_" + "".join(c if c.isalnum() else "_" for c in request.node.name)[:60]
