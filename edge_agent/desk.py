"""The events desk: what happens to events after the tracker opens them.

It applies the alert rules to the trackers, persists every transition (so open events survive
a restart with their id), fans alerts out to the channels, keeps the recent rows the console
plots, takes operator labels (console, CLI, MQTT feedback), adapts thresholds on false alarms,
keeps runtime maintenance windows, and writes the audit log.  It runs on the agent's loop; the
only thing it does in the processing path is a small SQLite write per transition and a queue
put per channel.

Threshold adaptation (per asset, documented in the README):
  offset(t) = offset(t0) * 0.5 ** ((t - t0) / adapt_half_life_h)        (decays back to 0)
  false alarm:  offset = min(offset(now) + adapt_step, adapt_max)
  real fault:   offset = 0 (a confirmed fault says the raise must not hide the next one)
  open threshold = rule's warning level + offset; undo restores the value before a change.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from edge_agent.assets import AssetRegistry
from edge_agent.config import AgentConfig, MaintenanceConfig
from edge_agent.events import Event, EventTracker, Transition
from edge_agent.metrics import AgentMetrics
from edge_agent.pipeline import ClassOutput, Pipeline
from edge_agent.recent import RecentRows
from edge_agent.rules import ResolvedRule, Window, resolve_rule
from edge_agent.sinks import line_protocol as lp
from edge_agent.sinks.alerts import alert_doc
from edge_agent.sinks.channels import Alert, ChannelWorker
from edge_agent.store import LABELS, Store

log = logging.getLogger("gearwatch.events")

FAULT_CODE = re.compile(r"^[A-Za-z0-9_.:/-]{1,64}$")


class DeskError(Exception):
    """Bad input from an operator: `status` is the HTTP status the console answers with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class EventDesk:
    def __init__(self, cfg: AgentConfig, pipeline: Pipeline, registry: AssetRegistry,
                 metrics: AgentMetrics, store: Store,
                 influx_submit: Callable[[list[str]], None] | None = None) -> None:
        self.cfg = cfg
        self.pipeline = pipeline
        self.registry = registry
        self.metrics = metrics
        self.store = store
        self.influx_submit = influx_submit
        self.channels: list[ChannelWorker] = []
        # the model registry (signed bundles, versions, rollback) registers a provider here
        self.extra_models: list[Callable[[], list[dict[str, Any]]]] = []
        self.site = cfg.agent.site
        # asset id -> (class tracker, local index, recent rows, rule)
        self.where: dict[str, tuple[EventTracker, int]] = {}
        self.rules: dict[str, ResolvedRule] = {}
        self.recent: dict[str, RecentRows] = {}
        for name, cp in pipeline.classes.items():
            self.recent[name] = RecentRows(len(cp.members), cp.schema.n_sensors,
                                           cfg.console.recent_rows)
            for a, asset_id in enumerate(cp.events.ids):
                self.where[asset_id] = (cp.events, a)
                rule = resolve_rule(cfg, asset_id, name)
                self.rules[asset_id] = rule
                cp.events.configure(a, rule.warning, rule.critical, rule.min_duration_ticks,
                                    rule.cooldown_s, rule.escalate_after_s)
        self.config_windows = [Window.from_config(m) for m in cfg.maintenance]
        self.restore()

    # -- restart -----------------------------------------------------------------------------
    def restore(self) -> None:
        """Open events, cooldown state, threshold offsets and runtime windows from SQLite."""
        events = self.store.restorable()
        for cp in self.pipeline.classes.values():
            cp.events.restore([e for e in events if e.asset_class == cp.schema.asset_class])
        n_open = sum(e.end_ns is None for e in events)
        if n_open:
            log.warning("restored %d open event(s) from %s", n_open, self.store.path)
        self.metrics.events_open.set(n_open)
        self.refresh_offsets()
        self._apply_windows()

    def open_events(self) -> list[Event]:
        return [ev for cp in self.pipeline.classes.values()
                for ev in cp.events.open_events.values()]

    # -- the processing path --------------------------------------------------------------------
    def observe(self, out: ClassOutput) -> None:
        off = out.off if out.off is not None else np.zeros(len(out.rows), bool)
        self.recent[out.asset_class].add(out.rows.asset, out.rows.ts_ns, out.rows.values,
                                         out.fused, off)

    def on_transition(self, tr: Transition) -> None:
        ev = tr.event
        self.store.save_event(ev)
        alert = Alert(tr.kind, alert_doc(tr.kind, ev, self.site))
        for ch in self.channels:
            ch.offer(alert)

    # -- labels -------------------------------------------------------------------------------
    def label(self, event_id: str, label: str, note: str | None = None,
              fault_code: str | None = None, who: str = "unknown",
              via: str = "console") -> dict[str, Any]:
        """Validate, store, write to InfluxDB, adapt the threshold, audit.  Raises DeskError."""
        if not isinstance(event_id, str) or not event_id:
            raise DeskError(400, "event_id is required")
        if label not in LABELS:
            raise DeskError(400, f"label must be one of {list(LABELS)}, got {label!r:.40}")
        if note is not None and not isinstance(note, str):
            raise DeskError(400, "note must be a string")
        if note is not None and len(note) > self.cfg.feedback.max_note_chars:
            raise DeskError(413, f"note has {len(note)} characters; the limit is "
                                 f"{self.cfg.feedback.max_note_chars}")
        if fault_code is not None and (not isinstance(fault_code, str)
                                       or not FAULT_CODE.match(fault_code)):
            raise DeskError(400, "fault_code must be 1-64 letters, digits or _ . : / -")
        doc = self.store.get_event(event_id)
        if doc is None:
            raise DeskError(404, f"no event with id {event_id!r:.80}")
        self.store.set_label(event_id, label, note or None, fault_code, who, {
            "asset": doc["asset"], "label": label, "note": note, "fault_code": fault_code,
            "previous": doc.get("label"), "via": via})
        for ev in self.open_events():
            if ev.id == event_id:
                ev.label = label
        self.metrics.labels.labels(label, via).inc()
        if self.influx_submit is not None:
            self.influx_submit([lp.label_line(doc["asset"], doc["asset_class"], doc["start_ns"],
                                              event_id, label, note, fault_code, who)])
        change = self._adapt(doc["asset"], label, event_id, who)
        out = self.store.get_event(event_id) or doc
        out["threshold_change"] = change
        return out

    # -- threshold adaptation -------------------------------------------------------------------
    def _decayed(self, offset: float, since_ns: int, now_ns: int) -> float:
        hl = self.cfg.feedback.adapt_half_life_h * 3600e9
        return float(offset * 0.5 ** (max(now_ns - since_ns, 0) / hl))

    def offset(self, asset: str, now_ns: int | None = None) -> float:
        now = time.time_ns() if now_ns is None else now_ns
        off, since = self.store.offsets().get(asset, (0.0, now))
        return self._decayed(off, since, now)

    def _set_offset(self, asset: str, new: float, now_ns: int) -> None:
        self.store.set_offset(asset, new, now_ns)
        tracker, a = self.where[asset]
        tracker.set_offset(a, new)
        self.metrics.threshold_offset.labels(asset).set(new)

    def _adapt(self, asset: str, label: str, event_id: str, who: str,
               now_ns: int | None = None) -> dict[str, Any] | None:
        fb = self.cfg.feedback
        if not fb.adapt or asset not in self.where:
            return None
        now = time.time_ns() if now_ns is None else now_ns
        cur = self.offset(asset, now)
        if label == "false_alarm":
            new, why = min(cur + fb.adapt_step, fb.adapt_max), "false alarm"
        elif label == "real_fault" and cur > 0:
            new, why = 0.0, "real fault: the raise must not hide the next one"
        else:
            return None
        if abs(new - cur) < 1e-9:
            return None
        self._set_offset(asset, new, now)
        base = self.rules[asset].warning
        change = {"asset": asset, "from": round(base + cur, 4), "to": round(base + new, 4),
                  "offset_from": round(cur, 4), "offset_to": round(new, 4),
                  "reason": f"{why} on event {event_id}", "event_id": event_id}
        self.store.audit(who, "threshold_change", asset, change)
        log.warning("open threshold of %s %s -> %s (%s, by %s)", asset, change["from"],
                    change["to"], change["reason"], who)
        return change

    def undo_threshold(self, asset: str, who: str) -> dict[str, Any]:
        """Restore the offset from before the latest threshold change of this asset."""
        if asset not in self.where:
            raise DeskError(404, f"unknown asset {asset!r:.80}")
        for e in self.store.audit_entries(10_000):
            if e["subject"] == asset and e["action"] in ("threshold_change", "threshold_undo"):
                if e["action"] == "threshold_undo":
                    break  # one undo per change: undoing an undo is a new change
                now = time.time_ns()
                cur = self.offset(asset, now)
                back = float(e["detail"]["offset_from"])
                self._set_offset(asset, back, now)
                base = self.rules[asset].warning
                change = {"asset": asset, "from": round(base + cur, 4),
                          "to": round(base + back, 4), "offset_from": round(cur, 4),
                          "offset_to": round(back, 4), "reason": f"undo of audit #{e['seq']}"}
                self.store.audit(who, "threshold_undo", asset, change)
                return change
        raise DeskError(409, f"no threshold change of {asset} to undo")

    def refresh_offsets(self, now_ns: int | None = None) -> None:
        """Apply the decay (the agent calls this once a minute)."""
        now = time.time_ns() if now_ns is None else now_ns
        for asset, (off, since) in self.store.offsets().items():
            if asset in self.where:
                tracker, a = self.where[asset]
                cur = self._decayed(off, since, now)
                tracker.set_offset(a, cur)
                self.metrics.threshold_offset.labels(asset).set(cur)

    # -- maintenance windows ----------------------------------------------------------------------
    def _apply_windows(self) -> None:
        runtime = []
        for wid, doc, who in self.store.maintenance():
            w = Window.from_config(MaintenanceConfig.model_validate(doc))
            runtime.append(Window(w.assets, w.reason, w.start_ns, w.end_ns, w.days,
                                  w.day_start_min, w.day_end_min, wid, who))
        self.pipeline.suppression.set_windows(self.config_windows + runtime)

    def windows(self) -> list[dict[str, object]]:
        return [w.to_dict() for w in self.pipeline.suppression.windows]

    def add_window(self, doc: dict[str, Any], who: str) -> dict[str, object]:
        from pydantic import ValidationError

        from edge_agent.config import format_errors

        try:
            m = MaintenanceConfig.model_validate(doc)
        except ValidationError as e:
            raise DeskError(400, format_errors(e, MaintenanceConfig)) from None
        except ValueError as e:
            raise DeskError(400, str(e)) from None
        wid = self.store.add_maintenance(m.model_dump(exclude_none=True), who)
        self._apply_windows()
        self.store.audit(who, "maintenance_add", str(wid), m.model_dump(exclude_none=True))
        return {"id": wid, **m.model_dump(exclude_none=True)}

    def remove_window(self, wid: int, who: str) -> None:
        if not self.store.remove_maintenance(wid):
            raise DeskError(404, f"no runtime maintenance window {wid}")
        self._apply_windows()
        self.store.audit(who, "maintenance_remove", str(wid), {})

    # -- what the console shows -------------------------------------------------------------------
    def assets(self) -> list[dict[str, Any]]:
        out = []
        now = time.time_ns()
        supp = self.pipeline.suppression
        for asset_id, (tracker, a) in self.where.items():
            cls = tracker.asset_class
            ts, score, off = self.recent[cls].last(a)
            ev = tracker.open_events.get(a)
            if asset_id in supp.lost:
                state = "lost"
            elif ts is not None and supp.in_maintenance(asset_id, ts):
                state = "maintenance"
            elif ev is not None:
                state = ev.severity
            elif off:
                state = "off"
            elif ts is None or np.isnan(score):
                state = "learning"
            else:
                state = "normal"
            out.append({
                "id": asset_id, "asset_class": cls, "state": state,
                "score": None if np.isnan(score) else round(score, 2), "ts_ns": ts,
                "open_threshold": round(float(tracker.open_thr[a]), 3),
                "base_threshold": round(float(tracker.base_thr[a]), 3),
                "threshold_offset": round(self.offset(asset_id, now), 3),
                "critical": None if np.isinf(tracker.crit_thr[a])
                else round(float(tracker.crit_thr[a]), 3),
                "rule": self.rules[asset_id].name,
                "event_id": None if ev is None else ev.id,
            })
        return out

    def models(self) -> list[dict[str, Any]]:
        """Models in use, per class.  The model registry (signed bundles, versions, rollback)
        adds its entries through `extra_models` without touching the console."""
        out: list[dict[str, Any]] = []
        sc = self.cfg.scoring
        for name, cp in self.pipeline.classes.items():
            learned = getattr(cp.river, "n_learned", None)
            out.append({
                "asset_class": name, "kind": "online", "detector": sc.online_detector,
                "version": cp.events.model_version, "assets": len(cp.members),
                "metrics": {"warmup_rows": sc.warmup_rows, "calibration_rows": sc.calibration_rows,
                            "half_life_rows": sc.half_life_rows,
                            "rows_learned_min": None if learned is None
                            else int(np.min(learned))},
            })
        for provider in self.extra_models:
            out.extend(provider())
        return out
