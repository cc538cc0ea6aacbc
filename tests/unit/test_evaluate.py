from __future__ import annotations

import numpy as np

from models.event_rule import alarm_mask, hysteresis_events
from trainer.evaluate import AssetScores, EventRule, evaluate


def _asset(name: str, score: list[float], label: list[int], period_s: float = 3600.0
           ) -> AssetScores:
    s = np.asarray(score, float)
    ev = hysteresis_events(s, 4, 3)
    n = s.size
    return AssetScores(name, (np.arange(n) * period_s * 1e9).astype(np.int64),
                       np.asarray(label, np.int8), s, s, np.full((n, 2), 0.5), ev,
                       alarm_mask(ev, n))


def test_pointwise_and_event_metrics() -> None:
    #            0    1  2  3  4  5  6  7  8  9
    score = [np.nan, 0, 5, 0, 0, 0, 5, 5, 0, 0]
    label = [0, 0, 0, 0, 0, 1, 1, 1, 1, 0]
    m = evaluate([_asset("a", score, label)], EventRule())
    o = m["overall"]
    assert o["confusion"] == {"tp": 2, "fp": 1, "fn": 2, "tn": 4}  # row 0 unscored
    assert o["precision"] == 2 / 3 and o["recall"] == 0.5
    assert np.isclose(o["f1"], 2 * (2 / 3) * 0.5 / (2 / 3 + 0.5))
    assert o["false_alarm_rate"] == 1 / 5 and o["missed_alarm_rate"] == 0.5
    ev = o["events"]
    assert (ev["labelled_events"], ev["found"], ev["missed"], ev["false_events"]) == (1, 1, 0, 1)
    assert ev["mean_detection_delay_s"] == 3600.0  # label at row 5, alarm at row 6
    assert ev["mean_forewarning_s"] == 2 * 3600.0  # alarm at 6, label ends at row 8
    # 5 unlabelled scored hours -> 1 false event per 5/24 day
    assert np.isclose(ev["false_events_per_day"], 24 / 5)


def test_excluded_assets_summarised_apart() -> None:
    a = _asset("1", [0, 5, 5], [0, 1, 1])
    b = _asset("3", [0, 0, 0], [0, 1, 1])
    m = evaluate([a, b], EventRule(), exclude=["3"])
    assert m["overall_excluding"]["recall"] == 1.0
    assert m["overall_only_excluded"]["recall"] == 0.0
    assert m["overall"]["recall"] == 0.5
    assert m["per_asset"]["3"]["events"]["missed"] == 1
