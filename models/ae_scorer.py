"""Batched LSTM-AE scoring for every asset that shares one model: one ring buffer, one forward.

Agent usage (one scorer per loaded bundle; `local_idx` are the scorer's own 0..n-1 indices
of the assets using that bundle — the agent keeps the map from its global asset ids):

    bundle = load_bundle(blob, trusted_keys, expected_schema=schema)   # models.bundle
    scorer = BatchedAEScorer.from_bundle(bundle, n_assets=len(assets), device="auto", stride=1)
    scorer.push(local_idx, rows)          # rows: (len(local_idx), n_sensors) raw units, NaN ok
    out = scorer.score()                  # all assets whose window is full and stride is due
    out.idx, out.raw, out.score, out.shares   # score: calibrated surprise (common scale)
    scorer.resize(n_assets + 10)          # assets added; old windows are kept
    scorer.reset(local_idx)               # e.g. after a long outage or an off period

What is scored: the mean squared reconstruction error of the last `score_steps` rows of the
window (`AEConfig.score_steps`, in normalised units, masked entries excluded), averaged over
the present sensors.  The newest rows are the ones the agent must decide about, so scoring
them gives the shortest alarm latency; a few steps instead of one damp single-sample noise.
With `stride > 1` an asset is scored every `stride` pushes (fewer forwards, coarser time).

Off condition and outages: do not push rows of an asset that is off (its windows would teach
nothing and score its stand-still as anomalous); after a long gap call `reset` so the asset
fills a fresh window.  Pushing NaN for a stale sensor is right: it is masked, never zeroed.

Hot swap: build a new scorer from the new bundle and `copy_windows_from(old)` if the
schemas match, so the new model does not wait a full window before it can score.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from models.calibration import TailCalibrator
from models.lstm_ae import LSTMAutoencoder, Normalizer, resolve_device, sensor_shares, window_errors

if TYPE_CHECKING:
    from models.bundle import Bundle


@dataclass(frozen=True)
class AEScores:
    """Scores of the assets in `idx` (scorer-local indices), in that order."""

    idx: np.ndarray  # (n,) int64
    raw: np.ndarray  # (n,) mean squared error, normalised units
    score: np.ndarray  # (n,) calibrated surprise (-log10 P(normal >= raw)); NaN if not fitted
    shares: np.ndarray  # (n, sensors) share of the error per sensor, rows sum to 1; NaN=absent

    def __len__(self) -> int:
        return int(self.idx.shape[0])


class BatchedAEScorer:
    """Ring buffer (n_assets, window, sensors) on the model's device; one forward per call."""

    def __init__(
        self,
        model: LSTMAutoencoder,
        normalizer: Normalizer,
        calibrator: TailCalibrator,
        n_assets: int = 0,
        device: str | torch.device = "auto",
        stride: int = 1,
        max_batch: int = 8192,
    ) -> None:
        if stride < 1:
            raise ValueError("stride must be >= 1")
        self.device = resolve_device(device)
        self.model = model.to(self.device).eval()
        self.cfg = model.cfg
        self.calibrator = calibrator
        self.stride = stride
        self.max_batch = max_batch
        self._center = torch.from_numpy(normalizer.center).to(self.device)
        self._scale = torch.from_numpy(normalizer.scale).to(self.device)
        self._center_np = np.asarray(normalizer.center, np.float32)
        self._scale_np = np.asarray(normalizer.scale, np.float32)
        w, s = self.cfg.window, self.cfg.n_sensors
        self._buf = torch.full((n_assets, w, s), float("nan"), device=self.device)
        self._pos = np.zeros(n_assets, np.int64)  # slot the next row goes to
        self._count = np.zeros(n_assets, np.int64)  # rows in the window, capped at window
        self._since = np.zeros(n_assets, np.int64)  # pushes since the last score
        self._steps = np.arange(w, dtype=np.int64)

    @classmethod
    def from_bundle(
        cls, bundle: Bundle, n_assets: int = 0, device: str | torch.device = "auto",
        stride: int = 1, max_batch: int = 8192,
    ) -> BatchedAEScorer:
        return cls(bundle.build_model(), bundle.normalizer, bundle.calibrator, n_assets,
                   device, stride, max_batch)

    @property
    def n_assets(self) -> int:
        return int(self._buf.shape[0])

    def resize(self, n_assets: int) -> None:
        """Grow (or shrink) to `n_assets`; the windows of the kept assets are kept."""
        old = self.n_assets
        keep = min(old, n_assets)
        buf = torch.full((n_assets, *self._buf.shape[1:]), float("nan"), device=self.device)
        buf[:keep] = self._buf[:keep]
        self._buf = buf
        for name in ("_pos", "_count", "_since"):
            arr = np.zeros(n_assets, np.int64)
            arr[:keep] = getattr(self, name)[:keep]
            setattr(self, name, arr)

    def reset(self, local_idx: np.ndarray) -> None:
        """Forget the windows of these assets (they must fill again before being scored)."""
        idx = np.asarray(local_idx, np.int64)
        self._buf[torch.from_numpy(idx).to(self.device)] = float("nan")
        self._pos[idx] = 0
        self._count[idx] = 0
        self._since[idx] = 0

    def push(self, local_idx: np.ndarray, rows: np.ndarray) -> None:
        """Append one row (raw units, NaN = missing) to each listed asset's window."""
        idx = np.asarray(local_idx, np.int64)
        rows = np.asarray(rows, np.float32)
        if rows.shape != (idx.size, self.cfg.n_sensors):
            raise ValueError(
                f"rows shape {rows.shape} != ({idx.size}, {self.cfg.n_sensors} sensors)"
            )
        if idx.size and (idx.min() < 0 or idx.max() >= self.n_assets):
            raise IndexError(f"asset index out of range 0..{self.n_assets - 1}; resize first")
        if np.unique(idx).size != idx.size:
            raise ValueError("push got the same asset twice; push one row per asset per call")
        t_idx = torch.from_numpy(idx).to(self.device)
        t_pos = torch.from_numpy(self._pos[idx]).to(self.device)
        x = torch.from_numpy(rows).to(self.device)
        self._buf[t_idx, t_pos] = (x - self._center) / self._scale
        self._pos[idx] = (self._pos[idx] + 1) % self.cfg.window
        self._count[idx] = np.minimum(self._count[idx] + 1, self.cfg.window)
        self._since[idx] += 1

    def ready(self, local_idx: np.ndarray | None = None) -> np.ndarray:
        """Assets (of `local_idx`, default all) whose window is full and whose stride is due."""
        idx = np.arange(self.n_assets) if local_idx is None else np.asarray(local_idx, np.int64)
        ok = (self._count[idx] >= self.cfg.window) & (self._since[idx] >= self.stride)
        return idx[ok]

    def windows(self, local_idx: np.ndarray) -> torch.Tensor:
        """Normalised windows in time order (oldest first), (n, window, sensors) on device."""
        idx = np.asarray(local_idx, np.int64)
        order = (self._pos[idx, None] + self._steps[None, :]) % self.cfg.window
        return self._buf[
            torch.from_numpy(idx).to(self.device)[:, None], torch.from_numpy(order).to(self.device)
        ]

    def score(self, local_idx: np.ndarray | None = None, *, force: bool = False) -> AEScores:
        """Score the ready assets among `local_idx` (default: all) in one batched forward.

        `force=True` ignores the stride (still needs a full window).
        """
        if force:
            idx = np.arange(self.n_assets) if local_idx is None else np.asarray(local_idx, np.int64)
            idx = idx[self._count[idx] >= self.cfg.window]
        else:
            idx = self.ready(local_idx)
        raws, errs = [], []
        with torch.inference_mode():
            for i in range(0, idx.size, self.max_batch):
                r, e = window_errors(self.model, self.windows(idx[i : i + self.max_batch]))
                raws.append(r.float().cpu().numpy())
                errs.append(e.float().cpu().numpy())
        self._since[idx] = 0
        s = self.cfg.n_sensors
        raw = np.concatenate(raws).astype(np.float64) if raws else np.empty(0)
        err = np.concatenate(errs).astype(np.float64) if errs else np.empty((0, s))
        return AEScores(idx, raw, self.calibrator.surprise(raw), sensor_shares(err))

    def copy_windows_from(self, other: BatchedAEScorer) -> None:
        """Carry windows over a hot swap (same sensors and window), re-normalised for this model."""
        if (other.cfg.n_sensors, other.cfg.window) != (self.cfg.n_sensors, self.cfg.window):
            raise ValueError("cannot carry windows between models of different shape")
        n = min(self.n_assets, other.n_assets)
        raw = other._buf[:n].to(self.device) * other._scale.to(self.device) + other._center.to(
            self.device
        )
        self._buf[:n] = (raw - self._center) / self._scale
        self._pos[:n] = other._pos[:n]
        self._count[:n] = other._count[:n]
        self._since[:n] = other._since[:n]

    def score_rows(self, local_idx: np.ndarray, rows: np.ndarray,
                   skip: np.ndarray | None = None) -> AEScores:
        """Push and score many rows at once: several rows per asset allowed, in time order.

        This is what the agent calls with a framer's output (a burst of ticks per asset when a
        batched payload lands): each row is scored against the window that ends at it, and all
        of them go through one batched forward, not one forward per tick.  Rows in `skip`
        (machine off) are neither pushed nor scored.  Returns scores aligned with `rows`
        (`idx` = `local_idx`); rows whose window is not full yet have NaN.
        """
        idx = np.asarray(local_idx, np.int64)
        n, s, w = idx.size, self.cfg.n_sensors, self.cfg.window
        rows = np.asarray(rows, np.float32)
        if rows.shape != (n, s):
            raise ValueError(f"rows shape {rows.shape} != ({n}, {s} sensors)")
        raw = np.full(n, np.nan)
        err = np.full((n, s), np.nan)
        use = np.ones(n, bool) if skip is None else ~np.asarray(skip, bool)
        sel = np.flatnonzero(use)
        if sel.size and (idx[sel].min() < 0 or idx[sel].max() >= self.n_assets):
            raise IndexError(f"asset index out of range 0..{self.n_assets - 1}; resize first")
        if sel.size and self.stride > 1:  # stride bookkeeping is per push: one tick at a time
            return self._score_rows_by_tick(idx, rows, sel)
        if sel.size:
            a = idx[sel]
            order = np.argsort(a, kind="stable")  # per asset, rows keep their time order
            a_o = a[order]
            uniq, first, counts = np.unique(a_o, return_index=True, return_counts=True)
            rank = np.arange(a_o.size) - np.repeat(first, counts)
            slot = np.repeat(np.arange(uniq.size), counts)
            maxc = int(counts.max())
            x = (rows[sel[order]] - self._center_np) / self._scale_np
            new = torch.full((uniq.size, maxc, s), float("nan"), device=self.device)
            t_slot = torch.from_numpy(slot).to(self.device)
            t_rank = torch.from_numpy(rank).to(self.device)
            new[t_slot, t_rank] = torch.from_numpy(x).to(self.device)
            ext = torch.cat([self.windows(uniq), new], dim=1)  # (m, window + maxc, sensors)
            filled = self._count[uniq][slot] + rank + 1
            ready = filled >= w
            # the new windows: the `window` rows ending at each ready row
            r_slot, r_rank = t_slot[torch.from_numpy(ready).to(self.device)], t_rank[
                torch.from_numpy(ready).to(self.device)]
            steps = torch.arange(w, device=self.device)
            win_t = r_rank[:, None] + 1 + steps[None, :]
            k = int(ready.sum())
            raws, errs = [], []
            with torch.inference_mode():
                for i in range(0, k, self.max_batch):
                    win = ext[r_slot[i : i + self.max_batch, None], win_t[i : i + self.max_batch]]
                    r, e = window_errors(self.model, win)
                    raws.append(r.float().cpu().numpy())
                    errs.append(e.float().cpu().numpy())
            if k:
                dest = sel[order][ready]
                raw[dest] = np.concatenate(raws)
                err[dest] = np.concatenate(errs)
            # keep each asset's newest `window` rows, time-ordered from slot 0
            last = torch.from_numpy(counts).to(self.device)[:, None] + steps[None, :]
            t_uniq = torch.from_numpy(uniq).to(self.device)
            self._buf[t_uniq] = ext[torch.arange(uniq.size, device=self.device)[:, None], last]
            self._pos[uniq] = 0
            self._count[uniq] = np.minimum(self._count[uniq] + counts, w)
            self._since[uniq] = 0
        score = self.calibrator.surprise(raw)
        return AEScores(idx, raw, score, sensor_shares(err))

    def _score_rows_by_tick(self, idx: np.ndarray, rows: np.ndarray, sel: np.ndarray
                            ) -> AEScores:
        n, s = idx.size, self.cfg.n_sensors
        raw = np.full(n, np.nan)
        err = np.full((n, s), np.nan)
        a = idx[sel]
        order = np.argsort(a, kind="stable")
        _, first, counts = np.unique(a[order], return_index=True, return_counts=True)
        rank = np.empty(sel.size, np.int64)
        rank[order] = np.arange(sel.size) - np.repeat(first, counts)
        for r in range(int(counts.max())):
            rows_r = sel[rank == r]
            self.push(idx[rows_r], rows[rows_r])
            out = self.score(idx[rows_r])
            pos = {int(v): j for j, v in enumerate(idx[rows_r])}
            dest = np.array([rows_r[pos[int(v)]] for v in out.idx], np.int64)
            if dest.size:
                raw[dest] = out.raw
                err[dest] = out.shares * out.raw[:, None]  # shares are what the caller reads
        return AEScores(idx, raw, self.calibrator.surprise(raw), sensor_shares(err))
