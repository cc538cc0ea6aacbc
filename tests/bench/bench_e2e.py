"""End-to-end benchmark: the real agent (both detectors, InfluxDB writes, the spool where the
config has one) against real Mosquitto and InfluxDB 1.x, at rising load.

    make bench-e2e                      # = .venv/bin/python tests/bench/bench_e2e.py
    .venv/bin/python tests/bench/bench_e2e.py --quick        # 10 and 100 assets, short steps
    .venv/bin/python tests/bench/bench_e2e.py --assets 1000 --seconds 600   # the soak run

Each step starts a fresh agent process (`tests/bench/e2e_agent.py`: `gearwatch agent run`
plus probes on its ack path), a load generator process (`gearwatch sim load`: N assets x M
sensors at R Hz, a step fault on some assets part-way) and an MQTT subscriber to the alerts.
It reports, over the steady part of the step (after `--warmup` s):

- sustained samples/s and rows/s made durable (the probe acks: they run where MQTT QoS 1
  acks run, after the InfluxDB write / spool append that holds the samples);
- latency from a sample's timestamp to its sample batch being durable, and to its row's score
  being durable (p50/p99/max);
- latency to the alert: from the timestamp of the sample that completed the alarm condition
  (the `min_duration_ticks`-th faulty tick) to the alert's arrival at an MQTT subscriber, and
  the same from the moment the message carrying that sample was published (with batched
  payloads the first figure includes the sender's batching, which no receiver can avoid);
- CPU per component (agent, and per agent thread; mosquitto; influxd; load generator) from
  /proc/<pid>/stat, and the agent's peak RSS;
- whether it kept up: durable rate >= 95% of offered and p99 score latency under 3 s.

In the same run it measures the limits our figures are held against, and prints ratios:
Mosquitto delivering the same messages to its own C client (`mosquitto_pub -l` into
`mosquitto_sub -C`), and the bare forward pass of the same autoencoder at the agent's mean
forward batch size.  Prints a table and writes JSON (`--json`, default var/bench/e2e.json).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import orjson  # noqa: E402
import paho.mqtt.client as mqtt  # noqa: E402
from paho.mqtt.enums import CallbackAPIVersion  # noqa: E402

from edge_agent.config import ConfigError, parse_config  # noqa: E402
from gearwatch.localservers import LocalServer, free_port, influxdb, mosquitto  # noqa: E402
from simulators.loadgen import PAYLOAD_FORMATS, SignalBank, encode  # noqa: E402
from tests.bench.e2e_agent import EDGES  # noqa: E402

CLK = os.sysconf("SC_CLK_TCK")
SITE = "bench"
CLASS = "load_asset"


# -- /proc -------------------------------------------------------------------------------------
def _stat_cpu(path: str) -> float:
    try:
        with open(path) as f:
            rest = f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return (int(rest[11]) + int(rest[12])) / CLK  # utime + stime


def proc_cpu(pid: int) -> float:
    return _stat_cpu(f"/proc/{pid}/stat")


def thread_cpu(pid: int) -> dict[int, float]:
    out = {}
    with contextlib.suppress(OSError):
        for tid in os.listdir(f"/proc/{pid}/task"):
            out[int(tid)] = _stat_cpu(f"/proc/{pid}/task/{tid}/stat")
    return out


def proc_mem_kb(pid: int) -> dict[str, int]:
    out = {}
    with contextlib.suppress(OSError), open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmRSS", "VmHWM"):
                out[k] = int(v.split()[0])
    return out


# -- model bundle -------------------------------------------------------------------------------
def schema_for(n_sensors: int, rate_hz: float, window: int) -> Any:
    from models.schema import AssetSchema, SensorSpec

    return AssetSchema(asset_class=CLASS, sample_period_s=1.0 / rate_hz, window=window,
                       sensors=tuple(SensorSpec(f"s{i}", "", -1e6, 1e6)
                                     for i in range(n_sensors)))


def build_model_bundle(cache: Path, n_sensors: int, rate_hz: float, window: int,
                       hidden: int, latent: int, steps: int) -> tuple[Path, Path]:
    """A signed LSTM-AE bundle trained on the load generator's normal signals (cached)."""
    import torch

    from models.bundle import build_bundle, generate_key, load_private_key, save_keypair
    from models.calibration import TailCalibrator
    from models.lstm_ae import AEConfig, LSTMAutoencoder, Normalizer, masked_loss, window_errors

    tag = f"{CLASS}-v3-s{n_sensors}-r{rate_hz:g}-w{window}-h{hidden}-l{latent}-n{steps}"
    blob_path, pub = cache / f"{tag}.gwb", cache / "bench.pub"
    if blob_path.exists() and pub.exists():
        return blob_path, pub
    cache.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    torch.set_num_threads(1)  # OpenMP across busy cores is many times slower than one thread
    # a fleet's history: 256 assets drawn like the load generator's (other seeds), 5 min each;
    # calibrated on 64 assets never trained on, so the score scale covers unseen assets
    t_s = np.arange(int(300 * rate_hz)) / rate_hz
    series = SignalBank(256, n_sensors, seed=123).rows(t_s).astype(np.float32)
    norm = Normalizer.fit(series.reshape(-1, n_sensors))
    x = torch.from_numpy(norm.apply(series))
    x_cal = torch.from_numpy(norm.apply(SignalBank(64, n_sensors, seed=456).rows(t_s)))
    rng = np.random.default_rng(0)
    torch.manual_seed(0)
    cfg = AEConfig(n_sensors=n_sensors, window=window, hidden=(hidden,), latent=latent,
                   score_steps=min(5, window))
    model = LSTMAutoencoder(cfg)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)

    def sample(n: int, src: torch.Tensor = x) -> torch.Tensor:
        a = torch.from_numpy(rng.integers(0, src.shape[0], n))
        t = torch.from_numpy(rng.integers(0, src.shape[1] - window, n))
        return src[a[:, None], t[:, None] + torch.arange(window)[None, :]]

    for _ in range(steps):
        opt.zero_grad()
        loss = masked_loss(model, sample(128))
        loss.backward()
        opt.step()
    final_loss = float(loss.detach())
    model.eval()
    with torch.inference_mode():
        raw, _ = window_errors(model, sample(4096, x_cal))
    calib = TailCalibrator().fit(raw.numpy().astype(np.float64))
    if (cache / "bench.key").exists() and pub.exists():
        key = load_private_key(cache / "bench.key")
    else:
        key = generate_key()
        save_keypair(cache, "bench", key)
    blob = build_bundle(schema_for(n_sensors, rate_hz, window), cfg, norm, model.state_dict(),
                        calib, key, info={"metrics": {"train_loss": final_loss}})
    blob_path.write_bytes(blob)
    print(f"trained the LSTM-AE bundle ({steps} steps, loss {final_loss:.4f}) in "
          f"{time.perf_counter() - t0:.1f} s -> {blob_path}", flush=True)
    return blob_path, pub


