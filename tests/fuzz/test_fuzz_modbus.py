"""Modbus: random register maps (every data type, byte/word order, scale, offset), engineering
values encoded onto the wire and decoded back; responses of the wrong length and arbitrary
register contents must give rejects, never an exception."""

from __future__ import annotations

import math
import struct
from typing import Any

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from edge_agent.sources.modbus_codec import ORDERS, encode_number, to_raw
from edge_agent.sources.modbus_config import WORDS, ModbusDeviceConfig
from edge_agent.sources.modbus_plan import UnitPlan
from tests.fuzz.support import SCHEMA, SENSORS, budget, check_rejects, counted, registry

REG = registry()
NUMERIC = ["int16", "uint16", "int32", "uint32", "int64", "float32", "float64"]


@st.composite
def register_map(draw: st.DrawFn) -> list[dict[str, Any]]:
    """Up to 6 registers at distinct addresses, some unmapped, some strings."""
    regs: list[dict[str, Any]] = []
    addr = draw(st.integers(0, 50))
    sensors = draw(st.lists(st.sampled_from(SENSORS), unique=True, min_size=1, max_size=6))
    for s in sensors:
        kind = draw(st.sampled_from([*NUMERIC, "string", "unmapped"]))
        r: dict[str, Any] = {"address": addr, "order": draw(st.sampled_from(ORDERS))}
        if kind == "string":
            r.update(type="string", length=draw(st.integers(1, 4)), name=f"id{addr}")
        else:
            dtype = draw(st.sampled_from(NUMERIC)) if kind == "unmapped" else kind
            r.update(type=dtype, scale=draw(st.sampled_from([1.0, 0.1, 0.01, 10.0, -1.0])),
                     offset=draw(st.sampled_from([0.0, -40.0, 100.0])))
            if kind != "unmapped":
                r["sensor"] = s
            else:
                r["name"] = f"raw{addr}"
        regs.append(r)
        addr += (r["length"] if r["type"] == "string" else WORDS[r["type"]]) + draw(
            st.integers(0, 3))
    return regs


def plan_of(regs: list[dict[str, Any]], max_regs: int = 125) -> UnitPlan:
    dev = ModbusDeviceConfig.model_validate({
        "name": "d", "max_registers_per_read": max_regs,
        "units": [{"unit_id": 1, "asset": "pump-1", "registers": regs}]})
    return UnitPlan(dev, dev.units[0], REG)


@given(regs=register_map(), data=st.data(), max_regs=st.integers(4, 125))
@budget(300)
@counted
def test_encode_decode_round_trip(regs: list[dict[str, Any]], data: st.DataObject,
                                  max_regs: int) -> None:
    plan = plan_of(regs, max_regs)
    words = np.zeros(65536, np.uint16)
    want: dict[int, float] = {}
    for r in regs:
        if r["type"] == "string":
            continue
        dtype, scale, offset = r["type"], r["scale"], r["offset"]
        lo, hi = ((SCHEMA.sensors[SCHEMA.index_of(r["sensor"]) or 0].low,
                   SCHEMA.sensors[SCHEMA.index_of(r["sensor"]) or 0].high)
                  if "sensor" in r else (-1e3, 1e3))
        value = data.draw(st.floats(max(lo, -1e4), min(hi, 1e4)))
        raw = to_raw(value, dtype, scale, offset)
        w = encode_number(raw, dtype, r["order"])
        words[r["address"]: r["address"] + len(w)] = w
        if dtype == "float32":
            raw = struct.unpack("f", struct.pack("f", raw))[0]
        back = raw * scale + offset
        if "sensor" in r:
            want[SCHEMA.index_of(r["sensor"]) or 0] = back
    got: dict[int, float] = {}
    for read in plan.reads:
        assert read.count <= max_regs
        dec = plan.decode(read, words[read.start: read.start + read.count].tolist())
        check_rejects(dec.rejects)
        assert (dec.asset == 0).all()
        got.update(zip(dec.sensor.tolist(), dec.value.tolist(), strict=True))
    # a value rounding onto the edge of its valid range may be refused; every other one is back
    for s, v in want.items():
        spec = SCHEMA.sensors[s]
        if spec.low < v < spec.high:
            assert s in got and math.isclose(got[s], v, rel_tol=1e-6, abs_tol=1e-9), (s, v, got)


@given(regs=register_map(), data=st.data())
@budget(300)
@counted
def test_any_response_never_raises(regs: list[dict[str, Any]], data: st.DataObject) -> None:
    """Arbitrary register contents, and responses too short or too long for the read."""
    plan = plan_of(regs)
    for read in plan.reads:
        n = data.draw(st.one_of(st.just(read.count), st.integers(0, read.count + 3)))
        words = data.draw(st.lists(st.integers(0, 65535), min_size=n, max_size=n))
        dec = plan.decode(read, words)
        check_rejects(dec.rejects)
        assert np.isfinite(dec.value).all()
        for s, v in zip(dec.sensor.tolist(), dec.value.tolist(), strict=True):
            assert SCHEMA.sensors[s].low <= v <= SCHEMA.sensors[s].high
        if n < read.count:
            assert len(dec.value) == 0 and [r.reason for r in dec.rejects] == ["wrong_count"]


def test_regression_short_response_is_a_reject_not_an_index_error() -> None:
    """`UnitPlan.decode` indexed past the end of a short response (IndexError)."""
    plan = plan_of([{"address": 0, "type": "float32", "sensor": "flow_m3h"}])
    dec = plan.decode(plan.reads[0], [0x4248])
    assert len(dec.value) == 0 and [r.reason for r in dec.rejects] == ["wrong_count"]
    assert dec.rejects[0].detail == "expected 2 registers, got 1"
