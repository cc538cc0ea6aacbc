"""A pump's instrument on a serial line: writes its readings as text lines on a pseudo-terminal.

Streaming mode writes a line every step; polled mode answers each request string with one.
Formats: `csv` (a header line first, and again after `reboot()`), `kv` (key=value pairs) and
`json` (JSON lines).  The agent opens `path`, the pty's slave end, as its serial port.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import select
import threading
import time

import numpy as np
import orjson

from simulators.pty_bridge import open_raw_pty
from simulators.pump import SENSORS, PumpFleet


def format_line(row: np.ndarray, fmt: str, eol: bytes = b"\n") -> bytes:
    if fmt == "csv":
        text = ",".join(f"{v:.6f}" for v in row)
    elif fmt == "kv":
        text = " ".join(f"{n}={v:.6f}" for n, v in zip(SENSORS, row, strict=True))
    elif fmt == "json":
        return orjson.dumps({n: round(float(v), 6) for n, v in
                             zip(SENSORS, row, strict=True)}) + eol
    else:
        raise ValueError(f"unknown format {fmt!r}; use csv, kv or json")
    return text.encode() + eol


def csv_header(eol: bytes = b"\n") -> bytes:
    return ",".join(SENSORS).encode() + eol


class SerialInstrumentSim:
    """One pump whose readings come out of a pty (`path`)."""

    def __init__(
        self, asset_id: str = "pump-1", fmt: str = "csv", mode: str = "stream",
        request: bytes = b"MEAS?\r\n", seed: int = 0, dt_s: float = 1.0, eol: bytes = b"\n",
    ) -> None:
        if mode not in ("stream", "polled"):
            raise ValueError(f"unknown mode {mode!r}; use stream or polled")
        format_line(np.zeros(len(SENSORS)), fmt)  # validates fmt
        self.fleet = PumpFleet([asset_id], seed=seed, dt_s=dt_s)
        self.fmt = fmt
        self.mode = mode
        self.request = request
        self.eol = eol
        self.master, self._slave, self.path = open_raw_pty()
        flags = fcntl.fcntl(self.master, fcntl.F_GETFL)
        fcntl.fcntl(self.master, fcntl.F_SETFL, flags | os.O_NONBLOCK)
        self.row = np.zeros(len(SENSORS))
        self.lines_written = 0
        self.requests_seen = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._header_due = fmt == "csv"

    def step(self) -> np.ndarray:
        with self._lock:
            self.row = self.fleet.step()[0]
            return self.row.copy()

    def write(self, data: bytes) -> None:
        """Write raw bytes to the line (tests use it for noise and half lines)."""
        with contextlib.suppress(BlockingIOError, OSError):
            os.write(self.master, data)

    def emit_line(self) -> None:
        with self._lock:
            out = b""
            if self._header_due:
                out += csv_header(self.eol)
                self._header_due = False
            out += format_line(self.row, self.fmt, self.eol)
        self.write(out)
        self.lines_written += 1

    def reboot(self) -> None:
        """The instrument restarts: CSV sends its header again."""
        self._header_due = self.fmt == "csv"

    def start(self, speedup: float = 1.0) -> None:
        """Step the physics in sim time (`dt_s` per step, `speedup` x faster than real time)."""
        self._stop.clear()
        self._threads = [threading.Thread(target=self._physics, args=(speedup,), daemon=True)]
        if self.mode == "polled":
            self._threads.append(threading.Thread(target=self._answer, daemon=True))
        for t in self._threads:
            t.start()

    def _physics(self, speedup: float) -> None:
        interval = self.fleet.dt / speedup
        t0 = time.monotonic()
        n = 0
        while not self._stop.is_set():
            self.step()
            if self.mode == "stream":
                self.emit_line()
            n += 1
            self._stop.wait(max(0.0, t0 + n * interval - time.monotonic()))

    def _answer(self) -> None:
        buf = b""
        while not self._stop.is_set():
            ready, _, _ = select.select([self.master], [], [], 0.05)
            if not ready:
                continue
            try:
                buf += os.read(self.master, 1024)
            except (BlockingIOError, OSError):
                continue
            while self.request in buf:
                _, buf = buf.split(self.request, 1)
                self.requests_seen += 1
                self.emit_line()
            buf = buf[-len(self.request):]

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=2)
        self._threads = []

    def close(self) -> None:
        self.stop()
        for fd in (self.master, self._slave):
            with contextlib.suppress(OSError):
                os.close(fd)
