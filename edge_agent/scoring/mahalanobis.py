"""Online Hotelling T^2 detector for all assets of a class at once (numpy, no per-row Python).

Why this and not a river tree/histogram detector by default: on the pump simulator, river's
HalfSpaceTrees scored normal rows 0.97 and bearing-fault rows 0.96, and StandardScaler|LODA,
learning online, absorbed a slowly heating bearing within ~100 s and was thrown off for an
hour by one start/stop during warm-up (tests/bench/bench_online_detectors.py prints the
comparison).  Process sensors are strongly correlated (pressure, flow and current all follow
speed), and a fault breaks those correlations; T^2 against an exponentially weighted mean and
covariance is the textbook statistic for exactly that, and each sensor's term d_i (P d)_i is
its share of the anomaly, the diagnostics an operator reads.

The statistics learn only from rows the pipeline calls normal (no event, score below the
close threshold), with a long half-life, so a slowly growing fault is not learned away.
"""

from __future__ import annotations

import numpy as np

from edge_agent.scoring.base import Scores
from models.calibration import BatchedOnlineCalibrator
from models.schema import AssetSchema


class MahalanobisScorer:
    name = "mahalanobis"

    def __init__(
        self,
        schema: AssetSchema,
        n_assets: int,
        half_life_rows: int = 3600,
        warmup_rows: int = 250,
        calibration_rows: int = 250,
        shrinkage: float = 0.05,
        refresh_every: int = 25,
        seed: int = 42,
    ) -> None:
        self.S = schema.n_sensors
        self.half_life = half_life_rows
        self.warmup = warmup_rows
        self.calibration_rows = calibration_rows
        self.shrinkage = shrinkage
        self.refresh_every = refresh_every
        self.seed = seed
        # a floor on each sensor's variance, relative to its scale: a sensor that is constant
        # in normal operation must not make any wiggle infinitely surprising
        self.floor_rel = 1e-4
        self.n = 0
        self.n_learned = np.zeros(0, np.int64)
        self.mean = np.zeros((0, self.S))
        self.cov = np.zeros((0, self.S, self.S))
        self.prec = np.zeros((0, self.S, self.S))
        self.since_refresh = np.zeros(0, np.int64)
        self.calibration = BatchedOnlineCalibrator(0, min_fit=calibration_rows, seed=seed)
        self.resize(n_assets)

    def resize(self, n: int) -> None:
        grow = n - self.n
        if grow <= 0:
            return
        S = self.S
        self.n_learned = np.concatenate([self.n_learned, np.zeros(grow, np.int64)])
        self.mean = np.concatenate([self.mean, np.zeros((grow, S))])
        self.cov = np.concatenate([self.cov, np.zeros((grow, S, S))])
        self.prec = np.concatenate([self.prec, np.zeros((grow, S, S))])
        self.since_refresh = np.concatenate([self.since_refresh, np.zeros(grow, np.int64)])
        self.calibration.resize(n)
        self.n = n

    def _refresh(self, assets: np.ndarray) -> None:
        c = self.cov[assets]
        d = np.diagonal(c, axis1=1, axis2=2)
        floor = self.floor_rel * (self.mean[assets] ** 2) + 1e-9
        diag = np.maximum(d, floor)
        reg = (1 - self.shrinkage) * c
        idx = np.arange(self.S)
        reg[:, idx, idx] = diag  # shrink off-diagonals towards 0, keep (floored) variances
        self.prec[assets] = np.linalg.inv(reg)
        self.since_refresh[assets] = 0

    def raw_and_shares(self, asset: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        mu = self.mean[asset]
        d = np.where(np.isnan(rows), 0.0, rows - mu)  # missing sensor: no evidence either way
        pd = np.einsum("nij,nj->ni", self.prec[asset], d)
        terms = d * pd
        t2 = terms.sum(axis=1)
        pos = np.maximum(terms, 0.0)
        tot = pos.sum(axis=1, keepdims=True)
        with np.errstate(invalid="ignore", divide="ignore"):
            shares = np.where(tot > 0, pos / tot, np.nan)
        return t2, shares

    def score(self, asset: np.ndarray, rows: np.ndarray) -> Scores:
        ready = self.n_learned[asset] >= self.warmup
        raw, shares = self.raw_and_shares(asset, rows)
        raw = np.where(ready & ~np.isnan(rows).all(axis=1), raw, np.nan)
        return Scores(raw, self.calibration.surprise(asset, raw), shares)

    def learn(
        self, asset: np.ndarray, rows: np.ndarray, normal: np.ndarray, scores: Scores
    ) -> None:
        ok = normal & ~np.isnan(rows).any(axis=1)
        if not ok.any():
            return
        a_all, x_all, raw_all = asset[ok], rows[ok], scores.raw[ok]
        # rows of one asset may repeat in a batch: apply occurrence by occurrence
        order = np.argsort(a_all, kind="stable")
        a_sorted = a_all[order]
        occ = np.empty_like(order)
        occ[order] = np.arange(a_sorted.size) - np.searchsorted(a_sorted, a_sorted)
        floor_alpha = 1.0 - 0.5 ** (1.0 / self.half_life)
        for k in range(int(occ.max()) + 1):
            sel = occ == k
            a, x = a_all[sel], x_all[sel]
            self.n_learned[a] += 1
            alpha = np.maximum(1.0 / self.n_learned[a], floor_alpha)[:, None]
            delta = x - self.mean[a]
            self.mean[a] += alpha * delta
            # EW covariance (West's update): C <- (1-a) (C + a d d^T)
            outer = delta[:, :, None] * delta[:, None, :]
            self.cov[a] = (1 - alpha[:, :, None]) * (self.cov[a] + alpha[:, :, None] * outer)
            self.since_refresh[a] += 1
        due = np.flatnonzero(
            (self.since_refresh >= self.refresh_every)
            | ((self.n_learned == self.warmup) & (self.since_refresh > 0))
        )
        if due.size:
            self._refresh(due)
        self.calibration.update(a_all, raw_all)
