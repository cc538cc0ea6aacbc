"""Bad input is counted, logged once with context, and dead-lettered; never a crash."""

from __future__ import annotations

import base64
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import orjson

from edge_agent.metrics import AgentMetrics

log = logging.getLogger("gearwatch.bad_input")

DeadLetterPublish = Callable[[bytes], None]


@dataclass(frozen=True, slots=True)
class Reject:
    """One piece of rejected input: why, and enough context to find it again."""

    reason: str  # short, bounded vocabulary: used as a metric label
    detail: str
    raw: bytes = b""
    where: str = ""  # topic, port, device/address


class BadInputReporter:
    """Thread-safe: sources call it from their own threads.

    The first reject of each (source, reason) is logged in full; after that, one summary line a
    minute says how many more there were, so a flood of garbage cannot flood the log.
    """

    def __init__(
        self,
        metrics: AgentMetrics,
        dead_letter: DeadLetterPublish | None = None,
        max_raw: int = 4096,
        summary_every_s: float = 60.0,
    ) -> None:
        self.metrics = metrics
        self.dead_letter = dead_letter
        self.max_raw = max_raw
        self.summary_every_s = summary_every_s
        self._lock = threading.Lock()
        self._seen: dict[tuple[str, str], tuple[int, float]] = {}

    def report(self, source: str, rej: Reject) -> None:
        self.metrics.bad_input.labels(source, rej.reason).inc()
        key = (source, rej.reason)
        now = time.monotonic()
        with self._lock:
            count, last = self._seen.get(key, (0, 0.0))
            first = count == 0
            due = not first and now - last >= self.summary_every_s
            self._seen[key] = (0 if due else count + 1, now if (first or due) else last)
        if first:
            log.warning(
                "bad input from %s at %s: %s: %s (raw: %s)",
                source, rej.where, rej.reason, rej.detail, safe_repr(rej.raw, 200),
                extra={"source": source},
            )
        elif due:
            log.warning(
                "bad input from %s: %d more '%s' since the last report (latest: %s at %s)",
                source, count, rej.reason, rej.detail, rej.where,
                extra={"source": source},
            )
        if self.dead_letter is not None:
            raw = rej.raw[: self.max_raw]
            doc = {
                "source": source,
                "reason": rej.reason,
                "detail": rej.detail,
                "where": rej.where,
                "received_ns": time.time_ns(),
                "raw_b64": base64.b64encode(raw).decode(),
                "truncated": len(rej.raw) > self.max_raw,
            }
            try:
                self.dead_letter(orjson.dumps(doc))
            except Exception:  # a failing dead-letter channel must not stop the stream
                log.exception("dead-letter publish failed")


def safe_repr(raw: bytes, limit: int) -> str:
    """Raw bytes shown safely in a log line: printable ASCII, escapes for the rest."""
    text = raw[:limit].decode("ascii", "backslashreplace")
    text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
    return text + ("..." if len(raw) > limit else "")
