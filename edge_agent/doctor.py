"""`gearwatch doctor -c FILE`: check a config against reality and say what to fix.

Each check talks to the real thing the agent will use (the broker, InfluxDB, the state
directory, the metrics port, ...) with the agent's own settings and credentials, and reports
OK, WARN or FAIL with one line naming the fix.  It never disturbs a running agent: it connects
to the broker under its own client id and writes one probe point that it deletes again.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import ssl
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from edge_agent.config import AgentConfig, ConfigError, InfluxSection, MqttSection, load_config

OK, WARN, FAIL = "OK", "WARN", "FAIL"
PROBE_MEASUREMENT = "gearwatch_doctor_probe"

# MQTT 5 CONNACK reason codes (and the 3.1.1 return codes) -> what they mean for this config
CONNACK_FIXES: dict[int, str] = {
    1: "the broker does not speak this MQTT version; upgrade it to one with MQTT 5 (e.g. "
       "Mosquitto >= 1.6)",
    2: "the broker rejected the client id; set a different [mqtt] client_id",
    3: "the broker is unavailable; check its log",
    4: "wrong user name or password: check [mqtt] username and GEARWATCH_MQTT_PASSWORD / "
       "password_file",
    5: "not authorized: allow this user in the broker's ACL (or set [mqtt] username)",
    128: "the broker refused without a reason; check its log",
    132: "the broker does not speak MQTT 5; upgrade it (e.g. Mosquitto >= 1.6)",
    133: "the broker rejected the client id; set a different [mqtt] client_id",
    134: "wrong user name or password: check [mqtt] username and GEARWATCH_MQTT_PASSWORD / "
         "password_file",
    135: "not authorized: give this user access in the broker's ACL, or set [mqtt] username "
         "if the broker does not allow anonymous clients",
    136: "the broker is unavailable; check its log",
    137: "the broker is busy; try again, then check its load",
    138: "this client is banned by the broker",
    140: "the broker wants another authentication method",
    156: "the broker says use another server; check [mqtt] host",
    157: "the broker has moved; check [mqtt] host",
    159: "connection rate exceeded; the broker throttles reconnects",
}


@dataclass(frozen=True)
class Finding:
    check: str
    level: str  # OK | WARN | FAIL
    message: str
    fix: str = ""

    def render(self) -> str:
        tag = {OK: "[ OK ]", WARN: "[WARN]", FAIL: "[FAIL]"}[self.level]
        line = f"{tag} {self.check}: {self.message}"
        if self.fix:
            line += f"\n       fix: {self.fix}"
        return line


Check = Callable[[AgentConfig], Iterator[Finding]]


# -- MQTT --------------------------------------------------------------------------------------
def _tcp_probe(host: str, port: int, timeout: float) -> str | None:
    """None when something listens on host:port, else why not."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return None
    except socket.gaierror as e:
        return f"cannot resolve host {host!r} ({e.strerror})"
    except ConnectionRefusedError:
        return f"connection refused on {host}:{port} (nothing listens on that port)"
    except TimeoutError:
        return f"no answer from {host}:{port} within {timeout:g} s (firewall or wrong host?)"
    except OSError as e:
        return f"cannot connect to {host}:{port}: {e.strerror or e}"


def check_mqtt(cfg: AgentConfig, timeout: float = 5.0) -> Iterator[Finding]:
    m = cfg.mqtt
    if not m.enabled:
        yield Finding("mqtt", OK, "disabled ([mqtt] enabled = false)")
        return
    why = _tcp_probe(m.host, m.port, timeout)
    if why is not None:
        yield Finding(
            "mqtt", FAIL, f"broker not reachable: {why}",
            f"check [mqtt] host = {m.host!r} and port = {m.port} (Mosquitto's default is 1883, "
            "8883 with TLS), and that the broker runs: systemctl status mosquitto",
        )
        return
    yield from _mqtt_connect(m, timeout)


