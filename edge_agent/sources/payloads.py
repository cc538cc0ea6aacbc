"""MQTT payload formats: bytes (+ topic) -> `SampleBatch` and a list of `Reject`s.

Pure functions, no I/O, so every format is unit-tested and fuzzed on its own.  A message with
some bad values keeps its good samples; a message that cannot be placed (undecodable, unknown
asset, timestamp out of bounds) is rejected whole.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
import orjson

from edge_agent.assets import AssetRegistry
from edge_agent.bad_input import Reject
from edge_agent.batch import SampleBatch
from edge_agent.sources.payload_columns import TIMESTAMP_UNITS, decode_json_columns
from edge_agent.sources.payload_value import decode_value
from edge_agent.sources.sparkplug import SparkplugDecoder


@dataclass
class DecodeContext:
    """What a decoder needs to know: the assets, the topic layout, and the bounds of sanity."""

    registry: AssetRegistry
    topic_template: str = "plant/{site}/{asset}/telemetry"
    timestamp: str = "ns"  # ns | us | ms | s | rfc3339 | receive
    max_payload_bytes: int = 1 << 20
    max_future_s: float = 300.0
    max_past_s: float = 7 * 86400.0
    now_ns: Callable[[], int] = field(default=time.time_ns)
    _parts: list[str] = field(init=False, default_factory=list)

    def __post_init__(self) -> None:
        self._parts = self.topic_template.split("/")

    def topic_fields(self, topic: str) -> dict[str, str] | None:
        """Fields of `topic` named by `{...}` in the template; None when it does not match."""
        levels = topic.split("/")
        if len(levels) != len(self._parts):
            return None
        out: dict[str, str] = {}
        for pat, lev in zip(self._parts, levels, strict=True):
            if pat.startswith("{") and pat.endswith("}"):
                out[pat[1:-1]] = lev
            elif pat != lev:
                return None
        return out

    def parse_ts(self, raw: Any, received_ns: int) -> int | None:
        """Timestamp in UTC ns from a payload field, per the configured unit; None if invalid."""
        if self.timestamp == "receive" or raw is None:
            return received_ns if raw is None or self.timestamp == "receive" else None
        if self.timestamp == "rfc3339":
            if not isinstance(raw, str):
                return None
            try:
                dt = datetime.fromisoformat(raw.replace("Z", "+00:00"))
            except ValueError:
                return None
            if dt.tzinfo is None:
                return None
            return int(dt.timestamp()) * 1_000_000_000 + dt.microsecond * 1000
        if isinstance(raw, bool) or not isinstance(raw, int | float):
            return None
        if isinstance(raw, float) and not math.isfinite(raw):
            return None
        mult = TIMESTAMP_UNITS[self.timestamp]
        if isinstance(raw, int):
            return int(raw) * mult
        x = raw * mult
        return round(x) if math.isfinite(x) else None  # 1e300 s overflows: not a timestamp

    def ts_reject(self, ts_ns: int, now: int) -> str | None:
        if ts_ns > now + self.max_future_s * 1e9:
            return f"timestamp {ts_ns} is {(ts_ns - now) / 1e9:.0f} s in the future"
        if ts_ns < now - self.max_past_s * 1e9:
            return f"timestamp {ts_ns} is {(now - ts_ns) / 1e9:.0f} s in the past"
        return None


Decoded = tuple[SampleBatch, list[Reject]]
Decoder = Callable[[str, bytes, DecodeContext], Decoded]


class _Builder:
    """Collects samples of one message into arrays, and rejects beside them."""

    __slots__ = ("asset", "rejects", "sensor", "ts", "value")

    def __init__(self) -> None:
        self.asset: list[int] = []
        self.sensor: list[int] = []
        self.ts: list[int] = []
        self.value: list[float] = []
        self.rejects: list[Reject] = []

    def batch(self, source: str) -> Decoded:
        b = SampleBatch(
            np.array(self.asset, np.int32),
            np.array(self.sensor, np.int32),
            np.array(self.ts, np.int64),
            np.array(self.value, np.float64),
            source=source,
        )
        return b, self.rejects


def add_values(
    b: _Builder, ctx: DecodeContext, asset_id: str, ts_ns: int, values: Any, topic: str
) -> None:
    """Validate one asset's {sensor: value} mapping at one timestamp into the builder."""
    info = ctx.registry.get(asset_id)
    if info is None:
        b.rejects.append(Reject("unknown_asset", f"asset {asset_id!r} is not configured",
                                b"", topic))
        return
    if not isinstance(values, dict):
        b.rejects.append(Reject("bad_structure", "'values' must be an object of sensor: number",
                                b"", topic))
        return
    schema = info.schema
    for name, v in values.items():
        idx = schema.index_of(name)
        if idx is None:
            b.rejects.append(Reject(
                "unknown_sensor", f"asset {asset_id!r} has no sensor {name!r}", b"", topic))
            continue
        if isinstance(v, bool) or not isinstance(v, int | float):
            b.rejects.append(Reject(
                "non_numeric", f"{asset_id}.{name} = {str(v)[:40]!r} is not a number", b"", topic))
            continue
        f = float(v)
        if not math.isfinite(f):
            b.rejects.append(Reject("non_finite", f"{asset_id}.{name} = {v!r}", b"", topic))
            continue
        spec = schema.sensors[idx]
        if f < spec.low or f > spec.high:
            b.rejects.append(Reject(
                "out_of_range",
                f"{asset_id}.{name} = {f} outside its valid range [{spec.low}, {spec.high}]",
                b"", topic))
            continue
        b.asset.append(info.index)
        b.sensor.append(idx)
        b.ts.append(ts_ns)
        b.value.append(f)


