"""The columnar format: same validation as the others, vectorised; good samples survive."""

from __future__ import annotations

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_agent.assets import AssetRegistry
from edge_agent.sources.payload_columns import decode_json_columns
from edge_agent.sources.payloads import DecodeContext
from models.catalog import CENTRIFUGAL_PUMP

NOW = 1_800_000_000_000_000_000
TOPIC = "plant/s/pump-1/telemetry"
CTX = DecodeContext(AssetRegistry([("pump-1", CENTRIFUGAL_PUMP)]), now_ns=lambda: NOW)


def test_columns_decode_in_row_order() -> None:
    doc = {"ts": [NOW - 2, NOW - 1], "values": {"speed_rpm": [1.0, 2.0], "flow_m3h": [3, 4]}}
    b, rej = decode_json_columns(TOPIC, orjson.dumps(doc), CTX)
    assert rej == []
    assert b.sensor.tolist() == [0, 0, 4, 4]
    assert b.ts_ns.tolist() == [NOW - 2, NOW - 1, NOW - 2, NOW - 1]
    assert b.value.tolist() == [1.0, 2.0, 3.0, 4.0]


def test_bad_entries_are_rejected_alone() -> None:
    doc = {
        "asset": "pump-1",
        "ts": [NOW - 3, NOW + 10**15, NOW - 1],
        "values": {
            "speed_rpm": [1.0, 2.0, "x"],
            "bearing_temp_c": [40.0, 41.0, 1e9],
            "flow_m3h": [1.0],
            "nope": [1, 2, 3],
        },
    }
    b, rej = decode_json_columns(TOPIC, orjson.dumps(doc), CTX)
    assert b.value.tolist() == [1.0, 40.0]  # row 1 is in the future
    assert sorted(r.reason for r in rej) == [
        "bad_structure", "non_numeric", "out_of_range", "timestamp_out_of_bounds",
        "unknown_sensor"]


def test_whole_message_rejects() -> None:
    assert decode_json_columns(TOPIC, b"[", CTX)[1][0].reason == "malformed_json"
    bad_asset = orjson.dumps({"asset": "x", "ts": [NOW], "values": {}})
    assert decode_json_columns(TOPIC, bad_asset, CTX)[1][0].reason == "unknown_asset"
    no_ts = orjson.dumps({"ts": "now", "values": {"speed_rpm": [1]}})
    assert decode_json_columns(TOPIC, no_ts, CTX)[1][0].reason == "bad_timestamp"


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_garbage_never_raises(raw: bytes) -> None:
    b, rej = decode_json_columns(TOPIC, raw, CTX)
    # random bytes are never a valid columnar message: nothing decoded, one clear reject
    assert len(b) == 0
    assert len(rej) == 1 and rej[0].reason in ("malformed_json", "bad_structure", "oversized")


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(st.floats(0, 3000), st.text(max_size=3), st.none(), st.booleans()),
                min_size=1, max_size=20))
def test_good_values_survive_any_neighbours(col: list[object]) -> None:
    ts = [NOW - 1000 + i for i in range(len(col))]
    b, rej = decode_json_columns(TOPIC, orjson.dumps({"ts": ts, "values": {"speed_rpm": col}}),
                                 CTX)
    good = [float(v) for v in col if isinstance(v, float)]
    assert b.value.tolist() == good
    assert len(rej) == len(col) - len(good)


def test_fast_path_rejects_per_value() -> None:
    # all columns numeric and rectangular: the vectorised path
    doc = {"ts": [NOW - 2, NOW + 10**15], "values": {
        "speed_rpm": [1.0, 2.0], "bearing_temp_c": [1e9, 41.0], "ghost": [0.0, 0.0]}}
    b, rej = decode_json_columns(TOPIC, orjson.dumps(doc), CTX)
    assert b.value.tolist() == [1.0]
    assert sorted(r.reason for r in rej) == [
        "out_of_range", "timestamp_out_of_bounds", "unknown_sensor"]
