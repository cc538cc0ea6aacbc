"""Benchmark: the longest InfluxDB outage the spool holds at a stated rate.  Prints numbers; not
a timed test.

    .venv/bin/python tests/bench/bench_spool_outage.py --rate-points 10000 --outage-s 300 \
        [--max-bytes 1GiB] [--warmup-s 20] [--assets N]

Unit: a *point* is one InfluxDB telemetry point, one asset at one timestamp with its 9 pump
sensors as fields (9 samples); points/s = assets x ticks/s.  Scoring is held in warm-up
(`warmup_rows` huge) so the spool holds telemetry only and bytes/point is the telemetry's.

What runs, all real processes on free loopback ports under a temporary folder: Mosquitto,
InfluxDB 1.x (gearwatch.localservers), the agent (`gearwatch agent run -c FILE`, as
tests/integration/faults.py starts it) with the spool on, and a publisher (this script with
`--publisher`, in its own process): N simulated pumps (simulators.pump), sim time running at
rate/N ticks per wall second (1 s sample period, timestamps in the past as `gearwatch sim mqtt
--speedup` does), 10 ticks of one pump per `json_columns` message, MQTT QoS 1, paced to the
wall clock (it reports late batches, so a rate it could not hold shows).

Phases: warm-up with InfluxDB up; InfluxDB stopped for `--outage-s` while publishing goes on
(the spool depth is sampled from the agent's Prometheus endpoint every `--sample-s`);
InfluxDB started again, publishing goes on until the spool is back to its live depth (the
drain, with live data flowing); publishing stops; then every sent (asset, ts) is looked up in
InfluxDB (missing must be 0 unless the spool filled and dropped by policy, which is reported).

Output: a timeline, a table of results, and one JSON line (last line of stdout), including
the projection "a spool of max_bytes holds N minutes at this rate".
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402

from edge_agent.config import SpoolSection  # noqa: E402
from gearwatch import localservers as ls  # noqa: E402
from simulators.pump import SENSORS  # noqa: E402
from tests.integration.faults import (  # noqa: E402
    AgentProcess,
    agent_config_file,
    present_in_influx,
    wait_for,
)

SITE = "bench"
DB = "gearwatch_outage_bench"
PERIOD_NS = 1_000_000_000  # the pump's sample period (sim time)
MAX_TICKS_PER_S = 100.0  # sim seconds per wall second, at most (timestamps stay within a week)
EXACT_CHECK_KEYS = 300_000  # up to this many sent keys, also the exact set comparison
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B|B)?\s*$", re.I)
_MULT = {None: 1, "b": 1, "kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30, "tib": 1 << 40,
         "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12}


def parse_size(s: str) -> int:
    m = _SIZE.match(s)
    if not m:
        raise argparse.ArgumentTypeError(f"not a size: {s!r} (e.g. 1GiB, 64MiB, 1000000)")
    unit = m.group(2).lower() if m.group(2) else None
    return int(float(m.group(1)) * _MULT[unit])


# -- the publisher (its own process) --------------------------------------------------------------
def run_publisher(args: argparse.Namespace) -> int:
    """Publish until stdin closes; progress lines, then a JSON report, on stdout."""
    import numpy as np
    import orjson

    from simulators.mqtt_publisher import _Acks, connect
    from simulators.pump import PumpFleet

    ids = [f"pump-{i}" for i in range(1, args.assets + 1)]
    ticks_per_s = args.rate_points / args.assets
    rows = args.rows_per_message
    stop = threading.Event()

    def watch_stdin() -> None:
        for line in sys.stdin:
            if line.strip() == "stop":
                break
        stop.set()

    threading.Thread(target=watch_stdin, daemon=True).start()
    fleet = PumpFleet(ids, seed=args.seed, dt_s=PERIOD_NS / 1e9)
    # sample k (sim t0 + k s) is sent no earlier than wall k / ticks_per_s: never in the future
    t0 = time.time_ns() - round(args.cap_s * ticks_per_s * 1e9) - PERIOD_NS
    topics = [f"plant/{SITE}/{a}/telemetry" for a in ids]
    acks = _Acks()
    client = connect("127.0.0.1", args.port, f"gw-outage-pub-{os.getpid()}")
    client.on_publish = acks.on_publish
    batch_s = rows / ticks_per_s
    steps = messages = late = 0
    max_lag = 0.0
    sums = np.zeros((len(ids), len(SENSORS)))  # of the values sent, for the check
    wall0 = time.monotonic()
    next_progress = wall0
    try:
        k = 0
        while not stop.is_set() and time.monotonic() - wall0 < args.cap_s:
            due = wall0 + (k + 1) * batch_s  # a batch goes once its last tick has happened
            now = time.monotonic()
            if due > now:
                time.sleep(due - now)
            elif now - due > batch_s:
                late += 1
                max_lag = max(max_lag, now - due)
            block = np.round(np.stack([fleet.step() for _ in range(rows)]), 4)  # (rows, N, 9)
            sums += block.sum(axis=0)
            ts = [t0 + (steps + j + 1) * PERIOD_NS for j in range(rows)]
            for i, topic in enumerate(topics):
                cols = block[:, i, :].T.tolist()
                payload = orjson.dumps({"ts": ts, "values": dict(zip(SENSORS, cols,
                                                                     strict=True))})
                client.publish(topic, payload, qos=1)
            acks.add(len(topics))
            messages += len(topics)
            steps += rows
            k += 1
            acks.wait_below(20_000, timeout=120)
            if time.monotonic() >= next_progress:
                print(json.dumps({"progress": steps}), flush=True)
                next_progress += 0.25
        seconds = time.monotonic() - wall0
        acks.wait_below(0, timeout=120)
    finally:
        client.disconnect()
        client.loop_stop()
    print(json.dumps({
        "t0_ns": t0, "period_ns": PERIOD_NS, "steps": steps, "assets": ids,
        "messages": messages, "seconds": round(seconds, 3), "late_batches": late,
        "max_lag_s": round(max_lag, 3), "refused": acks.refused,
        "ticks_per_s": ticks_per_s, "rows_per_message": rows,
        "sums": {a: dict(zip(SENSORS, sums[i].tolist(), strict=True))
                 for i, a in enumerate(ids)},
    }), flush=True)
    return 0


class Publisher:
    def __init__(self, port: int, assets: int, rate_points: float, rows: int, cap_s: float,
                 seed: int) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--publisher", "--port", str(port), "--assets",
             str(assets), "--rate-points", str(rate_points), "--rows-per-message", str(rows),
             "--cap-s", str(cap_s), "--seed", str(seed)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            cwd=ROOT)
        self.steps = 0
        self.report: dict[str, Any] | None = None
        self.err = ""
        self._t = threading.Thread(target=self._read, daemon=True)
        self._t.start()
        self._e = threading.Thread(target=self._read_err, daemon=True)
        self._e.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with contextlib.suppress(ValueError):
                doc = json.loads(line)
                if "progress" in doc:
                    self.steps = int(doc["progress"])
                else:
                    self.report = doc

    def _read_err(self) -> None:
        assert self.proc.stderr is not None
        self.err = self.proc.stderr.read()

    def stop(self, timeout: float = 180) -> dict[str, Any]:
        assert self.proc.stdin is not None
        with contextlib.suppress(BrokenPipeError):
            self.proc.stdin.write("stop\n")
            self.proc.stdin.close()
        self.proc.wait(timeout)
        self._t.join(10)
        self._e.join(10)
        if self.proc.returncode != 0 or self.report is None:
            raise RuntimeError(f"publisher failed ({self.proc.returncode}): {self.err[-2000:]}")
        return self.report

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)


# -- measuring ----------------------------------------------------------------------------------
def scrape(port: int) -> dict[str, float]:
    """The agent's metrics, summed over label sets (and `name{reason}` for the drops)."""
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name_labels, _, value = line.rpartition(" ")
        name = name_labels.split("{", 1)[0]
        try:
            v = float(value)
        except ValueError:
            continue
        out[name] = out.get(name, 0.0) + v
        if name == "gearwatch_spool_dropped_points_total" and "reason=" in name_labels:
            reason = name_labels.split('reason="', 1)[1].split('"', 1)[0]
            out[f"dropped:{reason}"] = v
    return out


