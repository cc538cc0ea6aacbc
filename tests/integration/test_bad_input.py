"""Bad input over a real broker: counted, dead-lettered, good samples beside it kept, no crash."""

from __future__ import annotations

import base64
import time

import httpx
import orjson
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from prometheus_client.parser import text_string_to_metric_families

from gearwatch.localservers import LocalServer
from tests.helpers import AgentThread, Collector, agent_config, influx_field_count, wait_until

pytestmark = pytest.mark.integration


def metric(port: int, name: str, **labels: str) -> float:
    """A sample's value, scraped from the agent's real /metrics endpoint."""
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return float(s.value)
    return 0.0


def test_each_kind_of_bad_input(mosquitto: LocalServer, influxdb: LocalServer,
                                db_name: str) -> None:
    cfg = agent_config(mosquitto.port, influxdb.url, db_name,
                       mqtt={"max_payload_bytes": 4096})
    dead = Collector(mosquitto.port, ["gearwatch/test/deadletter"])
    pub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bad-publisher")
    pub.connect("127.0.0.1", mosquitto.port)
    pub.loop_start()
    now = time.time_ns()
    t = "plant/test/pump-1/telemetry"
    cases: list[tuple[str, bytes]] = [
        (t, b'{"ts": 1, "values": {'),  # malformed
        (t, b'{"ts": %d, "values": {"speed_rpm": NaN}}' % now),  # NaN is not JSON
        (t, orjson.dumps({"ts": now, "values": {"speed_rpm": "fast", "flow_m3h": 80.0}})),
        (t, orjson.dumps({"ts": now + 1, "values": {"flux": 1.0, "bearing_temp_c": 50.0}})),
        (t, orjson.dumps({"ts": now + 3600 * 10**9, "values": {"speed_rpm": 1.0}})),
        (t, orjson.dumps({"ts": now + 2, "values": {"winding_temp_c": 1e6,
                                                     "vibration_x_mm_s": 1.1}})),
        ("plant/test/pump-99/telemetry", orjson.dumps({"ts": now, "values": {"speed_rpm": 1}})),
        (t, orjson.dumps({"ts": now, "values": {"speed_rpm": 1.0}, "pad": "x" * 5000})),
        (t, bytes(range(256))),  # binary noise
    ]
    with AgentThread(cfg) as at:
        for topic, payload in cases:
            pub.publish(topic, payload, qos=1).wait_for_publish(5)
        # the good samples riding in bad messages: flow, bearing temp, vibration
        wait_until(lambda: influx_field_count(influxdb.url, db_name) >= 3, 20, "good samples")
        wait_until(lambda: len(dead.messages) >= 9, 10, "dead letters")
        port = cfg.metrics.port
        reasons = {
            "malformed_json": 3, "non_numeric": 1, "unknown_sensor": 1,
            "timestamp_out_of_bounds": 1, "out_of_range": 1, "unknown_asset": 1, "oversized": 1,
        }
        for reason, n in reasons.items():
            assert metric(port, "gearwatch_bad_input_total", source="mqtt", reason=reason) == n
        assert at.agent is not None and at.agent.state.samples == 3
    pub.loop_stop()
    assert influx_field_count(influxdb.url, db_name) == 3
    docs = [orjson.loads(p) for _, p in dead.messages]
    dead.close()
    assert sorted({d["reason"] for d in docs}) == sorted(reasons)
    noise = next(d for d in docs if base64.b64decode(d["raw_b64"]) == bytes(range(256)))
    assert noise["where"] == t and noise["source"] == "mqtt"
