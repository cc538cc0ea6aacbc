"""Start Mosquitto, InfluxDB 1.x and VictoriaMetrics as local processes on free loopback ports.

Used by the demo (embedded defaults when no server is configured) and by the integration
tests (real servers, never mocks).  Each server lives in its own folder with a config file
written from the templates below, and stops when the handle is closed.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import getpass
import ipaddress
import random
import re
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
autosave_interval {autosave}
# QoS 1 messages the agent has not acknowledged yet (ack-after-persist): no small cap
max_inflight_messages 0
max_queued_messages 1000000
set_tcp_nodelay true
log_dest file {dir}/mosquitto.log
log_type error
log_type warning
log_type notice
# started as root, Mosquitto drops to the user `mosquitto`, which cannot write a private
# temporary folder (persistence would silently fail); as another user this is ignored
user {user}
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
    "mosquitto_passwd": "apt-get install mosquitto",
    "influxd": "apt-get install influxdb",
    "victoria-metrics": "apt-get install victoria-metrics",
}


class ServerError(RuntimeError):
    pass


def _ephemeral_range() -> tuple[int, int]:
    try:
        lo, hi = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(lo), int(hi)
    except (OSError, ValueError):
        return 32768, 60999


def free_port() -> int:
    """A free loopback port for a server, picked *below* the kernel's ephemeral range.

    A port from `bind(0)` comes from the ephemeral range, which outgoing connections draw from
    too: a server restarted on its old port (a broker, InfluxDB, the console) could find it
    taken by some client's source port and fail with "address already in use".  Ports below
    the range are never handed out to clients.
    """
    lo, _ = _ephemeral_range()
    rng = random.Random()
    for _ in range(200):
        port = rng.randrange(max(1024, lo - 12000), lo)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket() as s:  # everything below the range is busy: let the kernel pick
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
    pki: Pki | None = None  # secure_mosquitto: the CA and certificates it was started with

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


def mosquitto(base: Path, port: int | None = None, autosave_s: int = 5) -> LocalServer:
    """`autosave_s`: how often sessions and queued messages are snapshotted to disk, which
    bounds what a SIGKILLed broker forgets."""
    port = port or free_port()
    d = base / "mosquitto"
    d.mkdir(parents=True, exist_ok=True)
    conf = d / "mosquitto.conf"
    conf.write_text(MOSQUITTO_CONF.format(port=port, dir=d, autosave=autosave_s,
                                         user=getpass.getuser()))
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


# -- the gateway's secure broker (deploy/mosquitto/), with a throw-away PKI ----------------------

DEPLOY_MOSQUITTO = Path(__file__).resolve().parents[1] / "deploy" / "mosquitto"


@dataclass(frozen=True)
class Pki:
    """A CA, a server certificate for localhost/127.0.0.1, and one client certificate."""

    ca_crt: Path
    server_crt: Path
    server_key: Path
    client_crt: Path
    client_key: Path


def make_pki(d: Path, client_cn: str = "gearwatch-agent") -> Pki:
    """EC P-256 keys, certificates valid for a day: for tests and the demo, never production."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    d.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    def write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> None:
        path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
        path.chmod(0o600)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(name("gearwatch test CA"))
          .issuer_name(name("gearwatch test CA")).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number())
          .not_valid_before(now - dt.timedelta(minutes=5))
          .not_valid_after(now + dt.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False,
                                       data_encipherment=False, key_agreement=False,
                                       encipher_only=False, decipher_only=False), critical=True)
          .sign(ca_key, hashes.SHA256()))

    def leaf(cn: str, server: bool) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        key = ec.generate_private_key(ec.SECP256R1())
        b = (x509.CertificateBuilder().subject_name(name(cn)).issuer_name(ca.subject)
             .public_key(key.public_key()).serial_number(x509.random_serial_number())
             .not_valid_before(now - dt.timedelta(minutes=5))
             .not_valid_after(now + dt.timedelta(days=1))
             .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH if server
                                                   else ExtendedKeyUsageOID.CLIENT_AUTH]),
                            critical=False))
        if server:
            b = b.add_extension(x509.SubjectAlternativeName([
                x509.DNSName("localhost"),
                x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        return b.sign(ca_key, hashes.SHA256()), key

    pem = serialization.Encoding.PEM
    pki = Pki(d / "ca.crt", d / "server.crt", d / "server.key", d / "client.crt", d / "client.key")
    pki.ca_crt.write_bytes(ca.public_bytes(pem))
    srv, srv_key = leaf("localhost", server=True)
    pki.server_crt.write_bytes(srv.public_bytes(pem))
    write_key(srv_key, pki.server_key)
    cli, cli_key = leaf(client_cn, server=False)
    pki.client_crt.write_bytes(cli.public_bytes(pem))
    write_key(cli_key, pki.client_key)
    return pki


def make_password_file(path: Path, users: dict[str, str]) -> None:
    """With Mosquitto's own tool, as an operator would (`mosquitto_passwd -b`)."""
    exe = find_binary("mosquitto_passwd")
    path.unlink(missing_ok=True)
    for i, (user, password) in enumerate(users.items()):
        subprocess.run([exe, *(["-c"] if i == 0 else []), "-b", str(path), user, password],
                       check=True, capture_output=True, timeout=30)


def gateway_mosquitto_conf(d: Path, port: int, pki: Pki, password_file: Path, acl_file: Path,
                           require_certificate: bool = False,
                           template: Path = DEPLOY_MOSQUITTO / "mosquitto.conf") -> str:
    """deploy/mosquitto/mosquitto.conf with this machine's paths and port, nothing else.

    Every rewritten key must be in the shipped file, so a test fails when the file changes
    shape instead of silently testing something else.
    """
    values = {
        "pid_file": None, "log_dest": f"file {d}/mosquitto.log", "listener": f"{port} 127.0.0.1",
        "cafile": str(pki.ca_crt), "certfile": str(pki.server_crt),
        "keyfile": str(pki.server_key), "password_file": str(password_file),
        "acl_file": str(acl_file), "persistence_location": f"{d}/",
    }
    if require_certificate:
        values |= {"#require_certificate": "true"}
    seen: set[str] = set()
    out = []
    for line in template.read_text().splitlines():
        m = re.match(r"(#?[a-z_]+)\s", line)
        key = m.group(1) if m else None
        if key in values:
            seen.add(key)
            v = values[key]
            if v is not None:
                out.append(f"{key.lstrip('#')} {v}")
            continue
        out.append(line)
    missing = set(values) - seen
    if missing:
        raise ServerError(f"{template} has no {sorted(missing)}: update gateway_mosquitto_conf")
    # Mosquitto started as root drops to the user `mosquitto`, which cannot read a test's
    # private temporary folder; as another user this line is ignored
    out.append(f"user {getpass.getuser()}")
    return "\n".join(out) + "\n"


def secure_mosquitto(base: Path, users: dict[str, str], port: int | None = None,
                     require_certificate: bool = False, pki: Pki | None = None) -> LocalServer:
    """The gateway broker of deploy/mosquitto/ (TLS, passwords, the shipped ACL) on loopback."""
    port = port or free_port()
    d = base / "mosquitto-tls"
    d.mkdir(parents=True, exist_ok=True)
    pki = pki or make_pki(d / "pki")
    make_password_file(d / "passwd", users)
    shutil.copyfile(DEPLOY_MOSQUITTO / "acl", d / "acl")
    conf = d / "mosquitto.conf"
    conf.write_text(gateway_mosquitto_conf(d, port, pki, d / "passwd", d / "acl",
                                           require_certificate))
    srv = LocalServer("mosquitto", port, d, [find_binary("mosquitto"), "-c", str(conf)])
    srv.pki = pki
    return srv
