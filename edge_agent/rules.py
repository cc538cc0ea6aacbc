"""Alert rules and suppression: which thresholds apply to an asset, and when it must stay quiet.

Rules are resolved once per asset into arrays the event tracker indexes (first matching rule
wins, globs on asset id or class).  Suppression covers planned work (maintenance windows from
the config or set at runtime) and lost sources (the source says so, or a row is all NaN):
suppressed rows are treated like "machine off": they neither count towards an event nor are
learned from, so nothing alerts while a machine is under planned work or blind.
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import threading
from dataclasses import dataclass

import numpy as np

from edge_agent.config import AgentConfig, AlertRuleConfig, MaintenanceConfig

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def parse_time_ns(text: str) -> int:
    """RFC 3339 / ISO 8601 (a time without zone is UTC) -> ns since the epoch."""
    t = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    if t.tzinfo is None:
        t = t.replace(tzinfo=dt.UTC)
    return round(t.timestamp() * 1e9)


def _hhmm(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


def matches(globs: list[str], value: str) -> bool:
    return any(fnmatch.fnmatchcase(value, g) for g in globs)


@dataclass(frozen=True, slots=True)
class ResolvedRule:
    name: str
    warning: float
    critical: float
    min_duration_ticks: int
    cooldown_s: float
    escalate_after_s: float | None


def resolve_rule(cfg: AgentConfig, asset_id: str, asset_class: str) -> ResolvedRule:
    """The first rule naming this asset (by id or class glob); the [events] defaults otherwise."""
    ev = cfg.events
    rule = AlertRuleConfig(name="default")
    for r in cfg.alerts.rules:
        if (not r.assets and not r.classes) or matches(r.assets, asset_id) or \
                matches(r.classes, asset_class):
            rule = r
            break
    warning = ev.open_threshold if rule.warning is None else rule.warning
    critical = float("inf") if rule.critical is None else max(rule.critical, warning)
    return ResolvedRule(
        rule.name, warning, critical,
        ev.min_duration_ticks if rule.min_duration_ticks is None else rule.min_duration_ticks,
        rule.cooldown_s, rule.escalate_after_s,
    )


@dataclass(frozen=True, slots=True)
class Window:
    """One maintenance window; `id` is None for windows from the config file."""

    assets: tuple[str, ...]
    reason: str
    start_ns: int | None = None
    end_ns: int | None = None
    days: tuple[int, ...] = ()
    day_start_min: int = 0
    day_end_min: int = 0
    id: int | None = None
    created_by: str = "config"

    @classmethod
    def from_config(cls, m: MaintenanceConfig) -> Window:
        if m.weekly is not None:
            h1, m1 = (int(x) for x in m.weekly.start.split(":"))
            h2, m2 = (int(x) for x in m.weekly.end.split(":"))
            return cls(tuple(m.assets), m.reason, days=tuple(DAYS.index(d) for d in m.weekly.days),
                       day_start_min=h1 * 60 + m1, day_end_min=h2 * 60 + m2)
        assert m.start is not None and m.end is not None
        return cls(tuple(m.assets), m.reason, parse_time_ns(m.start), parse_time_ns(m.end))

    def active(self, asset_id: str, t_ns: int) -> bool:
        if not matches(list(self.assets), asset_id):
            return False
        if self.start_ns is not None and self.end_ns is not None:
            return self.start_ns <= t_ns < self.end_ns
        t = dt.datetime.fromtimestamp(t_ns / 1e9, dt.UTC)
        minute = t.hour * 60 + t.minute
        if self.day_start_min <= self.day_end_min:
            return t.weekday() in self.days and self.day_start_min <= minute < self.day_end_min
        # a window over midnight (e.g. sat 22:00 - 06:00) belongs to the day it starts on
        yesterday = (t.weekday() - 1) % 7
        return (t.weekday() in self.days and minute >= self.day_start_min) or (
            yesterday in self.days and minute < self.day_end_min)

    def to_dict(self) -> dict[str, object]:
        d: dict[str, object] = {"id": self.id, "assets": list(self.assets), "reason": self.reason,
                                "created_by": self.created_by}
        if self.start_ns is not None:
            d.update(start_ns=self.start_ns, end_ns=self.end_ns)
        else:
            d.update(weekly={"days": [DAYS[i] for i in self.days],
                             "start": _hhmm(self.day_start_min), "end": _hhmm(self.day_end_min)})
        return d


class Suppression:
    """Maintenance windows and lost sources; thread-safe (sources call from their threads)."""

    def __init__(self, windows: list[Window] | None = None) -> None:
        self._lock = threading.Lock()
        self.windows: list[Window] = list(windows or [])
        self.lost: set[str] = set()

    def set_windows(self, windows: list[Window]) -> None:
        with self._lock:
            self.windows = list(windows)

    def source_lost(self, asset_ids: list[str]) -> None:
        """A source lost these assets (a Modbus device stopped answering, a port closed)."""
        with self._lock:
            self.lost |= set(asset_ids)

    def source_recovered(self, asset_ids: list[str]) -> None:
        with self._lock:
            self.lost -= set(asset_ids)

    def in_maintenance(self, asset_id: str, t_ns: int) -> bool:
        with self._lock:
            return any(w.active(asset_id, t_ns) for w in self.windows)

    def mask(self, ids: list[str], asset: np.ndarray, ts_ns: np.ndarray,
             values: np.ndarray) -> np.ndarray:
        """Rows to suppress: the asset's source is lost, it is in maintenance, or all NaN."""
        out = np.isnan(values).all(axis=1)
        with self._lock:
            lost, windows = set(self.lost), list(self.windows)
        if not lost and not windows:
            return out
        local_lost = {i for i, a in enumerate(ids) if a in lost}
        for k in range(len(asset)):
            a = int(asset[k])
            if a in local_lost or any(w.active(ids[a], int(ts_ns[k])) for w in windows):
                out[k] = True
        return out