def bare_forward_rate(bundle: Path, pub: Path, batch: int, seconds: float,
                      threads: int) -> float:
    """Windows/s of the same model's forward (`window_errors`) at this batch size, per second
    of this thread's CPU (so `threads` should be 1, as in the agent)."""
    import torch

    torch.set_num_threads(threads)
    from models.bundle import load_bundle, load_public_key
    from models.lstm_ae import window_errors

    b = load_bundle(bundle.read_bytes(), load_public_key(pub))
    model = b.build_model()
    x = torch.randn(max(1, batch), b.config.window, b.config.n_sensors)
    n = 0
    with torch.inference_mode():
        window_errors(model, x)  # warm
        t0 = time.thread_time()  # CPU time, as the agent's figure: robust to a busy machine
        while time.thread_time() - t0 < seconds:
            window_errors(model, x)
            n += x.shape[0]
    return n / (time.thread_time() - t0)


# -- config -------------------------------------------------------------------------------------
def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(v)


def to_toml(doc: dict[str, Any]) -> str:
    out: list[str] = []
    for k, v in doc.items():
        if isinstance(v, dict):
            out.append(f"[{k}]")
            out.extend(f"{kk} = {_toml_value(vv)}" for kk, vv in v.items())
        elif isinstance(v, list) and v and isinstance(v[0], dict):
            for item in v:
                out.append(f"[[{k}]]")
                for kk, vv in item.items():
                    if isinstance(vv, list) and vv and isinstance(vv[0], dict):
                        for sub in vv:
                            out.append(f"[[{k}.{kk}]]")
                            out.extend(f"{a} = {_toml_value(b)}" for a, b in sub.items())
                    else:
                        out.append(f"{kk} = {_toml_value(vv)}")
        out.append("")
    return "\n".join(out)


@dataclass
class StepSpec:
    assets: int
    sensors: int = 10
    rate_hz: float = 10.0
    batch_rows: int = 10
    layout: str = "columns"
    qos: int = 1
    seconds: float = 40.0
    warmup_s: float = 15.0
    fault_assets: int = 0
    fault_at_s: float | None = None
    warmup_rows: int = 100
    calibration_rows: int = 100

    @property
    def offered(self) -> float:
        return self.assets * self.sensors * self.rate_hz


MIN_DURATION_TICKS = 3


def agent_doc(spec: StepSpec, mqtt_port: int, influx_url: str, state: Path,
              spool: bool, trusted_key: Path | None = None) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "agent": {"site": SITE, "state_dir": str(state), "log_level": "WARNING",
                  "status_interval_s": 0},
        "mqtt": {"port": mqtt_port, "client_id": f"bench-agent-{time.time_ns() % 10**9}",
                 "qos": spec.qos, "format": PAYLOAD_FORMATS[spec.layout],
                 "topics": [f"plant/{SITE}/+/telemetry"], "dead_letter_topic": ""},
        "influx": {"url": influx_url, "database": f"bench_{spec.assets}"},
        "metrics": {"port": free_port()},
        "console": {"enabled": False},
        "feedback": {"enabled": False},
        # every sensor of a row arrives in one message: nothing to wait for past a tick
        "framer": {"lateness_periods": 0.0},
        "scoring": {"warmup_rows": spec.warmup_rows, "calibration_rows": spec.calibration_rows},
        "events": {"min_duration_ticks": MIN_DURATION_TICKS},
        "asset_classes": [{"name": CLASS, "sample_period_s": 1.0 / spec.rate_hz,
                           "window": 30, "sensors": [{"name": f"s{i}", "low": -1e6,
                                                      "high": 1e6}
                                                     for i in range(spec.sensors)]}],
        "assets": [{"id": f"a{i}", "class": CLASS} for i in range(spec.assets)],
    }
    if spool:
        doc["spool"] = {"enabled": True}
    if trusted_key is not None:
        doc["models"] = {"trusted_keys": [str(trusted_key)], "device": "cpu",
                         "mqtt_topic": "", "watch_interval_s": 3600}
    return doc