def cpu_s(pid: int) -> float:
    """utime + stime of a process, seconds."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return math.nan
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def io_write_bytes(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/io").read_text().splitlines():
            if line.startswith("write_bytes:"):
                return float(line.split()[1])
    except OSError:
        pass
    return math.nan


def loadavg() -> tuple[float, float, float]:
    a, b, c = Path("/proc/loadavg").read_text().split()[:3]
    return float(a), float(b), float(c)


def uptime_line() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "load average: {:.2f}, {:.2f}, {:.2f}".format(*loadavg())


def query(url: str, q: str, timeout: float = 300) -> list[dict[str, Any]]:
    r = httpx.get(url + "/query", params={"db": DB, "q": q, "epoch": "ns"}, timeout=timeout)
    r.raise_for_status()
    res = r.json()["results"][0]
    if "error" in res:
        raise RuntimeError(f"InfluxDB: {res['error']} ({q[:200]})")
    return list(res.get("series", []))


def check_by_query(url: str, rep: dict[str, Any]) -> dict[str, Any]:
    """Sent (asset, ts) without every sensor in InfluxDB, checked by aggregates InfluxDB
    computes (fast at millions of points, where fetching every row is not).

    Per asset and sensor: the COUNT in the sent range [t0 + 1 s, t0 + steps s] must be
    `steps`, nothing may lie outside it, and the SUM must equal the sum of the values the
    publisher sent (so a point at a timestamp never sent cannot stand in for a missing one
    unnoticed).  An asset whose counts are short is then compared row by row (exact set).
    """
    lo = rep["t0_ns"] + rep["period_ns"]
    hi = rep["t0_ns"] + rep["steps"] * rep["period_ns"]
    steps = rep["steps"]
    aggs = ", ".join(f'COUNT("{s}") AS "n_{s}", SUM("{s}") AS "s_{s}"' for s in SENSORS)
    got: dict[str, dict[str, float]] = {}
    for s in query(url, f'SELECT {aggs} FROM "telemetry" WHERE time >= {lo} AND time <= {hi} '
                        'GROUP BY "asset"'):
        got[s["tags"]["asset"]] = dict(zip(s["columns"], s["values"][0], strict=True))
    outside = sum(int(s["values"][0][1] or 0) for s in query(
        url, f'SELECT COUNT("{SENSORS[0]}") FROM "telemetry" WHERE time < {lo} OR time > {hi}'))
    missing = extra = bad_sums = 0
    short: list[str] = []
    for a in rep["assets"]:
        row = got.get(a, {})
        counts = [int(row.get(f"n_{s}") or 0) for s in SENSORS]
        if min(counts) < steps:
            short.append(a)
        extra += max(0, max(counts) - steps)
        for name in SENSORS:
            want = rep["sums"][a][name]
            have = float(row.get(f"s_{name}") or 0.0)
            if abs(have - want) > 1e-6 * max(1.0, abs(want)):
                bad_sums += 1
    for a in short:  # where something is missing: which (asset, ts), row by row
        names = ", ".join(f'"{s}"' for s in SENSORS)
        present = set()
        for s in query(url, f'SELECT {names} FROM "telemetry" WHERE "asset" = \'{a}\' AND '
                            f"time >= {lo} AND time <= {hi}"):
            present |= {int(v[0]) for v in s["values"] if all(x is not None for x in v[1:])}
        missing += sum(1 for k in range(1, steps + 1)
                       if rep["t0_ns"] + k * rep["period_ns"] not in present)
    return {"missing": missing, "extra": extra, "outside": outside,
            "sum_mismatches": bad_sums, "short_assets": len(short)}


def sent_keys(rep: dict[str, Any]) -> set[tuple[str, int]]:
    return {(a, rep["t0_ns"] + k * rep["period_ns"])
            for a in rep["assets"] for k in range(1, rep["steps"] + 1)}


# -- the run --------------------------------------------------------------------------------------
def run(args: argparse.Namespace) -> dict[str, Any]:
    assets = args.assets or max(1, math.ceil(args.rate_points / MAX_TICKS_PER_S))
    ticks_per_s = args.rate_points / assets
    rate = assets * ticks_per_s
    max_bytes = args.max_bytes or SpoolSection().max_bytes
    segment = min(SpoolSection().segment_bytes, max(64 << 10, max_bytes // 8))
    drain_timeout = args.drain_timeout_s if args.drain_timeout_s is not None else max(
        60.0, 0.75 * args.outage_s)
    cap_s = args.warmup_s + args.outage_s + drain_timeout + 300
    if cap_s * ticks_per_s > 6 * 86400:
        raise SystemExit(f"{ticks_per_s:.0f} ticks/s for {cap_s:.0f} s would stamp samples more "
                         "than 6 days back (the agent takes 7): give more --assets")
    base = Path(tempfile.mkdtemp(prefix="gw-outage-", dir=args.tmp))
    load_start = uptime_line()
    print(f"# {load_start}", flush=True)
    print(f"# {rate:.0f} points/s = {assets} pumps x {ticks_per_s:g} ticks/s "
          f"({rate * len(SENSORS):.0f} samples/s), {args.rows_per_message} ticks per message "
          f"({rate / args.rows_per_message:.0f} messages/s, QoS 1); warm-up {args.warmup_s} s, "
          f"outage {args.outage_s} s; spool max_bytes {max_bytes}, segments {segment}; "
          f"folder {base}", flush=True)
    mosq = ls.mosquitto(base).start()
    influx = ls.influxdb(base, name="influxdb").start()
    metrics_port = ls.free_port()
    cfg = agent_config_file(
        base / "agent.toml", mosq.port, influx.url, DB, "gw-outage-agent", n_assets=assets,
        site=SITE,
        agent={"status_interval_s": 1.0},
        mqtt={"format": "json_columns"},
        metrics={"port": metrics_port},
        scoring={"warmup_rows": 1_000_000_000},  # telemetry only: one point per (asset, ts)
        influx={"max_backoff_s": args.max_backoff_s},
        spool={"max_bytes": max_bytes, "segment_bytes": segment, "on_full": args.on_full},
    )
    agent = AgentProcess(cfg)
    pub: Publisher | None = None
    timeline: list[dict[str, Any]] = []
    t_start = time.monotonic()
    loads: list[float] = []

    def sample(phase: str) -> dict[str, Any]:
        m = scrape(metrics_port)
        assert agent.proc is not None
        row: dict[str, Any] = {
            "t": round(time.monotonic() - t_start, 1), "phase": phase,
            "spool_bytes": int(m.get("gearwatch_spool_bytes", 0)),
            "spool_points": int(m.get("gearwatch_spool_points", 0)),
            "segments": int(m.get("gearwatch_spool_segments", 0)),
            "sink_up": int(m.get("gearwatch_sink_up", 0)),
            "written": int(m.get("gearwatch_sink_points_written_total", 0)),
            "replayed": int(m.get("gearwatch_spool_replayed_points_total", 0)),
            "dropped": int(m.get("gearwatch_spool_dropped_points_total", 0)),
            "full": int(m.get("gearwatch_spool_full", 0)),
            "taken": int(m.get("gearwatch_samples_received_total", 0)) // len(SENSORS),
            "sent": (pub.steps * assets) if pub is not None else 0,
            "commit_n": m.get("gearwatch_spool_commit_seconds_count", 0.0),
            "commit_s": m.get("gearwatch_spool_commit_seconds_sum", 0.0),
            "agent_cpu_s": cpu_s(agent.proc.pid),
            "influx_cpu_s": cpu_s(influx.proc.pid) if influx.proc and influx.proc.poll()
            is None else math.nan,
            "agent_write_bytes": io_write_bytes(agent.proc.pid),
            "load1": loadavg()[0],
            "drops": {k[8:]: int(v) for k, v in m.items() if k.startswith("dropped:") and v},
        }
        loads.append(row["load1"])
        timeline.append(row)
        return row

    def show(r: dict[str, Any]) -> None:
        lag = max(0, r["sent"] - r["taken"])
        print(f"  {r['t']:7.1f}s {r['phase']:<7} spool {r['spool_bytes'] / 2**20:9.1f} MiB "
              f"{r['spool_points']:>10,} pts {r['segments']:>4} seg  sink_up {r['sink_up']}  "
              f"written {r['written']:>11,}  agent lag {lag:>8,} pts  load {r['load1']:.2f}"
              + (f"  DROPPED {r['drops']}" if r["dropped"] else ""), flush=True)

    try:
        agent.start()
        agent.wait_running(timeout=120)
        wait_for(lambda: _ok(lambda: scrape(metrics_port)), 30, "the metrics endpoint")
        pub = Publisher(mosq.port, assets, rate, args.rows_per_message, cap_s, args.seed)
        wait_for(lambda: sample("start")["written"] > 0, 60, "the first points in InfluxDB",
                 every=1.0)
        t_pub = time.monotonic()
        print("warm-up:", flush=True)
        while time.monotonic() - t_pub < args.warmup_s:
            time.sleep(min(args.sample_s, max(0.0, args.warmup_s - (time.monotonic() - t_pub))))
            show(sample("warmup"))
        live_depth = max([r["spool_points"] for r in timeline] + [int(rate)])
        # -- the outage
        influx.stop()
        t_down = time.monotonic()
        before = sample("down")
        print(f"InfluxDB stopped for {args.outage_s} s:", flush=True)
        show(before)
        first_full: float | None = None
        while time.monotonic() - t_down < args.outage_s:
            time.sleep(min(args.sample_s, max(0.0, args.outage_s - (time.monotonic() - t_down))))
            r = sample("outage")
            show(r)
            if first_full is None and (r["full"] or r["dropped"]):
                first_full = time.monotonic() - t_down
        at_end = sample("outage")
        t_start_influx = time.monotonic()
        influx.start()
        t_up = time.monotonic()
        outage_held = t_up - t_down  # InfluxDB unreachable, its start included
        print(f"InfluxDB up again (its start took {t_up - t_start_influx:.1f} s); draining "
              "with live data flowing:", flush=True)
        drained_at: float | None = None
        first_write: float | None = None
        w0 = at_end["written"]
        while time.monotonic() - t_up < drain_timeout:
            time.sleep(1.0)
            r = sample("drain")
            if first_write is None and r["written"] > w0:
                first_write = time.monotonic() - t_up
            if len(timeline) % max(1, round(args.sample_s)) == 0:
                show(r)
            if r["spool_points"] <= live_depth and r["written"] > w0:
                drained_at = time.monotonic() - t_up
                show(r)
                break
        drain_end = timeline[-1]
        rep = pub.stop()
        t_stop = time.monotonic()
        print(f"publisher stopped: {rep['steps'] * assets:,} points sent in {rep['seconds']} s, "
              f"{rep['late_batches']} late batches (max lag {rep['max_lag_s']} s)", flush=True)
        total = rep["steps"] * len(rep["assets"])
        # everything sent is taken and delivered: the spool empties
        wait_for(lambda: (lambda r: r["taken"] >= total and r["spool_points"] == 0)(
            sample("final")), max(60.0, drain_timeout), "the agent to deliver everything",
            every=1.0)
        show(timeline[-1])
        t_empty = time.monotonic()
        settle = t_empty - t_stop
        dropped_by_reason = dict(timeline[-1]["drops"])
        t_check = time.monotonic()
        counts = check_by_query(influx.url, rep)
        exact: int | None = None
        if total <= EXACT_CHECK_KEYS:
            exact = len(sent_keys(rep) - present_in_influx(influx.url, DB))
        check_s = time.monotonic() - t_check
        load_end = uptime_line()
    finally:
        if pub is not None:
            pub.close()
        agent.close()
        influx.stop()
        mosq.stop()
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)

    # -- the numbers
    out_s = at_end["t"] - before["t"]
    # growth while nothing was dropped yet: what a point costs on disk
    ref = [r for r in timeline if r["phase"] == "outage" and r["dropped"] == before["dropped"]
           and not r["full"]]
    grow = ref[-1] if ref else at_end
    grow_s = grow["t"] - before["t"]
    d_bytes = grow["spool_bytes"] - before["spool_bytes"]
    d_points = grow["spool_points"] - before["spool_points"]
    bpp = d_bytes / d_points if d_points > 0 else math.nan
    peak = max(timeline, key=lambda r: r["spool_bytes"])
    peak_pts = max(r["spool_points"] for r in timeline)
    disk_bps = d_bytes / grow_s if grow_s > 0 else math.nan
    io_bps = (at_end["agent_write_bytes"] - before["agent_write_bytes"]) / out_s
    commits = at_end["commit_n"] - before["commit_n"]
    commit_ms = 1000 * (at_end["commit_s"] - before["commit_s"]) / commits if commits else math.nan
    sent_rate = total / rep["seconds"] if rep["seconds"] else math.nan
    in_outage = [r for r in timeline if r["phase"] == "outage"]
    max_lag = max((max(0, r["sent"] - r["taken"]) for r in in_outage), default=0)
    drain_s = drained_at
    drain_rows = [r for r in timeline if r["phase"] == "drain"]
    d_written = drain_end["written"] - at_end["written"]
    d_span = drain_end["t"] - at_end["t"]
    # backlog cleared per second while live data flowed (to the drain's end, or its timeout)
    backlog_rate = (at_end["spool_points"] - drain_end["spool_points"]) / d_span \
        if d_span else math.nan
    agent_cpu = (at_end["agent_cpu_s"] - before["agent_cpu_s"]) / out_s
    drain_cpu = (drain_end["agent_cpu_s"] - at_end["agent_cpu_s"]) / d_span if d_span else math.nan
    influx_cpu = (drain_end["influx_cpu_s"] - drain_rows[0]["influx_cpu_s"]) / (
        drain_end["t"] - drain_rows[0]["t"]) if len(drain_rows) > 1 else math.nan
    hold_s = max_bytes / (bpp * rate) if bpp == bpp and rate else math.nan
    dropped = sum(dropped_by_reason.values())
    missing = exact if exact is not None else counts["missing"]
    res: dict[str, Any] = {
        "bench": "spool_outage",
        "unit": "point = one telemetry point (one asset, one timestamp, 9 sensor fields)",
        "rate_points_s": round(rate, 1), "sent_rate_points_s": round(sent_rate, 1),
        "assets": assets, "ticks_per_s": ticks_per_s,
        "rows_per_message": args.rows_per_message, "messages_s": round(rate /
                                                                        args.rows_per_message),
        "late_batches": rep["late_batches"], "publisher_max_lag_s": rep["max_lag_s"],
        "agent_max_lag_points": max_lag,
        "outage_s": round(outage_held, 1), "outage_held_s": round(
            first_full if first_full is not None else outage_held, 1),
        "spool_full_during_outage": first_full is not None,
        "peak_spool_bytes": peak["spool_bytes"], "peak_spool_points": peak_pts,
        "bytes_per_point": round(bpp, 1),
        "spool_write_mb_s": round(disk_bps / 1e6, 2),
        "agent_disk_write_mb_s": round(io_bps / 1e6, 2),
        "group_commits_s": round(commits / out_s, 1), "commit_ms_mean": round(commit_ms, 2),
        "agent_cpu_outage": round(agent_cpu, 2), "agent_cpu_drain": round(drain_cpu, 2),
        "influx_cpu_drain": round(influx_cpu, 2),
        "first_write_after_restart_s": round(first_write, 1) if first_write else None,
        "drain_s": round(drain_s, 1) if drain_s else None,
        "drained_within_timeout": drain_s is not None, "drain_timeout_s": drain_timeout,
        "drain_backlog_points_s": _round(backlog_rate),
        "drain_written_points_s": _round(d_written / d_span) if d_span else None,
        "drain_total_s": round(t_empty - t_up, 1),  # restart to an empty spool, live or not
        "replay_points_per_s_config": SpoolSection().replay_points_per_s,
        "settle_after_stop_s": round(settle, 1),
        "sent_points": total, "missing": missing, "check": "exact set" if exact is not None
        else "InfluxDB counts and sums", "query_missing": counts["missing"],
        "query_extra": counts["extra"], "outside_range": counts["outside"],
        "sum_mismatches": counts["sum_mismatches"],
        "check_s": round(check_s, 1),
        "dropped_points": dropped, "dropped_by_reason": dropped_by_reason,
        "missing_not_dropped": missing - dropped,  # must be 0: a loss the spool did not count
        "on_full": args.on_full, "max_bytes": max_bytes, "segment_bytes": segment,
        "max_backoff_s": args.max_backoff_s,
        "projection_minutes": round(hold_s / 60, 1),
        "projection": f"a spool of {max_bytes / 2**20:.0f} MiB holds {hold_s / 60:.1f} minutes "
                      f"at {rate:.0f} points/s ({bpp:.0f} bytes/point)",
        "load_start": load_start, "load_end": load_end,
        "load1_min": min(loads), "load1_max": max(loads), "cpus": os.cpu_count(),
    }
    return res


def _round(x: float, nd: int | None = None) -> float | None:
    return None if x != x else round(x, nd)  # NaN: not measured


def _ok(f: Any) -> bool:
    try:
        f()
        return True
    except Exception:
        return False


def print_table(res: dict[str, Any]) -> None:
    mib = 2**20
    rows = [
        ("rate (stated)", f"{res['rate_points_s']:,.0f} points/s = {res['assets']} pumps x "
         f"{res['ticks_per_s']:g} ticks/s, {res['messages_s']} msg/s QoS 1"),
        ("rate (sent)", f"{res['sent_rate_points_s']:,.0f} points/s, {res['late_batches']} late "
         f"batches; agent lag max {res['agent_max_lag_points']:,} points"),
        ("outage", f"{res['outage_s']} s InfluxDB down; held {res['outage_held_s']} s"
         + (" (SPOOL FULL)" if res["spool_full_during_outage"] else " without a drop")),
        ("peak spool", f"{res['peak_spool_bytes']:,} bytes ({res['peak_spool_bytes'] / mib:.1f}"
         f" MiB), {res['peak_spool_points']:,} points"),
        ("bytes per point", f"{res['bytes_per_point']}"),
        ("disk", f"spool grows {res['spool_write_mb_s']} MB/s; agent writes "
         f"{res['agent_disk_write_mb_s']} MB/s; {res['group_commits_s']} group commits/s, "
         f"{res['commit_ms_mean']} ms each"),
        ("drain", f"{res['drain_s']} s after restart (first write after "
         f"{res['first_write_after_restart_s']} s); backlog {res['drain_backlog_points_s']:,} "
         f"points/s, all writes {res['drain_written_points_s']:,} points/s (live flowing)"
         if res["drain_s"] else f"NOT drained with live data flowing within "
         f"{res['drain_timeout_s']} s; spool empty {res['drain_total_s']} s after restart "
         "(publisher stopped)"),
        ("cpu", f"agent {res['agent_cpu_outage']} cores in the outage, "
         f"{res['agent_cpu_drain']} draining; influxd {res['influx_cpu_drain']} draining"),
        ("missing", f"{res['missing']} of {res['sent_points']:,} sent (asset, ts) ({res['check']}"
         f"; value sums off: {res['sum_mismatches']}, extra: {res['query_extra']}, outside the "
         f"sent range: {res['outside_range']}; checked in {res['check_s']} s)"),
        ("dropped", f"{res['dropped_points']} points by policy on_full = {res['on_full']} "
         f"{res['dropped_by_reason'] or ''}"),
        ("projection", res["projection"]),
        ("load", f"1-min load {res['load1_min']:.2f}..{res['load1_max']:.2f} on "
         f"{res['cpus']} CPUs; end: {res['load_end']}"),
    ]
    w = max(len(k) for k, _ in rows)
    print()
    for k, v in rows:
        print(f"{k:<{w}}  {v}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rate-points", type=float, default=10_000.0,
                   help="telemetry points per second (assets x ticks/s)")
    p.add_argument("--outage-s", type=float, default=300.0)
    p.add_argument("--warmup-s", type=float, default=20.0)
    p.add_argument("--max-bytes", type=parse_size, default=None,
                   help="the spool's max_bytes (default: the config default, 1GiB)")
    p.add_argument("--on-full", default="drop_oldest",
                   choices=("drop_oldest", "drop_newest", "block"))
    p.add_argument("--assets", type=int, default=0,
                   help=f"pumps (default: rate / {MAX_TICKS_PER_S:g}, at least 1)")
    p.add_argument("--rows-per-message", type=int, default=10)
    p.add_argument("--sample-s", type=float, default=5.0, help="spool depth sampling period")
    p.add_argument("--drain-timeout-s", type=float, default=None,
                   help="the most to publish on while draining (default: max(60, 0.75 x outage)); "
                   "the rest drains after the publisher stops (drain_total_s)")
    p.add_argument("--max-backoff-s", type=float, default=2.0,
                   help="[influx] max_backoff_s (default 2; the agent's default is 30)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--tmp", default=None, help="parent of the temporary folder")
    p.add_argument("--keep", action="store_true", help="keep the temporary folder")
    p.add_argument("--publisher", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--cap-s", type=float, default=3600.0, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.publisher:
        return run_publisher(args)
    res = run(args)
    print_table(res)
    print(json.dumps({k: None if isinstance(v, float) and math.isnan(v) else v
                      for k, v in res.items()}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
