from __future__ import annotations

import numpy as np
import pandas as pd

from models.schema import AssetSchema, SensorSpec
from trainer.quality import quality_report, render_text


def _frame() -> tuple[pd.DataFrame, AssetSchema]:
    rng = np.random.default_rng(0)
    n = 600
    ts = pd.date_range("2026-01-01", periods=n, freq="1s", tz="UTC").to_series().reset_index(
        drop=True)
    ts[100] = ts[99]  # duplicate
    ts[200], ts[201] = ts[201], ts[200]  # out of order
    ts[400:] = ts[400:] + pd.Timedelta(minutes=10)  # one big gap
    cols = {
        "good": rng.normal(50, 5, n),
        "missing": np.where(rng.random(n) < 0.7, np.nan, rng.normal(0, 1, n)),
        "constant": np.full(n, 3.0),
        "counter": np.arange(n, dtype=float),
        "mode": rng.choice([0.0, 1.0, 2.0], n),
        "bimodal": np.concatenate([rng.normal(0, 1, n // 2), rng.normal(20, 1, n // 2)]),
        "ranged": np.where(rng.random(n) < 0.3, 500.0, rng.normal(50, 1, n)),
    }
    cols["ranged"][5] = np.inf
    f = pd.DataFrame({"asset": "a1", "ts": ts, **cols, "label": np.int8(0)})
    schema = AssetSchema("x", tuple(SensorSpec(c, low=0 if c == "ranged" else -np.inf,
                                               high=100 if c == "ranged" else np.inf)
                                    for c in cols), sample_period_s=1.0)
    return f, schema


def test_grades_and_dataset_checks() -> None:
    f, schema = _frame()
    r = quality_report(f, schema)
    s = r["sensors"]
    assert s["good"]["grade"] == "ok", s["good"]["reasons"]
    assert s["missing"]["grade"] == "drop" and s["missing"]["missing_frac"] > 0.6
    assert s["constant"]["grade"] == "drop" and s["constant"]["constant"]
    assert s["counter"]["monotonic"] and s["counter"]["grade"] == "drop"
    assert s["mode"]["categorical"] and s["mode"]["grade"] == "warning"
    assert s["bimodal"]["multimodal"] and s["bimodal"]["grade"] == "warning"
    assert s["ranged"]["out_of_range"] > 100 and s["ranged"]["non_finite"] == 1
    assert s["ranged"]["grade"] == "drop"
    assert sorted(r["recommended_drop"]) == ["constant", "counter", "missing", "ranged"]
    ds = r["dataset"]
    assert ds["duplicate_timestamps"] == 1
    assert ds["out_of_order_timestamps"] == 1
    assert ds["gaps"] == 1 and ds["largest_gap_s"] > 590
    text = render_text(r)
    assert "Recommended to drop: " in text and "counter" in text and "monotonic" in text
