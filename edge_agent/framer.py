"""The framer: asynchronous samples in, one row per asset per tick out (zero-order hold).

Per asset class it keeps arrays (assets x sensors) of the held value and its timestamp, plus
the samples not yet due.  A tick T of an asset is emitted once the asset's watermark passes
T: the newest sample seen minus a lateness allowance, or, when the asset goes quiet, wall-clock
time carried on from the last sample (so a lost source still yields rows, NaN where stale).
The row at T holds, per sensor, the newest sample with timestamp <= T; a sensor whose newest
sample is older than its staleness limit is NaN and counted, never silently zero.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from models.schema import AssetSchema

NO_TS = np.iinfo(np.int64).min // 2


@dataclass(slots=True)
class Rows:
    """Rows of one asset class: `asset` local indices, `ts_ns` tick times, `values` (n, S)."""

    asset: np.ndarray
    ts_ns: np.ndarray
    values: np.ndarray
    newest_arrival_ns: np.ndarray  # wall time (monotonic) the newest contributing batch arrived
    stale: int = 0

    def __len__(self) -> int:
        return int(self.ts_ns.shape[0])


@dataclass(slots=True)
class FrameStats:
    out_of_order: int = 0
    gap_skipped_ticks: int = 0


class ClassFramer:
    """Frames all assets of one class together."""

    def __init__(
        self,
        schema: AssetSchema,
        n_assets: int,
        lateness_periods: float = 0.5,
        max_catchup_ticks: int = 600,
    ) -> None:
        self.schema = schema
        self.S = schema.n_sensors
        self.P = schema.period_ns
        self.lateness = round(lateness_periods * self.P)
        self.stale_after = schema.stale_after_ns()
        self.max_catchup = max_catchup_ticks
        self.stats = FrameStats()
        self._alloc(n_assets)
        self._pend_a = np.empty(0, np.int32)
        self._pend_s = np.empty(0, np.int32)
        self._pend_t = np.empty(0, np.int64)
        self._pend_v = np.empty(0, np.float64)
        self._pend_w = np.empty(0, np.int64)

    def _alloc(self, n: int) -> None:
        self.n = n
        self.held_v = np.full((n, self.S), np.nan)
        self.held_t = np.full((n, self.S), NO_TS, np.int64)
        self.max_ts = np.full(n, NO_TS, np.int64)
        self.next_tick = np.full(n, NO_TS, np.int64)  # NO_TS: asset not seen yet
        self.offset = np.zeros(n, np.int64)  # data time minus wall time at the newest sample
        self.last_arrival = np.zeros(n, np.int64)
        # data time the asset's last arrival moved it on by (one period for a row per message,
        # the batch's span for batched payloads): how long it may be quiet before wall-clock
        # time ticks it on
        self.span = np.full(n, self.P, np.int64)

    def ingest(self, asset: np.ndarray, sensor: np.ndarray, ts: np.ndarray, value: np.ndarray,
               wall_ns: int | None = None) -> None:
        """Queue samples (local asset indices) until their tick is due."""
        if ts.size == 0:
            return
        wall = time.monotonic_ns() if wall_ns is None else wall_ns
        new = self.next_tick[asset] == NO_TS
        seen = None
        if new.any():
            # first sample of an asset: its first tick is the grid point at or after it
            first = np.full(self.n, np.iinfo(np.int64).max, np.int64)
            np.minimum.at(first, asset[new], ts[new])
            seen = (first != np.iinfo(np.int64).max) & (self.next_tick == NO_TS)
            self.next_tick[seen] = -(-first[seen] // self.P) * self.P
        touched = np.unique(asset)
        before = self.max_ts[touched]
        np.maximum.at(self.max_ts, asset, ts)
        moved = self.max_ts[touched] - before
        on = (before != NO_TS) & (moved > 0)  # an arrival that moved the asset's data on
        self.span[touched[on]] = np.maximum(moved[on], self.P)
        if seen is not None:  # a first arrival: the span of its rows, plus a period
            self.span[seen] = np.maximum(self.max_ts[seen] - first[seen] + self.P, self.P)
        self.offset[touched] = self.max_ts[touched] - wall
        self.last_arrival[touched] = wall
        self._pend_a = np.concatenate([self._pend_a, asset.astype(np.int32, copy=False)])
        self._pend_s = np.concatenate([self._pend_s, sensor.astype(np.int32, copy=False)])
        self._pend_t = np.concatenate([self._pend_t, ts])
        self._pend_v = np.concatenate([self._pend_v, value])
        self._pend_w = np.concatenate([self._pend_w, np.full(ts.size, wall, np.int64)])

    def watermark(self, wall_ns: int) -> np.ndarray:
        by_data = self.max_ts - self.lateness
        # quiet assets keep ticking, once quiet for longer than their usual arrival step
        by_wall = wall_ns + self.offset - self.lateness - self.span
        wm = np.maximum(by_data, np.where(self.last_arrival > 0, by_wall, NO_TS))
        return np.where(self.next_tick == NO_TS, NO_TS, wm)

    def advance(self, wall_ns: int | None = None) -> Rows:
        """Emit every tick that is due now."""
        wall = time.monotonic_ns() if wall_ns is None else wall_ns
        S, P = self.S, self.P
        wm = self.watermark(wall)
        last_due = np.where(wm == NO_TS, NO_TS, (wm // P) * P)
        alive = self.next_tick != NO_TS
        n_emit = np.where(alive & (last_due >= self.next_tick),
                          (last_due - self.next_tick) // P + 1, 0)
        too_many = n_emit > self.max_catchup
        if too_many.any():
            skip = n_emit[too_many] - self.max_catchup
            self.stats.gap_skipped_ticks += int(skip.sum())
            self.next_tick[too_many] += skip * P
            n_emit[too_many] = self.max_catchup
        total = int(n_emit.sum())
        if total == 0:
            return Rows(np.empty(0, np.int32), np.empty(0, np.int64), np.empty((0, S)),
                        np.empty(0, np.int64))
        emitting = np.flatnonzero(n_emit)
        counts = n_emit[emitting]
        # layout: per emitting asset one header row (the held state) then its ticks
        seg = counts + 1
        starts = np.concatenate([[0], np.cumsum(seg)[:-1]])
        nrow = int(seg.sum())
        vals = np.full((nrow, S), np.nan)
        tss = np.full((nrow, S), NO_TS, np.int64)
        arr = np.zeros(nrow, np.int64)
        valid = np.zeros((nrow, S), bool)
        vals[starts] = self.held_v[emitting]
        tss[starts] = self.held_t[emitting]
        valid[starts] = True
        row_of_asset = np.full(self.n, -1, np.int64)
        row_of_asset[emitting] = starts
        # samples that are due: ts <= last due tick of their asset
        pa, pt = self._pend_a, self._pend_t
        due = (row_of_asset[pa] >= 0) & (pt <= last_due[pa])
        if due.any():
            a, s, t = pa[due], self._pend_s[due], pt[due]
            v, w = self._pend_v[due], self._pend_w[due]
            older = t <= self.held_t[a, s]
            if older.any():  # arrived after a newer sample of the same sensor
                self.stats.out_of_order += int(older.sum())
                keep = ~older
                a, s, t, v, w = a[keep], s[keep], t[keep], v[keep], w[keep]
            first_tick = self.next_tick[a]
            k = np.maximum(0, -(-(t - first_tick) // P))  # tick index: first tick >= t
            r = row_of_asset[a] + 1 + k
            key = r * S + s
            order = np.lexsort((t, key))
            key_o = key[order]
            last = np.ones(order.size, bool)
            last[:-1] = key_o[1:] != key_o[:-1]
            sel = order[last]
            vals[r[sel], s[sel]] = v[sel]
            tss[r[sel], s[sel]] = t[sel]
            valid[r[sel], s[sel]] = True
            np.maximum.at(arr, r, w)
            keep_p = ~due
            self._pend_a, self._pend_s = self._pend_a[keep_p], self._pend_s[keep_p]
            self._pend_t, self._pend_v = self._pend_t[keep_p], self._pend_v[keep_p]
            self._pend_w = self._pend_w[keep_p]
        # forward fill within each asset's segment (header rows are always valid)
        idx = np.where(valid, np.arange(nrow)[:, None], 0)
        np.maximum.accumulate(idx, axis=0, out=idx)
        cols = np.arange(S)[None, :]
        vals = vals[idx, cols]
        tss = tss[idx, cols]
        arr = np.maximum.accumulate(arr)  # newest arrival contributing so far
        header = np.zeros(nrow, bool)
        header[starts] = True
        body = ~header
        ends = starts + counts
        self.held_v[emitting] = vals[ends]
        self.held_t[emitting] = tss[ends]
        tick_k = np.arange(nrow) - np.repeat(starts, seg) - 1
        tick_ts = np.repeat(self.next_tick[emitting], seg) + tick_k * P
        self.next_tick[emitting] += counts * P
        out_v = vals[body]
        out_t = tick_ts[body]
        age = out_t[:, None] - tss[body]
        stale = age > self.stale_after[None, :]
        n_stale = int(stale.sum())
        if n_stale:
            out_v[stale] = np.nan
        asset_rows = np.repeat(emitting, seg)[body].astype(np.int32)
        return Rows(asset_rows, out_t, out_v, arr[body], n_stale)
