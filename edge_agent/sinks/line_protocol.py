"""InfluxDB line protocol for the agent's three measurements.

- `telemetry`: one point per (asset, timestamp), tags asset + asset_class, one field per
  sensor.  Points are keyed by series and time, so a replayed sample overwrites itself:
  duplicates from at-least-once delivery are harmless.
- `anomaly_score`: one point per scored row: `score` (fused), one field per scorer, and the
  thresholds, so Grafana can draw the score against its threshold.
- `anomaly_event`: one point per event at its start time, rewritten when it closes.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from edge_agent.events import Event

_TAG_ESCAPE = str.maketrans({",": r"\,", "=": r"\=", " ": r"\ "})


def tag(v: str) -> str:
    return v.translate(_TAG_ESCAPE)


def field_str(v: str) -> str:
    return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _num(v: float) -> str:
    return repr(float(v))


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
    a, s, t, v = asset[order], sensor[order], ts_ns[order], value[order]
    brk = np.flatnonzero((a[1:] != a[:-1]) | (t[1:] != t[:-1])) + 1
    starts = np.r_[0, brk]
    ends = np.r_[brk, n]
    a_l, s_l, t_l = a.tolist(), s.tolist(), t.tolist()
    v_s = [repr(x) for x in v.tolist()]
    lines = []
    for b, e in zip(starts.tolist(), ends.tolist(), strict=True):
        names = sensor_names[a_l[b]]
        fields = ",".join(f"{names[s_l[i]]}={v_s[i]}" for i in range(b, e))
        lines.append(f"{series_prefix[a_l[b]]} {fields} {t_l[b]}")
    return lines


def score_lines(
    asset_ids: Sequence[str],
    asset_class: str,
    ts_ns: np.ndarray,
    fused: np.ndarray,
    per_scorer: dict[str, np.ndarray],
    open_threshold: float,
) -> list[str]:
    cls = tag(asset_class)
    cols = {"score": fused, **per_scorer}
    names = list(cols)
    mat = np.column_stack([cols[k] for k in names]) if names else np.empty((ts_ns.size, 0))
    lines = []
    for i, (aid, t) in enumerate(zip(asset_ids, ts_ns.tolist(), strict=True)):
        row = mat[i]
        fields = [f"{k}={_num(x)}" for k, x in zip(names, row.tolist(), strict=True)
                  if np.isfinite(x)]
        if not fields:
            continue
        fields.append(f"open_threshold={_num(open_threshold)}")
        lines.append(f"anomaly_score,asset={tag(aid)},asset_class={cls} {','.join(fields)} {t}")
    return lines


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
