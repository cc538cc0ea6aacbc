"""One paho-mqtt 2.x connection per agent, shared by the MQTT source and the MQTT sinks.

paho rather than aiomqtt: only paho exposes manual QoS 1 acknowledgement (`manual_ack`), and
the delivery promise needs ack-after-persist; it also costs 2-4x less CPU per message.  Its
network loop runs in its own thread and reconnects by itself (capped backoff); the session is
persistent (MQTT 5, clean_start false, a session expiry), so QoS 1 messages that arrive while
the agent is down wait in the broker.

Reconnect delays are capped exponential *with* jitter.  paho's own schedule (1, 2, 4 ... 30 s)
is the same for every client, and a broker restart disconnects all gateways at the same
instant, so without jitter they all come back in the same second, each with a persistent
session full of queued messages to replay.  paho has no jitter hook; `reconnect_delay_set`
(public) is re-armed with the next jittered delay from the disconnect/connect-fail callbacks,
which paho runs just before it waits.
"""

from __future__ import annotations

import logging
import random
import ssl
import threading
from collections.abc import Callable

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edge_agent.config import MqttSection

log = logging.getLogger("gearwatch.mqtt")

RECONNECT_BASE_S = 1.0
RECONNECT_CAP_S = 30.0


def reconnect_delay(attempt: int, base: float = RECONNECT_BASE_S, cap: float = RECONNECT_CAP_S,
                    rng: random.Random | None = None) -> float:
    """"Equal jitter": half of the capped exponential step fixed, half random.

    The fixed half keeps a floor (no hammering a broker that is down), the random half spreads
    a fleet of agents that all lost the broker at the same moment.
    """
    step = min(cap, base * 2 ** max(attempt - 1, 0))
    return step / 2 + (rng or random).uniform(0, step / 2)


class MqttConnection:
    def __init__(self, cfg: MqttSection, client_id: str | None = None) -> None:
        self.cfg = cfg
        self.connected = threading.Event()
        self._stopping = False
        self._on_connect_hooks: list[Callable[[mqtt.Client], None]] = []
        self._connected_before = False
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id or cfg.client_id,
            protocol=mqtt.MQTTv5,
            manual_ack=cfg.qos == 1,
        )
        if cfg.username:
            self.client.username_pw_set(cfg.username, cfg.secret())
        if cfg.tls:
            self.client.tls_set(ca_certs=cfg.ca_file, certfile=cfg.cert_file,
                                keyfile=cfg.key_file, cert_reqs=ssl.CERT_REQUIRED)
            if cfg.tls_insecure:
                log.warning("mqtt.tls_insecure = true: the broker's hostname is not checked")
                self.client.tls_insecure_set(True)
        self.client.max_inflight_messages_set(1000)
        self.reconnects = 0  # successful connects after the first
        self._attempt = 0
        self._arm_backoff()
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_connect_fail = self._on_connect_fail

    def _arm_backoff(self) -> None:
        """Set paho's next wait to our jittered delay (min = max: paho then waits exactly it)."""
        self._attempt += 1
        d = reconnect_delay(self._attempt)
        self.client.reconnect_delay_set(min_delay=d, max_delay=d)  # type: ignore[arg-type]

    def add_on_connect(self, hook: Callable[[mqtt.Client], None]) -> None:
        self._on_connect_hooks.append(hook)

    def _on_connect(self, client: mqtt.Client, userdata: object, flags: mqtt.ConnectFlags,
                    reason_code: object, properties: object) -> None:
        if getattr(reason_code, "is_failure", False):
            log.error("MQTT broker %s:%s refused the connection: %s", self.cfg.host,
                      self.cfg.port, reason_code, extra={"source": "mqtt"})
            return
        if self._connected_before:
            self.reconnects += 1
        self._connected_before = True
        self._attempt = 0  # the next disconnect starts the schedule again
        log.info("connected to MQTT broker %s:%s (session present: %s)", self.cfg.host,
                 self.cfg.port, flags.session_present, extra={"source": "mqtt"})
        self.connected.set()
        for hook in self._on_connect_hooks:
            hook(client)

    def _on_disconnect(self, client: mqtt.Client, userdata: object, flags: object,
                       reason_code: object, properties: object) -> None:
        if self.connected.is_set() and not self._stopping:
            log.warning("lost the MQTT broker %s:%s (%s); reconnecting", self.cfg.host,
                        self.cfg.port, reason_code, extra={"source": "mqtt"})
        self.connected.clear()
        self._arm_backoff()

    def _on_connect_fail(self, client: mqtt.Client, userdata: object) -> None:
        if self._attempt == 1 or self._attempt % 10 == 0:  # once, then now and then
            log.warning("cannot reach the MQTT broker %s:%s; retrying (attempt %d)",
                        self.cfg.host, self.cfg.port, self._attempt, extra={"source": "mqtt"})
        self._arm_backoff()

    def start(self) -> None:
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = self.cfg.session_expiry_s
        props.ReceiveMaximum = 65535
        self.client.connect_async(
            self.cfg.host, self.cfg.port, keepalive=self.cfg.keepalive_s,
            clean_start=False, properties=props,
        )
        self.client.loop_start()

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> None:
        """Queued by paho while disconnected and sent on reconnect."""
        self.client.publish(topic, payload, qos=qos, retain=retain)

    def stop(self) -> None:
        self._stopping = True
        self.client.disconnect()
        self.client.loop_stop()
