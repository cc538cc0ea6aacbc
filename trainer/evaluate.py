"""Run a bundle over labelled history and measure it as an operator would see it.

Scoring: every row gets the calibrated score of the window ending at it (the same math as
the agent's `BatchedAEScorer`); rows in the off condition and the first window-1 rows of an
asset get NaN.  Alarms: `models.event_rule.hysteresis_events` (open at `open_at`, close
below `close_below`, at least `min_len` samples) — a row is predicted anomalous when it lies
inside an event.

Point-wise metrics pool rows with a score: precision, recall, F1, false-alarm rate
FP/(FP+TN), missed-alarm rate FN/(FN+TP).  Event metrics: labelled events (contiguous label
runs) found when a predicted event overlaps them; detection delay = first alarm - label
start (negative: warned before the label); forewarning = label end - first alarm (Lookout's
sense: how long before the end of the labelled lead-up the alarm came); false events = events
overlapping no label, per day of unlabelled scored time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from models.bundle import Bundle
from models.event_rule import alarm_mask, hysteresis_events
from models.lstm_ae import score_windows, sensor_shares
from trainer.history import ts_ns
from trainer.preprocess import all_windows


@dataclass
class AssetScores:
    asset: str
    ts: np.ndarray  # int64 ns since the epoch, UTC
    label: np.ndarray  # int8
    raw: np.ndarray
    score: np.ndarray
    shares: np.ndarray  # (rows, sensors)
    events: np.ndarray  # (n, 2) [start, end) row indices
    pred: np.ndarray  # bool per row


@dataclass(frozen=True)
class EventRule:
    open_at: float = 4.0
    close_below: float = 3.0
    min_len: int = 1


def score_frame(bundle: Bundle, frame: pd.DataFrame, rule: EventRule, device: str = "cpu"
                ) -> list[AssetScores]:
    model = bundle.build_model()
    sensors = list(bundle.schema.sensor_names)
    w = bundle.config.window
    out = []
    for asset, g in frame.groupby("asset", sort=False):
        vals = g[sensors].to_numpy(np.float64)
        n = len(vals)
        raw = np.full(n, np.nan)
        shares = np.full((n, len(sensors)), np.nan)
        if n >= w:
            r, e = score_windows(model, bundle.normalizer, all_windows(vals, w), device)
            raw[w - 1 :] = r
            shares[w - 1 :] = sensor_shares(e)
        off = bundle.schema.off_condition
        if off is not None:
            raw[off.mask(vals, tuple(sensors))] = np.nan
        score = bundle.calibrator.surprise(raw)
        events = hysteresis_events(score, rule.open_at, rule.close_below, rule.min_len)
        out.append(AssetScores(str(asset), ts_ns(g["ts"]), g["label"].to_numpy(np.int8),
                               raw, score, shares, events, alarm_mask(events, n)))
    return out


def _runs(mask: np.ndarray) -> np.ndarray:
    d = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    return np.stack([np.flatnonzero(d == 1), np.flatnonzero(d == -1)], axis=1)


def confusion(a: AssetScores) -> dict[str, int]:
    scored = np.isfinite(a.score)
    lab = a.label.astype(bool)
    return {
        "tp": int((a.pred & lab & scored).sum()),
        "fp": int((a.pred & ~lab & scored).sum()),
        "fn": int((~a.pred & lab & scored).sum()),
        "tn": int((~a.pred & ~lab & scored).sum()),
    }


def pointwise(c: dict[str, int]) -> dict[str, float | None]:
    tp, fp, fn, tn = c["tp"], c["fp"], c["fn"], c["tn"]

    def ratio(a: int, b: int) -> float | None:
        return a / b if b else None

    p, r = ratio(tp, tp + fp), ratio(tp, tp + fn)
    f1 = 2 * p * r / (p + r) if p is not None and r is not None and p + r > 0 else (
        0.0 if r is not None else None)
    return {"precision": p, "recall": r, "f1": f1, "false_alarm_rate": ratio(fp, fp + tn),
            "missed_alarm_rate": ratio(fn, fn + tp)}


def event_stats(a: AssetScores) -> dict[str, Any]:
    labelled = _runs(a.label.astype(bool))
    ts = a.ts / 1e9
    found, delays, forewarn = 0, [], []
    for ls, le in labelled:
        hits = a.events[(a.events[:, 0] < le) & (a.events[:, 1] > ls)]
        if len(hits):
            found += 1
            first = max(int(hits[0, 0]), 0)
            delays.append(ts[first] - ts[ls])
            forewarn.append(ts[le - 1] - ts[first])
    false_events = sum(
        1 for es, ee in a.events if not ((labelled[:, 0] < ee) & (labelled[:, 1] > es)).any())
    scored_normal = np.isfinite(a.score) & (a.label == 0)
    period = float(np.median(np.diff(ts))) if ts.size > 1 else 0.0
    days = scored_normal.sum() * period / 86400.0
    return {
        "labelled_events": len(labelled),
        "found": found,
        "missed": len(labelled) - found,
        "predicted_events": len(a.events),
        "false_events": false_events,
        "normal_days": days,
        "delays_s": delays,
        "forewarnings_s": forewarn,
    }


def summarize(assets: list[AssetScores]) -> dict[str, Any]:
    """Pooled point-wise and event metrics over these assets."""
    c = {"tp": 0, "fp": 0, "fn": 0, "tn": 0}
    ev: dict[str, Any] = {"labelled_events": 0, "found": 0, "missed": 0, "false_events": 0,
                          "predicted_events": 0, "normal_days": 0.0}
    delays: list[float] = []
    forewarn: list[float] = []
    for a in assets:
        for k, v in confusion(a).items():
            c[k] += v
        e = event_stats(a)
        for k in ev:
            ev[k] += e[k]
        delays += e["delays_s"]
        forewarn += e["forewarnings_s"]
    days = ev.pop("normal_days")
    return {
        **pointwise(c),
        "confusion": c,
        "events": {
            **ev,
            "false_events_per_day": ev["false_events"] / days if days > 0 else None,
            "mean_detection_delay_s": float(np.mean(delays)) if delays else None,
            "mean_forewarning_s": float(np.mean(forewarn)) if forewarn else None,
        },
    }


def evaluate(assets: list[AssetScores], rule: EventRule, exclude: list[str] | None = None
             ) -> dict[str, Any]:
    """metrics.json content: overall, per asset, and overall without `exclude`d assets."""
    exclude = exclude or []
    out: dict[str, Any] = {
        "rule": {"open_at": rule.open_at, "close_below": rule.close_below,
                 "min_len": rule.min_len},
        "overall": summarize(assets),
        "per_asset": {a.asset: summarize([a]) for a in assets},
    }
    if exclude:
        out["excluded_from_summary"] = exclude
        out["overall_excluding"] = summarize([a for a in assets if a.asset not in exclude])
        out["overall_only_excluded"] = summarize([a for a in assets if a.asset in exclude])
    return out
