"""Keep the benchmark scripts from rotting: a very short run, checking results, not speed."""

from __future__ import annotations

import json
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


def test_e2e_benchmark_runs_and_reports(tmp_path: Path) -> None:
    """The end-to-end benchmark on real Mosquitto and InfluxDB, 3 assets for 8 s: it ran,
    every sample sent became durable, and the table and JSON carry every figure."""
    out = tmp_path / "e2e.json"
    script = Path(__file__).with_name("bench_e2e.py")
    r = subprocess.run([sys.executable, str(script), "--smoke", "--json", str(out)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "samples/s" in r.stdout and "ratio_to_mosquitto_sub" in r.stdout
    doc = json.loads(out.read_text())
    (step,) = doc["steps"]
    assert step["all_durable"] and step["samples_per_s"] > 0 and step["rows_per_s"] > 0
    assert step["score_latency"]["n"] > 0 and step["sample_latency"]["n"] > 0
    assert step["cpu_cores"]["agent"] > 0 and step["agent_peak_rss_mb"] > 0
    assert step["ae"]["windows_per_s_wall"] > 0 and step["ae"]["bare_windows_per_s"] > 0
    assert doc["mosquitto_sub"]["messages_per_s"] > 0
    # reported, not a speed: whether 3 assets "kept up" in a few seconds is the machine's affair
    sm = doc["summary"]
    assert "max_sustained_samples_per_s" in sm and sm["ratio_to_mosquitto_sub"] > 0


def test_spool_outage_bench_reports_nothing_missing(tmp_path: Path) -> None:
    """bench_spool_outage.py: a 5 s InfluxDB outage at 500 points/s; it ran and found every
    sent (asset, ts) in InfluxDB (not a speed)."""
    script = Path(__file__).with_name("bench_spool_outage.py")
    r = subprocess.run(
        [sys.executable, str(script), "--rate-points", "500", "--outage-s", "5",
         "--warmup-s", "3", "--sample-s", "1", "--tmp", str(tmp_path)],
        capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    res = json.loads(r.stdout.strip().splitlines()[-1])
    assert res["sent_points"] > 0 and res["peak_spool_points"] > 0
    assert res["missing"] == 0 and res["query_missing"] == 0 and res["dropped_points"] == 0
    assert res["sum_mismatches"] == 0 and res["query_extra"] == 0
    assert res["drained_within_timeout"] and res["bytes_per_point"] > 0
    assert "minutes at 500 points/s" in res["projection"] and "load average" in res["load_end"]
