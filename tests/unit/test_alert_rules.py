"""Alert rules, cooldown re-open, escalation, restore, suppression, the store's audit log."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import pytest

from edge_agent.assets import AssetRegistry
from edge_agent.desk import DeskError, EventDesk
from edge_agent.events import Event, EventTracker
from edge_agent.metrics import AgentMetrics
from edge_agent.pipeline import Pipeline
from edge_agent.rules import Suppression, Window, parse_time_ns, resolve_rule
from edge_agent.sinks.channels import sign, webhook_body
from edge_agent.store import Store
from tests.helpers import agent_config

S = 10**9


def feed(tr: EventTracker, scores: list[float], asset: int = 0, t0: int = 0) -> list[str]:
    n = len(scores)
    out, _ = tr.step(np.full(n, asset, np.int32), t0 + np.arange(n, dtype=np.int64) * S,
                     np.array(scores, float), np.tile([0.2, 0.8], (n, 1)), np.zeros(n, bool))
    return [t.kind for t in out]


def tracker() -> EventTracker:
    tr = EventTracker(["p1", "p2"], "cls", ("a", "b"), 4.0, 2.0, 2, 2)
    tr.configure(0, 4.0, 7.0, 2, cooldown_s=30, escalate_after_s=None)
    tr.configure(1, 5.0, 9.0, 3, cooldown_s=0, escalate_after_s=5)
    return tr


def test_per_asset_threshold_and_min_duration() -> None:
    tr = tracker()
    assert feed(tr, [4.5, 4.5], asset=0) == ["open"]
    assert feed(tr, [4.5, 4.5, 4.5], asset=1) == []  # p2 opens only at 5, after 3 rows
    assert feed(tr, [5, 5, 5], asset=1, t0=10 * S) == ["open"]


def test_reopen_within_cooldown_keeps_the_id_and_after_it_is_new() -> None:
    tr = tracker()
    feed(tr, [5, 5, 1, 1])  # open, then closed at t=2 s
    first = tr.last_closed[0]
    assert feed(tr, [5, 5], t0=20 * S) == ["reopen"]  # 18 s later < 30 s cooldown
    assert tr.open_events[0] is first and first.reopened == 1 and first.end_ns is None
    feed(tr, [1, 1], t0=30 * S)
    assert feed(tr, [5, 5], t0=100 * S) == ["open"]
    assert tr.open_events[0].id != first.id


def test_escalation_when_worse_and_when_long() -> None:
    tr = tracker()
    assert feed(tr, [5, 5, 6, 8, 9]) == ["open", "escalate"]
    assert tr.open_events[0].severity == "critical"
    # p2: critical at 9, but escalates after 5 s open without getting worse
    assert feed(tr, [6, 6, 6, 6, 6, 6, 6, 6, 6], asset=1) == ["open", "escalate"]
    # opening straight at a critical score opens as critical
    tr2 = tracker()
    feed(tr2, [8, 8])
    assert tr2.open_events[0].severity == "critical"


def test_restore_keeps_open_event_and_learns_while_not_scoring() -> None:
    tr = tracker()
    ev = Event("abc", "p1", "cls", 5 * S, top_sensors=[("b", 0.9)])
    tr.restore([ev])
    assert tr.open_events[0] is ev
    # NaN scores (detector re-learning after the restart): rows are learned, event stays open
    _, normal = tr.step(np.zeros(3, np.int32), np.arange(3) * S, np.full(3, np.nan),
                        np.full((3, 2), np.nan), np.zeros(3, bool))
    assert normal.all() and 0 in tr.open_events
    assert feed(tr, [5, 1, 1], t0=10 * S) == ["close"]
    assert ev.end_ns == 11 * S and ev.id == "abc"


def test_rules_first_match_by_asset_or_class_glob() -> None:
    cfg = agent_config(1883, None, "x", alerts={"rules": [
        {"name": "critical-pumps", "assets": ["pump-1"], "warning": 3.5, "critical": 6,
         "min_duration_ticks": 3, "cooldown_s": 60},
        {"name": "all-pumps", "classes": ["centrifugal_*"], "critical": 8},
    ]})
    r1 = resolve_rule(cfg, "pump-1", "centrifugal_pump")
    r2 = resolve_rule(cfg, "pump-2", "centrifugal_pump")
    assert (r1.name, r1.warning, r1.critical, r1.min_duration_ticks) == ("critical-pumps", 3.5,
                                                                        6, 3)
    assert (r2.name, r2.warning, r2.min_duration_ticks) == ("all-pumps", 4.0, 10)


def test_maintenance_windows_one_off_and_weekly_over_midnight() -> None:
    w = Window(("pump-*",), "x", parse_time_ns("2026-01-05T10:00:00Z"),
               parse_time_ns("2026-01-05T12:00:00Z"))
    assert w.active("pump-1", parse_time_ns("2026-01-05T11:00:00Z"))
    assert not w.active("fan-1", parse_time_ns("2026-01-05T11:00:00Z"))
    assert not w.active("pump-1", parse_time_ns("2026-01-05T12:00:00Z"))
    # Saturday 22:00 - 06:00: Sunday 03:00 is inside, Sunday 22:30 is not
    wk = Window(("*",), "x", days=(5,), day_start_min=22 * 60, day_end_min=6 * 60)
    assert wk.active("a", parse_time_ns("2026-01-10T23:00:00Z"))  # Saturday
    assert wk.active("a", parse_time_ns("2026-01-11T03:00:00Z"))  # Sunday
    assert not wk.active("a", parse_time_ns("2026-01-11T22:30:00Z"))


def test_suppression_mask_lost_source_all_nan_and_maintenance() -> None:
    sup = Suppression([Window(("p2",), "x", 0, 10 * S)])
    vals = np.ones((4, 2))
    vals[3] = np.nan
    asset = np.array([0, 1, 1, 0])
    ts = np.array([1, 1, 20, 1]) * S
    assert sup.mask(["p1", "p2"], asset, ts, vals).tolist() == [False, True, False, True]
    sup.source_lost(["p1"])
    assert sup.mask(["p1", "p2"], asset, ts, vals).tolist() == [True, True, False, True]
    sup.source_recovered(["p1"])
    assert not sup.mask(["p1", "p2"], asset, ts, vals)[0]


def test_audit_log_is_append_only(tmp_path: Path) -> None:
    st = Store(tmp_path)
    st.audit("alice", "label", "ev1", {"label": "false_alarm"})
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        st.db.execute("UPDATE audit SET who='mallory'")
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        st.db.execute("DELETE FROM audit")
    assert st.audit_entries()[0]["who"] == "alice"
    assert (tmp_path / "audit.jsonl").read_text().count("\n") == 1


def test_desk_rejects_bad_labels_and_leaves_state_alone(tmp_path: Path) -> None:
    cfg = agent_config(1883, None, "x", feedback={"max_note_chars": 20})
    reg = AssetRegistry(cfg.asset_list())
    desk = EventDesk(cfg, Pipeline.from_config(cfg, reg), reg, AgentMetrics(), Store(tmp_path))
    ev = Event("e1", "pump-1", "centrifugal_pump", 1)
    desk.store.save_event(ev)
    cases = [("nope", "false_alarm", None, 404), ("e1", "broken", None, 400),
             ("e1", "false_alarm", "x" * 21, 413)]
    for eid, label, note, status in cases:
        with pytest.raises(DeskError) as err:
            desk.label(eid, label, note, who="t")
        assert err.value.status == status
    with pytest.raises(DeskError):
        desk.label("e1", "false_alarm", fault_code="bad code with spaces", who="t")
    assert desk.store.audit_entries() == [] and desk.offset("pump-1") == 0
    out = desk.label("e1", "false_alarm", "ok", "V-12", who="t")
    assert out["label"] == "false_alarm" and out["threshold_change"]["to"] == 4.5
    assert desk.where["pump-1"][0].open_thr[0] == 4.5


def test_webhook_signature_and_chat_bodies() -> None:
    doc = {"kind": "open", "id": "e1", "asset": "pump-1", "severity": "critical",
           "peak_score": 9.5, "top_sensors": [{"sensor": "bearing_temp_c", "share": 0.6}],
           "start": "2026-01-01T00:00:00Z"}
    url, body = webhook_body("gearwatch", "http://h/x", doc)
    import hashlib
    import hmac

    assert sign("s3cret", body) == "sha256=" + hmac.new(b"s3cret", body, hashlib.sha256).hexdigest()
    _, slack = webhook_body("slack", "https://hooks.slack.com/services/T/B/X", doc)
    assert b"CRITICAL" in slack and b"bearing_temp_c 60%" in slack
    url, ntfy = webhook_body("ntfy", "https://ntfy.example/plant-alerts", doc)
    assert url == "https://ntfy.example/" and b'"topic":"plant-alerts"' in ntfy
