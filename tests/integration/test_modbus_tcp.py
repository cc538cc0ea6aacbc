"""The Modbus source against the pump simulator served by a real pymodbus TCP server."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import numpy as np
import pytest

from edge_agent.sources.modbus import ModbusSource
from edge_agent.sources.modbus_config import ModbusDeviceConfig
from simulators.pump_modbus import PumpModbusSim
from tests.inputs_support import (
    Collector,
    counter,
    free_port,
    metrics_and_reporter,
    pump_modbus_config,
    pump_registry,
    rows_close,
)

pytestmark = pytest.mark.integration

# float32 keeps ~7 digits; the int16 registers are scaled by 0.01 or 0.1
TOL = np.array([0.0, 0.0, 0.0051, 0.0, 0.0, 0.051, 0.0051, 0.0051, 0.051])


@contextlib.asynccontextmanager
async def running(source: ModbusSource, emit: Collector) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(source.run(emit))
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_polls_every_unit_and_decodes_the_simulator_rows() -> None:
    port = free_port()
    sim = PumpModbusSim(["pump-1", "pump-2"], seed=3)
    rows = sim.step()
    await sim.start_tcp(port=port)
    cfg = ModbusDeviceConfig.model_validate(pump_modbus_config(port=port, poll_interval_s=0.1))
    metrics, reporter = metrics_and_reporter()
    source = ModbusSource(cfg, pump_registry(2), reporter, metrics)
    emit = Collector()
    try:
        async with running(source, emit):
            await emit.wait_for(18)
            assert rows_close(emit.latest(), rows, TOL), (emit.latest(), rows)
            health = source.health()
            assert health["pump-skid/1"]["state"] == "ok"
            assert health["pump-skid/2"]["info"]["serial_number"] == "GW-0002"
            running_now = rows[0, 0] >= 100
            assert health["pump-skid/1"]["info"]["running"] == float(running_now)
            # the holding registers 0-4 and 20-27 are too far apart to share a read
            assert [(r.table, r.start, r.count) for r in source.plans[0].reads] == [
                ("holding", 0, 5), ("holding", 20, 8), ("input", 0, 8), ("coil", 0, 1)]
            # a batch per unit and poll, all samples of a poll at one timestamp
            b = emit.batches[0]
            assert len(set(b.ts_ns.tolist())) <= 3
            assert set(b.asset.tolist()) == {0}
    finally:
        await sim.stop()
    assert counter(metrics, "gearwatch_bad_input_total", source="modbus:pump-skid",
                   reason="out_of_range") == 0


async def test_server_stops_then_returns_units_go_lost_and_recover() -> None:
    port = free_port()
    sim = PumpModbusSim(["pump-1", "pump-2"], seed=4)
    sim.step()
    await sim.start_tcp(port=port)
    states: list[tuple[str, str]] = []
    cfg = ModbusDeviceConfig.model_validate(pump_modbus_config(
        port=port, poll_interval_s=0.1, timeout_s=0.3, retries=1, reconnect_backoff_s=0.05,
        reconnect_backoff_max_s=0.3))
    metrics, reporter = metrics_and_reporter()
    source = ModbusSource(cfg, pump_registry(2), reporter, metrics,
                          on_state=lambda d, s: states.append((d, s)))
    emit = Collector()
    try:
        async with running(source, emit):
            await emit.wait_for(18)
            await sim.stop()
            await asyncio.sleep(0.5)
            emit.clear()
            await asyncio.sleep(0.5)
            assert len(emit.all()) == 0  # nothing arrives while the server is gone
            assert source.health()["pump-skid/1"]["state"] == "lost"
            assert ("pump-skid/1", "lost") in states and ("pump-skid/2", "lost") in states
            assert counter(metrics, "gearwatch_source_device_lost_total",
                           source="modbus:pump-skid", device="pump-skid/1") == 1
            assert counter(metrics, "gearwatch_source_device_up", source="modbus:pump-skid",
                           device="pump-skid/1") == 0
            rows = sim.step()
            await sim.start_tcp(port=port)
            await emit.wait_for(18, timeout=6)
            assert rows_close(emit.latest(), rows, TOL)
            assert source.health()["pump-skid/2"]["state"] == "ok"
            assert states[-2:] in (
                [("pump-skid/1", "ok"), ("pump-skid/2", "ok")],
                [("pump-skid/2", "ok"), ("pump-skid/1", "ok")])
    finally:
        await sim.stop()
