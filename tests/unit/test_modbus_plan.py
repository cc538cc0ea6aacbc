"""Read planning (coalescing) and per-unit decoding of a register map."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from edge_agent.sources.modbus_codec import encode_number
from edge_agent.sources.modbus_config import ModbusDeviceConfig
from edge_agent.sources.modbus_plan import Span, UnitPlan, plan_spans
from tests.inputs_support import pump_registry


def test_adjacent_registers_share_a_read_and_gaps_split() -> None:
    spans = [Span(0, 2), Span(2, 2), Span(4, 1), Span(10, 2), Span(40, 1)]
    assert plan_spans(spans, 125, 8) == [[0, 1, 2, 3], [4]]
    assert plan_spans(spans, 125, 0) == [[0, 1, 2], [3], [4]]
    assert plan_spans(spans, 4, 100) == [[0, 1], [2], [3], [4]]  # max count per read


@settings(deadline=None)
@given(st.lists(st.tuples(st.integers(0, 600), st.integers(1, 4)), min_size=1, max_size=60),
       st.integers(4, 125), st.integers(0, 20))
def test_plan_covers_everything_within_limits(
    raw: list[tuple[int, int]], max_count: int, max_gap: int
) -> None:
    spans = [Span(a, n) for a, n in raw]
    groups = plan_spans(spans, max_count, max_gap)
    assert sorted(i for g in groups for i in g) == list(range(len(spans)))
    for g in groups:
        members = sorted((spans[i] for i in g), key=lambda s: s.start)
        start = members[0].start
        end = max(s.end for s in members)
        assert end - start <= max_count
        reach = members[0].end
        for s in members[1:]:
            assert s.start - reach <= max_gap  # no gap wider than allowed inside a read
            reach = max(reach, s.end)
    # never more reads than a one-read-per-run-of-neighbours lower bound would allow twice over
    assert len(groups) <= len(spans)


def _cfg(**kw: object) -> ModbusDeviceConfig:
    base: dict[str, object] = {"name": "drive", "units": [{"unit_id": 1, "asset": "pump-1",
                               "registers": [{"address": 0, "sensor": "speed_rpm"}]}]}
    base.update(kw)
    return ModbusDeviceConfig.model_validate(base)


def test_unit_decodes_types_orders_scale_and_range() -> None:
    cfg = _cfg(order="CDAB", address_base=1, units=[{"unit_id": 3, "asset": "pump-2", "registers": [
        {"table": "holding", "address": 1, "type": "float32", "sensor": "speed_rpm"},
        {"table": "holding", "address": 3, "type": "int16", "scale": 0.1,
         "sensor": "bearing_temp_c"},
        {"table": "holding", "address": 4, "type": "uint32", "order": "ABCD",
         "sensor": "flow_m3h", "scale": 0.001},
        {"table": "holding", "address": 6, "type": "int16", "sensor": "motor_current_a"},
        {"table": "holding", "address": 7, "type": "string", "length": 2, "name": "model"},
        {"table": "coil", "address": 1, "type": "bool", "name": "running"},
    ]}])
    plan = UnitPlan(cfg, cfg.units[0], pump_registry(2))
    assert [(r.table, r.start, r.count) for r in plan.reads] == [("holding", 0, 8), ("coil", 0, 1)]
    regs = (encode_number(1480.5, "float32", "CDAB") + encode_number(455, "int16", "ABCD")
            + encode_number(123456, "uint32", "ABCD") + encode_number(-5, "int16", "ABCD")
            + [0x5031, 0x3030])
    d = plan.decode(plan.reads[0], regs)
    got = dict(zip(d.sensor.tolist(), d.value.tolist(), strict=True))
    assert d.asset.tolist() == [1, 1, 1]
    assert got == {0: 1480.5, 5: pytest.approx(45.5), 4: pytest.approx(123.456)}
    assert [r.reason for r in d.rejects] == ["out_of_range"]  # current -5 A
    assert "drive/unit 3 holding:6" in d.rejects[0].where
    assert d.info == {"model": "P100"}
    bits = plan.decode(plan.reads[1], [True] + [False] * 7)
    assert bits.info == {"running": 1.0} and len(bits.value) == 0


def test_split_reads_one_register_each() -> None:
    cfg = _cfg(units=[{"unit_id": 1, "asset": "pump-1", "registers": [
        {"address": 0, "sensor": "speed_rpm"}, {"address": 1, "sensor": "flow_m3h"}]}])
    plan = UnitPlan(cfg, cfg.units[0], pump_registry(1))
    parts = plan.split(plan.reads[0])
    assert [(p.start, p.count) for p in parts] == [(0, 1), (1, 1)]


@pytest.mark.parametrize(("patch", "message"), [
    ({"max_registers_per_read": 200}, "at most 125"),
    ({"transport": "rtu"}, "needs `serial_port`"),
    ({"units": [{"registers": [{"table": "coil", "address": 0, "type": "int16",
                                "sensor": "x"}], "asset": "a"}]}, "hold bits"),
    ({"units": [{"registers": [{"address": 0, "type": "string", "name": "x"}]}]}, "`length`"),
    ({"units": [{"registers": [{"address": 0, "sensor": "speed_rpm"}]}]}, "no asset"),
    ({"address_base": 1}, "below address_base"),
    ({"bogus": 1}, "bogus"),
])
def test_config_errors_name_the_key_and_the_fix(patch: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        _cfg(**patch)


def test_unknown_sensor_is_a_config_error() -> None:
    cfg = _cfg(units=[{"asset": "pump-1", "registers": [{"address": 0, "sensor": "speed"}]}])
    with pytest.raises(ValueError, match="has no sensor 'speed'"):
        UnitPlan(cfg, cfg.units[0], pump_registry(1))


@settings(deadline=None)
@given(st.lists(st.integers(0, 0xFFFF), min_size=8, max_size=8))
def test_any_register_values_decode_without_raising(words: list[int]) -> None:
    cfg = _cfg(units=[{"unit_id": 1, "asset": "pump-1", "registers": [
        {"address": 0, "type": "float32", "sensor": "speed_rpm"},
        {"address": 2, "type": "float64", "sensor": "flow_m3h", "order": "DCBA"},
        {"address": 6, "type": "int16", "sensor": "bearing_temp_c", "scale": 0.1},
        {"address": 7, "type": "string", "length": 1, "name": "tag"}]}])
    plan = UnitPlan(cfg, cfg.units[0], pump_registry(1))
    d = plan.decode(plan.reads[0], words)
    assert np.isfinite(d.value).all()
    assert len(d.value) + len(d.rejects) == 3  # every sample is either kept or reported
