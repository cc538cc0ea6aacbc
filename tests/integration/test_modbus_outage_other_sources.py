"""A Modbus outage mid-run: its pumps go stale and recover, the MQTT pump never misses a row.

One real agent (in-process, on the test's event loop) reads pump-1 and pump-2 over Modbus TCP
from the pump simulator and pump-3 over MQTT from a publisher thread running at real time
with timestamps on the tick grid; it writes to a real InfluxDB.  Mid-run the Modbus server
goes away for a few seconds and comes back.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable

import numpy as np
import orjson
import paho.mqtt.client as mqtt
import pytest

from edge_agent.config import AgentConfig
from edge_agent.recent import RecentRows
from edge_agent.service import Agent
from gearwatch.localservers import LocalServer
from simulators.mqtt_publisher import connect
from simulators.pump import SENSORS, PumpFleet
from simulators.pump_modbus import PumpModbusSim
from tests.helpers import agent_config, influx_query
from tests.inputs_support import counter, free_port, pump_modbus_config

pytestmark = pytest.mark.integration

PERIOD_S = 0.1
P_NS = round(PERIOD_S * 1e9)
# A tick is emitted once data is this many periods past it.  Generous, so that a publisher
# thread starved of CPU for up to about a second (shared CI machines) does not let the
# framer's wall-clock watermark emit a tick before its sample arrived.
LATENESS_PERIODS = 10
# a sensor with no fresh value for this long is NaN; also the Modbus read timeout.  Both well
# above the sample period, so a CPU stall of the shared test machine is not an outage
STALE_S = 1.0
OUTAGE_S = 3.0
DEVICES = ("pump-skid/1", "pump-skid/2")


def config(mqtt_port: int, influx_url: str, db: str, modbus_port: int) -> AgentConfig:
    dev = pump_modbus_config(port=modbus_port, poll_interval_s=0.05, timeout_s=STALE_S, retries=0,
                             reconnect_backoff_s=0.05, reconnect_backoff_max_s=0.3)
    return agent_config(
        mqtt_port, influx_url, db,
        mqtt={"session_expiry_s": 0},
        metrics={"enabled": False},
        console={"enabled": False},
        framer={"lateness_periods": LATENESS_PERIODS},
        scoring={"warmup_rows": 10, "calibration_rows": 20},
        # the pump's sensors on a fast clock, so the detector is calibrated within seconds
        asset_classes=[{"name": "fast_pump", "sample_period_s": PERIOD_S,
                        "sensors": [{"name": n, "stale_after_s": STALE_S} for n in SENSORS]}],
        assets=[{"id": f"pump-{i}", "class": "fast_pump"} for i in (1, 2, 3)],
        modbus=[dev],
    )


class TickPublisher(threading.Thread):
    """Publishes one pump over MQTT (JSON, QoS 1) at real time, one row per tick, each stamped
    with its tick time (a multiple of the period), never before that time has come."""

    def __init__(self, port: int, asset: str, seed: int) -> None:
        super().__init__(daemon=True, name=f"publisher-{asset}")
        self.port = port
        self.topic = f"plant/test/{asset}/telemetry"
        self.fleet = PumpFleet([asset], seed=seed, dt_s=PERIOD_S)
        self.sent_ts: list[int] = []
        self.sent_rows: list[np.ndarray] = []
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            client = connect("127.0.0.1", self.port, f"tick-publisher-{time.time_ns()}")
        except BaseException as e:
            self.error = e
            return
        infos: list[mqtt.MQTTMessageInfo] = []
        t = (time.time_ns() // P_NS + 1) * P_NS
        try:
            while not self.stopping.is_set():
                wait_s = (t - time.time_ns()) / 1e9
                if wait_s > 0 and self.stopping.wait(wait_s):
                    break
                row = self.fleet.step()[0]
                payload = orjson.dumps({"ts": t, "values": dict(zip(SENSORS, row.tolist(),
                                                                    strict=True))})
                infos.append(client.publish(self.topic, payload, qos=1))
                with self.lock:
                    self.sent_ts.append(t)
                    self.sent_rows.append(row.copy())
                t += P_NS
            for info in infos:
                info.wait_for_publish(timeout=10)
        except BaseException as e:
            self.error = e
        finally:
            client.disconnect()
            client.loop_stop()

    def sent(self) -> tuple[np.ndarray, np.ndarray]:
        with self.lock:
            return np.array(self.sent_ts, np.int64), np.array(self.sent_rows)

    def finish(self) -> None:
        self.stopping.set()
        self.join(timeout=15)
        assert not self.is_alive(), "publisher did not stop"
        if self.error is not None:
            raise self.error


async def until(cond: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll `cond` without blocking the agent, which shares this event loop."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not cond():
        if loop.time() > end:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.05)


def framed(recent: RecentRows, a: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every row the agent framed for local asset `a`: (ts, values, fused score)."""
    return recent.window(a, 0, np.iinfo(np.int64).max)


