"""One paho-mqtt 2.x connection per agent, shared by the MQTT source and the MQTT sinks.

paho rather than aiomqtt: only paho exposes manual QoS 1 acknowledgement (`manual_ack`), and
the delivery promise needs ack-after-persist; it also costs 2-4x less CPU per message.  Its
network loop runs in its own thread and reconnects by itself (capped backoff); the session is
persistent (MQTT 5, clean_start false, a session expiry), so QoS 1 messages that arrive while
the agent is down wait in the broker.
"""

from __future__ import annotations

import logging
import ssl
import threading
from collections.abc import Callable

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edge_agent.config import MqttSection

log = logging.getLogger("gearwatch.mqtt")


class MqttConnection:
    def __init__(self, cfg: MqttSection, client_id: str | None = None) -> None:
        self.cfg = cfg
        self.connected = threading.Event()
        self._stopping = False
        self._on_connect_hooks: list[Callable[[mqtt.Client], None]] = []
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id or cfg.client_id,
            protocol=mqtt.MQTTv5,
            manual_ack=cfg.qos == 1,
        )
        if cfg.username:
            self.client.username_pw_set(cfg.username, cfg.secret())
        if cfg.tls:
            self.client.tls_set(ca_certs=cfg.ca_file, cert_reqs=ssl.CERT_REQUIRED)
        self.client.max_inflight_messages_set(1000)
        self.client.reconnect_delay_set(min_delay=1, max_delay=30)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect

    def add_on_connect(self, hook: Callable[[mqtt.Client], None]) -> None:
        self._on_connect_hooks.append(hook)

    def _on_connect(self, client: mqtt.Client, userdata: object, flags: mqtt.ConnectFlags,
                    reason_code: object, properties: object) -> None:
        if getattr(reason_code, "is_failure", False):
            log.error("MQTT broker %s:%s refused the connection: %s", self.cfg.host,
                      self.cfg.port, reason_code, extra={"source": "mqtt"})
            return
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
