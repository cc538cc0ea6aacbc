"""MQTT source: subscribed topics -> payload decoder -> `SampleBatch` with an ack attached.

Decoding runs in paho's network thread, off the event loop.  Every QoS 1 message's ack rides
with its batch, also when it carried no good sample, so acks leave in the order messages came.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt

from edge_agent.bad_input import BadInputReporter
from edge_agent.batch import SampleBatch
from edge_agent.metrics import AgentMetrics
from edge_agent.sources.base import Emit
from edge_agent.sources.mqtt_connection import MqttConnection
from edge_agent.sources.payloads import DECODERS, DecodeContext, Decoder
from edge_agent.sources.sparkplug import Rebirth, StateChange

log = logging.getLogger("gearwatch.mqtt")


class MqttSource:
    def __init__(
        self,
        conn: MqttConnection,
        ctx: DecodeContext,
        reporter: BadInputReporter,
        metrics: AgentMetrics,
        name: str = "mqtt",
        decoder: Decoder | None = None,
        on_state: Callable[[str, str], None] | None = None,
    ) -> None:
        self.name = name
        self.conn = conn
        self.ctx = ctx
        self.reporter = reporter
        self.metrics = metrics
        self.decode = decoder or DECODERS[conn.cfg.format]
        self.on_state = on_state  # stateful decoders (Sparkplug B): a node/device lost or back
        self.emit: Emit | None = None
        self._samples = metrics.samples_in.labels(name)
        self._messages = metrics.messages_in.labels(name)

    def attach(self, emit: Emit) -> None:
        """Start delivering into `emit`; subscriptions are (re)made on every connect."""
        self.emit = emit
        self.conn.client.on_message = self._on_message
        self.conn.add_on_connect(self._subscribe)

    def detach(self) -> None:
        """Stop delivering (shutdown): later messages are not acknowledged, so redelivered."""
        self.emit = None

    def _subscribe(self, client: mqtt.Client) -> None:
        for t in self.conn.cfg.topics:
            client.subscribe(t, qos=self.conn.cfg.qos)
        log.info("subscribed to %s (QoS %d)", self.conn.cfg.topics, self.conn.cfg.qos)

    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        if self.emit is None:
            return  # detached: the broker redelivers it to the next session
        self._messages.inc()
        try:
            batch, rejects = self.decode(msg.topic, bytes(msg.payload), self.ctx)
        except Exception as e:  # a decoder bug must not kill paho's thread or lose the ack
            log.exception("decoder crashed on a message from %s", msg.topic)
            batch, rejects = SampleBatch.empty(), []
            from edge_agent.bad_input import Reject

            rejects.append(Reject("decoder_error", repr(e), bytes(msg.payload), msg.topic))
        for r in rejects:
            self.reporter.report(self.name, r)
        drain = getattr(self.decode, "drain_signals", None)
        if drain is not None:
            self._act_on(drain())
        batch.source = self.name
        if msg.qos > 0 and self.conn.cfg.qos == 1:
            mid, qos = msg.mid, msg.qos

            def ack() -> None:
                client.ack(mid, qos)

            batch.acks.append(ack)
        if len(batch):
            self._samples.inc(len(batch))
        if (len(batch) or batch.acks) and self.emit is not None:
            self.emit(batch)

    def _act_on(self, signals: list[Any]) -> None:
        """What a stateful decoder asks for: rebirth requests out, lost/ok states on."""
        for sig in signals:
            if isinstance(sig, Rebirth):
                topic, payload = sig.message(time.time_ns() // 1_000_000)
                log.warning("asking Sparkplug node %s/%s to rebirth: %s", sig.group, sig.node,
                            sig.reason)
                self.metrics.sparkplug_rebirths.labels(self.name).inc()
                self.conn.publish(topic, payload, qos=0)
            elif isinstance(sig, StateChange) and self.on_state is not None:
                self.on_state(sig.key, sig.state)
