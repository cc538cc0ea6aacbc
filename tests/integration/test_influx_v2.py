"""The InfluxDB v2 write path (influxdb-client) against a real server speaking /api/v2/write."""

from __future__ import annotations

import httpx
import orjson
import pytest

from gearwatch.localservers import LocalServer
from simulators.mqtt_publisher import publish_fleet
from tests.helpers import AgentThread, agent_config, wait_until

pytestmark = pytest.mark.integration


def vm_samples(vm: LocalServer, metric_re: str) -> int:
    httpx.get(vm.url + "/internal/force_flush", timeout=10)
    r = httpx.get(vm.url + "/api/v1/export", params={"match[]": f'{{__name__=~"{metric_re}"}}'},
                  timeout=30)
    r.raise_for_status()
    return sum(len(orjson.loads(line)["values"]) for line in r.text.splitlines() if line)


def test_v2_write_path_stores_every_sample(mosquitto: LocalServer, victoria: LocalServer) -> None:
    cfg = agent_config(mosquitto.port, victoria.url, "unused", n_assets=2,
                       influx={"version": 2, "org": "plant", "bucket": "gearwatch",
                               "token": "secret-token"},
                       mqtt={"client_id": "agent-v2"})
    with AgentThread(cfg):
        rep = publish_fleet("127.0.0.1", mosquitto.port, ["pump-1", "pump-2"], duration_s=300,
                            site="test", speedup=0, seed=5)
        wait_until(lambda: vm_samples(victoria, "telemetry_.*") >= rep.samples, 30,
                   "VictoriaMetrics to hold every sample", every=0.5)
    assert vm_samples(victoria, "telemetry_.*") == rep.samples
    # tags arrive as labels
    r = httpx.get(victoria.url + "/api/v1/series",
                  params={"match[]": "telemetry_bearing_temp_c"}, timeout=10).json()
    assert {s["asset"] for s in r["data"]} == {"pump-1", "pump-2"}
