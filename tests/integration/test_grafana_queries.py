"""The Grafana dashboards and Prometheus rules against what the real agent produces.

One run like the walking skeleton (simulated pumps -> Mosquitto -> agent -> InfluxDB 1.x, with
a bearing fault on pump-2 so events exist), then:
- every InfluxQL query of every panel, annotation and template variable of every dashboard,
  with Grafana's macros substituted, runs against that InfluxDB without error and returns data;
- every metric name in the Prometheus panels and alerting rules is in the agent's /metrics;
- `gearwatch agent status` shows the run (sources, models, assets, the open event).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from gearwatch.localservers import LocalServer
from simulators.faults import Fault
from simulators.mqtt_publisher import publish_fleet
from tests.helpers import AgentThread, agent_config, influx_field_count, influx_query, wait_until

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
DASHBOARDS = sorted((REPO / "deploy/grafana/dashboards").glob("*.json"))
RULES = REPO / "deploy/prometheus/gearwatch-rules.yml"
FAULTY = "pump-2"
# series Prometheus itself adds to every scrape, and PromQL functions
PROMETHEUS_OWN = {"up"}


@dataclass
class Run:
    influx_url: str
    db: str
    t0_ns: int
    end_ns: int
    metrics_text: str
    status_out: str
    status_rc: int


@pytest.fixture(scope="module")
def run(mosquitto: LocalServer, influxdb: LocalServer,
        tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    db = "t_grafana_queries"
    state = tmp_path_factory.mktemp("agent-state")
    cfg = agent_config(mosquitto.port, influxdb.url, db,
                       agent={"state_dir": str(state), "status_interval_s": 0.5},
                       mqtt={"client_id": "agent-grafana"})
    with AgentThread(cfg) as at:
        agent = at.agent
        assert agent is not None
        rep = publish_fleet(
            "127.0.0.1", mosquitto.port, ["pump-1", "pump-2", "pump-3"], duration_s=5400,
            site="test", speedup=0, seed=3, qos=1,
            faults=[Fault(FAULTY, "bearing_wear", 4500.0, 1.0, 120.0)],
        )
        wait_until(lambda: agent.state.samples >= rep.samples, 90, "agent to receive all")
        wait_until(lambda: influx_field_count(influxdb.url, db) >= rep.samples, 90,
                   "InfluxDB to hold every sample")
        wait_until(lambda: len(agent.state.events) > 0, 30, "an event")
        events_before = len(influx_query(influxdb.url, db, 'SELECT * FROM "anomaly_event"'))
        wait_until(lambda: events_before > 0 or bool(influx_query(
            influxdb.url, db, 'SELECT * FROM "anomaly_event"')), 30, "the event in InfluxDB")
        metrics_text = httpx.get(f"http://127.0.0.1:{cfg.metrics.port}/metrics", timeout=10).text
        # the status file is rewritten every 0.5 s: wait for one that has seen the event
        wait_until(lambda: '"events_opened": 1' in (state / "status.json").read_text()
                   if (state / "status.json").exists() else False, 30, "status.json")
        st = subprocess.run([sys.executable, "-m", "gearwatch", "agent", "status",
                             "--state-dir", str(state)], capture_output=True, text=True,
                            timeout=60)
    yield Run(influxdb.url, db, rep.t0_ns, rep.end_ns, metrics_text, st.stdout + st.stderr,
              st.returncode)


def substitute(q: str, r: Run, extra: dict[str, str]) -> str:
    """Grafana's macros, as Grafana renders them for InfluxQL."""
    start_ms, end_ms = r.t0_ns // 1_000_000, r.end_ns // 1_000_000 + 60_000
    values = {
        "timeFilter": f"time >= {start_ms}ms and time <= {end_ms}ms",
        "__interval_ms": "10000",
        "__interval": "10s",
        "interval": "10s",
        "__rate_interval": "1m",
        "asset": FAULTY,
        **extra,
    }
    for name in sorted(values, key=len, reverse=True):
        q = q.replace("$" + name, values[name]).replace("${" + name + "}", values[name])
    left = re.findall(r"\$\{?\w+", q)
    assert not left, f"unsubstituted Grafana variables {left} in {q!r}"
    return q