def spool_supported() -> bool:
    try:
        parse_config({"spool": {"enabled": True},
                      "assets": [{"id": "a0", "class": "centrifugal_pump"}]})
    except ConfigError:
        return False
    return True


# -- one step -----------------------------------------------------------------------------------
class AlertLog:
    def __init__(self, port: int) -> None:
        self.items: list[tuple[int, dict[str, Any]]] = []
        self.lock = threading.Lock()
        self.ready = threading.Event()
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-alerts-{time.time_ns()}")
        c.on_connect = lambda cl, *_: cl.subscribe(f"plant/{SITE}/+/alerts", qos=1)
        c.on_subscribe = lambda *_: self.ready.set()
        c.on_message = self._on_message
        c.connect("127.0.0.1", port)
        c.loop_start()
        self.client = c
        self.ready.wait(10)

    def _on_message(self, c: mqtt.Client, u: object, msg: mqtt.MQTTMessage) -> None:
        now = time.time_ns()
        with self.lock:
            self.items.append((now, orjson.loads(msg.payload)))

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def _pct(hist: np.ndarray, q: float) -> float | None:
    total = int(hist.sum())
    if total == 0:
        return None
    i = int(np.searchsorted(np.cumsum(hist), q * total))
    return float(EDGES[min(i + 1, len(EDGES) - 1)])  # upper edge of the bin: conservative


def _lat_stats(doc: dict[str, Any], t0: float, t1: float) -> dict[str, Any]:
    hist = np.zeros(len(EDGES) - 1, np.int64)
    mx = 0.0
    for sec, v in doc.items():
        if t0 <= int(sec) <= t1:
            for i, c in v["hist"].items():
                hist[int(i)] += c
            mx = max(mx, v["max"])
    if not hist.sum():
        return {"p50_s": None, "p99_s": None, "max_s": None, "n": 0}
    return {"p50_s": min(_pct(hist, 0.5) or mx, mx), "p99_s": min(_pct(hist, 0.99) or mx, mx),
            "max_s": round(mx, 4), "n": int(hist.sum())}


def _q(xs: list[float], q: float) -> float | None:
    return round(float(np.quantile(xs, q)), 4) if xs else None


@dataclass
class StepResult:
    spec: dict[str, Any]
    kept_up: bool = False
    offered_samples_per_s: float = 0.0
    sent_samples_per_s: float = 0.0
    samples_per_s: float = 0.0
    rows_per_s: float = 0.0
    scores_per_s: float = 0.0
    sample_latency: dict[str, Any] = field(default_factory=dict)
    score_latency: dict[str, Any] = field(default_factory=dict)
    score_written_latency: dict[str, Any] = field(default_factory=dict)
    alert_latency_from_sample: dict[str, Any] = field(default_factory=dict)
    alert_latency_from_publish: dict[str, Any] = field(default_factory=dict)
    alerts_expected: int = 0
    alerts_seen: int = 0
    false_alerts: int = 0
    cpu_cores: dict[str, float] = field(default_factory=dict)
    agent_cpu_us_per_sample: float | None = None
    agent_threads_cores: dict[str, float] = field(default_factory=dict)
    agent_peak_rss_mb: float = 0.0
    agent_rss_mb_start_end: list[float] = field(default_factory=list)
    ae: dict[str, Any] = field(default_factory=dict)
    loadgen: dict[str, Any] = field(default_factory=dict)
    all_durable: bool = False
    spool: bool = False
    notes: list[str] = field(default_factory=list)
    # per minute of the steady window (steps of 5 min and more: the soak): growth in memory
    # or lag shows as a rising RSS or a rising sample -> durable p99
    minutes: list[dict[str, Any]] = field(default_factory=list)


def _read_report(path: Path) -> dict[str, Any]:
    try:
        return dict(json.loads(path.read_text()))
    except (OSError, ValueError):
        return {}