def _mqtt_connect(m: MqttSection, timeout: float) -> Iterator[Finding]:
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    # never the agent's own client id: that would take over its persistent session
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"{m.client_id}-doctor-"
                         f"{os.getpid()}", protocol=mqtt.MQTTv5)
    try:
        if m.username:
            client.username_pw_set(m.username, m.secret())
        if m.tls:
            client.tls_set(ca_certs=m.ca_file, certfile=m.cert_file, keyfile=m.key_file,
                           cert_reqs=ssl.CERT_REQUIRED)
            client.tls_insecure_set(m.tls_insecure)
    except (ConfigError, OSError, ssl.SSLError) as e:
        yield Finding("mqtt", FAIL, f"cannot set up credentials/TLS: {e}",
                      "check [mqtt] password_file, ca_file, cert_file and key_file")
        return
    got: dict[str, int | str] = {}
    done = threading.Event()

    def on_connect(c: object, u: object, flags: object, rc: object, props: object) -> None:
        got["code"] = int(getattr(rc, "value", 0))
        got["name"] = str(rc)
        done.set()

    client.on_connect = on_connect
    try:
        client.connect(m.host, m.port, keepalive=10)
    except ssl.SSLError as e:
        yield Finding("mqtt", FAIL, f"TLS handshake with {m.host}:{m.port} failed: {e}",
                      "check [mqtt] tls and ca_file, or use the broker's plain port")
        return
    except OSError as e:
        yield Finding("mqtt", FAIL, f"cannot connect to {m.host}:{m.port}: {e}",
                      "check [mqtt] host and port")
        return
    client.loop_start()
    try:
        if not done.wait(timeout):
            yield Finding(
                "mqtt", FAIL, f"{m.host}:{m.port} accepts TCP but sent no MQTT CONNACK in "
                f"{timeout:g} s", "is this port the broker's MQTT listener (not a websocket, "
                "TLS or other service)? check [mqtt] port and tls")
            return
        code = int(got["code"])
        who = f"as {m.username!r}" if m.username else "anonymously"
        if code == 0:
            yield Finding("mqtt", OK, f"broker {m.host}:{m.port} accepted the connection {who}")
        else:
            yield Finding("mqtt", FAIL,
                          f"broker {m.host}:{m.port} refused the connection {who}: CONNACK "
                          f"reason {code} ({got['name']})",
                          CONNACK_FIXES.get(code, "see the broker's log"))
    finally:
        with contextlib.suppress(Exception):
            client.disconnect()
        client.loop_stop()


# -- InfluxDB ----------------------------------------------------------------------------------
def check_influx(cfg: AgentConfig, timeout: float = 5.0) -> Iterator[Finding]:
    i = cfg.influx
    if not i.enabled:
        yield Finding("influx", OK, "disabled ([influx] enabled = false)")
        return
    try:
        auth = (httpx.BasicAuth(i.username, i.password_secret() or "")
                if i.version == 1 and i.username else None)
        with httpx.Client(base_url=i.url, timeout=timeout, auth=auth) as http:
            if i.version == 1:
                yield from _influx_v1(i, http)
            else:
                yield from _influx_v2(i, http)
    except httpx.ConnectError as e:
        yield Finding("influx", FAIL, f"InfluxDB not reachable at {i.url}: {e}",
                      "check [influx] url (InfluxDB's default port is 8086) and that it runs: "
                      "systemctl status influxdb")
    except httpx.TimeoutException:
        yield Finding("influx", FAIL, f"InfluxDB at {i.url} did not answer in {timeout:g} s",
                      "check [influx] url and the network path to it")
    except ConfigError as e:
        yield Finding("influx", FAIL, str(e), "fix the credential file or variable")


def _probe_line() -> bytes:
    return f"{PROBE_MEASUREMENT},by=gearwatch-doctor ok=1i {time.time_ns()}".encode()


