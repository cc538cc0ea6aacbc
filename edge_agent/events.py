"""Anomaly events: a threshold with hysteresis and minimum durations turns scores into events.

An event opens after `min_duration_ticks` consecutive scores >= `open_threshold` (its start is
the first of them) and closes after `min_clear_ticks` consecutive scores < `close_threshold`
(its end is the first of those).  Rows where the machine is off (the class's off-condition)
or the score is NaN (warming up, all sensors missing) neither count nor reset the runs.
Sensor shares are averaged over the event's ticks, weighted by score, to name the sensors
to blame.  Only rows of assets that are quiet (no pending or open event) are "normal" and
may be learned from.

Per asset (from its alert rule, see `edge_agent/rules.py`, plus the feedback adaptation) the
open threshold, the minimum duration, a critical level, a cooldown and an escalation delay
can differ.  An event that closed less than `cooldown` before a new one would open re-opens
instead (same id, transition "reopen"), so a flapping machine is one event, not many.  An
open event escalates (transition "escalate") when its score reaches the critical level or
when it has lasted `escalate_after`.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

import numpy as np

NORMAL, PENDING, OPEN, CLOSING = 0, 1, 2, 3
SEVERITY_RANK = {"warning": 1, "critical": 2}


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
    severity: str = "warning"  # warning | critical
    reopened: int = 0
    label: str | None = None

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
            "severity": self.severity,
            "reopened": self.reopened,
            "label": self.label,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Event:
        return cls(
            id=d["id"], asset=d["asset"], asset_class=d["asset_class"],
            start_ns=int(d["start_ns"]),
            end_ns=None if d.get("end_ns") is None else int(d["end_ns"]),
            peak_score=float(d.get("peak_score", 0.0)), peak_ns=int(d.get("peak_ns", 0)),
            top_sensors=[(t["sensor"], float(t["share"])) for t in d.get("top_sensors", [])],
            scores_at_peak=dict(d.get("scores_at_peak", {})),
            model_version=d.get("model_version", "river-online"), state=d.get("state", "open"),
            severity=d.get("severity", "warning"), reopened=int(d.get("reopened", 0)),
            label=d.get("label"),
        )


@dataclass(slots=True)
class Transition:
    kind: str  # "open" | "reopen" | "escalate" | "close"
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
        n = len(self.ids)
        # per asset: the rule's threshold (base) plus the feedback adaptation (offset)
        self.base_thr = np.full(n, float(open_threshold))
        self.offset = np.zeros(n)
        self.open_thr = self.base_thr.copy()
        self.crit_thr = np.full(n, np.inf)
        self.close_thr = close_threshold
        self.min_dur = np.full(n, int(min_duration_ticks), np.int64)
        self.min_clear = min_clear_ticks
        self.cooldown_ns = np.zeros(n, np.int64)
        self.escalate_ns = np.zeros(n, np.int64)  # 0 = never by duration
        self.top_n = top_n
        self.last_closed: dict[int, Event] = {}
        self.state = np.zeros(n, np.int8)
        self.run = np.zeros(n, np.int64)  # length of the current above/below run
        self.run_start = np.zeros(n, np.int64)
        self.share_acc = np.zeros((n, len(sensors)))
        self.weight_acc = np.zeros(n)
        self.open_events: dict[int, Event] = {}
        self.model_version = "river-online"

    def configure(self, a: int, open_threshold: float, critical: float, min_duration_ticks: int,
                  cooldown_s: float, escalate_after_s: float | None) -> None:
        """Apply one asset's alert rule."""
        self.base_thr[a] = open_threshold
        self.open_thr[a] = open_threshold + self.offset[a]
        self.crit_thr[a] = critical
        self.min_dur[a] = min_duration_ticks
        self.cooldown_ns[a] = round(cooldown_s * 1e9)
        self.escalate_ns[a] = 0 if escalate_after_s is None else round(escalate_after_s * 1e9)

    def set_offset(self, a: int, offset: float) -> None:
        """The feedback adaptation's raise of this asset's open threshold."""
        self.offset[a] = offset
        self.open_thr[a] = self.base_thr[a] + offset

    def restore(self, events: list[Event]) -> None:
        """Events from the store after a restart: open ones stay open with the same id; the
        newest closed one per asset still counts for the cooldown."""
        index = {a: i for i, a in enumerate(self.ids)}
        for ev in sorted(events, key=lambda e: e.start_ns):
            a = index.get(ev.asset)
            if a is None:
                continue
            if ev.end_ns is None:
                self.open_events[a] = ev
                self.state[a], self.run[a] = OPEN, 0
                self.share_acc[a] = 0.0
                self.weight_acc[a] = 0.0
                for s, w in ev.top_sensors:  # keep the blame until new rows add to it
                    if s in self.sensors:
                        self.share_acc[a, self.sensors.index(s)] = w
                self.weight_acc[a] = 1.0 if ev.top_sensors else 0.0
            else:
                self.last_closed[a] = ev

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
        with np.errstate(invalid="ignore"):
            above = score >= self.open_thr[asset]
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
            # a restored event has no verdict until the detector has re-learned: learn meanwhile
            quiet = self.state[a] == NORMAL or (np.isnan(s) and a in self.open_events)
            normal[i] = quiet and not off[i] and not s >= self.open_thr[a]
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
        thr = self.open_thr[a]
        if st == NORMAL:
            if s >= thr:
                self.state[a], self.run[a], self.run_start[a] = PENDING, 1, ts
                self.share_acc[a] = 0.0
                self.weight_acc[a] = 0.0
                self._accumulate(a, s, sh)
                if self.min_dur[a] <= 1:
                    return self._open(a, ts, s, detail)
            return None
        if st == PENDING:
            if s >= thr:
                self.run[a] += 1
                self._accumulate(a, s, sh)
                if self.run[a] >= self.min_dur[a]:
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
            if ev.severity != "critical" and (s >= self.crit_thr[a] or (
                    self.escalate_ns[a] > 0 and ts - ev.start_ns >= self.escalate_ns[a])):
                ev.severity = "critical"
                return Transition("escalate", ev)
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
            self.last_closed[a] = ev
            self.state[a], self.run[a] = NORMAL, 0
            return Transition("close", ev)
        return None

    def _open(self, a: int, ts: int, s: float, detail: dict[str, float]) -> Transition:
        severity = "critical" if s >= self.crit_thr[a] else "warning"
        prev = self.last_closed.get(a)
        if prev is not None and prev.end_ns is not None and \
                self.run_start[a] - prev.end_ns <= self.cooldown_ns[a]:
            # within the cooldown: the same event again, not a new one (no flapping)
            del self.last_closed[a]
            prev.end_ns, prev.state, prev.reopened = None, "open", prev.reopened + 1
            if s > prev.peak_score:
                prev.peak_score, prev.peak_ns, prev.scores_at_peak = s, ts, dict(detail)
            prev.top_sensors = self._top(a) or prev.top_sensors
            if SEVERITY_RANK[severity] > SEVERITY_RANK[prev.severity]:
                prev.severity = severity
            self.state[a] = OPEN
            self.run[a] = 0
            self.open_events[a] = prev
            return Transition("reopen", prev)
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
            severity=severity,
        )
        self.state[a] = OPEN
        self.run[a] = 0
        self.open_events[a] = ev
        return Transition("open", ev)
