"""The gateway broker as shipped (deploy/mosquitto/: TLS only, password file, ACL), run for
real on loopback with a CA and certificates made here: the agent works through it, and
nobody gets in or out who should not."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from edge_agent.config import AgentConfig
from gearwatch import localservers as ls
from simulators.faults import Fault
from simulators.mqtt_publisher import publish_fleet
from tests.helpers import AgentThread, agent_config, influx_field_count, wait_until

pytestmark = pytest.mark.integration

SITE = "plant1"  # the ACL's example site (pump-1-sensor may write plant/plant1/pump-1/...)
USERS = {"gearwatch-agent": "agent-secret", "sensor-gateway": "gateway-secret",
         "pump-1-sensor": "pump1-secret", "dashboard": "dashboard-secret"}
NOT_AUTHORIZED = 135  # MQTT 5 reason code 0x87


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ls.LocalServer]:
    with ls.secure_mosquitto(tmp_path_factory.mktemp("secure"), USERS).start() as b:
        yield b


class Client:
    """A paho MQTT 5 client that keeps CONNACK, SUBACK and PUBACK reason codes."""

    def __init__(self, broker: ls.LocalServer, user: str | None, password: str | None = None,
                 tls: bool = True, cert: tuple[Path, Path] | None = None) -> None:
        assert broker.pki is not None
        self.cond = threading.Condition()
        self.connack: ReasonCode | None = None
        self.disconnected = False
        self.messages: list[tuple[str, bytes]] = []
        self.subacks: dict[int, list[ReasonCode]] = {}
        self.pubacks: dict[int, ReasonCode] = {}
        self.c = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5,
                             client_id=f"{user or 'anon'}-{time.time_ns()}")
        if user:
            self.c.username_pw_set(user, password)
        if tls:
            self.c.tls_set(ca_certs=str(broker.pki.ca_crt),
                           certfile=str(cert[0]) if cert else None,
                           keyfile=str(cert[1]) if cert else None)
        self.c.on_connect = self._on_connect
        self.c.on_disconnect = self._on_disconnect
        self.c.on_message = self._on_message
        self.c.on_subscribe = self._on_subscribe
        self.c.on_publish = self._on_publish
        self.c.connect("127.0.0.1", broker.port, keepalive=30)
        self.c.loop_start()
        with self.cond:
            assert self.cond.wait_for(lambda: self.connack is not None or self.disconnected, 10)

    def _on_connect(self, c: mqtt.Client, u: object, flags: object, rc: ReasonCode,
                    props: object) -> None:
        with self.cond:
            self.connack = rc
            self.cond.notify_all()

    def _on_disconnect(self, c: mqtt.Client, u: object, flags: object, rc: object,
                       props: object) -> None:
        with self.cond:
            self.disconnected = True
            self.cond.notify_all()

    def _on_message(self, c: mqtt.Client, u: object, msg: mqtt.MQTTMessage) -> None:
        with self.cond:
            self.messages.append((msg.topic, bytes(msg.payload)))
            self.cond.notify_all()

    def _on_subscribe(self, c: mqtt.Client, u: object, mid: int, rcs: list[ReasonCode],
                      props: object) -> None:
        with self.cond:
            self.subacks[mid] = rcs
            self.cond.notify_all()

    def _on_publish(self, c: mqtt.Client, u: object, mid: int, rc: ReasonCode,
                    props: object) -> None:
        with self.cond:
            self.pubacks[mid] = rc
            self.cond.notify_all()

    @property
    def accepted(self) -> bool:
        return self.connack is not None and not self.connack.is_failure

    def publish(self, topic: str, payload: bytes) -> ReasonCode:
        """QoS 1; the broker's PUBACK reason."""
        mid = self.c.publish(topic, payload, qos=1).mid
        with self.cond:
            assert self.cond.wait_for(lambda: mid in self.pubacks, 10), "no PUBACK"
            return self.pubacks[mid]

    def subscribe(self, topic: str) -> ReasonCode:
        _, mid = self.c.subscribe(topic, qos=1)
        assert mid is not None
        with self.cond:
            assert self.cond.wait_for(lambda: mid in self.subacks, 10), "no SUBACK"
            return self.subacks[mid][0]

    def wait_message(self, n: int = 1, timeout: float = 10) -> list[tuple[str, bytes]]:
        with self.cond:
            assert self.cond.wait_for(lambda: len(self.messages) >= n, timeout), "no message"
            return list(self.messages)

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


def secure_config(broker: ls.LocalServer, tmp_path: Path, db: str, influx_url: str | None,
                  **mqtt: Any) -> AgentConfig:
    """The agent as deployed: TLS with the site CA, its own user, the password in a file."""
    assert broker.pki is not None
    pw = tmp_path / "mqtt-password"
    pw.write_text(USERS["gearwatch-agent"] + "\n")
    pw.chmod(0o600)
    return agent_config(broker.port, influx_url, db, agent={"site": SITE}, mqtt={
        "tls": True, "ca_file": str(broker.pki.ca_crt), "username": "gearwatch-agent",
        "password_file": str(pw), "password_env": "GEARWATCH_TEST_UNSET", **mqtt})


def row(ts: int) -> bytes:
    return orjson.dumps({"ts": ts, "seq": 1, "values": {"speed_rpm": 1480.0}})


