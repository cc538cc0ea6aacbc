"""Model fixtures for the integration tests (the servers come from tests/conftest.py)."""

from tests.model_fixtures import *  # noqa: F403
