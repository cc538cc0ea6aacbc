"""The spool and the InfluxDB answers on real processes: Mosquitto, InfluxDB 1.x stopped and
started under load, a spool filled past its limit, a real 413 (small max-body-size), a real
field-type conflict, and Retry-After from a stand-in for a cloud / overloaded InfluxDB.

Every sample the simulator sent is looked up by (asset, timestamp) in InfluxDB."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from edge_agent.config import InfluxSection
from edge_agent.metrics import AgentMetrics
from edge_agent.service import Agent
from edge_agent.sinks.influx import InfluxSink, InfluxV1Writer
from edge_agent.store import Store
from gearwatch import localservers as ls
from simulators.mqtt_publisher import SendReport, publish_fleet
from simulators.pump import SENSORS
from tests.helpers import AgentThread, Collector, agent_config, influx_query, wait_until

pytestmark = pytest.mark.integration

ASSETS = ["pump-1", "pump-2", "pump-3"]
NO_SCORES = {"warmup_rows": 1_000_000}  # telemetry only: one point per message sent


def sent_keys(rep: SendReport, assets: list[str] = ASSETS) -> set[tuple[str, int]]:
    steps = rep.messages // len(assets)
    return {(a, rep.t0_ns + k * 1_000_000_000) for a in assets for k in range(1, steps + 1)}


def stored_keys(url: str, db: str) -> set[tuple[str, int]]:
    """(asset, ts) of every telemetry point that holds all the pump's sensors."""
    out: set[tuple[str, int]] = set()
    cols = ", ".join(f'"{s}"' for s in SENSORS)
    try:
        series = influx_query(url, db, f"SELECT {cols} FROM telemetry GROUP BY asset")
    except AssertionError as e:
        if "database not found" in str(e):  # the agent has not got to create it yet
            return out
        raise
    for s in series:
        asset = s["tags"]["asset"]
        out.update((asset, int(v[0])) for v in s["values"] if all(x is not None for x in v))
    return out


def spool_segments(agent: Agent) -> list[Path]:
    assert agent.spool is not None
    return sorted(agent.spool.dir.glob("*.seg"))


def metric(agent: Agent, name: str, **labels: str) -> float:
    v = agent.metrics.registry.get_sample_value(name, labels)
    return 0.0 if v is None else v


def test_influxdb_outage_under_load_the_spool_drains_nothing_missing(
    mosquitto: ls.LocalServer, tmp_path: Path, db_name: str
) -> None:
    influx = ls.influxdb(tmp_path, name="influx-outage").start()
    try:
        cfg = agent_config(
            mosquitto.port, influx.url, db_name, scoring=NO_SCORES,
            influx={"max_backoff_s": 0.5, "batch_points": 500},
            # little kept in memory, so the catch-up is read back from disk
            spool={"segment_bytes": "64KiB", "max_bytes": "64MiB", "memory_points": 300,
                   "replay_points_per_s": 5000},
        )
        with AgentThread(cfg) as at:
            agent = at.agent
            assert agent is not None and agent.influx is not None and agent.spool is not None
            box: dict[str, SendReport] = {}

            def publish() -> None:
                box["rep"] = publish_fleet("127.0.0.1", mosquitto.port, ASSETS, duration_s=1500,
                                           site="test", speedup=250, seed=5, qos=1)

            pub = threading.Thread(target=publish, daemon=True)
            pub.start()
            wait_until(lambda: agent.influx is not None and agent.influx.points_written > 0, 30,
                       "the first points in InfluxDB")
            influx.stop()  # under load
            pub.join(120)
            rep = box["rep"]
            wait_until(lambda: agent.state.samples >= rep.samples, 60, "the agent to take all")
            # the agent took (and acknowledged) everything: the spool holds what InfluxDB lacks
            st = agent.spool.status()
            assert st["points"] > 0 and st["segments"] > 1, st
            assert not agent.influx.healthy
            influx.start()
            wait_until(lambda: agent.spool is not None and agent.spool.status()["points"] == 0,
                       120, "the spool to drain")
            assert agent.influx.points_replayed > 0  # the backlog came back from disk
            wait_until(lambda: len(spool_segments(agent)) <= 1, 10,  # the writer deletes them
                       "delivered segments to be deleted")
            want = sent_keys(rep)
            wait_until(lambda: stored_keys(influx.url, db_name) >= want, 30,
                       "InfluxDB to hold every sample")
            assert stored_keys(influx.url, db_name) == want  # nothing missing, nothing invented
            assert metric(agent, "gearwatch_spool_dropped_points_total",
                          reason="drop_oldest") == 0
    finally:
        influx.stop()


