"""Compare the online detectors on the pump simulator: cost per row and separation.

Run: .venv/bin/python tests/bench/bench_online_detectors.py [--rows 4800]
For each detector it learns on normal rows, keeps learning (gated, as the agent does), and
prints microseconds per row and the raw score quantiles on normal rows versus fault rows of a
bearing fault, per fault kind.  Output: a table, then JSON.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from edge_agent.scoring.mahalanobis import MahalanobisScorer
from edge_agent.scoring.river_scorer import RiverScorer
from models.catalog import CENTRIFUGAL_PUMP
from simulators.faults import Fault
from simulators.pump import PumpFleet


def run(kind: str, detector: str, rows: int, fault_at: int) -> dict[str, float]:
    sensor = {"sensor_drift": "motor_current_a", "stuck_sensor": "flow_m3h"}.get(kind)
    fleet = PumpFleet(["p1"], seed=3, faults=[Fault("p1", kind, fault_at, 0.6, 120, sensor)],
                      stop_probability=0.0)
    data = np.array([fleet.step()[0] for _ in range(rows)])
    warm = fault_at // 2
    if detector == "mahalanobis":
        sc: MahalanobisScorer | RiverScorer = MahalanobisScorer(
            CENTRIFUGAL_PUMP, 1, warmup_rows=warm // 2, calibration_rows=warm // 2)
    else:
        sc = RiverScorer(CENTRIFUGAL_PUMP, 1, kind=detector, warmup_rows=warm // 2,
                         calibration_rows=warm // 2)
    raw = np.full(rows, np.nan)
    a = np.zeros(1, np.int32)
    t0 = time.perf_counter()
    for k in range(rows):
        s = sc.score(a, data[k : k + 1])
        raw[k] = s.raw[0]
        learn = k < fault_at  # the agent stops learning once a row looks abnormal
        sc.learn(a, data[k : k + 1], np.array([learn]), s)
    us = (time.perf_counter() - t0) / rows * 1e6
    normal = raw[warm:fault_at]
    faulty = raw[fault_at + 300 :]
    q99 = float(np.nanquantile(normal, 0.99))
    return {
        "us_per_row": round(us, 1),
        "normal_q99": round(q99, 3),
        "fault_q10": round(float(np.nanquantile(faulty, 0.10)), 3),
        "fault_rows_above_normal_q99": round(float(np.mean(faulty > q99)), 3),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=4800)
    args = ap.parse_args()
    fault_at = args.rows * 5 // 8
    kinds = ["bearing_wear", "cavitation", "imbalance", "sensor_drift", "stuck_sensor"]
    results = {}
    print(f"{'detector':14} {'fault':14} {'us/row':>7} {'normal q99':>11} {'fault q10':>10} "
          f"{'fault rows > q99':>17}")
    for det in ("mahalanobis", "loda", "half_space_trees"):
        for kind in kinds:
            r = run(kind, det, args.rows, fault_at)
            results[f"{det}/{kind}"] = r
            print(f"{det:14} {kind:14} {r['us_per_row']:7.1f} {r['normal_q99']:11.3f} "
                  f"{r['fault_q10']:10.3f} {r['fault_rows_above_normal_q99']:17.1%}")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
