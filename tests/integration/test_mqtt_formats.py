"""`value` and `sparkplug_b` payloads through a real Mosquitto broker into the decoders."""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

import numpy as np
import paho.mqtt.client as mqtt
import pytest

from edge_agent.batch import SampleBatch
from edge_agent.sources.payloads import DECODERS, DecodeContext
from edge_agent.sources.sparkplug import Rebirth, SparkplugDecoder, SparkplugMapping, StateChange
from edge_agent.sources.sparkplug_proto import DOUBLE, UINT64, Payload, parse_payload
from simulators.pump import SENSORS, PumpFleet
from tests.inputs_support import mosquitto, pump_registry

pytestmark = pytest.mark.integration


def client(port: int, cid: str, will: tuple[str, bytes] | None = None) -> mqtt.Client:
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=cid)
    if will:
        c.will_set(will[0], will[1], qos=1)
    c.connect("127.0.0.1", port, keepalive=5)
    c.loop_start()
    return c


class Host:
    """The agent's side in miniature: subscribe, decode, act on signals (publish rebirths)."""

    def __init__(self, port: int, topic: str, decoder: Any, ctx: DecodeContext) -> None:
        self.decoder = decoder
        self.ctx = ctx
        self.batches: list[SampleBatch] = []
        self.rejects: list[str] = []
        self.signals: list[Any] = []
        self.lock = threading.Lock()
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="host")
        self.c.on_message = self._on_message
        subscribed = threading.Event()
        self.c.on_subscribe = lambda *a: subscribed.set()
        self.c.on_connect = lambda c, *a: c.subscribe(topic, qos=1)
        self.c.connect("127.0.0.1", port)
        self.c.loop_start()
        assert subscribed.wait(5)

    def _on_message(self, c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        b, rej = self.decoder(msg.topic, msg.payload, self.ctx)
        with self.lock:
            if len(b):
                self.batches.append(b)
            self.rejects += [r.reason for r in rej]
        for sig in getattr(self.decoder, "drain_signals", list)():
            self.signals.append(sig)
            if isinstance(sig, Rebirth):
                c.publish(*sig.message(int(time.time() * 1000)), qos=1)

    def wait(self, cond: Any, timeout: float = 5.0) -> bool:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            with self.lock:
                if cond():
                    return True
            time.sleep(0.02)
        return False

    def stop(self) -> None:
        self.c.loop_stop()
        self.c.disconnect()


def latest(batches: list[SampleBatch]) -> dict[tuple[int, int], float]:
    b = SampleBatch.concat(batches)
    return {(int(a), int(s)): float(v) for a, s, v in zip(b.asset, b.sensor, b.value,
                                                          strict=True)}


def test_value_format_one_topic_per_sensor() -> None:
    rows = PumpFleet(["pump-1", "pump-2"], seed=8).step()
    with mosquitto() as port:
        ctx = DecodeContext(pump_registry(2), topic_template="plant/{site}/{asset}/{sensor}")
        host = Host(port, "plant/#", DECODERS["value"], ctx)
        pub = client(port, "gateway")
        try:
            for a in range(2):
                for s, name in enumerate(SENSORS):
                    payload = repr(float(rows[a, s])).encode() if s % 2 else \
                        b'{"ts": %d, "value": %r}' % (time.time_ns(), float(rows[a, s]))
                    pub.publish(f"plant/s1/pump-{a + 1}/{name}", payload, qos=1)
            pub.publish("plant/s1/pump-1/speed_rpm", b"\x00\xffgarbage", qos=1)
            pub.publish("plant/s1/pump-1/no_such_sensor", b"1", qos=1)
            assert host.wait(lambda: len(latest(host.batches)) == 18 and len(host.rejects) == 2)
            got = latest(host.batches)
            for a in range(2):
                for s in range(9):
                    assert got[(a, s)] == rows[a, s]
            assert sorted(host.rejects) == ["malformed_value", "unknown_sensor"]
        finally:
            pub.loop_stop()
            host.stop()


class EdgeNode:
    """A Sparkplug B edge node with one device (a pump drive), answering rebirth commands."""

    def __init__(self, port: int, bdseq: int = 0) -> None:
        self.seq = 0
        self.bdseq = bdseq
        death = Payload(timestamp=int(time.time() * 1000))
        death.metrics.add(name="bdSeq", datatype=UINT64, long_value=bdseq)
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="gw1")
        self.c.will_set("spBv1.0/plant/NDEATH/gw1", death.SerializeToString(), qos=1)
        self.c.on_message = self._on_command
        self.rebirths = 0
        ready = threading.Event()
        self.c.on_subscribe = lambda *a: ready.set()
        self.c.on_connect = lambda c, *a: c.subscribe("spBv1.0/plant/NCMD/gw1", qos=1)
        self.c.connect("127.0.0.1", port, keepalive=2)
        self.c.loop_start()
        assert ready.wait(5)

    def _next(self) -> int:
        s, self.seq = self.seq, (self.seq + 1) % 256
        return s

    def _on_command(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        p = parse_payload(bytes(msg.payload))
        if any(m.name == "Node Control/Rebirth" and m.boolean_value for m in p.metrics):
            self.rebirths += 1
            self.births()

    def births(self, row: np.ndarray | None = None) -> None:
        self.seq = 0
        nb = Payload(timestamp=int(time.time() * 1000), seq=self._next())
        nb.metrics.add(name="bdSeq", datatype=UINT64, long_value=self.bdseq)
        self.c.publish("spBv1.0/plant/NBIRTH/gw1", nb.SerializeToString(), qos=1)
        db = Payload(timestamp=int(time.time() * 1000), seq=self._next())
        for i, name in enumerate(SENSORS):
            db.metrics.add(name=f"Pump/{name}", alias=100 + i, datatype=DOUBLE,
                           double_value=0.0 if row is None else float(row[i]))
        self.c.publish("spBv1.0/plant/DBIRTH/gw1/drive-7", db.SerializeToString(), qos=1)

    def data(self, row: np.ndarray) -> None:
        p = Payload(timestamp=int(time.time() * 1000), seq=self._next())
        for i in range(len(SENSORS)):
            p.metrics.add(alias=100 + i, datatype=DOUBLE, double_value=float(row[i]))
        self.c.publish("spBv1.0/plant/DDATA/gw1/drive-7", p.SerializeToString(), qos=1)

    def crash(self) -> None:
        """Drop the TCP connection without DISCONNECT: the broker publishes the NDEATH will."""
        self.c.loop_stop()
        sock = self.c.socket()
        if sock is not None:
            sock.shutdown(socket.SHUT_RDWR)  # type: ignore[attr-defined]
            sock.close()


def test_sparkplug_b_births_data_late_host_rebirth_and_death() -> None:
    fleet = PumpFleet(["pump-2"], seed=9)
    mapping = SparkplugMapping(device_assets={"drive-7": "pump-2"},
                               metric_sensors={f"Pump/{n}": n for n in SENSORS})
    with mosquitto() as port:
        node = EdgeNode(port, bdseq=5)
        # the edge node was up before the agent: the agent's first message is a DDATA
        node.births()
        ctx = DecodeContext(pump_registry(2))
        host = Host(port, "spBv1.0/plant/#", SparkplugDecoder(mapping), ctx)
        try:
            row = fleet.step()[0]
            node.data(row)
            # unknown to the host -> rebirth requested over NCMD -> the node re-births
            assert host.wait(lambda: node.rebirths >= 1)
            assert host.wait(lambda: any(isinstance(s, Rebirth) for s in host.signals))
            assert "not_born" in host.rejects
            time.sleep(0.2)
            host.batches.clear()
            rows = [fleet.step()[0] for _ in range(3)]
            for r in rows:
                node.data(r)
            assert host.wait(lambda: sum(len(b) for b in host.batches) >= 27)
            b = SampleBatch.concat(host.batches)
            np.testing.assert_array_equal(b.value[-9:], rows[-1])
            assert set(b.asset.tolist()) == {1}
            assert b.sensor[-9:].tolist() == list(range(9))
            assert "seq_gap" not in host.rejects
            # a payload that is not protobuf: rejected, the stream goes on
            node.c.publish("spBv1.0/plant/DDATA/gw1/drive-7", b"\xff\x00garbage", qos=1)
            node.data(fleet.step()[0])
            assert host.wait(lambda: "malformed_protobuf" in host.rejects)
            node.crash()
            assert host.wait(lambda: StateChange("plant/gw1/drive-7", "lost", ("pump-2",))
                             in host.signals, timeout=8)
        finally:
            host.stop()
