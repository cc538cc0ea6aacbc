"""A load generator: N assets x M sensors at R Hz over real MQTT, for the throughput benchmark.

Signals are cheap but not trivial (correlated sinusoids plus noise, vectorised over assets),
stamped with the wall clock so the agent's latency can be measured from a sample's timestamp.
An optional step fault on chosen assets at a chosen time lets a benchmark time the alert.
Payload layouts: `columns` (one message per asset per batch, the agent's `json_columns`),
`rows` (`json_batch`) and `row` (one message per row, `json`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import orjson
import paho.mqtt.client as mqtt

from models.schema import AssetSchema, SensorSpec
from simulators.mqtt_publisher import connect

PAYLOAD_FORMATS = {"columns": "json_columns", "rows": "json_batch", "row": "json"}


def load_schema(n_sensors: int, rate_hz: float) -> AssetSchema:
    return AssetSchema(
        asset_class="load_asset",
        sensors=tuple(SensorSpec(f"s{i}", "", -1e6, 1e6) for i in range(n_sensors)),
        sample_period_s=1.0 / rate_hz,
        window=30,
    )


@dataclass
class LoadReport:
    messages: int = 0
    samples: int = 0
    seconds: float = 0.0
    late_batches: int = 0
    max_lag_s: float = 0.0
    fault_ts_ns: int | None = None
    t0_ns: int = 0  # tick 0; asset i's messages end on ticks k with k = i mod batch_rows
    per_asset_samples: dict[str, int] = field(default_factory=dict)

    @property
    def samples_per_s(self) -> float:
        return self.samples / self.seconds if self.seconds else 0.0


class SignalBank:
    """All assets' signals: a shared latent load driving every sensor, plus noise.

    The load cycles every `cycle_s` (20 s): a detector that has learned from a cycle's rows
    has seen the whole normal range, so a benchmark's short warm-up does not alarm on drift.
    """

    def __init__(self, n_assets: int, n_sensors: int, seed: int = 0,
                 cycle_s: float = 20.0) -> None:
        self.cycle_s = cycle_s
        rng = np.random.default_rng(seed)
        self.rng = rng
        self.gain = rng.uniform(0.5, 2.0, (n_assets, n_sensors))
        self.offset = rng.uniform(10, 100, (n_assets, n_sensors))
        self.phase = rng.uniform(0, 2 * np.pi, n_assets)
        self.noise = 0.05 * self.gain

    def rows(self, t_s: np.ndarray, idx: np.ndarray | None = None) -> np.ndarray:
        """(assets, len(t_s), sensors) at the given times (of the assets in `idx`, or all)."""
        sel = slice(None) if idx is None else idx
        gain, offset, noise = self.gain[sel], self.offset[sel], self.noise[sel]
        load = np.sin(2 * np.pi * t_s[None, :] / self.cycle_s + self.phase[sel, None])  # (A, T)
        x = offset[:, None, :] + gain[:, None, :] * load[:, :, None]
        return x + noise[:, None, :] * self.rng.standard_normal(x.shape)


def encode(fmt: str, ts: list[int], names: list[str], block: np.ndarray) -> list[bytes]:
    """Messages for one asset: `block` is (rows, sensors)."""
    vals = np.round(block, 4)
    if fmt == "columns":
        return [orjson.dumps({"ts": ts, "values": dict(zip(names, np.ascontiguousarray(vals.T),
                                                             strict=True))},
                             option=orjson.OPT_SERIALIZE_NUMPY)]
    rows = [{"ts": t, "values": dict(zip(names, r, strict=True))}
            for t, r in zip(ts, vals.tolist(), strict=True)]
    if fmt == "rows":
        return [orjson.dumps({"rows": rows})]
    return [orjson.dumps(r) for r in rows]


def run_load(
    host: str, port: int, n_assets: int, n_sensors: int, rate_hz: float, seconds: float,
    batch_rows: int = 10, qos: int = 0, fmt: str = "columns", site: str = "bench",
    fault_assets: int = 0, fault_at_s: float | None = None, fault_size: float = 25.0,
    seed: int = 0, prefix: str = "a",
) -> LoadReport:
    """Publish for `seconds` of wall time, paced to the wall clock; report what was sent.

    Timestamps lie on the grid of the sample period (as a PLC's scan would), so a sample's
    timestamp is its row's tick.  With `batch_rows` > 1 (`columns`, `rows`) each asset sends
    its newest `batch_rows` rows once the last of them has happened; assets are staggered
    over the batch interval (asset i sends on ticks = i mod batch_rows) so the broker sees an
    even stream, not one burst per interval.  `row` sends one message per row.
    The step fault adds `fault_size` x the sensor's gain to sensor 0 of the first
    `fault_assets` assets from `fault_at_s` on; the report gives its first timestamp.
    """
    if fmt not in PAYLOAD_FORMATS:
        raise ValueError(f"unknown payload layout {fmt!r}; use one of {list(PAYLOAD_FORMATS)}")
    batch_rows = 1 if fmt == "row" else max(1, batch_rows)
    per_msg = 1 if fmt == "row" else batch_rows
    ids = [f"{prefix}{i}" for i in range(n_assets)]
    topics = [f"plant/{site}/{a}/telemetry" for a in ids]
    names = [f"s{i}" for i in range(n_sensors)]
    bank = SignalBank(n_assets, n_sensors, seed)
    phase_of = np.arange(n_assets) % batch_rows
    groups = [np.flatnonzero(phase_of == p) for p in range(batch_rows)]
    client = connect(host, port, f"gearwatch-load-{time.time_ns() % 10**9}")
    rep = LoadReport(per_asset_samples=dict.fromkeys(ids, 0))
    period_ns = round(1e9 / rate_hz)
    period_s = period_ns / 1e9
    t0_wall = time.monotonic()
    t0_ns = -(-time.time_ns() // period_ns) * period_ns  # on the grid
    t0_wall += (t0_ns - time.time_ns()) / 1e9
    rep.t0_ns = t0_ns
    k = batch_rows  # tick index; the first messages carry ticks 1..batch_rows
    infos: list[mqtt.MQTTMessageInfo] = []
    fault_ns = None if fault_at_s is None else t0_ns + round(fault_at_s * 1e9)
    try:
        while True:
            due = t0_wall + k * period_s  # a batch is sent once its last row has happened
            now = time.monotonic()
            if due > t0_wall + seconds:
                break
            if due > now:
                time.sleep(due - now)
            else:
                rep.late_batches += 1
                rep.max_lag_s = max(rep.max_lag_s, now - due)
            idx = groups[k % batch_rows]
            if idx.size:
                ts_ns = [t0_ns + (k - per_msg + 1 + j) * period_ns for j in range(per_msg)]
                t_s = (np.array(ts_ns) - t0_ns) / 1e9
                data = bank.rows(t_s, idx)
                if fault_assets and fault_ns is not None and ts_ns[-1] >= fault_ns:
                    hit = np.array(ts_ns) >= fault_ns
                    f = np.flatnonzero(idx < fault_assets)
                    data[f[:, None], np.flatnonzero(hit)[None, :], 0] += (
                        fault_size * bank.gain[idx[f], 0][:, None])
                    if rep.fault_ts_ns is None and f.size:
                        rep.fault_ts_ns = ts_ns[int(np.argmax(hit))]
                for j, i in enumerate(idx.tolist()):
                    for payload in encode(fmt, ts_ns, names, data[j]):
                        info = client.publish(topics[i], payload, qos=qos)
                        if qos:
                            infos.append(info)
                        rep.messages += 1
                    rep.per_asset_samples[ids[i]] += per_msg * n_sensors
                rep.samples += idx.size * per_msg * n_sensors
            if len(infos) > 20_000:
                for inf in infos:
                    inf.wait_for_publish(30)
                infos.clear()
            k += 1
        for inf in infos:
            inf.wait_for_publish(30)
    finally:
        rep.seconds = time.monotonic() - t0_wall
        client.disconnect()
        client.loop_stop()
    return rep