def run_step(spec: StepSpec, mq: LocalServer, influx: LocalServer, work: Path,
             bundle: tuple[Path, Path] | None, spool: bool, py: str,
             profile: Path | None = None) -> StepResult:
    res = StepResult(asdict(spec), offered_samples_per_s=spec.offered, spool=spool)
    d = work / f"step-{spec.assets}-{time.time_ns() % 10**6}"
    d.mkdir(parents=True)
    cfg_path, report = d / "agent.toml", d / "report.json"
    cfg_path.write_text(to_toml(agent_doc(spec, mq.port, influx.url, d / "state", spool,
                                          bundle[1] if bundle else None)))
    argv = [py, str(ROOT / "tests/bench/e2e_agent.py"), "--config", str(cfg_path),
            "--report", str(report)]
    if bundle is not None:  # the model registry folder the agent's model manager reads
        from models.bundle import write_to_registry

        write_to_registry(d / "state" / "models", bundle[0].read_bytes())
    agent_log = (d / "agent.log").open("wb")
    agent = subprocess.Popen(argv, stdout=agent_log, stderr=subprocess.STDOUT, cwd=ROOT)
    alerts = AlertLog(mq.port)
    lg: subprocess.Popen[str] | None = None
    try:
        deadline = time.monotonic() + 60
        while not _read_report(report).get("connected"):
            if agent.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"agent did not start; see {d / 'agent.log'}:\n"
                                   + (d / "agent.log").read_text()[-2000:])
            time.sleep(0.2)
        time.sleep(0.5)  # subscriptions made
        gw = str(Path(py).parent / "gearwatch")
        lg_argv = [gw if Path(gw).exists() else "gearwatch", "sim", "load",
                   "--port", str(mq.port), "--site", SITE, "--assets", str(spec.assets),
                   "--sensors", str(spec.sensors), "--rate", str(spec.rate_hz),
                   "--seconds", str(spec.seconds), "--batch-rows", str(spec.batch_rows),
                   "--layout", spec.layout, "--qos", str(spec.qos)]
        if spec.fault_assets and spec.fault_at_s is not None:
            lg_argv += ["--fault-assets", str(spec.fault_assets),
                        "--fault-at", str(spec.fault_at_s)]
        pids = {"agent": agent.pid, "mosquitto": mq.proc.pid if mq.proc else 0,
                "influxd": influx.proc.pid if influx.proc else 0}
        samples: list[dict[str, Any]] = []
        t_start = time.time()
        lg = subprocess.Popen(lg_argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True)
        pids["loadgen"] = lg.pid

        last_cpu: dict[str, float] = {}

        def snap() -> dict[str, Any]:
            for k, p in pids.items():  # a process that has exited keeps its last reading
                last_cpu[k] = proc_cpu(p) or last_cpu.get(k, 0.0)
            return {"t": time.time(), "cpu": dict(last_cpu),
                    "threads": thread_cpu(agent.pid), "mem": proc_mem_kb(agent.pid),
                    "rep": _read_report(report)}

        spy: subprocess.Popen[bytes] | None = None
        while lg.poll() is None:
            samples.append(snap())
            if profile is not None and spy is None and time.time() > t_start + spec.warmup_s:
                spy = _start_profile(profile, spec, agent.pid)
            time.sleep(1.0)
        if spy is not None:
            spy.wait(60)
        samples.append(snap())
        t_load_end = time.time()
        out, err = lg.communicate()
        try:
            res.loadgen = json.loads(out.strip().splitlines()[-1])
        except (ValueError, IndexError):
            raise RuntimeError(f"load generator failed: {err[-2000:]}") from None
        sent = int(res.loadgen["samples"])
        res.sent_samples_per_s = round(sent / max(res.loadgen["seconds"], 1e-9))
        # drain: everything sent should become durable
        drain_deadline = time.monotonic() + max(10.0, spec.seconds * 0.25)
        while time.monotonic() < drain_deadline:
            rep = _read_report(report)
            if rep.get("durable_samples", 0) >= sent:
                break
            time.sleep(0.5)
        time.sleep(1.2)
        final = snap()
        res.all_durable = final["rep"].get("durable_samples", 0) >= sent
        # the steady window
        t0 = t_start + spec.warmup_s
        win = [s for s in samples if t0 <= s["t"] <= t_load_end]
        if len(win) < 2:
            win = samples[-2:]
            res.notes.append("step too short for its warm-up: whole run measured")
        a, b = win[0], win[-1]
        dt = b["t"] - a["t"]
        ra, rb = a["rep"], b["rep"]
        res.samples_per_s = round((rb["durable_samples"] - ra["durable_samples"]) / dt)
        res.rows_per_s = round((rb["rows"] - ra["rows"]) / dt)
        res.scores_per_s = round((rb["durable_scores"] - ra["durable_scores"]) / dt)
        res.cpu_cores = {k: round((b["cpu"][k] - a["cpu"][k]) / dt, 3) for k in pids}
        if res.samples_per_s:
            res.agent_cpu_us_per_sample = round(res.cpu_cores["agent"] / res.samples_per_s * 1e6,
                                                2)
        names = {int(k): v for k, v in final["rep"].get("threads", {}).items()}
        groups: dict[str, float] = {}
        for tid, c1 in b["threads"].items():
            c0 = a["threads"].get(tid, 0.0)
            nm = ("event loop" if tid == agent.pid else names.get(tid, "native (torch/OpenMP)"))
            nm = "paho (decode)" if nm.startswith("paho") else nm
            groups[nm] = groups.get(nm, 0.0) + (c1 - c0) / dt
        res.agent_threads_cores = {k: round(v, 3) for k, v in
                                   sorted(groups.items(), key=lambda kv: -kv[1]) if v >= 0.005}
        res.agent_peak_rss_mb = round(final["mem"].get("VmHWM", 0) / 1024, 1)
        res.agent_rss_mb_start_end = [round(a["mem"].get("VmRSS", 0) / 1024, 1),
                                      round(b["mem"].get("VmRSS", 0) / 1024, 1)]
        fr = final["rep"]
        res.sample_latency = _lat_stats(fr.get("sample_latency", {}), t0, t_load_end + 1)
        res.score_latency = _lat_stats(fr.get("score_latency", {}), t0, t_load_end + 1)
        res.score_written_latency = _lat_stats(fr.get("score_written_latency", {}), t0,
                                               t_load_end + 1)
        ae_a, ae_b = ra.get("ae", {}), rb.get("ae", {})
        if ae_b.get("windows"):
            w = ae_b["windows"] - ae_a.get("windows", 0)
            s = ae_b["seconds"] - ae_a.get("seconds", 0)
            fw = ae_b["forward_windows"] - ae_a.get("forward_windows", 0)
            fc = ae_b["forward_calls"] - ae_a.get("forward_calls", 0)
            fs = ae_b["forward_seconds"] - ae_a.get("forward_seconds", 0)
            cs = ae_b.get("cpu_seconds", 0) - ae_a.get("cpu_seconds", 0)
            res.ae = {"windows_per_s_wall": round(w / dt),
                      # windows per second of the scoring thread's CPU inside score_rows
                      # (push, gather, forward, calibration): robust to a busy machine
                      "scorer_windows_per_s": round(w / cs) if cs else None,
                      "scorer_windows_per_s_wall": round(w / s) if s else None,
                      "forward_windows_per_s": round(fw / fs) if fs else None,
                      "mean_forward_batch": round(fw / fc, 1) if fc else None,
                      "scorer_busy_fraction": round(s / dt, 3)}
        res.kept_up = (res.samples_per_s >= 0.95 * spec.offered and res.all_durable
                       and (res.score_latency.get("p99_s") or 99) < 3.0)
        if res.loadgen.get("max_lag_s", 0) > 1.0:
            res.notes.append(f"load generator fell behind (max lag "
                             f"{res.loadgen['max_lag_s']} s): offered load not reached")
        if spec.seconds - spec.warmup_s >= 300:
            for m0 in np.arange(t0, t_load_end - 59, 60.0):
                seg = [x for x in win if m0 <= x["t"] < m0 + 60]
                if len(seg) < 2:
                    continue
                span = seg[-1]["t"] - seg[0]["t"]
                lat = _lat_stats(fr.get("sample_latency", {}), m0, m0 + 60)
                res.minutes.append({
                    "minute": int((m0 - t0) // 60),
                    "durable_samples_per_s": round((seg[-1]["rep"]["durable_samples"]
                                                    - seg[0]["rep"]["durable_samples"]) / span),
                    "rss_mb": round(seg[-1]["mem"].get("VmRSS", 0) / 1024, 1),
                    "sample_p99_ms": None if lat["p99_s"] is None else round(lat["p99_s"] * 1e3),
                })
        _alert_latency(res, spec, alerts)
    finally:
        if lg is not None and lg.poll() is None:
            lg.kill()
        agent.terminate()
        try:
            agent.wait(30)
        except subprocess.TimeoutExpired:
            agent.kill()
        alerts.close()
        agent_log.close()
    return res


def _start_profile(profile: Path, spec: StepSpec, pid: int) -> subprocess.Popen[bytes] | None:
    """py-spy (pip install py-spy) over the steady part: collapsed stacks per thread."""
    spy_bin = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(spy_bin).exists():
        print("  (no py-spy: pip install py-spy to profile)", flush=True)
        return None
    profile.mkdir(parents=True, exist_ok=True)
    dur = max(2, int(spec.seconds - spec.warmup_s - 2))
    out = profile / f"agent-{spec.assets}.txt"
    return subprocess.Popen([spy_bin, "record", "-p", str(pid), "-d", str(dur), "-r", "50",
                             "--threads", "--nonblocking", "-f", "raw", "-o", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _alert_latency(res: StepResult, spec: StepSpec, alerts: AlertLog) -> None:
    fault_ts = res.loadgen.get("fault_ts_ns")
    t0 = res.loadgen.get("t0_ns")
    if not spec.fault_assets or fault_ts is None:
        return
    period = round(1e9 / spec.rate_hz)
    faulty = {f"a{i}" for i in range(spec.fault_assets)}
    res.alerts_expected = len(faulty)
    first: dict[str, tuple[int, dict[str, Any]]] = {}
    false = 0
    with alerts.lock:
        items = list(alerts.items)
    for arrived, p in items:
        if p.get("kind") != "open":
            continue
        if p["asset"] in faulty and p["start_ns"] >= fault_ts:
            first.setdefault(p["asset"], (arrived, p))
        elif p["asset"] not in faulty:
            false += 1
    res.alerts_seen, res.false_alerts = len(first), false
    from_sample, from_pub = [], []
    per_msg = 1 if spec.layout == "row" else spec.batch_rows
    for asset, (arrived, p) in first.items():
        trigger = p["start_ns"] + (MIN_DURATION_TICKS - 1) * period
        from_sample.append((arrived - trigger) / 1e9)
        if t0 is not None:
            i = int(asset[1:])
            k = (trigger - t0) // period  # tick index; asset i sends on ticks = i mod batch
            k_pub = k + ((i % per_msg) - k) % per_msg
            from_pub.append((arrived - (t0 + k_pub * period)) / 1e9)
    for name, xs in (("alert_latency_from_sample", from_sample),
                     ("alert_latency_from_publish", from_pub)):
        setattr(res, name, {"p50_s": _q(xs, 0.5), "p99_s": _q(xs, 0.99),
                            "max_s": _q(xs, 1.0), "n": len(xs)})


# -- the broker's own limit -------------------------------------------------------------------
def mosquitto_sub_rate(mq: LocalServer, spec: StepSpec, n_messages: int) -> dict[str, Any]:
    """Messages/s Mosquitto delivers the same payloads from `mosquitto_pub -l` to
    `mosquitto_sub`, both Debian's C clients, at the same QoS."""
    sub_bin, pub_bin = shutil.which("mosquitto_sub"), shutil.which("mosquitto_pub")
    if sub_bin is None or pub_bin is None:
        return {"error": "mosquitto-clients not installed (apt-get install mosquitto-clients)"}
    bank = SignalBank(16, spec.sensors, seed=7)
    per_msg = 1 if spec.layout == "row" else spec.batch_rows
    period = round(1e9 / spec.rate_hz)
    base = time.time_ns() // period * period
    lines: list[bytes] = []
    k = 0
    while len(lines) < n_messages:
        ts = [base + (k + j) * period for j in range(per_msg)]
        data = bank.rows((np.array(ts) - base) / 1e9)
        for i in range(16):
            lines.extend(encode(spec.layout, ts, [f"s{j}" for j in range(spec.sensors)],
                                data[i]))
        k += per_msg
    lines = lines[:n_messages]
    with tempfile.NamedTemporaryFile("wb", suffix=".txt", delete=False) as f:
        f.write(b"\n".join(lines) + b"\n")
        path = f.name
    topic = f"plant/{SITE}/baseline/telemetry"
    sub = subprocess.Popen([sub_bin, "-p", str(mq.port), "-t", topic, "-q", str(spec.qos),
                            "-C", str(n_messages), "-i", f"bench-sub-{time.time_ns()}"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    time.sleep(0.5)
    t0 = time.perf_counter()
    with open(path, "rb") as fin:
        subprocess.run([pub_bin, "-p", str(mq.port), "-t", topic, "-q", str(spec.qos), "-l"],
                       stdin=fin, check=True, timeout=300)
    try:
        sub.wait(120)
    except subprocess.TimeoutExpired:
        sub.kill()
        return {"error": "mosquitto_sub did not receive every message in 120 s"}
    dt = time.perf_counter() - t0
    os.unlink(path)
    samples = n_messages * per_msg * spec.sensors
    return {"messages": n_messages, "seconds": round(dt, 3),
            "messages_per_s": round(n_messages / dt), "samples_per_s": round(samples / dt),
            "layout": spec.layout, "rows_per_message": per_msg, "qos": spec.qos}


# -- report -------------------------------------------------------------------------------------
def _f(v: Any, nd: int = 0) -> str:
    if v is None:
        return "-"
    if isinstance(v, float) and nd:
        return f"{v:.{nd}f}"
    if isinstance(v, int | float):
        return f"{v:,.0f}"
    return str(v)


def _ms(d: dict[str, Any], k: str) -> str:
    v = d.get(k)
    return "-" if v is None else f"{v * 1000:.0f}"


def print_table(doc: dict[str, Any]) -> None:
    steps = doc["steps"]
    hdr = ("assets", "offered/s", "samples/s", "rows/s", "up", "agent us/sample",
           "score durable p50/p99/max ms", "score in InfluxDB p50/p99/max ms",
           "alert p50/p99/max ms (sample|publish)", "cpu agent/mosq/influx/load",
           "RSS MB", "AE win/s scorer:bare")
    rows = []
    for s in steps:
        sl, al, ap = s["score_latency"], s["alert_latency_from_sample"], s[
            "alert_latency_from_publish"]
        wl = s.get("score_written_latency", {})
        c = s["cpu_cores"]
        ae = s["ae"]
        rows.append((
            _f(s["spec"]["assets"]), _f(s["offered_samples_per_s"]), _f(s["samples_per_s"]),
            _f(s["rows_per_s"]), "yes" if s["kept_up"] else "NO",
            _f(s["agent_cpu_us_per_sample"], 2),
            f"{_ms(sl, 'p50_s')}/{_ms(sl, 'p99_s')}/{_ms(sl, 'max_s')}",
            f"{_ms(wl, 'p50_s')}/{_ms(wl, 'p99_s')}/{_ms(wl, 'max_s')}",
            f"{_ms(al, 'p50_s')}/{_ms(al, 'p99_s')}/{_ms(al, 'max_s')} | "
            f"{_ms(ap, 'p50_s')}/{_ms(ap, 'p99_s')}/{_ms(ap, 'max_s')}"
            + (f" ({s['alerts_seen']}/{s['alerts_expected']})" if s["alerts_expected"] else ""),
            "/".join(f"{c.get(k, 0):.2f}" for k in ("agent", "mosquitto", "influxd",
                                                     "loadgen")),
            _f(s["agent_peak_rss_mb"], 1),
            f"{_f(ae.get('scorer_windows_per_s'))}:{_f(ae.get('bare_windows_per_s'))}",
        ))
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h)
              for i, h in enumerate(hdr)]
    print()
    print("  ".join(h.ljust(w) for h, w in zip(hdr, widths, strict=True)))
    for r in rows:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)))
    for s in steps:
        print(f"  {s['spec']['assets']} assets, agent threads (cores): "
              + ", ".join(f"{k} {v:.2f}" for k, v in s["agent_threads_cores"].items())
              + ("".join(f"; NOTE {n}" for n in s["notes"])))
        for m in s.get("minutes", []):
            print(f"    minute {m['minute']:>2}: {m['durable_samples_per_s']:,} samples/s durable, "
                  f"RSS {m['rss_mb']} MB, sample -> durable p99 {m['sample_p99_ms']} ms")
    sm = doc["summary"]
    print()
    for k, v in sm.items():
        print(f"  {k}: {v}")


