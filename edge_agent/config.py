"""Agent configuration: one TOML file, validated at start with messages that name key and fix.

Credentials never need to be in the TOML: each secret can come from an environment variable
(`*_env`, with a default name) or a file (`*_file`, e.g. a systemd credential).
"""

from __future__ import annotations

import difflib
import os
import ssl
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
    # SIGTERM/SIGINT: stop inputs, flush sinks, exit 0 within this bound (keep it below the
    # unit's TimeoutStopSec, or systemd SIGKILLs the agent mid-flush)
    shutdown_timeout_s: float = Field(20.0, gt=0, le=600)


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
    ca_file: str | None = None  # PEM CA that signed the broker's certificate (else system CAs)
    cert_file: str | None = None  # client certificate (PEM) for mutual TLS, with key_file
    key_file: str | None = None  # its private key (PEM, unencrypted, mode 0600)
    tls_insecure: bool = False  # skip the broker hostname check (testing only)
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

    @model_validator(mode="after")
    def _tls_files(self) -> MqttSection:
        """TLS material is checked at `agent check`, not at the first reconnect at 3 a.m."""
        if not self.tls:
            for key in ("ca_file", "cert_file", "key_file"):
                if getattr(self, key):
                    raise ValueError(f"mqtt.{key} is set but mqtt.tls is false; set tls = true "
                                     f"(the broker's TLS port is usually 8883) or remove {key}")
            if self.tls_insecure:
                raise ValueError("mqtt.tls_insecure = true without tls = true means nothing; "
                                 "remove it")
            return self
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("mqtt.cert_file and mqtt.key_file go together (mutual TLS); "
                             "set both or neither")
        what = {"ca_file": "the CA certificate (PEM) that signed the broker's certificate",
                "cert_file": "this agent's client certificate (PEM)",
                "key_file": "the client certificate's private key (PEM)"}
        for key, desc in what.items():
            path = getattr(self, key)
            if path is not None and not os.access(path, os.R_OK):
                why = "not found" if not os.path.exists(path) else "not readable by this user"
                raise ValueError(f"mqtt.{key}: {path!r} is {why}; point it at {desc}")
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        try:
            if self.ca_file:
                ctx.load_verify_locations(cafile=self.ca_file)
        except ssl.SSLError as e:
            raise ValueError(f"mqtt.ca_file: {self.ca_file!r} holds no PEM certificate ({e}); "
                             "point it at the CA certificate, e.g. ca.crt") from None
        try:
            if self.cert_file and self.key_file:
                ctx.load_cert_chain(self.cert_file, self.key_file, password=lambda: b"")
        except ssl.SSLError as e:
            raise ValueError(f"mqtt.cert_file/key_file: cannot load the client certificate and "
                             f"key ({e}); they must be PEM, match each other, and the key must "
                             "not be encrypted") from None
        return self

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
    max_backoff_s: float = Field(30.0, gt=0, le=3600, description="cap of the retry backoff")
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


