"""The alarm rule shared by trainer evaluation and the agent: hysteresis plus minimum duration.

An event opens when the calibrated score reaches `open_at` and closes at the first sample
below `close_below` (hysteresis: one noisy sample around the threshold does not flap).
Events shorter than `min_len` samples are dropped.  NaN scores (no window yet, machine off)
close an open event and never open one.
"""

from __future__ import annotations

import numpy as np


def hysteresis_events(
    score: np.ndarray, open_at: float = 4.0, close_below: float = 3.0, min_len: int = 1
) -> np.ndarray:
    """Events in one asset's score series as (n, 2) int64 [start, end) sample indices."""
    if close_below > open_at:
        raise ValueError("close_below must not exceed open_at")
    s = np.asarray(score, np.float64)
    with np.errstate(invalid="ignore"):
        high = s >= open_at
        low = ~(s >= close_below)  # NaN counts as low
    events: list[tuple[int, int]] = []
    # walk only the candidate boundaries: openings at `high`, closings at `low`
    opens = np.flatnonzero(high)
    lows = np.flatnonzero(low)
    i = 0
    while i < opens.size:
        start = int(opens[i])
        j = np.searchsorted(lows, start, side="right")
        end = int(lows[j]) if j < lows.size else s.size
        if end - start >= min_len:
            events.append((start, end))
        i = int(np.searchsorted(opens, end, side="left"))
    return np.asarray(events, np.int64).reshape(-1, 2)


def alarm_mask(events: np.ndarray, n: int) -> np.ndarray:
    """Boolean per sample: inside an event."""
    out = np.zeros(n, bool)
    for start, end in np.asarray(events).reshape(-1, 2):
        out[start:end] = True
    return out
