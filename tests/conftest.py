"""Where the labelled TEP data lies: $GEARWATCH_TEP_DIR, else ../shared/data/tep from the repo."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def tep_dir() -> Path:
    d = Path(os.environ.get("GEARWATCH_TEP_DIR", REPO.parent / "shared" / "data" / "tep"))
    if not (d / "tep_train.csv").is_file():
        pytest.fail(f"TEP data not found in {d}; set GEARWATCH_TEP_DIR (see tests/conftest.py)")
    return d
