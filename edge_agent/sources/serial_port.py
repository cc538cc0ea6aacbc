"""Serial source: reads lines from an instrument on a serial port (pyserial, in a thread).

A blocking reader thread per port keeps the event loop free of serial I/O; it hands decoded
batches to the thread-safe `emit`.  Polled instruments get their request string on a
schedule.  A port that disappears (USB adapter unplugged) is reopened with capped, jittered
backoff; framing errors are reported and the stream goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import threading
import time
from collections.abc import Callable
from typing import Any

import serial

from edge_agent.assets import AssetRegistry
from edge_agent.bad_input import BadInputReporter, Reject
from edge_agent.metrics import AgentMetrics
from edge_agent.sources.base import Emit
from edge_agent.sources.serial_config import SerialPortConfig
from edge_agent.sources.serial_framing import SerialDecoder

log = logging.getLogger("gearwatch.sources.serial")

StateHook = Callable[[str, str], None]


class SerialSource:
    """A `Source` for one `[[serial]]` port."""

    def __init__(
        self,
        cfg: SerialPortConfig,
        registry: AssetRegistry,
        reporter: BadInputReporter,
        metrics: AgentMetrics,
        on_state: StateHook | None = None,
        now_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        self.cfg = cfg
        self.name = f"serial:{cfg.name}"
        self.decoder = SerialDecoder(cfg, registry, now_ns)
        self.reporter = reporter
        self.metrics = metrics
        self.on_state = on_state
        self.state = "unknown"
        self.last_line_ns = 0
        self._stop = threading.Event()

    def health(self) -> dict[str, dict[str, Any]]:
        return {self.cfg.name: {"state": self.state, "port": self.cfg.port,
                                "last_line_ns": self.last_line_ns,
                                "lines": self.decoder.lines}}

    def _set_state(self, state: str, why: str = "") -> None:
        if state == self.state:
            return
        previous, self.state = self.state, state
        self.metrics.source_up.labels(self.name, self.cfg.name).set(1 if state == "ok" else 0)
        if state == "lost":
            self.metrics.source_lost.labels(self.name, self.cfg.name).inc()
            log.warning("serial %s (%s) lost: %s", self.cfg.name, self.cfg.port, why)
        elif previous == "lost":
            log.warning("serial %s (%s) is back", self.cfg.name, self.cfg.port)
        if self.on_state is not None and (state == "lost" or previous == "lost"):
            try:
                self.on_state(self.cfg.name, state)
            except Exception:
                log.exception("on_state hook failed for %s", self.cfg.name)

    async def run(self, emit: Emit) -> None:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        self._stop.clear()

        def finish(err: BaseException | None) -> None:
            if not done.done():
                if err is None:
                    done.set_result(None)
                else:
                    done.set_exception(err)

        def target() -> None:
            err: BaseException | None = None
            try:
                self._loop(emit)
            except Exception as e:  # never expected; the agent sees the task fail
                log.exception("serial %s reader died", self.cfg.name)
                err = e
            loop.call_soon_threadsafe(finish, err)

        thread = threading.Thread(target=target, name=f"serial-{self.cfg.name}", daemon=True)
        thread.start()
        try:
            await asyncio.shield(done)
        finally:
            self._stop.set()
            await asyncio.to_thread(thread.join, 2.0)

    def _open(self) -> serial.Serial:
        c = self.cfg
        return serial.Serial(
            c.port, baudrate=c.baudrate, parity=c.parity, stopbits=c.stopbits,
            bytesize=c.bytesize, timeout=c.read_timeout_s, write_timeout=1.0)

    def _loop(self, emit: Emit) -> None:
        attempt = 0
        while not self._stop.is_set():
            try:
                port = self._open()
            except (serial.SerialException, OSError, ValueError) as e:
                self._set_state("lost", f"cannot open: {e}")
                delay = random.uniform(0, min(self.cfg.reopen_backoff_max_s,
                                              self.cfg.reopen_backoff_s * 2 ** attempt))
                attempt += 1
                self._stop.wait(delay)
                continue
            attempt = 0
            self.metrics.reconnects.labels(self.name).inc()
            log.info("serial %s opened %s", self.cfg.name, self.cfg.port)
            try:
                self._read(port, emit)
            except (serial.SerialException, OSError) as e:
                self._set_state("lost", f"read failed: {e}")
                half = self.decoder.splitter.pending()
                if half:  # the rest of that line will never come: report, do not guess
                    self._report(Reject("partial_line", "half a line when the port went away",
                                        half, self.cfg.port))
                self.decoder.splitter.buf.clear()
            finally:
                with contextlib.suppress(Exception):
                    port.close()

    def _read(self, port: serial.Serial, emit: Emit) -> None:
        cfg = self.cfg
        request = cfg.request.encode(cfg.encoding, "replace") if cfg.request else None
        next_request = time.monotonic()
        last_line = time.monotonic()  # since the port opened, or the last complete line
        while not self._stop.is_set():
            if request is not None and time.monotonic() >= next_request:
                port.write(request)
                next_request += cfg.request_interval_s
                if next_request < time.monotonic():
                    next_request = time.monotonic() + cfg.request_interval_s
            data = port.read(max(1, port.in_waiting))
            if not data:
                if cfg.silent_after_s and time.monotonic() - last_line > cfg.silent_after_s:
                    self._set_state("lost", f"no line for {cfg.silent_after_s} s")
                continue
            seen = self.decoder.lines
            batch, rejects = self.decoder.feed(data)
            self.metrics.messages_in.labels(self.name).inc()
            for r in rejects:
                self._report(r)
            if self.decoder.lines > seen:
                last_line = time.monotonic()
                self.last_line_ns = time.time_ns()
                self._set_state("ok")
            if len(batch):
                self.metrics.samples_in.labels(self.name).inc(len(batch))
                emit(batch)

    def _report(self, r: Reject) -> None:
        self.reporter.report(self.name, r)
