"""Alert channels against a real HTTP receiver and real programs: failures, hangs, recovery,
dead letters and resending, and one slow channel never holding up another."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest
from aiohttp import web

from edge_agent.config import AlertsSection, CommandHookConfig, WebhookConfig
from edge_agent.metrics import AgentMetrics
from edge_agent.sinks.channels import Alert, ChannelWorker, CommandChannel, WebhookChannel
from edge_agent.store import Store
from gearwatch.localservers import free_port

pytestmark = pytest.mark.integration

SECRET = "receiver-shares-this"


class Receiver:
    """A webhook receiver: answers 500 until `fail_until`, then hangs until `hang_until`."""

    def __init__(self) -> None:
        self.mode = "ok"
        self.got: list[dict[str, object]] = []
        self.attempts = 0
        self.bad_signatures = 0
        self.port = free_port()

    async def handle(self, request: web.Request) -> web.Response:
        self.attempts += 1
        body = await request.read()
        want = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(request.headers.get("X-Gearwatch-Signature", ""), want):
            self.bad_signatures += 1
            return web.Response(status=401)
        if self.mode == "fail":
            return web.Response(status=500, text="down for maintenance")
        if self.mode == "hang":
            await asyncio.sleep(3600)
        self.got.append(orjson.loads(body))
        return web.Response(status=204)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    rec = Receiver()
    app = web.Application()
    app.router.add_post("/hook", rec.handle)
    runner = web.AppRunner(app, shutdown_timeout=0.5)  # hung handlers are cancelled
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", rec.port).start()
    yield rec
    await runner.cleanup()


def alerts_cfg(**kw: object) -> AlertsSection:
    return AlertsSection.model_validate({"backoff_initial_s": 0.1, "backoff_max_s": 0.8,
                                         "max_attempts": 60, **kw})


def alert(i: int, kind: str = "open") -> Alert:
    return Alert(kind, {"kind": kind, "id": f"ev-{i}", "asset": "pump-1", "severity": "warning",
                        "peak_score": 5.0, "top_sensors": []})


async def wait_for(cond: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():  # type: ignore[operator]
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def hook(rec: Receiver, **kw: object) -> WebhookConfig:
    return WebhookConfig.model_validate({"name": "ops", "url": f"http://127.0.0.1:{rec.port}/hook",
                                         "secret": SECRET, "timeout_s": 0.5, **kw})


async def test_receiver_failing_then_hanging_gets_every_alert_once_it_recovers(
        receiver: Receiver, tmp_path: Path) -> None:
    metrics = AgentMetrics()
    store = Store(tmp_path)
    out = tmp_path / "cmd.jsonl"
    script = f"import sys; open({str(out)!r}, 'ab').write(sys.stdin.buffer.read() + b'\\n')"
    web_ch = WebhookChannel(hook(receiver), alerts_cfg(), store, metrics)
    cmd_ch = CommandChannel(CommandHookConfig(name="log", argv=[sys.executable, "-c", script]),
                            alerts_cfg(), store, metrics)
    tasks = [asyncio.create_task(c.run()) for c in (web_ch, cmd_ch)]
    try:
        receiver.mode = "fail"
        for i in range(3):
            for ch in (web_ch, cmd_ch):
                ch.offer(alert(i))
        # the command hook is not held up by the failing webhook
        await wait_for(lambda: out.exists() and out.read_text().count("\n") == 3, 20,
                       "the command hook to get all three alerts")
        await wait_for(lambda: receiver.attempts >= 3, 10, "retries")
        receiver.mode = "hang"
        web_ch.offer(alert(3, "escalate"))
        await asyncio.sleep(2.0)  # a few attempts time out against the hanging receiver
        assert receiver.got == []
        receiver.mode = "ok"
        await wait_for(lambda: len(receiver.got) == 4, 30, "every alert after recovery")
    finally:
        for t in tasks:
            t.cancel()
        await web_ch.aclose()
    assert [d["id"] for d in receiver.got] == ["ev-0", "ev-1", "ev-2", "ev-3"]
    assert receiver.bad_signatures == 0
    assert metrics.alert_failures.labels("ops")._value.get() >= 3
    assert store.dead_letters() == []
    assert [orjson.loads(x)["id"] for x in out.read_text().split()] == ["ev-0", "ev-1", "ev-2"]


async def test_gives_up_loudly_keeps_dead_letter_and_resends(
        receiver: Receiver, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    metrics = AgentMetrics()
    store = Store(tmp_path)
    ch = WebhookChannel(hook(receiver), alerts_cfg(max_attempts=3), store, metrics)
    slow = CommandChannel(CommandHookConfig(name="slow", argv=["sleep", "30"], timeout_s=0.3),
                          alerts_cfg(max_attempts=2), store, metrics)
    tasks = [asyncio.create_task(c.run()) for c in (ch, slow)]
    try:
        receiver.mode = "fail"
        ch.offer(alert(7))
        slow.offer(alert(8))
        await wait_for(lambda: len(store.dead_letters()) == 2, 20, "two dead letters")
        assert "gave up" in caplog.text
        assert metrics.alert_dead_letters.labels("ops")._value.get() == 1
        dl = {d["channel"]: d for d in store.dead_letters()}
        assert "HTTP 500" in dl["ops"]["error"] and "ran past" in dl["slow"]["error"]
        receiver.mode = "ok"
        ch.offer(Alert(dl["ops"]["kind"], orjson.loads(dl["ops"]["payload"]), dl["ops"]["seq"]))
        await wait_for(lambda: len(receiver.got) == 1, 10, "the resent alert")
        await wait_for(lambda: [d["channel"] for d in store.dead_letters()] == ["slow"], 5,
                       "the dead letter to be marked resent")
    finally:
        for t in tasks:
            t.cancel()
        await ch.aclose()


async def test_full_queue_dead_letters_instead_of_blocking(tmp_path: Path) -> None:
    store = Store(tmp_path)
    ch: ChannelWorker = CommandChannel(CommandHookConfig(name="c", argv=["true"]),
                                       alerts_cfg(queue_size=2), store, AgentMetrics())
    t0 = time.monotonic()
    for i in range(5):  # no worker running: the queue fills, offer never waits
        ch.offer(alert(i))
    assert time.monotonic() - t0 < 0.5
    assert ch.queue.qsize() == 2
    assert [d["event_id"] for d in store.dead_letters()] == ["ev-2", "ev-3", "ev-4"]
