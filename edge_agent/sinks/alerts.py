"""MQTT alerts: a JSON message on `plant/<site>/<asset>/alerts` when an event opens, re-opens,
escalates or closes."""

from __future__ import annotations

import datetime as dt
from typing import Any

import orjson

from edge_agent.events import Event
from edge_agent.metrics import AgentMetrics
from edge_agent.sources.mqtt_connection import MqttConnection


def iso(ns: int | None) -> str | None:
    if ns is None:
        return None
    return dt.datetime.fromtimestamp(ns / 1e9, dt.UTC).isoformat(timespec="milliseconds")


def alert_doc(kind: str, ev: Event, site: str) -> dict[str, Any]:
    """The alert message every channel starts from."""
    return {"kind": kind, "site": site, **ev.to_dict(), "start": iso(ev.start_ns),
            "end": iso(ev.end_ns)}


def alert_payload(kind: str, ev: Event, site: str) -> bytes:
    return orjson.dumps(alert_doc(kind, ev, site))


class MqttAlertChannel:
    name = "mqtt"

    def __init__(self, conn: MqttConnection, topic_template: str, site: str,
                 metrics: AgentMetrics) -> None:
        self.conn = conn
        self.template = topic_template
        self.site = site
        self.metrics = metrics

    def send(self, kind: str, ev: Event) -> None:
        topic = self.template.format(site=self.site, asset=ev.asset)
        self.conn.publish(topic, alert_payload(kind, ev, self.site), qos=1)
        self.metrics.alerts_sent.labels(self.name, kind).inc()
