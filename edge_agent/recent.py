"""The last N rows (values and fused score) of every asset, in memory, for the console.

The console's event plots and live scores read from here rather than from InfluxDB, so they
work when InfluxDB is down or disabled; the price is that only the last `recent_rows` ticks
per asset can be plotted (an hour at 1 s by default).
"""

from __future__ import annotations

import threading

import numpy as np


class RecentRows:
    """Ring buffers per asset of one class: (assets, N) timestamps and scores, (assets, N, S)."""

    def __init__(self, n_assets: int, n_sensors: int, capacity: int) -> None:
        self.N = capacity
        self.ts = np.zeros((n_assets, capacity), np.int64)
        self.score = np.full((n_assets, capacity), np.nan)
        self.values = np.full((n_assets, capacity, n_sensors), np.nan)
        self.count = np.zeros(n_assets, np.int64)  # rows ever written
        self.off = np.zeros((n_assets, capacity), bool)
        self.lock = threading.Lock()

    def add(self, asset: np.ndarray, ts_ns: np.ndarray, values: np.ndarray, score: np.ndarray,
            off: np.ndarray) -> None:
        if asset.size == 0:
            return
        order = np.argsort(asset, kind="stable")  # rows keep their time order per asset
        a = asset[order]
        first = np.r_[0, np.flatnonzero(a[1:] != a[:-1]) + 1]
        rank = np.arange(a.size) - np.repeat(first, np.diff(np.r_[first, a.size]))
        with self.lock:
            pos = (self.count[a] + rank) % self.N
            self.ts[a, pos] = ts_ns[order]
            self.score[a, pos] = score[order]
            self.values[a, pos] = values[order]
            self.off[a, pos] = off[order]
            np.add.at(self.count, a, 1)

    def window(self, a: int, start_ns: int, end_ns: int) -> tuple[np.ndarray, np.ndarray,
                                                                   np.ndarray]:
        """(ts, values, score) of asset `a` between the two times, in time order."""
        with self.lock:
            n = int(min(self.count[a], self.N))
            idx = (np.arange(self.count[a] - n, self.count[a]) % self.N).astype(np.int64)
            ts, vals, sc = self.ts[a, idx], self.values[a, idx], self.score[a, idx]
        m = (ts >= start_ns) & (ts <= end_ns)
        return ts[m], vals[m], sc[m]

    def last(self, a: int) -> tuple[int | None, float, bool]:
        """(ts, score, off) of the newest row of asset `a`."""
        with self.lock:
            if self.count[a] == 0:
                return None, float("nan"), False
            p = (self.count[a] - 1) % self.N
            return int(self.ts[a, p]), float(self.score[a, p]), bool(self.off[a, p])