def _influx_v1(i: InfluxSection, http: httpx.Client) -> Iterator[Finding]:
    ping = http.get("/ping")
    version = ping.headers.get("X-Influxdb-Version", "?")
    if ping.status_code >= 300:
        yield Finding("influx", FAIL, f"{i.url}/ping answered {ping.status_code}",
                      "is [influx] url an InfluxDB 1.x server? (for 2.x set version = 2)")
        return
    if version.startswith(("2.", "v2.", "3.")):
        yield Finding("influx", WARN, f"{i.url} is InfluxDB {version} but [influx] version = 1",
                      "set version = 2 with org, bucket and a token (the 1.x compatibility "
                      "API needs a DBRP mapping)")
    who = f"user {i.username!r}" if i.username else "no user"
    r = http.post("/query", data={"q": "SHOW DATABASES"})
    if r.status_code == 401:
        yield Finding(
            "influx", FAIL, f"InfluxDB {i.url} rejected the credentials ({who}): "
            f"{_err(r)}",
            "InfluxDB has auth enabled: set [influx] username and its password in "
            "GEARWATCH_INFLUX_PASSWORD or password_file" if not i.username else
            f"the password of {i.username!r} is wrong: fix GEARWATCH_INFLUX_PASSWORD / "
            "password_file (or SET PASSWORD FOR the user in InfluxDB)")
        return
    yield Finding("influx", OK, f"InfluxDB {version} at {i.url} answers ({who})")
    dbs = {row[0] for s in r.json().get("results", [{}])[0].get("series", [])
           for row in s.get("values", [])} if r.status_code == 200 else set()
    if i.database not in dbs and r.status_code == 200:
        if i.create_database:
            c = http.post("/query", data={"q": f'CREATE DATABASE "{i.database}"'})
            if c.status_code >= 300 or "error" in c.text:
                yield Finding("influx", FAIL, f"database {i.database!r} does not exist and "
                              f"{who} cannot create it: {_err(c)}",
                              f"create it as an admin: influx -execute 'CREATE DATABASE "
                              f"\"{i.database}\"', or set [influx] database to an existing one")
                return
            yield Finding("influx", OK, f"created database {i.database!r} (as the agent would)")
        else:
            yield Finding("influx", FAIL, f"database {i.database!r} does not exist",
                          "create it, or set [influx] create_database = true")
            return
    w = http.post("/write", params={"db": i.database, "precision": "ns"},
                  content=_probe_line())
    if w.status_code == 204:
        d = http.post("/query", params={"db": i.database},
                      data={"q": f'DROP SERIES FROM "{PROBE_MEASUREMENT}"'})
        if d.status_code == 200 and "error" not in d.text:
            yield Finding("influx", OK, f"database {i.database!r} is writable (probe point "
                          "written and deleted)")
        else:
            yield Finding("influx", WARN, f"database {i.database!r} is writable, but the probe "
                          f"point could not be deleted: {_err(d)}",
                          f'delete it by hand: DROP MEASUREMENT "{PROBE_MEASUREMENT}"')
    elif w.status_code in (401, 403):
        yield Finding("influx", FAIL, f"{who} may not write to {i.database!r}: {_err(w)}",
                      f'as an admin: GRANT WRITE ON "{i.database}" TO "{i.username}"')
    elif w.status_code == 404:
        yield Finding("influx", FAIL, f"database {i.database!r} not found: {_err(w)}",
                      "create it, or fix [influx] database")
    else:
        yield Finding("influx", FAIL, f"probe write answered {w.status_code}: {_err(w)}",
                      "see InfluxDB's log")


