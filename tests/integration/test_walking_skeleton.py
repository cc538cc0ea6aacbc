"""The whole path on real servers: simulated pumps -> Mosquitto -> agent -> InfluxDB + alerts."""

from __future__ import annotations

import pytest

from gearwatch.localservers import LocalServer
from simulators.faults import Fault
from simulators.mqtt_publisher import publish_fleet
from tests.helpers import AgentThread, Collector, agent_config, influx_field_count, wait_until

pytestmark = pytest.mark.integration

FAULT_AT_S = 4500.0


def test_bearing_fault_is_alerted_and_every_sample_stored(
    mosquitto: LocalServer, influxdb: LocalServer, db_name: str
) -> None:
    cfg = agent_config(mosquitto.port, influxdb.url, db_name)
    alerts = Collector(mosquitto.port, ["plant/test/+/alerts"])
    with AgentThread(cfg) as at:
        assert at.agent is not None
        rep = publish_fleet(
            "127.0.0.1", mosquitto.port, ["pump-1", "pump-2", "pump-3"], duration_s=5400,
            site="test", speedup=0, seed=3, qos=1,
            faults=[Fault("pump-2", "bearing_wear", FAULT_AT_S, 1.0, 120.0)],
        )
        agent = at.agent
        wait_until(lambda: agent.state.samples >= rep.samples, 60, "agent to receive all")
        assert agent.influx is not None
        wait_until(lambda: influx_field_count(influxdb.url, db_name) >= rep.samples, 60,
                   "InfluxDB to hold every sample")
        wait_until(lambda: any(p["kind"] == "open" for _, p in alerts.json()), 10,
                   "an alert")
    opened = [p for _, p in alerts.json() if p["kind"] == "open"]
    alerts.close()
    assert {p["asset"] for p in opened} == {"pump-2"}, opened
    first = min(opened, key=lambda p: p["start_ns"])
    onset_ns = rep.labels[0].start_ns
    ticks_after = (first["start_ns"] - onset_ns) / 1e9
    assert 0 <= ticks_after <= 120, f"event started {ticks_after} s after the fault's onset"
    top = [s["sensor"] for s in first["top_sensors"]]
    assert {"bearing_temp_c", "vibration_x_mm_s", "vibration_y_mm_s"} & set(top), top
    # nothing lost, nothing invented: every sample the simulator sent is one field value
    assert influx_field_count(influxdb.url, db_name) == rep.samples
