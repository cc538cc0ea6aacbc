"""The agent's durable state in one SQLite file under `agent.state_dir`: events, labels,
threshold adaptation, runtime maintenance windows, alert dead letters, points InfluxDB
rejected as bad (`sink_dead_letter`), and the audit log.

SQLite because it is in the standard library, survives power cuts (WAL, synchronous=FULL),
and the CLI can read it while the agent runs.  Writes are rare (an event opening, a label),
so the processing loop writes synchronously; one lock serialises the agent's threads.  The
audit table has triggers that abort any UPDATE or DELETE: there is no path to rewrite it.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import orjson

from edge_agent.events import Event

LABELS = ("real_fault", "false_alarm", "planned_maintenance", "unknown")

SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    id TEXT PRIMARY KEY, asset TEXT NOT NULL, asset_class TEXT NOT NULL,
    start_ns INTEGER NOT NULL, end_ns INTEGER, state TEXT NOT NULL, severity TEXT NOT NULL,
    label TEXT, doc TEXT NOT NULL, updated_ns INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS events_start ON events (start_ns);
CREATE INDEX IF NOT EXISTS events_open ON events (end_ns) WHERE end_ns IS NULL;
CREATE TABLE IF NOT EXISTS labels (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, event_id TEXT NOT NULL REFERENCES events(id),
    label TEXT NOT NULL, note TEXT, fault_code TEXT, who TEXT NOT NULL, ts_ns INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS audit (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, ts_ns INTEGER NOT NULL, who TEXT NOT NULL,
    action TEXT NOT NULL, subject TEXT NOT NULL, detail TEXT NOT NULL);
CREATE TRIGGER IF NOT EXISTS audit_no_update BEFORE UPDATE ON audit
    BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_no_delete BEFORE DELETE ON audit
    BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TABLE IF NOT EXISTS adapt (
    asset TEXT PRIMARY KEY, offset REAL NOT NULL, updated_ns INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS maintenance (
    id INTEGER PRIMARY KEY AUTOINCREMENT, doc TEXT NOT NULL, created_by TEXT NOT NULL,
    created_ns INTEGER NOT NULL, removed_ns INTEGER);
CREATE TABLE IF NOT EXISTS dead_letter (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, channel TEXT NOT NULL, event_id TEXT NOT NULL,
    kind TEXT NOT NULL, payload BLOB NOT NULL, error TEXT NOT NULL, attempts INTEGER NOT NULL,
    created_ns INTEGER NOT NULL, resent_ns INTEGER);
CREATE TABLE IF NOT EXISTS sink_dead_letter (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, sink TEXT NOT NULL, line BLOB NOT NULL,
    error TEXT NOT NULL, created_ns INTEGER NOT NULL);
"""


def db_path(state_dir: str | Path) -> Path:
    return Path(state_dir) / "gearwatch.sqlite"


