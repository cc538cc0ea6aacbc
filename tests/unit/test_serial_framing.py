"""Serial line framing and parsing: every framing, bad lines, and fuzzing with outside bytes."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from edge_agent.sources.serial_config import SerialPortConfig
from edge_agent.sources.serial_framing import LineSplitter, SerialDecoder
from tests.inputs_support import pump_registry

NOW = 1_764_000_000_000_000_000


def decoder(**kw: Any) -> SerialDecoder:
    cfg = SerialPortConfig.model_validate({"name": "inst", "port": "/dev/null",
                                           "asset": "pump-1", **kw})
    return SerialDecoder(cfg, pump_registry(2), now_ns=lambda: NOW)


def values(d: SerialDecoder, data: bytes) -> tuple[dict[str, float], list[str]]:
    b, rej = d.feed(data)
    names = pump_registry(1).infos[0].schema.sensor_names
    return ({names[s]: v for s, v in zip(b.sensor.tolist(), b.value.tolist(), strict=True)},
            [r.reason for r in rej])


def test_splitter_keeps_half_lines_for_the_next_read() -> None:
    s = LineSplitter(b"\r\n", 64)
    assert s.feed(b"a=1\r\nb=")[0] == [b"a=1"]
    assert s.pending() == b"b="
    assert s.feed(b"2\r\n")[0] == [b"b=2"]


def test_splitter_drops_overlong_lines_and_resynchronises() -> None:
    s = LineSplitter(b"\n", 16)
    lines, rej = s.feed(b"x" * 40)
    assert lines == [] and [r.reason for r in rej] == ["oversized"]
    lines, rej = s.feed(b"yyy\nok=1\n")
    assert lines == [b"ok=1"] and rej == []


def test_csv_with_header_and_reboot() -> None:
    d = decoder(framing="csv")
    got, rej = values(d, b"1.0,2.0\nspeed_rpm,flow_m3h\n1480.5,120.25\n")
    assert got == {"speed_rpm": 1480.5, "flow_m3h": 120.25}
    assert rej == ["bad_line"]  # the line before any header
    got, rej = values(d, b"flow_m3h,speed_rpm\n10,20\n")  # rebooted with other columns
    assert got == {"flow_m3h": 10.0, "speed_rpm": 20.0} and rej == []


def test_csv_fixed_columns_timestamp_and_sensor_map() -> None:
    d = decoder(framing="csv", csv_header=False, columns=["t", "rpm", "status"],
                delimiter=";", timestamp_field="t", timestamp="ms",
                sensor_map={"rpm": "speed_rpm"}, ignore_fields=["status"])
    b, rej = d.feed(b"1764000000000;1500;OK\n")
    assert rej == [] and b.ts_ns.tolist() == [1_764_000_000_000_000_000]
    assert b.value.tolist() == [1500.0]


def test_key_value_and_json_and_regex() -> None:
    got, rej = values(decoder(framing="kv"), b"speed_rpm=1500 flow_m3h=99.5\n")
    assert got == {"speed_rpm": 1500.0, "flow_m3h": 99.5} and rej == []
    got, rej = values(decoder(framing="kv", pair_separator=",", kv_separator=":"),
                      b"speed_rpm:1500, flow_m3h:99.5\n")
    assert got == {"speed_rpm": 1500.0, "flow_m3h": 99.5}
    got, rej = values(decoder(framing="json"), b'{"speed_rpm": 1500, "flow_m3h": 99.5}\n')
    assert got == {"speed_rpm": 1500.0, "flow_m3h": 99.5}
    d = decoder(framing="regex", pattern=r"RPM (?P<speed_rpm>[-\d.]+) T (?P<bearing_temp_c>\S+)")
    got, rej = values(d, b"#01 RPM 1500 T 40.5 OK\nRPM x\n")
    assert got == {"speed_rpm": 1500.0, "bearing_temp_c": 40.5} and rej == ["bad_line"]


def test_bad_values_are_rejected_one_by_one_and_good_ones_kept() -> None:
    got, rej = values(decoder(framing="kv"),
                      b"speed_rpm=1500 flow_m3h=abc bearing_temp_c=900 nope=1\n")
    assert got == {"speed_rpm": 1500.0}
    assert sorted(rej) == ["non_numeric", "out_of_range", "unknown_sensor"]


def test_binary_noise_and_asset_field() -> None:
    d = decoder(framing="kv", asset=None, asset_field="asset")
    b, rej = d.feed(b"\xff\xfe\x00\x01garbage\nasset=pump-2 speed_rpm=10\n\x01\x02\x03\n")
    assert b.asset.tolist() == [1] and b.value.tolist() == [10.0]
    assert sorted(r.reason for r in rej) == ["bad_encoding", "binary_noise"]
    assert all(r.raw for r in rej)


@pytest.mark.parametrize(("kw", "message"), [
    ({"framing": "regex"}, "needs `pattern`"),
    ({"framing": "regex", "pattern": "(unclosed"}, "not a valid regex"),
    ({"framing": "regex", "pattern": "x(\\d)"}, "no named groups"),
    ({"framing": "csv", "csv_header": False}, "needs `columns`"),
    ({"asset": None}, "set `asset`"),
    ({"stopbits": 3}, "stopbits"),
])
def test_config_errors(kw: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        SerialPortConfig.model_validate({"name": "x", "port": "/dev/ttyUSB0", "asset": "p", **kw})


LINE = b"speed_rpm=1500.5 flow_m3h=99.25\n"


@pytest.mark.parametrize("framing", ["csv", "kv", "json", "regex"])
@given(noise=st.binary(max_size=300), cut=st.integers(0, 40))
@settings(max_examples=150, deadline=None)
def test_fuzz_no_exception_escapes_and_good_lines_survive(
    framing: str, noise: bytes, cut: int
) -> None:
    kw: dict[str, Any] = {"framing": framing}
    if framing == "regex":
        kw["pattern"] = r"speed_rpm=(?P<speed_rpm>[-\d.]+) flow_m3h=(?P<flow_m3h>\S+)"
    good = {"csv": b"speed_rpm,flow_m3h\n1500.5,99.25\n",
            "json": b'{"speed_rpm": 1500.5, "flow_m3h": 99.25}\n'}.get(framing, LINE)
    d = decoder(**kw)
    # noise (with its own line endings), then a half line cut short, then good lines
    d.feed(noise)
    d.feed(good[:cut])
    b, _ = d.feed(b"\n" + good + good.splitlines(keepends=True)[-1])
    tail = b.value.tolist()[-2:]
    assert tail == [1500.5, 99.25]
