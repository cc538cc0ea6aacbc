"""sd_notify over a real datagram socket (path and abstract), and the reconnect schedule."""

from __future__ import annotations

import os
import random
import socket
from pathlib import Path

from edge_agent.sources.mqtt_connection import reconnect_delay
from edge_agent.systemd_notify import Notifier, Watchdog


def test_notify_path_and_abstract_socket(tmp_path: Path) -> None:
    for addr in (str(tmp_path / "n.sock"), f"@gearwatch-test-{os.getpid()}"):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        s.bind(addr if not addr.startswith("@") else "\0" + addr[1:])
        s.settimeout(2)
        n = Notifier({"NOTIFY_SOCKET": addr, "WATCHDOG_USEC": "4000000"})
        assert n.enabled and n.watchdog_interval_s == 2.0
        assert n.ready("running")
        assert s.recv(100) == b"READY=1\nSTATUS=running"
        w = Watchdog(n)
        w.beat(now=10.0)
        w.beat(now=11.0)  # within half of WATCHDOG_USEC: not again
        w.beat(now=12.0)
        assert [s.recv(100), s.recv(100)] == [b"WATCHDOG=1", b"WATCHDOG=1"] and w.pings == 2
        n.close()
        s.close()


def test_no_systemd_no_pings_and_watchdog_only_for_this_pid() -> None:
    assert not Notifier({}).enabled and not Notifier({}).notify("READY=1")
    other = Notifier({"NOTIFY_SOCKET": "/run/x", "WATCHDOG_USEC": "1000", "WATCHDOG_PID": "1"})
    assert other.watchdog_interval_s is None or os.getpid() == 1
    assert not Notifier({"NOTIFY_SOCKET": "/nonexistent/sock"}).ready()  # logged, not raised


def test_reconnect_delay_is_capped_exponential_with_jitter() -> None:
    rng = random.Random(1)
    for attempt, step in ((1, 1.0), (2, 2.0), (3, 4.0), (6, 30.0), (50, 30.0)):
        ds = [reconnect_delay(attempt, rng=rng) for _ in range(200)]
        assert step / 2 <= min(ds) and max(ds) <= step, (attempt, min(ds), max(ds))
        assert max(ds) - min(ds) > step / 4  # spread, not one value for every agent
