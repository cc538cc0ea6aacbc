"""MQTT payload formats (`json`, `json_batch`, `json_columns`, `value`): structured messages
with good and bad rows/values mixed, checked against an oracle of what must come through;
byte-level mutations of valid payloads and raw garbage, checked against the invariants."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

import orjson
from hypothesis import given
from hypothesis import strategies as st

from edge_agent.sources.payloads import DECODERS, DecodeContext
from tests.fuzz.support import (
    ASSETS,
    MAX_FUTURE_S,
    MAX_PAST_S,
    NOW,
    SCHEMA,
    SENSORS,
    bad_json_value,
    budget,
    check,
    counted,
    good_value,
    in_bounds,
    odd_tokens,
    registry,
    samples,
)

REG = registry()
MULT = {"ns": 1, "us": 1_000, "ms": 1_000_000, "s": 1_000_000_000}
UNITS = ("ns", "us", "ms", "s", "rfc3339", "receive")
Sample = tuple[int, int, int, float]


def ctx(unit: str, template: str = "plant/{site}/{asset}/telemetry") -> DecodeContext:
    return DecodeContext(REG, topic_template=template, timestamp=unit, max_future_s=MAX_FUTURE_S,
                         max_past_s=MAX_PAST_S, now_ns=lambda: NOW)


# -- timestamps: what a payload may carry, and what it means ----------------------------------
@st.composite
def ts_raw(draw: st.DrawFn, unit: str) -> Any:
    """A payload timestamp in `unit`: mostly within bounds, sometimes outside or nonsense."""
    kind = draw(st.sampled_from(["good", "good", "good", "future", "past", "huge", "junk"]))
    if kind == "junk":
        return draw(st.one_of(st.none(), st.booleans(), st.text(max_size=8), st.just([]),
                              st.just({}), st.floats(allow_nan=False, allow_infinity=False)))
    if kind == "huge":
        return draw(st.one_of(st.integers(-(2**63), 2**64 - 1),
                              st.floats(allow_nan=False, allow_infinity=False)))
    margin = 10**9
    lo, hi = {"good": (-int(MAX_PAST_S * 1e9) + margin, int(MAX_FUTURE_S * 1e9) - margin),
              "future": (int(MAX_FUTURE_S * 1e9) + margin, 10**17),
              "past": (-(10**17), -int(MAX_PAST_S * 1e9) - margin)}[kind]
    ts_ns = NOW + draw(st.integers(lo, hi))
    if unit == "rfc3339":
        dt = datetime.fromtimestamp(ts_ns // 10**9, UTC).replace(microsecond=ts_ns // 1000 % 10**6)
        text = dt.isoformat()
        return text.replace("+00:00", "Z") if draw(st.booleans()) else text
    if unit == "receive":
        return ts_ns
    q = ts_ns // MULT[unit]
    return float(q) if draw(st.booleans()) and unit != "ns" else q


def expect_ts(raw: Any, unit: str, present: bool = True) -> int | str:
    """The UTC ns a decoder must place `raw` at, or the reason it must refuse it."""
    if unit == "receive" or not present or raw is None:
        return NOW
    if unit == "rfc3339":
        if not isinstance(raw, str):
            return "bad_timestamp"
        try:
            dt = datetime.fromisoformat(raw.replace("Z", "+00:00"))
        except ValueError:
            return "bad_timestamp"
        if dt.tzinfo is None:
            return "bad_timestamp"
        ts = int(dt.timestamp()) * 10**9 + dt.microsecond * 1000
    elif isinstance(raw, bool) or not isinstance(raw, int | float):
        return "bad_timestamp"
    elif isinstance(raw, int):
        ts = raw * MULT[unit]
    else:
        x = raw * MULT[unit]
        if not math.isfinite(x):
            return "timestamp_out_of_bounds"
        ts = round(x)
    return ts if in_bounds(ts) else "timestamp_out_of_bounds"


# -- values ---------------------------------------------------------------------------------------
@st.composite
def values_doc(draw: st.DrawFn) -> dict[str, Any]:
    """{sensor: value}: good values, with some bad values and unknown sensors among them."""
    names = draw(st.lists(st.sampled_from(SENSORS), unique=True, max_size=len(SENSORS)))
    out: dict[str, Any] = {}
    for n in names:
        out[n] = draw(st.one_of(good_value(n), good_value(n), bad_json_value))
    for extra in draw(st.lists(st.text(min_size=1, max_size=6), max_size=2)):
        out.setdefault(extra, draw(st.floats(0, 10)))
    return out


def expect_values(asset: int, ts: int, values: dict[str, Any]) -> tuple[list[Sample], int]:
    """Samples that must come through, and how many values must be rejected."""
    good: list[Sample] = []
    bad = 0
    for name, v in values.items():
        idx = SCHEMA.index_of(name)
        if idx is None or isinstance(v, bool) or not isinstance(v, int | float):
            bad += 1
            continue
        spec = SCHEMA.sensors[idx]
        f = float(v)
        if not (math.isfinite(f) and spec.low <= f <= spec.high):
            bad += 1
            continue
        good.append((asset, idx, ts, f))
    return good, bad


asset_field = st.one_of(st.sampled_from(ASSETS), st.sampled_from(ASSETS),
                        st.just("pump-9"), st.integers(0, 3), st.none())
topic_asset = st.sampled_from([*ASSETS, "pump-9", None])


def topic_of(asset: str | None) -> str:
    return f"plant/s1/{asset}/telemetry" if asset else "some/other/topic"


@st.composite
def row(draw: st.DrawFn, unit: str) -> Any:
    """One sample-set object, or (rarely) something that is not one."""
    if draw(st.integers(0, 15)) == 0:
        return draw(st.one_of(st.integers(-(2**63), 2**63 - 1), st.text(max_size=4), st.just([]),
                              st.none()))
    doc: dict[str, Any] = {}
    if draw(st.booleans()):
        doc["asset"] = draw(asset_field)
    if draw(st.integers(0, 9)):
        doc["ts"] = draw(ts_raw(unit))
    doc["values"] = draw(st.one_of(values_doc(), values_doc(), values_doc(), bad_json_value))
    return doc


def expect_row(doc: Any, default_asset: Any, unit: str) -> tuple[list[Sample], int]:
    """(samples, least number of rejects) one row must give."""
    if not isinstance(doc, dict):
        return [], 1
    asset = doc.get("asset", default_asset)
    info = REG.get(asset) if isinstance(asset, str) else None
    if info is None:
        return [], 1
    ts = expect_ts(doc.get("ts"), unit, "ts" in doc)
    if isinstance(ts, str):
        return [], 1
    values = doc.get("values")
    if not isinstance(values, dict):
        return [], 1
    return expect_values(info.index, ts, values)


def assert_decodes_to(fmt: str, topic: str, payload: bytes, c: DecodeContext,
                      good: list[Sample], least_rejects: int) -> None:
    b, rej = check(DECODERS[fmt](topic, payload, c), REG)
    assert samples(b) == sorted(good), (samples(b), sorted(good), rej)
    assert len(rej) >= least_rejects, rej


# -- json --------------------------------------------------------------------------------------
@given(data=st.data(), unit=st.sampled_from(UNITS), tasset=topic_asset)
@budget(300)
@counted
def test_json_object_keeps_every_good_value(data: st.DataObject, unit: str,
                                            tasset: str | None) -> None:
    doc = data.draw(row(unit))
    good, bad = expect_row(doc, tasset, unit)
    assert_decodes_to("json", topic_of(tasset), orjson.dumps(doc), ctx(unit), good, bad)


# -- json_batch: a bad row next to good rows must not take them down ---------------------------
@given(data=st.data(), unit=st.sampled_from(UNITS), tasset=topic_asset,
       wrapped=st.booleans())
@budget(300)
@counted
def test_json_batch_good_rows_survive_bad_neighbours(data: st.DataObject, unit: str,
                                                     tasset: str | None, wrapped: bool) -> None:
    rows = data.draw(st.lists(row(unit), max_size=6))
    default: Any = tasset
    doc: Any = rows
    if wrapped:
        doc = {"rows": rows}
        if data.draw(st.booleans()):
            doc["asset"] = default = data.draw(asset_field)
    good: list[Sample] = []
    bad = 0
    for r in rows:
        g, n = expect_row(r, default, unit)
        good += g
        bad += n
    assert_decodes_to("json_batch", topic_of(tasset), orjson.dumps(doc), ctx(unit), good, bad)


# -- json_columns ----------------------------------------------------------------------------------
def col_ts_expect(raw: Any, unit: str) -> int | None:
    if unit not in MULT or isinstance(raw, bool) or not isinstance(raw, int | float):
        return None
    t = expect_ts(raw, unit)
    return t if isinstance(t, int) else None


@given(data=st.data(), unit=st.sampled_from(("ns", "us", "ms", "s")), tasset=topic_asset)
@budget(300)
@counted
def test_json_columns_good_cells_survive(data: st.DataObject, unit: str,
                                         tasset: str | None) -> None:
    n = data.draw(st.integers(0, 6))
    ts = data.draw(st.lists(ts_raw(unit), min_size=n, max_size=n))
    if data.draw(st.booleans()):  # a column of plain integers: the fast path
        ts = [t if isinstance(t, int) and not isinstance(t, bool) and -(2**63) <= t < 2**63
              else NOW // MULT[unit] for t in ts]
    cols: dict[str, Any] = {}
    for name in data.draw(st.lists(st.sampled_from(SENSORS), unique=True, max_size=4)):
        numeric = data.draw(st.booleans())
        cell = good_value(name) if numeric else st.one_of(good_value(name), bad_json_value)
        cols[name] = data.draw(st.lists(cell, min_size=n, max_size=n))
    if data.draw(st.integers(0, 4)) == 0:  # an unknown sensor, a short column
        cols[data.draw(st.text(min_size=1, max_size=5))] = [1.0] * n
    if data.draw(st.integers(0, 4)) == 0 and cols:
        cols[next(iter(cols))] = data.draw(st.one_of(st.lists(st.floats(0, 1), max_size=n + 2)
                                                     .filter(lambda c: len(c) != n), st.none()))
    doc: dict[str, Any] = {"ts": ts, "values": cols}
    asset: Any = tasset
    if data.draw(st.booleans()):
        doc["asset"] = asset = data.draw(asset_field)
    info = REG.get(asset) if isinstance(asset, str) else None
    good: list[Sample] = []
    if info is not None:
        for i, raw in enumerate(ts):
            t = col_ts_expect(raw, unit)
            if t is None:
                continue
            for name, col in cols.items():
                if isinstance(col, list) and len(col) == n:
                    good += expect_values(info.index, t, {name: col[i]})[0]
    assert_decodes_to("json_columns", topic_of(tasset), orjson.dumps(doc), ctx(unit), good, 0)


# -- value: one number per topic ---------------------------------------------------------------
@given(data=st.data(), unit=st.sampled_from(UNITS))
@budget(300)
@counted
def test_value_format(data: st.DataObject, unit: str) -> None:
    asset = data.draw(st.sampled_from([*ASSETS, "pump-9"]))
    sensor = data.draw(st.one_of(st.sampled_from(SENSORS), st.just("nope")))
    v: Any = data.draw(st.one_of(good_value(sensor) if sensor != "nope" else st.floats(0, 1),
                                 bad_json_value))
    form = data.draw(st.sampled_from(["bare", "json", "object", "token"]))
    ts: Any = None
    has_ts = False
    if form == "bare":
        payload = (repr(float(v)) if isinstance(v, int | float) and not isinstance(v, bool)
                   else str(v)).encode()
    elif form == "token":
        payload = data.draw(odd_tokens)
    elif form == "json":
        payload = orjson.dumps(v)
    else:
        has_ts = data.draw(st.booleans())
        doc: dict[str, Any] = {"value": v}
        if has_ts:
            doc["ts"] = ts = data.draw(ts_raw(unit))
        payload = orjson.dumps(doc)
    c = ctx(unit, "plant/{site}/{asset}/{sensor}")
    b, rej = check(DECODERS["value"](f"plant/s1/{asset}/{sensor}", payload, c), REG)
    assert len(b) + len(rej) == 1, (b, rej)  # one value: a sample or a reason, never neither
    if len(b):
        info = REG.get(asset)
        assert (info is not None and form != "token") or payload.strip() in (b"1_000",)
        t = expect_ts(ts, unit, has_ts)
        assert t == int(b.ts_ns[0]), (t, b.ts_ns)


# -- bytes: mutations of valid payloads, and garbage --------------------------------------------
VALID = {
    "json": b'{"ts": %d, "values": {"speed_rpm": 1480.5, "flow_m3h": 99}}' % NOW,
    "json_batch": b'{"rows": [{"ts": %d, "values": {"speed_rpm": 1480.5}}, '
                  b'{"ts": %d, "asset": "pump-2", "values": {"bearing_temp_c": 41}}]}' % (NOW, NOW),
    "json_columns": b'{"ts": [%d, %d], "values": {"speed_rpm": [1480, 1481], '
                    b'"flow_m3h": [1.5, 2.5]}}' % (NOW, NOW + 1),
    "value": b'{"ts": %d, "value": 12.5}' % NOW,
}


@st.composite
def mutated(draw: st.DrawFn, base: bytes) -> bytes:
    data = bytearray(base)
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "insert", "delete", "token", "truncate"]))
        i = draw(st.integers(0, len(data)))
        if op == "flip" and i < len(data):
            data[i] = draw(st.integers(0, 255))
        elif op == "insert":
            data[i:i] = draw(st.binary(min_size=1, max_size=4))
        elif op == "delete":
            del data[i:i + draw(st.integers(1, 8))]
        elif op == "token":
            data[i:i] = draw(odd_tokens)
        else:
            del data[i:]
    return bytes(data)


@given(data=st.data(), fmt=st.sampled_from(sorted(VALID)), unit=st.sampled_from(UNITS))
@budget(400)
@counted
def test_mutated_payloads_never_raise(data: st.DataObject, fmt: str, unit: str) -> None:
    payload = data.draw(st.one_of(mutated(VALID[fmt]), st.binary(max_size=200)))
    template = "plant/{site}/{asset}/speed_rpm" if fmt == "value" else \
        "plant/{site}/{asset}/telemetry"
    topic = data.draw(st.sampled_from(["plant/s1/pump-1/speed_rpm", "plant/s1/pump-1/telemetry",
                                       "plant/s1/pump-1", ""]))
    c = ctx(unit, template.replace("speed_rpm", "{sensor}"))
    check(DECODERS[fmt](topic, payload, c), REG)


# -- regressions found by these targets ---------------------------------------------------------
def test_regression_float_timestamp_overflowing_its_unit_is_rejected() -> None:
    """`"ts": 1e300` in seconds overflowed to inf and raised OverflowError in the decoder."""
    for fmt, payload in (("json", b'{"ts": 1e300, "values": {"speed_rpm": 1}}'),
                         ("json_batch", b'[{"ts": -1e300, "values": {"speed_rpm": 1}}, '
                                        b'{"ts": %d, "values": {"speed_rpm": 2}}]'
                                        % (NOW // 10**9)),
                         ("value", b'{"ts": 1e300, "value": 1}')):
        tmpl = "plant/{site}/{asset}/{sensor}" if fmt == "value" else \
            "plant/{site}/{asset}/telemetry"
        topic = "plant/s1/pump-1/" + ("speed_rpm" if fmt == "value" else "telemetry")
        b, rej = check(DECODERS[fmt](topic, payload, ctx("s", tmpl)), REG)
        assert "bad_timestamp" in [r.reason for r in rej]
        assert b.value.tolist() == ([2.0] if fmt == "json_batch" else [])


def test_regression_columns_ns_timestamps_stay_exact_next_to_booleans() -> None:
    """A `true`/`false` anywhere in the message sent `ts` through float64: ns were lost."""
    payload = orjson.dumps({"asset": "pump-1", "ts": [NOW + 1, NOW + 3],
                            "values": {"speed_rpm": [1, False]}})
    b, rej = check(DECODERS["json_columns"]("x", payload, ctx("ns")), REG)
    assert b.ts_ns.tolist() == [NOW + 1] and [r.reason for r in rej] == ["non_numeric"]
    mixed = orjson.dumps({"asset": "pump-1", "ts": [NOW + 1, float(NOW)],
                          "values": {"speed_rpm": [1, 2]}})
    b, _ = check(DECODERS["json_columns"]("x", mixed, ctx("ns")), REG)
    assert b.ts_ns.tolist() == [NOW + 1, NOW]


def test_regression_columns_huge_timestamp_cannot_wrap_into_bounds() -> None:
    """int64 multiplication by the unit wrapped silently: a nonsense second count could land
    on a plausible ns timestamp and be accepted."""
    odd = 10**9 >> 9  # 10**9 = 2**9 * odd
    k = (NOW >> 9) * pow(odd, -1, 2**55) % 2**55 + 2**55  # k * 10**9 == NOW (mod 2**64)
    assert k < 2**63 and (k * 10**9) % 2**64 == NOW
    for ts in ([k], [k, True]):
        payload = orjson.dumps({"asset": "pump-1", "ts": ts,
                                "values": {"speed_rpm": [1] * len(ts)}})
        b, rej = check(DECODERS["json_columns"]("x", payload, ctx("s")), REG)
        assert len(b) == 0 and rej[0].reason == "timestamp_out_of_bounds"
