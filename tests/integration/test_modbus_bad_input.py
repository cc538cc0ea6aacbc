"""Bad Modbus answers are reported per register and cost nothing else in the stream."""

from __future__ import annotations

import asyncio
import contextlib
import struct

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
)

pytestmark = pytest.mark.integration
SRC = "modbus:pump-skid"


async def _run_for(source: ModbusSource, emit: Collector, seconds: float) -> None:
    task = asyncio.create_task(source.run(emit))
    await asyncio.sleep(seconds)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def test_exception_responses_are_reported_per_register_and_neighbours_survive() -> None:
    port = free_port()
    sim = PumpModbusSim(["pump-1", "pump-2"], seed=6)
    rows = sim.step()
    sim.busy_units = {2}
    await sim.start_tcp(port=port)
    dev = pump_modbus_config(port=port, poll_interval_s=0.05, max_gap=40)
    # a register the device does not have, close enough to be coalesced with real ones
    dev["units"][0]["registers"].append(
        {"table": "holding", "address": 33, "type": "int16", "name": "not_there"})
    cfg = ModbusDeviceConfig.model_validate(dev)
    metrics, reporter = metrics_and_reporter()
    source = ModbusSource(cfg, pump_registry(2), reporter, metrics)
    emit = Collector()
    try:
        await _run_for(source, emit, 0.8)
    finally:
        await sim.stop()
    latest = emit.latest()
    # pump-1: every sensor still arrives, read register by register after the refusal
    assert all((0, s) in latest for s in range(9))
    assert latest[(0, 5)] == pytest.approx(rows[0, 5], abs=0.051)
    assert not any(a == 1 for a, _ in latest)  # pump-2 is busy: nothing from it
    assert counter(metrics, "gearwatch_bad_input_total", source=SRC,
                   reason="modbus_exception") >= 2
    assert source.health()["pump-skid/2"]["state"] == "ok"  # busy is an answer, not a loss
    assert any(r.count == 1 and r.start == 33 for r in source.plans[0].reads)


class RogueServer:
    """A real TCP Modbus server that answers wrongly on purpose (the test's device from hell)."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.server: asyncio.Server | None = None

    async def start(self, port: int) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", port)

    async def stop(self) -> None:
        if self.server:
            self.server.close()
            await self.server.wait_closed()

    async def _serve(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await r.readexactly(7)
                tid, _pid, length, unit = struct.unpack(">HHHB", head)
                pdu = await r.readexactly(length - 1)
                fc, _addr, count = struct.unpack(">BHH", pdu[:5])
                if fc in (1, 2):
                    body = bytes([fc, (count + 7) // 8]) + b"\x01" * ((count + 7) // 8)
                else:
                    n = count - 1 if self.mode == "short" and count > 1 else count
                    body = bytes([fc, 2 * n]) + struct.pack(f">{n}H", *([100] * n))
                if self.mode == "wrong_unit" and unit == 2:
                    unit = 7
                w.write(struct.pack(">HHHB", tid, 0, len(body) + 1, unit) + body)
                await w.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            w.close()


@pytest.mark.parametrize(("mode", "reason"), [("wrong_unit", "wrong_unit"),
                                              ("short", "wrong_count")])
async def test_wrong_unit_and_wrong_count_are_reported(mode: str, reason: str) -> None:
    port = free_port()
    rogue = RogueServer(mode)
    await rogue.start(port)
    cfg = ModbusDeviceConfig.model_validate(pump_modbus_config(
        port=port, poll_interval_s=0.05, timeout_s=0.3, retries=0))
    metrics, reporter = metrics_and_reporter()
    source = ModbusSource(cfg, pump_registry(2), reporter, metrics)
    emit = Collector()
    try:
        await _run_for(source, emit, 0.6)
    finally:
        await rogue.stop()
    assert counter(metrics, "gearwatch_bad_input_total", source=SRC, reason=reason) >= 1
    if mode == "wrong_unit":  # unit 1 is answered properly and keeps streaming
        assert any(int(a) == 0 for a in emit.all().asset)
        assert not any(int(a) == 1 for a in emit.all().asset)
