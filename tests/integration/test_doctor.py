"""`gearwatch doctor` against real servers: each misconfiguration is found and its fix named."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from gearwatch import localservers as ls
from tests.helpers import influx_query

pytestmark = pytest.mark.integration

ADMIN, ADMIN_PW = "gwadmin", "s3cret-pw"


def write_config(path: Path, mqtt_port: int, influx_url: str, db: str, state_dir: Path,
                 influx_extra: str = "", extra: str = "") -> Path:
    path.write_text(f"""
[agent]
site = "doctor"
state_dir = "{state_dir}"

[mqtt]
port = {mqtt_port}
client_id = "agent-doctor"

[influx]
url = "{influx_url}"
database = "{db}"
{influx_extra}

[metrics]
port = {ls.free_port()}

[[assets]]
id = "pump-1"
class = "centrifugal_pump"
{extra}
""")
    return path


def doctor(cfg: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    e = {k: v for k, v in os.environ.items() if not k.startswith("GEARWATCH_")}
    e.update(env or {})
    return subprocess.run([sys.executable, "-m", "gearwatch", "doctor", "-c", str(cfg)],
                          capture_output=True, text=True, timeout=120, env=e)


@pytest.fixture(scope="module")
def influx_auth(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ls.LocalServer]:
    """InfluxDB 1.x with auth-enabled and one admin, created over the HTTP API."""
    base = tmp_path_factory.mktemp("influx-auth")
    with ls.influxdb(base, auth=True, name="influxdb-auth").start() as s:
        r = httpx.post(s.url + "/query", data={
            "q": f"CREATE USER {ADMIN} WITH PASSWORD '{ADMIN_PW}' WITH ALL PRIVILEGES"},
            timeout=30)
        assert r.status_code == 200 and "error" not in r.text, r.text
        yield s


def test_healthy_config_passes_and_leaves_no_probe(
    mosquitto: ls.LocalServer, influxdb: ls.LocalServer, db_name: str, tmp_path: Path
) -> None:
    cfg = write_config(tmp_path / "ok.toml", mosquitto.port, influxdb.url, db_name,
                       tmp_path / "state")
    r = doctor(cfg)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "[ OK ] mqtt: broker 127.0.0.1:" in r.stdout
    assert f"database '{db_name}' is writable (probe point written and deleted)" in r.stdout
    assert "0 problem(s)" in r.stdout
    # the probe point was really written and deleted: the database exists, the series not
    assert influx_query(influxdb.url, db_name, "SHOW MEASUREMENTS") == []


def test_wrong_broker_port_is_named(
    influxdb: ls.LocalServer, db_name: str, tmp_path: Path
) -> None:
    wrong = ls.free_port()  # nothing listens here
    cfg = write_config(tmp_path / "c.toml", wrong, influxdb.url, db_name, tmp_path / "state")
    r = doctor(cfg)
    assert r.returncode == 1, r.stdout
    out = r.stdout
    assert f"[FAIL] mqtt: broker not reachable: connection refused on 127.0.0.1:{wrong}" in out
    assert f"fix: check [mqtt] host = '127.0.0.1' and port = {wrong}" in out
    # the other checks still ran and passed
    assert "[ OK ] influx:" in out
    assert "1 problem(s)" in out


def test_bad_influx_credentials_are_named(
    mosquitto: ls.LocalServer, influx_auth: ls.LocalServer, tmp_path: Path
) -> None:
    cfg = write_config(tmp_path / "c.toml", mosquitto.port, influx_auth.url, "plant",
                       tmp_path / "state", influx_extra=f'username = "{ADMIN}"')
    r = doctor(cfg, {"GEARWATCH_INFLUX_PASSWORD": "wrong-password"})
    assert r.returncode == 1, r.stdout
    assert f"[FAIL] influx: InfluxDB {influx_auth.url} rejected the credentials " \
           f"(user '{ADMIN}')" in r.stdout
    assert f"fix: the password of '{ADMIN}' is wrong: fix GEARWATCH_INFLUX_PASSWORD" in r.stdout

    # no user at all against an auth-enabled server: the fix says to configure one
    cfg2 = write_config(tmp_path / "c2.toml", mosquitto.port, influx_auth.url, "plant",
                        tmp_path / "state")
    r2 = doctor(cfg2)
    assert r2.returncode == 1
    assert "fix: InfluxDB has auth enabled: set [influx] username" in r2.stdout

    # the right password: the database is created and a probe point written and deleted
    r3 = doctor(cfg, {"GEARWATCH_INFLUX_PASSWORD": ADMIN_PW})
    assert r3.returncode == 0, r3.stdout
    assert "created database 'plant'" in r3.stdout
    assert "database 'plant' is writable (probe point written and deleted)" in r3.stdout


def test_invalid_config_is_reported_not_crashed(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text('[mqtt]\nprot = 1883\n[[assets]]\nid = "p"\nclass = "centrifugal_pump"\n')
    r = doctor(cfg)
    assert r.returncode == 1
    assert "[FAIL] config:" in r.stdout and "did you mean 'port'?" in r.stdout


def test_modbus_device_that_does_not_answer_is_named(
    mosquitto: ls.LocalServer, influxdb: ls.LocalServer, db_name: str, tmp_path: Path
) -> None:
    """A real Modbus TCP pump simulator serves unit 1; unit 7 is configured but silent, and a
    second device points at a port where nothing listens."""
    import asyncio
    import threading

    from simulators.pump_modbus import PumpModbusSim

    port, dead = ls.free_port(), ls.free_port()
    sim = PumpModbusSim(["pump-1"])
    loop = asyncio.new_event_loop()
    started = threading.Event()

    async def serve() -> None:
        await sim.start_tcp("127.0.0.1", port)
        sim.step()
        started.set()

    thread = threading.Thread(target=lambda: (loop.run_until_complete(serve()),
                                              loop.run_forever()), daemon=True)
    thread.start()
    try:
        assert started.wait(30)
        regs = ('registers = [{ table = "input", address = 0, type = "float32", '
                'sensor = "speed_rpm" }]')
        extra = f"""
