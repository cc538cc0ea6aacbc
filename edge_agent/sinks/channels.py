"""Alert channels that may be slow or fail: HTTP webhooks and local command hooks.

Each channel has its own bounded asyncio queue and worker task; the processing loop only
enqueues (`offer`), so a hanging receiver never delays scoring or the other channels.  A
failed delivery is counted and retried with capped, jittered exponential backoff; after
`max_attempts` (or when the queue is full) the alert is given up loudly: an ERROR log line,
`gearwatch_alert_dead_letters_total`, and a row in the SQLite dead-letter table from which
it can be resent.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import os
import random
from dataclasses import dataclass
from typing import Any

import httpx
import orjson

from edge_agent.config import AlertsSection, CommandHookConfig, WebhookConfig
from edge_agent.events import SEVERITY_RANK
from edge_agent.metrics import AgentMetrics
from edge_agent.store import Store

log = logging.getLogger("gearwatch.alerts")


@dataclass(frozen=True, slots=True)
class Alert:
    """One alert message: `doc` is the JSON document every channel starts from."""

    kind: str
    doc: dict[str, Any]
    dead_letter_seq: int | None = None  # set when resending a dead letter

    @property
    def event_id(self) -> str:
        return str(self.doc.get("id", ""))


def sign(secret: str, body: bytes) -> str:
    """The signature header's value: receivers recompute it over the raw body and compare."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def summary(doc: dict[str, Any]) -> str:
    top = ", ".join(f"{t['sensor']} {t['share']:.0%}" for t in doc.get("top_sensors", []))
    verb = {"open": "anomaly", "reopen": "anomaly again", "escalate": "escalated",
            "close": "back to normal"}.get(doc.get("kind", ""), doc.get("kind", ""))
    return (f"[{str(doc.get('severity', '')).upper()}] {doc.get('asset')}: {verb}, "
            f"score {doc.get('peak_score', 0):.1f}" + (f"; sensors: {top}" if top else "")
            + f" (since {doc.get('start')}, event {str(doc.get('id'))[:8]})")


def webhook_body(style: str, url: str, doc: dict[str, Any]) -> tuple[str, bytes]:
    """(url, body) shaped for the receiver: gearwatch JSON, Slack/Teams, ntfy or Gotify."""
    text = summary(doc)
    crit = doc.get("severity") == "critical"
    if style == "slack":  # Slack, Mattermost, Rocket.Chat, Teams incoming webhooks
        return url, orjson.dumps({"text": text})
    if style == "ntfy":  # JSON publishing goes to the server root, the topic in the body
        root, topic = url.rstrip("/").rsplit("/", 1)
        return root + "/", orjson.dumps({
            "topic": topic, "title": f"gearwatch: {doc.get('asset')} {doc.get('kind')}",
            "message": text, "priority": 5 if crit else 4,
            "tags": ["rotating_light" if crit else "warning"]})
    if style == "gotify":
        return url, orjson.dumps({"title": f"gearwatch: {doc.get('asset')} {doc.get('kind')}",
                                  "message": text, "priority": 8 if crit else 5,
                                  "extras": {"gearwatch::event": doc}})
    return url, orjson.dumps(doc)