def test_agent_over_tls_with_password_scores_and_alerts(
    broker: ls.LocalServer, influxdb: ls.LocalServer, tmp_path: Path, db_name: str,
) -> None:
    assert broker.pki is not None
    dashboard = Client(broker, "dashboard", USERS["dashboard"])
    assert dashboard.accepted and dashboard.subscribe(f"plant/{SITE}/+/alerts").value == 1
    cfg = secure_config(broker, tmp_path, db_name, influxdb.url)
    with AgentThread(cfg) as at:
        agent = at.agent
        assert agent is not None
        rep = publish_fleet(
            "127.0.0.1", broker.port, ["pump-1", "pump-2", "pump-3"], duration_s=5400,
            site=SITE, speedup=0, seed=3, qos=1, username="sensor-gateway",
            password=USERS["sensor-gateway"], ca_file=str(broker.pki.ca_crt),
            faults=[Fault("pump-2", "bearing_wear", 4500.0, 1.0, 120.0)],
        )
        assert rep.refused == 0
        wait_until(lambda: influx_field_count(influxdb.url, db_name) >= rep.samples, 60,
                   "InfluxDB to hold every sample")
        alerts = dashboard.wait_message(1, timeout=30)
    dashboard.close()
    opened = [orjson.loads(p) for _, p in alerts]
    assert {p["asset"] for p in opened if p["kind"] == "open"} == {"pump-2"}
    assert influx_field_count(influxdb.url, db_name) == rep.samples


def test_no_credentials_or_a_wrong_password_is_refused(broker: ls.LocalServer) -> None:
    for user, password in ((None, None), ("gearwatch-agent", "wrong"), ("nobody", "x")):
        c = Client(broker, user, password)
        assert c.connack is not None and c.connack.value == NOT_AUTHORIZED, (user, c.connack)
        c.close()
    ok = Client(broker, "gearwatch-agent", USERS["gearwatch-agent"])
    assert ok.accepted
    ok.close()


def test_acl_keeps_clients_to_their_topics(
    broker: ls.LocalServer, tmp_path: Path, db_name: str,
) -> None:
    cfg = secure_config(broker, tmp_path, db_name, None)
    dashboard = Client(broker, "dashboard", USERS["dashboard"])
    pump1 = Client(broker, "pump-1-sensor", USERS["pump-1-sensor"])
    with AgentThread(cfg) as at:
        agent = at.agent
        assert agent is not None
        now = time.time_ns()
        # a reader may not write telemetry, a pump's sensor only its own topic
        assert dashboard.publish(f"plant/{SITE}/pump-1/telemetry", row(now)).value == \
            NOT_AUTHORIZED
        assert pump1.publish(f"plant/{SITE}/pump-2/telemetry", row(now)).value == NOT_AUTHORIZED
        assert pump1.publish(f"plant/{SITE}/pump-1/alerts", b"{}").value == NOT_AUTHORIZED
        # the allowed one goes after the refused ones through the agent's one ordered stream:
        # once it is in, a refused message that had been routed would be in too
        assert not pump1.publish(f"plant/{SITE}/pump-1/telemetry", row(now + 1)).is_failure
        wait_until(lambda: agent.state.samples >= 1, 10, "the allowed sample")
        assert agent.state.samples == 1, "a refused publish reached the agent"

        # alerts: the dashboard reads them, a sensor does not.  Mosquitto 2.0 grants every
        # SUBACK (checked here: QoS 1 granted) and applies `read` rights to each message
        assert dashboard.subscribe(f"plant/{SITE}/+/alerts").value == 1
        for topic in (f"plant/{SITE}/pump-1/alerts", f"plant/{SITE}/+/alerts", "#"):
            assert pump1.subscribe(topic).value == 1
        assert agent.mqtt is not None
        agent.mqtt.publish(f"plant/{SITE}/pump-1/alerts", b'{"kind": "open"}', qos=1)
        assert dashboard.wait_message(1)[0][0] == f"plant/{SITE}/pump-1/alerts"
        # fence: a round trip on pump1's own connection after the broker routed the alert
        assert not pump1.publish(f"plant/{SITE}/pump-1/telemetry", row(now + 2)).is_failure
        assert pump1.messages == [], "a sensor read the agent's alerts"
    dashboard.close()
    pump1.close()


def test_plain_tcp_cannot_talk_to_the_tls_port(broker: ls.LocalServer) -> None:
    connect = (b"\x10\x10\x00\x04MQTT\x04\x02\x00\x3c" + b"\x00\x04test")  # MQTT 3.1.1 CONNECT
    with socket.create_connection(("127.0.0.1", broker.port), timeout=5) as s:
        s.sendall(connect)
        try:
            answer = s.recv(64)
        except (ConnectionResetError, TimeoutError):
            answer = b""
    assert not answer.startswith(b"\x20"), "a CONNACK over plain TCP"
    c = Client(broker, "gearwatch-agent", USERS["gearwatch-agent"], tls=False)
    assert not c.accepted
    c.close()


def test_mutual_tls(tmp_path: Path, db_name: str) -> None:
    """require_certificate (commented in the shipped file) on: the agent presents its
    certificate; a client with the right password but none is refused."""
    base = tmp_path / "mtls"
    with ls.secure_mosquitto(base, USERS, require_certificate=True).start() as b:
        assert b.pki is not None
        cfg = secure_config(b, tmp_path, db_name, None, cert_file=str(b.pki.client_crt),
                            key_file=str(b.pki.client_key))
        with AgentThread(cfg) as at:  # start() waits for the MQTT connection
            assert at.agent is not None and at.agent.mqtt is not None
            assert at.agent.mqtt.connected.is_set()
        try:
            c = Client(b, "gearwatch-agent", USERS["gearwatch-agent"])
            refused = not c.accepted
            c.close()
        except OSError:  # the handshake itself failed (TLS 1.2 asks for the cert up front)
            refused = True
        assert refused, "connected without a client certificate"
