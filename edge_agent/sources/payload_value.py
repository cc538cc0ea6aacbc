"""MQTT `value` format: one value per message, asset and sensor from the topic.

Topic template e.g. `plant/{site}/{asset}/{sensor}`; payload a bare number (`1480.5`) or
`{"ts": ..., "value": ...}` with `ts` in the configured unit.  The many small devices and
gateways that publish one topic per tag speak this.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson

from edge_agent.bad_input import Reject

if TYPE_CHECKING:  # payloads imports this module to register it: import it lazily here
    from edge_agent.sources.payloads import DecodeContext, Decoded


def _bare_number(payload: bytes) -> Any:
    """`nan`, `inf`, ` 12.5\\n`: what JSON refuses but devices send; None if not a number."""
    try:
        return float(payload.decode("ascii").strip())
    except (UnicodeDecodeError, ValueError):
        return None


def decode_value(topic: str, payload: bytes, ctx: DecodeContext) -> Decoded:
    from edge_agent.sources.payloads import _Builder, add_values

    b = _Builder()
    received = ctx.now_ns()
    fields = ctx.topic_fields(topic)
    if fields is None or "asset" not in fields or "sensor" not in fields:
        b.rejects.append(Reject(
            "topic_mismatch",
            f"topic does not match {ctx.topic_template!r} (needs {{asset}} and {{sensor}})",
            payload[:256], topic))
        return b.batch(topic)
    if len(payload) > ctx.max_payload_bytes:
        b.rejects.append(Reject("oversized", f"{len(payload)} bytes", payload[:256], topic))
        return b.batch(topic)
    try:
        doc: Any = orjson.loads(payload)
    except orjson.JSONDecodeError:
        doc = _bare_number(payload)
        if doc is None:
            b.rejects.append(Reject("malformed_value", "neither a number nor JSON", payload,
                                    topic))
            return b.batch(topic)
    ts = received
    if isinstance(doc, dict):
        if "value" not in doc:
            b.rejects.append(Reject("bad_structure", "object without 'value'", payload, topic))
            return b.batch(topic)
        parsed = ctx.parse_ts(doc.get("ts"), received)
        why = None if parsed is None else ctx.ts_reject(parsed, received)
        if parsed is None or why:
            b.rejects.append(Reject(
                "bad_timestamp" if parsed is None else "timestamp_out_of_bounds",
                why or f"'ts' = {str(doc.get('ts'))[:40]!r} is not a {ctx.timestamp} timestamp",
                payload, topic))
            return b.batch(topic)
        ts = parsed
        doc = doc["value"]
    add_values(b, ctx, fields["asset"], ts, {fields["sensor"]: doc}, topic)
    b.rejects[:] = [Reject(r.reason, r.detail, payload, r.where) for r in b.rejects]
    return b.batch(topic)
