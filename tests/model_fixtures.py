"""Shared fixtures for the models/trainer tests: where the TEP data lies ($GEARWATCH_TEP_DIR,
else ../shared/data/tep from the repo) and small real models, bundles and keys."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from models.bundle import build_bundle, generate_key
from models.calibration import TailCalibrator
from models.lstm_ae import AEConfig, LSTMAutoencoder, Normalizer
from models.schema import AssetSchema, OffCondition, SensorSpec

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def tep_dir() -> Path:
    d = Path(os.environ.get("GEARWATCH_TEP_DIR", REPO.parent / "shared" / "data" / "tep"))
    if not (d / "tep_train.csv").is_file():
        pytest.fail(f"TEP data not found in {d}; set GEARWATCH_TEP_DIR (see tests/conftest.py)")
    return d


@pytest.fixture
def schema() -> AssetSchema:
    return AssetSchema(
        asset_class="tiny_pump",
        sample_period_s=1.0,
        window=8,
        off_condition=OffCondition("speed", 100.0),
        sensors=(SensorSpec("speed", "rpm", 0, 4000), SensorSpec("temp", "degC", -40, 200),
                 SensorSpec("vib", "mm/s", 0, 100)),
    )


@pytest.fixture
def model(schema: AssetSchema) -> LSTMAutoencoder:
    torch.manual_seed(0)
    cfg = AEConfig(n_sensors=schema.n_sensors, window=schema.window, hidden=(6,), latent=3,
                   score_steps=2)
    return LSTMAutoencoder(cfg).eval()


@pytest.fixture
def normalizer() -> Normalizer:
    rng = np.random.default_rng(0)
    rows = rng.normal([1500, 60, 3], [50, 2, 0.5], size=(500, 3))
    return Normalizer.fit(rows)


@pytest.fixture
def calibrator() -> TailCalibrator:
    return TailCalibrator().fit(np.random.default_rng(1).gamma(2.0, 0.5, 2000))


@pytest.fixture
def signing_key():
    return generate_key()


@pytest.fixture
def blob(schema, model, normalizer, calibrator, signing_key) -> bytes:
    return build_bundle(schema, model.cfg, normalizer, model.state_dict(), calibrator,
                        signing_key, river_state=b"not-a-real-pickle",
                        info={"metrics": {"f1": 0.5}}, created=1_700_000_000.0)


def raw_windows(n: int, window: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.normal([1500, 60, 3], [50, 2, 0.5], size=(n, window, 3)).astype(np.float32)
