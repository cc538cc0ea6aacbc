"""Load telemetry from a real InfluxDB 1.x in the agent's layout."""

from __future__ import annotations

import httpx
import numpy as np
import pytest

from gearwatch.localservers import LocalServer
from trainer.history import DataError, ts_ns
from trainer.influx import load_influx_v1

pytestmark = pytest.mark.integration

T0 = 1_767_225_600_000_000_000  # 2026-01-01T00:00:00Z


def test_influxql_loader_reads_agent_layout(influxdb: LocalServer) -> None:
    url = influxdb.url
    httpx.post(url + "/query", params={"q": "CREATE DATABASE gw"}).raise_for_status()
    lines = []
    for i in range(30):
        for a, k in (("p1", 1.0), ("p2", 2.0)):
            fields = f"speed_rpm={1000 * k + i},temp_c={20 + i}"
            if a == "p2" and i == 5:
                fields = f"speed_rpm={1000 * k + i}"  # temp missing for one row
            lines.append(f"telemetry,asset={a},asset_class=pump {fields} {T0 + i * 10**9}")
    lines.append(f"telemetry,asset=x1,asset_class=fan speed_rpm=1 {T0}")
    r = httpx.post(url + "/write", params={"db": "gw", "precision": "ns"},
                   content="\n".join(lines))
    assert r.status_code == 204, r.text
    f = load_influx_v1(url, "gw", "pump", ["speed_rpm", "temp_c"], "2026-01-01T00:00:00Z",
                       "2026-01-02T00:00:00Z")
    assert sorted(f["asset"].unique()) == ["p1", "p2"]
    p2 = f[f["asset"] == "p2"].reset_index(drop=True)
    assert len(p2) == 30 and ts_ns(p2["ts"])[3] == T0 + 3 * 10**9
    assert p2["speed_rpm"][3] == 2003 and np.isnan(p2["temp_c"][5])
    only = load_influx_v1(url, "gw", "pump", ["speed_rpm"], "2026-01-01T00:00:00Z",
                          "2026-01-01T00:00:10Z", assets=["p1"])
    assert only["asset"].unique().tolist() == ["p1"] and len(only) == 10
    with pytest.raises(DataError, match="no telemetry"):
        load_influx_v1(url, "gw", "compressor", ["speed_rpm"], "2026-01-01T00:00:00Z",
                       "2026-01-02T00:00:00Z")
