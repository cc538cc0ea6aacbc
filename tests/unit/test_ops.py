"""Operations helpers: status.json round trip and staleness, JSON log context, the retrain gate."""

from __future__ import annotations

import io
import logging
import os
import time
from pathlib import Path

import orjson

from edge_agent.logs import JsonFormatter
from edge_agent.status import format_status, read_status, staleness, write_status
from gearwatch.retrain_gate import decide, main


def _doc(written_at: float, pid: int | None = None) -> dict[str, object]:
    return {
        "pid": pid or os.getpid(), "host": os.uname().nodename, "site": "plant1",
        "started_at": written_at - 600, "written_at": written_at, "interval_s": 5.0,
        "sources": [{"name": "mqtt", "state": "lost", "detail": "broker:1883"}],
        "sinks": [{"name": "influx_v1", "state": "ok", "backlog_points": 3,
                   "points_written": 1200}],
        "models": [{"asset_class": "centrifugal_pump", "scorer": "mahalanobis",
                    "version": "river-online"}],
        "assets": [{"id": "pump-1", "class": "centrifugal_pump",
                    "last_sample_at": written_at - 30, "open_event": "ev1"}],
        "open_events": [{"id": "ev1", "asset": "pump-1", "peak_score": 9.5,
                         "top_sensors": [{"sensor": "vibration_x_mm_s", "share": 0.6}]}],
        "counters": {"samples": 10, "rows": 5, "events_opened": 1},
    }


def test_status_round_trip_and_format(tmp_path: Path) -> None:
    now = time.time()
    p = tmp_path / "state" / "status.json"
    write_status(p, _doc(now))
    assert [f.name for f in p.parent.iterdir()] == ["status.json"]  # no temp file left
    doc = read_status(p)
    assert staleness(doc, now + 1)[1] is None
    out = format_status(doc, now + 1)
    assert "mqtt" in out and "lost" in out and "broker:1883" in out
    assert "pump-1" in out and "last sample 31 s ago  EVENT ev1" in out
    assert "ev1  pump-1  peak 9.5  top: vibration_x_mm_s 60%" in out
    assert "counters: samples 10, rows 5, events_opened 1" in out


def test_status_is_stale_when_old_or_writer_gone() -> None:
    now = time.time()
    age, why = staleness(_doc(now - 60), now)
    assert why is not None and "not updated for 60 s" in why and age >= 60
    assert "STALE" in format_status(_doc(now - 60), now)
    # a pid that cannot exist on this host
    _, why = staleness(_doc(now, pid=2**22 + 12345), now)
    assert why is not None and "is not running" in why


def test_json_logs_carry_context() -> None:
    buf = io.StringIO()
    h = logging.StreamHandler(buf)
    h.setFormatter(JsonFormatter())
    log = logging.getLogger("gearwatch.test.ops")
    log.addHandler(h)
    log.propagate = False
    try:
        log.warning("event %s open on %s", "ev1", "pump-2",
                    extra={"asset": "pump-2", "event_id": "ev1"})
        log.warning("bad input", extra={"source": "mqtt"})
    finally:
        log.removeHandler(h)
    lines = buf.getvalue().splitlines()
    assert len(lines) == 2
    a, b = (orjson.loads(x) for x in lines)
    assert a["msg"] == "event ev1 open on pump-2" and a["asset"] == "pump-2"
    assert a["event_id"] == "ev1" and a["level"] == "WARNING"
    assert b["source"] == "mqtt" and "asset" not in b


def _metrics(found: int, labelled: int, false_events: int, f1: float | None) -> dict[str, object]:
    return {"overall": {"f1": f1, "events": {"labelled_events": labelled, "found": found,
                                             "false_events": false_events}}}


def test_retrain_gate() -> None:
    assert decide(_metrics(2, 3, 1, 0.7), None).publish
    assert decide(_metrics(3, 3, 1, 0.8), _metrics(2, 3, 1, 0.7)).publish
    assert decide(_metrics(2, 3, 0, 0.7), _metrics(2, 3, 1, 0.7)).publish  # equal: not worse
    v = decide(_metrics(1, 3, 0, 0.9), _metrics(2, 3, 1, 0.7))
    assert not v.publish and "misses labelled events" in v.reason
    assert not decide(_metrics(2, 3, 1, 0.6), _metrics(2, 3, 1, 0.7)).publish
    assert decide(_metrics(2, 3, 1, 0.66), _metrics(2, 3, 1, 0.7), tolerance=0.05).publish
    # nothing labelled: judged on false events
    assert not decide(_metrics(0, 0, 4, None), _metrics(0, 0, 2, None)).publish
    assert decide(_metrics(0, 0, 2, None), _metrics(0, 0, 2, None)).publish


def test_retrain_gate_cli(tmp_path: Path, capsys: object) -> None:
    c, r = tmp_path / "c.json", tmp_path / "r.json"
    c.write_bytes(orjson.dumps(_metrics(1, 2, 0, 0.5)))
    r.write_bytes(orjson.dumps(_metrics(2, 2, 0, 0.9)))
    assert main([str(c), "--running", str(r)]) == 1
    assert main([str(r), "--running", str(c)]) == 0
    assert main([str(c)]) == 0
    (tmp_path / "bad.json").write_text("{}")
    assert main([str(tmp_path / "bad.json")]) == 2