def summarise(doc: dict[str, Any]) -> dict[str, Any]:
    steps = doc["steps"]
    up = [s for s in steps if s["kept_up"] and not s.get("half_load")]
    best = max(up, key=lambda s: s["samples_per_s"], default=None)
    sm: dict[str, Any] = {
        "max_sustained_samples_per_s": best["samples_per_s"] if best else 0,
        "max_sustained_rows_per_s": best["rows_per_s"] if best else 0,
        "at_assets": best["spec"]["assets"] if best else None,
        "first_not_kept_up_assets": next((s["spec"]["assets"] for s in steps
                                          if not s["kept_up"]), None),
        "spool": steps[0]["spool"] if steps else None,
    }
    mb = doc.get("mosquitto_sub", {})
    # the ratio is of the best sustained step; when none kept up, of the best durable rate
    # seen (marked), so a run on an overloaded machine still says where it stands
    ref = best or max((s for s in steps if not s.get("half_load")),
                      key=lambda s: s["samples_per_s"], default=None)
    if ref and mb.get("samples_per_s"):
        sm["ratio_to_mosquitto_sub"] = round(ref["samples_per_s"] / mb["samples_per_s"], 4)
        sm["mosquitto_sub_samples_per_s"] = mb["samples_per_s"]
        if best is None:
            sm["ratio_basis"] = "best durable rate (no step kept up)"
    for s in steps:
        ae = s["ae"]
        if ae.get("scorer_windows_per_s") and ae.get("bare_windows_per_s"):
            ae["scorer_to_bare"] = round(ae["scorer_windows_per_s"] / ae["bare_windows_per_s"], 3)
    if best and best["ae"].get("scorer_to_bare"):
        sm["ae_scorer_to_bare_forward"] = best["ae"]["scorer_to_bare"]
        sm["ae_rows_per_s_to_bare_forward"] = round(
            best["rows_per_s"] / best["ae"]["bare_windows_per_s"], 3)
    half = [s for s in steps if s.get("half_load")]
    if half:
        sm["half_load_alert_p99_ms_from_sample"] = _ms(half[0]["alert_latency_from_sample"],
                                                       "p99_s")
        sm["half_load_alert_p99_ms_from_publish"] = _ms(half[0]["alert_latency_from_publish"],
                                                        "p99_s")
    # kept-up steps only: a lagging agent's RSS holds its backlog, not its per-asset state
    mem = sorted((s["spec"]["assets"], s["agent_peak_rss_mb"]) for s in steps if s["kept_up"])
    if len(mem) >= 2 and mem[-1][0] > mem[0][0]:
        sm["memory_kb_per_asset"] = round((mem[-1][1] - mem[0][1]) * 1024
                                          / (mem[-1][0] - mem[0][0]), 1)
    return sm


