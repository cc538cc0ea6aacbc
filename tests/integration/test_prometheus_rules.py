"""The example alerting rules: valid for Prometheus, and each alert fires on its own symptom
(`promtool test rules` with synthetic series, deploy/prometheus/gearwatch-rules.test.yml)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

PROM = Path(__file__).resolve().parents[2] / "deploy" / "prometheus"


def _promtool() -> str:
    path = shutil.which("promtool")
    assert path, "promtool is missing: apt-get install prometheus (deploy/bootstrap-system.sh)"
    return path


def test_rules_are_valid() -> None:
    r = subprocess.run([_promtool(), "check", "rules", str(PROM / "gearwatch-rules.yml")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SUCCESS: 7 rules found" in r.stdout


def test_each_alert_fires_on_its_symptom() -> None:
    r = subprocess.run([_promtool(), "test", "rules", "gearwatch-rules.test.yml"], cwd=PROM,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SUCCESS" in r.stdout
    tested = (PROM / "gearwatch-rules.test.yml").read_text()
    for alert in ("GearwatchAgentDown", "GearwatchSourceLost", "GearwatchNoDataFromAsset",
                  "GearwatchDecodeErrorsRising", "GearwatchSpoolFilling", "GearwatchSpoolFull",
                  "GearwatchSinkFailing"):
        assert f"alertname: {alert}" in tested, f"{alert} has no promtool test"
