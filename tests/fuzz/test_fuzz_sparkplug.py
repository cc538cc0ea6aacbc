"""Sparkplug B: births, data and deaths built with the protobuf encoder, with random data types,
values, aliases and sequence numbers; decoded values must equal the encoded ones, every metric
that names a sensor must come through or be rejected (never dropped), and garbage never raises."""

from __future__ import annotations

import struct
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from edge_agent.sources.payloads import DecodeContext
from edge_agent.sources.sparkplug import SparkplugDecoder, SparkplugMapping
from edge_agent.sources.sparkplug_proto import (
    BOOLEAN,
    DATETIME,
    DOUBLE,
    FLOAT,
    INT8,
    INT16,
    INT32,
    INT64,
    STRING,
    UINT8,
    UINT16,
    UINT32,
    UINT64,
    Payload,
    parse_payload,
)
from tests.fuzz.support import (
    MAX_FUTURE_S,
    MAX_PAST_S,
    NOW,
    SCHEMA,
    SENSORS,
    budget,
    check,
    counted,
    registry,
)

REG = registry()
NOW_MS = NOW // 1_000_000
MAP = SparkplugMapping(device_assets={"drive-7": "pump-2"},
                       metric_sensors={"Motor/Speed": "speed_rpm"})
NODE, DEVICE = "spBv1.0/plant/{}/gw1", "spBv1.0/plant/{}/gw1/drive-7"
INT_BITS = {INT8: 8, INT16: 16, INT32: 32, INT64: 64}
UINT_BITS = {UINT8: 8, UINT16: 16, UINT32: 32, UINT64: 64, DATETIME: 64}
NAMES = [*SENSORS, "Motor/Speed", "Properties/Serial", "Node Control/Rebirth", "bdSeq"]


def ctx() -> DecodeContext:
    return DecodeContext(REG, max_future_s=MAX_FUTURE_S, max_past_s=MAX_PAST_S, now_ns=lambda: NOW)


@st.composite
def metric(draw: st.DrawFn) -> dict[str, Any]:
    """One metric: name, Sparkplug data type and a value of that type (often in range)."""
    name = draw(st.sampled_from(NAMES))
    dt = draw(st.sampled_from([INT8, INT16, INT32, INT64, UINT8, UINT16, UINT32, UINT64, FLOAT,
                               DOUBLE, BOOLEAN, DATETIME, STRING]))
    v: Any
    if dt in INT_BITS:
        b = INT_BITS[dt]
        v = draw(st.one_of(st.integers(0, 500), st.integers(-(2 ** (b - 1)), 2 ** (b - 1) - 1)))
    elif dt in UINT_BITS:
        v = draw(st.one_of(st.integers(0, 500), st.integers(0, 2 ** UINT_BITS[dt] - 1)))
    elif dt == FLOAT:
        v = draw(st.one_of(st.floats(0, 500, width=32), st.floats(width=32)))
    elif dt == DOUBLE:
        v = draw(st.one_of(st.floats(0, 500), st.floats()))
    elif dt == BOOLEAN:
        v = draw(st.booleans())
    else:
        v = draw(st.text(max_size=6))
    m = {"name": name, "datatype": dt, "value": v, "null": draw(st.integers(0, 20)) == 0}
    if draw(st.integers(0, 3)) == 0:
        m["ts_ms"] = NOW_MS + draw(st.one_of(st.integers(-5000, 5000),
                                             st.integers(-(10**12), 10**12)))
    return m


def encode(seq: int | None, metrics: list[dict[str, Any]], aliases: dict[str, int],
           by_alias: bool) -> bytes:
    p = Payload(timestamp=NOW_MS)
    if seq is not None:
        p.seq = seq
    for m in metrics:
        pm = p.metrics.add(datatype=m["datatype"])
        if by_alias:
            pm.alias = aliases[m["name"]]
        else:
            pm.name = m["name"]
            if m["name"] in aliases:
                pm.alias = aliases[m["name"]]
        if "ts_ms" in m:
            pm.timestamp = m["ts_ms"]
        if m["null"]:
            pm.is_null = True
            continue
        dt, v = m["datatype"], m["value"]
        if dt in INT_BITS:
            if dt == INT64:
                pm.long_value = v % 2**64
            else:
                pm.int_value = v % 2**32
        elif dt in UINT_BITS:
            if UINT_BITS[dt] == 64:
                pm.long_value = v
            else:
                pm.int_value = v
        elif dt == FLOAT:
            pm.float_value = v
        elif dt == DOUBLE:
            pm.double_value = v
        elif dt == BOOLEAN:
            pm.boolean_value = v
        else:
            pm.string_value = v
    return bytes(p.SerializeToString())


def expected(m: dict[str, Any]) -> tuple[int, int, float] | str | None:
    """(sensor, ts, value) a metric of pump-2 must give, the reason it must be refused, or
    None where it names no sensor or is null (nothing to say)."""
    sensor = MAP.metric_sensors.get(m["name"], m["name"])
    idx = SCHEMA.index_of(sensor)
    if idx is None or m["null"]:
        return None
    dt, v = m["datatype"], m["value"]
    if dt == STRING:
        return "non_numeric"
    value = struct.unpack("f", struct.pack("f", v))[0] if dt == FLOAT else float(v)
    ts = m.get("ts_ms", NOW_MS) * 1_000_000
    if not NOW - MAX_PAST_S * 1e9 <= ts <= NOW + MAX_FUTURE_S * 1e9:
        return "timestamp_out_of_bounds"
    spec = SCHEMA.sensors[idx]
    if value != value or abs(value) == float("inf"):
        return "non_finite"
    if not spec.low <= value <= spec.high:
        return "out_of_range"
    return idx, ts, value


