"""Read planning and decoding of one Modbus unit's register map.

Planning: the registers of each table are coalesced into as few reads as the protocol and the
device allow (at most `max_count` registers or bits per read), never spanning a gap of more
than `max_gap` unused addresses.  Decoding: each planned read is compiled once into index
arrays, so a response becomes samples in a few numpy operations.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from edge_agent.assets import AssetRegistry
from edge_agent.bad_input import Reject
from edge_agent.sources.modbus_codec import decode_numbers, decode_string
from edge_agent.sources.modbus_config import BIT_TABLES, ModbusDeviceConfig, ModbusUnitConfig


@dataclass(frozen=True)
class Span:
    """Something to read: `words` registers (or bits) from wire address `start`."""

    start: int
    words: int

    @property
    def end(self) -> int:
        return self.start + self.words


def plan_spans(spans: Sequence[Span], max_count: int, max_gap: int) -> list[list[int]]:
    """Group span indices into reads: contiguous-ish runs of at most `max_count` units.

    Greedy from the lowest address, which is optimal here: a read must start at some span's
    start, and extending the current read as far as it may go never costs a later read.
    Overlapping spans share a read.  A span longer than `max_count` gets a read of its own.
    """
    order = sorted(range(len(spans)), key=lambda i: (spans[i].start, spans[i].words))
    groups: list[list[int]] = []
    cur: list[int] = []
    start = end = 0
    for i in order:
        s = spans[i]
        if cur and s.start - end <= max_gap and max(end, s.end) - start <= max_count:
            cur.append(i)
            end = max(end, s.end)
            continue
        if cur:
            groups.append(cur)
        cur, start, end = [i], s.start, s.end
    if cur:
        groups.append(cur)
    return groups


@dataclass
class _Group:
    """Values of one data type and order within a read, decoded together."""

    dtype: str
    order: str
    index: np.ndarray  # (k, n) word offsets into the response
    items: np.ndarray  # register indices (into the unit's list)
    scale: np.ndarray
    offset: np.ndarray
    asset: np.ndarray
    sensor: np.ndarray
    low: np.ndarray
    high: np.ndarray
    labels: list[str]


@dataclass
class PlannedRead:
    """One request: a table, a start address on the wire, a count; and how to decode it."""

    table: str
    start: int
    count: int
    items: list[int]
    groups: list[_Group] = field(default_factory=list)
    strings: list[tuple[int, int, int, str, str]] = field(default_factory=list)
    # (item, offset, words, order, label)

    @property
    def is_bits(self) -> bool:
        return self.table in BIT_TABLES


@dataclass
class Decoded:
    asset: np.ndarray
    sensor: np.ndarray
    value: np.ndarray
    info: dict[str, str | float]  # exposed values (strings, unmapped registers) by label
    rejects: list[Reject]


class UnitPlan:
    """The reads of one unit, compiled against the agent's asset registry."""

    def __init__(
        self, device: ModbusDeviceConfig, unit: ModbusUnitConfig, registry: AssetRegistry
    ) -> None:
        self.device = device
        self.unit = unit
        self.where = f"{device.name}/unit {unit.unit_id}"
        regs = unit.registers
        targets: list[tuple[int, int, float, float]] = []
        for r in regs:
            if r.sensor is None:
                targets.append((-1, -1, -math.inf, math.inf))
                continue
            asset_id = r.asset or unit.asset
            info = registry.get(asset_id or "")
            if info is None:
                raise ValueError(
                    f"modbus device {device.name!r} unit {unit.unit_id}: asset {asset_id!r} "
                    "is not configured among the agent's assets")
            idx = info.schema.index_of(r.sensor)
            if idx is None:
                raise ValueError(
                    f"modbus device {device.name!r} unit {unit.unit_id}: asset {asset_id!r} "
                    f"({info.schema.asset_class}) has no sensor {r.sensor!r}; its sensors are "
                    f"{', '.join(info.schema.sensor_names)}")
            spec = info.schema.sensors[idx]
            targets.append((info.index, idx, spec.low, spec.high))
        self.targets = targets
        self.reads: list[PlannedRead] = []
        for table in ("holding", "input", "coil", "discrete"):
            members = [i for i, r in enumerate(regs) if r.table == table]
            if not members:
                continue
            spans = [Span(regs[i].address - device.address_base, regs[i].words) for i in members]
            limit = device.max_bits_per_read if table in BIT_TABLES else \
                device.max_registers_per_read
            for g in plan_spans(spans, limit, device.max_gap):
                items = [members[k] for k in g]
                self.reads.append(self.compile(table, items))

    def compile(self, table: str, items: list[int]) -> PlannedRead:
        """A read covering `items` (register indices), with its decoding compiled."""
        regs = self.unit.registers
        base = self.device.address_base
        start = min(regs[i].address - base for i in items)
        end = max(regs[i].address - base + regs[i].words for i in items)
        pr = PlannedRead(table, start, end - start, items)
        by_kind: dict[tuple[str, str], list[int]] = {}
        for i in items:
            r = regs[i]
            order: str = r.order or self.device.order
            if r.type == "string":  # the device's numeric order does not apply to text
                pr.strings.append((i, r.address - base - start, r.words, r.order or "ABCD",
                                   r.label))
            else:
                by_kind.setdefault((r.type, order), []).append(i)
        for (dtype, order), its in by_kind.items():
            n = regs[its[0]].words
            offs = np.array([regs[i].address - base - start for i in its], np.int64)
            t = [self.targets[i] for i in its]
            pr.groups.append(_Group(
                dtype, order,
                offs[:, None] + np.arange(n)[None, :],
                np.array(its, np.int64),
                np.array([regs[i].scale for i in its]),
                np.array([regs[i].offset for i in its]),
                np.array([x[0] for x in t], np.int32),
                np.array([x[1] for x in t], np.int32),
                np.array([x[2] for x in t]),
                np.array([x[3] for x in t]),
                [regs[i].label for i in its],
            ))
        return pr

    def split(self, read: PlannedRead) -> list[PlannedRead]:
        """One read per register: what a read that the device refuses falls back to."""
        return [self.compile(read.table, [i]) for i in read.items]

    def decode(self, read: PlannedRead, data: Sequence[int] | Sequence[bool]) -> Decoded:
        """A response (registers, or bits for coils/discretes) -> samples, exposed values."""
        arr = np.asarray(data, dtype=np.uint16 if not read.is_bits else np.uint8)
        if arr.ndim != 1 or arr.size < read.count:  # a short response: nothing to place
            what = "bits" if read.is_bits else "registers"
            return Decoded(np.empty(0, np.int32), np.empty(0, np.int32), np.empty(0), {}, [
                Reject("wrong_count", f"expected {read.count} {what}, got {arr.size}", b"",
                       f"{self.where} {read.table}:{read.start}")])
        assets: list[np.ndarray] = []
        sensors: list[np.ndarray] = []
        values: list[np.ndarray] = []
        info: dict[str, str | float] = {}
        rejects: list[Reject] = []
        for g in read.groups:
            raw = arr[g.index[:, 0]].astype(np.float64) if read.is_bits else \
                decode_numbers(arr[g.index], g.dtype, g.order)
            val = raw * g.scale + g.offset
            mapped = g.asset >= 0
            for k in np.flatnonzero(~mapped):
                info[g.labels[k]] = float(val[k])
            with np.errstate(invalid="ignore"):
                ok = mapped & np.isfinite(val) & (val >= g.low) & (val <= g.high)
            for k in np.flatnonzero(mapped & ~ok):
                r = self.unit.registers[int(g.items[k])]
                addr = f"{self.where} {r.table}:{r.address}"
                if not math.isfinite(val[k]):
                    rejects.append(Reject("non_finite", f"{g.labels[k]} = {val[k]}", b"", addr))
                else:
                    rejects.append(Reject(
                        "out_of_range",
                        f"{g.labels[k]} = {val[k]:g} outside [{g.low[k]:g}, {g.high[k]:g}]",
                        b"", addr))
            assets.append(g.asset[ok])
            sensors.append(g.sensor[ok])
            values.append(val[ok])
        for _i, off, n, order, label in read.strings:
            info[label] = decode_string(arr[off: off + n], order)
        if not values:
            return Decoded(np.empty(0, np.int32), np.empty(0, np.int32), np.empty(0),
                           info, rejects)
        return Decoded(np.concatenate(assets), np.concatenate(sensors),
                       np.concatenate(values), info, rejects)