def _influx_v2(i: InfluxSection, http: httpx.Client) -> Iterator[Finding]:
    token = i.token_secret()
    if not token:
        yield Finding("influx", FAIL, "no InfluxDB 2.x token configured",
                      "set GEARWATCH_INFLUX_TOKEN or [influx] token_file")
        return
    headers = {"Authorization": f"Token {token}"}
    params = {"org": i.org, "bucket": i.bucket, "precision": "ns"}
    w = http.post("/api/v2/write", params=params, content=_probe_line(), headers=headers)
    if w.status_code in (401, 403):
        yield Finding("influx", FAIL, f"InfluxDB {i.url} rejected the token: {_err(w)}",
                      "create a token with write access to the bucket (influx auth create "
                      "--write-bucket ...) and put it in GEARWATCH_INFLUX_TOKEN / token_file")
        return
    if w.status_code == 404:
        yield Finding("influx", FAIL, f"org {i.org!r} or bucket {i.bucket!r} not found: "
                      f"{_err(w)}", "fix [influx] org and bucket (influx bucket list)")
        return
    if w.status_code >= 300:
        yield Finding("influx", FAIL, f"probe write answered {w.status_code}: {_err(w)}",
                      "see InfluxDB's log")
        return
    d = http.post("/api/v2/delete", params={"org": i.org, "bucket": i.bucket}, headers=headers,
                  json={"start": "1970-01-01T00:00:00Z", "stop": "2100-01-01T00:00:00Z",
                        "predicate": f'_measurement="{PROBE_MEASUREMENT}"'})
    if d.status_code < 300:
        yield Finding("influx", OK, f"bucket {i.bucket!r} in org {i.org!r} at {i.url} is "
                      "writable (probe point written and deleted)")
    else:
        yield Finding("influx", OK, f"bucket {i.bucket!r} at {i.url} is writable (the probe "
                      f"point {PROBE_MEASUREMENT!r} stays: this server has no delete API)")


def _err(r: httpx.Response) -> str:
    try:
        doc = r.json()
    except ValueError:
        return r.text.strip()[:200] or f"HTTP {r.status_code}"
    if isinstance(doc, dict):
        res = doc.get("results")
        if isinstance(res, list) and res and isinstance(res[0], dict) and "error" in res[0]:
            return str(res[0]["error"])
        return str(doc.get("error") or doc.get("message") or doc)[:200]
    return str(doc)[:200]


# -- local things --------------------------------------------------------------------------
def check_state_dir(cfg: AgentConfig) -> Iterator[Finding]:
    d = Path(cfg.agent.state_dir)
    probe = d if d.exists() else next((p for p in d.parents if p.exists()), Path("/"))
    if not os.access(probe, os.W_OK | os.X_OK):
        yield Finding("state_dir", FAIL, f"{probe} is not writable by uid {os.getuid()}",
                      f"create {d} owned by the agent's user (the installer does: "
                      "/var/lib/gearwatch owned by gearwatch), or set [agent] state_dir")
        return
    yield Finding("state_dir", OK, f"{d} is writable" + ("" if d.exists() else
                                                          " (will be created)"))


def check_metrics_port(cfg: AgentConfig) -> Iterator[Finding]:
    mc = cfg.metrics
    if not mc.enabled or mc.port == 0:
        return
    with socket.socket() as s:
        try:
            s.bind((mc.bind, mc.port))
        except OSError:
            url = f"http://{'127.0.0.1' if mc.bind in ('0.0.0.0', '') else mc.bind}:{mc.port}"
            try:
                body = httpx.get(url + "/metrics", timeout=3).text
            except httpx.HTTPError:
                body = ""
            if "gearwatch_samples_received_total" in body or "gearwatch_" in body:
                yield Finding("metrics", OK, f"{url}/metrics is served by a running agent")
            else:
                yield Finding("metrics", FAIL, f"port {mc.port} on {mc.bind} is taken by "
                              "another program", "set [metrics] port to a free port")
            return
    yield Finding("metrics", OK, f"port {mc.port} on {mc.bind} is free for /metrics")


# -- Modbus devices ------------------------------------------------------------------------
def check_modbus(cfg: AgentConfig) -> Iterator[Finding]:
    """Connect to every configured device and read the first register of each unit."""
    import asyncio

    for dev in getattr(cfg, "modbus", []):
        yield from asyncio.run(_modbus_device(dev))


