"""Fixtures shared by the models/trainer tests (kept out of a top-level conftest on purpose)."""

from tests.model_fixtures import *  # noqa: F403
