"""MQTT `sparkplug_b` format: Sparkplug B births, data and deaths -> samples and signals.

Stateful (metric aliases are learned from NBIRTH/DBIRTH and used by NDATA/DDATA) but free of
I/O: what the MQTT source must *do* comes back as signals from `drain_signals()`:

- `Rebirth(group, node)`: data arrived with an alias never born, or from a node never born;
  the source publishes `Rebirth.message()` (NCMD `Node Control/Rebirth`).  At most one per
  node per `rebirth_interval_s`.
- `StateChange(key, "lost" | "ok", assets)`: NDEATH/DDEATH make the node's or device's sensors
  stale (the framer NaNs them once their staleness limit passes); a birth brings them back.
  Also given to the `on_state` hook, like the Modbus and serial sources' lost state.

Sequence-number gaps are counted as `seq_gap` rejects; undecodable payloads as
`malformed_protobuf`.  Mapping: device id -> asset id, metric name -> sensor name.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from edge_agent.bad_input import Reject
from edge_agent.sources.sparkplug_proto import BOOLEAN, Payload, metric_number, parse_payload

if TYPE_CHECKING:  # payloads imports this module to register it: import it lazily here
    from edge_agent.sources.payloads import DecodeContext, Decoded, _Builder

NAMESPACE = "spBv1.0"
StateHook = Callable[[str, str], None]


class SparkplugMapping(BaseModel):
    """How Sparkplug names map onto the agent's assets and sensors."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    group: str | None = None  # only this group id; None: every group
    # device id (or "node/device") -> asset id; a device not listed is the asset of its own id
    device_assets: dict[str, str] = Field(default_factory=dict)
    # node id -> asset id, for metrics published by the node itself (NBIRTH/NDATA)
    node_assets: dict[str, str] = Field(default_factory=dict)
    # metric name -> sensor name; a metric not listed is the sensor of its own name, and a
    # metric that names no sensor of the asset (Node Control/*, Properties/*) is ignored
    metric_sensors: dict[str, str] = Field(default_factory=dict)
    rebirth_interval_s: float = Field(default=10.0, ge=0)


@dataclass(frozen=True)
class Rebirth:
    group: str
    node: str
    reason: str

    def message(self, now_ms: int) -> tuple[str, bytes]:
        """The NCMD that asks the edge node to publish its births again."""
        p = Payload(timestamp=now_ms)
        p.metrics.add(name="Node Control/Rebirth", datatype=BOOLEAN, boolean_value=True,
                      timestamp=now_ms)
        return f"{NAMESPACE}/{self.group}/NCMD/{self.node}", p.SerializeToString()


@dataclass(frozen=True)
class StateChange:
    key: str  # "group/node" or "group/node/device"
    state: str  # lost | ok
    assets: tuple[str, ...]


Signal = Rebirth | StateChange


@dataclass
class _Node:
    born: bool = False
    seq: int | None = None
    bdseq: float | None = None
    aliases: dict[int, str] = field(default_factory=dict)
    devices: dict[str, dict[int, str]] = field(default_factory=dict)
    rebirth_ns: int | None = None