async def _modbus_device(dev: Any) -> list[Finding]:
    from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
    from pymodbus.framer import FramerType

    name = f"modbus {dev.name}"
    where = (f"{dev.host}:{dev.port}" if dev.transport == "tcp"
             else f"{dev.serial_port} at {dev.baudrate} baud {dev.bytesize}{dev.parity}"
                  f"{dev.stopbits}")
    client: Any
    if dev.transport == "tcp":
        client = AsyncModbusTcpClient(dev.host, port=dev.port, timeout=dev.timeout_s, retries=0,
                                      reconnect_delay=0)
    else:
        client = AsyncModbusSerialClient(
            dev.serial_port or "", framer=FramerType.RTU, baudrate=dev.baudrate,
            bytesize=dev.bytesize, parity=dev.parity, stopbits=dev.stopbits,
            timeout=dev.timeout_s, retries=0, reconnect_delay=0)
    out: list[Finding] = []
    try:
        if not await client.connect():
            fix = (f"check host = {dev.host!r} and port = {dev.port} of [[modbus]] {dev.name!r} "
                   "(Modbus TCP's default port is 502) and that the device or gateway is on"
                   if dev.transport == "tcp" else
                   f"check serial_port = {dev.serial_port!r}, that it exists and that the "
                   "gearwatch user is in the dialout group")
            return [Finding(name, FAIL, f"cannot connect to {where}", fix)]
        for unit in dev.units:
            reg = unit.registers[0]
            addr = reg.address - dev.address_base
            fn = {"holding": client.read_holding_registers, "input": client.read_input_registers,
                  "coil": client.read_coils, "discrete": client.read_discrete_inputs}[reg.table]
            what = f"unit {unit.unit_id} {reg.table} register {reg.address}"
            try:
                resp = await fn(addr, count=max(reg.words, 1) if reg.table in
                                ("holding", "input") else 1, device_id=unit.unit_id)
            except Exception as e:  # pymodbus raises ModbusIOException on a timeout
                out.append(Finding(
                    name, FAIL, f"{what} at {where} does not answer ({type(e).__name__}: {e})",
                    f"check unit_id = {unit.unit_id} (the device's slave/unit address)"
                    + (", baudrate, parity and wiring (A/B swapped?)" if dev.transport == "rtu"
                       else " and that the gateway forwards it")
                    + f"; a slow device needs a larger timeout_s (now {dev.timeout_s:g})"))
                continue
            if resp.isError():
                code = getattr(resp, "exception_code", None)
                hint = {1: "the device does not support this function: check `table`",
                        2: "illegal data address: check `address` and address_base (manuals "
                           "often count from 1: address_base = 1)",
                        3: "illegal data value: check `type`/`length` (register count)",
                        6: "the device is busy: raise poll_interval_s or request_pause_s"}
                no_unit = (f"check unit_id = {unit.unit_id} (the device's slave/unit address): "
                           "gateways and many devices answer this for a unit id they do not "
                           "have")
                hint.update({4: no_unit, 10: no_unit, 11: no_unit})
                out.append(Finding(name, FAIL, f"{what} at {where} does not answer: Modbus "
                                   f"exception {code}",
                                   hint.get(code or 0, "see the device's manual")))
                continue
            got = resp.registers if reg.table in ("holding", "input") else resp.bits[:1]
            out.append(Finding(name, OK, f"{what} at {where} answers ({got})"))
    finally:
        client.close()
    return out


