"""The serial source reading the pump's serial instrument on a real pseudo-terminal."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge_agent.sources.serial_config import SerialPortConfig
from edge_agent.sources.serial_port import SerialSource
from simulators.serial_instrument import SerialInstrumentSim
from tests.inputs_support import Collector, counter, metrics_and_reporter, pump_registry

pytestmark = pytest.mark.integration


@contextlib.asynccontextmanager
async def serial_source(**kw: Any) -> AsyncIterator[tuple[SerialSource, Collector]]:
    cfg = SerialPortConfig.model_validate({"name": "inst", "asset": "pump-1", "baudrate": 115200,
                                           "read_timeout_s": 0.02, "reopen_backoff_s": 0.05,
                                           "reopen_backoff_max_s": 0.2, **kw})
    metrics, reporter = metrics_and_reporter()
    states: list[tuple[str, str]] = []
    src = SerialSource(cfg, pump_registry(1), reporter, metrics,
                       on_state=lambda d, s: states.append((d, s)))
    src.states = states  # type: ignore[attr-defined]
    emit = Collector()
    task = asyncio.create_task(src.run(emit))
    try:
        yield src, emit
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_streaming_csv_lines_noise_and_half_lines() -> None:
    sim = SerialInstrumentSim("pump-1", fmt="csv", seed=1)
    try:
        async with serial_source(port=sim.path, framing="csv") as (src, emit):
            await asyncio.sleep(0.2)  # the port is open before the instrument talks
            row = sim.step()
            sim.emit_line()
            b = await emit.wait_for(9)
            np.testing.assert_allclose(b.value, row, atol=1e-6)
            assert b.asset.tolist() == [0] * 9 and b.sensor.tolist() == list(range(9))
            sim.write(b"\x00\xff\x13\x37binary\xfe\n")  # noise
            sim.write(b"1480.1,12.0,1.9\n")  # half a line (3 of 9 columns)
            row = sim.step()
            sim.emit_line()
            b = await emit.wait_for(18)
            np.testing.assert_allclose(b.value[-9:], row, atol=1e-6)
            m = src.metrics
            assert counter(m, "gearwatch_bad_input_total", source="serial:inst",
                           reason="bad_line") == 1
            assert counter(m, "gearwatch_bad_input_total", source="serial:inst",
                           reason="bad_encoding") == 1
            assert src.health()["inst"]["state"] == "ok"
    finally:
        sim.close()


async def test_polled_instrument_answers_requests() -> None:
    sim = SerialInstrumentSim("pump-1", fmt="kv", mode="polled", request=b"MEAS?\r\n")
    sim.start(speedup=20)
    try:
        async with serial_source(port=sim.path, framing="kv", request="MEAS?\r\n",
                                 request_interval_s=0.05) as (_src, emit):
            b = await emit.wait_for(27)
            assert len(b) >= 27 and sim.requests_seen >= 3
            assert set(b.sensor.tolist()) == set(range(9))
    finally:
        sim.close()


async def test_port_that_disappears_is_reopened(tmp_path: Path) -> None:
    link = tmp_path / "ttyPUMP"  # like a udev by-id symlink
    sim = SerialInstrumentSim("pump-1", fmt="json", seed=2)
    os.symlink(sim.path, link)
    sim2 = None
    try:
        async with serial_source(port=str(link), framing="json") as (src, emit):
            await asyncio.sleep(0.2)
            sim.step()
            sim.emit_line()
            await emit.wait_for(9)
            sim.close()  # unplugged
            link.unlink()
            for _ in range(100):
                await asyncio.sleep(0.02)
                if src.health()["inst"]["state"] == "lost":
                    break
            assert src.health()["inst"]["state"] == "lost"
            sim2 = SerialInstrumentSim("pump-1", fmt="json", seed=3)
            os.symlink(sim2.path, link)  # plugged in again
            rows = []
            for _ in range(100):
                await asyncio.sleep(0.05)
                rows.append(sim2.step())
                sim2.emit_line()
                if len(emit.all()) >= 18:
                    break
            b = emit.all()
            assert len(b) >= 18
            assert any(np.allclose(b.value[-9:], r, atol=1e-6) for r in rows)
            assert src.states[0] == ("inst", "lost")  # type: ignore[attr-defined]
            assert src.states[-1] == ("inst", "ok")  # type: ignore[attr-defined]
    finally:
        sim.close()
        if sim2:
            sim2.close()
