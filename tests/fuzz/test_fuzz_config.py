"""The config loader: arbitrary TOML (text and bytes), arbitrary dicts, and a valid config with
one value changed anywhere give a valid `AgentConfig` or a `ConfigError` whose message names
the key; never a traceback."""

from __future__ import annotations

import datetime as dt
import tempfile
import tomllib
from pathlib import Path
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from edge_agent.config import AgentConfig, ConfigError, load_config, parse_config
from tests.fuzz.support import budget, counted

BASE: dict[str, Any] = {
    "agent": {"site": "s1", "state_dir": "/tmp/gw"},
    "mqtt": {"topics": ["plant/+/+/telemetry"], "format": "json", "timestamp": "ns"},
    "influx": {"version": 2, "url": "http://127.0.0.1:8086", "token_env": "T"},
    "events": {"open_threshold": 4.0, "close_threshold": 2.5},
    "alerts": {"rules": [{"name": "r", "assets": ["pump-*"], "warning": 3.0, "critical": 6.0}],
               "webhooks": [{"name": "ops", "url": "http://x/", "body": "ntfy"}],
               "commands": [{"name": "siren", "argv": ["/bin/true"]}]},
    "maintenance": [{"assets": ["pump-1"], "start": "2026-01-01T00:00:00Z",
                     "end": "2026-01-02T00:00:00Z"},
                    {"weekly": {"days": ["sat"], "start": "22:00", "end": "06:00"}}],
    "console": {"tokens": [{"name": "alice", "sha256": "0" * 64}]},
    "asset_classes": [{"name": "fan", "sensors": [{"name": "rpm", "low": 0, "high": 9000}],
                       "off_sensor": "rpm", "off_below": 10}],
    "assets": [{"id": "pump-1", "class": "centrifugal_pump"}, {"id": "fan-1", "class": "fan"}],
    "modbus": [{"name": "drive", "host": "10.0.0.5", "order": "CDAB", "units": [
        {"unit_id": 3, "asset": "pump-1", "registers": [
            {"address": 0, "type": "float32", "sensor": "speed_rpm"},
            {"address": 10, "type": "string", "length": 4, "name": "serial"}]}]}],
    "serial": [{"name": "probe", "port": "/dev/ttyUSB0", "framing": "kv", "asset": "pump-1",
                "sensor_map": {"T": "bearing_temp_c"}}],
    "sparkplug": {"group": "plant", "device_assets": {"drive-7": "pump-1"}},
}
NAMES = sorted({k for p in (BASE, *BASE.values()) if isinstance(p, dict) for k in p}
               | {"class", "id", "sensors", "registers", "units", "low", "high", "type"})

toml_scalar = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(), st.text(max_size=8),
    st.datetimes(timezones=st.none() | st.just(dt.UTC)), st.dates(), st.times())
value = st.recursive(
    toml_scalar,
    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.sampled_from(NAMES) | st.text(
        max_size=6), c, max_size=4),
    max_leaves=12)


def assert_clear(e: ConfigError, key: str | None = None) -> None:
    text = str(e)
    assert text.startswith("invalid configuration:\n") or "config" in text, text
    if key is not None:
        assert key in text, (key, text)


def test_the_base_config_is_valid() -> None:
    assert isinstance(parse_config(BASE), AgentConfig)


@given(doc=st.one_of(value, st.dictionaries(st.sampled_from(NAMES), value, max_size=6)))
@budget(300)
@counted
def test_arbitrary_documents_give_a_config_error(doc: Any) -> None:
    try:
        parse_config(doc)
    except ConfigError as e:
        assert_clear(e)


def paths(doc: Any, prefix: tuple[str | int, ...] = ()) -> list[tuple[str | int, ...]]:
    out = [prefix] if prefix else []
    if isinstance(doc, dict):
        for k, v in doc.items():
            out += paths(v, (*prefix, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out += paths(v, (*prefix, i))
    return out


PATHS = paths(BASE)


def replaced(doc: Any, path: tuple[str | int, ...], new: Any, delete: bool) -> Any:
    if not path:
        return new
    head, rest = path[0], path[1:]
    out = dict(doc) if isinstance(doc, dict) else list(doc)
    if delete and not rest:
        del out[head]  # type: ignore[arg-type]
    else:
        out[head] = replaced(doc[head], rest, new, delete)  # type: ignore[index]
    return out


@given(path=st.sampled_from(PATHS), new=value, delete=st.booleans())
@budget(400)
@counted
def test_one_bad_value_anywhere_names_its_key(path: tuple[str | int, ...], new: Any,
                                              delete: bool) -> None:
    try:
        parse_config(replaced(BASE, path, new, delete))
    except ConfigError as e:
        # the message names the section the value lives in
        assert_clear(e, str(path[0]))


@given(text=st.one_of(
    st.text(max_size=300),
    st.lists(st.sampled_from(['[mqtt]', '[[assets]]', 'id = "p"', 'class = "centrifugal_pump"',
                              'port = 99999', 'a = [[[[1]]]]', 'x = 1979-05-27T07:32:00Z',
                              '"\\ud800" = 1', 'k = """', '[agent]', 'site = 1', '= 1', '[[',
                              'format = "nope"', "a.b.c = 1", "\x00", "\ufeff"]),
             max_size=12).map("\n".join)),
    raw=st.binary(max_size=64), as_bytes=st.booleans())
@budget(300)
@counted
def test_any_file_gives_a_config_error(text: str, raw: bytes, as_bytes: bool) -> None:
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "gearwatch.toml"
        if as_bytes:
            p.write_bytes(text.encode("utf-8", "surrogatepass") + raw)
        else:
            p.write_text(text, "utf-8", "surrogatepass")
        try:
            load_config(p)
        except ConfigError as e:
            assert str(p) in str(e) or str(e).startswith("invalid configuration")


def test_regression_non_utf8_or_unreadable_config_file_is_a_config_error(
        tmp_path: Path) -> None:
    """A file that is not UTF-8 raised UnicodeDecodeError; a directory, IsADirectoryError;
    TOML nested deeper than the parser recurses, RecursionError."""
    p = tmp_path / "gearwatch.toml"
    p.write_bytes(b'[agent]\nsite = "\xff"\n')
    for path in (p, tmp_path):
        try:
            load_config(path)
        except ConfigError as e:
            assert str(path) in str(e)
        else:
            raise AssertionError("loaded")
    p.write_text("a = " + "[" * 5000 + "]" * 5000)
    try:
        tomllib.loads(p.read_text())
        deep_raises = False
    except RecursionError:
        deep_raises = True
    if deep_raises:
        try:
            load_config(p)
        except ConfigError as e:
            assert "nested" in str(e)
