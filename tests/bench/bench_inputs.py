"""Benchmark of the industrial inputs: Modbus TCP registers read per second (N connections)
and serial lines parsed per second.  Prints numbers; not a timed test.

    python tests/bench/bench_inputs.py [--seconds 3] [--connections 1 2 4 8]

The Modbus server (pymodbus, in its own process so it does not share the client's event loop
or GIL) serves 250 holding registers on each of 8 unit ids; each connection polls one unit with
two 125-register reads through the full `ModbusSource` path (plan, request, decode, validate).
A pymodbus connection has one request in flight, so concurrency comes from connections.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from edge_agent.assets import AssetRegistry  # noqa: E402
from edge_agent.bad_input import BadInputReporter  # noqa: E402
from edge_agent.batch import SampleBatch  # noqa: E402
from edge_agent.metrics import AgentMetrics  # noqa: E402
from edge_agent.sources.modbus import ModbusSource  # noqa: E402
from edge_agent.sources.modbus_config import ModbusDeviceConfig  # noqa: E402
from edge_agent.sources.serial_config import SerialPortConfig  # noqa: E402
from edge_agent.sources.serial_framing import SerialDecoder  # noqa: E402
from models.schema import AssetSchema, SensorSpec  # noqa: E402

N_REGS = 250
SERVER = f"""
import asyncio, sys
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice
def dev(i):
    return SimDevice(i, simdata=([SimData(0, count=16, values=False, datatype=DataType.BITS)],
        [SimData(0, count=16, values=False, datatype=DataType.BITS)],
        [SimData(0, count={N_REGS}, values=list(range({N_REGS})), datatype=DataType.REGISTERS)],
        [SimData(0, count=16, values=0, datatype=DataType.REGISTERS)]))
async def main():
    s = ModbusTcpServer([dev(i) for i in range(1, 9)], address=("127.0.0.1", int(sys.argv[1])))
    print("ready", flush=True)
    await s.serve_forever()
asyncio.run(main())
"""

SCHEMA = AssetSchema("bench_asset", tuple(SensorSpec(f"r{i}", low=0, high=1e6)
                                          for i in range(N_REGS)))


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def modbus_rate(port: int, connections: int, seconds: float) -> tuple[float, float]:
    registry = AssetRegistry([(f"a{i}", SCHEMA) for i in range(8)])
    metrics = AgentMetrics()
    reporter = BadInputReporter(metrics)
    samples = 0

    def emit(b: SampleBatch) -> None:
        nonlocal samples
        samples += len(b)

    sources = []
    for k in range(connections):
        unit = k % 8 + 1
        cfg = ModbusDeviceConfig.model_validate({
            "name": f"bench{k}", "port": port, "timeout_s": 2.0, "units": [{
                "unit_id": unit, "asset": f"a{unit - 1}",
                "registers": [{"address": i, "type": "uint16", "sensor": f"r{i}"}
                              for i in range(N_REGS)]}]})
        src = ModbusSource(cfg, registry, reporter, metrics)
        await src._connect()
        sources.append(src)

    async def loop(src: ModbusSource, end: float) -> None:
        while time.monotonic() < end:
            await src.poll_once(emit)

    await asyncio.gather(*(loop(s, time.monotonic() + 0.3) for s in sources))  # warm up
    samples = 0
    before = sum(metrics.registry.get_sample_value(
        "gearwatch_modbus_registers_read_total", {"device": f"bench{k}"}) or 0
        for k in range(connections))
    t0 = time.monotonic()
    await asyncio.gather(*(loop(s, t0 + seconds) for s in sources))
    dt = time.monotonic() - t0
    after = sum(metrics.registry.get_sample_value(
        "gearwatch_modbus_registers_read_total", {"device": f"bench{k}"}) or 0
        for k in range(connections))
    for s in sources:
        s._close()
    return (after - before) / dt, samples / dt


def serial_rates(n_lines: int = 100_000) -> dict[str, float]:
    registry = AssetRegistry([("pump-1", SCHEMA)])
    names = [f"r{i}" for i in range(9)]
    vals = [f"{100 + i}.125" for i in range(9)]
    lines = {
        "csv": ",".join(vals).encode() + b"\n",
        "kv": " ".join(f"{n}={v}" for n, v in zip(names, vals, strict=True)).encode() + b"\n",
        "json": ("{" + ",".join(f'"{n}":{v}' for n, v in zip(names, vals, strict=True))
                 + "}\n").encode(),
        "regex": (" ".join(f"{n}={v}" for n, v in zip(names, vals, strict=True)) + "\n").encode(),
    }
    out = {}
    for framing, line in lines.items():
        kw: dict[str, object] = {"name": "b", "port": "/dev/null", "asset": "pump-1",
                                 "framing": framing}
        if framing == "csv":
            kw.update(csv_header=False, columns=names)
        if framing == "regex":
            kw["pattern"] = " ".join(f"{n}=(?P<{n}>\\S+)" for n in names)
        dec = SerialDecoder(SerialPortConfig.model_validate(kw), registry)
        chunk = line * 1000  # a read returns many lines at once at high rates
        t0 = time.perf_counter()
        got = 0
        for _ in range(n_lines // 1000):
            b, rej = dec.feed(chunk)
            got += len(b)
            assert not rej
        dt = time.perf_counter() - t0
        assert got == n_lines * 9
        out[framing] = n_lines / dt
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--connections", type=int, nargs="+", default=[1, 2, 4, 8])
    args = ap.parse_args()
    print(f"machine: {os.cpu_count()} CPUs, python {sys.version.split()[0]}")
    port = free_port()
    server = subprocess.Popen([sys.executable, "-c", SERVER, str(port)], stdout=subprocess.PIPE,
                              text=True)
    try:
        assert server.stdout is not None and server.stdout.readline().strip() == "ready"
        time.sleep(0.2)
        print(f"Modbus TCP, {N_REGS} uint16 registers per poll (2 reads of 125), full source path:")
        for n in args.connections:
            regs, samples = asyncio.run(modbus_rate(port, n, args.seconds))
            print(f"  {n:2d} connection(s): {regs:10,.0f} registers/s  "
                  f"({regs / 125:7,.0f} reads/s, {samples:10,.0f} samples/s)")
    finally:
        server.terminate()
        server.wait()
    print("Serial lines parsed per second (9 values a line, parse + validate + batch):")
    for framing, rate in serial_rates().items():
        print(f"  {framing:6s}: {rate:10,.0f} lines/s  ({rate * 9:12,.0f} samples/s)")


if __name__ == "__main__":
    main()
