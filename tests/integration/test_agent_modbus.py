"""The whole agent over Modbus TCP: simulator -> Modbus source -> framer -> scorer."""

from __future__ import annotations

import asyncio
import contextlib
import tomllib
from typing import Any

import pytest

from edge_agent.config import ConfigError, load_config, parse_config
from edge_agent.service import Agent
from simulators.pump import SENSORS
from simulators.pump_modbus import PumpModbusSim
from tests.inputs_support import ROOT, counter, free_port

pytestmark = pytest.mark.integration


def agent_config(port: int, **extra: Any) -> dict[str, Any]:
    example = tomllib.loads((ROOT / "deploy/examples/modbus-pump.toml").read_text())
    dev = example["modbus"][0]
    dev.update(port=port, poll_interval_s=0.05, timeout_s=0.5)
    return {
        "mqtt": {"enabled": False},
        "influx": {"enabled": False},
        "metrics": {"enabled": False},
        "scoring": {"warmup_rows": 10, "calibration_rows": 20},
        # the pump's sensors on a fast clock, so a test sees rows scored within seconds
        "asset_classes": [{"name": "fast_pump", "sample_period_s": 0.05,
                           "sensors": [{"name": n} for n in SENSORS]}],
        "assets": [{"id": "pump-1", "class": "fast_pump"}, {"id": "pump-2", "class": "fast_pump"}],
        "modbus": [dev],
        **extra,
    }


async def test_agent_scores_rows_polled_from_the_modbus_simulator() -> None:
    port = free_port()
    sim = PumpModbusSim(["pump-1", "pump-2"], seed=11, dt_s=1.0)
    sim.step()
    await sim.start_tcp(port=port)
    physics = asyncio.create_task(sim.run(speedup=20))
    agent = Agent(parse_config(agent_config(port)))
    run = asyncio.create_task(agent.run())
    try:
        await asyncio.wait_for(agent.ready.wait(), 5)
        for _ in range(150):
            await asyncio.sleep(0.05)
            if counter(agent.metrics, "gearwatch_rows_scored_total", asset_class="fast_pump",
                       scorer="fused") >= 10:
                break
        assert agent.state.samples > 100
        assert counter(agent.metrics, "gearwatch_rows_scored_total", asset_class="fast_pump",
                       scorer="fused") >= 10
        assert counter(agent.metrics, "gearwatch_samples_received_total",
                       source="modbus:pump-skid") > 100
        # the simulator goes away: the agent records the devices as lost
        physics.cancel()
        await sim.stop()
        for _ in range(60):
            await asyncio.sleep(0.05)
            if agent.state.source_states.get("pump-skid/1") == "lost":
                break
        assert agent.state.source_states == {"pump-skid/1": "lost", "pump-skid/2": "lost"}
    finally:
        agent.stop()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(run, 10)
        physics.cancel()
        await sim.stop()


def test_config_names_unknown_assets_and_sensors() -> None:
    cfg = agent_config(5020)
    cfg["modbus"][0]["units"][0]["registers"][0]["sensor"] = "speed"
    with pytest.raises(ConfigError, match="has no sensor 'speed'"):
        parse_config(cfg)
    cfg = agent_config(5020, serial=[{"name": "x", "port": "/dev/ttyUSB0", "asset": "pump-9"}])
    with pytest.raises(ConfigError, match="pump-9"):
        parse_config(cfg)


def test_example_configs_validate_in_the_agent_config() -> None:
    """The worked examples are complete configs the agent accepts as they are."""
    cfg = load_config(ROOT / "deploy/examples/modbus-pump.toml")
    assert [d.name for d in cfg.modbus] == ["pump-skid"]
    assert [a.id for a in cfg.assets] == ["pump-1", "pump-2"]
    cfg = load_config(ROOT / "deploy/examples/serial-instrument.toml")
    assert cfg.serial[0].sensor_map["T_BRG"] == "bearing_temp_c"
