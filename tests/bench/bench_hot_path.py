"""Where the agent's CPU goes per sample, stage by stage, without network or scheduling noise.

    python tests/bench/bench_hot_path.py [--assets 1000] [--seconds 20] [--no-ae]

Feeds the load generator's real payloads (json_columns, 10 rows x 10 sensors per message)
through the agent's own code in this process, in the proportions of a live run (the
processing loop takes ~25 ms of messages at a time), and times each stage in thread CPU
time: decode (paho's thread in the agent), ingest+frame, online detector, AE, events,
telemetry and score line protocol, sink body encoding.  Prints microseconds per sample.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from edge_agent.assets import AssetRegistry  # noqa: E402
from edge_agent.batch import SampleBatch  # noqa: E402
from edge_agent.config import parse_config  # noqa: E402
from edge_agent.pipeline import Pipeline  # noqa: E402
from edge_agent.sinks import line_protocol as lp  # noqa: E402
from edge_agent.sources.payloads import DECODERS, DecodeContext  # noqa: E402
from simulators.loadgen import SignalBank, encode  # noqa: E402
from tests.bench.bench_e2e import CLASS, agent_doc, build_model_bundle  # noqa: E402
from tests.bench.bench_e2e import StepSpec as Spec  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--assets", type=int, default=1000)
    ap.add_argument("--seconds", type=float, default=20.0, help="data seconds to feed")
    ap.add_argument("--no-ae", action="store_true")
    ap.add_argument("--profile", help="write a pyinstrument HTML profile here")
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    n, S, rate, B = args.assets, 10, 10.0, 10
    spec = Spec(n, S, rate, B, warmup_rows=100, calibration_rows=100)
    cfg = parse_config(agent_doc(spec, 1883, "http://127.0.0.1:1", Path("/tmp/x"), False))
    reg = AssetRegistry(cfg.asset_list())
    pipe = Pipeline.from_config(cfg, reg)
    if not args.no_ae:
        from models.bundle import load_bundle, load_public_key

        blob, pub = build_model_bundle(ROOT / "var/bench/cache", S, rate, 30, 64, 16, 300)
        b = load_bundle(blob.read_bytes(), load_public_key(pub))
        pipe.classes[CLASS].install_model(b, "cpu")
    ctx = DecodeContext(reg, cfg.mqtt.topic_template, cfg.mqtt.timestamp,
                        cfg.mqtt.max_payload_bytes, cfg.framer.max_future_s, cfg.framer.max_past_s)
    decode = DECODERS["json_columns"]
    series = [f"telemetry,asset={lp.tag(i.asset_id)},asset_class={lp.tag(i.schema.asset_class)}"
              for i in reg.infos]
    names = [i.schema.sensor_names for i in reg.infos]
    ids = [i.asset_id for i in reg.infos]
    bank = SignalBank(n, S, 0)
    P = round(1e9 / rate)
    t0 = (time.time_ns() - int(args.seconds * 1e9) - 10**9) // P * P
    cost: dict[str, float] = defaultdict(float)
    samples = 0
    prof: Any = None
    ticks = int(args.seconds * rate)
    for k in range(B, ticks + 1):  # one tick of data time: 1/B of the assets send a message
        idx = np.flatnonzero(np.arange(n) % B == k % B)
        ts = [t0 + (k - B + 1 + j) * P for j in range(B)]
        data = bank.rows((np.array(ts) - t0) / 1e9, idx)
        msgs = [(f"plant/bench/a{i}/telemetry", encode("columns", ts, [f"s{j}" for j in
                                                                       range(S)], data[m])[0])
                for m, i in enumerate(idx.tolist())]
        if prof is None and args.profile and k > ticks // 2:
            from pyinstrument import Profiler

            prof = Profiler()
            prof.start()
        c = time.thread_time()
        batches = [decode(t, p, ctx)[0] for t, p in msgs]
        c1 = time.thread_time()
        cost["decode (paho thread)"] += c1 - c
        # the loop takes what queued in ~25 ms: at 10 Hz ticks that is a quarter tick; feed
        # one tick's messages in one go (the proportions matter, not the exact split)
        batch = SampleBatch.concat(batches)
        c2 = time.thread_time()
        cost["concat"] += c2 - c1
        wall = t0 + k * P  # a clock in step with the data, as in a live run that keeps up
        pipe.ingest(batch, wall_ns=wall)
        c3 = time.thread_time()
        cost["ingest"] += c3 - c2
        lines = lp.telemetry_lines(batch.asset, batch.sensor, batch.ts_ns, batch.value,
                                   series, names)
        c4 = time.thread_time()
        cost["telemetry line protocol"] += c4 - c3
        for name, cp in pipe.classes.items():
            a0 = time.thread_time()
            rows = cp.framer.advance(wall)
            a1 = time.thread_time()
            cost["framer.advance"] += a1 - a0
            if len(rows) == 0:
                continue
            sc = cp.river.score(rows.asset, rows.values)
            a2 = time.thread_time()
            cost["online detector score"] += a2 - a1
            fused = sc.score
            if cp.ae is not None:
                ae = cp.ae.score_rows(rows.asset, rows.values)
                fused = np.fmax(fused, ae.score)
            a3 = time.thread_time()
            cost["AE score_rows"] += a3 - a2
            off = np.zeros(len(rows), bool)
            _tr, normal = cp.events.step(rows.asset, rows.ts_ns, fused, sc.shares, off,
                                        {"river": sc.score})
            a4 = time.thread_time()
            cost["events"] += a4 - a3
            cp.river.learn(rows.asset, rows.values, normal, sc)
            a5 = time.thread_time()
            cost["online detector learn"] += a5 - a4
            sl = lp.score_lines([ids[i] for i in rows.asset.tolist()], name, rows.ts_ns, fused,
                                {"river": sc.score}, cp.events.open_thr[rows.asset])
            a6 = time.thread_time()
            cost["score line protocol"] += a6 - a5
            lines = lines + sl
        c5 = time.thread_time()
        body = ("\n".join(lines)).encode()
        cost["sink body join+encode"] += time.thread_time() - c5
        del body
        samples += len(batch)
    if prof is not None:
        prof.stop()
        Path(args.profile).write_text(prof.output_html())
    total = sum(cost.values())
    print(f"{samples:,} samples, {n} assets, AE {'off' if args.no_ae else 'on'}: "
          f"{total / samples * 1e6:.2f} us/sample CPU in these stages "
          f"(= {samples / total:,.0f} samples/s on one core)")
    for stage, v in sorted(cost.items(), key=lambda kv: -kv[1]):
        print(f"  {stage:28s} {v / samples * 1e6:7.3f} us/sample  {v / total:6.1%}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