# -- model bundles ---------------------------------------------------------------------------
def check_bundles(cfg: AgentConfig, models_dir: Path | None = None,
                  keys_dir: Path | None = None) -> Iterator[Finding]:
    """Verify every bundle in the model registry (<state_dir>/models) against the trusted keys
    (the config file's folder/keys): a bundle that fails here is one the agent refuses."""
    from models.bundle import BundleError, load_bundle, load_trusted_keys

    models = models_dir or Path(cfg.models.registry(cfg.agent.state_dir))
    bundles = sorted(models.glob("*/*.gwb")) if models.is_dir() else []
    if not bundles:
        yield Finding("models", OK, f"no model bundles in {models} (online detector only)")
        return
    # the keys the agent trusts (models.trusted_keys), else --trusted-keys / the config's keys/
    configured = [Path(p) for p in cfg.models.trusted_keys if Path(p).exists()]
    keys_at = keys_dir or (configured[0] if configured and _KEYS_DIR_DEFAULTED else _KEYS_DIR)
    try:
        keys = (load_trusted_keys(configured) if configured and keys_dir is None
                and _KEYS_DIR_DEFAULTED else
                load_trusted_keys([keys_at]) if keys_at.exists() else {})
    except (OSError, ValueError, BundleError):
        keys = {}
    if not keys:
        yield Finding("models", FAIL, f"{len(bundles)} bundle(s) in {models} but no trusted "
                      f"public key in {keys_at}",
                      f"copy the trainer's public key (gearwatch train keygen: NAME.pub) to "
                      f"{keys_at}/")
        return
    for b in bundles:
        try:
            bundle = load_bundle(b.read_bytes(), keys)
        except BundleError as e:
            yield Finding("models", FAIL, f"{b} is refused: {type(e).__name__}: {e}",
                          "the file was altered or signed by an unknown key: delete it and "
                          "republish it from the trainer (gearwatch train publish), or add the "
                          f"signer's public key to {keys_at}")
        except OSError as e:
            yield Finding("models", FAIL, f"cannot read {b}: {e}",
                          "give the gearwatch user read access")
        else:
            yield Finding("models", OK, f"{b.name}: {bundle.asset_class} {bundle.version}, "
                          "signature and hashes check")


_KEYS_DIR = Path("/etc/gearwatch/keys")
_KEYS_DIR_DEFAULTED = True  # no --trusted-keys: the config's models.trusted_keys win


CHECKS: list[tuple[str, Check]] = [
    ("mqtt", check_mqtt),
    ("influx", check_influx),
    ("state_dir", check_state_dir),
    ("metrics", check_metrics_port),
    ("modbus", check_modbus),
    ("models", check_bundles),
]


def run_checks(cfg: AgentConfig, only: list[str] | None = None) -> list[Finding]:
    out: list[Finding] = []
    for name, check in CHECKS:
        if only and name not in only:
            continue
        try:
            out.extend(check(cfg))
        except Exception as e:  # a check must never hide the others
            out.append(Finding(name, FAIL, f"the check itself failed: {e!r}",
                               "please report this with the config (secrets removed)"))
    return out


def cmd_doctor(args: argparse.Namespace) -> int:
    global _KEYS_DIR, _KEYS_DIR_DEFAULTED
    _KEYS_DIR = Path(args.trusted_keys) if args.trusted_keys else Path(args.config).parent / "keys"
    _KEYS_DIR_DEFAULTED = not args.trusted_keys
    try:
        cfg = load_config(args.config)
    except ConfigError as e:
        print(Finding("config", FAIL, f"{args.config}: {e}",
                      "fix the keys named above (gearwatch agent check -c FILE)").render())
        return 1
    print(Finding("config", OK, f"{args.config} is valid ({len(cfg.assets)} assets)").render())
    findings = run_checks(cfg, args.only or None)
    for f in findings:
        print(f.render())
    failed = [f for f in findings if f.level == FAIL]
    warned = [f for f in findings if f.level == WARN]
    print(f"\n{len(failed)} problem(s), {len(warned)} warning(s)"
          + ("" if failed else ": the agent should start with this config"))
    sys.stdout.flush()
    return 1 if failed else 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("doctor", help="check a config against the real broker, InfluxDB, "
                       "devices and models, and say what to fix")
    p.add_argument("-c", "--config", default="/etc/gearwatch/gearwatch.toml")
    p.add_argument("--only", action="append", choices=[n for n, _ in CHECKS],
                   help="run only this check (repeatable)")
    p.add_argument("--trusted-keys", help="public keys that sign model bundles "
                   "(default: the config file's folder/keys, /etc/gearwatch/keys)")
    p.set_defaults(func=cmd_doctor)
