"""The events desk in a real agent on a real broker: an open event survives a restart with its
id; alerts reach a webhook; feedback over MQTT labels events and bad feedback is dead-lettered;
the console API answers with JSON errors and needs a token to change anything."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import orjson
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from edge_agent.config import AgentConfig
from gearwatch.localservers import LocalServer, free_port
from simulators.faults import Fault
from simulators.mqtt_publisher import publish_fleet
from tests.helpers import AgentThread, Collector, agent_config, wait_until

pytestmark = pytest.mark.integration

TOKEN = "t0ken-for-tests"
FAULT_AT_S = 1500.0


class Hook(BaseHTTPRequestHandler):
    got: list[dict[str, Any]] = []  # noqa: RUF012 (shared with the test)

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        Hook.got.append(json.loads(body))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def config(mosquitto: LocalServer, state_dir: str, hook_port: int) -> AgentConfig:
    return agent_config(
        mosquitto.port, None, "desk", n_assets=2,
        agent={"state_dir": state_dir},
        scoring={"warmup_rows": 500, "calibration_rows": 500},
        console={"tokens": [{"name": "alice",
                             "sha256": hashlib.sha256(TOKEN.encode()).hexdigest()}]},
        alerts={"webhooks": [{"name": "ops", "url": f"http://127.0.0.1:{hook_port}/"}],
                "backoff_initial_s": 0.1, "backoff_max_s": 0.5})


def publish(mosquitto: LocalServer, duration_s: float) -> None:
    publish_fleet("127.0.0.1", mosquitto.port, ["pump-1", "pump-2"], duration_s=duration_s,
                  site="test", speedup=0, seed=3, qos=1,
                  faults=[Fault("pump-2", "bearing_wear", FAULT_AT_S, 1.0, 60.0)])


def test_open_event_survives_restart_feedback_and_console_api(mosquitto: LocalServer) -> None:
    Hook.got = []
    hook_port = free_port()
    server = ThreadingHTTPServer(("127.0.0.1", hook_port), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    state = tempfile.mkdtemp(prefix="gearwatch-desk-")
    cfg = config(mosquitto, state, hook_port)
    alerts = Collector(mosquitto.port, ["plant/test/+/alerts", "gearwatch/test/deadletter"])
    try:
        with AgentThread(cfg) as at:
            assert at.agent is not None
            agent = at.agent
            publish(mosquitto, 2100)
            wait_until(lambda: len(agent.desk.open_events()) > 0, 60, "an open event")
            ev = agent.desk.open_events()[0]
            assert ev.asset == "pump-2"
            wait_until(lambda: any(d["id"] == ev.id for d in Hook.got), 20, "the webhook")
        # -- restart: the event is still open, with the same id -------------------------------
        # (the first agent's Prometheus server cannot be stopped: a new metrics port; and a
        # new console port: in the full suite the first console's listener was seen to
        # outlive its stop now and then, which is not what this test is about)
        cfg2 = cfg.model_copy(update={
            "metrics": cfg.metrics.model_copy(update={"port": free_port()}),
            "console": cfg.console.model_copy(update={"port": free_port()})})
        with AgentThread(cfg2) as at2:
            assert at2.agent is not None
            agent2 = at2.agent
            assert [e.id for e in agent2.desk.open_events()] == [ev.id]
            assert agent2.console is not None
            port = agent2.console.port
            api = f"http://127.0.0.1:{port}/api"
            r = httpx.get(f"{api}/events", params={"state": "open"})
            assert [e["id"] for e in r.json()] == [ev.id]
            # -- console API: read-only without a token, JSON errors -----------------------
            url = f"{api}/events/{ev.id}/label"
            r = httpx.post(url, json={"label": "real_fault"})
            assert r.status_code == 401 and "token" in r.json()["error"]
            r = httpx.post(url, json={"label": "real_fault"},
                           headers={"Authorization": "Bearer wrong"})
            assert r.status_code == 401 and r.json()["error"] == "wrong token"
            auth = {"Authorization": f"Bearer {TOKEN}"}
            r = httpx.post(f"{api}/events/nope/label", json={"label": "real_fault"},
                           headers=auth)
            assert r.status_code == 404 and "no event" in r.json()["error"]
            r = httpx.post(url, content=b"x" * 70_000, headers=auth)
            assert r.status_code == 413 and "error" in r.json()
            r = httpx.get(f"{api}/events/{ev.id}/plot.png")
            assert r.status_code == 200 and r.content[:4] == b"\x89PNG"
            # -- feedback over MQTT: one good, three bad -----------------------------------
            fb = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="fb-test")
            fb.connect("127.0.0.1", mosquitto.port)
            fb.loop_start()
            topic = "plant/test/pump-2/feedback"
            unknown = orjson.dumps({"event_id": "nope", "label": "false_alarm"})
            for payload in (b"{not json", unknown,
                            orjson.dumps({"event_id": ev.id, "label": "real_fault",
                                          "note": "n" * 5000}),
                            orjson.dumps({"event_id": ev.id, "label": "real_fault",
                                          "fault_code": "BRG-1", "by": "bob"})):
                fb.publish(topic, payload, qos=1).wait_for_publish(10)
            fb.disconnect()
            fb.loop_stop()
            store = agent2.desk.store
            wait_until(lambda: (store.get_event(ev.id) or {}).get("label") == "real_fault", 20,
                       "the MQTT label")
            wait_until(lambda: sum(t.endswith("deadletter") for t, _ in alerts.json()) >= 3,
                       20, "bad feedback on the dead-letter topic")
            reasons = {p["reason"] for t, p in alerts.json() if t.endswith("deadletter")}
            assert reasons == {"malformed_json", "unknown_event", "oversized_note"}
            entry = store.audit_entries(1)[0]
            assert (entry["who"], entry["action"], entry["subject"]) == ("mqtt:bob", "label",
                                                                         ev.id)
            # the CLI reads the same database while the agent runs
            out = subprocess.run(
                [sys.executable, "-m", "gearwatch", "events", "export", "--state-dir", state,
                 "--out", str(Path(state) / "labels.csv")], capture_output=True, text=True,
                check=True)
            assert "wrote 1 label" in out.stdout
            rows = (Path(state) / "labels.csv").read_text().splitlines()
            assert rows[0] == "asset,start,end,fault"
            assert rows[1].startswith(f"pump-2,{ev.start_ns},") and rows[1].endswith(",BRG-1")
        opened = [p for t, p in alerts.json() if t.endswith("alerts") and p["kind"] == "open"]
        assert [p["id"] for p in opened] == [ev.id], "the restart must not open a new event"
    finally:
        alerts.close()
        server.shutdown()
