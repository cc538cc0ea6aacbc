"""Score calibration onto one common scale, so a threshold means the same on every asset.

The calibrated score is the *surprise* of a raw score, -log10 of the probability that a
normal row scores at least that high: 2 means "1 normal row in 100 scores this high", 4 means
1 in 10 000.  Below the `tail_q` quantile the probability is empirical; above it an
exponential tail takes over, fitted robustly from the `tail_q` and 0.99 quantiles (so the
rare transients in "normal" data, start-ups and ramps, cannot stretch it), and scores keep
growing with the anomaly instead of saturating at the largest value seen.
"""

from __future__ import annotations

from typing import Any

import numpy as np

MAX_SURPRISE = 12.0


class TailCalibrator:
    """Maps raw detector scores (higher = more anomalous) to surprise in decades."""

    def __init__(self, n_ref: int = 4096, tail_q: float = 0.90) -> None:
        self.n_ref = n_ref
        self.tail_q = tail_q
        self.ref: np.ndarray = np.empty(0)
        self.n_seen = 0
        self.u = 0.0
        self.beta = 1.0

    @property
    def fitted(self) -> bool:
        return self.ref.size >= 20

    def fit(self, raw: np.ndarray) -> TailCalibrator:
        raw = np.asarray(raw, np.float64)
        raw = raw[np.isfinite(raw)]
        if raw.size == 0:
            raise ValueError("cannot calibrate on no finite scores")
        self.n_seen = int(raw.size)
        if raw.size > self.n_ref:
            # keep evenly spaced order statistics: a compact, exact-enough empirical CDF
            qs = np.linspace(0.0, 1.0, self.n_ref)
            self.ref = np.quantile(raw, qs)
        else:
            self.ref = np.sort(raw)
        self._fit_tail()
        return self

    def _fit_tail(self) -> None:
        self.u = float(np.quantile(self.ref, self.tail_q))
        q99 = float(np.quantile(self.ref, 0.99))
        # exponential tail: P drops from (1 - tail_q) at u to 0.01 at q99
        decades = np.log((1.0 - self.tail_q) / 0.01)
        spread = float(np.std(self.ref)) or 1e-9
        self.beta = max((q99 - self.u) / decades if decades > 0 else spread, 1e-6 * spread, 1e-12)

    def surprise(self, raw: np.ndarray) -> np.ndarray:
        """-log10 P(normal >= raw); NaN stays NaN."""
        x = np.asarray(raw, np.float64)
        if not self.fitted:
            return np.full(x.shape, np.nan)
        n = self.ref.size
        # empirical exceedance with a +1 so the top of the range is not infinitely surprising
        above = n - np.searchsorted(self.ref, x, side="left")
        p_emp = (above + 1.0) / (n + 1.0)
        with np.errstate(over="ignore", invalid="ignore"):
            p_tail = (1.0 - self.tail_q) * np.exp(-(x - self.u) / self.beta)
        p = np.where(x > self.u, p_tail, p_emp)
        with np.errstate(divide="ignore", invalid="ignore"):
            s = -np.log10(p)
        s = np.clip(s, 0.0, MAX_SURPRISE)
        return np.where(np.isnan(x), np.nan, s)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": "tail_surprise_v1",
            "tail_q": self.tail_q,
            "n_seen": self.n_seen,
            "ref": self.ref.tolist(),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TailCalibrator:
        if d.get("kind") != "tail_surprise_v1":
            raise ValueError(f"unknown calibration kind {d.get('kind')!r}")
        c = cls(n_ref=max(len(d["ref"]), 20), tail_q=float(d["tail_q"]))
        c.ref = np.asarray(d["ref"], np.float64)
        c.n_seen = int(d.get("n_seen", c.ref.size))
        c._fit_tail()
        return c


class OnlineCalibrator(TailCalibrator):
    """Keeps learning from normal scores: a bounded reservoir, refitted every few hundred."""

    def __init__(
        self, n_ref: int = 4096, tail_q: float = 0.90, min_fit: int = 200, refit_every: int = 500,
        seed: int = 0,
    ) -> None:
        super().__init__(n_ref, tail_q)
        self.min_fit = min_fit
        self.refit_every = refit_every
        self._res = np.empty(n_ref)
        self._count = 0
        self._since_fit = 0
        self._rng = np.random.default_rng(seed)

    def update(self, raw: np.ndarray) -> None:
        """Feed scores of rows believed normal (reservoir sampling keeps a uniform sample)."""
        for v in np.asarray(raw, np.float64).ravel():
            if not np.isfinite(v):
                continue
            if self._count < self.n_ref:
                self._res[self._count] = v
            else:
                j = int(self._rng.integers(0, self._count + 1))
                if j < self.n_ref:
                    self._res[j] = v
            self._count += 1
            self._since_fit += 1
        if self._count >= self.min_fit and (
            self.ref.size == 0 or self._since_fit >= self.refit_every
        ):
            self.ref = np.sort(self._res[: min(self._count, self.n_ref)])
            self._fit_tail()
            self.n_seen = self._count
            self._since_fit = 0


