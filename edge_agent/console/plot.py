"""The event plot: the event's top sensors and the score around it, as a PNG (matplotlib Agg)."""

from __future__ import annotations

import datetime as dt
import io
from typing import Any

import matplotlib.dates as mdates
import numpy as np
from matplotlib.figure import Figure


def event_plot(doc: dict[str, Any], sensors: tuple[str, ...], ts: np.ndarray,
               values: np.ndarray, score: np.ndarray, open_thr: float,
               close_thr: float) -> bytes:
    top = [t["sensor"] for t in doc.get("top_sensors", [])][:3] or list(sensors[:3])
    # Figure, not pyplot: no global state, so plots can render in worker threads
    fig = Figure(figsize=(9, 1.6 * (len(top) + 1) + 0.6), dpi=90)
    axes = fig.subplots(len(top) + 1, 1, sharex=True, squeeze=False)[:, 0]
    times = [dt.datetime.fromtimestamp(t / 1e9, dt.UTC) for t in ts.tolist()]
    start = dt.datetime.fromtimestamp(doc["start_ns"] / 1e9, dt.UTC)
    end = None if doc.get("end_ns") is None else dt.datetime.fromtimestamp(
        doc["end_ns"] / 1e9, dt.UTC)
    for ax, name in zip(axes[:-1], top, strict=True):
        col = sensors.index(name) if name in sensors else None
        if col is not None and len(times):
            ax.plot(times, values[:, col], lw=1.0, color="#1f5fa8")
        ax.set_ylabel(name, rotation=0, ha="right", va="center", fontsize=8)
    ax = axes[-1]
    if len(times):
        ax.plot(times, score, lw=1.0, color="#b03a2e")
    ax.axhline(open_thr, ls="--", lw=0.8, color="#b03a2e")
    ax.axhline(close_thr, ls=":", lw=0.8, color="#777")
    ax.set_ylabel("score", rotation=0, ha="right", va="center", fontsize=8)
    for a in axes:
        a.axvspan(start, end or (times[-1] if times else start), color="#f5b7b1", alpha=0.35)
        a.tick_params(labelsize=7)
        a.grid(alpha=0.3)
    ax.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M", tz=dt.UTC))
    if not len(times):
        ax.text(0.5, 0.5, "no recent rows in memory for this event", transform=ax.transAxes,
                ha="center")
    fig.suptitle(f"{doc['asset']}  event {doc['id'][:8]}  (UTC)", fontsize=9)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()