async def test_modbus_outage_makes_its_pumps_stale_and_mqtt_pump_never_misses_a_row(
    mosquitto: LocalServer, influxdb: LocalServer, db_name: str
) -> None:
    modbus_port = free_port()
    sim = PumpModbusSim(["pump-1", "pump-2"], seed=11, dt_s=PERIOD_S)
    sim.step()
    await sim.start_tcp(port=modbus_port)
    physics = asyncio.create_task(sim.run(speedup=1.0))
    agent = Agent(config(mosquitto.port, influxdb.url, db_name, modbus_port))
    local = {a: int(agent.registry.local_index[info.index])
             for a in ("pump-1", "pump-2", "pump-3") if (info := agent.registry.get(a))}
    recent = agent.desk.recent["fast_pump"]
    run = asyncio.create_task(agent.run())
    pub = TickPublisher(mosquitto.port, "pump-3", seed=5)
    seen: set[tuple[str, str]] = set()  # (device, state) the agent has been in, sampled

    def states_are(state: str) -> bool:
        seen.update(agent.state.source_states.items())
        return all(agent.state.source_states.get(d) == state for d in DEVICES)

    def last_row(asset: str) -> np.ndarray | None:
        _, vals, _ = framed(recent, local[asset])
        return vals[-1] if len(vals) else None

    def scored(asset: str) -> bool:
        _, _, score = framed(recent, local[asset])
        return len(score) > 0 and bool(np.isfinite(score[-1]))

    try:
        await asyncio.wait_for(agent.ready.wait(), 10)
        assert agent.mqtt is not None
        assert await asyncio.to_thread(agent.mqtt.connected.wait, 10)
        # the agent's subscription is live once a probe comes back as a reject; only then
        # starts pump-3, so that every row it publishes must reach the agent
        probe = connect("127.0.0.1", mosquitto.port, f"probe-{time.time_ns()}")
        try:
            for _ in range(50):
                probe.publish("plant/test/no-such-pump/telemetry", b"{}", qos=1)
                with contextlib.suppress(TimeoutError):
                    await until(lambda: counter(agent.metrics, "gearwatch_bad_input_total",
                                                source="mqtt", reason="unknown_asset") > 0,
                                0.2, "probe")
                    break
        finally:
            probe.disconnect()
            probe.loop_stop()
        assert counter(agent.metrics, "gearwatch_bad_input_total", source="mqtt",
                       reason="unknown_asset") > 0, "the agent never subscribed"
        pub.start()

        # every pump scored: the detector is warmed up and calibrated on all three
        modbus = agent.inputs[0]
        await until(lambda: all(scored(a) for a in local), 30, "all pumps to be scored")
        assert all(modbus.health()[d]["state"] == "ok" for d in DEVICES)

        # -- the Modbus server goes away --------------------------------------------------
        await sim.stop()
        stopped_ns = time.time_ns()
        await until(lambda: states_are("lost"), 10, "the Modbus units to be lost")
        assert agent.pipeline.suppression.lost == {"pump-1", "pump-2"}
        await until(lambda: all((r := last_row(a)) is not None and bool(np.isnan(r).all())
                                for a in ("pump-1", "pump-2")), 10,
                    "pump-1 and pump-2 rows to go stale (NaN)")
        # the outage lasts a while (this sleep is its duration, not a wait for a result)
        await asyncio.sleep(max(0.0, OUTAGE_S - (time.time_ns() - stopped_ns) / 1e9))
        restart_ns = time.time_ns()
        await sim.start_tcp(port=modbus_port)

        # -- it comes back ---------------------------------------------------------------
        await until(lambda: states_are("ok"), 10, "the Modbus units to answer again")
        assert agent.pipeline.suppression.lost == set()
        await until(lambda: all((r := last_row(a)) is not None and bool(np.isfinite(r).all())
                                for a in ("pump-1", "pump-2")), 10,
                    "pump-1 and pump-2 rows to have values again")
        await until(lambda: all(scored(a) for a in local), 10, "all pumps scored again")
        pub.finish()
        sent_ts, sent_rows = pub.sent()
        await until(lambda: len(framed(recent, local["pump-3"])[0]) > 0
                    and framed(recent, local["pump-3"])[0][-1] >= sent_ts[-1], 15,
                    "pump-3's last published tick to be framed")
    finally:
        pub.stopping.set()
        agent.stop()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(run, 30)
        physics.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await physics
        await sim.stop()

    # the Modbus units went lost once each and came back
    assert {(d, s) for d in DEVICES for s in ("ok", "lost")} <= seen
    for d in DEVICES:
        assert counter(agent.metrics, "gearwatch_source_device_lost_total",
                       source="modbus:pump-skid", device=d) >= 1
    assert counter(agent.metrics, "gearwatch_stale_values_total", asset_class="fast_pump") > 0

    # pump-1/2: a row every tick throughout (the framer keeps ticking on the wall clock),
    # values before the outage, all NaN once their staleness limit passed, values again after
    for asset in ("pump-1", "pump-2"):
        ts, vals, _ = framed(recent, local[asset])
        assert (np.diff(ts) == P_NS).all(), f"{asset}: ticks missing"
        before = (ts > stopped_ns - 1.0e9) & (ts < stopped_ns - 0.5e9)
        during = (ts > stopped_ns + (STALE_S + 0.3) * 1e9) & (ts < restart_ns - 0.1e9)
        assert before.sum() >= 4 and np.isfinite(vals[before]).all(), asset
        assert during.sum() >= 10 and np.isnan(vals[during]).all(), asset
        assert np.isfinite(vals[-3:]).all() and ts[-3] > restart_ns, asset

    # pump-3: one framed row for every tick it published, outage included, holding exactly
    # the published values (orjson round-trips floats), and the outage window is inside
    ts, vals, score = framed(recent, local["pump-3"])
    assert ts.tolist() == sent_ts.tolist()
    np.testing.assert_array_equal(vals, sent_rows)
    assert ts[0] < stopped_ns - 2e9 and ts[-1] > restart_ns + 0.5e9
    # scored on every tick from calibration on, with no gap during the outage
    fin = np.isfinite(score)
    first = int(np.argmax(fin))
    assert fin[first:].all(), f"pump-3 unscored at ticks {ts[first:][~fin[first:]].tolist()}"
    assert ts[first] < stopped_ns

    # InfluxDB: pump-3's telemetry is exactly what was published; its anomaly_score points
    # are exactly the scored ticks: contiguous at the sample period through the outage
    fields = ",".join(f'"{s}"' for s in SENSORS)
    [tel] = influx_query(influxdb.url, db_name,
                         f"SELECT {fields} FROM telemetry WHERE asset = 'pump-3'")
    assert [v[0] for v in tel["values"]] == sent_ts.tolist()
    np.testing.assert_array_equal(np.array([v[1:] for v in tel["values"]], float), sent_rows)
    [sc] = influx_query(influxdb.url, db_name,
                        "SELECT score FROM anomaly_score WHERE asset = 'pump-3'")
    score_ts = np.array([v[0] for v in sc["values"]], np.int64)
    assert score_ts.tolist() == ts[first:].tolist()
    assert (np.diff(score_ts) == P_NS).all()
    np.testing.assert_array_equal(np.array([v[1] for v in sc["values"]]), score[first:])
    # pump-1/2's telemetry has the outage as a hole: nothing was read while the server was down
    for asset in ("pump-1", "pump-2"):
        [t12] = influx_query(influxdb.url, db_name,
                             f"SELECT speed_rpm FROM telemetry WHERE asset = '{asset}'")
        t = np.array([v[0] for v in t12["values"]], np.int64)
        assert ((t > stopped_ns + 0.5e9) & (t < restart_ns)).sum() == 0
        assert (t < stopped_ns).sum() > 20 and (t > restart_ns).sum() > 0
