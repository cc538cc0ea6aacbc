"""The `value` and `sparkplug_b` MQTT formats: decoding, state, signals, and fuzzing."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_agent.sources.payloads import DECODERS, DecodeContext
from edge_agent.sources.sparkplug import Rebirth, SparkplugDecoder, SparkplugMapping, StateChange
from edge_agent.sources.sparkplug_proto import (
    BOOLEAN,
    DOUBLE,
    FLOAT,
    INT32,
    STRING,
    Payload,
    parse_payload,
)
from tests.inputs_support import pump_registry

NOW = 1_764_000_000_000_000_000
NOW_MS = NOW // 1_000_000


def ctx(template: str = "plant/{site}/{asset}/{sensor}", unit: str = "ms") -> DecodeContext:
    return DecodeContext(pump_registry(2), topic_template=template, timestamp=unit,
                         now_ns=lambda: NOW)


# -- value ------------------------------------------------------------------------------------
def test_value_bare_number_and_object() -> None:
    dec = DECODERS["value"]
    b, rej = dec("plant/s1/pump-2/flow_m3h", b"120.5", ctx())
    assert rej == []
    assert (b.asset.tolist(), b.sensor.tolist(), b.value.tolist(), b.ts_ns.tolist()) == (
        [1], [4], [120.5], [NOW])
    b, rej = dec("plant/s1/pump-1/speed_rpm", b'{"ts": %d, "value": 1480}' % (NOW_MS - 5),
                 ctx())
    assert b.value.tolist() == [1480.0] and b.ts_ns.tolist() == [NOW - 5_000_000]


@pytest.mark.parametrize(("topic", "payload", "reason"), [
    ("plant/s1/pump-1", b"1", "topic_mismatch"),
    ("plant/s1/pump-9/flow_m3h", b"1", "unknown_asset"),
    ("plant/s1/pump-1/nope", b"1", "unknown_sensor"),
    ("plant/s1/pump-1/flow_m3h", b"abc", "malformed_value"),
    ("plant/s1/pump-1/flow_m3h", b"nan", "non_finite"),
    ("plant/s1/pump-1/flow_m3h", b'"12"', "non_numeric"),
    ("plant/s1/pump-1/flow_m3h", b"-5", "out_of_range"),
    ("plant/s1/pump-1/flow_m3h", b'{"ts": "x", "value": 1}', "bad_timestamp"),
    ("plant/s1/pump-1/flow_m3h", b'{"v": 1}', "bad_structure"),
])
def test_value_rejects(topic: str, payload: bytes, reason: str) -> None:
    b, rej = DECODERS["value"](topic, payload, ctx())
    assert len(b) == 0 and [r.reason for r in rej] == [reason]
    assert rej[0].where == topic


@settings(deadline=None)
@given(st.binary(max_size=200))
def test_value_fuzz(payload: bytes) -> None:
    b, rej = DECODERS["value"]("plant/s1/pump-1/flow_m3h", payload, ctx())
    assert len(b) + len(rej) == 1


@settings(deadline=None)
@given(st.floats(0, 2000))
def test_value_good_numbers_survive(v: float) -> None:
    b, rej = DECODERS["value"]("plant/s1/pump-1/flow_m3h", repr(v).encode(), ctx())
    assert b.value.tolist() == [v] and rej == []


# -- sparkplug --------------------------------------------------------------------------------
def birth(seq: int, metrics: list[tuple[str, int, int, float]], bdseq: int | None = None) -> bytes:
    p = Payload(timestamp=NOW_MS, seq=seq)
    if bdseq is not None:
        p.metrics.add(name="bdSeq", datatype=8, long_value=bdseq)
    p.metrics.add(name="Node Control/Rebirth", datatype=BOOLEAN, boolean_value=False)
    for name, alias, dt, v in metrics:
        m = p.metrics.add(name=name, alias=alias, datatype=dt)
        _set(m, dt, v)
    return p.SerializeToString()


def data(seq: int, metrics: list[tuple[int, int, float]], ts_ms: int | None = None) -> bytes:
    p = Payload(timestamp=NOW_MS, seq=seq)
    for alias, dt, v in metrics:
        m = p.metrics.add(alias=alias, datatype=dt)
        if ts_ms is not None:
            m.timestamp = ts_ms
        _set(m, dt, v)
    return p.SerializeToString()


def _set(m: object, dt: int, v: float) -> None:
    if dt == FLOAT:
        m.float_value = v  # type: ignore[attr-defined]
    elif dt == DOUBLE:
        m.double_value = v  # type: ignore[attr-defined]
    elif dt == INT32:
        m.int_value = int(v) & 0xFFFFFFFF  # type: ignore[attr-defined]
    elif dt == BOOLEAN:
        m.boolean_value = bool(v)  # type: ignore[attr-defined]
    elif dt == STRING:
        m.string_value = str(v)  # type: ignore[attr-defined]


MAP = SparkplugMapping(device_assets={"drive-7": "pump-2"},
                       metric_sensors={"Motor/Speed": "speed_rpm", "Temp": "bearing_temp_c"})
DEV = [("Motor/Speed", 1, FLOAT, 1500.0), ("Temp", 2, INT32, 41.0), ("flow_m3h", 3, DOUBLE, 99.5),
       ("Firmware", 4, STRING, 0)]


def test_births_aliases_data_and_deaths() -> None:
    states: list[tuple[str, str]] = []
    d = SparkplugDecoder(MAP, on_state=lambda k, s: states.append((k, s)))
    c = ctx()
    b, rej = d("spBv1.0/plant/NBIRTH/gw1", birth(0, [], bdseq=3), c)
    assert len(b) == 0 and rej == []
    b, rej = d("spBv1.0/plant/DBIRTH/gw1/drive-7", birth(1, DEV), c)
    assert rej == [] and b.asset.tolist() == [1, 1, 1]
    assert dict(zip(b.sensor.tolist(), b.value.tolist(), strict=True)) == {
        0: 1500.0, 5: 41.0, 4: 99.5}
    b, rej = d("spBv1.0/plant/DDATA/gw1/drive-7",
               data(2, [(1, FLOAT, 1490.0), (2, INT32, -3)], ts_ms=NOW_MS - 1000), c)
    assert b.value.tolist() == [1490.0, -3.0] and b.ts_ns.tolist() == [NOW - 10**9] * 2
    assert rej == []
    assert d.drain_signals() == []
    # a gap in the sequence: counted, the data still used
    b, rej = d("spBv1.0/plant/DDATA/gw1/drive-7", data(9, [(3, DOUBLE, 98.0)]), c)
    assert b.value.tolist() == [98.0] and [r.reason for r in rej] == ["seq_gap"]
    # an alias never born: rejected, rebirth requested once, the good metric kept
    b, rej = d("spBv1.0/plant/DDATA/gw1/drive-7", data(10, [(77, FLOAT, 1.0), (3, DOUBLE, 97)]),
               c)
    assert b.value.tolist() == [97.0] and [r.reason for r in rej] == ["unknown_alias"]
    d("spBv1.0/plant/DDATA/gw1/drive-7", data(11, [(77, FLOAT, 1.0)]), c)
    sig = d.drain_signals()
    assert sig == [Rebirth("plant", "gw1", "unknown alias 77")]
    assert isinstance(sig[0], Rebirth)
    topic, payload = sig[0].message(NOW_MS)
    assert topic == "spBv1.0/plant/NCMD/gw1"
    cmd = parse_payload(payload).metrics[0]
    assert (cmd.name, cmd.boolean_value) == ("Node Control/Rebirth", True)
    # death of the node: its device goes stale; a stale will (other bdSeq) is ignored
    d("spBv1.0/plant/NDEATH/gw1", birth(0, [], bdseq=2), c)
    assert d.drain_signals() == []
    d("spBv1.0/plant/NDEATH/gw1", birth(0, [], bdseq=3), c)
    assert d.drain_signals() == [StateChange("plant/gw1/drive-7", "lost", ("pump-2",)),
                                 StateChange("plant/gw1", "lost", ())]
    b, rej = d("spBv1.0/plant/DDATA/gw1/drive-7", data(12, [(1, FLOAT, 1.0)]), c)
    assert len(b) == 0 and [r.reason for r in rej] == ["not_born"]
    d("spBv1.0/plant/NBIRTH/gw1", birth(0, [], bdseq=4), c)
    d("spBv1.0/plant/DBIRTH/gw1/drive-7", birth(1, DEV), c)
    assert ("plant/gw1/drive-7", "ok") in states and states.count(("plant/gw1", "lost")) == 1


def test_ddeath_and_unknown_device() -> None:
    d = SparkplugDecoder(MAP)
    c = ctx()
    d("spBv1.0/plant/NBIRTH/gw1", birth(0, [], bdseq=0), c)
    d("spBv1.0/plant/DBIRTH/gw1/drive-7", birth(1, DEV), c)
    d("spBv1.0/plant/DDEATH/gw1/drive-7", data(2, []), c)
    assert d.drain_signals() == [StateChange("plant/gw1/drive-7", "lost", ("pump-2",))]
    b, rej = d("spBv1.0/plant/DBIRTH/gw1/mystery", birth(3, DEV), c)
    assert len(b) == 0 and [r.reason for r in rej] == ["unknown_asset"]


def test_undecodable_payload_is_rejected() -> None:
    b, rej = SparkplugDecoder()("spBv1.0/g/NDATA/n", b"\xff\xff\xff\xff", ctx())
    assert len(b) == 0 and [r.reason for r in rej] == ["malformed_protobuf"]
    assert rej[0].raw == b"\xff\xff\xff\xff"


@given(st.binary(max_size=300), st.sampled_from(["NBIRTH", "NDATA", "NDEATH", "DBIRTH",
                                                 "DDATA", "DDEATH", "STATE", "BOGUS"]))
@settings(max_examples=300, deadline=None)
def test_sparkplug_fuzz_no_exception_and_good_data_survives(noise: bytes, kind: str) -> None:
    d = SparkplugDecoder(MAP)
    c = ctx()
    d("spBv1.0/plant/NBIRTH/gw1", birth(0, [], bdseq=1), c)
    d("spBv1.0/plant/DBIRTH/gw1/drive-7", birth(1, DEV), c)
    topic = f"spBv1.0/plant/{kind}/gw1" + ("/drive-7" if kind.startswith("D") else "")
    d(topic, noise, c)
    # whatever the noise did (it may even parse as a valid death or birth), births recover
    d("spBv1.0/plant/NBIRTH/gw1", birth(0, [], bdseq=1), c)
    d("spBv1.0/plant/DBIRTH/gw1/drive-7", birth(1, DEV), c)
    b, _ = d("spBv1.0/plant/DDATA/gw1/drive-7", data(2, [(1, FLOAT, 1234.5)]), c)
    assert b.value.tolist() == [1234.5]
