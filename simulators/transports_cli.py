"""`gearwatch sim modbus-tcp | modbus-rtu | serial | replay`: the pump over industrial links.

Each command steps the pump physics in sim time (`--dt` seconds per step) at `--speedup`
times real time and serves it until interrupted (or for `--duration` wall seconds).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import time
from pathlib import Path


def add_commands(sim_sub: argparse._SubParsersAction) -> None:
    """Add the transport sub-subcommands to the `gearwatch sim` parser."""
    p = sim_sub.add_parser("modbus-tcp", help="serve the pump fleet as a Modbus TCP server")
    _physics_args(p)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=5020)
    p.set_defaults(func=run_modbus_tcp)

    p = sim_sub.add_parser("modbus-rtu", help="serve the pump fleet as an RTU slave on a pty")
    _physics_args(p)
    p.add_argument("--baudrate", type=int, default=115200)
    p.set_defaults(func=run_modbus_rtu)

    p = sim_sub.add_parser("serial", help="a pump's serial instrument writing lines on a pty")
    _physics_args(p, pumps=False)
    p.add_argument("--asset", default="pump-1")
    p.add_argument("--format", choices=["csv", "kv", "json"], default="csv")
    p.add_argument("--mode", choices=["stream", "polled"], default="stream")
    p.add_argument("--request", default="MEAS?\\r\\n",
                   help="polled mode: the request string (escapes like \\r\\n allowed)")
    p.set_defaults(func=run_serial)

    p = sim_sub.add_parser("replay", help="publish a recorded CSV over MQTT (json format)")
    p.add_argument("file", type=Path)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=1883)
    p.add_argument("--topic-template", default="plant/{site}/{asset}/telemetry")
    p.add_argument("--site", default="site1")
    p.add_argument("--speedup", type=float, default=1.0)
    p.add_argument("--timestamp-column", default=None,
                   help="default: the first of ts, timestamp, time")
    p.add_argument("--asset-column", default="asset")
    p.add_argument("--asset", default="pump-1", help="asset of rows without an asset column")
    p.add_argument("--qos", type=int, choices=[0, 1], default=1)
    p.set_defaults(func=run_replay)


def _physics_args(p: argparse.ArgumentParser, pumps: bool = True) -> None:
    if pumps:
        p.add_argument("--pumps", type=int, default=2, help="pumps = unit ids 1..N")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dt", type=float, default=1.0, help="sim seconds per physics step")
    p.add_argument("--speedup", type=float, default=1.0, help="sim time / wall time")
    p.add_argument("--duration", type=float, default=None, help="wall seconds, then exit")


def _assets(n: int) -> list[str]:
    return [f"pump-{i + 1}" for i in range(n)]


def run_modbus_tcp(args: argparse.Namespace) -> int:
    from simulators.pump_modbus import PumpModbusSim

    async def main() -> None:
        sim = PumpModbusSim(_assets(args.pumps), seed=args.seed, dt_s=args.dt)
        sim.step()
        await sim.start_tcp(args.host, args.port)
        print(f"Modbus TCP pump fleet on {args.host}:{args.port}, unit ids 1..{args.pumps} "
              "(map: simulators/pump_register_map.md)", flush=True)
        try:
            await sim.run(args.speedup, args.duration)
        finally:
            await sim.stop()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())
    return 0


def run_modbus_rtu(args: argparse.Namespace) -> int:
    from simulators.pty_bridge import PtyBridge
    from simulators.pump_modbus import PumpModbusSim

    async def main() -> None:
        with PtyBridge() as bridge:
            sim = PumpModbusSim(_assets(args.pumps), seed=args.seed, dt_s=args.dt)
            sim.step()
            await sim.start_rtu(bridge.a_path, args.baudrate)
            print(f"Modbus RTU pump fleet: point the agent at serial_port = "
                  f"\"{bridge.b_path}\" (baudrate {args.baudrate}, 8N1), unit ids "
                  f"1..{args.pumps}", flush=True)
            try:
                await sim.run(args.speedup, args.duration)
            finally:
                await sim.stop()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())
    return 0


def run_serial(args: argparse.Namespace) -> int:
    from simulators.serial_instrument import SerialInstrumentSim

    request = args.request.encode().decode("unicode_escape").encode("latin-1")
    sim = SerialInstrumentSim(args.asset, fmt=args.format, mode=args.mode, request=request,
                              seed=args.seed, dt_s=args.dt)
    print(f"serial instrument ({args.format}, {args.mode}) for {args.asset}: "
          f"port = \"{sim.path}\"", flush=True)
    sim.start(args.speedup)
    try:
        end = None if args.duration is None else time.monotonic() + args.duration
        while end is None or time.monotonic() < end:
            time.sleep(0.2)
    except KeyboardInterrupt:
        pass
    finally:
        sim.close()
    return 0


def run_replay(args: argparse.Namespace) -> int:
    from simulators.replay import publish

    try:
        n = publish(args.file, args.host, args.port, args.topic_template, args.site,
                    args.speedup, args.timestamp_column, args.asset_column, args.asset, args.qos)
    except (OSError, ValueError) as e:
        print(f"replay: {e}", file=sys.stderr)
        return 1
    print(f"replayed {n} rows from {args.file}")
    return 0
