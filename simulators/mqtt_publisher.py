"""Publish a simulated pump fleet over MQTT, in accelerated or real time, and report what was sent.

Timestamps are sim time in UTC ns.  When running faster than real time, sim time starts in
the past so that no sample is ever stamped in the future (the agent rejects those).
"""

from __future__ import annotations

import logging
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import orjson
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from simulators.faults import Fault, Label, labels_for
from simulators.pump import SENSORS, PumpFleet

log = logging.getLogger("gearwatch.sim")


@dataclass
class SendReport:
    messages: int = 0
    samples: int = 0
    t0_ns: int = 0
    end_ns: int = 0
    per_asset_samples: dict[str, int] = field(default_factory=dict)
    labels: list[Label] = field(default_factory=list)
    steps: int = 0  # rows sent per asset: ts = t0_ns + k * period_ns for k = 1..steps
    period_ns: int = 0
    refused: int = 0  # QoS 1 PUBACKs with a failure reason (e.g. "Not authorized")

    def sent_keys(self) -> set[tuple[str, int]]:
        """Every (asset, ts) sent: each asset got one row per step."""
        return {(a, self.t0_ns + k * self.period_ns)
                for a in self.per_asset_samples for k in range(1, self.steps + 1)}

    def to_dict(self) -> dict[str, object]:
        return {
            "messages": self.messages, "samples": self.samples, "t0_ns": self.t0_ns,
            "end_ns": self.end_ns, "per_asset_samples": self.per_asset_samples,
            "labels": [lab.__dict__ for lab in self.labels], "steps": self.steps,
            "period_ns": self.period_ns, "refused": self.refused,
        }


class _Acks:
    """Counts PUBACKs (paho's on_publish), so waiting survives a broker restart.

    `MQTTMessageInfo.wait_for_publish` raises for a message published while disconnected,
    although paho queues it and sends it on reconnect.
    """

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.sent = 0
        self.acked = 0
        self.refused = 0

    def on_publish(self, client: mqtt.Client, userdata: object, mid: int,
                   reason_code: object, properties: object) -> None:
        with self.cond:
            self.acked += 1
            if getattr(reason_code, "is_failure", False):
                self.refused += 1
            self.cond.notify_all()

    def add(self, n: int) -> None:
        with self.cond:
            self.sent += n

    def wait_below(self, outstanding: int, timeout: float) -> None:
        with self.cond:
            if not self.cond.wait_for(lambda: self.sent - self.acked <= outstanding, timeout):
                raise TimeoutError(f"{self.sent - self.acked} QoS 1 messages not acknowledged "
                                   f"by the broker within {timeout} s")


def start_time_ns(duration_s: float, speedup: float, now_ns: int | None = None) -> int:
    """Sim start so that sample k is never later than the wall clock when it is sent."""
    now = time.time_ns() if now_ns is None else now_ns
    if speedup == 1.0:
        return now
    lead = duration_s if speedup <= 0 else duration_s * (1.0 - 1.0 / speedup)
    return now - round(lead * 1e9) - 1_000_000_000


def encode_row(ts_ns: int, seq: int, row: np.ndarray, decimals: int = 4) -> bytes:
    vals = np.round(row, decimals).tolist()
    return orjson.dumps({"ts": ts_ns, "seq": seq, "values": dict(zip(SENSORS, vals, strict=True))})


def connect(host: str, port: int, client_id: str, username: str | None = None,
            password: str | None = None, ca_file: str | None = None,
            session_expiry_s: int = 0) -> mqtt.Client:
    """`session_expiry_s` > 0: a persistent session (clean_start false), kept across restarts."""
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    if username:
        c.username_pw_set(username, password)
    if ca_file:
        c.tls_set(ca_certs=ca_file, cert_reqs=ssl.CERT_REQUIRED)
    c.max_inflight_messages_set(1000)
    c.max_queued_messages_set(0)
    c.reconnect_delay_set(1, 5)
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = session_expiry_s
    c.connect(host, port, keepalive=30, clean_start=session_expiry_s == 0, properties=props)
    c.loop_start()
    return c


def publish_fleet(
    host: str,
    port: int,
    asset_ids: list[str],
    duration_s: float,
    site: str = "demo",
    speedup: float = 0.0,
    dt_s: float = 1.0,
    faults: list[Fault] | None = None,
    seed: int = 0,
    qos: int = 1,
    topic_template: str = "plant/{site}/{asset}/telemetry",
    stop: threading.Event | None = None,
    on_progress: Callable[[float], None] | None = None,
    username: str | None = None,
    password: str | None = None,
    ca_file: str | None = None,
    client_id: str | None = None,
    session_expiry_s: int = 0,
) -> SendReport:
    """Run the fleet for `duration_s` of sim time; `speedup` 0 = as fast as possible.

    With QoS 1 it returns once the broker acknowledged every message; a broker restart on
    the way is ridden out (paho resends what was not acknowledged).
    """
    fleet = PumpFleet(asset_ids, seed=seed, dt_s=dt_s, faults=faults)
    steps = round(duration_s / dt_s)
    t0 = start_time_ns(duration_s, speedup)
    rep = SendReport(t0_ns=t0, per_asset_samples=dict.fromkeys(asset_ids, 0),
                     period_ns=round(dt_s * 1e9))
    rep.labels = labels_for(list(faults or []), t0, duration_s)
    topics = [topic_template.format(site=site, asset=a) for a in asset_ids]
    acks = _Acks()
    client = connect(host, port, client_id or f"gearwatch-sim-{seed}-{time.time_ns() % 10**9}",
                     username, password, ca_file, session_expiry_s)
    client.on_publish = acks.on_publish
    wall0 = time.monotonic()
    n_s = len(SENSORS)
    try:
        for k in range(1, steps + 1):
            if stop is not None and stop.is_set():
                break
            rows = fleet.step()
            ts = t0 + round(k * dt_s * 1e9)
            for i, topic in enumerate(topics):
                client.publish(topic, encode_row(ts, k, rows[i]), qos=qos)
                rep.per_asset_samples[asset_ids[i]] += n_s
            if qos:
                acks.add(len(topics))
            rep.messages += len(topics)
            rep.samples += n_s * len(topics)
            rep.end_ns = ts
            rep.steps = k
            if qos and k % 100 == 0:
                acks.wait_below(5000, timeout=120)
            if speedup > 0:
                ahead = wall0 + k * dt_s / speedup - time.monotonic()
                if ahead > 0:
                    time.sleep(ahead)
            if on_progress is not None and k % 100 == 0:
                on_progress(k * dt_s)
        if qos:
            acks.wait_below(0, timeout=120)
        rep.refused = acks.refused
    finally:
        client.disconnect()
        client.loop_stop()
    return rep
