"""Never lose a sample: the broker or the agent SIGKILLed mid-stream, or the broker and
InfluxDB down when the agent starts.  Real processes throughout; every (asset, ts) the
simulator sent is looked up in InfluxDB.

The promise is kept by ack-after-durable: the agent acknowledges a QoS 1 message only once
its samples are written (or, with a spool, on disk), so whatever it had not made durable
when it died is redelivered from its persistent session.  The tests hold for both.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gearwatch import localservers as ls
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

DURATION_S, SPEEDUP = 400, 40.0  # 10 s of publishing: 3 pumps x 400 rows x 9 sensors


@pytest.fixture
def procs() -> Iterator[list[AgentProcess | PublisherProcess]]:
    """Whatever a test starts is killed at its end, also when it fails."""
    started: list[AgentProcess | PublisherProcess] = []
    yield started
    for p in started:
        p.close()


def _report_missing(missing: set[tuple[str, int]], sent: int) -> str:
    return f"{len(missing)} of {sent} sent (asset, ts) not in InfluxDB, e.g. {sorted(missing)[:5]}"


def test_broker_sigkilled_and_restarted_mid_stream(
    tmp_path: Path, influxdb: ls.LocalServer, db_name: str,
    procs: list[AgentProcess | PublisherProcess],
) -> None:
    broker = ls.mosquitto(tmp_path, autosave_s=1).start()
    try:
        agent = AgentProcess(agent_config_file(tmp_path / "agent.toml", broker.port,
                                               influxdb.url, db_name, f"agent-{db_name}"))
        procs.append(agent.start())
        agent.wait_running()
        connected_at = time.time()
        # a broker that ran a while has the agent's session in its snapshot (autosave 1 s)
        snapshot = broker.dir / "mosquitto.db"
        wait_for(lambda: snapshot.exists() and snapshot.stat().st_mtime > connected_at, 10,
                 "the broker to snapshot the agent's session")
        pub = PublisherProcess(broker.port, DURATION_S, SPEEDUP, client_id=f"sim-{db_name}")
        procs.append(pub.start())
        wait_for(lambda: influx_points(influxdb.url, db_name) > 300, 30, "the stream to flow")
        assert pub.running(), "the publisher finished before the broker was killed"
        broker.stop(kill=True)
        broker.start()  # same port, same persistence folder
        up_at = time.monotonic()
        reconnected = agent.wait_log("connected to MQTT broker", 2, 60)
        assert pub.running(), "the stream should go on after the restart"
        rep = pub.wait(120)
        sent = rep.sent_keys()
        assert len(sent) == 3 * DURATION_S
        missing = missing_in_influx(influxdb.url, db_name, sent, timeout=60)
        assert not missing, _report_missing(missing, len(sent))
        print(f"agent reconnected {reconnected - up_at:.2f} s after the broker was back")
    finally:
        broker.stop()


def test_agent_sigkilled_and_restarted_mid_stream(
    tmp_path: Path, mosquitto: ls.LocalServer, influxdb: ls.LocalServer, db_name: str,
    procs: list[AgentProcess | PublisherProcess],
) -> None:
    agent = AgentProcess(agent_config_file(tmp_path / "agent.toml", mosquitto.port,
                                           influxdb.url, db_name, f"agent-{db_name}"))
    procs.append(agent.start())
    agent.wait_running()
    pub = PublisherProcess(mosquitto.port, DURATION_S, SPEEDUP, client_id=f"sim-{db_name}")
    procs.append(pub.start())
    wait_for(lambda: influx_points(influxdb.url, db_name) > 300, 30, "the stream to flow")
    assert pub.running(), "the publisher finished before the agent was killed"
    agent.kill()
    killed_at = time.monotonic()
    before_restart = influx_points(influxdb.url, db_name)
    agent.start()  # same config: same client id, so the same persistent session
    agent.wait_running()
    # the broker kept what arrived meanwhile and what was unacknowledged, for this session
    assert agent.log().split("--- start 2")[1].count("session present: True") == 1
    print(f"agent back {time.monotonic() - killed_at:.1f} s after SIGKILL "
          f"({before_restart} points were in InfluxDB)")
    rep = pub.wait(120)
    sent = rep.sent_keys()
    missing = missing_in_influx(influxdb.url, db_name, sent, timeout=60)
    assert not missing, _report_missing(missing, len(sent))
    rc, _ = agent.terminate()
    assert rc == 0, agent.log()[-2000:]


def test_agent_starts_with_broker_and_influx_down_and_catches_up(
    tmp_path: Path, db_name: str, procs: list[AgentProcess | PublisherProcess],
) -> None:
    mq_port, influx_port = ls.free_port(), ls.free_port()
    notify = NotifyListener()
    agent = AgentProcess(agent_config_file(tmp_path / "agent.toml", mq_port,
                                           f"http://127.0.0.1:{influx_port}", db_name,
                                           f"agent-{db_name}"), env=notify.env())
    procs.append(agent.start())
    broker = influx = None
    try:
        # running (and READY for systemd) with neither server up: it waits for them
        notify.wait("READY", "1", timeout=90)
        agent.wait_log("cannot reach the MQTT broker", timeout=30)
        agent.wait_log("InfluxDB not ready", timeout=30)
        broker = ls.mosquitto(tmp_path, port=mq_port).start()
        agent.wait_log("connected to MQTT broker", timeout=60)
        pub = PublisherProcess(mq_port, 200, SPEEDUP, client_id=f"sim-{db_name}")
        procs.append(pub.start())
        rep = pub.wait(120)  # the broker has all of it; InfluxDB is still down
        influx = ls.influxdb(tmp_path, port=influx_port).start()
        sent = rep.sent_keys()
        missing = missing_in_influx(influx.url, db_name, sent, timeout=90)
        assert not missing, _report_missing(missing, len(sent))
        rc, _ = agent.terminate()
        assert rc == 0, agent.log()[-2000:]
    finally:
        notify.close()
        for srv in (broker, influx):
            if srv is not None:
                srv.stop()
