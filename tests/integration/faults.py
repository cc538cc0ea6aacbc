"""Fault-injection harness over real processes: the simulator publisher and the agent run as
subprocesses (`gearwatch sim mqtt`, `gearwatch agent run`), so they can be SIGKILLed and
restarted like on a gateway; a unix datagram socket stands in for systemd's notify socket;
and the delivery promise is checked sample by sample: every (asset, ts) the simulator sent
must be in InfluxDB, with every sensor, at least once.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from edge_agent.config import parse_config
from gearwatch.localservers import free_port
from simulators.mqtt_publisher import SendReport
from simulators.pump import SENSORS
from tests.helpers import influx_query

BIN = Path(sys.executable).parent  # this venv: its gearwatch imports this checkout
Key = tuple[str, int]


# -- config files ---------------------------------------------------------------------------------

def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{k} = {_toml_value(x)}" for k, x in v.items()) + " }"
    raise TypeError(f"cannot write {type(v).__name__} to TOML")


def write_toml(path: Path, data: dict[str, Any]) -> Path:
    """Sections of scalars and arrays of tables: all an agent config needs."""
    out = []
    for section, body in data.items():
        if isinstance(body, list) and body and isinstance(body[0], dict):
            for item in body:
                out.append(f"[[{section}]]")
                out += [f"{k} = {_toml_value(v)}" for k, v in item.items()]
        elif isinstance(body, dict):
            out.append(f"[{section}]")
            out += [f"{k} = {_toml_value(v)}" for k, v in body.items()]
        else:
            raise TypeError(f"top-level {section!r} must be a table or an array of tables")
        out.append("")
    path.write_text("\n".join(out))
    return path


def agent_config_file(path: Path, mqtt_port: int, influx_url: str, db: str, client_id: str,
                      n_assets: int = 3, site: str = "test",
                      **overrides: dict[str, Any]) -> Path:
    """A config for `gearwatch agent run`, validated here so a typo fails the test early."""
    state = path.parent / "state"
    data: dict[str, Any] = {
        "agent": {"site": site, "state_dir": str(state), "status_interval_s": 0.5},
        "mqtt": {"port": mqtt_port, "client_id": client_id,
                 "topics": [f"plant/{site}/+/telemetry"]},
        "influx": {"url": influx_url, "database": db},
        "metrics": {"port": free_port()},
        "console": {"enabled": False},
        "assets": [{"id": f"pump-{i}", "class": "centrifugal_pump"}
                   for i in range(1, n_assets + 1)],
    }
    for section, values in overrides.items():
        data.setdefault(section, {}).update(values)
    parse_config(data)
    return write_toml(path, data)


# -- processes ----------------------------------------------------------------------------------

def wait_for(cond: Callable[[], bool], timeout: float, what: str, every: float = 0.05) -> float:
    """Poll until `cond()`; returns the monotonic time it became true."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return time.monotonic()
        time.sleep(every)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}")