# -- main ---------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--assets", default="10,100,1000,5000",
                    help="comma-separated asset counts, rising (default 10,100,1000,5000)")
    ap.add_argument("--sensors", type=int, default=10)
    ap.add_argument("--rate", type=float, default=10.0, help="rows/s per asset")
    ap.add_argument("--batch-rows", type=int, default=10, help="rows per message")
    ap.add_argument("--layout", choices=sorted(PAYLOAD_FORMATS), default="columns")
    ap.add_argument("--qos", type=int, choices=(0, 1), default=1)
    ap.add_argument("--seconds", type=float, default=50.0, help="load per step")
    ap.add_argument("--warmup", type=float, default=22.0, help="s of each step not measured")
    ap.add_argument("--warmup-rows", type=int, default=100,
                    help="online detector: rows learned before scoring")
    ap.add_argument("--calibration-rows", type=int, default=100)
    ap.add_argument("--no-ae", action="store_true", help="online detector only")
    ap.add_argument("--no-half-load", action="store_true",
                    help="skip the extra step at half the max sustained load")
    ap.add_argument("--baseline-messages", type=int, default=50_000)
    ap.add_argument("--ae-hidden", type=int, default=64)
    ap.add_argument("--ae-latent", type=int, default=16)
    ap.add_argument("--ae-window", type=int, default=30)
    ap.add_argument("--ae-train-steps", type=int, default=300)
    ap.add_argument("--quick", action="store_true",
                    help="10 and 100 assets, 20 s steps, small baselines")
    ap.add_argument("--smoke", action="store_true", help="seconds-long run for the test suite")
    ap.add_argument("--json", default=str(ROOT / "var/bench/e2e.json"))
    ap.add_argument("--work", help="folder for servers and logs (default: a temp dir)")
    ap.add_argument("--profile", help="write py-spy collapsed stacks of the agent here")
    ap.add_argument("--keep-going", action="store_true",
                    help="run every listed size even after one did not keep up")
    args = ap.parse_args(argv)
    if args.quick:
        args.assets, args.seconds, args.warmup = "10,100", 36.0, 22.0
        args.baseline_messages = 20_000
    if args.smoke:
        args.assets, args.seconds, args.warmup = "3", 6.0, 2.0
        args.warmup_rows, args.calibration_rows = 10, 20
        args.baseline_messages, args.no_half_load = 2_000, True
        args.ae_hidden, args.ae_latent, args.ae_window, args.ae_train_steps = 8, 4, 8, 20
    sizes = [int(x) for x in args.assets.split(",") if x]
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="gearwatch-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    py = sys.executable
    t_begin = time.time()
    spool = spool_supported()
    if not spool:
        print("note: this checkout's config has no [spool] section: samples are acked "
              "after the InfluxDB write (ack-after-persist without the spool)", flush=True)
    else:
        print("spool on: samples are acked once fsync'd in the spool; latencies are to that "
              "point (InfluxDB writes follow from memory)", flush=True)
    bundle = None if args.no_ae else build_model_bundle(
        ROOT / "var/bench/cache", args.sensors, args.rate, args.ae_window, args.ae_hidden,
        args.ae_latent, args.ae_train_steps)
    doc: dict[str, Any] = {"started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                           "commit": _git_commit(), "host": os.uname().nodename,
                           "cpus": os.cpu_count(), "load_avg_at_start": os.getloadavg(),
                           "args": vars(args), "steps": []}
    mq = mosquitto(work).start()
    ix = influxdb(work).start()
    try:
        def spec_for(n: int, half: bool = False) -> StepSpec:
            fa = min(n, max(1, n // 10), 50)
            # the online detector scores from row warmup + calibration (200: 20 s at 10 Hz) on
            ready_s = (args.warmup_rows + args.calibration_rows) / args.rate + 2
            fault_at = max(args.warmup + 0.4 * (args.seconds - args.warmup), ready_s)
            return StepSpec(n, args.sensors, args.rate, args.batch_rows, args.layout, args.qos,
                            args.seconds, args.warmup, fa, fault_at, args.warmup_rows,
                            args.calibration_rows)

        for n in sizes:
            spec = spec_for(n)
            print(f"step: {n} assets x {args.sensors} sensors x {args.rate:g} Hz = "
                  f"{spec.offered:,.0f} samples/s offered, {args.seconds:g} s ...", flush=True)
            r = run_step(spec, mq, ix, work, bundle, spool, py,
                         Path(args.profile) if args.profile else None)
            doc["steps"].append(asdict(r))
            print(f"  -> {r.samples_per_s:,.0f} samples/s durable, kept up: {r.kept_up}, "
                  f"score p99 {r.score_latency.get('p99_s')} s", flush=True)
            if not r.kept_up and not args.keep_going:
                break
        up = [s for s in doc["steps"] if s["kept_up"]]
        if up and not args.no_half_load:
            best = max(up, key=lambda s: s["samples_per_s"])
            n_half = max(1, best["spec"]["assets"] // 2)
            print(f"half-load step: {n_half} assets (alert latency at half the max "
                  "sustained load) ...", flush=True)
            r = run_step(spec_for(n_half), mq, ix, work, bundle, spool, py)
            d = asdict(r)
            d["half_load"] = True
            doc["steps"].append(d)
        spec0 = spec_for(sizes[-1])
        print("baseline: mosquitto_pub -> mosquitto -> mosquitto_sub ...", flush=True)
        doc["mosquitto_sub"] = mosquitto_sub_rate(mq, spec0, args.baseline_messages)
        if bundle is not None:
            print("baseline: bare forward pass at the agent's batch sizes ...", flush=True)
            for s in doc["steps"]:
                b = s["ae"].get("mean_forward_batch")
                if b:
                    secs = 0.5 if args.smoke else 2.0
                    # the agent's setting: one intra-op thread
                    s["ae"]["bare_windows_per_s"] = round(bare_forward_rate(
                        bundle[0], bundle[1], round(b), secs, 1))
    finally:
        mq.stop()
        ix.stop()
    doc["summary"] = summarise(doc)
    doc["wall_s"] = round(time.time() - t_begin, 1)
    print_table(doc)
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=1))
    print(f"\nJSON: {out}  (work dir {work}, {doc['wall_s']} s)")
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)
    return 0


def _git_commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                              capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


if __name__ == "__main__":
    raise SystemExit(main())
