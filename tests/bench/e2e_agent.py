"""The agent process of the end-to-end benchmark: the real `Agent`, plus probes that report.

    python tests/bench/e2e_agent.py --config agent.toml --report report.json

It is `gearwatch agent run` (the model comes from the config's registry folder, verified by the
agent's model manager) with two additions, neither of which changes what the agent does:

- probes ride the agent's own ack path: a probe ack is appended to every sample batch and
  after every score submission, so it runs exactly when the sink has made those samples /
  scores durable (in the spool, fsync'd, with `[spool]` on; else written to InfluxDB), i.e.
  where MQTT acks run.  Each probe records `time.time_ns() - sample timestamp` (the sample
  clock is this machine's);
- a report (per-second counters and latency histograms, AE scorer timings, the native ids of
  Python threads for per-thread CPU) is rewritten every second and at exit.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import numpy as np

from edge_agent.batch import SampleBatch
from edge_agent.config import load_config
from edge_agent.logs import setup_logging
from edge_agent.pipeline import ClassOutput, Scored
from edge_agent.service import Agent

# latency histogram bins: 0.1 ms .. 100 s, geometric (~4% wide)
EDGES = np.geomspace(1e-4, 100.0, 361)


class LatencyLog:
    """Per wall-clock second: a histogram of latencies, count, max."""

    def __init__(self) -> None:
        self.by_sec: dict[int, np.ndarray] = {}
        self.max_by_sec: dict[int, float] = {}
        self.lock = threading.Lock()

    def add(self, lat_s: np.ndarray) -> None:
        if lat_s.size == 0:
            return
        sec = int(time.time())
        h, _ = np.histogram(np.clip(lat_s, EDGES[0], EDGES[-1]), EDGES)
        with self.lock:
            cur = self.by_sec.get(sec)
            self.by_sec[sec] = h if cur is None else cur + h
            self.max_by_sec[sec] = max(self.max_by_sec.get(sec, 0.0), float(lat_s.max()))

    def doc(self) -> dict[str, Any]:
        with self.lock:
            return {str(s): {"hist": {int(i): int(c) for i in np.flatnonzero(h)
                                      for c in [h[i]]},
                             "max": self.max_by_sec[s]} for s, h in self.by_sec.items()}


class Probes:
    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        self.sample_lat = LatencyLog()  # sample ts -> its sample batch durable
        self.score_lat = LatencyLog()  # sample ts -> its row's score durable
        self.written_lat = LatencyLog()  # sample ts -> its row's score written to InfluxDB
        self.written_marks: collections.deque[tuple[int, np.ndarray]] = collections.deque()
        self.durable_samples = 0
        self.durable_scores = 0
        self.ae_calls = 0
        self.ae_windows = 0
        self.ae_s = 0.0
        self.ae_cpu_s = 0.0
        self.fwd_calls = 0
        self.fwd_windows = 0
        self.fwd_s = 0.0
        self.compute_s = 0.0  # in the scoring thread: ingest, frame, score, raw line protocol
        self.deliver_s = 0.0  # on the loop: sinks, events, alerts
        self.sink_out_s = 0.0
        self.ready_at: float | None = None
        self._install()

    def _install(self) -> None:
        agent = self.agent
        compute, deliver, sink_output = agent._compute, agent._deliver, agent._sink_output

        def _compute(batch: SampleBatch | None) -> Any:
            t0 = time.perf_counter()
            try:
                return compute(batch)
            finally:
                self.compute_s += time.perf_counter() - t0

        def _deliver(batch: SampleBatch | None, lines: list[str] | None,
                     scored: list[tuple[str, Scored]]) -> None:
            t0 = time.perf_counter()
            if batch is not None and len(batch) and agent.influx is not None:
                ts, n = batch.ts_ns, len(batch)

                def probe() -> None:
                    self.durable_samples += n
                    self.sample_lat.add((time.time_ns() - ts[:: max(1, n // 200)]) / 1e9)

                batch.acks.append(probe)
            deliver(batch, lines, scored)
            self.deliver_s += time.perf_counter() - t0

        def _sink_output(out: ClassOutput) -> None:
            t0 = time.perf_counter()
            sink_output(out)
            self.sink_out_s += time.perf_counter() - t0
            if agent.influx is None:
                return
            ts = out.rows.ts_ns[np.isfinite(out.fused)]
            if ts.size == 0:
                return

            def probe() -> None:
                self.durable_scores += ts.size
                self.score_lat.add((time.time_ns() - ts[:: max(1, ts.size // 200)]) / 1e9)

            agent.influx.submit([], [probe])
            # written to InfluxDB: once the sink has written as many points as had been
            # submitted up to these scores (it sends in order; checked every 20 ms)
            mark = getattr(agent.influx, "points_submitted", None)
            if mark is not None:
                self.written_marks.append((mark, ts[:: max(1, ts.size // 200)]))

        agent._compute = _compute  # type: ignore[method-assign]
        agent._deliver = _deliver  # type: ignore[method-assign]
        agent._sink_output = _sink_output  # type: ignore[method-assign]

    def watch_ae(self) -> None:
        for cp in self.agent.pipeline.classes.values():
            ae = cp.ae
            if ae is None:
                continue
            score_rows = ae.score_rows

            def timed(*a: Any, _f: Any = score_rows, **k: Any) -> Any:
                t0, c0 = time.perf_counter(), time.thread_time()
                out = _f(*a, **k)
                self.ae_s += time.perf_counter() - t0
                self.ae_cpu_s += time.thread_time() - c0  # the scoring thread's own CPU
                self.ae_calls += 1
                self.ae_windows += int(np.isfinite(out.raw).sum())
                return out

            ae.score_rows = timed  # type: ignore[method-assign]
            t_fwd: list[float] = []

            def pre(_m: Any, inp: Any, _t: list[float] = t_fwd) -> None:
                _t.append(time.perf_counter())

            def post(_m: Any, inp: Any, _out: Any, _t: list[float] = t_fwd) -> None:
                self.fwd_s += time.perf_counter() - _t.pop()
                self.fwd_calls += 1
                self.fwd_windows += int(inp[0].shape[0])

            ae.model.register_forward_pre_hook(pre)
            ae.model.register_forward_hook(post)

    async def watch_written(self) -> None:
        influx = self.agent.influx
        while influx is not None:
            await asyncio.sleep(0.02)
            done = influx.points_written
            now = time.time_ns()
            while self.written_marks and self.written_marks[0][0] <= done:
                self.written_lat.add((now - self.written_marks.popleft()[1]) / 1e9)

    def doc(self) -> dict[str, Any]:
        a = self.agent
        influx = a.influx
        return {
            "pid": os.getpid(), "written_at": time.time(), "ready_at": self.ready_at,
            "connected": a.mqtt is not None and a.mqtt.connected.is_set(),
            "samples_in": a.state.samples, "rows": a.state.rows,
            "events": len(a.state.events),
            "durable_samples": self.durable_samples, "durable_scores": self.durable_scores,
            "points_written": influx.points_written if influx is not None else 0,
            "influx_backlog": influx.backlog_points if influx is not None else 0,
            "queue": a.queue.qsize(),
            "sample_latency": self.sample_lat.doc(), "score_latency": self.score_lat.doc(),
            "score_written_latency": self.written_lat.doc(),
            "ae": {"calls": self.ae_calls, "windows": self.ae_windows, "seconds": self.ae_s,
                   "cpu_seconds": self.ae_cpu_s,
                   "forward_calls": self.fwd_calls, "forward_windows": self.fwd_windows,
                   "forward_seconds": self.fwd_s},
            "compute_s": self.compute_s, "deliver_s": self.deliver_s,
            "sink_output_s": self.sink_out_s,
            "threads": {str(t.native_id): t.name for t in threading.enumerate()
                        if t.native_id is not None},
            "spool": getattr(a, "spool", None) is not None,
            "models": [cp.events.model_version for cp in a.pipeline.classes.values()
                       if cp.ae is not None],
        }


def write_atomic(path: Path, doc: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc))
    os.replace(tmp, path)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", required=True)
    ap.add_argument("--report", required=True)
    args = ap.parse_args()
    cfg = load_config(args.config)
    setup_logging(cfg.agent.log_level, cfg.agent.log_json)
    agent = Agent(cfg)
    probes = Probes(agent)
    report = Path(args.report)

    async def reporter() -> None:
        await agent.ready.wait()
        probes.watch_ae()  # the model manager installed the registry's bundle at start
        probes.ready_at = time.time()
        while True:
            await asyncio.to_thread(write_atomic, report, probes.doc())
            await asyncio.sleep(1.0)

    async def run() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, agent.stop)
        task = asyncio.create_task(reporter())
        watch = asyncio.create_task(probes.watch_written())
        await agent.run()
        task.cancel()
        watch.cancel()

    asyncio.run(run())
    write_atomic(report, {**probes.doc(), "stopped": True})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
