"""systemd lifecycle of the real agent: READY=1, watchdog pings from the processing loop (and
none once it hangs or dies), STOPPING=1 and a bounded, flushing exit on SIGTERM."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge_agent.pipeline import Scored
from edge_agent.runner import AgentThread
from gearwatch import localservers as ls
from tests.helpers import agent_config
from tests.integration.faults import (
    AgentProcess,
    NotifyListener,
    PublisherProcess,
    agent_config_file,
    influx_points,
    missing_in_influx,
    wait_for,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def notify() -> Iterator[NotifyListener]:
    n = NotifyListener()
    yield n
    n.close()


def test_ready_watchdog_and_sigterm_flushes_within_the_bound(
    tmp_path: Path, mosquitto: ls.LocalServer, influxdb: ls.LocalServer, db_name: str,
    notify: NotifyListener,
) -> None:
    # nothing is written before the stop (30 s flush interval): SIGTERM must do it
    bound = 10.0
    cfg = agent_config_file(tmp_path / "agent.toml", mosquitto.port, influxdb.url, db_name,
                            f"agent-{db_name}", agent={"shutdown_timeout_s": bound},
                            influx={"flush_interval_s": 30.0, "batch_points": 1_000_000})
    agent = AgentProcess(cfg, env=notify.env(watchdog_usec=1_000_000))
    agent.start()
    pub = None
    try:
        ready = notify.wait("READY", "1", timeout=90)
        agent.wait_running()
        # WATCHDOG_USEC = 1 s: a ping every 0.5 s, from the processing loop
        wait_for(lambda: len(notify.times("WATCHDOG", "1", since=ready)) >= 4, 10,
                 "four watchdog pings")
        pub = PublisherProcess(mosquitto.port, 100, 0, client_id=f"sim-{db_name}").start()
        rep = pub.wait(60)
        sent = rep.sent_keys()
        status = agent.config.parent / "state" / "status.json"
        wait_for(lambda: status.exists() and f'"samples":{rep.samples}' in
                 status.read_text().replace(" ", ""), 30, "the agent to have every sample")
        assert influx_points(influxdb.url, db_name) == 0, "written before the stop"
        rc, took = agent.terminate(timeout=bound + 10)
        stopping = notify.wait("STOPPING", "1", timeout=1)
        assert rc == 0, agent.log()[-2000:]
        assert took <= bound, f"took {took:.1f} s to exit"
        assert stopping >= ready
        missing = missing_in_influx(influxdb.url, db_name, sent, timeout=5)
        assert not missing, f"{len(missing)} of {len(sent)} samples lost by the stop"
        log = agent.log()
        assert "SIGTERM received: stopping within 10 s" in log and "agent stopped in" in log
        print(f"SIGTERM to exit: {took:.2f} s, {len(sent)} rows flushed")
    finally:
        agent.close()
        if pub is not None:
            pub.close()


@pytest.mark.parametrize("spool", [False, True])
def test_sigterm_with_influx_down_still_exits_within_the_bound(
    tmp_path: Path, mosquitto: ls.LocalServer, db_name: str, notify: NotifyListener,
    spool: bool,
) -> None:
    """InfluxDB unreachable: the stop exits 0 within the bound and says what it left. Without
    the spool it gives up at the bound (the unwritten messages were never acknowledged: the
    broker redelivers them); with it the points are on disk, acknowledged, sent next start."""
    bound = 2.0
    cfg = agent_config_file(tmp_path / "agent.toml", mosquitto.port,
                            f"http://127.0.0.1:{ls.free_port()}", db_name, f"agent-{db_name}",
                            agent={"shutdown_timeout_s": bound}, spool={"enabled": spool})
    agent = AgentProcess(cfg, env=notify.env())
    agent.start()
    try:
        agent.wait_running()
        PublisherProcess(mosquitto.port, 20, 0, client_id=f"sim-{db_name}").start().wait(60)
        agent.wait_log("InfluxDB not ready", timeout=30)
        rc, took = agent.terminate(timeout=bound + 10)
        assert rc == 0, agent.log()[-2000:]
        assert took <= bound + 1.5, f"took {took:.1f} s to exit"
        if spool:
            assert "stay in the spool on disk" in agent.log()
            assert list((tmp_path / "state" / "spool").glob("*.seg")), "the points are on disk"
        else:
            assert "shutdown bound of 2 s reached with" in agent.log()
    finally:
        agent.close()


def test_watchdog_pings_come_from_the_processing_loop(
    monkeypatch: pytest.MonkeyPatch, notify: NotifyListener, db_name: str,
) -> None:
    """A hung processing loop (here: scoring blocked, as a deadlocked native call would be)
    and a dead one both stop the pings, while the event loop itself still runs."""
    for k, v in notify.env(watchdog_usec=200_000).items():  # a ping every 0.1 s
        monkeypatch.setenv(k, v)
    cfg = agent_config(1, None, db_name, mqtt={"enabled": False},
                       agent={"status_interval_s": 0.1}, console={"enabled": False})
    with AgentThread(cfg) as at:
        agent, loop = at.agent, at.loop
        assert agent is not None and loop is not None
        t0 = notify.wait("READY", "1", timeout=10)
        wait_for(lambda: len(notify.times("WATCHDOG", "1", since=t0)) >= 5, 5, "pings")

        # 1. hang: the next iteration blocks in the pipeline (its scoring half, which runs in
        # the scoring thread) until released
        release, entered = threading.Event(), threading.Event()
        score = agent.pipeline.score

        def hung_score(wall_ns: int | None = None) -> list[tuple[str, Scored]]:
            entered.set()
            release.wait(30)
            return score(wall_ns)

        monkeypatch.setattr(agent.pipeline, "score", hung_score)
        assert entered.wait(5)
        hung_at = time.monotonic()
        time.sleep(1.0)  # ten ping intervals
        assert notify.times("WATCHDOG", "1", since=hung_at + 0.05) == [], "pinged while hung"
        monkeypatch.setattr(agent.pipeline, "score", score)
        release.set()
        back = time.monotonic()
        wait_for(lambda: len(notify.times("WATCHDOG", "1", since=back)) >= 3, 5,
                 "pings after the hang ends")

        # 2. dead: the processing task is gone while the event loop runs on (status updates)
        proc = next(t for t in agent._tasks if t.get_name() == "process")
        loop.call_soon_threadsafe(proc.cancel)
        wait_for(proc.done, 5, "the processing task to end")
        dead_at = time.monotonic()
        wait_for(lambda: len(notify.times("STATUS", since=dead_at)) >= 3, 5,
                 "status updates: the event loop is alive")
        assert notify.times("WATCHDOG", "1", since=dead_at + 0.05) == [], "pinged while dead"
        fut = asyncio.run_coroutine_threadsafe(asyncio.sleep(0, "alive"), loop)
        assert fut.result(5) == "alive"
