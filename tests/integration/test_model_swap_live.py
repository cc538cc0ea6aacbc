"""Live hot swap on real servers: the agent scores simulated pumps over real Mosquitto with a
learned model from its registry; a new bundle published over MQTT mid-stream is installed
between ticks without losing a row; a tampered one is refused and the model stays; the console
rolls back with a token."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from edge_agent.console.server import hash_token
from gearwatch.localservers import LocalServer
from models.bundle import generate_key, save_keypair, write_to_registry
from simulators.mqtt_publisher import SendReport, publish_fleet
from tests.helpers import AgentThread, agent_config, influx_query, wait_until
from tests.pump_models import pump_bundle
from trainer.publish import publish_mqtt

pytestmark = pytest.mark.integration
CLS = "centrifugal_pump"
TOKEN = "swap-test-token"


def _refused(agent: Any) -> float:
    return sum(s.value for mf in agent.metrics.registry.collect()
               if mf.name == "gearwatch_model_bundles_refused"
               for s in mf.samples if s.name.endswith("_total"))


def test_publish_swaps_between_ticks_tampered_is_refused_rollback_returns(
    mosquitto: LocalServer, influxdb: LocalServer, db_name: str, tmp_path: Path
) -> None:
    key = generate_key()
    save_keypair(tmp_path / "keys", key=key)
    first, second = (pump_bundle(key, seed=s, created=1_800_000_000.0 + s) for s in (0, 1))
    cfg = agent_config(
        mosquitto.port, influxdb.url, db_name,
        models={"trusted_keys": [str(tmp_path / "keys")], "watch_interval_s": 0.5},
        scoring={"warmup_rows": 60, "calibration_rows": 60},
        console={"tokens": [{"name": "alice", "sha256": hash_token(TOKEN)}]},
    )
    write_to_registry(Path(cfg.models.registry(cfg.agent.state_dir)), first)
    stop = threading.Event()
    reports: list[SendReport] = []
    with AgentThread(cfg) as at:
        agent = at.agent
        assert agent is not None
        v0 = agent.models.installed[CLS].version  # from the registry at start
        sim = threading.Thread(target=lambda: reports.append(publish_fleet(
            "127.0.0.1", mosquitto.port, ["pump-1", "pump-2", "pump-3"], duration_s=1500,
            site="test", speedup=100, seed=7, qos=1, stop=stop)))
        sim.start()
        try:
            wait_until(lambda: agent.state.rows >= 3 * 300, 60, "rows scored by the first model")
            topic = publish_mqtt(second, "127.0.0.1", mosquitto.port)
            wait_until(lambda: agent.models.installed[CLS].version != v0, 30, "the swap")
            v1 = agent.models.installed[CLS].version
            rows_at_swap = agent.state.rows
            # a tampered bundle (one flipped byte in the weights) on the same topic
            bad = bytearray(pump_bundle(key, seed=2, created=1_800_000_002.0))
            bad[len(bad) // 2] ^= 0x01
            publish_mqtt(bytes(bad), "127.0.0.1", mosquitto.port)
            wait_until(lambda: _refused(agent) >= 1, 30, "the tampered bundle refused")
            assert agent.models.installed[CLS].version == v1
            sim.join(60)
            assert not sim.is_alive()
            rep = reports[0]
            wait_until(lambda: agent.state.samples >= rep.samples, 60, "every sample received")
            assert rows_at_swap < agent.state.rows
            # rollback from the console: refused without the token, done with it
            url = f"http://127.0.0.1:{agent.console.port}"  # type: ignore[union-attr]
            r = httpx.post(f"{url}/api/models/{CLS}/rollback", timeout=10)
            assert r.status_code == 401
            r = httpx.post(f"{url}/api/models/{CLS}/rollback", timeout=10,
                           headers={"Authorization": f"Bearer {TOKEN}"})
            assert r.status_code == 200 and r.json()["version"] == v0, r.text
            assert agent.models.installed[CLS].version == v0
            audit = httpx.get(f"{url}/api/audit", timeout=10).json()
            entries = audit if isinstance(audit, list) else audit.get("entries", audit)
            actions = [(e["who"], e["action"]) for e in entries]
            assert ("alice", "model_rollback") in actions and ("system", "model_swap") in actions
            models = httpx.get(f"{url}/api/models", timeout=10).json()
            assert any(m.get("kind") == "lstm_ae" and m["version"] == v0 for m in models)
        finally:
            stop.set()
            sim.join(60)
            _clear_retained(mosquitto.port, topic=f"gearwatch/models/{CLS}")
        wait_until(lambda: agent.influx is not None and agent.influx.backlog_points == 0, 30,
                   "writes flushed")
    # no row lost around the swap: once the online detector is calibrated (120 rows) every
    # tick of every asset has a fused score, first to last, and the learned model scored the
    # running rows before and after the swap
    for asset in ("pump-1", "pump-2", "pump-3"):
        rows = influx_query(influxdb.url, db_name,
                            f"SELECT score, ae FROM anomaly_score WHERE asset='{asset}'")
        values = rows[0]["values"]
        start = values[0][0] + 300 * 1_000_000_000
        ts = [v[0] for v in values if v[0] >= start]
        assert ts == list(range(start, ts[-1] + 1, 1_000_000_000)), f"{asset}: a gap in scores"
        assert len(ts) >= 1100
        assert sum(1 for v in values if v[2] is not None) >= 800  # running rows the AE scored
    assert topic == f"gearwatch/models/{CLS}"


def _clear_retained(port: int, topic: str) -> None:
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="clear-retained")
    c.connect("127.0.0.1", port)
    c.loop_start()
    c.publish(topic, b"", qos=1, retain=True).wait_for_publish(10)
    c.disconnect()
    c.loop_stop()
