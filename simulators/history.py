"""Historical telemetry files with labelled faults, for the trainer and its evaluation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from simulators.faults import FAULT_KINDS, Fault, labels_for, write_labels
from simulators.pump import SENSORS, PumpFleet


def random_faults(
    asset_ids: list[str], n: int, duration_s: float, seed: int, min_gap_s: float = 7200.0
) -> list[Fault]:
    """`n` faults cycling through every kind, on random assets, each lasting 1-3 hours."""
    rng = np.random.default_rng(seed + 1)
    out: list[Fault] = []
    sensor_for = {"sensor_drift": "motor_current_a", "stuck_sensor": "flow_m3h"}
    busy_until = dict.fromkeys(asset_ids, 3 * 3600.0)  # leave the first hours normal
    for k in range(n):
        kind = FAULT_KINDS[k % len(FAULT_KINDS)]
        asset = asset_ids[int(rng.integers(len(asset_ids)))]
        start = busy_until[asset] + float(rng.uniform(0, 4 * 3600))
        length = float(rng.uniform(3600, 3 * 3600))
        if start + length > duration_s:
            continue
        out.append(Fault(asset, kind, start, float(rng.uniform(0.6, 1.2)), 300.0,
                         sensor_for.get(kind), start + length))
        busy_until[asset] = start + length + min_gap_s
    return out


def write_history(
    out_dir: Path, asset_ids: list[str], duration_s: float, faults: list[Fault],
    seed: int = 0, dt_s: float = 1.0, t0_ns: int = 1_767_225_600_000_000_000,
    fmt: str = "csv",
) -> tuple[Path, Path]:
    """One file of all assets' rows (timestamp, asset, sensors..., label) plus labels.csv."""
    out_dir.mkdir(parents=True, exist_ok=True)
    fleet = PumpFleet(asset_ids, seed=seed, dt_s=dt_s, faults=faults)
    steps = round(duration_s / dt_s)
    data = np.empty((steps, len(asset_ids), len(SENSORS)))
    for k in range(steps):
        data[k] = fleet.step()
    ts = t0_ns + np.round(np.arange(1, steps + 1) * dt_s * 1e9).astype(np.int64)
    labels = labels_for(faults, t0_ns, duration_s)
    frames = []
    for i, a in enumerate(asset_ids):
        df = pd.DataFrame(np.round(data[:, i, :], 4), columns=list(SENSORS))
        df.insert(0, "asset", a)
        df.insert(0, "timestamp", pd.to_datetime(ts, utc=True))
        lab = np.zeros(steps, np.int8)
        for lb in labels:
            if lb.asset == a:
                lab[(ts >= lb.start_ns) & (ts < lb.end_ns)] = 1
        df["label"] = lab
        frames.append(df)
    full = pd.concat(frames, ignore_index=True)
    if fmt == "parquet":
        path = out_dir / "history.parquet"
        full.to_parquet(path, index=False)
    else:
        path = out_dir / "history.csv"
        full.to_csv(path, index=False, date_format="%Y-%m-%dT%H:%M:%S.%fZ")
    labels_path = out_dir / "labels.csv"
    write_labels(labels_path, labels)
    return path, labels_path
