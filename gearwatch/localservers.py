"""Start Mosquitto, InfluxDB 1.x and VictoriaMetrics as local processes on free loopback ports.

Used by the demo (embedded defaults when no server is configured) and by the integration
tests (real servers, never mocks).  Each server lives in its own folder with a config file
written from the templates below, and stops when the handle is closed.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

MOSQUITTO_CONF = """\
# gearwatch local broker: loopback only, anonymous, persistent sessions kept across restarts
listener {port} 127.0.0.1
allow_anonymous true
persistence true
persistence_location {dir}/
autosave_interval 5
# QoS 1 messages the agent has not acknowledged yet (ack-after-persist): no small cap
max_inflight_messages 0
max_queued_messages 1000000
set_tcp_nodelay true
log_dest file {dir}/mosquitto.log
log_type error
log_type warning
log_type notice
"""

INFLUXDB_CONF = """\
# gearwatch local InfluxDB 1.x: loopback only, no usage reporting
reporting-disabled = true
bind-address = "127.0.0.1:{rpc_port}"
[meta]
  dir = "{dir}/meta"
[data]
  dir = "{dir}/data"
  wal-dir = "{dir}/wal"
  query-log-enabled = false
  cache-snapshot-write-cold-duration = "10s"
[http]
  enabled = true
  bind-address = "127.0.0.1:{port}"
  log-enabled = false
  max-body-size = {max_body_size}
  auth-enabled = {auth}
[monitor]
  store-enabled = false
[continuous_queries]
  enabled = false
[subscriber]
  enabled = false
"""

INSTALL_HINT = {
    "mosquitto": "apt-get install mosquitto mosquitto-clients",
    "influxd": "apt-get install influxdb",
    "victoria-metrics": "apt-get install victoria-metrics",
}


class ServerError(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def find_binary(name: str) -> str:
    path = shutil.which(name) or next(
        (p for p in (f"/usr/sbin/{name}", f"/usr/bin/{name}") if Path(p).exists()), None
    )
    if path is None:
        raise ServerError(f"{name} is not installed; install it with: {INSTALL_HINT[name]}")
    return path


@dataclass
class LocalServer:
    name: str
    port: int
    dir: Path
    argv: list[str]
    proc: subprocess.Popen[bytes] | None = None
    extra: dict[str, int] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> LocalServer:
        self.dir.mkdir(parents=True, exist_ok=True)
        log = (self.dir / f"{self.name}.stdout").open("ab")
        self.proc = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL)
        self.wait_ready()
        return self

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise ServerError(f"{self.name} exited with {self.proc.returncode}; "
                                  f"see {self.dir}/{self.name}.stdout")
            if self._ready():
                return
            time.sleep(0.1)
        raise ServerError(f"{self.name} did not become ready on port {self.port} in {timeout}s")

    def _ready(self) -> bool:
        if self.name == "mosquitto":
            with contextlib.suppress(OSError), socket.create_connection(
                ("127.0.0.1", self.port), timeout=0.5
            ):
                return True
            return False
        path = "/ping" if self.name == "influxd" else "/health"
        try:
            return httpx.get(self.url + path, timeout=1.0).status_code < 300
        except httpx.HTTPError:
            return False

    def stop(self, kill: bool = False) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        if kill:
            self.proc.kill()
        else:
            self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def restart(self) -> None:
        self.stop()
        self.start()

    def __enter__(self) -> LocalServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def mosquitto(base: Path, port: int | None = None) -> LocalServer:
    port = port or free_port()
    d = base / "mosquitto"
    d.mkdir(parents=True, exist_ok=True)
    conf = d / "mosquitto.conf"
    conf.write_text(MOSQUITTO_CONF.format(port=port, dir=d))
    return LocalServer("mosquitto", port, d, [find_binary("mosquitto"), "-c", str(conf)])


def influxdb(base: Path, port: int | None = None, auth: bool = False,
             name: str = "influxdb", max_body_size: int = 0) -> LocalServer:
    """InfluxDB 1.x; with `auth` the HTTP API needs credentials (create the first admin with
    `CREATE USER ... WITH ALL PRIVILEGES`, which 1.x allows unauthenticated while none exists).
    `max_body_size` (bytes, 0 = no limit): larger writes are answered 413."""
    port = port or free_port()
    rpc = free_port()
    d = base / name
    d.mkdir(parents=True, exist_ok=True)
    conf = d / "influxdb.conf"
    conf.write_text(INFLUXDB_CONF.format(port=port, rpc_port=rpc, dir=d,
                                         auth="true" if auth else "false",
                                         max_body_size=max_body_size))
    return LocalServer("influxd", port, d, [find_binary("influxd"), "-config", str(conf)],
                       extra={"rpc_port": rpc})


def victoria_metrics(base: Path, port: int | None = None) -> LocalServer:
    port = port or free_port()
    d = base / "victoria-metrics"
    return LocalServer("victoria-metrics", port, d, [
        find_binary("victoria-metrics"), f"-httpListenAddr=127.0.0.1:{port}",
        f"-storageDataPath={d}/data", "-retentionPeriod=100y", "-loggerLevel=ERROR",
        "-search.latencyOffset=0s",
    ])