class SparkplugDecoder:
    """A `Decoder` (same call signature) that keeps the alias tables of every edge node."""

    def __init__(
        self, mapping: SparkplugMapping | None = None, on_state: StateHook | None = None
    ) -> None:
        self.mapping = mapping or SparkplugMapping()
        self.on_state = on_state
        self.nodes: dict[tuple[str, str], _Node] = {}
        self.signals: list[Signal] = []
        self.lost: set[str] = set()
        self.seq_gaps = 0

    def drain_signals(self) -> list[Signal]:
        out, self.signals = self.signals, []
        return out

    # -- mapping ---------------------------------------------------------------------------
    def asset_of(self, node: str, device: str | None) -> str | None:
        m = self.mapping
        if device is None:
            return m.node_assets.get(node)
        return m.device_assets.get(f"{node}/{device}", m.device_assets.get(device, device))

    def _state(self, key: str, state: str, assets: tuple[str, ...]) -> None:
        """Signal transitions to lost, and back from lost (a first birth is no news)."""
        if state == "lost":
            if key in self.lost:
                return
            self.lost.add(key)
        elif key in self.lost:
            self.lost.discard(key)
        else:
            return
        self.signals.append(StateChange(key, state, assets))
        if self.on_state is not None:
            self.on_state(key, state)

    def _rebirth(self, group: str, node: str, st: _Node, reason: str, now: int) -> None:
        gap = self.mapping.rebirth_interval_s * 1e9
        if st.rebirth_ns is not None and now - st.rebirth_ns < gap:
            return
        st.rebirth_ns = now
        self.signals.append(Rebirth(group, node, reason))

    # -- decoding --------------------------------------------------------------------------
    def __call__(self, topic: str, payload: bytes, ctx: DecodeContext) -> Decoded:
        from edge_agent.sources.payloads import _Builder

        b = _Builder()
        received = ctx.now_ns()
        parts = topic.split("/")
        if len(parts) < 2 or parts[0] != NAMESPACE or parts[1] == "STATE":
            if parts[0] != NAMESPACE:
                b.rejects.append(Reject("topic_mismatch", f"not a {NAMESPACE} topic",
                                        payload[:256], topic))
            return b.batch(topic)
        if len(parts) not in (4, 5):
            b.rejects.append(Reject("topic_mismatch", "expected spBv1.0/group/TYPE/node[/device]",
                                    payload[:256], topic))
            return b.batch(topic)
        group, kind, node = parts[1], parts[2], parts[3]
        device = parts[4] if len(parts) == 5 else None
        if self.mapping.group is not None and group != self.mapping.group:
            return b.batch(topic)
        if kind in ("NCMD", "DCMD"):
            return b.batch(topic)  # commands (ours, echoed back by the broker)
        if len(payload) > ctx.max_payload_bytes:
            b.rejects.append(Reject("oversized", f"{len(payload)} bytes", payload[:256], topic))
            return b.batch(topic)
        try:
            msg = parse_payload(payload)
        except Exception as e:  # DecodeError, and whatever else the wire throws at us
            b.rejects.append(Reject("malformed_protobuf", str(e)[:200], payload, topic))
            return b.batch(topic)
        st = self.nodes.setdefault((group, node), _Node())
        handler = {
            "NBIRTH": self._nbirth, "DBIRTH": self._dbirth, "NDATA": self._data,
            "DDATA": self._data, "NDEATH": self._ndeath, "DDEATH": self._ddeath,
        }.get(kind)
        if handler is None or (kind.startswith("N") != (device is None)):
            b.rejects.append(Reject("topic_mismatch", f"unknown message type {kind!r} here",
                                    payload[:256], topic))
            return b.batch(topic)
        handler(b, ctx, msg, group, node, device, st, received, topic)
        b.rejects[:] = [Reject(r.reason, r.detail, r.raw or payload[:1024], r.where)
                        for r in b.rejects]
        return b.batch(topic)

    def _check_seq(self, b: _Builder, msg: Any, st: _Node, topic: str) -> None:
        if not msg.HasField("seq"):
            return
        seq = int(msg.seq) % 256
        if st.seq is not None and seq != (st.seq + 1) % 256:
            self.seq_gaps += 1
            b.rejects.append(Reject("seq_gap", f"seq {seq} after {st.seq}", b"", topic))
        st.seq = seq

    def _nbirth(self, b: _Builder, ctx: DecodeContext, msg: Any, group: str, node: str,
                device: str | None, st: _Node, now: int, topic: str) -> None:
        st.born, st.aliases, st.devices, st.rebirth_ns = True, {}, {}, None
        st.seq = int(msg.seq) % 256 if msg.HasField("seq") else None
        for m in msg.metrics:
            if m.HasField("alias") and m.name:
                st.aliases[int(m.alias)] = m.name
            if m.name == "bdSeq":
                st.bdseq = metric_number(m)
        self._state(f"{group}/{node}", "ok", self._node_assets(node, []))
        self._values(b, ctx, msg, node, None, {}, now, topic)

    def _dbirth(self, b: _Builder, ctx: DecodeContext, msg: Any, group: str, node: str,
                device: str | None, st: _Node, now: int, topic: str) -> None:
        assert device is not None
        if not st.born:
            b.rejects.append(Reject("not_born", f"DBIRTH of {device} before its node's NBIRTH",
                                    b"", topic))
            self._rebirth(group, node, st, "device birth before node birth", now)
            return
        self._check_seq(b, msg, st, topic)
        st.devices[device] = {int(m.alias): m.name for m in msg.metrics
                              if m.HasField("alias") and m.name}
        self._state(f"{group}/{node}/{device}", "ok", self._dev_assets(node, [device]))
        self._values(b, ctx, msg, node, device, st.devices[device], now, topic)

    def _data(self, b: _Builder, ctx: DecodeContext, msg: Any, group: str, node: str,
              device: str | None, st: _Node, now: int, topic: str) -> None:
        if not st.born or (device is not None and device not in st.devices):
            what = f"device {device}" if device is not None else f"node {node}"
            b.rejects.append(Reject("not_born", f"data from {what} before its birth", b"", topic))
            self._rebirth(group, node, st, f"data from unborn {what}", now)
            return
        self._check_seq(b, msg, st, topic)
        aliases = st.devices[device] if device is not None else {}
        self._values(b, ctx, msg, node, device, aliases, now, topic, st, group)

    def _ndeath(self, b: _Builder, ctx: DecodeContext, msg: Any, group: str, node: str,
                device: str | None, st: _Node, now: int, topic: str) -> None:
        bd = next((metric_number(m) for m in msg.metrics if m.name == "bdSeq"), None)
        if bd is not None and st.bdseq is not None and bd != st.bdseq:
            return  # the will of an older session, delivered late: the node is alive
        if not st.born:
            return
        st.born = False
        devices = list(st.devices)
        st.devices = {}
        st.seq = None
        for d in devices:
            self._state(f"{group}/{node}/{d}", "lost", self._dev_assets(node, [d]))
        self._state(f"{group}/{node}", "lost", self._node_assets(node, []))

    def _ddeath(self, b: _Builder, ctx: DecodeContext, msg: Any, group: str, node: str,
                device: str | None, st: _Node, now: int, topic: str) -> None:
        assert device is not None
        self._check_seq(b, msg, st, topic)
        if st.devices.pop(device, None) is not None:
            self._state(f"{group}/{node}/{device}", "lost", self._dev_assets(node, [device]))

    def _node_assets(self, node: str, _devices: list[str]) -> tuple[str, ...]:
        a = self.asset_of(node, None)
        return (a,) if a else ()

    def _dev_assets(self, node: str, devices: list[str]) -> tuple[str, ...]:
        return tuple(a for d in devices if (a := self.asset_of(node, d)))

    def _values(self, b: _Builder, ctx: DecodeContext, msg: Any, node: str,
                device: str | None, aliases: dict[int, str], now: int, topic: str,
                st: _Node | None = None, group: str = "") -> None:
        asset = self.asset_of(node, device)
        info = ctx.registry.get(asset) if asset else None
        if device is not None and info is None:
            b.rejects.append(Reject("unknown_asset", f"device {device!r} maps to asset "
                                    f"{asset!r}, which is not configured", b"", topic))
            return
        payload_ts = int(msg.timestamp) * 1_000_000 if msg.HasField("timestamp") else None
        node_aliases = st.aliases if st is not None else {}
        for m in msg.metrics:
            name = m.name
            if not name and m.HasField("alias"):
                alias = int(m.alias)
                name = aliases.get(alias) or node_aliases.get(alias, "")
                if not name:
                    b.rejects.append(Reject("unknown_alias", f"metric alias {alias} was never "
                                            "born", b"", topic))
                    if st is not None:
                        self._rebirth(group, node, st, f"unknown alias {alias}", now)
                    continue
            if info is None:
                continue
            explicit = name in self.mapping.metric_sensors
            sensor = self.mapping.metric_sensors.get(name, name)
            if info.schema.index_of(sensor) is None and not explicit:
                continue  # Node Control/*, Properties/*, bdSeq: not sensors
            value = metric_number(m)
            if value is None:
                kind = None if m.is_null else m.WhichOneof("value")
                if kind is not None:  # a string or bytes where the sensor wants a number
                    b.rejects.append(Reject("non_numeric", f"{name}: a {kind} is not a "
                                            f"value of sensor {sensor!r}", b"", topic))
                continue
            ts = int(m.timestamp) * 1_000_000 if m.HasField("timestamp") else payload_ts
            ts = now if ts is None else ts
            why = ctx.ts_reject(ts, now)
            if why:
                b.rejects.append(Reject("timestamp_out_of_bounds", f"{name}: {why}", b"", topic))
                continue
            _add_values(b, ctx, info.asset_id, ts, {sensor: value}, topic)


def _add_values(b: _Builder, ctx: DecodeContext, asset: str, ts: int, values: dict[str, float],
                topic: str) -> None:
    from edge_agent.sources.payloads import add_values

    add_values(b, ctx, asset, ts, values, topic)