class AgentProcess:
    """`gearwatch agent run -c CONFIG` as a child process, its log in a file."""

    def __init__(self, config: Path, log: Path | None = None,
                 env: dict[str, str] | None = None) -> None:
        self.config = config
        self.log_path = log or config.with_suffix(".log")
        self.env = {**os.environ, **(env or {}), "PYTHONUNBUFFERED": "1"}
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> AgentProcess:
        assert self.proc is None or self.proc.poll() is not None, "agent already running"
        with self.log_path.open("ab") as log:
            log.write(f"--- start {self.starts + 1}\n".encode())
            self.proc = subprocess.Popen(
                [str(BIN / "gearwatch"), "agent", "run", "-c", str(self.config)],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=self.env)
        self.starts += 1
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def log_count(self, text: str) -> int:
        return self.log().count(text)

    def wait_log(self, text: str, count: int = 1, timeout: float = 60) -> float:
        def seen() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"agent exited with {self.proc.returncode}:\n"
                                     + self.log()[-3000:])
            return self.log_count(text) >= count
        return wait_for(seen, timeout, f"{text!r} x{count} in the agent log")

    def wait_running(self, timeout: float = 90, connected: bool = True) -> None:
        """Started (and connected to the broker) in this start."""
        self.wait_log("agent running", self.starts, timeout)
        if connected:
            self.wait_log("connected to MQTT broker", self.starts, timeout)

    def kill(self) -> None:
        """SIGKILL: no flush, no goodbye, like a power cut of the process."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(timeout=30)

    def terminate(self, timeout: float = 60) -> tuple[int, float]:
        """SIGTERM as systemd sends it; (exit code, seconds to exit)."""
        assert self.proc is not None
        t0 = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        rc = self.proc.wait(timeout=timeout)
        return rc, time.monotonic() - t0

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)


class PublisherProcess:
    """`gearwatch sim mqtt`: pumps at `speedup` x real time, QoS 1, a persistent session."""

    def __init__(self, port: int, duration_s: float, speedup: float, site: str = "test",
                 n_assets: int = 3, client_id: str | None = None, seed: int = 1,
                 session_expiry_s: int = 3600, extra: Sequence[str] = (),
                 env: dict[str, str] | None = None) -> None:
        self.argv = [
            str(BIN / "gearwatch"), "sim", "mqtt", "--port", str(port), "--site", site,
            "--assets", str(n_assets), "--duration", str(duration_s), "--speedup", str(speedup),
            "--seed", str(seed), "--qos", "1", "--client-id", client_id or f"sim-{seed}",
            "--session-expiry", str(session_expiry_s), *extra,
        ]
        self.env = {**os.environ, **(env or {})}
        self.proc: subprocess.Popen[str] | None = None

    def start(self) -> PublisherProcess:
        self.proc = subprocess.Popen(self.argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     stdin=subprocess.DEVNULL, text=True, env=self.env)
        return self

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait(self, timeout: float = 120) -> SendReport:
        """Its report once it ended (every message acknowledged by the broker)."""
        assert self.proc is not None
        out, err = self.proc.communicate(timeout=timeout)
        assert self.proc.returncode == 0, f"publisher failed ({self.proc.returncode}): {err}"
        doc = json.loads(out.strip().splitlines()[-1])
        return SendReport(messages=doc["messages"], samples=doc["samples"], t0_ns=doc["t0_ns"],
                          end_ns=doc["end_ns"], per_asset_samples=doc["per_asset_samples"],
                          steps=doc["steps"], period_ns=doc["period_ns"],
                          refused=doc["refused"])

    def close(self) -> None:
        if self.running():
            assert self.proc is not None
            self.proc.kill()
            self.proc.communicate(timeout=30)


# -- systemd's notify socket ----------------------------------------------------------------------

class NotifyListener:
    """Binds a unix datagram socket like systemd does and records every notification."""

    def __init__(self) -> None:
        # sun_path is limited to 108 bytes: a short folder of its own, not pytest's tmp_path
        self.dir = Path(tempfile.mkdtemp(prefix="gw-notify-", dir="/tmp"))
        self.path = self.dir / "notify.sock"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(self.path))
        self.sock.settimeout(0.2)
        self.messages: list[tuple[float, dict[str, str]]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._recv, daemon=True, name="notify")
        self._thread.start()

    def env(self, watchdog_usec: int | None = None) -> dict[str, str]:
        env = {"NOTIFY_SOCKET": str(self.path)}
        if watchdog_usec is not None:
            env["WATCHDOG_USEC"] = str(watchdog_usec)
        return env

    def _recv(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            fields = dict(line.split("=", 1) for line in data.decode().splitlines() if "=" in line)
            with self._lock:
                self.messages.append((time.monotonic(), fields))

    def times(self, key: str, value: str | None = None, since: float = 0.0) -> list[float]:
        with self._lock:
            return [t for t, f in self.messages
                    if key in f and (value is None or f[key] == value) and t >= since]

    def wait(self, key: str, value: str | None = None, timeout: float = 60,
             since: float = 0.0) -> float:
        wait_for(lambda: bool(self.times(key, value, since)), timeout, f"{key}={value} notify")
        return self.times(key, value, since)[0]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.sock.close()
        with contextlib.suppress(OSError):
            self.path.unlink()
            self.dir.rmdir()


# -- the delivery promise, sample by sample ---------------------------------------------------

def present_in_influx(url: str, db: str, sensors: Iterable[str] = SENSORS) -> set[Key]:
    """Every (asset, ts) with all of `sensors` in the telemetry measurement."""
    names = list(sensors)
    fields = ", ".join(f'"{s}"' for s in names)
    out: set[Key] = set()
    for s in influx_query(url, db, f'SELECT {fields} FROM "telemetry" GROUP BY "asset"'):
        asset = s["tags"]["asset"]
        for row in s["values"]:
            if all(v is not None for v in row[1:]):
                out.add((asset, int(row[0])))
    return out


def missing_in_influx(url: str, db: str, sent: set[Key], timeout: float = 60) -> set[Key]:
    """What of `sent` is not in InfluxDB, after waiting up to `timeout` for it to arrive."""
    missing = set(sent)
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(Exception):  # InfluxDB may still be starting
            missing = sent - present_in_influx(url, db)
        if not missing or time.monotonic() > deadline:
            return missing
        time.sleep(0.5)


def influx_points(url: str, db: str) -> int:
    """Telemetry points so far (0 while the database does not exist yet)."""
    try:
        series = influx_query(url, db, 'SELECT COUNT("flow_m3h") FROM "telemetry"')
    except Exception:
        return 0
    return sum(int(s["values"][0][1] or 0) for s in series)
