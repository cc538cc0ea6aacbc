"""InfluxDB line protocol for the agent's three measurements.

- `telemetry`: one point per (asset, timestamp), tags asset + asset_class, one field per
  sensor.  Points are keyed by series and time, so a replayed sample overwrites itself:
  duplicates from at-least-once delivery are harmless.
- `anomaly_score`: one point per scored row: `score` (fused), one field per scorer, and the
  thresholds, so Grafana can draw the score against its threshold.
- `anomaly_event`: one point per event at its start time, rewritten when it closes.
- `event_label`: an operator's label of an event, at the event's start time.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np
import orjson

from edge_agent.events import Event

_TAG_ESCAPE = str.maketrans({",": r"\,", "=": r"\=", " ": r"\ "})


def tag(v: str) -> str:
    return v.translate(_TAG_ESCAPE)


def field_str(v: str) -> str:
    return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _num(v: float) -> str:
    return repr(float(v))


def _texts(values: np.ndarray) -> list[str]:
    """Shortest round-trip text of each float, formatted in C by orjson (no per-value repr)."""
    if values.size == 0:
        return []
    return orjson.dumps(values, option=orjson.OPT_SERIALIZE_NUMPY)[1:-1].decode().split(",")


def telemetry_lines(
    asset: np.ndarray,
    sensor: np.ndarray,
    ts_ns: np.ndarray,
    value: np.ndarray,
    series_prefix: Sequence[str],
    sensor_names: Sequence[Sequence[str]],
) -> list[str]:
    """Samples (agent-wide asset index, sensor index) grouped into one line per (asset, ts).

    `series_prefix[a]` is the escaped `telemetry,asset=..,asset_class=..` of asset a, and
    `sensor_names[a]` that asset's sensor names (already valid field keys).
    """
    n = ts_ns.size
    if n == 0:
        return []
    order = np.lexsort((sensor, ts_ns, asset))
    a, s, t = asset[order], sensor[order], ts_ns[order]
    v_s = _texts(np.ascontiguousarray(value[order], dtype=np.float64))
    brk = np.flatnonzero((a[1:] != a[:-1]) | (t[1:] != t[:-1])) + 1
    starts = np.r_[0, brk]
    ends = np.r_[brk, n]
    a_l, s_l = a.tolist(), s.tolist()
    kv = [f"{sensor_names[ai][si]}={vs}" for ai, si, vs in zip(a_l, s_l, v_s, strict=True)]
    t_s = t[starts].astype(str).tolist()
    return [
        f"{series_prefix[a_l[b]]} {','.join(kv[b:e])} {ts}"
        for b, e, ts in zip(starts.tolist(), ends.tolist(), t_s, strict=True)
    ]


def score_lines(
    asset_ids: Sequence[str],
    asset_class: str,
    ts_ns: np.ndarray,
    fused: np.ndarray,
    per_scorer: dict[str, np.ndarray],
    open_threshold: float | np.ndarray,
) -> list[str]:
    """One `anomaly_score` point per row with a finite fused score (NaN fields are left out)."""
    cls = tag(asset_class)
    keep = np.isfinite(fused)
    if not keep.any():
        return []
    idx = np.flatnonzero(keep)
    cols = {"score": fused, **per_scorer}
    parts: list[list[str]] = []
    for name, col in cols.items():
        c = np.asarray(col, np.float64)[idx]
        fin = np.isfinite(c)
        texts = _texts(np.where(fin, c, 0.0))
        parts.append([f"{name}={x}" if ok else "" for x, ok in zip(texts, fin.tolist(),
                                                                   strict=True)])
    # one threshold for all rows, or one per row (alert rules and feedback adaptation)
    thr_all = np.broadcast_to(np.asarray(open_threshold, np.float64), ts_ns.shape)
    thr = [f"open_threshold={_num(v)}" for v in thr_all[idx].tolist()]
    t_s = ts_ns[idx].astype(str).tolist()
    out = []
    for j, i in enumerate(idx.tolist()):
        fields = ",".join(p[j] for p in parts if p[j])
        out.append(f"anomaly_score,asset={tag(asset_ids[i])},asset_class={cls} "
                   f"{fields},{thr[j]} {t_s[j]}")
    return out


def event_line(ev: Event) -> str:
    top = ",".join(f"{s}:{w:.3f}" for s, w in ev.top_sensors)
    fields = [
        f"id={field_str(ev.id)}",
        f"state={field_str(ev.state)}",
        f"peak_score={_num(ev.peak_score)}",
        f"top_sensors={field_str(top)}",
        f"top_sensor={field_str(ev.top_sensors[0][0] if ev.top_sensors else '')}",
        f"model_version={field_str(ev.model_version)}",
    ]
    if ev.end_ns is not None:
        fields.append(f"end_ns={ev.end_ns}i")
        fields.append(f"duration_s={_num((ev.end_ns - ev.start_ns) / 1e9)}")
    return (
        f"anomaly_event,asset={tag(ev.asset)},asset_class={tag(ev.asset_class)} "
        f"{','.join(fields)} {ev.start_ns}"
    )


def label_line(asset: str, asset_class: str, start_ns: int, event_id: str, label: str,
               note: str | None, fault_code: str | None, who: str) -> str:
    """`event_label` at the event's start: a re-label overwrites the point (latest wins)."""
    fields = [f"event_id={field_str(event_id)}", f"label={field_str(label)}",
              f"who={field_str(who)}", f"labelled_ns={time.time_ns()}i"]
    if note:
        fields.append(f"note={field_str(' '.join(note.split()))}")
    if fault_code:
        fields.append(f"fault_code={field_str(fault_code)}")
    return (f"event_label,asset={tag(asset)},asset_class={tag(asset_class)} "
            f"{','.join(fields)} {start_ns}")
