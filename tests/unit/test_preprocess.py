from __future__ import annotations

import numpy as np
import pandas as pd

from models.schema import AssetSchema, OffCondition, SensorSpec
from trainer.preprocess import gather_windows, regularize, trainable_mask, window_ends

SCHEMA = AssetSchema("p", (SensorSpec("speed", low=0, high=4000), SensorSpec("t")),
                     sample_period_s=1.0, window=3, off_condition=OffCondition("speed", 100))


def test_regularize_resamples_fills_short_gaps_and_blanks_invalid() -> None:
    secs = [0, 1, 1, 2, 8, 9, 3]  # duplicate 1, out-of-order 3, gap 3..8
    f = pd.DataFrame({
        "asset": "a", "ts": pd.to_datetime(secs, unit="s", utc=True),
        "speed": [1000, 1001, 1002, 1003, 1008, 9999, 1003.5],
        "t": [1.0, 2, 3, 4, 9, 10, 5],
        "label": np.int8(0),
    })
    out = regularize(f, SCHEMA, ffill_limit=2)
    assert len(out) == 10  # 0..9 on a 1 s grid
    assert out["speed"][1] == 1002  # the last of the duplicates
    assert out["t"][3] == 5
    assert out["t"][4] == 5 and out["t"][5] == 5 and np.isnan(out["t"][6])  # ffill 2 then NaN
    # out of range -> missing, then forward-filled like any short gap
    assert out["speed"][9] == 1008 and out["speed"].max() < 4000


def test_trainable_mask_and_windows() -> None:
    f = pd.DataFrame({"speed": [1000, 1000, 50, 1000, 1000, 1000, 1000, 1000],
                      "t": [1.0, 1, 1, 1, np.nan, 1, 1, 1],
                      "label": [0, 0, 0, 0, 0, 0, 1, 0]})
    ok = trainable_mask(f, SCHEMA)
    assert ok.tolist() == [True, True, False, True, True, True, False, True]
    ends = window_ends(ok, 3)
    assert ends.tolist() == [5]
    w = gather_windows(f[["speed", "t"]].to_numpy(float), ends, 3)
    assert w.shape == (1, 3, 2) and np.isnan(w[0, 1, 1])
