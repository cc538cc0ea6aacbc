"""A virtual null-modem cable: two pseudo-terminals whose bytes are relayed to each other.

A pty has only one end with a path (the slave); a serial device simulator and the agent both
want to open a path, so two ptys are bridged master to master.  `mangle` lets a test corrupt
bytes in flight (a CRC error on an RTU line, noise on a serial line).
"""

from __future__ import annotations

import contextlib
import os
import select
import termios
import threading
import tty
from collections.abc import Callable

Mangle = Callable[[str, bytes], bytes]  # (direction "ab" | "ba", data) -> data to deliver


def open_raw_pty() -> tuple[int, int, str]:
    """A pty in raw mode (no echo, no line editing): (master fd, slave fd, slave path).

    The caller keeps the slave fd open, so the master never sees EIO while the program at the
    other end closes and reopens the path; it closes both when done.
    """
    master, slave = os.openpty()
    tty.setraw(slave, termios.TCSANOW)
    return master, slave, os.ttyname(slave)


class PtyBridge:
    """Two pty paths, `a_path` and `b_path`; what is written to one is read from the other."""

    def __init__(self, mangle: Mangle | None = None) -> None:
        self.mangle = mangle
        self._ma, sa, self.a_path = open_raw_pty()
        self._mb, sb, self.b_path = open_raw_pty()
        self._slaves = (sa, sb)
        self._stop_r, self._stop_w = os.pipe()
        self._thread = threading.Thread(target=self._relay, name="pty-bridge", daemon=True)
        self._thread.start()

    def _relay(self) -> None:
        peers = {self._ma: (self._mb, "ab"), self._mb: (self._ma, "ba")}
        while True:
            ready, _, _ = select.select([self._ma, self._mb, self._stop_r], [], [])
            if self._stop_r in ready:
                return
            for fd in ready:
                try:
                    data = os.read(fd, 4096)
                except OSError:
                    continue
                out, direction = peers[fd]
                if self.mangle is not None:
                    data = self.mangle(direction, data)
                with contextlib.suppress(OSError):
                    os.write(out, data)

    def close(self) -> None:
        os.write(self._stop_w, b"x")
        self._thread.join(timeout=2)
        for fd in (self._ma, self._mb, *self._slaves, self._stop_r, self._stop_w):
            with contextlib.suppress(OSError):
                os.close(fd)

    def __enter__(self) -> PtyBridge:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
