"""One set of pump rows through every input path: the same framed rows, the same scores.

Two pumps, sixty ticks of `PumpFleet` (fixed seed), stamped on a one-second grid, go to the
agent through real Mosquitto as `json` (a row per message), `json_batch` (ten ticks of both
pumps per message), `json_columns` (fifteen ticks of one pump per message), `value` (a topic
per sensor) and Sparkplug B (NBIRTH, DBIRTH with aliases, DDATA by alias), and through the
pump simulator's Modbus TCP server.  Each path is received by the agent's own source for that
input (`MqttSource` with the decoder `mqtt.format` selects, `ModbusSource`), and what it
delivers is framed and scored by the agent's `Pipeline` built from the same config.

What must hold, against the `json` path (which frames exactly the generated rows):

- the same samples (asset, sensor, timestamp, value), bit for bit: orjson and protobuf
  doubles carry a float exactly;
- fed in arrival order, as `Agent._handle` does (ingest a delivery, advance), the same framed
  rows (asset, tick, values): framing does not depend on how samples were batched;
- fed one tick at a time (a live stream's cadence), the same detector scores.  Scores are
  compared at that cadence because the detector scores all rows of one `advance` against
  its state before the call, so a message carrying many ticks of a pump (json_batch,
  json_columns) is scored differently from the same ticks arriving one by one; for the
  formats that carry one tick per message the arrival-order scores are compared as well.
- Modbus: values to the precision of the register map (float32, or int16 times 0.01 / 0.1),
  and exactly the rows and scores the same detector gives the register-quantized rows.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import orjson
import paho.mqtt.client as mqtt
import pytest

from edge_agent.assets import AssetRegistry
from edge_agent.bad_input import BadInputReporter
from edge_agent.batch import SampleBatch
from edge_agent.config import AgentConfig, parse_config
from edge_agent.metrics import AgentMetrics
from edge_agent.pipeline import Pipeline
from edge_agent.runner import wait_until
from edge_agent.sources.modbus import ModbusSource
from edge_agent.sources.modbus_config import ModbusDeviceConfig
from edge_agent.sources.mqtt import MqttSource
from edge_agent.sources.mqtt_connection import MqttConnection
from edge_agent.sources.payloads import DecodeContext
from edge_agent.sources.sparkplug import SparkplugDecoder
from edge_agent.sources.sparkplug_proto import DOUBLE, UINT64, Payload
from gearwatch.localservers import LocalServer
from simulators.mqtt_publisher import connect
from simulators.pump import SENSORS, PumpFleet
from simulators.pump_modbus import PUMP_MAP, PumpModbusSim
from tests.inputs_support import free_port, pump_modbus_config

pytestmark = pytest.mark.integration

IDS = ["pump-1", "pump-2"]
SEED = 21
TICKS = 60
P_NS = 1_000_000_000  # the centrifugal_pump class: one row per second
N_SAMPLES = TICKS * len(IDS) * len(SENSORS)
DRIVES = {"drive-1": "pump-1", "drive-2": "pump-2"}  # Sparkplug device id -> asset


@dataclass(frozen=True)
class Generated:
    t0: int  # tick 0, on the grid, two minutes ago
    rows: np.ndarray  # (TICKS, assets, sensors)

    def ts(self, k: int) -> int:
        return self.t0 + k * P_NS


@pytest.fixture(scope="module")
def gen() -> Generated:
    fleet = PumpFleet(IDS, seed=SEED, dt_s=1.0)
    rows = np.stack([fleet.step() for _ in range(TICKS)])
    return Generated((time.time_ns() // P_NS - 2 * TICKS) * P_NS, rows)


def config(mqtt_port: int = 1883, fmt: str = "json", topics: list[str] | None = None,
           template: str = "plant/{site}/{asset}/telemetry") -> AgentConfig:
    return parse_config({
        "agent": {"site": "test"},
        "mqtt": {"port": mqtt_port, "client_id": f"same-rows-{fmt}-{time.time_ns()}",
                 "format": fmt, "topics": topics or ["plant/test/+/telemetry"],
                 "topic_template": template, "session_expiry_s": 0},
        "scoring": {"warmup_rows": 10, "calibration_rows": 20},
        "assets": [{"id": a, "class": "centrifugal_pump"} for a in IDS],
        "sparkplug": {"device_assets": DRIVES,
                      "metric_sensors": {f"Pump/{n}": n for n in SENSORS}},
    })


# -- what each path puts on the wire ------------------------------------------------------------

Messages = list[tuple[str, bytes]]


def _values(row: np.ndarray) -> dict[str, float]:
    return dict(zip(SENSORS, row.tolist(), strict=True))


def json_messages(g: Generated) -> Messages:
    return [(f"plant/test/{a}/telemetry",
             orjson.dumps({"ts": g.ts(k), "values": _values(g.rows[k, i])}))
            for k in range(TICKS) for i, a in enumerate(IDS)]


def json_batch_messages(g: Generated, per_message: int = 10) -> Messages:
    """A gateway's batches: `per_message` ticks of both pumps, each row naming its asset."""
    return [("plant/test/gateway/telemetry", orjson.dumps({"rows": [
        {"asset": a, "ts": g.ts(k), "values": _values(g.rows[k, i])}
        for k in range(k0, k0 + per_message) for i, a in enumerate(IDS)]}))
        for k0 in range(0, TICKS, per_message)]