def assert_metrics(decoded: Any, metrics: list[dict[str, Any]]) -> None:
    b, rej = check(decoded, REG)
    want = [e for m in metrics if (e := expected(m)) is not None]
    got = sorted(zip(b.sensor.tolist(), b.ts_ns.tolist(), b.value.tolist(), strict=True))
    assert got == sorted(e for e in want if isinstance(e, tuple)), (got, want, rej)
    assert set(b.asset.tolist()) <= {1}
    reasons = sorted(r.reason for r in rej if r.reason != "seq_gap")
    assert reasons == sorted(e for e in want if isinstance(e, str)), (reasons, want)


@given(births=st.lists(metric(), max_size=8), data=st.lists(metric(), max_size=8),
       by_alias=st.booleans())
@budget(300)
@counted
def test_birth_and_data_round_trip(births: list[dict[str, Any]], data: list[dict[str, Any]],
                                   by_alias: bool) -> None:
    d = SparkplugDecoder(MAP)
    c = ctx()
    check(d(NODE.format("NBIRTH"), encode(0, [], {}, False), c), REG)
    names = sorted({m["name"] for m in births})
    aliases = {n: i + 10 for i, n in enumerate(names)}
    assert_metrics(d(DEVICE.format("DBIRTH"), encode(1, births, aliases, False), c), births)
    # data by alias names only metrics that were born; the rest by name
    data = [m for m in data if not by_alias or m["name"] in aliases]
    assert_metrics(d(DEVICE.format("DDATA"), encode(2, data, aliases, by_alias), c), data)
    assert d.seq_gaps == 0


@given(seqs=st.lists(st.integers(0, 300), max_size=10))
@budget(200)
@counted
def test_sequence_gaps_are_counted_and_data_kept(seqs: list[int]) -> None:
    d = SparkplugDecoder(MAP)
    c = ctx()
    d(NODE.format("NBIRTH"), encode(0, [], {}, False), c)
    d(DEVICE.format("DBIRTH"), encode(1, [], {"speed_rpm": 1}, False), c)
    prev, gaps = 1, 0
    for i, s in enumerate(seqs):
        m = {"name": "speed_rpm", "datatype": DOUBLE, "value": float(i), "null": False}
        b, rej = check(d(DEVICE.format("DDATA"), encode(s, [m], {}, False), c), REG)
        gap = s % 256 != (prev + 1) % 256
        gaps += gap
        prev = s % 256
        assert b.value.tolist() == [float(i)]
        assert [r.reason for r in rej] == (["seq_gap"] if gap else [])
    assert d.seq_gaps == gaps


KINDS = ["NBIRTH", "NDATA", "NDEATH", "DBIRTH", "DDATA", "DDEATH", "NCMD", "STATE", "BOGUS"]


@st.composite
def message(draw: st.DrawFn) -> tuple[str, bytes]:
    kind = draw(st.sampled_from(KINDS))
    topic = (DEVICE if kind.startswith("D") else NODE).format(kind)
    if draw(st.integers(0, 9)) == 0:
        topic = draw(st.sampled_from(["spBv1.0", "spBv1.0/plant", "x/plant/NDATA/gw1",
                                      "spBv1.0/plant/DDATA/gw1/drive-7/extra",
                                      "spBv1.0/plant/DDATA/gw1/other"]))
    body = encode(draw(st.one_of(st.none(), st.integers(0, 2**64 - 1))),
                  draw(st.lists(metric(), max_size=4)), {n: i for i, n in enumerate(NAMES)},
                  draw(st.booleans()))
    if draw(st.integers(0, 3)) == 0:
        b = bytearray(body)
        for _ in range(draw(st.integers(1, 3))):
            op = draw(st.integers(0, 2))
            i = draw(st.integers(0, len(b)))
            if op == 0 and i < len(b):
                b[i] = draw(st.integers(0, 255))
            elif op == 1:
                b[i:i] = draw(st.binary(min_size=1, max_size=3))
            else:
                del b[i:]
        body = bytes(b)
    return topic, body


@given(msgs=st.lists(message(), max_size=12))
@budget(300)
@counted
def test_any_message_sequence_never_raises(msgs: list[tuple[str, bytes]]) -> None:
    """Births, deaths, data, commands and broken payloads in any order: only rejects and
    signals, every sample valid, and a fresh birth always brings the device back."""
    d = SparkplugDecoder(MAP)
    c = ctx()
    for topic, body in msgs:
        check(d(topic, body, c), REG)
        d.drain_signals()
    d(NODE.format("NBIRTH"), encode(0, [], {}, False), c)
    m = {"name": "flow_m3h", "datatype": DOUBLE, "value": 12.5, "null": False}
    d(DEVICE.format("DBIRTH"), encode(1, [m], {"flow_m3h": 3}, False), c)
    b, _ = check(d(DEVICE.format("DDATA"), encode(2, [m], {"flow_m3h": 3}, True), c), REG)
    assert b.value.tolist() == [12.5]


def test_regression_string_value_for_a_sensor_is_rejected_not_dropped() -> None:
    """A metric naming a sensor with a string value vanished without a reject."""
    d = SparkplugDecoder(MAP)
    c = ctx()
    d(NODE.format("NBIRTH"), encode(0, [], {}, False), c)
    ms = [{"name": "flow_m3h", "datatype": STRING, "value": "12", "null": False},
          {"name": "speed_rpm", "datatype": DOUBLE, "value": 1.0, "null": False}]
    b, rej = check(d(DEVICE.format("DBIRTH"), encode(1, ms, {}, False), c), REG)
    assert b.value.tolist() == [1.0] and [r.reason for r in rej] == ["non_numeric"]
    assert parse_payload(encode(1, ms, {}, False)).metrics[0].string_value == "12"
