"""Score calibration onto one common scale, so a threshold means the same on every asset.

The calibrated score is the *surprise* of a raw score, -log10 of the probability that a
normal row scores at least that high: 2 means "1 normal row in 100 scores this high", 4 means
1 in 10 000.  Inside the observed normal range the probability comes from the empirical
distribution; past its upper tail an exponential tail (fitted by mean excess over the
`tail_q` quantile) extrapolates, so scores keep growing with the anomaly instead of saturating.
"""

from __future__ import annotations

from typing import Any

import numpy as np

MAX_SURPRISE = 12.0


class TailCalibrator:
    """Maps raw detector scores (higher = more anomalous) to surprise in decades."""

    def __init__(self, n_ref: int = 4096, tail_q: float = 0.95) -> None:
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
        excess = self.ref[self.ref > self.u] - self.u
        spread = float(np.std(self.ref)) or 1e-9
        self.beta = max(float(excess.mean()) if excess.size else spread, 1e-6 * spread, 1e-12)

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
        p = np.where(x > self.u, np.minimum(p_emp, p_tail), p_emp)
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
    """Keeps learning from normal scores: a bounded reservoir, refitted in steps."""

    def __init__(
        self, n_ref: int = 4096, tail_q: float = 0.95, min_fit: int = 200, refit_every: int = 500,
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
