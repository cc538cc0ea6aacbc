from __future__ import annotations

import numpy as np
import pytest

from trainer.history import DataError, ts_ns
from trainer.influx import flux_query, frame_from_influxql, influxql_query


def test_influxql_query_quotes_names() -> None:
    q = influxql_query("pump", ["speed_rpm", 'we"ird'], "2026-01-01T00:00:00Z",
                       "2026-01-02T00:00:00Z", ["p'1"])
    assert q.startswith('SELECT "speed_rpm", "we\\"ird" FROM "telemetry" WHERE')
    assert "\"asset_class\" = 'pump'" in q and "\"asset\" = 'p\\'1'" in q
    assert q.endswith('GROUP BY "asset"')


def test_frame_from_chunked_influxql_json() -> None:
    chunks = [
        {"results": [{"statement_id": 0, "series": [
            {"name": "telemetry", "tags": {"asset": "p1"}, "columns": ["time", "a", "b"],
             "values": [[1_700_000_000_000_000_000, 1.0, None],
                        [1_700_000_001_000_000_000, 2.0, 3.0]]}], "partial": True}]},
        {"results": [{"statement_id": 0, "series": [
            {"name": "telemetry", "tags": {"asset": "p2"}, "columns": ["time", "a"],
             "values": [[1_700_000_000_000_000_000, 5.0]]}]}]},
    ]
    f = frame_from_influxql(chunks, ["a", "b"])
    assert f["asset"].tolist() == ["p1", "p1", "p2"]
    assert ts_ns(f["ts"]).tolist()[1] == 1_700_000_001_000_000_000
    assert np.isnan(f["b"][0]) and np.isnan(f["b"][2]) and f["b"][1] == 3.0


def test_influx_errors_are_clear() -> None:
    with pytest.raises(DataError, match="no telemetry"):
        frame_from_influxql([{"results": [{"statement_id": 0}]}], ["a"])
    with pytest.raises(DataError, match="database not found"):
        frame_from_influxql([{"results": [{"error": "database not found: x"}]}], ["a"])


def test_flux_query_shape() -> None:
    q = flux_query("b", "pump", "2026-01-01T00:00:00Z", "2026-01-02T00:00:00Z", ["p1"])
    assert 'r._measurement == "telemetry"' in q and 'r.asset == "p1"' in q
    assert 'pivot(rowKey: ["_time"], columnKey: ["_field"]' in q