def influxql_queries(d: dict[str, Any]) -> list[tuple[str, str]]:
    """(where, query) of every panel target, annotation and template variable using InfluxDB."""
    out: list[tuple[str, str]] = []

    def is_influx(ds: Any) -> bool:
        return isinstance(ds, dict) and ds.get("type") == "influxdb"

    def panels(ps: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        for p in ps:
            yield p
            yield from panels(p.get("panels", []))

    for p in panels(d.get("panels", [])):
        for t in p.get("targets", []):
            if is_influx(t.get("datasource", p.get("datasource"))):
                out.append((f"panel {p['title']!r} {t['refId']}", t["query"]))
    for a in d.get("annotations", {}).get("list", []):
        if is_influx(a.get("datasource")):
            out.append((f"annotation {a['name']!r}", a["query"]))
    for v in d.get("templating", {}).get("list", []):
        if is_influx(v.get("datasource")):
            out.append((f"variable ${v['name']}", v["query"]))
    return out


def promql_exprs(d: dict[str, Any]) -> list[tuple[str, str]]:
    return [(f"panel {p['title']!r}", t["expr"]) for p in d.get("panels", [])
            for t in p.get("targets", []) if "expr" in t]


def metric_names(expr: str) -> set[str]:
    no_strings = re.sub(r'"[^"]*"', '""', expr)
    no_ranges = re.sub(r"\[[^\]]*\]", "", no_strings)
    names = set(re.findall(r"\b(gearwatch_[a-z0-9_]+)", no_ranges))
    names |= {w for w in re.findall(r"\b([a-z_]+)\{", no_ranges) if w in PROMETHEUS_OWN}
    return names


def test_dashboards_reference_provisioned_datasources() -> None:
    assert len(DASHBOARDS) == 3, DASHBOARDS
    prov = (REPO / "deploy/grafana/provisioning/datasources/gearwatch.yaml").read_text()
    uids = set(re.findall(r"^\s+uid:\s*(\S+)", prov, re.M))
    assert {"gearwatch-influxql", "gearwatch-flux", "gearwatch-prometheus"} <= uids
    for path in DASHBOARDS:
        d = json.loads(path.read_text())
        used = set(re.findall(r"'datasource': \{'type': '\w+', 'uid': '([\w-]+)'\}", repr(d)))
        used.discard("-- Grafana --")
        assert used and used <= uids, (path.name, used - uids)
        ids = [p["id"] for p in d["panels"]]
        assert len(ids) == len(set(ids)), f"{path.name}: duplicate panel ids"


def test_every_influxql_query_returns_data(run: Run) -> None:
    sensors = [v[0] for s in influx_query(run.influx_url, run.db, 'SHOW FIELD KEYS FROM '
                                          '"telemetry"') for v in s["values"]]
    assert "bearing_temp_c" in sensors
    checked = 0
    for path in DASHBOARDS:
        d = json.loads(path.read_text())
        for where, raw in influxql_queries(d):
            # a panel repeated per $sensor: every sensor's query must work
            for sensor in (sensors if "$sensor" in raw else [""]):
                q = substitute(raw, run, {"sensor": sensor})
                series = influx_query(run.influx_url, run.db, q)  # raises on an InfluxQL error
                rows = sum(len(s.get("values", [])) for s in series)
                assert rows > 0, f"{path.name}: {where}: empty result for {q!r}"
                checked += 1
    assert checked >= 15, checked


def test_prometheus_panels_and_rules_use_metrics_the_agent_exports(run: Run) -> None:
    exported: set[str] = set()
    for fam in text_string_to_metric_families(run.metrics_text):
        exported.add(fam.name)
        exported.update(s.name for s in fam.samples)
        if fam.type == "counter":
            exported.add(fam.name + "_total")
        if fam.type == "histogram":
            exported.update(fam.name + sfx for sfx in ("_bucket", "_sum", "_count"))
    exprs: list[tuple[str, str]] = []
    for path in DASHBOARDS:
        exprs += [(f"{path.name} {w}", e) for w, e in promql_exprs(json.loads(path.read_text()))]
    assert len(exprs) >= 10
    exprs += [(f"rule {n}", e) for n, e in re.findall(
        r"- alert: (\w+)\n\s+expr: (\|\n(?:\s{10,}.*\n)+|.*)", RULES.read_text())]
    assert sum(w.startswith("rule") for w, _ in exprs) == 7  # every rule in the file parsed
    for where, expr in exprs:
        names = metric_names(expr)
        assert names, f"{where}: no metric in {expr!r}"
        missing = names - exported - PROMETHEUS_OWN
        assert not missing, f"{where}: {sorted(missing)} not in the agent's /metrics"


def test_agent_status_shows_the_run(run: Run) -> None:
    out = run.status_out
    assert run.status_rc == 0, out
    assert "status written" in out and "STALE" not in out
    assert re.search(r"^  mqtt\s+connected\s+127\.0\.0\.1:\d+$", out, re.M), out
    assert re.search(r"^  influx_v1\s+ok\s+backlog \d+ points, written \d+$", out, re.M), out
    assert re.search(r"^  centrifugal_pump\s+mahalanobis\s+\S+$", out, re.M), out
    for a in ("pump-1", "pump-2", "pump-3"):
        assert re.search(rf"^  {a}\s+centrifugal_pump\s+last sample \d+ s ago", out, re.M), out
    assert "open events: 1" in out and f"  {FAULTY}  peak" in out, out
    assert re.search(r"counters: samples \d+, rows \d+, events_opened 1", out), out