_SIZE_UNITS = {"": 1, "b": 1, "kb": 1000, "mb": 1000**2, "gb": 1000**3, "tb": 1000**4,
               "kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30, "tib": 1 << 40}


def parse_size(v: object) -> object:
    """`1073741824`, `"1GiB"`, `"512 MB"` -> bytes; anything else is left to pydantic."""
    if not isinstance(v, str):
        return v
    s = v.strip().lower().replace(" ", "").replace("_", "")
    num = s.rstrip("kmgtib")
    unit = s[len(num):]
    if unit not in _SIZE_UNITS or not num:
        raise ValueError(f"not a size: {v!r}; write bytes or e.g. '512MiB', '2GiB', '1GB'")
    try:
        return int(float(num) * _SIZE_UNITS[unit])
    except ValueError:
        raise ValueError(f"not a size: {v!r}; write bytes or e.g. '512MiB', '2GiB'") from None


class SpoolSection(_Strict):
    """The durable store-and-forward between the agent and InfluxDB (edge_agent/sinks/spool.py).

    MQTT QoS 1 messages are acknowledged once their points are in the spool (fsync'd), so an
    InfluxDB outage is held here, not in the broker; `max_bytes` bounds it and `on_full` says
    what gives when an outage outlasts it.
    """

    enabled: bool = True
    dir: str | None = Field(None, description="default: <agent.state_dir>/spool")
    max_bytes: int = Field(1 << 30, ge=1 << 20, description="bytes on disk, all segments")
    segment_bytes: int = Field(16 << 20, ge=64 << 10, description="one segment file")
    on_full: Literal["drop_oldest", "drop_newest", "block"] = "drop_oldest"
    replay_points_per_s: float = Field(20_000.0, gt=0, description="backlog replay rate")
    memory_points: int = Field(50_000, ge=1, description="newest points sent from memory")
    fsync: bool = True
    alert_topic: str | None = "gearwatch/{site}/agent/alerts"

    @field_validator("max_bytes", "segment_bytes", mode="before")
    @classmethod
    def _size(cls, v: object) -> object:
        return parse_size(v)

    @model_validator(mode="after")
    def _room_for_segments(self) -> SpoolSection:
        if self.max_bytes < 4 * self.segment_bytes:
            raise ValueError(
                f"max_bytes ({self.max_bytes}) must be at least 4 x segment_bytes "
                f"({self.segment_bytes}) so the oldest segment can be dropped or delivered "
                "while others fill: raise spool.max_bytes or lower spool.segment_bytes")
        return self

    def path(self, state_dir: str) -> Path:
        return Path(self.dir) if self.dir else Path(state_dir) / "spool"


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


class ModelsSection(_Strict):
    """Learned models (LSTM-AE bundles): where they come from and who may sign them."""

    enabled: bool = True
    registry_dir: str | None = Field(
        None, description="folder of <asset_class>/<version>.gwb; default <state_dir>/models")
    trusted_keys: list[str] = Field(
        [], description="Ed25519 public keys (files or folders of *.pub) that may sign bundles")
    mqtt_topic: str | None = Field(
        "gearwatch/models/+", description="retained bundles from `gearwatch train publish`")
    device: str = Field("auto", description="auto (CUDA when present), cpu, cuda or cuda:N")
    stride: int = Field(1, ge=1, le=3600, description="score each asset every N rows")
    watch_interval_s: float = Field(5.0, gt=0, le=3600,
                                    description="how often the registry folder is re-read")
    max_bundle_mb: int = Field(256, ge=1, le=4096)

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        if v in ("auto", "cpu", "cuda") or (v.startswith("cuda:") and v[5:].isdigit()):
            return v
        raise ValueError(f"unknown device {v!r}; use auto, cpu, cuda or cuda:N")

    def registry(self, state_dir: str) -> str:
        return self.registry_dir or f"{state_dir.rstrip('/')}/models"


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



# -- alerting, feedback, console (issue 5) ------------------------------------------------------

SEVERITIES = ("warning", "critical")


class AlertRuleConfig(_Strict):
    """Alert policy for the assets it matches; the first matching rule wins.

    `assets` / `classes` are globs (fnmatch) on the asset id / class; both empty = every asset.
    Scores are surprise (-log10 p): `warning` is the open threshold, `critical` the escalation.
    """

    name: str = "default"
    assets: list[str] = []
    classes: list[str] = []
    warning: float | None = Field(None, gt=0, description="default: events.open_threshold")
    critical: float | None = Field(7.0, gt=0)
    min_duration_ticks: int | None = Field(None, ge=1, description="default: events.*")
    cooldown_s: float = Field(600.0, ge=0, description="re-open the same event within this")
    escalate_after_s: float | None = Field(None, gt=0, description="bump severity if still open")

    @model_validator(mode="after")
    def _order(self) -> AlertRuleConfig:
        if self.warning is not None and self.critical is not None and \
                self.critical <= self.warning:
            raise ValueError(f"critical ({self.critical}) must be above warning ({self.warning})")
        return self


class WeeklyWindow(_Strict):
    days: list[Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]] = Field(min_length=1)
    start: str = Field(pattern=r"^([01]\d|2[0-3]):[0-5]\d$", description="HH:MM, UTC")
    end: str = Field(pattern=r"^([01]\d|2[0-4]):[0-5]\d$", description="HH:MM, UTC")


