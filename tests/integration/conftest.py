"""Fixtures shared by the models/trainer tests (kept out of a top-level conftest on purpose)."""

from tests.integration.servers import influxdb_v1, mosquitto  # noqa: F401
from tests.model_fixtures import *  # noqa: F403