def _full_cfg(mosquitto: ls.LocalServer, influx: ls.LocalServer, db: str,
              policy: str) -> Any:
    return agent_config(
        mosquitto.port, influx.url, db, scoring=NO_SCORES, influx={"max_backoff_s": 0.5},
        spool={"max_bytes": "1MiB", "segment_bytes": "64KiB", "memory_points": 200,
               "on_full": policy},
    )


def test_spool_full_drop_oldest_acts_and_says_so(
    mosquitto: ls.LocalServer, tmp_path: Path, db_name: str, caplog: pytest.LogCaptureFixture
) -> None:
    influx = ls.influxdb(tmp_path, name="influx-full")  # down from the start
    caplog.set_level(logging.WARNING, logger="gearwatch.spool")
    alerts = Collector(mosquitto.port, ["gearwatch/test/agent/alerts"])
    try:
        with AgentThread(_full_cfg(mosquitto, influx, db_name, "drop_oldest")) as at:
            agent = at.agent
            assert agent is not None and agent.spool is not None
            # ~9000 points of ~200 bytes: about twice what 1 MiB holds
            rep = publish_fleet("127.0.0.1", mosquitto.port, ASSETS, duration_s=3000,
                                site="test", speedup=0, seed=6, qos=1)
            wait_until(lambda: agent.state.samples >= rep.samples, 60, "the agent to take all")
            spool = agent.spool
            wait_until(lambda: agent.influx is not None and agent.influx.points_submitted
                       == spool.points_appended, 30, "the spool to take all")
            st = agent.spool.status()
            dropped = st["dropped_points"].get("drop_oldest", 0)
            assert dropped > 0 and st["full"] and st["bytes"] <= 1 << 20, st
            assert st["points"] + sum(st["dropped_points"].values()) == rep.messages
            assert metric(agent, "gearwatch_spool_dropped_points_total",
                          reason="drop_oldest") == dropped
            assert metric(agent, "gearwatch_spool_full") == 1
            wait_until(lambda: any(p["kind"] == "spool_full" for _, p in alerts.json()), 10,
                       "the spool_full alert")
            full = [r for r in caplog.records if "is full" in r.getMessage()]
            assert len(full) == 1 and "drop_oldest" in full[0].getMessage()  # once, not per batch
            influx.start()
            wait_until(lambda: agent.spool is not None and agent.spool.status()["points"] == 0,
                       60, "the spool to drain")
            wait_until(lambda: any(p["kind"] == "spool_ok" for _, p in alerts.json()), 10,
                       "the spool_ok alert")
            st = agent.spool.status()
            lost = sum(st["dropped_points"].values())
            found = stored_keys(influx.url, db_name)
            want = sent_keys(rep)
            assert found <= want and len(found) == len(want) - lost
            # the oldest went: the newest minute of every asset is all there
            newest = {(a, t) for a, t in want if t > rep.end_ns - 60_000_000_000}
            assert newest <= found
        kinds = [p["kind"] for _, p in alerts.json()]
        assert kinds.count("spool_full") == 1, kinds
    finally:
        alerts.close()
        influx.stop()


def test_spool_full_block_holds_back_and_loses_nothing(
    mosquitto: ls.LocalServer, tmp_path: Path, db_name: str
) -> None:
    influx = ls.influxdb(tmp_path, name="influx-block")  # down from the start
    alerts = Collector(mosquitto.port, ["gearwatch/test/agent/alerts"])
    try:
        with AgentThread(_full_cfg(mosquitto, influx, db_name, "block")) as at:
            agent = at.agent
            assert agent is not None and agent.spool is not None
            rep = publish_fleet("127.0.0.1", mosquitto.port, ASSETS, duration_s=3000,
                                site="test", speedup=0, seed=7, qos=1)
            wait_until(lambda: agent.spool is not None and agent.spool.status()["blocked"], 60,
                       "the spool to block")
            wait_until(lambda: any(p["kind"] == "spool_full" for _, p in alerts.json()), 10,
                       "the spool_full alert")
            assert agent.spool.status()["bytes"] <= 1 << 20
            influx.start()
            want = sent_keys(rep)
            wait_until(lambda: stored_keys(influx.url, db_name) >= want, 120,
                       "InfluxDB to hold every sample")
            assert stored_keys(influx.url, db_name) == want
            assert agent.spool.status()["dropped_points"] == {}
    finally:
        alerts.close()
        influx.stop()


# -- InfluxDB's answers ------------------------------------------------------------------------
def _run_sink(sink: InfluxSink, steps: list[tuple[list[str], Any]],
              timeout: float = 60) -> None:
    """Submit each step's lines and wait for its condition, on one running sink."""
    async def main() -> None:
        task = asyncio.create_task(sink.run())
        for lines, until in steps:
            sink.submit(lines)
            deadline = time.monotonic() + timeout
            while not until():
                assert time.monotonic() < deadline, "timed out waiting for the sink"
                await asyncio.sleep(0.02)
        await sink.close()
        await asyncio.wait_for(task, 10)
        await sink.aclose_writer()

    asyncio.run(main())


