"""Agent configuration: one TOML file, validated at start with messages that name key and fix.

Credentials never need to be in the TOML: each secret can come from an environment variable
(`*_env`, with a default name) or a file (`*_file`, e.g. a systemd credential).
"""

from __future__ import annotations

import difflib
import os
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from edge_agent.sources.modbus_config import ModbusDeviceConfig
from edge_agent.sources.serial_config import SerialPortConfig
from edge_agent.sources.sparkplug import SparkplugMapping
from models.catalog import BUILTIN_CLASSES
from models.schema import AssetSchema, OffCondition, SensorSpec


class ConfigError(Exception):
    """A config problem, phrased for the person editing the file."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def read_secret(value: str | None, env: str | None, file: str | None, what: str) -> str | None:
    """A secret from (in order) the file, the environment variable, or the literal value."""
    if file:
        try:
            return Path(file).read_text().strip()
        except OSError as e:
            raise ConfigError(f"{what}: cannot read credential file {file!r}: {e.strerror}") from e
    if env and os.environ.get(env):
        return os.environ[env]
    return value or None


class AgentSection(_Strict):
    site: str = "plant"
    state_dir: str = "./var/gearwatch"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_json: bool = False
    status_interval_s: float = Field(5.0, ge=0, le=3600,
                                     description="write state_dir/status.json; 0 = never")


class MqttSection(_Strict):
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(1883, ge=1, le=65535)
    client_id: str = "gearwatch-agent"
    username: str | None = None
    password: str | None = None
    password_env: str = "GEARWATCH_MQTT_PASSWORD"
    password_file: str | None = None
    tls: bool = False
    ca_file: str | None = None
    keepalive_s: int = Field(30, ge=5, le=3600)
    qos: Literal[0, 1] = 1
    session_expiry_s: int = Field(3600, ge=0)
    topics: list[str] = ["plant/+/+/telemetry"]
    format: str = "json"
    topic_template: str = "plant/{site}/{asset}/telemetry"
    timestamp: Literal["ns", "us", "ms", "s", "rfc3339", "receive"] = "ns"
    max_payload_bytes: int = Field(1 << 20, ge=64)
    alerts_topic: str = "plant/{site}/{asset}/alerts"
    dead_letter_topic: str | None = "gearwatch/{site}/deadletter"

    @field_validator("format")
    @classmethod
    def _known_format(cls, v: str) -> str:
        from edge_agent.sources.payloads import DECODERS

        if v not in DECODERS:
            raise ValueError(f"unknown payload format {v!r}; use one of {sorted(DECODERS)}")
        return v

    @field_validator("topic_template")
    @classmethod
    def _template_names_asset(cls, v: str) -> str:
        if "{asset}" not in v:
            raise ValueError("must contain '{asset}', e.g. 'plant/{site}/{asset}/telemetry'")
        return v

    def secret(self) -> str | None:
        return read_secret(self.password, self.password_env, self.password_file, "mqtt.password")


class InfluxSection(_Strict):
    enabled: bool = True
    version: Literal[1, 2] = 1
    url: str = "http://127.0.0.1:8086"
    # v1
    database: str = "gearwatch"
    username: str | None = None
    password: str | None = None
    password_env: str = "GEARWATCH_INFLUX_PASSWORD"
    password_file: str | None = None
    create_database: bool = True
    # v2 / v3
    org: str = "gearwatch"
    bucket: str = "gearwatch"
    token: str | None = None
    token_env: str = "GEARWATCH_INFLUX_TOKEN"
    token_file: str | None = None
    batch_points: int = Field(5000, ge=1)
    flush_interval_s: float = Field(0.25, gt=0, le=60)
    timeout_s: float = Field(10.0, gt=0)
    write_raw: bool = True

    @field_validator("url")
    @classmethod
    def _http(cls, v: str) -> str:
        if not v.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://, e.g. http://127.0.0.1:8086")
        return v.rstrip("/")

    def password_secret(self) -> str | None:
        return read_secret(self.password, self.password_env, self.password_file, "influx.password")

    def token_secret(self) -> str | None:
        return read_secret(self.token, self.token_env, self.token_file, "influx.token")


class MetricsSection(_Strict):
    enabled: bool = True
    bind: str = "127.0.0.1"
    port: int = Field(9108, ge=0, le=65535)


class FramerSection(_Strict):
    lateness_periods: float = Field(0.5, ge=0, le=100)
    max_future_s: float = Field(300.0, gt=0)
    max_past_s: float = Field(7 * 86400.0, gt=0)
    max_catchup_ticks: int = Field(600, ge=1)


class ScoringSection(_Strict):
    online_detector: Literal["mahalanobis", "river_loda", "river_hst"] = "mahalanobis"
    half_life_rows: int = Field(3600, ge=10, description="memory of the online statistics")
    river_cuts: int = Field(15, ge=2, le=500, description="LODA random projections")
    river_trees: int = Field(10, ge=1, le=100)
    river_height: int = Field(8, ge=2, le=15)
    river_window: int = Field(250, ge=10)
    warmup_rows: int = Field(1800, ge=10, description="rows learned before any score is made")
    calibration_rows: int = Field(1800, ge=20, description="rows scored to fit the calibration")
    seed: int = 42


class EventsSection(_Strict):
    open_threshold: float = Field(4.0, gt=0)
    close_threshold: float = Field(2.5, ge=0)
    min_duration_ticks: int = Field(10, ge=1)
    min_clear_ticks: int = Field(10, ge=1)
    top_sensors: int = Field(3, ge=1)

    @model_validator(mode="after")
    def _hysteresis(self) -> EventsSection:
        if self.close_threshold >= self.open_threshold:
            raise ValueError(
                "close_threshold must be below open_threshold (hysteresis), "
                f"got close {self.close_threshold} >= open {self.open_threshold}"
            )
        return self


class SensorConfig(_Strict):
    name: str
    unit: str = ""
    low: float | None = None
    high: float | None = None
    stale_after_s: float | None = Field(None, gt=0)


class AssetClassConfig(_Strict):
    name: str
    sample_period_s: float = Field(1.0, gt=0)
    window: int = Field(30, ge=2)
    off_sensor: str | None = None
    off_below: float | None = None
    off_grace_s: float = Field(0.0, ge=0)
    sensors: list[SensorConfig] = Field(min_length=1)

    def schema_(self) -> AssetSchema:
        inf = float("inf")
        return AssetSchema(
            asset_class=self.name,
            sample_period_s=self.sample_period_s,
            window=self.window,
            off_condition=(
                OffCondition(self.off_sensor, self.off_below, self.off_grace_s)
                if self.off_sensor is not None and self.off_below is not None
                else None
            ),
            sensors=tuple(
                SensorSpec(
                    s.name, s.unit, -inf if s.low is None else s.low,
                    inf if s.high is None else s.high, s.stale_after_s,
                )
                for s in self.sensors
            ),
        )


class AssetConfig(_Strict):
    id: str = Field(min_length=1)
    asset_class: str = Field(alias="class")

    @field_validator("id")
    @classmethod
    def _safe_id(cls, v: str) -> str:
        bad = set(v) & set("/+#, =\"'\n\t")
        if bad:
            raise ValueError(f"asset id {v!r} contains {''.join(sorted(bad))!r}; use letters, "
                             "digits, '-', '_' and '.'")
        return v


class AgentConfig(_Strict):
    agent: AgentSection = AgentSection()
    mqtt: MqttSection = MqttSection()
    influx: InfluxSection = InfluxSection()
    metrics: MetricsSection = MetricsSection()
    framer: FramerSection = FramerSection()
    scoring: ScoringSection = ScoringSection()
    events: EventsSection = EventsSection()
    asset_classes: list[AssetClassConfig] = []
    assets: list[AssetConfig] = Field(min_length=1)
    # industrial inputs: polled devices and serial instruments, and Sparkplug B naming
    modbus: list[ModbusDeviceConfig] = []
    serial: list[SerialPortConfig] = []
    sparkplug: SparkplugMapping = SparkplugMapping()

    @model_validator(mode="after")
    def _classes_known(self) -> AgentConfig:
        known = set(BUILTIN_CLASSES) | {c.name for c in self.asset_classes}
        for i, a in enumerate(self.assets):
            if a.asset_class not in known:
                hint = difflib.get_close_matches(a.asset_class, known, 1)
                raise ValueError(
                    f"assets[{i}] ({a.id}): unknown class {a.asset_class!r}; "
                    + (f"did you mean {hint[0]!r}? " if hint else "")
                    + f"define it under [[asset_classes]] or use one of {sorted(known)}"
                )
        return self

    @model_validator(mode="after")
    def _inputs_name_known_sensors(self) -> AgentConfig:
        schemas = self.schemas()
        classes = {a.id: schemas[a.asset_class] for a in self.assets}
        names = [d.name for d in self.modbus] + [p.name for p in self.serial]
        if len(set(names)) != len(names):
            raise ValueError("modbus/serial: each device and port needs its own `name`")
        for d in self.modbus:
            for u in d.units:
                for r in u.registers:
                    if r.sensor is None:
                        continue
                    asset = r.asset or u.asset or ""
                    where = f"modbus {d.name!r} unit {u.unit_id} register {r.address}"
                    if asset not in classes:
                        raise ValueError(f"{where}: asset {asset!r} is not among [[assets]]")
                    if classes[asset].index_of(r.sensor) is None:
                        raise ValueError(
                            f"{where}: asset {asset!r} has no sensor {r.sensor!r}; its sensors "
                            f"are {', '.join(classes[asset].sensor_names)}")
        for p in self.serial:
            if p.asset is not None and p.asset not in classes:
                raise ValueError(f"serial {p.name!r}: asset {p.asset!r} is not among [[assets]]")
        return self

    def schemas(self) -> dict[str, AssetSchema]:
        out = dict(BUILTIN_CLASSES)
        out.update({c.name: c.schema_() for c in self.asset_classes})
        return out

    def asset_list(self) -> list[tuple[str, AssetSchema]]:
        s = self.schemas()
        return [(a.id, s[a.asset_class]) for a in self.assets]


_FIXES = {
    "missing": "add it",
    "extra_forbidden": "remove it or check its spelling",
    "int_parsing": "write a whole number",
    "int_type": "write a whole number",
    "float_parsing": "write a number",
    "bool_parsing": "write true or false",
    "literal_error": "use one of the allowed values",
    "greater_than_equal": "raise it",
    "greater_than": "raise it",
    "less_than_equal": "lower it",
    "too_short": "add at least one entry",
}


def _loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for p in loc:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "config"


def format_errors(err: ValidationError, model: type[BaseModel] = AgentConfig) -> str:
    lines = []
    for e in err.errors():
        key = _loc(tuple(e["loc"]))
        msg = e["msg"].removeprefix("Value error, ")
        fix = _FIXES.get(e["type"], "")
        if e["type"] == "extra_forbidden":
            hint = _suggest(model, tuple(e["loc"]))
            if hint:
                fix = f"did you mean '{hint}'?"
        inp = e.get("input")
        quiet = e["type"] == "missing" or isinstance(inp, dict | list)
        got = "" if quiet else f" (got {inp!r:.60})"
        lines.append(f"  {key}: {msg}{got}" + (f" -> {fix}" if fix else ""))
    return "invalid configuration:\n" + "\n".join(lines)


def _suggest(model: type[BaseModel], loc: tuple[Any, ...]) -> str | None:
    cur: Any = model
    for p in loc[:-1]:
        if isinstance(p, int):
            continue
        field = getattr(cur, "model_fields", {}).get(p)
        if field is None:
            return None
        ann = field.annotation
        args = getattr(ann, "__args__", None)
        cur = args[0] if args else ann
    names = list(getattr(cur, "model_fields", {}))
    hit = difflib.get_close_matches(str(loc[-1]), names, 1)
    return hit[0] if hit else None


def parse_config(data: dict[str, Any]) -> AgentConfig:
    try:
        return AgentConfig.model_validate(data)
    except ValidationError as e:
        raise ConfigError(format_errors(e)) from None


def load_config(path: str | Path) -> AgentConfig:
    p = Path(path)
    try:
        data = tomllib.loads(p.read_text())
    except FileNotFoundError:
        raise ConfigError(
            f"config file {p} not found; copy deploy/gearwatch.toml and edit it"
        ) from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{p} is not valid TOML: {e}") from None
    return parse_config(data)
