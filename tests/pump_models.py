"""Small real pump models for the agent's model tests: trained by the trainer on simulated
normal history in a few seconds, signed like `gearwatch train fit` signs them."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd

from models.bundle import build_bundle
from models.catalog import CENTRIFUGAL_PUMP
from simulators.pump import SENSORS, PumpFleet
from trainer.fit import FitOptions, fit

T0 = 1_767_225_600_000_000_000


def pump_history(n_rows: int = 1500, seed: int = 0) -> pd.DataFrame:
    fleet = PumpFleet(["pump-x"], seed=seed, stop_probability=0.0)
    rows = np.stack([fleet.step()[0] for _ in range(n_rows)])
    frame = pd.DataFrame(rows, columns=list(SENSORS))
    frame.insert(0, "ts", pd.to_datetime(T0 + np.arange(n_rows) * 1_000_000_000, utc=True))
    frame.insert(0, "asset", "pump-x")
    frame["label"] = np.zeros(n_rows, np.int8)
    return frame


def pump_bundle(key: object, seed: int = 0, window: int = 10, epochs: int = 10,
                created: float = 1_800_000_000.0) -> bytes:
    """A signed centrifugal_pump bundle; `seed`/`created` make distinct versions."""
    schema = replace(CENTRIFUGAL_PUMP, window=window)
    res = fit(pump_history(4000, seed=seed), schema,
              FitOptions(hidden=(8,), latent=4, score_steps=2, epochs=epochs, patience=epochs,
                         progress=False, seed=seed, device="cpu"))
    return build_bundle(schema, res.model.cfg, res.normalizer, res.model.state_dict(),
                        res.calibrator, key, info={"metrics": {"seed": seed}},  # type: ignore[arg-type]
                        created=created)