def _count(url: str, db: str, measurement: str) -> int:
    s = influx_query(url, db, f'SELECT COUNT("v") FROM "{measurement}"')
    return int(s[0]["values"][0][1]) if s else 0


def test_413_from_a_real_influxdb_splits_the_batch(tmp_path: Path, db_name: str) -> None:
    influx = ls.influxdb(tmp_path, name="influx-413", max_body_size=16384).start()
    try:
        sink = InfluxSink(InfluxV1Writer(InfluxSection(url=influx.url, database=db_name)),
                          AgentMetrics(), batch_points=2000, flush_interval_s=0.05)
        lines = [f"big,asset=pump-{i % 3},kind=test v={i}.5,w={i * 2}.25 {10**18 + i}"
                 for i in range(2000)]  # ~120 KB in one request: 413, split until it passes
        _run_sink(sink, [(lines, lambda: sink.points_written >= 2000)])
        assert _count(influx.url, db_name, "big") == 2000
        assert sink.points_dead_lettered == 0
        assert sink._write_cap * 60 <= 16384 * 2  # later writes stay at a size that passes
    finally:
        influx.stop()


def test_field_type_conflict_dead_letters_the_point_and_lets_the_rest_through(
    influxdb: ls.LocalServer, tmp_path: Path, db_name: str
) -> None:
    store = Store(tmp_path / "state")
    metrics = AgentMetrics()
    sink = InfluxSink(InfluxV1Writer(InfluxSection(url=influxdb.url, database=db_name)),
                      metrics, batch_points=1000, flush_interval_s=0.05,
                      dead_letter=store.sink_dead_letter)
    first = ["conflict,asset=pump-1 v=1.0 1000000000"]
    batch = [f"conflict,asset=pump-1 v={i}.0 {(i + 2) * 10**9}" for i in range(100)]
    bad = 'conflict,asset=pump-1 v="a string" 999000000000'
    batch.insert(37, bad)
    _run_sink(sink, [(first, lambda: sink.points_written >= 1),
                     (batch, lambda: sink.points_dead_lettered >= 1
                      and sink.points_written >= 101)])
    assert _count(influxdb.url, db_name, "conflict") == 101
    (dl,) = store.sink_dead_letters()
    assert dl["line"] == bad.encode() and dl["sink"] == "influx_v1"
    assert dl["error"].startswith("400") and "conflict" in dl["error"]
    assert metrics.registry.get_sample_value("gearwatch_sink_dead_letter_points_total",
                                             {"sink": "influx_v1"}) == 1
    store.close()


def test_retry_after_from_an_overloaded_influxdb_stand_in_is_honoured() -> None:
    """A small aiohttp server stands in for a cloud / overloaded InfluxDB: 503 and 429 with
    Retry-After: 1, then it accepts.  The sink's own backoff is capped at 0.05 s, so only the
    header can explain a wait of a second."""
    answers = [(503, "1"), (429, "1"), (204, None)]
    seen: list[float] = []
    stored: list[bytes] = []
    port = ls.free_port()

    async def write(req: web.Request) -> web.Response:
        seen.append(time.monotonic())
        body = await req.read()
        status, ra = answers[min(len(seen) - 1, len(answers) - 1)]
        if status == 204:
            stored.append(body)
        return web.Response(status=status, headers={"Retry-After": ra} if ra else None)

    async def query(req: web.Request) -> web.Response:
        return web.json_response({"results": [{"statement_id": 0}]})

    async def main() -> None:
        app = web.Application()
        app.router.add_post("/write", write)
        app.router.add_post("/query", query)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        sink = InfluxSink(InfluxV1Writer(InfluxSection(url=f"http://127.0.0.1:{port}")),
                          AgentMetrics(), batch_points=100, flush_interval_s=0.01,
                          max_backoff_s=0.05)
        task = asyncio.create_task(sink.run())
        sink.submit([f"m v={i} {i}" for i in range(10)])
        deadline = time.monotonic() + 20
        while sink.points_written < 10:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
        await sink.close()
        await asyncio.wait_for(task, 5)
        await sink.aclose_writer()
        await runner.cleanup()

    asyncio.run(main())
    assert len(seen) == 3
    assert seen[1] - seen[0] >= 0.95 and seen[2] - seen[1] >= 0.95
    assert stored == [b"\n".join(f"m v={i} {i}".encode() for i in range(10))]
