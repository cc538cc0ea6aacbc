"""The scorer contract shared by the river detector and the autoencoder."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np


@dataclass(slots=True)
class Scores:
    """Per row: raw detector score, calibrated surprise (NaN while warming up), sensor shares."""

    raw: np.ndarray  # (n,)
    score: np.ndarray  # (n,) calibrated; NaN = no verdict yet
    shares: np.ndarray  # (n, S) each sensor's share of the anomaly, rows sum to 1 or NaN


class Scorer(Protocol):
    name: str

    def score(self, asset: np.ndarray, rows: np.ndarray) -> Scores:
        """Score rows (local asset indices, (n, S) values; NaN = missing)."""
        ...

    def learn(
        self, asset: np.ndarray, rows: np.ndarray, normal: np.ndarray, scores: Scores
    ) -> None:
        """Let the scorer adapt on rows believed normal (`normal` mask)."""
        ...
