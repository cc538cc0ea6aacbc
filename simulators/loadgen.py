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
    per_asset_samples: dict[str, int] = field(default_factory=dict)

    @property
    def samples_per_s(self) -> float:
        return self.samples / self.seconds if self.seconds else 0.0


class SignalBank:
    """All assets' signals: a shared latent load driving every sensor, plus noise."""

    def __init__(self, n_assets: int, n_sensors: int, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self.rng = rng
        self.gain = rng.uniform(0.5, 2.0, (n_assets, n_sensors))
        self.offset = rng.uniform(10, 100, (n_assets, n_sensors))
        self.phase = rng.uniform(0, 2 * np.pi, n_assets)
        self.noise = 0.05 * self.gain

    def rows(self, t_s: np.ndarray) -> np.ndarray:
        """(assets, len(t_s), sensors) at the given times."""
        load = np.sin(2 * np.pi * t_s[None, :] / 300.0 + self.phase[:, None])  # (A, T)
        x = self.offset[:, None, :] + self.gain[:, None, :] * load[:, :, None]
        return x + self.noise[:, None, :] * self.rng.standard_normal(x.shape)


def encode(fmt: str, ts: list[int], names: list[str], block: np.ndarray) -> list[bytes]:
    """Messages for one asset: `block` is (rows, sensors)."""
    vals = np.round(block, 4)
    if fmt == "columns":
        return [orjson.dumps({"ts": ts, "values": dict(zip(names, vals.T.tolist(),
                                                             strict=True))})]
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
    """Publish for `seconds` of wall time, paced to the wall clock; report what was sent."""
    if fmt not in PAYLOAD_FORMATS:
        raise ValueError(f"unknown payload layout {fmt!r}; use one of {list(PAYLOAD_FORMATS)}")
    ids = [f"{prefix}{i}" for i in range(n_assets)]
    topics = [f"plant/{site}/{a}/telemetry" for a in ids]
    names = [f"s{i}" for i in range(n_sensors)]
    bank = SignalBank(n_assets, n_sensors, seed)
    client = connect(host, port, f"gearwatch-load-{time.time_ns() % 10**9}")
    rep = LoadReport(per_asset_samples=dict.fromkeys(ids, 0))
    period_ns = round(1e9 / rate_hz)
    batch_s = batch_rows / rate_hz
    t0_wall = time.monotonic()
    t0_ns = time.time_ns()
    k = 0
    infos: list[mqtt.MQTTMessageInfo] = []
    try:
        while True:
            due = t0_wall + (k + 1) * batch_s  # a batch is sent once its last row has happened
            now = time.monotonic()
            if due > t0_wall + seconds:
                break
            if due > now:
                time.sleep(due - now)
            else:
                rep.late_batches += 1
                rep.max_lag_s = max(rep.max_lag_s, now - due)
            first = k * batch_rows
            ts_ns = [t0_ns + (first + j + 1) * period_ns for j in range(batch_rows)]
            t_s = (np.array(ts_ns) - t0_ns) / 1e9
            data = bank.rows(t_s)
            if fault_assets and fault_at_s is not None and t_s[-1] >= fault_at_s:
                hit = t_s >= fault_at_s
                data[:fault_assets, hit, 0] += fault_size * bank.gain[:fault_assets, None, 0]
                if rep.fault_ts_ns is None:
                    rep.fault_ts_ns = ts_ns[int(np.argmax(hit))]
            for i, topic in enumerate(topics):
                for payload in encode(fmt, ts_ns, names, data[i]):
                    info = client.publish(topic, payload, qos=qos)
                    if qos:
                        infos.append(info)
                    rep.messages += 1
                rep.per_asset_samples[ids[i]] += batch_rows * n_sensors
            rep.samples += n_assets * batch_rows * n_sensors
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
