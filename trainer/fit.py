"""Fit an LSTM-AE on normal history, calibrate it on held-back normal data, build a bundle.

Per asset the trainable rows are split in time: the first part trains, the next one drives
early stopping (validation), the last one is held back for calibration only — the
calibrator must see scores of windows the model never fitted, or it would learn an
optimistically small error and alarm too often.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from models.calibration import TailCalibrator
from models.lstm_ae import (
    AEConfig,
    LSTMAutoencoder,
    Normalizer,
    masked_loss,
    resolve_device,
    score_windows,
)
from models.schema import AssetSchema
from trainer.history import DataError
from trainer.preprocess import gather_windows, trainable_mask, window_ends

MIN_CALIBRATION_WINDOWS = 20


@dataclass
class FitOptions:
    hidden: tuple[int, ...] = (64,)
    latent: int = 16
    score_steps: int = 5
    epochs: int = 60
    batch_size: int = 64
    lr: float = 2e-3
    patience: int = 8
    val_frac: float = 0.15
    calib_frac: float = 0.2
    train_stride: int = 1
    device: str = "auto"
    seed: int = 0
    progress: bool = True
    river: bool = False


@dataclass
class FitResult:
    model: LSTMAutoencoder
    normalizer: Normalizer
    calibrator: TailCalibrator
    history: list[dict[str, float]]
    info: dict[str, Any] = field(default_factory=dict)
    river_state: bytes | None = None


def split_windows(frame: pd.DataFrame, schema: AssetSchema, opts: FitOptions
                  ) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Windows for train/val/calib (split by time within each asset), and the train rows."""
    sensors = list(schema.sensor_names)
    w = schema.window
    parts: dict[str, list[np.ndarray]] = {"train": [], "val": [], "calib": []}
    train_rows = []
    for _, g in frame.groupby("asset", sort=True):
        vals = g[sensors].to_numpy(np.float64)
        ok = trainable_mask(g, schema)
        n = len(g)
        cut1 = round(n * (1 - opts.val_frac - opts.calib_frac))
        cut2 = round(n * (1 - opts.calib_frac))
        for name, lo, hi, stride in (("train", 0, cut1, opts.train_stride), ("val", cut1, cut2, 1),
                                     ("calib", cut2, n, 1)):
            ends = window_ends(ok[lo:hi], w, stride) + lo
            parts[name].append(gather_windows(vals, ends, w))
        train_rows.append(vals[:cut1][ok[:cut1]])
    out = {k: np.concatenate(v) if v else np.empty((0, w, len(sensors)), np.float32)
           for k, v in parts.items()}
    return out, np.concatenate(train_rows) if train_rows else np.empty((0, len(sensors)))


def fit(frame: pd.DataFrame, schema: AssetSchema, opts: FitOptions) -> FitResult:
    """Train, early-stop, calibrate.  `frame` is a regularised history (see preprocess)."""
    torch.manual_seed(opts.seed)
    rng = np.random.default_rng(opts.seed)
    wins, train_rows = split_windows(frame, schema, opts)
    n_tr, n_val, n_cal = (len(wins[k]) for k in ("train", "val", "calib"))
    if n_tr < 8 or n_val < 1 or n_cal < MIN_CALIBRATION_WINDOWS:
        raise DataError(
            f"not enough normal data for window {schema.window}: {n_tr} train, {n_val} "
            f"validation, {n_cal} calibration windows (need >= {MIN_CALIBRATION_WINDOWS} for "
            "calibration). Provide more history, a shorter --window, or fewer gaps/labels."
        )
    normalizer = Normalizer.fit(train_rows)
    cfg = AEConfig(n_sensors=schema.n_sensors, window=schema.window, hidden=opts.hidden,
                   latent=opts.latent, score_steps=min(opts.score_steps, schema.window))
    dev = resolve_device(opts.device)
    model = LSTMAutoencoder(cfg).to(dev)
    optim = torch.optim.Adam(model.parameters(), lr=opts.lr)
    x_tr = torch.from_numpy(normalizer.apply(wins["train"])).to(dev)
    x_val = torch.from_numpy(normalizer.apply(wins["val"])).to(dev)
    best, best_state, bad_epochs = math.inf, copy.deepcopy(model.state_dict()), 0
    history: list[dict[str, float]] = []
    bar = tqdm(range(opts.epochs), desc="fit", unit="epoch", disable=not opts.progress)
    t0 = time.perf_counter()
    for epoch in bar:
        model.train()
        order = torch.from_numpy(rng.permutation(n_tr)).to(dev)
        total = 0.0
        for i in range(0, n_tr, opts.batch_size):
            batch = x_tr[order[i : i + opts.batch_size]]
            loss = masked_loss(model, batch)
            optim.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optim.step()
            total += loss.item() * len(batch)
        model.eval()
        with torch.inference_mode():
            val = float(masked_loss(model, x_val))
        history.append({"epoch": epoch, "train_loss": total / n_tr, "val_loss": val})
        bar.set_postfix(train=f"{total / n_tr:.4f}", val=f"{val:.4f}")
        if val < best - 1e-6:
            best, best_state, bad_epochs = val, copy.deepcopy(model.state_dict()), 0
        else:
            bad_epochs += 1
            if bad_epochs >= opts.patience:
                break
    seconds = time.perf_counter() - t0
    model.load_state_dict(best_state)
    model = model.cpu().eval()
    raw_cal, _ = score_windows(model, normalizer, wins["calib"])
    calibrator = TailCalibrator().fit(raw_cal)
    river_state = None
    if opts.river:
        from models.river_state import dumps_detector, make_detector, warm_start

        river_state = dumps_detector(
            warm_start(make_detector(seed=opts.seed), train_rows, schema.sensor_names))
    info = {
        "training": {
            "options": {k: (list(v) if isinstance(v, tuple) else v)
                        for k, v in asdict(opts).items() if k != "progress"},
            "windows": {"train": n_tr, "val": n_val, "calib": n_cal},
            "epochs_run": len(history),
            "best_val_loss": best,
            "seconds": round(seconds, 2),
            "device": str(dev),
        },
        "calibration": {"n": int(raw_cal.size), "raw_median": float(np.median(raw_cal)),
                        "raw_p99": float(np.quantile(raw_cal, 0.99))},
    }
    return FitResult(model, normalizer, calibrator, history, info, river_state)