class MaintenanceConfig(_Strict):
    """Planned work: no alerts for matching assets inside the window (one-off or weekly)."""

    assets: list[str] = Field(["*"], min_length=1)
    start: str | None = Field(None, description="RFC 3339, one-off window")
    end: str | None = None
    weekly: WeeklyWindow | None = None
    reason: str = "planned maintenance"

    @model_validator(mode="after")
    def _one_kind(self) -> MaintenanceConfig:
        one_off = self.start is not None or self.end is not None
        if one_off == (self.weekly is not None):
            raise ValueError("give either start and end (one-off) or weekly, not both/neither")
        if one_off:
            from edge_agent.rules import parse_time_ns

            if self.start is None or self.end is None:
                raise ValueError("a one-off window needs both start and end")
            if parse_time_ns(self.end) <= parse_time_ns(self.start):
                raise ValueError("end must be after start")
        return self


class WebhookConfig(_Strict):
    """An HTTP alert channel: POST JSON; `body` shapes it for ntfy, Slack/Teams or Gotify."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,40}$")
    url: str
    body: Literal["gearwatch", "slack", "ntfy", "gotify"] = "gearwatch"
    headers: dict[str, str] = {}
    secret: str | None = None
    secret_env: str | None = None
    secret_file: str | None = None
    signature_header: str = "X-Gearwatch-Signature"
    timeout_s: float = Field(5.0, gt=0, le=120)
    kinds: list[str] = ["open", "reopen", "escalate", "close"]
    min_severity: Literal["warning", "critical"] = "warning"

    @field_validator("url")
    @classmethod
    def _http(cls, v: str) -> str:
        if not v.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return v

    def secret_value(self) -> str | None:
        return read_secret(self.secret, self.secret_env, self.secret_file,
                           f"alerts.webhooks.{self.name}.secret")


class CommandHookConfig(_Strict):
    """A local program run per alert with the alert JSON on stdin (e.g. a siren, an SMS modem)."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,40}$")
    argv: list[str] = Field(min_length=1)
    timeout_s: float = Field(10.0, gt=0, le=600)
    kinds: list[str] = ["open", "reopen", "escalate", "close"]
    min_severity: Literal["warning", "critical"] = "warning"


class AlertsSection(_Strict):
    rules: list[AlertRuleConfig] = []
    webhooks: list[WebhookConfig] = []
    commands: list[CommandHookConfig] = []
    queue_size: int = Field(1000, ge=1, description="per channel; full = dead-lettered")
    max_attempts: int = Field(8, ge=1, description="then the alert goes to the dead-letter table")
    backoff_initial_s: float = Field(1.0, gt=0)
    backoff_max_s: float = Field(60.0, gt=0)


class FeedbackSection(_Strict):
    enabled: bool = True
    topic: str = "plant/{site}/+/feedback"
    max_note_chars: int = Field(2000, ge=1)
    # threshold adaptation on false alarms
    adapt: bool = True
    adapt_step: float = Field(0.5, ge=0, description="raise of an asset's open threshold")
    adapt_max: float = Field(3.0, ge=0, description="the most it may be raised in total")
    adapt_half_life_h: float = Field(72.0, gt=0, description="the raise decays back to 0")


class ConsoleToken(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_.@-]{1,64}$")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="`gearwatch console hash-token`")


class ConsoleSection(_Strict):
    enabled: bool = True
    bind: str = "127.0.0.1"
    port: int = Field(8780, ge=0, le=65535)
    tokens: list[ConsoleToken] = []
    recent_rows: int = Field(3600, ge=10, description="rows kept per asset for event plots")


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
    spool: SpoolSection = SpoolSection()
    metrics: MetricsSection = MetricsSection()
    framer: FramerSection = FramerSection()
    scoring: ScoringSection = ScoringSection()
    models: ModelsSection = ModelsSection()
    events: EventsSection = EventsSection()
    alerts: AlertsSection = AlertsSection()
    maintenance: list[MaintenanceConfig] = []
    feedback: FeedbackSection = FeedbackSection()
    console: ConsoleSection = ConsoleSection()
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
    except UnicodeDecodeError as e:
        raise ConfigError(f"{p} is not UTF-8 text (byte {e.start}); save it as UTF-8") from None
    except RecursionError:
        raise ConfigError(f"{p}: values nested too deeply to read") from None
    except OSError as e:
        raise ConfigError(f"cannot read config file {p}: {e.strerror or e}") from None
    return parse_config(data)
