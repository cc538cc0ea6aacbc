"""Test helpers: agent configs, MQTT collectors, InfluxDB queries."""

from __future__ import annotations

import tempfile
import threading
import time
from typing import Any

import httpx
import orjson
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from edge_agent.config import AgentConfig, parse_config
from edge_agent.runner import AgentThread, wait_until
from gearwatch.localservers import free_port

__all__ = ["AgentThread", "Collector", "agent_config", "influx_field_count", "wait_until"]


def agent_config(mqtt_port: int, influx_url: str | None, db: str, n_assets: int = 3,
                 **overrides: Any) -> AgentConfig:
    data: dict[str, Any] = {
        "agent": {"site": "test", "state_dir": tempfile.mkdtemp(prefix="gearwatch-state-")},
        "console": {"port": free_port()},
        "mqtt": {"port": mqtt_port, "client_id": f"agent-{db}"},
        "influx": {"enabled": influx_url is not None, "url": influx_url or "http://x",
                   "database": db},
        "metrics": {"port": free_port()},
        "assets": [{"id": f"pump-{i}", "class": "centrifugal_pump"}
                   for i in range(1, n_assets + 1)],
    }
    for section, values in overrides.items():
        if isinstance(values, dict):
            data.setdefault(section, {}).update(values)
        else:
            data[section] = values
    return parse_config(data)


class Collector:
    """Subscribes to topics on a real broker and keeps every message."""

    def __init__(self, port: int, topics: list[str]) -> None:
        self.messages: list[tuple[str, bytes]] = []
        self._lock = threading.Lock()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2,
                                  client_id=f"collector-{time.time_ns()}")
        self.ready = threading.Event()

        def on_connect(c: mqtt.Client, *_: object) -> None:
            for t in topics:
                c.subscribe(t, qos=1)

        def on_subscribe(*_: object) -> None:
            self.ready.set()

        def on_message(c: mqtt.Client, u: object, msg: mqtt.MQTTMessage) -> None:
            with self._lock:
                self.messages.append((msg.topic, bytes(msg.payload)))

        self.client.on_connect = on_connect
        self.client.on_subscribe = on_subscribe
        self.client.on_message = on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        assert self.ready.wait(10), "collector did not subscribe"

    def json(self) -> list[tuple[str, Any]]:
        with self._lock:
            return [(t, orjson.loads(p)) for t, p in self.messages]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def influx_query(url: str, db: str, q: str) -> list[dict[str, Any]]:
    r = httpx.get(url + "/query", params={"db": db, "q": q, "epoch": "ns"}, timeout=30)
    r.raise_for_status()
    res = r.json()["results"][0]
    if "error" in res:
        raise AssertionError(f"InfluxQL error for {q!r}: {res['error']}")
    return list(res.get("series", []))


def influx_field_count(url: str, db: str, measurement: str = "telemetry") -> int:
    """Total number of field values (= samples) in a measurement."""
    total = 0
    for s in influx_query(url, db, f'SELECT COUNT(*) FROM "{measurement}"'):
        total += sum(v for v in s["values"][0][1:] if v)
    return total
