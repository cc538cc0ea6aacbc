"""The pump fleet as Modbus devices: one unit id per pump, over TCP or as an RTU slave.

The register map (documented in `pump_register_map.md`, ready for the agent in
`deploy/examples/modbus-pump.toml`) mixes what real drives do: float32 in CDAB word order in
the input registers, scaled int16 in the holding registers, an ASCII serial number, and a
coil for "running".  Values are encoded here with `struct`, independently of the agent's
decoder, so the integration tests cross-check the two.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass

import numpy as np
from pymodbus import FramerType
from pymodbus.constants import ExcCodes
from pymodbus.server import ModbusSerialServer, ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from simulators.pump import SENSORS, PumpFleet

_S = {n: i for i, n in enumerate(SENSORS)}


@dataclass(frozen=True)
class MapEntry:
    table: str  # input | holding | coil
    address: int
    type: str  # float32 | int16 | bool | string
    sensor: str | None
    scale: float = 1.0
    unit: str = ""
    length: int = 0  # strings: registers


# float32, CDAB: the word-swapped floats of most drives and PLCs
PUMP_MAP: tuple[MapEntry, ...] = (
    MapEntry("input", 0, "float32", "speed_rpm", unit="rpm"),
    MapEntry("input", 2, "float32", "motor_current_a", unit="A"),
    MapEntry("input", 4, "float32", "flow_m3h", unit="m3/h"),
    MapEntry("input", 6, "float32", "discharge_pressure_bar", unit="bar"),
    MapEntry("holding", 0, "int16", "suction_pressure_bar", 0.01, "bar"),
    MapEntry("holding", 1, "int16", "bearing_temp_c", 0.1, "degC"),
    MapEntry("holding", 2, "int16", "winding_temp_c", 0.1, "degC"),
    MapEntry("holding", 3, "int16", "vibration_x_mm_s", 0.01, "mm/s"),
    MapEntry("holding", 4, "int16", "vibration_y_mm_s", 0.01, "mm/s"),
    MapEntry("holding", 20, "string", None, length=8),  # serial number
    MapEntry("coil", 0, "bool", None),  # running
)
HOLDING_SIZE = 32
INPUT_SIZE = 16
COIL_REGS = 1  # 16 coils
RUNNING_BELOW_RPM = 100.0


def float32_cdab(v: float) -> list[int]:
    hi, lo = struct.unpack(">HH", struct.pack(">f", v))
    return [lo, hi]


def int16_scaled(v: float, scale: float) -> int:
    raw = max(-32768, min(32767, round(v / scale)))
    return struct.unpack(">H", struct.pack(">h", raw))[0]


def ascii_words(text: str, n: int) -> list[int]:
    data = text.encode("ascii")[: 2 * n].ljust(2 * n, b"\x00")
    return list(struct.unpack(f">{n}H", data))


def encode_row(row: np.ndarray, serial: str) -> dict[str, list[int]]:
    """One pump's sensor row -> the contents of its register blocks."""
    inp = [0] * INPUT_SIZE
    hold = [0] * HOLDING_SIZE
    coil = [0] * COIL_REGS
    for e in PUMP_MAP:
        if e.type == "float32" and e.sensor:
            inp[e.address: e.address + 2] = float32_cdab(float(row[_S[e.sensor]]))
        elif e.type == "int16" and e.sensor:
            hold[e.address] = int16_scaled(float(row[_S[e.sensor]]), e.scale)
        elif e.type == "string":
            hold[e.address: e.address + e.length] = ascii_words(serial, e.length)
        elif e.type == "bool":
            coil[0] = 1 if row[_S["speed_rpm"]] >= RUNNING_BELOW_RPM else 0
    return {"input": inp, "holding": hold, "coil": coil}


_FC_BLOCK = {1: "coil", 5: "coil", 15: "coil", 2: "discrete", 3: "holding", 6: "holding",
             16: "holding", 4: "input"}


class PumpModbusSim:
    """A `PumpFleet` behind Modbus: unit id k+1 serves pump k.

    `step()` advances the physics one `dt_s` and publishes the new registers; `run()` does so
    `speedup` times faster than sim time.  `rows` is the latest (N, 9) physics output, which
    tests compare with what the agent decoded.
    """

    def __init__(
        self, asset_ids: list[str], seed: int = 0, dt_s: float = 1.0, first_unit: int = 1
    ) -> None:
        self.fleet = PumpFleet(asset_ids, seed=seed, dt_s=dt_s)
        self.first_unit = first_unit
        self.rows = np.zeros((len(asset_ids), len(SENSORS)))
        self.blocks: list[dict[str, list[int]]] = [
            encode_row(self.rows[i], f"GW-{i + 1:04d}") for i in range(len(asset_ids))
        ]
        self.busy_units: set[int] = set()  # tests: these unit ids answer "device busy"
        self.steps = 0
        self.server: ModbusTcpServer | ModbusSerialServer | None = None
        self._serve_task: asyncio.Task[None] | None = None

    def step(self) -> np.ndarray:
        self.rows = self.fleet.step()
        self.blocks = [
            encode_row(self.rows[i], f"GW-{i + 1:04d}") for i in range(len(self.fleet.ids))
        ]
        self.steps += 1
        return self.rows

    def devices(self) -> list[SimDevice]:
        out = []
        for k in range(len(self.fleet.ids)):
            out.append(SimDevice(
                self.first_unit + k,
                simdata=(
                    [SimData(0, count=16 * COIL_REGS, values=False, datatype=DataType.BITS)],
                    [SimData(0, count=16, values=False, datatype=DataType.BITS)],
                    [SimData(0, count=HOLDING_SIZE, values=0, datatype=DataType.REGISTERS)],
                    [SimData(0, count=INPUT_SIZE, values=0, datatype=DataType.REGISTERS)],
                ),
                action=self._action(k),
            ))
        return out

    def _action(self, k: int) -> Callable[..., Coroutine[None, None, ExcCodes | None]]:
        async def action(
            fc: int, _start: int, _addr: int, _count: int, current: list[int],
            values: list[int] | list[bool] | None,
        ) -> ExcCodes | None:
            if self.first_unit + k in self.busy_units:
                return ExcCodes.DEVICE_BUSY
            block = self.blocks[k].get(_FC_BLOCK.get(fc, ""), None)
            if block is not None and values is None:
                current[: len(block)] = block
            return None
        return action

    async def start_tcp(self, host: str = "127.0.0.1", port: int = 5020) -> None:
        self.server = ModbusTcpServer(self.devices(), address=(host, port))
        await self._start()

    async def start_rtu(self, port_path: str, baudrate: int = 115200) -> None:
        self.server = ModbusSerialServer(
            self.devices(), framer=FramerType.RTU, port=port_path, baudrate=baudrate)
        await self._start()

    async def _start(self) -> None:
        assert self.server is not None
        self._serve_task = asyncio.create_task(self.server.serve_forever())
        for _ in range(100):  # wait until it listens
            if self.server.transport is not None:
                return
            await asyncio.sleep(0.02)

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.shutdown()
            self.server = None
        if self._serve_task is not None:
            self._serve_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._serve_task
            self._serve_task = None

    async def run(self, speedup: float = 1.0, duration_s: float | None = None) -> None:
        """Step the physics in sim time: one `dt_s` step every `dt_s / speedup` wall seconds."""
        interval = self.fleet.dt / speedup
        t0 = time.monotonic()
        n = 0
        while duration_s is None or n * interval < duration_s:
            self.step()
            n += 1
            await asyncio.sleep(max(0.0, t0 + n * interval - time.monotonic()))
