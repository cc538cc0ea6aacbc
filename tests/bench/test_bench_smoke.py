"""Keep the benchmark scripts from rotting: a very short run, checking results, not speed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.bench.bench_ae_scorer import bench_epoch, bench_scoring, default_parts

pytestmark = pytest.mark.bench_smoke


def test_bench_functions_report_every_size() -> None:
    model, norm, calib = default_parts(window=8, n_sensors=3)
    rows = bench_scoring(model, norm, calib, "cpu", sizes=(1, 5), min_seconds=0.01, repeats=2)
    assert [r["assets"] for r in rows] == [1, 5]
    assert all(r["windows_per_s"] > 0 and r["ticks"] >= 3 for r in rows)
    assert bench_epoch(model, "cpu", n_windows=64, repeats=1)["epoch_s"] > 0


def test_cuda_check_runs_without_gpu_or_checks_agreement() -> None:
    script = Path(__file__).with_name("cuda_check.py")
    r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "no CUDA" in r.stdout or "-> agree" in r.stdout
