"""JSON payload decoding: good samples kept, each kind of bad input rejected with its reason."""

from __future__ import annotations

import math

import orjson
import pytest

from edge_agent.assets import AssetRegistry
from edge_agent.sources.payloads import DecodeContext, decode_json_batch, decode_json_object
from models.catalog import CENTRIFUGAL_PUMP

NOW = 1_800_000_000_000_000_000
TOPIC = "plant/s1/pump-1/telemetry"


@pytest.fixture
def ctx() -> DecodeContext:
    reg = AssetRegistry([("pump-1", CENTRIFUGAL_PUMP), ("pump-2", CENTRIFUGAL_PUMP)])
    return DecodeContext(reg, now_ns=lambda: NOW)


def msg(**kw: object) -> bytes:
    return orjson.dumps(kw)


def test_object_decodes_every_value(ctx: DecodeContext) -> None:
    b, rej = decode_json_object(
        TOPIC, msg(ts=NOW - 10, values={"speed_rpm": 1500, "flow_m3h": 90.5}), ctx)
    assert rej == []
    assert b.asset.tolist() == [0, 0]
    assert b.sensor.tolist() == [0, 4]
    assert b.ts_ns.tolist() == [NOW - 10, NOW - 10]
    assert b.value.tolist() == [1500.0, 90.5]


def test_bad_values_are_rejected_and_good_ones_kept(ctx: DecodeContext) -> None:
    payload = (b'{"ts": %d, "values": {"speed_rpm": 1500, "flow_m3h": "high", '
               b'"bearing_temp_c": NaN, "nope": 1, "winding_temp_c": 900}}' % (NOW - 5))
    # orjson rejects NaN literals: the whole message is malformed JSON
    b, rej = decode_json_object(TOPIC, payload, ctx)
    assert len(b) == 0 and [r.reason for r in rej] == ["malformed_json"]
    payload = msg(ts=NOW - 5, values={"speed_rpm": 1500, "flow_m3h": "high", "nope": 1,
                                      "winding_temp_c": 900, "vibration_x_mm_s": True})
    b, rej = decode_json_object(TOPIC, payload, ctx)
    assert b.value.tolist() == [1500.0]
    assert sorted(r.reason for r in rej) == [
        "non_numeric", "non_numeric", "out_of_range", "unknown_sensor"]
    assert all(r.raw == payload and r.where == TOPIC for r in rej)


def test_non_finite_numbers_from_lenient_encoders(ctx: DecodeContext) -> None:
    # 1e999 parses as inf in JSON decoders that allow it; orjson gives inf for overflow
    b, rej = decode_json_object(TOPIC, b'{"ts": %d, "values": {"speed_rpm": 1e999}}' % NOW, ctx)
    assert len(b) == 0
    assert [r.reason for r in rej] in (["non_finite"], ["malformed_json"])


@pytest.mark.parametrize(
    ("ts", "reason"),
    [
        (NOW + 3_600 * 10**9, "timestamp_out_of_bounds"),
        (NOW - 30 * 86_400 * 10**9, "timestamp_out_of_bounds"),
        ("yesterday", "bad_timestamp"),
        (NOW - 10**9, None),
        (float(NOW), None),
        (math.pi, "timestamp_out_of_bounds"),
    ],
)
def test_timestamps(ctx: DecodeContext, ts: object, reason: str | None) -> None:
    b, rej = decode_json_object(TOPIC, msg(ts=ts, values={"speed_rpm": 1}), ctx)
    if reason is None:
        assert len(b) == 1 and rej == []
    else:
        assert len(b) == 0 and [r.reason for r in rej] == [reason]


def test_missing_ts_means_receive_time(ctx: DecodeContext) -> None:
    b, _ = decode_json_object(TOPIC, msg(values={"speed_rpm": 1}), ctx)
    assert b.ts_ns.tolist() == [NOW]


def test_unknown_asset_and_oversize(ctx: DecodeContext) -> None:
    b, rej = decode_json_object("plant/s1/pump-9/telemetry", msg(values={"speed_rpm": 1}), ctx)
    assert len(b) == 0 and rej[0].reason == "unknown_asset"
    ctx.max_payload_bytes = 100
    b, rej = decode_json_object(TOPIC, b"{" + b" " * 200 + b"}", ctx)
    assert rej[0].reason == "oversized"


def test_batch_format_keeps_good_rows(ctx: DecodeContext) -> None:
    rows = [
        {"ts": NOW - 2, "values": {"speed_rpm": 1}},
        {"ts": "bad", "values": {"speed_rpm": 2}},
        {"ts": NOW - 1, "asset": "pump-2", "values": {"speed_rpm": 3}},
    ]
    b, rej = decode_json_batch(TOPIC, orjson.dumps({"rows": rows}), ctx)
    assert b.value.tolist() == [1.0, 3.0]
    assert b.asset.tolist() == [0, 1]
    assert [r.reason for r in rej] == ["bad_timestamp"]


def test_rfc3339_and_units(ctx: DecodeContext) -> None:
    ctx.timestamp = "rfc3339"
    b, _ = decode_json_object(TOPIC, msg(ts="2027-01-15T08:00:00.5Z", values={"speed_rpm": 1}),
                              ctx)
    assert b.ts_ns.tolist() == [NOW + 500_000_000]
    b, rej = decode_json_object(TOPIC, msg(ts="2027-01-15T08:00:00", values={"speed_rpm": 1}),
                                ctx)
    assert len(b) == 0 and rej[0].reason == "bad_timestamp"  # no zone: ambiguous
    ctx.timestamp = "ms"
    b, _ = decode_json_object(TOPIC, msg(ts=NOW // 1_000_000, values={"speed_rpm": 1}), ctx)
    assert b.ts_ns.tolist() == [NOW]
