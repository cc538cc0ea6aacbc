"""Config validation names the key and the fix; secrets come from env or files."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_agent.config import ConfigError, load_config, parse_config

ASSETS = {"assets": [{"id": "p1", "class": "centrifugal_pump"}]}


def error_of(data: dict[str, object]) -> str:
    with pytest.raises(ConfigError) as e:
        parse_config(data)
    return str(e.value)


def test_typo_suggests_the_key() -> None:
    msg = error_of({**ASSETS, "mqtt": {"prot": 1883}})
    assert "mqtt.prot" in msg and "did you mean 'port'" in msg


def test_wrong_type_names_key_value_and_fix() -> None:
    msg = error_of({**ASSETS, "influx": {"batch_points": "lots"}})
    assert "influx.batch_points" in msg and "'lots'" in msg and "whole number" in msg


def test_unknown_class_suggests_a_known_one() -> None:
    msg = error_of({"assets": [{"id": "p1", "class": "centrifugal-pump"}]})
    assert "did you mean 'centrifugal_pump'" in msg


def test_hysteresis_and_asset_ids() -> None:
    msg = error_of({**ASSETS, "events": {"open_threshold": 2, "close_threshold": 3}})
    assert "close_threshold must be below open_threshold" in msg
    msg = error_of({"assets": [{"id": "a/b", "class": "centrifugal_pump"}]})
    assert "assets[0].id" in msg and "'/'" in msg


def test_no_assets_is_an_error() -> None:
    assert "assets" in error_of({})


def test_custom_class(tmp_path: Path) -> None:
    p = tmp_path / "g.toml"
    p.write_text("""
[[asset_classes]]
name = "fan"
sample_period_s = 0.5
sensors = [{ name = "rpm", low = 0 }, { name = "temp", unit = "degC" }]
[[assets]]
id = "fan-1"
class = "fan"
""")
    cfg = load_config(p)
    (aid, schema), = cfg.asset_list()
    assert aid == "fan-1" and schema.sensor_names == ("rpm", "temp")
    assert schema.period_ns == 500_000_000


def test_bad_toml_and_missing_file(tmp_path: Path) -> None:
    p = tmp_path / "bad.toml"
    p.write_text("[mqtt\nport = 1")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(p)
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "none.toml")


def test_secrets_from_env_and_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GEARWATCH_MQTT_PASSWORD", "from-env")
    cfg = parse_config({**ASSETS, "mqtt": {"username": "agent"}})
    assert cfg.mqtt.secret() == "from-env"
    f = tmp_path / "tok"
    f.write_text("from-file\n")
    cfg = parse_config({**ASSETS, "influx": {"token_file": str(f)}})
    assert cfg.influx.token_secret() == "from-file"
    cfg = parse_config({**ASSETS, "influx": {"token_file": str(tmp_path / "missing")}})
    with pytest.raises(ConfigError, match="cannot read credential file"):
        cfg.influx.token_secret()


def test_tls_files_are_checked_with_the_key_and_the_fix(tmp_path: Path) -> None:
    from gearwatch.localservers import make_pki

    msg = error_of({**ASSETS, "mqtt": {"tls": True, "ca_file": str(tmp_path / "none.crt")}})
    assert "mqtt.ca_file" in msg and "not found" in msg and "CA certificate" in msg
    msg = error_of({**ASSETS, "mqtt": {"ca_file": "/etc/ssl/x.crt"}})
    assert "mqtt.tls is false" in msg and "8883" in msg
    pki = make_pki(tmp_path / "pki")
    msg = error_of({**ASSETS, "mqtt": {"tls": True, "cert_file": str(pki.client_crt)}})
    assert "cert_file and mqtt.key_file go together" in msg
    junk = tmp_path / "junk.crt"
    junk.write_text("not a certificate\n")
    msg = error_of({**ASSETS, "mqtt": {"tls": True, "ca_file": str(junk)}})
    assert "mqtt.ca_file" in msg and "no PEM certificate" in msg
    msg = error_of({**ASSETS, "mqtt": {"tls": True, "cert_file": str(pki.client_crt),
                                       "key_file": str(pki.server_key)}})  # not its key
    assert "cannot load the client certificate and key" in msg
    msg = error_of({**ASSETS, "mqtt": {"tls_insecure": True}})
    assert "tls_insecure" in msg
    ok = parse_config({**ASSETS, "mqtt": {"tls": True, "ca_file": str(pki.ca_crt),
                                          "cert_file": str(pki.client_crt),
                                          "key_file": str(pki.client_key)}})
    assert ok.mqtt.cert_file == str(pki.client_crt) and not ok.mqtt.tls_insecure