def json_columns_messages(g: Generated, per_message: int = 15) -> Messages:
    out: Messages = []
    for k0 in range(0, TICKS, per_message):
        ks = range(k0, k0 + per_message)
        for i, a in enumerate(IDS):
            out.append((f"plant/test/{a}/telemetry", orjson.dumps({
                "asset": a, "ts": [g.ts(k) for k in ks],
                "values": {s: g.rows[k0:k0 + per_message, i, j].tolist()
                           for j, s in enumerate(SENSORS)}})))
    return out


def value_messages(g: Generated) -> Messages:
    return [(f"plant/test/{a}/{s}",
             orjson.dumps({"ts": g.ts(k), "value": float(g.rows[k, i, j])}))
            for k in range(TICKS) for i, a in enumerate(IDS) for j, s in enumerate(SENSORS)]


def sparkplug_messages(g: Generated) -> Messages:
    """Edge node gw1 with a drive per pump: NBIRTH, a DBIRTH per drive carrying tick 0 and
    the metric aliases, then a DDATA per drive and tick by alias only.  Sparkplug stamps in
    ms, which the one-second grid fits exactly."""
    out: list[tuple[str, Payload]] = []

    def message(kind: str, device: str | None, k: int) -> Payload:
        p = Payload(timestamp=g.ts(k) // 1_000_000, seq=len(out) % 256)
        out.append((f"spBv1.0/plant/{kind}/gw1" + (f"/{device}" if device else ""), p))
        return p

    message("NBIRTH", None, 0).metrics.add(name="bdSeq", datatype=UINT64, long_value=0)
    for d, asset in DRIVES.items():
        i = IDS.index(asset)
        birth = message("DBIRTH", d, 0)
        for j, name in enumerate(SENSORS):
            birth.metrics.add(name=f"Pump/{name}", alias=100 * (i + 1) + j, datatype=DOUBLE,
                              double_value=float(g.rows[0, i, j]))
    for k in range(1, TICKS):
        for d, asset in DRIVES.items():
            i = IDS.index(asset)
            data = message("DDATA", d, k)
            for j in range(len(SENSORS)):
                data.metrics.add(alias=100 * (i + 1) + j, datatype=DOUBLE,
                                 double_value=float(g.rows[k, i, j]))
    return [(t, p.SerializeToString()) for t, p in out]


@dataclass(frozen=True)
class MqttPath:
    fmt: str
    messages: Callable[[Generated], Messages]
    topics: list[str]
    template: str = "plant/{site}/{asset}/telemetry"
    # a message the source receives but that carries no sample: proves the subscription;
    # each one delivered is this many rejects
    probe: tuple[str, bytes] = ("plant/test/no-such-pump/telemetry", b"{}")
    probe_rejects: int = 1
    one_tick_per_message: bool = True


PATHS = {
    "json": MqttPath("json", json_messages, ["plant/test/+/telemetry"]),
    "json_batch": MqttPath("json_batch", json_batch_messages, ["plant/test/+/telemetry"],
                           one_tick_per_message=False),
    "json_columns": MqttPath("json_columns", json_columns_messages, ["plant/test/+/telemetry"],
                             one_tick_per_message=False),
    "value": MqttPath("value", value_messages, ["plant/test/+/+"], "plant/{site}/{asset}/{sensor}",
                      probe=("plant/test/no-such-pump/speed_rpm", b"1")),
    "sparkplug_b": MqttPath("sparkplug_b", sparkplug_messages, ["spBv1.0/plant/#"],
                            probe=("spBv1.0/plant/NCMD/probe", b""), probe_rejects=0),
}


# -- the agent's receiving side -----------------------------------------------------------------

def bad_inputs(metrics: AgentMetrics) -> float:
    return sum(s.value for m in metrics.registry.collect() if m.name == "gearwatch_bad_input"
               for s in m.samples if s.name == "gearwatch_bad_input_total")


class AgentMqttInput:
    """The agent's MQTT input for one `mqtt.format`, wired as `Agent.__init__` wires it; what
    it emits is kept in arrival order (and acknowledged: nothing durable to wait for)."""

    def __init__(self, cfg: AgentConfig) -> None:
        self.registry = AssetRegistry(cfg.asset_list())
        self.metrics = AgentMetrics()
        self.conn = MqttConnection(cfg.mqtt)
        ctx = DecodeContext(self.registry, cfg.mqtt.topic_template, cfg.mqtt.timestamp,
                            cfg.mqtt.max_payload_bytes, cfg.framer.max_future_s,
                            cfg.framer.max_past_s)
        decoder = SparkplugDecoder(cfg.sparkplug) if cfg.mqtt.format == "sparkplug_b" else None
        self.source = MqttSource(self.conn, ctx, BadInputReporter(self.metrics), self.metrics,
                                 decoder=decoder)
        self.lock = threading.Lock()
        self.empty_deliveries = 0  # the probes
        self.batches: list[SampleBatch] = []
        self.source.attach(self._emit)
        self.conn.start()

    def _emit(self, batch: SampleBatch) -> None:
        batch.ack()
        with self.lock:
            if len(batch):
                self.batches.append(batch)
            else:
                self.empty_deliveries += 1

    def samples(self) -> int:
        with self.lock:
            return sum(len(b) for b in self.batches)

    def close(self) -> None:
        self.conn.stop()


def publish_all(client: mqtt.Client, messages: Messages) -> None:
    infos = [client.publish(t, p, qos=1) for t, p in messages]
    for info in infos:
        info.wait_for_publish(timeout=10)


def deliver(port: int, path: MqttPath, g: Generated) -> tuple[AgentConfig, list[SampleBatch]]:
    """Publish the rows through Mosquitto in `path`'s format; what the agent's source got."""
    cfg = config(port, path.fmt, path.topics, path.template)
    rx = AgentMqttInput(cfg)
    pub = connect("127.0.0.1", port, f"same-rows-pub-{time.time_ns()}")
    try:
        assert rx.conn.connected.wait(10), "the agent's input did not connect"
        deadline = time.monotonic() + 10
        while rx.empty_deliveries == 0:  # the subscription is live once a probe comes back
            assert time.monotonic() < deadline, "the agent's input never subscribed"
            publish_all(pub, [path.probe])
            time.sleep(0.05)
        publish_all(pub, path.messages(g))
        wait_until(lambda: rx.samples() >= N_SAMPLES, 15, f"{path.fmt}: every sample")
    finally:
        pub.disconnect()
        pub.loop_stop()
        rx.close()
    # probes still in flight arrived before the rows (one publisher, QoS 1: in order)
    assert bad_inputs(rx.metrics) == rx.empty_deliveries * path.probe_rejects, \
        f"{path.fmt}: samples were rejected"
    assert rx.samples() == N_SAMPLES
    return cfg, list(rx.batches)


# -- the agent's middle: frame and score ---------------------------------------------------------

@dataclass(frozen=True)
class Framed:
    asset: np.ndarray
    ts: np.ndarray
    values: np.ndarray  # (rows, sensors)
    score: np.ndarray  # fused


def frame(cfg: AgentConfig, feeds: list[SampleBatch]) -> Framed:
    """Feed `feeds` in order to a fresh `Pipeline`, each as `Agent._handle` handles a batch:
    ingest, then advance.  The clock stands still while feeding, so ticks are emitted on
    data alone; then it moves just far enough for the wall-clock watermark to emit the last
    tick: a lateness plus the asset's usual arrival step after the newest sample (one period
    for a row per message, the batch's span for batched payloads; see `ClassFramer.span`)."""
    pipe = Pipeline.from_config(cfg, AssetRegistry(cfg.asset_list()))
    wall = 10**15
    outs = []
    for b in feeds:
        pipe.ingest(b, wall)
        outs += pipe.advance(wall)
    quiet = max(int(cp.framer.lateness + cp.framer.span.max()) for cp in pipe.classes.values())
    outs += pipe.advance(wall + quiet)
    asset = np.concatenate([o.rows.asset for o in outs])
    ts = np.concatenate([o.rows.ts_ns for o in outs])
    order = np.lexsort((ts, asset))
    return Framed(asset[order], ts[order],
                  np.concatenate([o.rows.values for o in outs])[order],
                  np.concatenate([o.fused for o in outs])[order])


def per_tick(batches: list[SampleBatch]) -> list[SampleBatch]:
    """The same samples regrouped as a live stream delivers them: one batch per tick."""
    b = SampleBatch.concat(batches)
    return [b.take(b.ts_ns == t) for t in np.unique(b.ts_ns)]


def sorted_samples(batches: list[SampleBatch]) -> tuple[np.ndarray, np.ndarray]:
    """(asset, sensor, ts) keys and values, sorted, duplicates (a re-read) dropped."""
    b = SampleBatch.concat(batches)
    keys = np.stack([b.asset.astype(np.int64), b.sensor.astype(np.int64), b.ts_ns], axis=1)
    keys, first = np.unique(keys, axis=0, return_index=True)
    return keys, b.value[first]


def assert_same_rows(got: Framed, want: Framed, what: str) -> None:
    np.testing.assert_array_equal(got.asset, want.asset, err_msg=f"{what}: assets")
    np.testing.assert_array_equal(got.ts, want.ts, err_msg=f"{what}: ticks")
    np.testing.assert_array_equal(got.values, want.values, err_msg=f"{what}: values")


@dataclass(frozen=True)
class Reference:
    samples: tuple[np.ndarray, np.ndarray]
    arrived: Framed
    live: Framed


@pytest.fixture(scope="module")
def reference(mosquitto: LocalServer, gen: Generated) -> Reference:
    """The `json` path, one row per message: the baseline every other path must match."""
    cfg, batches = deliver(mosquitto.port, PATHS["json"], gen)
    return Reference(sorted_samples(batches), frame(cfg, batches), frame(cfg, per_tick(batches)))


def test_json_path_frames_exactly_the_generated_rows(gen: Generated,
                                                     reference: Reference) -> None:
    want_asset = np.repeat(np.arange(len(IDS)), TICKS)
    want_ts = np.tile(gen.t0 + np.arange(TICKS) * P_NS, len(IDS))
    want_values = gen.rows.transpose(1, 0, 2).reshape(-1, len(SENSORS))
    assert_same_rows(reference.arrived, Framed(want_asset, want_ts, want_values,
                                               np.empty(0)), "json")
    # one tick per message: arrival order is a live stream's cadence, scores and all
    assert_same_rows(reference.live, reference.arrived, "json per tick")
    np.testing.assert_array_equal(reference.live.score, reference.arrived.score)
    # the detector warmed up and calibrated on these rows: the comparison has teeth
    scored = np.isfinite(reference.live.score).reshape(len(IDS), TICKS)
    assert scored[:, -20:].all(), scored.sum(axis=1)


@pytest.mark.parametrize("fmt", ["json_batch", "json_columns", "value", "sparkplug_b"])
def test_mqtt_path_feeds_the_json_rows_into_the_same_detector(
    fmt: str, mosquitto: LocalServer, gen: Generated, reference: Reference
) -> None:
    path = PATHS[fmt]
    cfg, batches = deliver(mosquitto.port, path, gen)
    keys, values = sorted_samples(batches)
    np.testing.assert_array_equal(keys, reference.samples[0], err_msg=f"{fmt}: sample keys")
    np.testing.assert_array_equal(values, reference.samples[1], err_msg=f"{fmt}: values")
    arrived = frame(cfg, batches)
    assert_same_rows(arrived, reference.arrived, f"{fmt} in arrival order")
    live = frame(cfg, per_tick(batches))
    assert_same_rows(live, reference.live, f"{fmt} per tick")
    np.testing.assert_array_equal(live.score, reference.live.score, err_msg=f"{fmt}: scores")
    if path.one_tick_per_message:
        np.testing.assert_array_equal(arrived.score, reference.arrived.score,
                                      err_msg=f"{fmt}: scores in arrival order")


# -- Modbus TCP ----------------------------------------------------------------------------------

def register_quantized(rows: np.ndarray) -> np.ndarray:
    """What the pump register map carries of each sensor: float32, or int16 times its scale."""
    q = rows.copy()
    for e in PUMP_MAP:
        if e.sensor is None:
            continue
        j = SENSORS.index(e.sensor)
        if e.type == "float32":
            q[..., j] = rows[..., j].astype(np.float32).astype(np.float64)
        elif e.type == "int16":
            q[..., j] = np.clip(np.round(rows[..., j] / e.scale), -32768, 32767) * e.scale
    return q


def register_tolerance() -> np.ndarray:
    """Per sensor: the absolute error the encoding may add (half a step of int16 registers)."""
    tol = np.zeros(len(SENSORS))
    for e in PUMP_MAP:
        if e.sensor is not None and e.type == "int16":
            tol[SENSORS.index(e.sensor)] = e.scale / 2 * (1 + 1e-9)
    return tol


def assert_within(got: np.ndarray, want: np.ndarray, atol: np.ndarray, what: str) -> None:
    """|got - want| within `atol` (broadcast) plus float32's relative rounding."""
    err = np.abs(got - want)
    bound = atol + 2.0**-24 * np.abs(want)
    assert (err <= bound).all(), f"modbus {what}: worst excess {np.max(err - bound)}"


def samples_of(g: Generated, rows: np.ndarray) -> list[SampleBatch]:
    """Rows as a live stream's per-tick batches of every sensor."""
    n_a, n_s = len(IDS), len(SENSORS)
    asset = np.repeat(np.arange(n_a, dtype=np.int32), n_s)
    sensor = np.tile(np.arange(n_s, dtype=np.int32), n_a)
    return [SampleBatch(asset, sensor, np.full(n_a * n_s, g.ts(k), np.int64),
                        rows[k].reshape(-1).copy()) for k in range(TICKS)]


async def test_modbus_path_feeds_the_same_rows_to_register_precision(
    gen: Generated, reference: Reference
) -> None:
    sim = PumpModbusSim(IDS, seed=SEED, dt_s=1.0)  # the same fleet: the same rows
    np.testing.assert_array_equal(sim.step(), gen.rows[0])
    port = free_port()
    await sim.start_tcp(port=port)
    cfg = config()
    registry = AssetRegistry(cfg.asset_list())
    metrics = AgentMetrics()
    tick = 0
    batches: list[SampleBatch] = []
    answered: set[int] = set()
    done = asyncio.Event()

    def emit(batch: SampleBatch) -> None:
        """A poll answered by both units read tick k: serve tick k + 1 to the next poll."""
        nonlocal tick
        if tick >= TICKS:
            return
        batches.append(batch)
        answered.update(batch.asset.tolist())
        if answered >= {0, 1}:
            answered.clear()
            tick += 1
            if tick == TICKS:
                done.set()
            else:
                sim.step()

    dev = ModbusDeviceConfig.model_validate(pump_modbus_config(port=port, poll_interval_s=0.01))
    # every read is stamped by the source's clock: here the tick the registers hold
    source = ModbusSource(dev, registry, BadInputReporter(metrics), metrics,
                          clock=lambda: gen.ts(tick))
    task = asyncio.create_task(source.run(emit))
    try:
        await asyncio.wait_for(done.wait(), 20)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await sim.stop()
    assert bad_inputs(metrics) == 0
    np.testing.assert_array_equal(sim.rows, gen.rows[-1])

    quantized = register_quantized(gen.rows)
    keys, values = sorted_samples(batches)
    np.testing.assert_array_equal(keys, reference.samples[0], err_msg="modbus: sample keys")
    assert_within(values, reference.samples[1], register_tolerance()[keys[:, 1]], "samples")
    arrived = frame(cfg, batches)
    np.testing.assert_array_equal(arrived.asset, reference.arrived.asset)
    np.testing.assert_array_equal(arrived.ts, reference.arrived.ts)
    assert_within(arrived.values, reference.arrived.values, register_tolerance(), "rows")
    # exactly the rows, and the scores, of the same detector fed what the registers carry
    want = frame(cfg, samples_of(gen, quantized))
    assert_same_rows(arrived, want, "modbus")
    live = frame(cfg, per_tick(batches))
    assert_same_rows(live, want, "modbus per tick")
    np.testing.assert_array_equal(live.score, want.score, err_msg="modbus: scores")
    np.testing.assert_array_equal(np.isfinite(live.score), np.isfinite(reference.live.score))