def _load(payload: bytes, ctx: DecodeContext, topic: str) -> tuple[Any, Reject | None]:
    if len(payload) > ctx.max_payload_bytes:
        return None, Reject(
            "oversized", f"{len(payload)} bytes > max_payload_bytes {ctx.max_payload_bytes}",
            payload[:256], topic)
    try:
        return orjson.loads(payload), None
    except orjson.JSONDecodeError as e:
        return None, Reject("malformed_json", str(e), payload, topic)


def _place(
    b: _Builder, ctx: DecodeContext, doc: Any, topic: str, default_asset: str | None,
    received_ns: int, payload: bytes,
) -> None:
    """One sample-set object {ts, asset?, values} into the builder."""
    if not isinstance(doc, dict):
        b.rejects.append(Reject("bad_structure", "expected a JSON object", payload, topic))
        return
    asset_id = doc.get("asset", default_asset)
    if not isinstance(asset_id, str):
        b.rejects.append(Reject(
            "unknown_asset", "no asset in the topic or the payload's 'asset'", payload, topic))
        return
    ts = ctx.parse_ts(doc.get("ts"), received_ns)
    if ts is None:
        b.rejects.append(Reject(
            "bad_timestamp",
            f"'ts' = {str(doc.get('ts'))[:40]!r} is not a {ctx.timestamp} timestamp",
            payload, topic))
        return
    why = ctx.ts_reject(ts, received_ns)
    if why:
        b.rejects.append(Reject("timestamp_out_of_bounds", why, payload, topic))
        return
    n_rej = len(b.rejects)
    add_values(b, ctx, asset_id, ts, doc.get("values"), topic)
    for i in range(n_rej, len(b.rejects)):  # attach the payload to per-value rejects
        r = b.rejects[i]
        b.rejects[i] = Reject(r.reason, r.detail, payload, r.where)


def decode_json_object(topic: str, payload: bytes, ctx: DecodeContext) -> Decoded:
    """`{"ts": 1733250000000000000, "seq": 7, "values": {"speed_rpm": 1480.2, ...}}`.

    The asset comes from the topic (`{asset}` in the template) unless the payload names one.
    """
    b = _Builder()
    received = ctx.now_ns()
    doc, rej = _load(payload, ctx, topic)
    if rej:
        b.rejects.append(rej)
        return b.batch(topic)
    fields = ctx.topic_fields(topic) or {}
    _place(b, ctx, doc, topic, fields.get("asset"), received, payload)
    return b.batch(topic)


def decode_json_batch(topic: str, payload: bytes, ctx: DecodeContext) -> Decoded:
    """`{"rows": [{"ts": ..., "values": {...}}, ...]}` or a bare JSON array of such objects."""
    b = _Builder()
    received = ctx.now_ns()
    doc, rej = _load(payload, ctx, topic)
    if rej:
        b.rejects.append(rej)
        return b.batch(topic)
    fields = ctx.topic_fields(topic) or {}
    default_asset = fields.get("asset")
    rows = doc
    if isinstance(doc, dict):
        default_asset = doc.get("asset", default_asset)
        rows = doc.get("rows")
    if not isinstance(rows, list):
        b.rejects.append(Reject("bad_structure", "expected a list of rows", payload, topic))
        return b.batch(topic)
    for row in rows:
        _place(b, ctx, row, topic, default_asset, received, payload)
    return b.batch(topic)


DECODERS: dict[str, Decoder] = {
    "json": decode_json_object,
    "json_batch": decode_json_batch,
    "json_columns": decode_json_columns,
    "value": decode_value,
    "sparkplug_b": SparkplugDecoder(),  # stateful: a source may make its own (mapping, hooks)
}
