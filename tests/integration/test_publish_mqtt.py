"""Publish a bundle retained; a later subscriber (like an agent) gets and verifies it."""

from __future__ import annotations

import threading

import paho.mqtt.client as mqtt
import pytest

from models.bundle import load_bundle
from trainer.publish import publish_mqtt

pytestmark = pytest.mark.integration


def test_retained_bundle_reaches_late_subscriber(mosquitto, blob, signing_key) -> None:
    host, port = "127.0.0.1", mosquitto.port
    topic = publish_mqtt(blob, host, port)
    assert topic == "gearwatch/models/tiny_pump"
    got: list[bytes] = []
    done = threading.Event()
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)

    def on_message(client, userdata, msg):
        got.append(msg.payload)
        assert msg.retain
        done.set()

    c.on_message = on_message
    c.on_connect = lambda client, u, f, rc, p: client.subscribe(topic, qos=1)
    c.connect(host, port)
    c.loop_start()
    try:
        assert done.wait(10), "no retained bundle arrived"
    finally:
        c.disconnect()
        c.loop_stop()
    assert got[0] == blob
    assert load_bundle(got[0], signing_key.public_key()).asset_class == "tiny_pump"


def test_unreachable_broker_is_a_clear_error(blob) -> None:
    from gearwatch.localservers import free_port

    with pytest.raises(ConnectionError, match="cannot reach MQTT broker"):
        publish_mqtt(blob, "127.0.0.1", free_port())