class ChannelWorker:
    """A queue and a worker with retries; subclasses implement `deliver`."""

    name: str

    def __init__(self, name: str, kinds: list[str], min_severity: str, alerts: AlertsSection,
                 store: Store | None, metrics: AgentMetrics) -> None:
        self.name = name
        self.kinds = set(kinds)
        self.min_rank = SEVERITY_RANK[min_severity]
        self.cfg = alerts
        self.store = store
        self.metrics = metrics
        self.queue: asyncio.Queue[Alert] = asyncio.Queue(alerts.queue_size)
        self.delivered = 0
        self._gauge = metrics.alert_queue.labels(name)

    def wants(self, alert: Alert) -> bool:
        sev = SEVERITY_RANK.get(str(alert.doc.get("severity", "warning")), 1)
        return alert.kind in self.kinds and sev >= self.min_rank

    def offer(self, alert: Alert) -> None:
        """Never blocks: a full queue dead-letters the alert rather than wait."""
        if alert.dead_letter_seq is None and not self.wants(alert):
            return
        try:
            self.queue.put_nowait(alert)
        except asyncio.QueueFull:
            self._give_up(alert, "queue full", 0)
        self._gauge.set(self.queue.qsize())

    async def run(self) -> None:
        while True:
            alert = await self.queue.get()
            self._gauge.set(self.queue.qsize())
            await self._send_with_retries(alert)

    async def _send_with_retries(self, alert: Alert) -> None:
        err = ""
        for attempt in range(1, self.cfg.max_attempts + 1):
            try:
                await self.deliver(alert)
            except asyncio.CancelledError:
                raise
            except Exception as e:
                err = f"{type(e).__name__}: {e}"[:500]
                self.metrics.alert_failures.labels(self.name).inc()
                if attempt == 1:
                    log.warning("alert channel %s failed (%s); retrying", self.name, err)
                if attempt < self.cfg.max_attempts:
                    cap = min(self.cfg.backoff_max_s,
                              self.cfg.backoff_initial_s * 2 ** (attempt - 1))
                    await asyncio.sleep(cap / 2 + random.uniform(0, cap / 2))
                continue
            self.delivered += 1
            self.metrics.alerts_sent.labels(self.name, alert.kind).inc()
            if alert.dead_letter_seq is not None and self.store is not None:
                self.store.mark_resent(alert.dead_letter_seq)
            return
        self._give_up(alert, err, self.cfg.max_attempts)

    def _give_up(self, alert: Alert, err: str, attempts: int) -> None:
        log.error("alert channel %s gave up on %s alert for event %s after %d attempts (%s);"
                  " kept in the dead-letter table", self.name, alert.kind, alert.event_id,
                  attempts, err)
        self.metrics.alert_dead_letters.labels(self.name).inc()
        if self.store is not None and alert.dead_letter_seq is None:
            self.store.dead_letter(self.name, alert.event_id, alert.kind,
                                   orjson.dumps(alert.doc), err, attempts)

    async def deliver(self, alert: Alert) -> None:
        raise NotImplementedError

    async def aclose(self) -> None:
        return None


class WebhookChannel(ChannelWorker):
    def __init__(self, cfg: WebhookConfig, alerts: AlertsSection, store: Store | None,
                 metrics: AgentMetrics) -> None:
        super().__init__(cfg.name, cfg.kinds, cfg.min_severity, alerts, store, metrics)
        self.wcfg = cfg
        self.secret = cfg.secret_value()
        self.client = httpx.AsyncClient(timeout=httpx.Timeout(cfg.timeout_s))

    async def deliver(self, alert: Alert) -> None:
        url, body = webhook_body(self.wcfg.body, self.wcfg.url, alert.doc)
        headers = {"Content-Type": "application/json", "User-Agent": "gearwatch",
                   "X-Gearwatch-Event": alert.event_id, "X-Gearwatch-Kind": alert.kind,
                   **self.wcfg.headers}
        if self.secret:
            headers[self.wcfg.signature_header] = sign(self.secret, body)
        # the whole attempt is bounded, also a receiver that accepts and never answers
        r = await asyncio.wait_for(self.client.post(url, content=body, headers=headers),
                                   self.wcfg.timeout_s + 1)
        if r.status_code >= 300:
            raise RuntimeError(f"HTTP {r.status_code} from {url}: {r.text[:200]!r}")

    async def aclose(self) -> None:
        await self.client.aclose()


class CommandChannel(ChannelWorker):
    def __init__(self, cfg: CommandHookConfig, alerts: AlertsSection, store: Store | None,
                 metrics: AgentMetrics) -> None:
        super().__init__(cfg.name, cfg.kinds, cfg.min_severity, alerts, store, metrics)
        self.ccfg = cfg

    async def deliver(self, alert: Alert) -> None:
        env = {**os.environ, "GEARWATCH_EVENT_ID": alert.event_id,
               "GEARWATCH_ALERT_KIND": alert.kind,
               "GEARWATCH_ASSET": str(alert.doc.get("asset", "")),
               "GEARWATCH_SEVERITY": str(alert.doc.get("severity", "")),
               "GEARWATCH_SUMMARY": summary(alert.doc)}
        proc = await asyncio.create_subprocess_exec(
            *self.ccfg.argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, env=env)
        try:
            _, err = await asyncio.wait_for(proc.communicate(orjson.dumps(alert.doc)),
                                            self.ccfg.timeout_s)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
            raise TimeoutError(f"{self.ccfg.argv[0]} ran past {self.ccfg.timeout_s} s") from None
        if proc.returncode != 0:
            raise RuntimeError(f"{self.ccfg.argv[0]} exited {proc.returncode}: "
                               f"{err.decode(errors='replace')[-200:]!r}")


def make_channels(alerts: AlertsSection, store: Store | None,
                  metrics: AgentMetrics) -> list[ChannelWorker]:
    out: list[ChannelWorker] = [WebhookChannel(w, alerts, store, metrics) for w in alerts.webhooks]
    out += [CommandChannel(c, alerts, store, metrics) for c in alerts.commands]
    return out
