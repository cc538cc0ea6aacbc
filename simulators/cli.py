"""`gearwatch sim ...`: run the pump simulator over MQTT, or write historical telemetry."""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import os
import sys
from pathlib import Path

from simulators.faults import Fault, write_labels


def _faults(specs: list[str]) -> list[Fault]:
    try:
        return [Fault.parse(s) for s in specs]
    except ValueError as e:
        raise SystemExit(f"gearwatch sim: {e}") from None


def _assets(args: argparse.Namespace) -> list[str]:
    return [f"{args.prefix}-{i}" for i in range(1, args.assets + 1)]


def cmd_mqtt(args: argparse.Namespace) -> int:
    from simulators.mqtt_publisher import publish_fleet

    rep = publish_fleet(
        args.host, args.port, _assets(args), args.duration, site=args.site,
        speedup=args.speedup, dt_s=args.period, faults=_faults(args.fault), seed=args.seed,
        qos=args.qos, topic_template=args.topic_template, username=args.username,
        password=os.environ.get(args.password_env) if args.username else None,
        ca_file=args.cafile, client_id=args.client_id, session_expiry_s=args.session_expiry,
    )
    if args.labels:
        write_labels(Path(args.labels), rep.labels)
    print(json.dumps(rep.to_dict()))
    return 0


def cmd_history(args: argparse.Namespace) -> int:
    from simulators.history import random_faults, write_history

    assets = _assets(args)
    faults = _faults(args.fault)
    if args.random_faults:
        faults += random_faults(assets, args.random_faults, args.duration, args.seed)
    path, labels = write_history(Path(args.out), assets, args.duration, faults, args.seed,
                                 args.period, fmt=args.format)
    print(f"wrote {path} and {labels} ({len(faults)} faults)")
    return 0


def cmd_load(args: argparse.Namespace) -> int:
    from simulators.loadgen import run_load

    rep = run_load(args.host, args.port, args.assets, args.sensors, args.rate, args.seconds,
                   args.batch_rows, args.qos, args.layout, args.site, args.fault_assets,
                   args.fault_at, args.fault_size, args.seed, args.prefix)
    print(json.dumps({"messages": rep.messages, "samples": rep.samples,
                      "seconds": round(rep.seconds, 3),
                      "samples_per_s": round(rep.samples_per_s), "late_batches":
                      rep.late_batches, "max_lag_s": round(rep.max_lag_s, 3),
                      "fault_ts_ns": rep.fault_ts_ns, "t0_ns": rep.t0_ns}), flush=True)
    return 0


def _common(p: argparse.ArgumentParser, duration: float) -> None:
    p.add_argument("--assets", type=int, default=3, help="number of pumps (default 3)")
    p.add_argument("--prefix", default="pump", help="asset id prefix: pump-1, pump-2, ...")
    p.add_argument("--duration", type=float, default=duration, help="sim seconds")
    p.add_argument("--period", type=float, default=1.0, help="sample period, seconds")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--fault", action="append", default=[], metavar="SPEC",
                   help="asset:kind@start_s[+ramp_s][*severity][-end_s][/sensor]; kinds: "
                   "bearing_wear, cavitation, imbalance, sensor_drift, stuck_sensor")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sim", help="run equipment simulators")
    ssub = p.add_subparsers(dest="sim_command", metavar="TRANSPORT")
    m = ssub.add_parser("mqtt", help="publish pumps as JSON over MQTT")
    _common(m, 3600.0)
    m.add_argument("--host", default="127.0.0.1")
    m.add_argument("--port", type=int, default=1883)
    m.add_argument("--site", default="demo")
    m.add_argument("--qos", type=int, choices=(0, 1), default=1)
    m.add_argument("--speedup", type=float, default=1.0,
                   help="sim seconds per wall second; 0 = as fast as possible")
    m.add_argument("--topic-template", default="plant/{site}/{asset}/telemetry")
    m.add_argument("--client-id", help="fixed MQTT client id (default: a fresh one)")
    m.add_argument("--session-expiry", type=int, default=0, metavar="S",
                   help="persistent MQTT session kept S seconds (0 = clean session)")
    m.add_argument("--username")
    m.add_argument("--password-env", default="GEARWATCH_SIM_PASSWORD",
                   help="environment variable holding the password")
    m.add_argument("--cafile", help="CA certificate: connect over TLS")
    m.add_argument("--labels", help="write ground-truth labels (CSV) here")
    m.set_defaults(func=cmd_mqtt)
    h = ssub.add_parser("history", help="write historical telemetry with labelled faults")
    _common(h, 7 * 86400.0)
    h.add_argument("--out", required=True, help="output folder")
    h.add_argument("--format", choices=("csv", "parquet"), default="csv")
    h.add_argument("--random-faults", type=int, default=0,
                   help="add N faults cycling through every kind at random times")
    h.set_defaults(func=cmd_history)
    ld = ssub.add_parser("load", help="load generator: N assets x M sensors at R Hz, real time")
    ld.add_argument("--host", default="127.0.0.1")
    ld.add_argument("--port", type=int, default=1883)
    ld.add_argument("--site", default="bench")
    ld.add_argument("--assets", type=int, default=1000)
    ld.add_argument("--sensors", type=int, default=10)
    ld.add_argument("--rate", type=float, default=10.0, help="rows per second per asset")
    ld.add_argument("--seconds", type=float, default=60.0)
    ld.add_argument("--batch-rows", type=int, default=10, help="rows per message (columns/rows)")
    ld.add_argument("--layout", choices=("columns", "rows", "row"), default="columns")
    ld.add_argument("--qos", type=int, choices=(0, 1), default=1)
    ld.add_argument("--prefix", default="a", help="asset ids: PREFIX0, PREFIX1, ...")
    ld.add_argument("--seed", type=int, default=0)
    ld.add_argument("--fault-assets", type=int, default=0,
                    help="a step fault on sensor s0 of the first N assets")
    ld.add_argument("--fault-at", type=float, default=None, help="seconds into the run")
    ld.add_argument("--fault-size", type=float, default=25.0, help="in units of the gain")
    ld.set_defaults(func=cmd_load)
    if importlib.util.find_spec("simulators.transports_cli") is not None:
        importlib.import_module("simulators.transports_cli").add_commands(ssub)
    p.set_defaults(func=lambda a: (p.print_help(file=sys.stderr), 2)[1])
