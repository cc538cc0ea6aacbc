"""`gearwatch demo`: simulators -> agent -> detected events, on embedded defaults.

Starts a local Mosquitto and InfluxDB under a project folder on free loopback ports, runs
three simulated pumps (a bearing fault scheduled on pump-2) through the real agent, and prints
the anomaly events as they open and close.  Sim time runs faster than real time, so the hour
the online detector spends learning normal takes well under a minute.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import orjson
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

DEFAULT_FAULT = "pump-2:bearing_wear@4500+120"


def _fmt_ns(ns: int | None) -> str:
    if ns is None:
        return "-"
    return datetime.fromtimestamp(ns / 1e9, UTC).strftime("%H:%M:%S")


def _print_alert(doc: dict[str, object], t0_ns: int) -> None:
    top = ", ".join(f"{s['sensor']} {s['share']:.0%}" for s in doc["top_sensors"])  # type: ignore[attr-defined]
    start = int(doc["start_ns"])  # type: ignore[call-overload]
    sim_min = (start - t0_ns) / 60e9
    if doc["kind"] == "open":
        print(f"  >> EVENT OPEN   {doc['asset']}  since {_fmt_ns(start)} UTC "
              f"(sim minute {sim_min:.1f})  score {doc['peak_score']}  top sensors: {top}",
              flush=True)
    elif doc["kind"] != "close":
        print(f"  >> EVENT {str(doc['kind']).upper():7} {doc['asset']}  severity "
              f"{doc.get('severity')}  score {doc['peak_score']}", flush=True)
    else:
        print(f"  << EVENT CLOSED {doc['asset']}  {_fmt_ns(start)}-{_fmt_ns(doc['end_ns'])} "  # type: ignore[arg-type]
              f"peak {doc['peak_score']}  top sensors: {top}", flush=True)


def cmd_demo(args: argparse.Namespace) -> int:
    from edge_agent.config import parse_config
    from edge_agent.runner import AgentThread, wait_until
    from gearwatch import localservers as ls
    from simulators.faults import Fault
    from simulators.mqtt_publisher import publish_fleet, start_time_ns

    base = Path(args.dir).resolve()
    print(f"gearwatch demo: servers and data under {base}")
    try:
        broker = ls.mosquitto(base).start()
        influx = ls.influxdb(base).start()
    except ls.ServerError as e:
        print(f"cannot start the demo's servers: {e}", file=sys.stderr)
        return 2
    print(f"  Mosquitto on 127.0.0.1:{broker.port}, InfluxDB on {influx.url}")
    assets = [f"pump-{i}" for i in range(1, args.assets + 1)]
    metrics_port = ls.free_port()
    console_port = ls.free_port()
    cfg = parse_config({
        # a fresh state dir per run: events of an earlier demo must not be restored into this one
        "agent": {"site": "demo", "state_dir": str(base / f"state-{time.time_ns()}")},
        "console": {"port": console_port},
        "mqtt": {"port": broker.port},
        "influx": {"url": influx.url, "database": "gearwatch"},
        "metrics": {"port": metrics_port},
        "assets": [{"id": a, "class": "centrifugal_pump"} for a in assets],
    })
    faults = [Fault.parse(f) for f in (args.fault or [DEFAULT_FAULT])]
    t0 = start_time_ns(args.duration, args.speedup)
    seen: list[dict[str, object]] = []

    def on_alert(c: mqtt.Client, u: object, msg: mqtt.MQTTMessage) -> None:
        doc = orjson.loads(msg.payload)
        seen.append(doc)
        _print_alert(doc, t0)

    sub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="gearwatch-demo-console")
    sub.on_message = on_alert
    sub.on_connect = lambda c, *a: c.subscribe("plant/demo/+/alerts", qos=1)
    sub.connect("127.0.0.1", broker.port)
    sub.loop_start()
    agent = AgentThread(cfg).start()
    print(f"  agent running; Prometheus metrics on http://127.0.0.1:{metrics_port}/metrics")
    print(f"  console (read-only) on http://127.0.0.1:{console_port}/")
    for f in faults:
        print(f"  fault scheduled: {f.kind} on {f.asset} at sim minute {f.start_s / 60:.0f}")
    warm = cfg.scoring.warmup_rows + cfg.scoring.calibration_rows
    print(f"  {len(assets)} pumps, {args.duration / 3600:.1f} h of sim time at {args.speedup:g}x; "
          f"the detector learns normal for the first {warm / 60:.0f} sim minutes\n", flush=True)
    stop = threading.Event()

    def progress(sim_s: float) -> None:
        if sim_s % 900 == 0:
            state = "learning normal" if sim_s < warm else "watching"
            print(f"  sim minute {sim_s / 60:4.0f}: {state}", flush=True)

    try:
        rep = publish_fleet("127.0.0.1", broker.port, assets, args.duration, site="demo",
                            speedup=args.speedup, faults=faults, seed=args.seed,
                            stop=stop, on_progress=progress)
        a = agent.agent
        assert a is not None
        wait_until(lambda: a.state.samples >= rep.samples, 60, "the agent to catch up")
        wait_until(lambda: a.influx is None or a.influx.backlog_points == 0, 60,
                   "InfluxDB writes")
        time.sleep(1.0)
    except KeyboardInterrupt:
        stop.set()
        print("\ninterrupted")
    finally:
        agent.stop()
        sub.disconnect()
        sub.loop_stop()
    opened = [d for d in seen if d["kind"] == "open"]
    print(f"\nsent {rep.samples} samples; {len(opened)} event(s) opened: "
          f"{sorted({str(d['asset']) for d in opened}) or 'none'}")
    for lab in rep.labels:
        hit = [d for d in opened if d["asset"] == lab.asset
               and int(d["start_ns"]) >= lab.start_ns - 60e9]  # type: ignore[call-overload]
        when = ((int(hit[0]["start_ns"]) - lab.start_ns) / 1e9) if hit else None  # type: ignore[call-overload]
        verdict = f"detected {when:.0f} s after onset" if when is not None else "NOT detected"
        print(f"  ground truth: {lab.fault} on {lab.asset} -> {verdict}")
    if args.keep:
        print(f"\nservers left running: mosquitto :{broker.port}, InfluxDB {influx.url} "
              "(database 'gearwatch'); stop them with Ctrl-C")
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
    broker.stop()
    influx.stop()
    return 0 if opened else 1


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="simulated pumps -> agent -> detected events, all local")
    p.add_argument("--dir", default=".demo", help="folder for the demo's servers and data")
    p.add_argument("--assets", type=int, default=3)
    p.add_argument("--duration", type=float, default=5400.0, help="sim seconds (default 1.5 h)")
    p.add_argument("--speedup", type=float, default=150.0, help="sim seconds per wall second")
    p.add_argument("--seed", type=int, default=3)
    p.add_argument("--fault", action="append", help=f"fault spec (default {DEFAULT_FAULT})")
    p.add_argument("--keep", action="store_true", help="keep the servers running afterwards")
    p.set_defaults(func=cmd_demo)
