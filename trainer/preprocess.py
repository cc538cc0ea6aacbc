"""From a loaded history frame to clean, evenly spaced rows and training windows.

`regularize` sorts each asset, keeps the last of duplicate timestamps, turns out-of-range
values into NaN (they are not learned), resamples onto the schema's period (mean within a
bin; label = max) and forward-fills short gaps (`ffill_limit` periods; longer gaps stay NaN
and break windows).  `trainable_mask` leaves out off-condition rows and labelled faults.
`window_ends` finds the windows whose rows are all trainable.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from models.schema import AssetSchema


def regularize(frame: pd.DataFrame, schema: AssetSchema, period_s: float | None = None,
               ffill_limit: int = 3) -> pd.DataFrame:
    period = pd.Timedelta(seconds=period_s or schema.sample_period_s)
    sensors = list(schema.sensor_names)
    lows, highs = schema.lows, schema.highs
    parts = []
    for asset, g in sorted(frame.groupby("asset", sort=False), key=lambda kv: natural_key(kv[0])):
        g = g.sort_values("ts", kind="stable").drop_duplicates("ts", keep="last")
        vals = g[sensors].to_numpy(np.float64)
        with np.errstate(invalid="ignore"):
            bad = ~np.isfinite(vals) | (vals < lows) | (vals > highs)
        g = g.copy()
        g[sensors] = np.where(bad, np.nan, vals)
        r = g.set_index("ts")[[*sensors, "label"]].resample(period, origin="epoch")
        out = r[sensors].mean()
        out["label"] = r["label"].max().fillna(0).astype(np.int8)
        out[sensors] = out[sensors].ffill(limit=ffill_limit)
        out.insert(0, "asset", asset)
        parts.append(out.reset_index())
    if not parts:
        return frame.iloc[0:0].copy()
    return pd.concat(parts, ignore_index=True)[["asset", "ts", *sensors, "label"]]


def natural_key(name: object) -> tuple[int, float, str]:
    """Sort "2" before "10" (asset ids are often numbers), other names alphabetically."""
    text = str(name)
    try:
        return (0, float(text), text)
    except ValueError:
        return (1, 0.0, text)


def trainable_mask(frame: pd.DataFrame, schema: AssetSchema) -> np.ndarray:
    """Rows to learn from: not labelled, not 'off', not entirely missing."""
    vals = frame[list(schema.sensor_names)].to_numpy(np.float64)
    ok = (frame["label"].to_numpy() == 0) & np.isfinite(vals).any(axis=1)
    if schema.off_condition is not None:
        ok &= ~schema.off_condition.mask(vals, schema.sensor_names)
    return np.asarray(ok)


def window_ends(ok: np.ndarray, window: int, stride: int = 1) -> np.ndarray:
    """Indices t such that rows t-window+1..t are all `ok` (one asset's rows)."""
    if ok.size < window:
        return np.empty(0, np.int64)
    run = np.convolve(ok.astype(np.int64), np.ones(window, np.int64), mode="valid")
    ends = np.flatnonzero(run == window) + window - 1
    return ends[::stride]


def gather_windows(values: np.ndarray, ends: np.ndarray, window: int) -> np.ndarray:
    """(rows, S) values and window end indices -> (n, window, S) float32 copies."""
    idx = ends[:, None] + np.arange(-window + 1, 1)[None, :]
    return values[idx].astype(np.float32)


def all_windows(values: np.ndarray, window: int) -> np.ndarray:
    """Every window of one asset's rows, ending at rows window-1..n-1 (a strided view)."""
    if len(values) < window:
        return np.empty((0, window, values.shape[1]), values.dtype)
    v = np.lib.stride_tricks.sliding_window_view(values, window, axis=0)
    return np.moveaxis(v, -1, 1)
