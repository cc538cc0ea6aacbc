"""Our line protocol, read back from a real InfluxDB 1.x: exponents, escapes, exact times."""

from __future__ import annotations

import httpx
import numpy as np
import pytest

from edge_agent.sinks import line_protocol as lp
from gearwatch.localservers import LocalServer
from tests.helpers import influx_query

pytestmark = pytest.mark.integration


def create(influxdb: LocalServer, db: str) -> None:
    httpx.post(influxdb.url + "/query", data={"q": f'CREATE DATABASE "{db}"'}).raise_for_status()


def test_values_and_tags_survive_the_round_trip(influxdb: LocalServer, db_name: str) -> None:
    create(influxdb, db_name)
    values = np.array([1.0, 1e-7, 123456789.123, 2.5e20, -0.0, 1e300, -3.25e-300, 7.0])
    n = values.size
    ts = 1_700_000_000_000_000_000 + np.arange(n, dtype=np.int64) * 1000 + 7
    asset_id = "pump 7,a=b"
    prefix = f"telemetry,asset={lp.tag(asset_id)},asset_class=x"
    lines = lp.telemetry_lines(np.zeros(n, np.int32), np.zeros(n, np.int32), ts, values,
                               [prefix], [("speed_rpm",)])
    r = httpx.post(influxdb.url + "/write", params={"db": db_name, "precision": "ns"},
                   content="\n".join(lines).encode())
    assert r.status_code == 204, r.text
    series = influx_query(influxdb.url, db_name, 'SELECT speed_rpm, asset FROM telemetry')
    rows = series[0]["values"]
    assert [row[0] for row in rows] == ts.tolist()
    assert [row[1] for row in rows] == values.tolist()
    assert {row[2] for row in rows} == {asset_id}


def test_score_lines_leave_out_nan(influxdb: LocalServer, db_name: str) -> None:
    create(influxdb, db_name)
    ts = np.array([10, 20, 30], np.int64) + 1_700_000_000_000_000_000
    lines = lp.score_lines(["a", "b", "c"], "cls", ts, np.array([1.5, np.nan, 2.0]),
                           {"river": np.array([1.5, 3.0, np.nan])}, 4.0)
    assert len(lines) == 2
    r = httpx.post(influxdb.url + "/write", params={"db": db_name, "precision": "ns"},
                   content="\n".join(lines).encode())
    assert r.status_code == 204, r.text
    q = "SELECT score, river, open_threshold, asset FROM anomaly_score"
    rows = influx_query(influxdb.url, db_name, q)[0]["values"]
    assert rows == [[ts[0], 1.5, 1.5, 4.0, "a"], [ts[2], 2.0, None, 4.0, "c"]]
