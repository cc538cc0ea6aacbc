"""The Modbus source over RTU: the pump simulator as a slave on a pseudo-terminal pair."""

from __future__ import annotations

import asyncio
import contextlib
import threading

import numpy as np
import pytest

from edge_agent.sources.modbus import ModbusSource
from edge_agent.sources.modbus_config import ModbusDeviceConfig
from simulators.pty_bridge import PtyBridge
from simulators.pump_modbus import PumpModbusSim
from tests.inputs_support import (
    Collector,
    counter,
    metrics_and_reporter,
    pump_modbus_config,
    pump_registry,
    rows_close,
)

pytestmark = pytest.mark.integration
TOL = np.array([0.0, 0.0, 0.0051, 0.0, 0.0, 0.051, 0.0051, 0.0051, 0.051])


class Corrupter:
    """Flips a bit in the slave's answers while `on` (a CRC error on the line)."""

    def __init__(self) -> None:
        self.on = threading.Event()
        self.hits = 0

    def __call__(self, direction: str, data: bytes) -> bytes:
        if direction == "ab" and self.on.is_set() and len(data) > 3:
            self.hits += 1
            return data[:3] + bytes([data[3] ^ 0x40]) + data[4:]
        return data


async def test_rtu_slave_on_a_pty_crc_errors_are_reported_and_the_stream_goes_on() -> None:
    corrupt = Corrupter()
    bridge = PtyBridge(mangle=corrupt)
    sim = PumpModbusSim(["pump-1", "pump-2"], seed=5)
    rows = sim.step()
    await sim.start_rtu(bridge.a_path, baudrate=115200)
    cfg = ModbusDeviceConfig.model_validate(pump_modbus_config(
        transport="rtu", serial_port=bridge.b_path, baudrate=115200, poll_interval_s=0.1,
        timeout_s=0.25, retries=0))
    metrics, reporter = metrics_and_reporter()
    source = ModbusSource(cfg, pump_registry(2), reporter, metrics)
    emit = Collector()
    task = asyncio.create_task(source.run(emit))
    try:
        await emit.wait_for(18, timeout=8)
        assert rows_close(emit.latest(), rows, TOL)
        corrupt.on.set()
        for _ in range(100):
            await asyncio.sleep(0.05)
            if counter(metrics, "gearwatch_bad_input_total", source="modbus:pump-skid",
                       reason="bad_frame"):
                break
        corrupt.on.clear()
        assert corrupt.hits > 0
        assert counter(metrics, "gearwatch_bad_input_total", source="modbus:pump-skid",
                       reason="bad_frame") >= 1
        rows = sim.step()
        emit.clear()
        await emit.wait_for(18, timeout=8)
        assert rows_close(emit.latest(), rows, TOL)  # recovered without a restart
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await sim.stop()
        bridge.close()