class Store:
    def __init__(self, state_dir: str | Path, readonly: bool = False) -> None:
        self.dir = Path(state_dir)
        self.path = db_path(state_dir)
        if readonly:
            if not self.path.exists():
                raise FileNotFoundError(f"no agent database at {self.path}")
            self.db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True,
                                      check_same_thread=False)
        else:
            self.dir.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(self.path, check_same_thread=False, timeout=30)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=FULL")
            self.db.executescript(SCHEMA)
        self.db.row_factory = sqlite3.Row
        self.lock = threading.RLock()
        self.audit_file = self.dir / "audit.jsonl"

    def close(self) -> None:
        with self.lock:
            self.db.close()

    # -- events -------------------------------------------------------------------------------
    def save_event(self, ev: Event) -> None:
        with self.lock, self.db:
            self.db.execute(
                "INSERT INTO events (id, asset, asset_class, start_ns, end_ns, state, severity,"
                " label, doc, updated_ns) VALUES (?,?,?,?,?,?,?,?,?,?) ON CONFLICT(id) DO UPDATE"
                " SET end_ns=excluded.end_ns, state=excluded.state, severity=excluded.severity,"
                " doc=excluded.doc, updated_ns=excluded.updated_ns",
                (ev.id, ev.asset, ev.asset_class, ev.start_ns, ev.end_ns, ev.state, ev.severity,
                 ev.label, orjson.dumps(ev.to_dict()).decode(), time.time_ns()),
            )

    def _event(self, row: sqlite3.Row) -> dict[str, Any]:
        d: dict[str, Any] = orjson.loads(row["doc"])
        d["label"] = row["label"]
        return d

    def get_event(self, event_id: str) -> dict[str, Any] | None:
        with self.lock:
            row = self.db.execute("SELECT * FROM events WHERE id=?", (event_id,)).fetchone()
            if row is None:
                return None
            d = self._event(row)
            d["labels"] = [dict(r) for r in self.db.execute(
                "SELECT label, note, fault_code, who, ts_ns FROM labels WHERE event_id=?"
                " ORDER BY seq", (event_id,))]
        return d

    def events(self, state: str | None = None, asset: str | None = None,
               limit: int = 100) -> list[dict[str, Any]]:
        """Newest first.  `state` = "open" or "closed"."""
        q, args = "SELECT * FROM events WHERE 1=1", list[object]()
        if state == "open":
            q += " AND end_ns IS NULL"
        elif state == "closed":
            q += " AND end_ns IS NOT NULL"
        if asset:
            q += " AND asset=?"
            args.append(asset)
        q += " ORDER BY start_ns DESC LIMIT ?"
        args.append(int(limit))
        with self.lock:
            return [self._event(r) for r in self.db.execute(q, args)]

    def restorable(self) -> list[Event]:
        """Open events, and the newest closed event of each asset (for the cooldown)."""
        with self.lock:
            rows = self.db.execute(
                "SELECT * FROM events WHERE end_ns IS NULL UNION SELECT * FROM events e WHERE"
                " end_ns = (SELECT MAX(end_ns) FROM events WHERE asset=e.asset)").fetchall()
        return [Event.from_dict(self._event(r)) for r in rows]

    def set_label(self, event_id: str, label: str, note: str | None, fault_code: str | None,
                  who: str, audit_detail: dict[str, Any]) -> dict[str, Any]:
        """Label and its audit entry in one transaction: nobody sees one without the other."""
        with self.lock:
            with self.db:
                self.db.execute("INSERT INTO labels (event_id, label, note, fault_code, who,"
                                " ts_ns) VALUES (?,?,?,?,?,?)",
                                (event_id, label, note, fault_code, who, time.time_ns()))
                self.db.execute("UPDATE events SET label=? WHERE id=?", (label, event_id))
                entry = self._insert_audit(who, "label", event_id, audit_detail)
            self._append_audit_file(entry)
        return entry

    def labelled(self) -> list[dict[str, Any]]:
        """Every labelled event with its latest label (the trainer's export)."""
        with self.lock:
            rows = self.db.execute(
                "SELECT e.*, l.fault_code, l.note FROM events e JOIN labels l ON l.seq ="
                " (SELECT MAX(seq) FROM labels WHERE event_id=e.id) ORDER BY e.start_ns")
            out = []
            for r in rows:
                d = self._event(r)
                d["fault_code"], d["note"] = r["fault_code"], r["note"]
                out.append(d)
            return out

    # -- audit ---------------------------------------------------------------------------------
    def audit(self, who: str, action: str, subject: str, detail: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            with self.db:
                entry = self._insert_audit(who, action, subject, detail)
            self._append_audit_file(entry)
        return entry

    def _insert_audit(self, who: str, action: str, subject: str,
                      detail: dict[str, Any]) -> dict[str, Any]:
        entry = {"ts_ns": time.time_ns(), "who": who, "action": action, "subject": subject,
                 "detail": detail}
        cur = self.db.execute(
            "INSERT INTO audit (ts_ns, who, action, subject, detail) VALUES (?,?,?,?,?)",
            (entry["ts_ns"], who, action, subject, orjson.dumps(detail).decode()))
        entry["seq"] = cur.lastrowid
        return entry

    def _append_audit_file(self, entry: dict[str, Any]) -> None:
        with self.audit_file.open("ab") as fh:
            fh.write(orjson.dumps(entry) + b"\n")

    def audit_entries(self, limit: int = 200) -> list[dict[str, Any]]:
        with self.lock:
            rows = self.db.execute("SELECT * FROM audit ORDER BY seq DESC LIMIT ?", (limit,))
            return [{**dict(r), "detail": orjson.loads(r["detail"])} for r in rows]

    # -- threshold adaptation ------------------------------------------------------------------
    def offsets(self) -> dict[str, tuple[float, int]]:
        with self.lock:
            return {r["asset"]: (r["offset"], r["updated_ns"])
                    for r in self.db.execute("SELECT * FROM adapt")}

    def set_offset(self, asset: str, offset: float, at_ns: int) -> None:
        with self.lock, self.db:
            self.db.execute("INSERT INTO adapt VALUES (?,?,?) ON CONFLICT(asset) DO UPDATE SET"
                            " offset=excluded.offset, updated_ns=excluded.updated_ns",
                            (asset, offset, at_ns))

    # -- runtime maintenance windows -----------------------------------------------------------
    def add_maintenance(self, doc: dict[str, Any], who: str) -> int:
        with self.lock, self.db:
            cur = self.db.execute("INSERT INTO maintenance (doc, created_by, created_ns)"
                                  " VALUES (?,?,?)", (orjson.dumps(doc).decode(), who,
                                                      time.time_ns()))
        assert cur.lastrowid is not None
        return cur.lastrowid

    def remove_maintenance(self, window_id: int) -> bool:
        with self.lock, self.db:
            cur = self.db.execute("UPDATE maintenance SET removed_ns=? WHERE id=? AND"
                                  " removed_ns IS NULL", (time.time_ns(), window_id))
        return cur.rowcount > 0

    def maintenance(self) -> list[tuple[int, dict[str, Any], str]]:
        with self.lock:
            return [(r["id"], orjson.loads(r["doc"]), r["created_by"]) for r in self.db.execute(
                "SELECT * FROM maintenance WHERE removed_ns IS NULL ORDER BY id")]

    # -- alert dead letters --------------------------------------------------------------------
    def dead_letter(self, channel: str, event_id: str, kind: str, payload: bytes, error: str,
                    attempts: int) -> None:
        with self.lock, self.db:
            self.db.execute("INSERT INTO dead_letter (channel, event_id, kind, payload, error,"
                            " attempts, created_ns) VALUES (?,?,?,?,?,?,?)",
                            (channel, event_id, kind, payload, error, attempts, time.time_ns()))

    def dead_letters(self, channel: str | None = None,
                     pending_only: bool = True) -> list[dict[str, Any]]:
        q, args = "SELECT * FROM dead_letter WHERE 1=1", []
        if pending_only:
            q += " AND resent_ns IS NULL"
        if channel:
            q += " AND channel=?"
            args.append(channel)
        with self.lock:
            return [dict(r) for r in self.db.execute(q + " ORDER BY seq", args)]

    def mark_resent(self, seq: int) -> None:
        with self.lock, self.db:
            self.db.execute("UPDATE dead_letter SET resent_ns=? WHERE seq=?",
                            (time.time_ns(), seq))

    # -- points a sink rejected as bad (InfluxDB 4xx) ------------------------------------------
    def sink_dead_letter(self, sink: str, line: bytes, error: str) -> None:
        with self.lock, self.db:
            self.db.execute("INSERT INTO sink_dead_letter (sink, line, error, created_ns)"
                            " VALUES (?,?,?,?)", (sink, line, error, time.time_ns()))

    def sink_dead_letters(self, limit: int = 1000) -> list[dict[str, Any]]:
        with self.lock:
            return [dict(r) for r in self.db.execute(
                "SELECT * FROM sink_dead_letter ORDER BY seq LIMIT ?", (limit,))]
