"""systemd's notify protocol (sd_notify(3)) over $NOTIFY_SOCKET, without a dependency.

The unit is `Type=notify` with `WatchdogSec=`: systemd counts the agent as started only on
READY=1, and restarts it when WATCHDOG=1 stops arriving.  The watchdog ping is sent by the
processing loop's own iteration (`Watchdog.beat`), never by a timer of its own: a timer would
keep pinging while the loop that does the work is hung or dead, which is exactly the case the
watchdog exists for.

Outside systemd (no NOTIFY_SOCKET) every call is a cheap no-op.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Mapping

log = logging.getLogger("gearwatch.systemd")


class Notifier:
    """Sends datagrams to the service manager; an unreachable socket is logged once."""

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        env = os.environ if env is None else env
        addr = env.get("NOTIFY_SOCKET", "")
        self.address: str | bytes | None = None
        if addr.startswith("@"):  # abstract namespace
            self.address = b"\0" + addr[1:].encode()
        elif addr.startswith("/"):
            self.address = addr
        elif addr:
            log.warning("NOTIFY_SOCKET=%r is neither a path nor an abstract socket; ignored", addr)
        self.watchdog_interval_s: float | None = None
        usec, pid = env.get("WATCHDOG_USEC"), env.get("WATCHDOG_PID")
        if self.address is not None and usec and (not pid or pid == str(os.getpid())):
            try:
                self.watchdog_interval_s = int(usec) / 1e6 / 2  # ping at half the timeout
            except ValueError:
                log.warning("WATCHDOG_USEC=%r is not a number; no watchdog pings", usec)
        self._sock: socket.socket | None = None
        self._warned = False

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def notify(self, *fields: str) -> bool:
        """Send `KEY=value` lines as one datagram; False when not under systemd or it failed."""
        if self.address is None:
            return False
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                self._sock.setblocking(False)
            self._sock.sendto("\n".join(fields).encode(), self.address)
            return True
        except OSError as e:
            if not self._warned:
                log.warning("cannot notify systemd at %r: %s", self.address, e)
                self._warned = True
            return False

    def ready(self, status: str = "") -> bool:
        return self.notify("READY=1", f"STATUS={status}") if status else self.notify("READY=1")

    def status(self, text: str) -> bool:
        return self.notify(f"STATUS={text}")

    def stopping(self, status: str = "stopping") -> bool:
        return self.notify("STOPPING=1", f"STATUS={status}")

    def extend_timeout(self, seconds: float) -> bool:
        """Ask for more time to stop (or start) than the unit's timeout, e.g. a long flush."""
        return self.notify(f"EXTEND_TIMEOUT_USEC={round(seconds * 1e6)}")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


class Watchdog:
    """WATCHDOG=1 at most every `interval`; `beat()` is called from the loop being watched."""

    def __init__(self, notifier: Notifier) -> None:
        self.notifier = notifier
        self.interval = notifier.watchdog_interval_s
        self._last = float("-inf")
        self.pings = 0

    @property
    def enabled(self) -> bool:
        return self.interval is not None

    def beat(self, now: float | None = None) -> None:
        if self.interval is None:
            return
        now = time.monotonic() if now is None else now
        if now - self._last >= self.interval:
            if self.notifier.notify("WATCHDOG=1"):
                self.pings += 1
            self._last = now