[[modbus]]
name = "skid"
host = "127.0.0.1"
port = {port}
timeout_s = 1.0
order = "CDAB"
[[modbus.units]]
unit_id = 1
asset = "pump-1"
{regs}
[[modbus.units]]
unit_id = 7
asset = "pump-1"
registers = [{{ table = "holding", address = 1, type = "int16", sensor = "bearing_temp_c" }}]

[[modbus]]
name = "switched-off"
host = "127.0.0.1"
port = {dead}
[[modbus.units]]
unit_id = 1
asset = "pump-1"
registers = [{{ table = "input", address = 4, type = "float32", sensor = "flow_m3h" }}]
"""
        cfg = write_config(tmp_path / "c.toml", mosquitto.port, influxdb.url, db_name,
                           tmp_path / "state", extra=extra)
        r = doctor(cfg)
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
    out = r.stdout
    assert r.returncode == 1, out
    assert f"[ OK ] modbus skid: unit 1 input register 0 at 127.0.0.1:{port} answers" in out
    # the simulator, like a Modbus gateway, answers an exception for a unit id it lacks
    assert f"[FAIL] modbus skid: unit 7 holding register 1 at 127.0.0.1:{port} does not " \
           "answer: Modbus exception 4" in out
    assert "fix: check unit_id = 7 (the device's slave/unit address)" in out
    assert f"[FAIL] modbus switched-off: cannot connect to 127.0.0.1:{dead}" in out
    assert f"fix: check host = '127.0.0.1' and port = {dead} of [[modbus]] 'switched-off'" in out
    assert "2 problem(s)" in out


def test_tampered_bundle_is_named(
    mosquitto: ls.LocalServer, influxdb: ls.LocalServer, db_name: str, tmp_path: Path,
    blob: bytes, signing_key: Any,
) -> None:
    """A signed bundle in the registry checks; the same bundle with one byte changed does not."""
    from models.bundle import load_bundle, save_keypair, write_to_registry

    save_keypair(tmp_path / "keys", key=signing_key)
    key = signing_key
    state = tmp_path / "state"
    good = write_to_registry(state / "models", blob)
    load_bundle(good.read_bytes(), key.public_key())  # what the agent accepts
    cfg = write_config(tmp_path / "c.toml", mosquitto.port, influxdb.url, db_name, state)
    ok = doctor(cfg)
    assert ok.returncode == 0, ok.stdout
    assert f"[ OK ] models: {good.name}: " in ok.stdout
    assert "signature and hashes check" in ok.stdout

    data = bytearray(blob)
    data[len(data) // 2] ^= 0x01
    bad = good.with_name("20991231T000000Z-tampered.gwb")
    bad.write_bytes(bytes(data))
    r = doctor(cfg)
    assert r.returncode == 1, r.stdout
    assert f"[FAIL] models: {bad} is refused:" in r.stdout
    assert "fix: the file was altered or signed by an unknown key: delete it and republish " \
           "it from the trainer (gearwatch train publish)" in r.stdout
