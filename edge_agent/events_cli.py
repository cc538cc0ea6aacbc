"""`gearwatch events list|show|label|export|resend` and `gearwatch console hash-token|maintenance`.

Reading (list, show, export) opens the agent's SQLite database read-only, so it works while the
agent runs and when it is down.  Changing (label, maintenance, resend) goes through the
console API with a token, so the running agent applies it at once (threshold adaptation,
audit, InfluxDB); `label --offline` writes the database directly when the agent is down.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import secrets
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from edge_agent.config import AgentConfig, ConfigError, load_config

DEFAULT_CONFIG = "/etc/gearwatch/gearwatch.toml"


def _cfg(args: argparse.Namespace) -> AgentConfig:
    return load_config(args.config)


def _state_dir(args: argparse.Namespace) -> str:
    return str(args.state_dir) if args.state_dir else _cfg(args).agent.state_dir


def _url(args: argparse.Namespace) -> str:
    if args.url:
        return str(args.url).rstrip("/")
    c = _cfg(args).console
    host = "127.0.0.1" if c.bind in ("0.0.0.0", "::", "") else c.bind
    return f"http://{host}:{c.port}"


def _token(args: argparse.Namespace) -> str:
    tok = args.token or os.environ.get("GEARWATCH_TOKEN")
    if not tok:
        raise SystemExit("this needs a console token: --token or GEARWATCH_TOKEN")
    return str(tok)


def _call(args: argparse.Namespace, method: str, path: str,
          body: dict[str, Any] | None = None) -> Any:
    try:
        r = httpx.request(method, _url(args) + path, json=body, timeout=30,
                          headers={"Authorization": f"Bearer {_token(args)}"})
    except httpx.HTTPError as e:
        raise SystemExit(f"cannot reach the agent's console at {_url(args)}: {e}") from None
    doc = r.json() if r.headers.get("content-type", "").startswith("application/json") else {}
    if r.status_code >= 400:
        raise SystemExit(f"refused ({r.status_code}): {doc.get('error', r.text[:200])}")
    return doc


def _iso(ns: int | None) -> str:
    if ns is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ns / 1e9))


def cmd_list(args: argparse.Namespace) -> int:
    from edge_agent.store import Store

    st = Store(_state_dir(args), readonly=True)
    rows = st.events(None if args.state == "all" else args.state, args.asset, args.limit)
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    for e in rows:
        top = ",".join(t["sensor"] for t in e["top_sensors"])
        print(f"{e['id']}  {e['asset']:<12} {e['severity']:<8} "
              f"{'open' if e['end_ns'] is None else 'closed':<6} {_iso(e['start_ns'])} - "
              f"{_iso(e['end_ns'])}  peak {e['peak_score']:5.1f}  {top}  "
              f"{e.get('label') or ''}")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from edge_agent.store import Store

    doc = Store(_state_dir(args), readonly=True).get_event(args.id)
    if doc is None:
        print(f"no event with id {args.id!r}", file=sys.stderr)
        return 1
    print(json.dumps(doc, indent=1))
    return 0


def cmd_label(args: argparse.Namespace) -> int:
    body = {"label": args.label, "note": args.note, "fault_code": args.fault_code}
    if args.offline:
        from edge_agent.store import LABELS, Store

        if args.label not in LABELS:
            print(f"label must be one of {list(LABELS)}", file=sys.stderr)
            return 2
        st = Store(_state_dir(args))
        if st.get_event(args.id) is None:
            print(f"no event with id {args.id!r}", file=sys.stderr)
            return 1
        who = f"cli:{os.environ.get('USER', 'unknown')}"
        st.set_label(args.id, args.label, args.note, args.fault_code, who,
                     {**body, "via": "cli-offline"})
        print(f"labelled {args.id} {args.label} (offline: the threshold adapts only through"
              " the running agent)")
        return 0
    out = _call(args, "POST", f"/api/events/{args.id}/label", body)
    print(f"labelled {args.id} {args.label}")
    if out.get("threshold_change"):
        c = out["threshold_change"]
        print(f"open threshold of {c['asset']}: {c['from']} -> {c['to']} ({c['reason']})")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    """Labels for the trainer: CSV `asset,start,end,fault` (ns), as simulators.faults writes."""
    from edge_agent.store import Store

    rows = Store(_state_dir(args), readonly=True).labelled()
    now = time.time_ns()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with out.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["asset", "start", "end", "fault"])
        w.writeheader()
        for e in rows:
            if e["label"] != "real_fault" and not args.all:
                continue
            fault = e.get("fault_code") or e["label"]
            w.writerow({"asset": e["asset"], "start": e["start_ns"],
                        "end": e["end_ns"] if e["end_ns"] is not None else now, "fault": fault})
            n += 1
    print(f"wrote {n} label(s) to {out}")
    return 0


def cmd_resend(args: argparse.Namespace) -> int:
    out = _call(args, "POST", "/api/deadletters/resend", {"channel": args.channel})
    print(f"requeued {out['requeued']} dead-lettered alert(s)")
    return 0


def cmd_hash_token(args: argparse.Namespace) -> int:
    from edge_agent.console.server import hash_token

    token = args.token
    if token is None and not sys.stdin.isatty():
        token = sys.stdin.readline().strip()
    generated = not token
    if generated:
        token = secrets.token_urlsafe(32)
    print("# add to the agent's config; keep the token itself out of it")
    print(f'[[console.tokens]]\nname = "{args.name}"\nsha256 = "{hash_token(token)}"')
    if generated:
        print(f"# the new token (shown once): {token}", file=sys.stderr)
    return 0


def cmd_maint(args: argparse.Namespace) -> int:
    if args.action == "list":
        for w in _call(args, "GET", "/api/maintenance"):
            print(json.dumps(w))
        return 0
    if args.action == "remove":
        _call(args, "DELETE", f"/api/maintenance/{args.id}")
        print(f"removed window {args.id}")
        return 0
    body: dict[str, Any] = {"assets": args.assets, "reason": args.reason}
    if args.start:
        body.update(start=args.start, end=args.end)
    else:
        day_start, day_end = args.weekly_time.split("-")
        body["weekly"] = {"days": args.days.split(","), "start": day_start, "end": day_end}
    out = _call(args, "POST", "/api/maintenance", body)
    print(f"added window {out['id']}")
    return 0


def _wrap(f: Any) -> Any:
    def run(args: argparse.Namespace) -> int:
        try:
            return int(f(args))
        except ConfigError as e:
            print(f"{args.config}: {e}", file=sys.stderr)
            return 2
        except FileNotFoundError as e:
            print(str(e), file=sys.stderr)
            return 2

    return run


def _common(p: argparse.ArgumentParser, api: bool = False) -> None:
    p.add_argument("-c", "--config", default=DEFAULT_CONFIG)
    p.add_argument("--state-dir", help="the agent's state_dir (default: from the config)")
    if api:
        p.add_argument("--url", help="console URL (default: from the config)")
        p.add_argument("--token", help="console token (default: $GEARWATCH_TOKEN)")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("events", help="list, show, label and export anomaly events")
    es = p.add_subparsers(dest="events_command", metavar="ACTION")
    q = es.add_parser("list", help="events, newest first")
    _common(q)
    q.add_argument("--state", choices=["open", "closed", "all"], default="all")
    q.add_argument("--asset")
    q.add_argument("--limit", type=int, default=50)
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=_wrap(cmd_list))
    q = es.add_parser("show", help="one event with its labels")
    _common(q)
    q.add_argument("id")
    q.set_defaults(func=_wrap(cmd_show))
    q = es.add_parser("label", help="label an event (through the running agent)")
    _common(q, api=True)
    q.add_argument("id")
    q.add_argument("label", choices=["real_fault", "false_alarm", "planned_maintenance",
                                     "unknown"])
    q.add_argument("--note")
    q.add_argument("--fault-code")
    q.add_argument("--offline", action="store_true", help="write the database directly")
    q.set_defaults(func=_wrap(cmd_label))
    q = es.add_parser("export", help="labels file for the trainer (CSV asset,start,end,fault)")
    _common(q)
    q.add_argument("--out", required=True)
    q.add_argument("--all", action="store_true",
                   help="also false alarms etc. (fault column = the label)")
    q.set_defaults(func=_wrap(cmd_export))
    q = es.add_parser("resend", help="requeue dead-lettered alerts")
    _common(q, api=True)
    q.add_argument("--channel")
    q.set_defaults(func=_wrap(cmd_resend))
    p.set_defaults(func=lambda a: (p.print_help(file=sys.stderr), 2)[1])


def register_console(sub: argparse._SubParsersAction) -> None:
    c = sub.add_parser("console", help="console tokens and maintenance windows")
    cs = c.add_subparsers(dest="console_command", metavar="ACTION")
    h = cs.add_parser("hash-token", help="print the config entry for a token (new if none)")
    h.add_argument("--name", default="operator")
    h.add_argument("--token", help="hash this token (or pipe it on stdin)")
    h.set_defaults(func=_wrap(cmd_hash_token))
    m = cs.add_parser("maintenance", help="runtime maintenance windows")
    _common(m, api=True)
    m.add_argument("action", choices=["list", "add", "remove"])
    m.add_argument("--id", type=int)
    m.add_argument("--assets", nargs="+", default=["*"])
    m.add_argument("--start", help="RFC 3339 (one-off window)")
    m.add_argument("--end")
    m.add_argument("--days", default="mon,tue,wed,thu,fri", help="weekly: days")
    m.add_argument("--weekly-time", default="06:00-07:00", help="weekly: HH:MM-HH:MM UTC")
    m.add_argument("--reason", default="planned maintenance")
    m.set_defaults(func=_wrap(cmd_maint))
    c.set_defaults(func=lambda a: (c.print_help(file=sys.stderr), 2)[1])
