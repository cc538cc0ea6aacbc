"""Modbus source: polls the units of one device (TCP endpoint or RTU line) with pymodbus.

One connection per device; its units are polled in turn, their planned reads one after the
other (a Modbus link has one request in flight).  Every read is timestamped with the time it
was answered.  A unit that stops answering emits nothing (the framer turns its sensors NaN
after their staleness limit), is marked lost (metric, log, `on_state` hook) and recovers by
itself when it answers again.  Bad responses are reported per register, never raised.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pymodbus import FramerType
from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.exceptions import ConnectionException, ModbusException, ModbusIOException

from edge_agent.assets import AssetRegistry
from edge_agent.bad_input import BadInputReporter, Reject
from edge_agent.batch import SampleBatch
from edge_agent.metrics import AgentMetrics
from edge_agent.sources.base import Emit
from edge_agent.sources.modbus_config import ModbusDeviceConfig
from edge_agent.sources.modbus_plan import PlannedRead, UnitPlan

log = logging.getLogger("gearwatch.sources.modbus")

StateHook = Callable[[str, str], None]  # (device key, "lost" | "ok")

EXCEPTION_NAMES = {
    1: "illegal function", 2: "illegal data address", 3: "illegal data value",
    4: "device failure", 5: "acknowledge", 6: "device busy", 8: "memory parity error",
    10: "gateway path unavailable", 11: "gateway target failed to respond",
}


class ReadFailed(Exception):
    """A read got no usable answer (timeout, broken frame): the unit may be lost."""


@dataclass
class UnitHealth:
    key: str
    assets: list[str]
    state: str = "unknown"  # unknown | ok | lost
    last_ok_ns: int = 0
    consecutive_failures: int = 0
    lost_count: int = 0
    info: dict[str, str | float] = field(default_factory=dict)


def backoff(attempt: int, base: float, cap: float) -> float:
    """Capped exponential backoff with full jitter (so many agents do not retry in step)."""
    return random.uniform(0.0, min(cap, base * (2 ** attempt)))


class ModbusSource:
    """A `Source` for one `[[modbus]]` device."""

    def __init__(
        self,
        cfg: ModbusDeviceConfig,
        registry: AssetRegistry,
        reporter: BadInputReporter,
        metrics: AgentMetrics,
        on_state: StateHook | None = None,
        clock: Callable[[], int] = time.time_ns,
    ) -> None:
        self.cfg = cfg
        self.name = f"modbus:{cfg.name}"
        self.reporter = reporter
        self.metrics = metrics
        self.on_state = on_state
        self.clock = clock
        self.plans = [UnitPlan(cfg, u, registry) for u in cfg.units]
        self._health = {
            u.unit_id: UnitHealth(
                f"{cfg.name}/{u.unit_id}",
                sorted({a for r in u.registers if r.sensor and (a := r.asset or u.asset)}),
            )
            for u in cfg.units
        }
        self._rx = bytearray()  # raw bytes received since the last request (for reports)
        self.client: Any = None
        self.connected = asyncio.Event()

    # -- state ---------------------------------------------------------------------------
    def health(self) -> dict[str, dict[str, Any]]:
        """State of each unit, keyed `device/unit_id`: what the console and events show."""
        return {
            h.key: {
                "state": h.state, "assets": h.assets, "last_ok_ns": h.last_ok_ns,
                "consecutive_failures": h.consecutive_failures, "lost_count": h.lost_count,
                "info": dict(h.info),
            }
            for h in self._health.values()
        }

    def _set_state(self, unit_id: int, state: str, why: str = "") -> None:
        h = self._health[unit_id]
        if h.state == state:
            return
        previous, h.state = h.state, state
        self.metrics.source_up.labels(self.name, h.key).set(1 if state == "ok" else 0)
        if state == "lost":
            h.lost_count += 1
            self.metrics.source_lost.labels(self.name, h.key).inc()
            log.warning("modbus %s lost (%s); its sensors go stale until it answers", h.key, why)
        elif previous == "lost":
            log.warning("modbus %s answers again", h.key)
        if self.on_state is not None and (state == "lost" or previous == "lost"):
            try:
                self.on_state(h.key, state)
            except Exception:  # a failing hook must not stop polling
                log.exception("on_state hook failed for %s", h.key)

    # -- connection ----------------------------------------------------------------------
    def _trace(self, sending: bool, data: bytes) -> bytes:
        if sending:
            self._rx.clear()
        else:
            self._rx += data[-512:]
        return data

    def _make_client(self) -> Any:
        c = self.cfg
        if c.transport == "tcp":
            return AsyncModbusTcpClient(
                c.host, port=c.port, timeout=c.timeout_s, retries=0, reconnect_delay=0,
                name=c.name, trace_packet=self._trace)
        return AsyncModbusSerialClient(
            c.serial_port or "", framer=FramerType.RTU, baudrate=c.baudrate, bytesize=c.bytesize,
            parity=c.parity, stopbits=c.stopbits, timeout=c.timeout_s, retries=0,
            reconnect_delay=0, name=c.name, trace_packet=self._trace)

    async def _connect(self) -> None:
        attempt = 0
        while True:
            self.client = self._make_client()
            try:
                ok = await self.client.connect()
            except Exception as e:  # serial ports raise on open; never let that escape
                log.debug("modbus %s connect failed: %s", self.cfg.name, e)
                ok = False
            if ok:
                self.metrics.reconnects.labels(self.name).inc()
                log.info("modbus %s connected", self.cfg.name)
                self.connected.set()
                return
            self._close()
            for u in self.cfg.units:
                self._set_state(u.unit_id, "lost", "cannot connect")
            await asyncio.sleep(backoff(attempt, self.cfg.reconnect_backoff_s,
                                        self.cfg.reconnect_backoff_max_s))
            attempt += 1

    def _close(self) -> None:
        self.connected.clear()
        if self.client is not None:
            with contextlib.suppress(Exception):
                self.client.close()
        self.client = None

    # -- polling -------------------------------------------------------------------------
    async def run(self, emit: Emit) -> None:
        loop = asyncio.get_running_loop()
        try:
            await self._connect()
            next_poll = loop.time()
            while True:
                if self.client is None or not self.client.connected:
                    self._close()
                    await self._connect()
                await self.poll_once(emit)
                next_poll += self.cfg.poll_interval_s
                delay = next_poll - loop.time()
                if delay < 0:  # overran: skip missed polls rather than burst
                    next_poll = loop.time()
                    delay = 0
                await asyncio.sleep(delay)
        finally:
            self._close()

    async def poll_once(self, emit: Emit) -> None:
        """Poll every unit once; emit one batch per unit that answered."""
        for plan in self.plans:
            if self.client is None:
                return
            batches: list[SampleBatch] = []
            answered = failed = 0
            why = ""
            for read in list(plan.reads):
                try:
                    b = await self._read_and_decode(plan, read)
                except ReadFailed as e:
                    failed += 1
                    why = str(e)
                    if not answered:  # silent unit: do not make the others wait on each read
                        break
                    continue
                answered += 1
                if b is not None:
                    batches.append(b)
            h = self._health[plan.unit.unit_id]
            if answered:
                h.consecutive_failures = 0
                h.last_ok_ns = self.clock()
                self._set_state(plan.unit.unit_id, "ok")
            elif failed:
                h.consecutive_failures += 1
                self._set_state(plan.unit.unit_id, "lost", why)
            if batches:
                batch = SampleBatch.concat(batches)
                if len(batch):
                    self.metrics.samples_in.labels(self.name).inc(len(batch))
                    emit(batch)

    async def _read_and_decode(self, plan: UnitPlan, read: PlannedRead) -> SampleBatch | None:
        data = await self._read(plan, read)
        if data is None:  # the device refused the read: already reported
            return None
        dec = plan.decode(read, data)
        for rej in dec.rejects:
            self.reporter.report(self.name, rej)
        self._health[plan.unit.unit_id].info.update(dec.info)
        if not len(dec.value):
            return None
        ts = self.clock()
        return SampleBatch(dec.asset, dec.sensor, np.full(len(dec.value), ts, np.int64),
                           dec.value, source=self.name)

    async def _request(self, read: PlannedRead, unit_id: int) -> Any:
        c = self.client
        if c is None:
            raise ConnectionException("not connected")
        fn = {"holding": c.read_holding_registers, "input": c.read_input_registers,
              "coil": c.read_coils, "discrete": c.read_discrete_inputs}[read.table]
        return await fn(read.start, count=read.count, device_id=unit_id)

    async def _read(self, plan: UnitPlan, read: PlannedRead) -> list[int] | list[bool] | None:
        """One planned read with retries; the values, None if refused, ReadFailed if lost."""
        cfg = self.cfg
        unit_id = plan.unit.unit_id
        where = f"{plan.where} {read.table}:{read.start + cfg.address_base}+{read.count}"
        last = ""
        for attempt in range(cfg.retries + 1):
            if attempt:
                await asyncio.sleep(backoff(attempt - 1, cfg.retry_backoff_s,
                                            cfg.retry_backoff_max_s))
            if cfg.request_pause_s:
                await asyncio.sleep(cfg.request_pause_s)
            if self.client is None or not self.client.connected:
                raise ReadFailed("connection lost")
            try:
                resp = await self._request(read, unit_id)
            except ModbusIOException as e:
                text = str(e)
                if "device id" in text and "received" in text:
                    self.metrics.modbus_requests.labels(cfg.name, "wrong_unit").inc()
                    self._report(Reject("wrong_unit", text.split("ERROR: ")[-1][:200],
                                        bytes(self._rx), where))
                    last = "answer from another unit id"
                    continue
                last = self._timeout_reason(where, unit_id)
                continue
            except (ConnectionException, ModbusException, OSError) as e:
                self.metrics.modbus_requests.labels(cfg.name, "error").inc()
                last = f"{type(e).__name__}: {e}"
                if self.client is None or not self.client.connected:
                    raise ReadFailed("connection lost") from None
                continue
            except TimeoutError:
                last = self._timeout_reason(where, unit_id)
                continue
            if resp.isError():
                self._refused(plan, read, resp, where)
                return None
            data = resp.bits if read.is_bits else resp.registers
            if len(data) < read.count:
                self.metrics.modbus_requests.labels(cfg.name, "short").inc()
                self._report(Reject(
                    "wrong_count", f"asked for {read.count}, got {len(data)}",
                    bytes(self._rx), where))
                last = "short response"
                continue
            self.metrics.modbus_requests.labels(cfg.name, "ok").inc()
            self.metrics.modbus_registers.labels(cfg.name).inc(read.count)
            return data[: read.count]
        raise ReadFailed(last or "no answer")

    def _timeout_reason(self, where: str, unit_id: int) -> str:
        """Why a read went unanswered; bytes that did come back are reported as bad input."""
        self.metrics.modbus_requests.labels(self.cfg.name, "timeout").inc()
        raw = bytes(self._rx)
        if not raw:
            return f"no answer within {self.cfg.timeout_s} s"
        # pymodbus drops frames for another unit id and frames with a bad CRC; tell them apart
        got = raw[6] if self.cfg.transport == "tcp" and len(raw) > 6 else raw[0]
        if got != unit_id:
            self._report(Reject(
                "wrong_unit", f"asked unit {unit_id}, the answer came from unit {got}", raw, where))
            return "answers from another unit id"
        self._report(Reject(
            "bad_frame", "bytes received but no valid response frame (CRC error or noise)",
            raw, where))
        return "bad frames"

    def _refused(self, plan: UnitPlan, read: PlannedRead, resp: Any, where: str) -> None:
        """An exception response: split a coalesced read so one bad register costs only itself."""
        code = int(getattr(resp, "exception_code", 0) or 0)
        self.metrics.modbus_requests.labels(self.cfg.name, "exception").inc()
        if len(read.items) > 1 and code != 6:  # busy is transient; the read map is not at fault
            idx = plan.reads.index(read)
            plan.reads[idx: idx + 1] = plan.split(read)
            log.info("modbus %s: %s refused (code %d); reading its registers one by one",
                     plan.where, where, code)
            return
        regs = plan.unit.registers
        for i in read.items:
            r = regs[i]
            self._report(Reject(
                "modbus_exception",
                f"exception {code} ({EXCEPTION_NAMES.get(code, 'unknown')}) reading "
                f"{r.label} ({r.type})",
                b"", f"{plan.where} {r.table}:{r.address}"))

    def _report(self, rej: Reject) -> None:
        self.reporter.report(self.name, rej)
