"""`status.json`: what the agent is doing now, for `gearwatch agent status` and diagnosis.

The running agent writes a small JSON document to its state directory every few seconds
(write to a temporary file, then an atomic rename, so a reader never sees half a file).
`gearwatch agent status` reads it, says when it is stale (the agent is stuck or gone), and
prints sources, sinks, models, assets, open events and counters.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

STATUS_FILE = "status.json"
SCHEMA_VERSION = 1


def status_path(state_dir: str | Path) -> Path:
    return Path(state_dir) / STATUS_FILE


def write_status(path: Path, doc: dict[str, Any]) -> None:
    """Atomically replace `path` with `doc` (same directory, so rename is atomic)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".status-", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(orjson.dumps(doc, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY))
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def read_status(path: Path) -> dict[str, Any]:
    doc = orjson.loads(path.read_bytes())
    if not isinstance(doc, dict):
        raise ValueError(f"{path} does not hold a status object")
    return doc


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user (the gearwatch service user)
        return True
    return True


def staleness(doc: dict[str, Any], now: float | None = None) -> tuple[float, str | None]:
    """(age in s, why it is stale or None).  Stale: older than 3 write intervals, or the
    process that wrote it is gone (checked only on this host)."""
    now = time.time() if now is None else now
    age = now - float(doc.get("written_at", 0.0))
    interval = float(doc.get("interval_s", 5.0))
    pid = doc.get("pid")
    if isinstance(pid, int) and doc.get("host") == os.uname().nodename and not _pid_alive(pid):
        return age, f"the agent (pid {pid}) is not running"
    if age > 3 * interval + 2:
        return age, f"not updated for {age:.0f} s (the agent writes it every {interval:g} s)"
    return age, None


def _ago(ts: float | None, now: float) -> str:
    if not ts:
        return "never"
    d = now - ts
    if d < 120:
        return f"{d:.0f} s ago"
    if d < 7200:
        return f"{d / 60:.0f} min ago"
    return f"{d / 3600:.1f} h ago"


def _mb(n: float) -> str:
    return f"{n / 1e6:.1f} MB"


def format_spool(sp: dict[str, Any]) -> str:
    """One line: depth, fill, age of the oldest undelivered point, the policy and its drops."""
    used, cap = float(sp.get("bytes", 0)), float(sp.get("max_bytes", 0)) or 1.0
    age = sp.get("oldest_age_s")
    state = "BLOCKED (not acknowledging)" if sp.get("blocked") else (
        "FULL" if sp.get("full") else "ok")
    dropped = sp.get("dropped_points") or {}
    drops = ", ".join(f"{k} {v}" for k, v in dropped.items()) or "none"
    return (f"spool: {state}, {sp.get('points', 0)} points waiting in {sp.get('segments', 0)} "
            f"segments, {_mb(used)} of {_mb(cap)} ({used / cap:.0%}), oldest "
            f"{'-' if age is None else f'{age:.0f} s'}; on_full {sp.get('on_full')}, "
            f"dropped: {drops} ({sp.get('dir')})")


def format_status(doc: dict[str, Any], now: float | None = None) -> str:
    now = time.time() if now is None else now
    age, stale = staleness(doc, now)
    out = []
    head = (f"gearwatch agent (site {doc.get('site')}, pid {doc.get('pid')}, "
            f"up {(now - float(doc.get('started_at', now))) / 60:.1f} min)")
    out.append(head)
    if stale:
        out.append(f"  STALE: {stale}; is the service running? "
                   "(systemctl status gearwatch-agent; journalctl -u gearwatch-agent)")
    else:
        out.append(f"  status written {age:.1f} s ago")
    out.append("sources:")
    for s in doc.get("sources", []):
        out.append(f"  {s['name']:<24} {s['state']:<10} {s.get('detail', '')}".rstrip())
    out.append("sinks:")
    for s in doc.get("sinks", []):
        out.append(f"  {s['name']:<24} {s['state']:<10} backlog {s.get('backlog_points', 0)} "
                   f"points, written {s.get('points_written', 0)}")
    if "spool" in doc:
        out.append(format_spool(doc["spool"]))
    out.append("models:")
    for m in doc.get("models", []):
        out.append(f"  {m['asset_class']:<24} {m['scorer']:<12} {m['version']}")
    out.append("assets:")
    for a in doc.get("assets", []):
        ev = f"  EVENT {a['open_event']}" if a.get("open_event") else ""
        out.append(f"  {a['id']:<24} {a['class']:<20} last sample "
                   f"{_ago(a.get('last_sample_at'), now)}{ev}")
    events = doc.get("open_events", [])
    out.append(f"open events: {len(events)}")
    for e in events:
        top = ", ".join(f"{t['sensor']} {t['share']:.0%}" for t in e.get("top_sensors", []))
        out.append(f"  {e['id']}  {e['asset']}  peak {e['peak_score']:.1f}  top: {top}")
    c = doc.get("counters", {})
    out.append("counters: " + ", ".join(f"{k} {v}" for k, v in c.items()))
    return "\n".join(out)
