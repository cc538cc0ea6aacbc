"""Operator feedback over MQTT: `plant/<site>/<asset>/feedback`, one JSON object per message.

    {"event_id": "...", "label": "false_alarm", "note": "valve was cycled", "fault_code": "V12",
     "by": "alice"}

The message is decoded in paho's thread and applied on the agent's loop (the same code path
as the console's label button).  Anything wrong with it (not JSON, unknown event, bad label,
an oversized note, the asset in the topic not the event's) goes to the bad-input reporter:
counted, logged once, and published to the dead-letter topic with the raw bytes.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import orjson
import paho.mqtt.client as mqtt

from edge_agent.bad_input import BadInputReporter, Reject
from edge_agent.desk import DeskError, EventDesk
from edge_agent.sources.mqtt_connection import MqttConnection

log = logging.getLogger("gearwatch.feedback")

SOURCE = "feedback"
MAX_BYTES = 16384


class MqttFeedback:
    def __init__(self, conn: MqttConnection, topic: str, desk: EventDesk,
                 reporter: BadInputReporter, loop: asyncio.AbstractEventLoop) -> None:
        self.conn = conn
        self.topic = topic
        self.desk = desk
        self.reporter = reporter
        self.loop = loop
        self.applied = 0
        conn.client.message_callback_add(topic, self._on_message)
        conn.add_on_connect(self._subscribe)

    def _subscribe(self, client: mqtt.Client) -> None:
        client.subscribe(self.topic, qos=1)

    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        raw, topic = bytes(msg.payload), msg.topic
        mid, qos = msg.mid, msg.qos

        def ack() -> None:  # after the label is durable (or the message dead-lettered)
            if qos > 0 and self.conn.cfg.qos == 1:
                client.ack(mid, qos)

        self.loop.call_soon_threadsafe(self._apply, raw, topic, ack)

    def _apply(self, raw: bytes, topic: str, ack: Any) -> None:
        try:
            self._label(raw, topic)
            self.applied += 1
        except _Bad as e:
            self.reporter.report(SOURCE, Reject(e.reason, e.detail, raw, topic))
        except Exception as e:  # a bug must not lose the message silently
            log.exception("feedback from %s failed", topic)
            self.reporter.report(SOURCE, Reject("internal_error", repr(e), raw, topic))
        finally:
            ack()

    def _label(self, raw: bytes, topic: str) -> None:
        if len(raw) > MAX_BYTES:
            raise _Bad("oversized", f"{len(raw)} bytes; the limit is {MAX_BYTES}")
        try:
            doc = orjson.loads(raw)
        except orjson.JSONDecodeError as e:
            raise _Bad("malformed_json", str(e)) from None
        if not isinstance(doc, dict):
            raise _Bad("malformed_json", "expected a JSON object")
        parts = topic.split("/")
        asset = parts[-2] if len(parts) >= 2 else ""
        event = self.desk.store.get_event(str(doc.get("event_id", "")))
        if event is not None and event["asset"] != asset:
            raise _Bad("asset_mismatch", f"event {event['id']} is on {event['asset']}, "
                                         f"the topic names {asset}")
        by = doc.get("by")
        who = f"mqtt:{by if isinstance(by, str) and by else asset}"[:80]
        try:
            self.desk.label(doc.get("event_id", ""), doc.get("label", ""), doc.get("note"),
                            doc.get("fault_code"), who=who, via="mqtt")
        except DeskError as e:
            reason = {404: "unknown_event", 413: "oversized_note"}.get(e.status, "bad_label")
            raise _Bad(reason, e.message) from None


class _Bad(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail
