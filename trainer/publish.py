"""Publish a verified bundle: into a registry folder and/or as a retained MQTT message.

The retained message on `gearwatch/models/<asset_class>` means an agent that subscribes later
still receives the current model; the agent verifies the signature itself before using it.
"""

from __future__ import annotations

import threading
from pathlib import Path

from models.bundle import peek_manifest, write_to_registry

TOPIC_PREFIX = "gearwatch/models"


def model_topic(asset_class: str, prefix: str = TOPIC_PREFIX) -> str:
    return f"{prefix.rstrip('/')}/{asset_class}"


def publish_registry(blob: bytes, root: str | Path) -> Path:
    return write_to_registry(root, blob)


def publish_mqtt(blob: bytes, host: str, port: int = 1883, prefix: str = TOPIC_PREFIX,
                 username: str | None = None, password: str | None = None,
                 timeout_s: float = 30.0) -> str:
    """QoS 1, retained; returns the topic.  Raises ConnectionError when it did not go out."""
    import paho.mqtt.client as mqtt

    topic = model_topic(str(peek_manifest(blob)["asset_class"]), prefix)
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="gearwatch-trainer")
    if username:
        client.username_pw_set(username, password)
    connected = threading.Event()
    result: dict[str, object] = {}

    def on_connect(c: object, userdata: object, flags: object, reason_code: object,
                   properties: object) -> None:
        result["rc"] = reason_code
        connected.set()

    client.on_connect = on_connect
    try:
        client.connect(host, port, keepalive=30)
    except OSError as e:
        raise ConnectionError(f"cannot reach MQTT broker {host}:{port} ({e})") from e
    client.loop_start()
    try:
        if not connected.wait(timeout_s) or getattr(result.get("rc"), "is_failure", True):
            raise ConnectionError(f"MQTT broker {host}:{port} refused: {result.get('rc')}")
        info = client.publish(topic, blob, qos=1, retain=True)
        info.wait_for_publish(timeout_s)
        if not info.is_published():
            raise ConnectionError(f"bundle not acknowledged by {host}:{port} in {timeout_s} s")
    finally:
        client.disconnect()
        client.loop_stop()
    return topic
