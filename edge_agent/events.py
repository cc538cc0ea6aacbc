"""Anomaly events: a threshold with hysteresis and minimum durations turns scores into events.

An event opens after `min_duration_ticks` consecutive scores >= `open_threshold` (its start is
the first of them) and closes after `min_clear_ticks` consecutive scores < `close_threshold`
(its end is the first of those).  Rows where the machine is off (the class's off-condition)
or the score is NaN (warming up, all sensors missing) neither count nor reset the runs.
Sensor shares are averaged over the event's ticks, weighted by score, to name the sensors
to blame.  Only rows of assets that are quiet (no pending or open event) are "normal" and
may be learned from.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

import numpy as np

NORMAL, PENDING, OPEN, CLOSING = 0, 1, 2, 3


@dataclass
class Event:
    id: str
    asset: str
    asset_class: str
    start_ns: int
    end_ns: int | None = None
    peak_score: float = 0.0
    peak_ns: int = 0
    top_sensors: list[tuple[str, float]] = field(default_factory=list)
    scores_at_peak: dict[str, float] = field(default_factory=dict)
    model_version: str = "river-online"
    state: str = "open"  # open | closed | acknowledged | labelled

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "asset": self.asset,
            "asset_class": self.asset_class,
            "start_ns": self.start_ns,
            "end_ns": self.end_ns,
            "peak_score": round(self.peak_score, 3),
            "peak_ns": self.peak_ns,
            "top_sensors": [{"sensor": s, "share": round(w, 3)} for s, w in self.top_sensors],
            "scores_at_peak": {k: round(v, 3) for k, v in self.scores_at_peak.items()},
            "model_version": self.model_version,
            "state": self.state,
        }


@dataclass(slots=True)
class Transition:
    kind: str  # "open" | "close"
    event: Event


class EventTracker:
    """Event state of all assets of one class."""

    def __init__(
        self,
        asset_ids: list[str],
        asset_class: str,
        sensors: tuple[str, ...],
        open_threshold: float = 4.0,
        close_threshold: float = 2.5,
        min_duration_ticks: int = 5,
        min_clear_ticks: int = 10,
        top_n: int = 3,
    ) -> None:
        self.ids = list(asset_ids)
        self.asset_class = asset_class
        self.sensors = sensors
        self.open_thr = open_threshold
        self.close_thr = close_threshold
        self.min_dur = min_duration_ticks
        self.min_clear = min_clear_ticks
        self.top_n = top_n
        n = len(self.ids)
        self.state = np.zeros(n, np.int8)
        self.run = np.zeros(n, np.int64)  # length of the current above/below run
        self.run_start = np.zeros(n, np.int64)
        self.share_acc = np.zeros((n, len(sensors)))
        self.weight_acc = np.zeros(n)
        self.open_events: dict[int, Event] = {}
        self.model_version = "river-online"

    def step(
        self,
        asset: np.ndarray,
        ts_ns: np.ndarray,
        score: np.ndarray,
        shares: np.ndarray,
        off: np.ndarray,
        detail: dict[str, np.ndarray] | None = None,
    ) -> tuple[list[Transition], np.ndarray]:
        """Advance with rows in time order; returns transitions and the rows' `normal` mask."""
        state_before = self.state[asset]
        above = score >= self.open_thr
        # fast path: assets that are quiet and stay below the open threshold in this batch
        busy_rows = (state_before != NORMAL) | (above & ~off)
        busy = np.isin(asset, np.unique(asset[busy_rows])) if busy_rows.any() else busy_rows
        normal = ~busy & ~off
        out: list[Transition] = []
        for i in np.flatnonzero(busy):
            a = int(asset[i])
            s = float(score[i])
            if not (off[i] or np.isnan(s)):
                t = self._row(a, int(ts_ns[i]), s, shares[i],
                              {k: float(v[i]) for k, v in (detail or {}).items()})
                if t is not None:
                    out.append(t)
            normal[i] = self.state[a] == NORMAL and not off[i] and not s >= self.open_thr
        return out, normal

    def _accumulate(self, a: int, s: float, sh: np.ndarray) -> None:
        if np.all(np.isnan(sh)):
            return
        w = max(s, 0.0)
        self.share_acc[a] += w * np.nan_to_num(sh)
        self.weight_acc[a] += w

    def _top(self, a: int) -> list[tuple[str, float]]:
        if self.weight_acc[a] <= 0:
            return []
        avg = self.share_acc[a] / self.weight_acc[a]
        order = np.argsort(-avg)[: self.top_n]
        return [(self.sensors[j], float(avg[j])) for j in order if avg[j] > 0]

    def _row(
        self, a: int, ts: int, s: float, sh: np.ndarray, detail: dict[str, float]
    ) -> Transition | None:
        st = self.state[a]
        if st == NORMAL:
            if s >= self.open_thr:
                self.state[a], self.run[a], self.run_start[a] = PENDING, 1, ts
                self.share_acc[a] = 0.0
                self.weight_acc[a] = 0.0
                self._accumulate(a, s, sh)
                if self.min_dur <= 1:
                    return self._open(a, ts, s, detail)
            return None
        if st == PENDING:
            if s >= self.open_thr:
                self.run[a] += 1
                self._accumulate(a, s, sh)
                if self.run[a] >= self.min_dur:
                    return self._open(a, ts, s, detail)
            else:
                self.state[a], self.run[a] = NORMAL, 0
            return None
        ev = self.open_events[a]
        if s > ev.peak_score:
            ev.peak_score, ev.peak_ns, ev.scores_at_peak = s, ts, dict(detail)
        if s >= self.close_thr:
            self._accumulate(a, s, sh)
            ev.top_sensors = self._top(a)
            if st == CLOSING:
                self.state[a], self.run[a] = OPEN, 0
            return None
        if st == OPEN:
            self.state[a], self.run[a], self.run_start[a] = CLOSING, 1, ts
        else:
            self.run[a] += 1
        if self.run[a] >= self.min_clear:
            ev.end_ns = int(self.run_start[a])
            ev.state = "closed"
            ev.top_sensors = self._top(a)
            del self.open_events[a]
            self.state[a], self.run[a] = NORMAL, 0
            return Transition("close", ev)
        return None

    def _open(self, a: int, ts: int, s: float, detail: dict[str, float]) -> Transition:
        ev = Event(
            id=str(uuid.uuid4()),
            asset=self.ids[a],
            asset_class=self.asset_class,
            start_ns=int(self.run_start[a]),
            peak_score=s,
            peak_ns=ts,
            top_sensors=self._top(a),
            scores_at_peak=dict(detail),
            model_version=self.model_version,
        )
        self.state[a] = OPEN
        self.run[a] = 0
        self.open_events[a] = ev
        return Transition("open", ev)