class BatchedOnlineCalibrator:
    """Online calibrators for many assets at once: no Python loop over assets in the hot path.

    Each asset keeps a uniform reservoir sample of all its normal raw scores (Algorithm R,
    vectorised: the k-th score replaces a random slot with probability window/k), so its
    calibration reflects its whole normal history, not the last hour; every `refit_every` new
    scores it is refitted (quantiles of the reservoir, robust exponential tail, as
    `TailCalibrator`).  `surprise` compares each row against its asset's `n_ref` quantiles in
    one vectorised operation.
    """

    def __init__(self, n_assets: int, window: int = 4096, n_ref: int = 512,
                 tail_q: float = 0.90, min_fit: int = 200, refit_every: int = 500,
                 seed: int = 0) -> None:
        self.rng = np.random.default_rng(seed)
        self.window = window
        self.n_ref = n_ref
        self.tail_q = tail_q
        self.min_fit = min_fit
        self.refit_every = refit_every
        self.n = 0
        self.ring = np.zeros((0, window))
        self.count = np.zeros(0, np.int64)
        self.since_fit = np.zeros(0, np.int64)
        self.ref = np.zeros((0, n_ref))
        self.u = np.zeros(0)
        self.beta = np.ones(0)
        self.fitted = np.zeros(0, bool)
        self.resize(n_assets)

    def resize(self, n: int) -> None:
        grow = n - self.n
        if grow <= 0:
            return
        self.ring = np.vstack([self.ring, np.zeros((grow, self.window))])
        self.count = np.concatenate([self.count, np.zeros(grow, np.int64)])
        self.since_fit = np.concatenate([self.since_fit, np.zeros(grow, np.int64)])
        self.ref = np.vstack([self.ref, np.zeros((grow, self.n_ref))])
        self.u = np.concatenate([self.u, np.zeros(grow)])
        self.beta = np.concatenate([self.beta, np.ones(grow)])
        self.fitted = np.concatenate([self.fitted, np.zeros(grow, bool)])
        self.n = n

    def update(self, asset: np.ndarray, raw: np.ndarray) -> None:
        ok = np.isfinite(raw)
        asset, raw = asset[ok], raw[ok]
        if asset.size == 0:
            return
        order = np.argsort(asset, kind="stable")
        a_s = asset[order]
        occ = np.empty_like(order)
        occ[order] = np.arange(a_s.size) - np.searchsorted(a_s, a_s)
        k = self.count[asset] + occ  # this score's 0-based position in the asset's stream
        slot = np.where(k < self.window, k, self.rng.integers(0, np.maximum(k + 1, 1)))
        keep = slot < self.window
        self.ring[asset[keep], slot[keep]] = raw[keep]
        np.add.at(self.count, asset, 1)
        np.add.at(self.since_fit, asset, 1)
        due = np.flatnonzero((self.count >= self.min_fit)
                             & (~self.fitted | (self.since_fit >= self.refit_every)))
        if due.size:
            self._refit(due)

    def _refit(self, due: np.ndarray) -> None:
        qs = np.linspace(0.0, 1.0, self.n_ref)
        for length in np.unique(np.minimum(self.count[due], self.window)):
            grp = due[np.minimum(self.count[due], self.window) == length]
            data = np.sort(self.ring[grp, :length], axis=1)
            self.ref[grp] = np.quantile(data, qs, axis=1).T
            self.u[grp] = np.quantile(data, self.tail_q, axis=1)
            q99 = np.quantile(data, 0.99, axis=1)
            spread = np.maximum(data.std(axis=1), 1e-9)
            decades = np.log((1.0 - self.tail_q) / 0.01)
            self.beta[grp] = np.maximum((q99 - self.u[grp]) / decades, 1e-6 * spread)
        self.fitted[due] = True
        self.since_fit[due] = 0

    def surprise(self, asset: np.ndarray, raw: np.ndarray) -> np.ndarray:
        """-log10 P(normal >= raw) per row; NaN where the asset is not calibrated yet."""
        x = np.asarray(raw, np.float64)
        ref = self.ref[asset]
        above = (ref >= x[:, None]).sum(axis=1)
        p_emp = (above + 1.0) / (self.n_ref + 1.0)
        u, beta = self.u[asset], self.beta[asset]
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            p_tail = (1.0 - self.tail_q) * np.exp(-(x - u) / beta)
            s = -np.log10(np.where(x > u, p_tail, p_emp))
        s = np.clip(s, 0.0, MAX_SURPRISE)
        return np.where(np.isnan(x) | ~self.fitted[asset], np.nan, s)
