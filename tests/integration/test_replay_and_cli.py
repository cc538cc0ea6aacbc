"""CSV replay over a real Mosquitto, and the simulator transport commands."""

from __future__ import annotations

import argparse
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from edge_agent.sources.payloads import DECODERS, DecodeContext
from simulators.replay import messages, parse_time, publish, read_rows
from simulators.transports_cli import add_commands
from tests.inputs_support import mosquitto, pump_registry

pytestmark = pytest.mark.integration

CSV = """ts,asset,speed_rpm,flow_m3h
2024-01-01T00:00:00Z,pump-1,1500.5,100.25
2024-01-01T00:00:01Z,pump-2,1400,
2024-01-01T00:00:02Z,pump-1,1501,101
"""


def test_parse_time_units() -> None:
    assert parse_time("1700000000") == 1_700_000_000_000_000_000
    assert parse_time("1700000000123") == 1_700_000_000_123_000_000
    assert parse_time("1700000000123456789") == 1_700_000_000_123_456_789
    assert parse_time("2024-01-01T00:00:00.5Z") == 1_704_067_200_500_000_000
    with pytest.raises(ValueError, match="time zone"):
        parse_time("2024-01-01T00:00:00")


def test_messages_are_retimed_by_the_speedup(tmp_path: Path) -> None:
    f = tmp_path / "rec.csv"
    f.write_text(CSV)
    rows = read_rows(f)
    assert [r.asset for r in rows] == ["pump-1", "pump-2", "pump-1"]
    assert rows[1].values == {"speed_rpm": 1400.0}  # empty cells are absent, not zero
    msgs = list(messages(rows, "plant/{site}/{asset}/telemetry", "s1", 10.0, 1000))
    assert [m[0] for m in msgs] == [0.0, 0.1, 0.2]
    assert msgs[2][1] == "plant/s1/pump-1/telemetry"
    assert msgs[2][2] == b'{"ts":200001000,"values":{"speed_rpm":1501.0,"flow_m3h":101.0}}'


def test_replay_publishes_the_json_format_the_agent_decodes(tmp_path: Path) -> None:
    f = tmp_path / "rec.csv"
    f.write_text(CSV)
    got: list[tuple[int, int, float]] = []
    with mosquitto() as port:
        ctx = DecodeContext(pump_registry(2))
        sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="agent")
        ready = threading.Event()
        sub.on_subscribe = lambda *a: ready.set()
        sub.on_connect = lambda c, *a: c.subscribe("plant/#", qos=1)

        def on_message(_c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
            b, rej = DECODERS["json"](msg.topic, bytes(msg.payload), ctx)
            assert rej == []
            got.extend(zip(b.asset.tolist(), b.sensor.tolist(), b.value.tolist(), strict=True))

        sub.on_message = on_message
        sub.connect("127.0.0.1", port)
        sub.loop_start()
        assert ready.wait(5)
        t0 = time.monotonic()
        assert publish(f, port=port, site="s1", speedup=20.0) == 3
        assert time.monotonic() - t0 >= 0.09  # 2 s of recording at 20x
        end = time.monotonic() + 5
        while len(got) < 5 and time.monotonic() < end:
            time.sleep(0.02)
        sub.loop_stop()
    assert got == [(0, 0, 1500.5), (0, 4, 100.25), (1, 0, 1400.0), (0, 0, 1501.0), (0, 4, 101.0)]


def test_replays_a_history_file_of_the_simulator(tmp_path: Path) -> None:
    from simulators.history import write_history

    path, _ = write_history(tmp_path, ["pump-1", "pump-2"], 3.0, [], seed=1)
    rows = read_rows(path)
    assert len(rows) == 6 and {r.asset for r in rows} == {"pump-1", "pump-2"}
    assert "label" not in rows[0].values and len(rows[0].values) == 9


def test_transport_commands_parse() -> None:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers()
    add_commands(sub)
    a = parser.parse_args(["modbus-tcp", "--pumps", "3", "--port", "1502", "--speedup", "10"])
    assert (a.pumps, a.port, a.speedup, a.func.__name__) == (3, 1502, 10.0, "run_modbus_tcp")
    a = parser.parse_args(["serial", "--format", "kv", "--mode", "polled"])
    assert a.func.__name__ == "run_serial" and a.request == "MEAS?\\r\\n"
    a = parser.parse_args(["modbus-rtu"])
    assert a.baudrate == 115200
    a = parser.parse_args(["replay", "x.csv", "--speedup", "60"])
    assert a.file == Path("x.csv") and a.speedup == 60.0


def test_modbus_tcp_command_runs_for_its_duration() -> None:
    parser = argparse.ArgumentParser()
    add_commands(parser.add_subparsers())
    from tests.inputs_support import free_port

    a = parser.parse_args(["modbus-tcp", "--port", str(free_port()), "--duration", "0.3",
                           "--speedup", "10"])
    t0 = time.monotonic()
    assert a.func(a) == 0
    assert time.monotonic() - t0 < 3
