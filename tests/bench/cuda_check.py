"""On a GPU machine: the scoring benchmark on CUDA, and CUDA vs CPU scores agree.

    python tests/bench/cuda_check.py

Prints "no CUDA" and exits 0 where there is no GPU.  Exit 1 if CUDA and CPU disagree.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import numpy as np
import torch

from models.ae_scorer import BatchedAEScorer
from tests.bench.bench_ae_scorer import (
    bench_epoch,
    bench_scoring,
    default_parts,
    print_table,
)


def agreement(n_assets: int = 256) -> dict[str, float]:
    model, norm, calib = default_parts()
    rng = np.random.default_rng(7)
    data = rng.normal(size=(model.cfg.window + 3, n_assets, model.cfg.n_sensors))
    data[:, ::7, 2] = np.nan  # masked sensors take the same path on both devices
    outs = {}
    for dev in ("cpu", "cuda"):
        sc = BatchedAEScorer(model, norm, calib, n_assets=n_assets, device=dev)
        for t in range(len(data)):
            sc.push(np.arange(n_assets), data[t])
        outs[dev] = sc.score()
    raw_err = float(np.max(np.abs(outs["cpu"].raw - outs["cuda"].raw) / outs["cpu"].raw))
    score_err = float(np.max(np.abs(outs["cpu"].score - outs["cuda"].score)))
    share_err = float(np.nanmax(np.abs(outs["cpu"].shares - outs["cuda"].shares)))
    return {"max_rel_raw_diff": raw_err, "max_score_diff": score_err,
            "max_share_diff": share_err}


def main() -> int:
    if not torch.cuda.is_available():
        print("no CUDA")
        return 0
    print(f"CUDA device: {torch.cuda.get_device_name(0)}")
    model, norm, calib = default_parts()
    rows = bench_scoring(model, norm, calib, "cuda")
    epoch = bench_epoch(model, "cuda")
    print_table(rows, epoch, model.cfg)
    agree = agreement()
    ok = agree["max_rel_raw_diff"] < 1e-3 and agree["max_score_diff"] < 0.05
    print(f"CUDA vs CPU: {agree} -> {'agree' if ok else 'DISAGREE'}")
    print(json.dumps({"scoring": rows, "training": epoch, "agreement": agree, "ok": ok}))
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
