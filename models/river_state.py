"""River online detector: the default factory and its warm-start state for a bundle.

River objects can only be saved by pickling, and unpickling runs code, so `loads_detector`
must only ever see bytes from a bundle whose signature and hashes were verified
(`models.bundle.load_bundle` does that before it hands out `Bundle.river_state`).
"""

from __future__ import annotations

import pickle
from collections.abc import Sequence
from typing import Any

import numpy as np

STATE_FORMAT = "river_pickle_v1"


def make_detector(seed: int = 42, n_trees: int = 25, height: int = 10, window_size: int = 250
                  ) -> Any:
    """Min-max scaling into half-space trees: cheap, online, no labels (river's usual pairing)."""
    from river import anomaly, compose, preprocessing

    return compose.Pipeline(
        preprocessing.MinMaxScaler(),
        anomaly.HalfSpaceTrees(n_trees=n_trees, height=height, window_size=window_size, seed=seed),
    )


def row_dicts(rows: np.ndarray, sensors: Sequence[str]) -> list[dict[str, float]]:
    """Rows -> river feature dicts, leaving NaN sensors out (river's way to say 'missing')."""
    out = []
    for row in np.asarray(rows, np.float64):
        out.append({s: float(v) for s, v in zip(sensors, row, strict=True) if np.isfinite(v)})
    return out


def warm_start(detector: Any, rows: np.ndarray, sensors: Sequence[str], max_rows: int = 5000
               ) -> Any:
    """Learn the newest `max_rows` normal rows (river is per-row Python; keep this bounded)."""
    for x in row_dicts(np.asarray(rows)[-max_rows:], sensors):
        detector.learn_one(x)
    return detector


def dumps_detector(detector: Any) -> bytes:
    return pickle.dumps(detector, protocol=pickle.HIGHEST_PROTOCOL)


def loads_detector(data: bytes) -> Any:
    """Unpickle a detector.  ONLY for bytes from a signature-verified bundle."""
    return pickle.loads(data)
