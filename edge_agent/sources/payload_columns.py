"""`json_columns`: many rows of one asset in one message, one array per sensor.

    {"asset": "pump-1", "ts": [1764790000000000000, ...], "values": {"speed_rpm": [...], ...}}

The high-rate format: decoding is a handful of numpy conversions per message instead of
Python work per sample, and the payload is about half the size of `json_batch`.  Validation is
the same as for the other formats, vectorised: a bad value is rejected alone, a bad timestamp
takes its row, and a column whose length does not match `ts` is rejected whole.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson

from edge_agent.bad_input import Reject
from edge_agent.batch import SampleBatch

if TYPE_CHECKING:  # payloads imports this module to register it
    from edge_agent.assets import AssetInfo
    from edge_agent.sources.payloads import DecodeContext, Decoded

TIMESTAMP_UNITS = {"ns": 1, "us": 1_000, "ms": 1_000_000, "s": 1_000_000_000}
_TS_LIMIT = int(np.iinfo(np.int64).max)


def _empty(topic: str, rejects: list[Reject]) -> Decoded:
    return SampleBatch.empty(topic), rejects


def _numeric_column(raw: list[Any], may_hold_bools: bool) -> tuple[np.ndarray, np.ndarray]:
    """Values as float64 and a mask of the entries that were numbers (bools and strings not).

    Fast path: numpy infers a numeric dtype for a list of plain numbers; anything else (None,
    strings, nested lists, or bools, which numpy would quietly turn into 0/1 and which the
    caller rules out with a byte scan of the payload) takes the per-entry path.
    """
    if not may_hold_bools:
        try:
            arr = np.array(raw)
        except (TypeError, ValueError):
            arr = np.empty(0, object)
        if arr.ndim == 1 and arr.dtype.kind in "fiu":
            return arr.astype(np.float64, copy=False), np.ones(arr.size, bool)
    ok = np.array([isinstance(v, int | float) and not isinstance(v, bool) for v in raw], bool)
    arr = np.array([float(v) if k else np.nan for v, k in zip(raw, ok, strict=True)], np.float64)
    return arr, ok


def _timestamps(raw: list[Any], mult: int) -> tuple[np.ndarray, np.ndarray]:
    """A `ts` column that is not all plain integers, entry by entry: integers stay exact (a
    float64 cannot hold every ns timestamp), floats are rounded, and anything beyond the int64
    range is held at its limit, so it is out of bounds instead of wrapping around into them."""
    ok = np.array([isinstance(v, int | float) and not isinstance(v, bool) for v in raw], bool)
    out = np.zeros(len(raw), np.int64)
    for i in np.flatnonzero(ok):
        v = raw[i]
        x = v * mult
        t = x if isinstance(v, int) else round(x) if math.isfinite(x) else math.copysign(
            _TS_LIMIT, x)
        out[i] = min(max(int(t), -_TS_LIMIT), _TS_LIMIT)
    return out, ok


def decode_json_columns(topic: str, payload: bytes, ctx: DecodeContext) -> Decoded:
    rejects: list[Reject] = []
    received = ctx.now_ns()
    if len(payload) > ctx.max_payload_bytes:
        return _empty(topic, [Reject(
            "oversized", f"{len(payload)} bytes > max_payload_bytes {ctx.max_payload_bytes}",
            payload[:256], topic)])
    try:
        doc = orjson.loads(payload)
    except orjson.JSONDecodeError as e:
        return _empty(topic, [Reject("malformed_json", str(e), payload, topic)])
    if not isinstance(doc, dict) or not isinstance(doc.get("values"), dict):
        return _empty(topic, [Reject(
            "bad_structure", "expected {\"ts\": [...], \"values\": {sensor: [...]}}", payload,
            topic)])
    asset_id = doc.get("asset", (ctx.topic_fields(topic) or {}).get("asset"))
    info = ctx.registry.get(asset_id) if isinstance(asset_id, str) else None
    if info is None:
        return _empty(topic, [Reject(
            "unknown_asset", f"asset {asset_id!r} is not configured", payload, topic)])
    ts_raw = doc.get("ts")
    if ctx.timestamp not in TIMESTAMP_UNITS or not isinstance(ts_raw, list):
        return _empty(topic, [Reject(
            "bad_timestamp",
            f"json_columns needs 'ts' as a list of {', '.join(TIMESTAMP_UNITS)} epoch numbers "
            f"(timestamp = {ctx.timestamp!r})", payload, topic)])
    bools = b"true" in payload or b"false" in payload
    mult = TIMESTAMP_UNITS[ctx.timestamp]
    try:
        ts_int = np.array(ts_raw) if not bools else None
    except (TypeError, ValueError, OverflowError):
        ts_int = None
    if ts_int is not None and ts_int.ndim == 1 and ts_int.dtype.kind == "i":
        # exact integers survive: float64 cannot hold every ns timestamp; clipped before the
        # unit's multiplication, so a huge one cannot wrap around into the valid range
        lim = _TS_LIMIT // mult
        ts = np.clip(ts_int.astype(np.int64), -lim, lim) * mult
        ts_ok = np.ones(ts_int.size, bool)
    else:
        ts, ts_ok = _timestamps(ts_raw, mult)
    lo = received - int(ctx.max_past_s * 1e9)
    hi = received + int(ctx.max_future_s * 1e9)
    row_ok = ts_ok & (ts >= lo) & (ts <= hi)
    for i in np.flatnonzero(~row_ok)[:20]:
        reason = "bad_timestamp" if not ts_ok[i] else "timestamp_out_of_bounds"
        rejects.append(Reject(reason, f"row {i}: ts {ts_raw[i]!r}", payload, topic))
    schema = info.schema
    n = len(ts_raw)
    cols = doc["values"]
    if not bools and cols:
        try:
            block = np.array(list(cols.values()))
        except (TypeError, ValueError):
            block = np.empty(0, object)
        if block.ndim == 2 and block.shape[1] == n and block.dtype.kind in "fiu":
            return _fast(topic, payload, info, list(cols), block.astype(np.float64, copy=False),
                         ts, row_ok, rejects)
    sensors: list[np.ndarray] = []
    values: list[np.ndarray] = []
    stamps: list[np.ndarray] = []
    for name, col in doc["values"].items():
        idx = schema.index_of(name)
        if idx is None:
            rejects.append(Reject("unknown_sensor", f"asset {asset_id!r} has no sensor {name!r}",
                                  payload, topic))
            continue
        if not isinstance(col, list) or len(col) != n:
            rejects.append(Reject(
                "bad_structure", f"{asset_id}.{name}: expected a list of {n} values", payload,
                topic))
            continue
        v, num = _numeric_column(col, bools)
        spec = schema.sensors[idx]
        with np.errstate(invalid="ignore"):
            finite = np.isfinite(v)
            in_range = (v >= spec.low) & (v <= spec.high)
        good = row_ok & num & finite & in_range
        bad = row_ok & ~good
        for i in np.flatnonzero(bad):
            if not num[i]:
                why, det = "non_numeric", f"{asset_id}.{name}[{i}] = {str(col[i])[:40]!r}"
            elif not finite[i]:
                why, det = "non_finite", f"{asset_id}.{name}[{i}] = {col[i]!r}"
            else:
                why, det = "out_of_range", (f"{asset_id}.{name}[{i}] = {v[i]} outside its "
                                            f"valid range [{spec.low}, {spec.high}]")
            rejects.append(Reject(why, det, payload, topic))
        sensors.append(np.full(int(good.sum()), idx, np.int32))
        values.append(v[good])
        stamps.append(ts[good])
    if not values:
        return _empty(topic, rejects)
    value = np.concatenate(values)
    return SampleBatch(
        np.full(value.size, info.index, np.int32), np.concatenate(sensors),
        np.concatenate(stamps), value, source=topic,
    ), rejects


def _fast(
    topic: str, payload: bytes, info: AssetInfo, names: list[str], block: np.ndarray,
    ts: np.ndarray, row_ok: np.ndarray, rejects: list[Reject],
) -> Decoded:
    """Every column numeric and of the right length: validate the (sensors, rows) block at once."""
    schema = info.schema
    idx = [schema.index_of(nm) for nm in names]
    known = np.array([i is not None for i in idx], bool)
    for nm, i in zip(names, idx, strict=True):
        if i is None:
            rejects.append(Reject("unknown_sensor", f"asset {info.asset_id!r} has no sensor "
                                  f"{nm!r}", payload, topic))
    if not known.all():
        block = block[known]
        names = [nm for nm, k in zip(names, known, strict=True) if k]
    sensor_idx = np.array([i for i in idx if i is not None], np.int32)
    lows = schema.lows[sensor_idx][:, None]
    highs = schema.highs[sensor_idx][:, None]
    with np.errstate(invalid="ignore"):
        finite = np.isfinite(block)
        in_range = (block >= lows) & (block <= highs)
    good = finite & in_range & row_ok[None, :]
    if not good.all():
        for r, c in zip(*np.nonzero(row_ok[None, :] & ~good), strict=True):
            v = block[r, c]
            if not finite[r, c]:
                rejects.append(Reject("non_finite", f"{info.asset_id}.{names[r]}[{c}] = {v}",
                                      payload, topic))
            else:
                spec = schema.sensors[int(sensor_idx[r])]
                rejects.append(Reject(
                    "out_of_range", f"{info.asset_id}.{names[r]}[{c}] = {v} outside its valid "
                    f"range [{spec.low}, {spec.high}]", payload, topic))
    rr, cc = np.nonzero(good)
    return SampleBatch(
        np.full(rr.size, info.index, np.int32), sensor_idx[rr], ts[cc], block[rr, cc],
        source=topic,
    ), rejects
