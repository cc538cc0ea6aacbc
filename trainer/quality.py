"""Data-quality report before training (the checks Amazon Lookout for Equipment ran).

Per sensor: missing, non-finite and out-of-range values; flat-lined (static) stretches and
constant sensors; monotonic sensors (counters, drifting totals); categorical-looking sensors
(few distinct values); several operating modes (bimodality coefficient of the values).
Per dataset: rows, assets, time range, duplicate and out-of-order timestamps, gaps longer
than `gap_factor` sample periods, the median sample interval.  Each sensor gets a grade —
"ok", "warning" or "drop" — with the reasons, and the report lists the sensors to drop.
`quality_report` returns a JSON-ready dict; `render_text` the readable summary.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from models.schema import AssetSchema
from trainer.history import ts_ns

# grade thresholds (fractions of rows)
DROP_MISSING = 0.5
WARN_MISSING = 0.1
DROP_INVALID = 0.2
WARN_INVALID = 0.01
WARN_FLAT_RUN = 0.1  # longest unchanged stretch as a fraction of an asset's rows
MONOTONIC = 0.99  # fraction of nonzero steps going one way
CATEGORICAL_DISTINCT = 10
BIMODAL_BC = 0.555  # bimodality coefficient of a uniform distribution; above: modes


def _longest_run(values: np.ndarray) -> int:
    """Longest stretch of consecutive equal finite values."""
    v = values[np.isfinite(values)]
    if v.size == 0:
        return 0
    change = np.flatnonzero(np.diff(v) != 0)
    bounds = np.concatenate([[-1], change, [v.size - 1]])
    return int(np.diff(bounds).max())


def bimodality_coefficient(v: np.ndarray) -> float:
    """(skew^2 + 1) / (kurtosis + 3(n-1)^2/((n-2)(n-3))); > 5/9 suggests several modes."""
    n = v.size
    if n < 10 or np.std(v) == 0:
        return float("nan")
    z = (v - v.mean()) / v.std()
    g = float(np.mean(z**3))  # sample skewness
    k = float(np.mean(z**4)) - 3.0  # excess kurtosis
    return (g * g + 1.0) / (k + 3.0 * (n - 1) ** 2 / ((n - 2) * (n - 3)))


def sensor_checks(frame: pd.DataFrame, name: str, low: float, high: float) -> dict[str, Any]:
    col = frame[name].to_numpy(np.float64)
    n = col.size
    nan = np.isnan(col)
    nonfinite = np.isinf(col)
    finite = col[~nan & ~nonfinite]
    out_of_range = (finite < low) | (finite > high)
    valid = finite[~out_of_range]
    flat_run = 0.0
    mono_up, mono_down, steps = 0, 0, 0
    for _, g in frame.groupby("asset", sort=False):
        v = g[name].to_numpy(np.float64)
        flat_run = max(flat_run, _longest_run(v) / max(len(v), 1))
        d = np.diff(v[np.isfinite(v)])
        mono_up += int((d > 0).sum())
        mono_down += int((d < 0).sum())
        steps += int((d != 0).sum())
    distinct = int(np.unique(valid).size)
    monotonic = steps >= 10 and max(mono_up, mono_down) >= MONOTONIC * steps
    bc = bimodality_coefficient(valid)
    r: dict[str, Any] = {
        "rows": n,
        "missing": int(nan.sum()),
        "missing_frac": float(nan.mean()) if n else 1.0,
        "non_finite": int(nonfinite.sum()),
        "out_of_range": int(out_of_range.sum()),
        "invalid_frac": float((nonfinite.sum() + out_of_range.sum()) / n) if n else 0.0,
        "distinct_values": distinct,
        "constant": distinct <= 1,
        "longest_flat_frac": float(flat_run),
        "monotonic": bool(monotonic),
        "categorical": 1 < distinct <= CATEGORICAL_DISTINCT and valid.size > 5 * distinct,
        "bimodality": None if np.isnan(bc) else round(bc, 3),
        "multimodal": bool(bc > BIMODAL_BC) if not np.isnan(bc) else False,
        "min": float(valid.min()) if valid.size else None,
        "max": float(valid.max()) if valid.size else None,
        "mean": float(valid.mean()) if valid.size else None,
    }
    drop, warn = [], []
    if r["missing_frac"] > DROP_MISSING:
        drop.append(f"{r['missing_frac']:.0%} missing")
    elif r["missing_frac"] > WARN_MISSING:
        warn.append(f"{r['missing_frac']:.0%} missing")
    if r["invalid_frac"] > DROP_INVALID:
        drop.append(f"{r['invalid_frac']:.0%} invalid (non-finite or outside [{low}, {high}])")
    elif r["invalid_frac"] > WARN_INVALID:
        warn.append(f"{r['invalid_frac']:.1%} invalid")
    if r["constant"]:
        drop.append("constant (flat-lined throughout)")
    elif r["longest_flat_frac"] > WARN_FLAT_RUN:
        warn.append(f"flat-lined for {r['longest_flat_frac']:.0%} of an asset's rows")
    if r["monotonic"]:
        drop.append("monotonic (a counter or drift, not a state)")
    if r["categorical"]:
        warn.append(f"categorical-looking ({distinct} distinct values)")
    if r["multimodal"]:
        warn.append("several operating modes (bimodal distribution); check the off condition")
    r["grade"] = "drop" if drop else "warning" if warn else "ok"
    r["reasons"] = drop + warn
    return r


def dataset_checks(frame: pd.DataFrame, period_s: float, gap_factor: float) -> dict[str, Any]:
    dup = ooo = gaps = 0
    largest_gap = 0.0
    intervals = []
    for _, g in frame.groupby("asset", sort=False):
        t = ts_ns(g["ts"])
        d = np.diff(t)
        ooo += int((d < 0).sum())
        dup += int(g["ts"].duplicated().sum())
        ts = np.sort(t)
        ds = np.diff(ts) / 1e9
        pos = ds[ds > 0]
        if pos.size:
            intervals.append(pos)
            big = pos[pos > gap_factor * period_s]
            gaps += int(big.size)
            largest_gap = max(largest_gap, float(pos.max()))
    all_int = np.concatenate(intervals) if intervals else np.empty(0)
    return {
        "rows": len(frame),
        "assets": int(frame["asset"].nunique()),
        "start": str(frame["ts"].min()) if len(frame) else None,
        "end": str(frame["ts"].max()) if len(frame) else None,
        "duplicate_timestamps": dup,
        "out_of_order_timestamps": ooo,
        "gaps": gaps,
        "gap_threshold_s": gap_factor * period_s,
        "largest_gap_s": largest_gap,
        "median_interval_s": float(np.median(all_int)) if all_int.size else None,
        "declared_period_s": period_s,
        "labelled_rows": int(frame["label"].sum()),
    }


def quality_report(frame: pd.DataFrame, schema: AssetSchema, gap_factor: float = 5.0
                   ) -> dict[str, Any]:
    sensors = {s.name: sensor_checks(frame, s.name, s.low, s.high) for s in schema.sensors}
    ds = dataset_checks(frame, schema.sample_period_s, gap_factor)
    warnings = []
    if ds["duplicate_timestamps"]:
        warnings.append(f"{ds['duplicate_timestamps']} duplicate timestamps (the last is kept)")
    if ds["out_of_order_timestamps"]:
        warnings.append(f"{ds['out_of_order_timestamps']} out-of-order timestamps (sorted)")
    if ds["gaps"]:
        warnings.append(f"{ds['gaps']} gaps longer than {ds['gap_threshold_s']:.0f} s "
                        f"(largest {ds['largest_gap_s']:.0f} s)")
    med = ds["median_interval_s"]
    if med and not 0.5 <= med / schema.sample_period_s <= 2.0:
        warnings.append(f"median interval {med:.3g} s differs from the schema's period "
                        f"{schema.sample_period_s} s; resample or fix the schema")
    drop = [n for n, r in sensors.items() if r["grade"] == "drop"]
    return {
        "asset_class": schema.asset_class,
        "dataset": {**ds, "warnings": warnings},
        "sensors": sensors,
        "recommended_drop": drop,
        "summary": {g: sum(r["grade"] == g for r in sensors.values())
                    for g in ("ok", "warning", "drop")},
    }


def render_text(report: dict[str, Any]) -> str:
    ds = report["dataset"]
    lines = [
        f"Data quality: {report['asset_class']}  {ds['rows']} rows, {ds['assets']} assets, "
        f"{ds['start']} .. {ds['end']}",
        f"  duplicates {ds['duplicate_timestamps']}, out of order "
        f"{ds['out_of_order_timestamps']}, gaps {ds['gaps']}, median interval "
        f"{ds['median_interval_s']} s, labelled rows {ds['labelled_rows']}",
    ]
    lines += [f"  ! {w}" for w in ds["warnings"]]
    s = report["summary"]
    lines.append(f"Sensors: {s['ok']} ok, {s['warning']} warning, {s['drop']} drop")
    for name, r in report["sensors"].items():
        if r["grade"] != "ok":
            lines.append(f"  {r['grade']:<7} {name}: " + "; ".join(r["reasons"]))
    lines.append("Recommended to drop: " + (", ".join(report["recommended_drop"]) or "none"))
    return "\n".join(lines)
